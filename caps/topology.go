package caps

import (
	"fmt"
	"slices"
	"strings"

	cedar "github.com/cedar-policy/cedar-go"
)

// Cedar entity types. Places and devices are named by path; the entity
// hierarchy is the topology (a device is in its parent, a place in its
// parent), and a person is in every place they are present in.
const (
	typePlace  cedar.EntityType = "Place"
	typeDevice cedar.EntityType = "Device"
	typePerson cedar.EntityType = "Person"
	typeAction cedar.EntityType = "Action"
)

// node is a topology node with what the table derives from it.
type node struct {
	Node
	uid cedar.EntityUID
	// place is the innermost place containing the node: the node itself
	// for a place, the nearest place ancestor for a device.
	place string
}

func (n *node) device() bool { return n.Kind == KindDevice }

// topology is the validated building topology, indexed by path.
type topology struct {
	nodes map[string]*node
	// entities holds a Cedar entity for each node, plus the actions.
	entities cedar.EntityMap
}

// newTopology validates nodes and builds the Cedar entities for them and for
// the actions of ifaces. Node order does not matter.
func newTopology(nodes []Node, ifaces []*iface) (*topology, error) {
	t := &topology{nodes: make(map[string]*node, len(nodes)), entities: make(cedar.EntityMap, len(nodes))}
	// Work in path order so that the first error reported does not depend on
	// input order or map iteration.
	nodes = slices.Clone(nodes)
	slices.SortStableFunc(nodes, func(a, b Node) int { return strings.Compare(a.Path, b.Path) })
	sorted := make([]*node, 0, len(nodes))
	for _, n := range nodes {
		if err := checkPath(n.Path); err != nil {
			return nil, fmt.Errorf("topology node %q: %w", n.Path, err)
		}
		parent := ""
		if i := strings.LastIndexByte(n.Path, '/'); i >= 0 {
			parent = n.Path[:i]
		}
		if n.Parent != "" && n.Parent != parent {
			return nil, fmt.Errorf("topology node %q: parent %q is not its path's parent %q", n.Path, n.Parent, parent)
		}
		n.Parent = parent
		if n.Kind == "" {
			return nil, fmt.Errorf("topology node %q: no kind", n.Path)
		}
		if (n.Kind == KindDevice) != (n.Class != "") {
			return nil, fmt.Errorf("topology node %q: a device, and only a device, has a class", n.Path)
		}
		if _, dup := t.nodes[n.Path]; dup {
			return nil, fmt.Errorf("topology node %q: listed twice", n.Path)
		}
		typ := typePlace
		if n.Kind == KindDevice {
			typ = typeDevice
		}
		nn := &node{Node: n, uid: cedar.NewEntityUID(typ, cedar.String(n.Path))}
		t.nodes[n.Path] = nn
		sorted = append(sorted, nn)
	}
	for _, n := range sorted {
		if n.Parent != "" {
			p := t.nodes[n.Parent]
			if p == nil {
				return nil, fmt.Errorf("topology node %q: parent %q is not in the topology", n.Path, n.Parent)
			}
			if p.device() && !n.device() {
				return nil, fmt.Errorf("topology node %q: a place cannot be inside device %q", n.Path, p.Path)
			}
		}
		p := n
		for p != nil && p.device() {
			p = t.nodes[p.Parent]
		}
		if p == nil {
			return nil, fmt.Errorf("topology node %q: a device must be inside a place", n.Path)
		}
		n.place = p.Path
	}
	for _, n := range sorted {
		var parents []cedar.EntityUID
		if n.Parent != "" {
			parents = append(parents, t.nodes[n.Parent].uid)
		}
		attrs := cedar.RecordMap{"place": cedar.NewEntityUID(typePlace, cedar.String(n.place))}
		if n.device() {
			attrs["class"] = cedar.String(n.Class)
		} else {
			attrs["kind"] = cedar.String(n.Kind)
		}
		t.entities[n.uid] = cedar.Entity{UID: n.uid, Parents: cedar.NewEntityUIDSet(parents...), Attributes: cedar.NewRecord(attrs)}
	}
	for _, f := range ifaces {
		group := cedar.NewEntityUID(typeAction, cedar.String(f.Name))
		t.entities[group] = cedar.Entity{UID: group}
		for _, uid := range f.actions {
			t.entities[uid] = cedar.Entity{UID: uid, Parents: cedar.NewEntityUIDSet(group)}
		}
	}
	return t, nil
}

func checkPath(p string) error {
	if p == "" {
		return fmt.Errorf("empty path")
	}
	for _, el := range strings.Split(p, "/") {
		if el == "" || el == "." || el == ".." || strings.ContainsAny(el, " \t\n\"\\") {
			return fmt.Errorf("bad path element %q", el)
		}
	}
	return nil
}

// placeOfKind returns the nearest place containing path (or path itself)
// whose kind is kind; kind "" or "place" means the innermost place.
func (t *topology) placeOfKind(path, kind string) (string, bool) {
	n := t.nodes[path]
	if n == nil {
		return "", false
	}
	if kind == "" || kind == "place" {
		return n.place, true
	}
	for n != nil {
		if n.Kind == kind {
			return n.Path, true
		}
		n = t.nodes[n.Parent]
	}
	return "", false
}

// presenceEntity builds the Cedar entity of a person present in places.
func presenceEntity(person string, places []string) cedar.Entity {
	uid := cedar.NewEntityUID(typePerson, cedar.String(person))
	parents := make([]cedar.EntityUID, len(places))
	for i, p := range places {
		parents[i] = cedar.NewEntityUID(typePlace, cedar.String(p))
	}
	return cedar.Entity{UID: uid, Parents: cedar.NewEntityUIDSet(parents...)}
}

// entityView is the Cedar entity store: the topology's entities, and people
// built from the presence state on demand.
type entityView struct{ t *Table }

func (v entityView) Get(uid cedar.EntityUID) (cedar.Entity, bool) {
	if uid.Type == typePerson {
		places := v.t.presence[string(uid.ID)]
		return presenceEntity(string(uid.ID), places), true
	}
	e, ok := v.t.topo.entities[uid]
	return e, ok
}

// present reports whether person is in place or somewhere inside it.
func (t *Table) present(p Presence) bool {
	return slices.ContainsFunc(t.presence[p.Person], func(at string) bool { return pathWithin(at, p.Place) })
}
