package caps

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output in testdata/*.txt")

// The scripts in testdata/*.txt are capability flows. Each block is a
// command line, optional input lines, a "----" line and the expected output,
// ended by a blank line; lines starting with "#" between blocks are
// comments. Run with -rewrite to replace the expected output with the
// actual. Commands (paths and ids as the scripts write them):
//
//	time 2025-01-06T08:00Z | time +1h       set or advance the logical clock
//	topology                                input: "path kind [class]" lines
//	policy [file=name.cedar]                input: Cedar text
//	open holder=P iface=I target=T [methods=a,b] [caveats]
//	delegate from=gN to=P [methods=a,b] [caveats]
//	attenuate gN [methods=a,b] [caveats]   delegate to gN's own holder
//	call gN method [arg=num ...] [addr=path]
//	check gN method [arg=num ...] [addr=path]   call without spending
//	revoke gN [by=P] [reason=word]
//	release gN
//	enter person place | leave person place
//	grants                                  the derivation forest
//
// Caveat words: expires=+1h|RFC3339 window=HH:MM-HH:MM rate=N/dur uses=N
// range:arg=lo..hi place=path noreshare presence=person@place.
func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no scripts in testdata")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			runScript(t, file)
		})
	}
}

type block struct {
	pre    []string // comments and blank lines before the command
	cmd    string
	input  []string
	want   []string
	lineno int
}

func parseScript(t *testing.T, file string) (blocks []block, trailer []string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	var pre []string
	lineno := 0
	next := func() (string, bool) {
		if !sc.Scan() {
			return "", false
		}
		lineno++
		return sc.Text(), true
	}
	for {
		line, ok := next()
		if !ok {
			return blocks, pre
		}
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			pre = append(pre, line)
			continue
		}
		b := block{pre: pre, cmd: line, lineno: lineno}
		pre = nil
		for {
			line, ok = next()
			if !ok {
				t.Fatalf("%s:%d: %q has no ---- line", file, b.lineno, b.cmd)
			}
			if line == "----" {
				break
			}
			b.input = append(b.input, line)
		}
		for {
			line, ok = next()
			if !ok || line == "" {
				break
			}
			b.want = append(b.want, line)
		}
		blocks = append(blocks, b)
	}
}

func runScript(t *testing.T, file string) {
	blocks, trailer := parseScript(t, file)
	h := newHarness(t)
	var out strings.Builder
	for _, b := range blocks {
		got := h.run(b.cmd, b.input)
		if len(got) == 0 {
			got = []string{"ok"}
		}
		if !*rewrite && strings.Join(got, "\n") != strings.Join(b.want, "\n") {
			t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", file, b.lineno, b.cmd,
				strings.Join(got, "\n"), strings.Join(b.want, "\n"))
		}
		for _, l := range b.pre {
			out.WriteString(l + "\n")
		}
		out.WriteString(b.cmd + "\n")
		for _, l := range b.input {
			out.WriteString(l + "\n")
		}
		out.WriteString("----\n")
		for _, l := range got {
			out.WriteString(l + "\n")
		}
		out.WriteString("\n")
	}
	if *rewrite {
		text := strings.TrimRight(out.String(), "\n") + "\n"
		for _, l := range trailer {
			if strings.TrimSpace(l) != "" {
				text += l + "\n"
			}
		}
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Test catalog: interfaces the scripts and benchmarks use.
var (
	ifLight      = Interface{ID: 0x1001, Name: "Light", Methods: []Method{{0, "get"}, {1, "set"}}}
	ifThermostat = Interface{ID: 0x1002, Name: "Thermostat", Methods: []Method{{0, "get"}, {1, "setpoint"}}}
	ifLock       = Interface{ID: 0x1003, Name: "Lock", Methods: []Method{{0, "status"}, {1, "unlock"}}}
	ifRecorder   = Interface{ID: 0x1004, Name: "Recorder", Methods: []Method{{0, "start"}, {1, "stop"}, {2, "status"}}}
	testCatalog  = []Interface{ifLight, ifThermostat, ifLock, ifRecorder}
	scriptStart  = time.Date(2025, 1, 6, 8, 0, 0, 0, time.UTC) // a Monday
)

type harness struct {
	t     *testing.T
	table *Table
	now   time.Time
}

func newHarness(t *testing.T) *harness {
	tab, err := New(Config{Interfaces: testCatalog})
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, table: tab, now: scriptStart}
}

func (h *harness) iface(name string) (Interface, error) {
	for _, f := range testCatalog {
		if f.Name == name {
			return f, nil
		}
	}
	return Interface{}, fmt.Errorf("no interface %q", name)
}

// run executes one command and returns its output lines.
func (h *harness) run(cmd string, input []string) []string {
	fields := strings.Fields(cmd)
	out, err := h.exec(fields[0], fields[1:], input)
	if err != nil {
		return []string{"error: " + err.Error()}
	}
	return out
}

func (h *harness) exec(name string, args []string, input []string) ([]string, error) {
	switch name {
	case "time":
		if len(args) != 1 {
			return nil, fmt.Errorf("time wants one argument")
		}
		if d, ok := strings.CutPrefix(args[0], "+"); ok {
			dur, err := time.ParseDuration(d)
			if err != nil {
				return nil, err
			}
			h.now = h.now.Add(dur)
		} else {
			t, err := time.Parse("2006-01-02T15:04Z07:00", args[0])
			if err != nil {
				return nil, err
			}
			h.now = t
		}
		return []string{"now " + h.now.Format("Mon 2006-01-02 15:04:05")}, nil
	case "topology":
		var nodes []Node
		for _, l := range input {
			f := strings.Fields(l)
			if len(f) < 2 {
				return nil, fmt.Errorf("topology line %q: want path kind [class]", l)
			}
			n := Node{Path: f[0], Kind: f[1]}
			if len(f) > 2 {
				n.Class = f[2]
			}
			nodes = append(nodes, n)
		}
		d, err := h.table.SetTopology(nodes)
		if err != nil {
			return nil, err
		}
		return h.decision(d), nil
	case "policy":
		kv, _, err := keyvals(args)
		if err != nil {
			return nil, err
		}
		file := kv["file"]
		if file == "" {
			file = "policy.cedar"
		}
		d, err := h.table.SetPolicy(PolicyFile{Name: file, Text: strings.Join(input, "\n") + "\n"})
		if err != nil {
			return strings.Split("rejected: "+err.Error(), "\n"), nil
		}
		return h.decision(d), nil
	case "open":
		kv, cav, err := keyvals(args)
		if err != nil {
			return nil, err
		}
		holder, err := ParsePrincipal(kv["holder"])
		if err != nil {
			return nil, err
		}
		f, err := h.iface(kv["iface"])
		if err != nil {
			return nil, err
		}
		c, err := h.caveats(cav)
		if err != nil {
			return nil, err
		}
		return h.decision(h.table.Open(Open{Holder: holder, Target: kv["target"], Interface: f.ID,
			Methods: methods(kv), Caveats: c, Now: h.now})), nil
	case "delegate", "attenuate":
		if name == "attenuate" && len(args) > 0 {
			args[0] = "from=" + args[0]
		}
		kv, cav, err := keyvals(args)
		if err != nil {
			return nil, err
		}
		from, err := parseID(kv["from"])
		if err != nil {
			return nil, err
		}
		var to Principal
		if name == "attenuate" {
			g, ok := h.table.Grant(from)
			if !ok {
				return nil, fmt.Errorf("no grant %s", from)
			}
			to = g.Holder
		} else if to, err = ParsePrincipal(kv["to"]); err != nil {
			return nil, err
		}
		c, err := h.caveats(cav)
		if err != nil {
			return nil, err
		}
		return h.decision(h.table.Delegate(Delegate{From: from, To: to, Methods: methods(kv), Caveats: c, Now: h.now})), nil
	case "call", "check":
		if len(args) < 2 {
			return nil, fmt.Errorf("%s wants a grant and a method", name)
		}
		id, err := parseID(args[0])
		if err != nil {
			return nil, err
		}
		kv, _, err := keyvals(args[2:])
		if err != nil {
			return nil, err
		}
		c := Call{Grant: id, Now: h.now, Addr: kv["addr"], Method: MaxMethodID}
		if g, ok := h.table.Grant(id); ok {
			f, _ := h.ifaceByID(g.Interface)
			for _, m := range f.Methods {
				if m.Name == args[1] {
					c.Method = m.ID
				}
			}
		}
		for _, k := range sortedKeys(kv) {
			if k == "addr" {
				continue
			}
			v, err := strconv.ParseFloat(kv[k], 64)
			if err != nil {
				return nil, fmt.Errorf("argument %s: %w", k, err)
			}
			c.Args = append(c.Args, Arg{Name: k, Value: v})
		}
		if name == "check" {
			return h.decision(h.table.Check(c)), nil
		}
		return h.decision(h.table.Admit(c)), nil
	case "revoke":
		if len(args) < 1 {
			return nil, fmt.Errorf("revoke wants a grant")
		}
		id, err := parseID(args[0])
		if err != nil {
			return nil, err
		}
		kv, _, err := keyvals(args[1:])
		if err != nil {
			return nil, err
		}
		var by Principal
		if kv["by"] != "" {
			if by, err = ParsePrincipal(kv["by"]); err != nil {
				return nil, err
			}
		}
		return h.decision(h.table.Revoke(Revoke{Grant: id, By: by, Reason: kv["reason"]})), nil
	case "release":
		if len(args) != 1 {
			return nil, fmt.Errorf("release wants a grant")
		}
		id, err := parseID(args[0])
		if err != nil {
			return nil, err
		}
		return h.decision(h.table.Release(id)), nil
	case "enter", "leave":
		if len(args) != 2 {
			return nil, fmt.Errorf("%s wants a person and a place", name)
		}
		p := Presence{Person: args[0], Place: args[1]}
		if name == "enter" {
			return h.decision(h.table.Enter(p)), nil
		}
		return h.decision(h.table.Leave(p)), nil
	case "grants":
		return h.forest(), nil
	}
	return nil, fmt.Errorf("unknown command %q", name)
}

func (h *harness) ifaceByID(id uint64) (Interface, bool) {
	for _, f := range testCatalog {
		if f.ID == id {
			return f, true
		}
	}
	return Interface{}, false
}

func methods(kv map[string]string) []string {
	if kv["methods"] == "" {
		return nil
	}
	return strings.Split(kv["methods"], ",")
}

func parseID(s string) (GrantID, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(s, "g"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("grant id %q: want gN", s)
	}
	return GrantID(n), nil
}

// keyvals splits key=value words; caveat words (and bare words) are
// returned apart.
func keyvals(args []string) (map[string]string, []string, error) {
	kv := map[string]string{}
	var cav []string
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		switch {
		case strings.HasPrefix(a, "range:") || !ok:
			cav = append(cav, a)
		case k == "expires" || k == "window" || k == "rate" || k == "uses" || k == "place" || k == "presence":
			cav = append(cav, a)
		default:
			kv[k] = v
		}
	}
	return kv, cav, nil
}

func (h *harness) caveats(words []string) (Caveats, error) {
	var c Caveats
	var err error
	for _, w := range words {
		if r, ok := strings.CutPrefix(w, "range:"); ok {
			rg, err := ParseRange(r)
			if err != nil {
				return c, err
			}
			c.Ranges = append(c.Ranges, rg)
			continue
		}
		k, v, _ := strings.Cut(w, "=")
		switch k {
		case "expires":
			if d, ok := strings.CutPrefix(v, "+"); ok {
				var dur time.Duration
				dur, err = time.ParseDuration(d)
				c.Expires = h.now.Add(dur)
			} else {
				c.Expires, err = time.Parse("2006-01-02T15:04Z07:00", v)
			}
		case "window":
			c.Window, err = ParseWindow(v)
		case "rate":
			c.Rate, err = ParseRate(v)
		case "uses":
			c.Uses, err = strconv.Atoi(v)
		case "place":
			c.Place = v
		case "noreshare":
			c.NoReshare = true
		case "presence":
			person, place, _ := strings.Cut(v, "@")
			c.Presence = append(c.Presence, Presence{Person: person, Place: place})
		default:
			err = fmt.Errorf("unknown word %q", w)
		}
		if err != nil {
			return c, err
		}
	}
	return c, nil
}

// decision prints a Decision: its outcome, then for a new grant its view,
// then each revocation cascade.
func (h *harness) decision(d Decision) []string {
	var out []string
	switch {
	case d.Code != OK:
		out = append(out, fmt.Sprintf("refused %s: %s", d.Code, d.Reason))
	case d.Op == OpCall:
		out = append(out, "admitted")
	case d.Op == OpOpen || d.Op == OpDelegate:
		out = append(out, fmt.Sprintf("ok %s: %s", d.Grant, d.Reason))
		out = append(out, "  "+h.describe(d.Grant))
	case d.Reason != "" && d.Op != OpLeave:
		out = append(out, "ok: "+d.Reason)
	default:
		out = append(out, "ok")
	}
	var cascade []string
	flush := func() {
		if len(cascade) > 0 {
			out[len(out)-1] += " [" + strings.Join(cascade, " ") + "]"
			cascade = nil
		}
	}
	for _, r := range d.Revoked {
		if r.Grant == r.Root {
			flush()
			out = append(out, fmt.Sprintf("revoked %s (%s)", r.Grant, r.Reason))
			continue
		}
		cascade = append(cascade, r.Grant.String())
	}
	flush()
	return out
}

func (h *harness) describe(id GrantID) string {
	g, ok := h.table.Grant(id)
	if !ok {
		return id.String() + " (removed)"
	}
	f, _ := h.ifaceByID(g.Interface)
	var names []string
	for _, m := range g.Methods {
		names = append(names, m.Name)
	}
	s := fmt.Sprintf("%s %s %s{%s} %s", id, g.Holder, f.Name, strings.Join(names, ","), g.Target)
	if c := g.Caveats.String(); c != "" {
		s += " " + c
	}
	if g.Caveats.Uses != 0 {
		s += fmt.Sprintf(" left=%d", g.UsesLeft)
	}
	switch {
	case g.Revoked:
		s += " REVOKED"
	case g.Released:
		s += " released"
	}
	return s
}

func (h *harness) forest() []string {
	var out []string
	var walk func(id GrantID, depth int)
	walk = func(id GrantID, depth int) {
		out = append(out, strings.Repeat("  ", depth)+h.describe(id))
		for _, c := range h.table.Children(id) {
			walk(c, depth+1)
		}
	}
	for g := range h.table.Grants() {
		if g.Parent == 0 {
			walk(g.ID, 0)
		}
	}
	if len(out) == 0 {
		out = append(out, "(none)")
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
