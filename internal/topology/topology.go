package topology

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/osmose-os/osmose/schema"
)

// Topology is a building: its places, devices and principals, in file
// order. Build one in Go and Write it, or Load/Parse a file. The lookup
// methods need a value returned by Parse or Load, or one passed through
// Index.
type Topology struct {
	Places     []Place
	Devices    []Device
	Principals []Principal

	places     map[string]int
	devices    map[string]int
	principals map[string]ref // every login id: principals, device paths and ids
}

// ref points at a principal or a device.
type ref struct {
	device bool
	i      int
}

// Place is one node of the containment tree.
type Place struct {
	Path  string
	Kind  schema.PlaceKind
	Label string
}

// Device is one device of the building.
type Device struct {
	Path  string
	Class schema.DeviceClass
	// ID is a second login id for the device program; the path always is one.
	ID    string
	Key   ed25519.PublicKey
	Label string
}

// Place returns the path of the place the device is in.
func (d Device) Place() string { return Parent(d.Path) }

// Principal is a party other than a device that logs in: a person (by
// pseudonym), an app, an operator or an auditor.
type Principal struct {
	ID    string
	Kind  schema.PrincipalKind
	Key   ed25519.PublicKey
	Label string
}

// Error is a problem in a topology file: where and why.
type Error struct {
	File   string
	Line   int // 1-based; 0 when unknown
	Reason string
}

func (e *Error) Error() string {
	if e.Line == 0 {
		return e.File + ": " + e.Reason
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason)
}

// Load reads and parses the topology file at path.
func Load(path string) (*Topology, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read topology: %w", err)
	}
	return Parse(path, data)
}

// Parse parses and validates a topology file's bytes; name is used in
// errors.
func Parse(name string, data []byte) (*Topology, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(name, err)
	}
	p := parser{file: name, t: &Topology{}}
	if root.Kind == 0 { // empty file
		p.t.Index()
		return p.t, nil
	}
	if err := p.document(&root); err != nil {
		return nil, err
	}
	return p.t, nil
}

// yamlError turns a yaml.v3 syntax error ("yaml: line 3: ...") into an
// *Error.
func yamlError(file string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line int
	if _, e := fmt.Sscanf(msg, "line %d:", &line); e == nil {
		msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
	}
	return &Error{File: file, Line: line, Reason: msg}
}

type parser struct {
	file string
	t    *Topology
}

func (p *parser) errf(n *yaml.Node, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &Error{File: p.file, Line: line, Reason: fmt.Sprintf(format, args...)}
}

// fields checks that n is a mapping with only the allowed scalar keys and
// returns key -> value node.
func (p *parser) fields(n *yaml.Node, what string, allowed ...string) (map[string]*yaml.Node, error) {
	if n.Kind != yaml.MappingNode {
		return nil, p.errf(n, "%s: want a mapping", what)
	}
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || !slices.Contains(allowed, k.Value) {
			return nil, p.errf(k, "%s: unknown key %q (want one of %s)", what, k.Value, strings.Join(allowed, ", "))
		}
		if _, dup := out[k.Value]; dup {
			return nil, p.errf(k, "%s: duplicate key %q", what, k.Value)
		}
		out[k.Value] = v
	}
	return out, nil
}

func (p *parser) scalar(m map[string]*yaml.Node, key, what string, required bool, parent *yaml.Node) (string, *yaml.Node, error) {
	v, ok := m[key]
	if !ok {
		if required {
			return "", parent, p.errf(parent, "%s: missing %s", what, key)
		}
		return "", parent, nil
	}
	if v.Kind != yaml.ScalarNode {
		return "", v, p.errf(v, "%s: %s must be a string", what, key)
	}
	if required && v.Value == "" {
		return "", v, p.errf(v, "%s: empty %s", what, key)
	}
	return v.Value, v, nil
}

func (p *parser) document(root *yaml.Node) error {
	doc := root
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			p.t.Index()
			return nil
		}
		doc = doc.Content[0]
	}
	top, err := p.fields(doc, "topology", "places", "devices", "principals")
	if err != nil {
		return err
	}
	t := p.t
	t.places, t.devices, t.principals = map[string]int{}, map[string]int{}, map[string]ref{}
	var placeNodes, deviceNodes []*yaml.Node
	if n := top["places"]; n != nil {
		items, err := p.list(n, "places")
		if err != nil {
			return err
		}
		for _, it := range items {
			m, err := p.fields(it, "place", "path", "kind", "label")
			if err != nil {
				return err
			}
			path, pn, err := p.scalar(m, "path", "place", true, it)
			if err != nil {
				return err
			}
			if err := checkPath(path); err != nil {
				return p.errf(pn, "place %q: %v", path, err)
			}
			kind, kn, err := p.scalar(m, "kind", "place "+path, false, it)
			if err != nil {
				return err
			}
			pk := schema.PlaceKind_other
			if kind != "" {
				pk = schema.PlaceKindFromString(kind)
				if pk.String() != kind {
					return p.errf(kn, "place %q: unknown kind %q (want site, building, floor, room, zone or other)", path, kind)
				}
			}
			label, _, err := p.scalar(m, "label", "place "+path, false, it)
			if err != nil {
				return err
			}
			if _, dup := t.places[path]; dup {
				return p.errf(pn, "place %q declared twice", path)
			}
			t.places[path] = len(t.Places)
			t.Places = append(t.Places, Place{Path: path, Kind: pk, Label: label})
			placeNodes = append(placeNodes, pn)
		}
	}
	for i, pl := range t.Places {
		if par := Parent(pl.Path); par != "" {
			if _, ok := t.places[par]; !ok {
				return p.errf(placeNodes[i], "place %q: parent place %q is not declared", pl.Path, par)
			}
		}
	}
	if n := top["devices"]; n != nil {
		items, err := p.list(n, "devices")
		if err != nil {
			return err
		}
		for _, it := range items {
			m, err := p.fields(it, "device", "path", "class", "key", "id", "label")
			if err != nil {
				return err
			}
			path, pn, err := p.scalar(m, "path", "device", true, it)
			if err != nil {
				return err
			}
			if err := checkPath(path); err != nil {
				return p.errf(pn, "device %q: %v", path, err)
			}
			place := Parent(path)
			if place == "" {
				return p.errf(pn, "device %q: a device path is a place path plus one segment", path)
			}
			if _, ok := t.places[place]; !ok {
				return p.errf(pn, "device %q: place %q is not declared", path, place)
			}
			if _, dup := t.places[path]; dup {
				return p.errf(pn, "device %q: a place has the same path", path)
			}
			class, cn, err := p.scalar(m, "class", "device "+path, true, it)
			if err != nil {
				return err
			}
			dc := schema.DeviceClassFromString(class)
			if dc.String() != class {
				return p.errf(cn, "device %q: unknown class %q", path, class)
			}
			d := Device{Path: path, Class: dc}
			if d.Label, _, err = p.scalar(m, "label", "device "+path, false, it); err != nil {
				return err
			}
			var idn *yaml.Node
			if d.ID, idn, err = p.scalar(m, "id", "device "+path, false, it); err != nil {
				return err
			}
			if d.ID != "" {
				if err := checkID(d.ID); err != nil {
					return p.errf(idn, "device %q: id %q: %v", path, d.ID, err)
				}
			}
			key, kn, err := p.scalar(m, "key", "device "+path, false, it)
			if err != nil {
				return err
			}
			if key != "" {
				if d.Key, err = parseKey(key); err != nil {
					return p.errf(kn, "device %q: %v", path, err)
				}
			}
			if _, dup := t.devices[path]; dup {
				return p.errf(pn, "device %q declared twice", path)
			}
			t.devices[path] = len(t.Devices)
			t.Devices = append(t.Devices, d)
			deviceNodes = append(deviceNodes, pn)
		}
	}
	for i, d := range t.Devices {
		for _, id := range []string{d.Path, d.ID} {
			if id == "" {
				continue
			}
			if _, dup := t.principals[id]; dup {
				return p.errf(deviceNodes[i], "login id %q used twice", id)
			}
			t.principals[id] = ref{device: true, i: i}
		}
	}
	if n := top["principals"]; n != nil {
		items, err := p.list(n, "principals")
		if err != nil {
			return err
		}
		for _, it := range items {
			m, err := p.fields(it, "principal", "id", "kind", "key", "label")
			if err != nil {
				return err
			}
			id, in, err := p.scalar(m, "id", "principal", true, it)
			if err != nil {
				return err
			}
			if err := checkID(id); err != nil {
				return p.errf(in, "principal %q: %v", id, err)
			}
			kind, kn, err := p.scalar(m, "kind", "principal "+id, true, it)
			if err != nil {
				return err
			}
			pk := schema.PrincipalKindFromString(kind)
			if pk.String() != kind || pk == schema.PrincipalKind_unknown || pk == schema.PrincipalKind_device {
				return p.errf(kn, "principal %q: kind %q: want person, app, operator or auditor (devices go under devices:)", id, kind)
			}
			key, keyn, err := p.scalar(m, "key", "principal "+id, true, it)
			if err != nil {
				return err
			}
			pub, err := parseKey(key)
			if err != nil {
				return p.errf(keyn, "principal %q: %v", id, err)
			}
			label, _, err := p.scalar(m, "label", "principal "+id, false, it)
			if err != nil {
				return err
			}
			if _, dup := t.principals[id]; dup {
				return p.errf(in, "login id %q used twice", id)
			}
			t.principals[id] = ref{i: len(t.Principals)}
			t.Principals = append(t.Principals, Principal{ID: id, Kind: pk, Key: pub, Label: label})
		}
	}
	return nil
}

func (p *parser) list(n *yaml.Node, what string) ([]*yaml.Node, error) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(n, "%s: want a list", what)
	}
	return n.Content, nil
}

func parseKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("key: not standard base64: %v", err)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("key: %d bytes, want a %d-byte ed25519 public key", len(b), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

func checkPath(path string) error {
	for _, seg := range strings.Split(path, "/") {
		if seg == "" {
			return errors.New("empty path segment")
		}
		if strings.ContainsAny(seg, " \t\n\x00") {
			return fmt.Errorf("segment %q contains a space or zero byte", seg)
		}
	}
	return nil
}

func checkID(id string) error {
	if strings.ContainsAny(id, " \t\n\x00") {
		return errors.New("contains a space or zero byte")
	}
	return nil
}

// Parent returns the path without its last segment, "" for a root.
func Parent(path string) string {
	i := strings.LastIndexByte(path, '/')
	if i < 0 {
		return ""
	}
	return path[:i]
}

// Within reports whether path is place or lies under it.
func Within(path, place string) bool {
	return path == place || (strings.HasPrefix(path, place) && len(path) > len(place) && path[len(place)] == '/')
}

// Index builds the lookup tables of a Topology built in Go. It does not
// validate (Write then Parse does).
func (t *Topology) Index() {
	t.places, t.devices, t.principals = map[string]int{}, map[string]int{}, map[string]ref{}
	for i, p := range t.Places {
		t.places[p.Path] = i
	}
	for i, d := range t.Devices {
		t.devices[d.Path] = i
		t.principals[d.Path] = ref{device: true, i: i}
		if d.ID != "" {
			t.principals[d.ID] = ref{device: true, i: i}
		}
	}
	for i, p := range t.Principals {
		t.principals[p.ID] = ref{i: i}
	}
}

// Place returns the place at path.
func (t *Topology) Place(path string) (Place, bool) {
	i, ok := t.places[path]
	if !ok {
		return Place{}, false
	}
	return t.Places[i], true
}

// Device returns the device at path.
func (t *Topology) Device(path string) (Device, bool) {
	i, ok := t.devices[path]
	if !ok {
		return Device{}, false
	}
	return t.Devices[i], true
}

// Login resolves a login id: a device's path or id gives the device (as a
// principal of kind device whose ID is the device path), any other id its
// principal.
func (t *Topology) Login(id string) (Principal, bool) {
	r, ok := t.principals[id]
	if !ok {
		return Principal{}, false
	}
	if r.device {
		d := t.Devices[r.i]
		if d.Key == nil {
			return Principal{}, false
		}
		return Principal{ID: d.Path, Kind: schema.PrincipalKind_device, Key: d.Key, Label: d.Label}, true
	}
	return t.Principals[r.i], true
}

// Under returns the devices at or under path (a place or device path) in
// file order.
func (t *Topology) Under(path string) []Device {
	var out []Device
	for _, d := range t.Devices {
		if Within(d.Path, path) {
			out = append(out, d)
		}
	}
	return out
}

// yaml forms for writing: kinds, classes and keys as strings.
type (
	placeOut struct {
		Path  string `yaml:"path"`
		Kind  string `yaml:"kind,omitempty"`
		Label string `yaml:"label,omitempty"`
	}
	deviceOut struct {
		Path  string `yaml:"path"`
		Class string `yaml:"class"`
		ID    string `yaml:"id,omitempty"`
		Key   string `yaml:"key,omitempty"`
		Label string `yaml:"label,omitempty"`
	}
	principalOut struct {
		ID    string `yaml:"id"`
		Kind  string `yaml:"kind"`
		Key   string `yaml:"key"`
		Label string `yaml:"label,omitempty"`
	}
	fileOut struct {
		Places     []placeOut     `yaml:"places,omitempty"`
		Devices    []deviceOut    `yaml:"devices,omitempty"`
		Principals []principalOut `yaml:"principals,omitempty"`
	}
)

// Write writes t in the file format; Parse reads it back.
func (t *Topology) Write(w io.Writer) error {
	var f fileOut
	for _, p := range t.Places {
		f.Places = append(f.Places, placeOut{Path: p.Path, Kind: p.Kind.String(), Label: p.Label})
	}
	for _, d := range t.Devices {
		o := deviceOut{Path: d.Path, Class: d.Class.String(), ID: d.ID, Label: d.Label}
		if d.Key != nil {
			o.Key = base64.StdEncoding.EncodeToString(d.Key)
		}
		f.Devices = append(f.Devices, o)
	}
	for _, p := range t.Principals {
		f.Principals = append(f.Principals, principalOut{ID: p.ID, Kind: p.Kind.String(), Key: base64.StdEncoding.EncodeToString(p.Key), Label: p.Label})
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&f); err != nil {
		return fmt.Errorf("encode topology: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("encode topology: %w", err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}
