package caps

import (
	"errors"
	"fmt"
	"iter"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	cedar "github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
	"github.com/cedar-policy/cedar-go/x/exp/schema"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"
)

// iface is a catalog entry: an Interface with its lookups.
type iface struct {
	Interface
	byName  map[string]uint16
	byID    map[uint16]int // method ordinal -> index in Methods
	actions []cedar.EntityUID
	all     methodSet
}

func newCatalog(ifaces []Interface) (map[uint64]*iface, []*iface, error) {
	byID := make(map[uint64]*iface, len(ifaces))
	names := map[string]bool{}
	var list []*iface
	for _, in := range ifaces {
		if !isDotted(in.Name) {
			return nil, nil, fmt.Errorf("interface %#x: name %q must be letters, digits, _ and dots", in.ID, in.Name)
		}
		if byID[in.ID] != nil || names[in.Name] {
			return nil, nil, fmt.Errorf("interface %s (%#x) listed twice", in.Name, in.ID)
		}
		names[in.Name] = true
		f := &iface{Interface: in, byName: map[string]uint16{}, byID: map[uint16]int{}}
		f.Methods = slices.Clone(in.Methods)
		slices.SortFunc(f.Methods, func(a, b Method) int { return int(a.ID) - int(b.ID) })
		for i, m := range f.Methods {
			if !isIdent(m.Name) || m.ID > MaxMethodID {
				return nil, nil, fmt.Errorf("interface %s: method %d %q: want an identifier and an ordinal <= %d", in.Name, m.ID, m.Name, MaxMethodID)
			}
			if _, dup := f.byName[m.Name]; dup {
				return nil, nil, fmt.Errorf("interface %s: method %q listed twice", in.Name, m.Name)
			}
			if _, dup := f.byID[m.ID]; dup {
				return nil, nil, fmt.Errorf("interface %s: method ordinal %d listed twice", in.Name, m.ID)
			}
			f.byName[m.Name] = m.ID
			f.byID[m.ID] = i
			f.all.add(m.ID)
			f.actions = append(f.actions, cedar.NewEntityUID(typeAction, cedar.String(in.Name+"."+m.Name)))
		}
		byID[in.ID] = f
		list = append(list, f)
	}
	slices.SortFunc(list, func(a, b *iface) int { return strings.Compare(a.Name, b.Name) })
	return byID, list, nil
}

func isDotted(s string) bool {
	for _, el := range strings.Split(s, ".") {
		if !isIdent(el) {
			return false
		}
	}
	return true
}

// methods returns the methods of f in s, by ordinal.
func (f *iface) methods(s methodSet) []Method {
	var out []Method
	for _, m := range f.Methods {
		if s.has(m.ID) {
			out = append(out, m)
		}
	}
	return out
}

func (f *iface) setString(s methodSet) string {
	var names []string
	for _, m := range f.methods(s) {
		names = append(names, m.Name)
	}
	return f.Name + "{" + strings.Join(names, ",") + "}"
}

// schemaText is the Cedar schema policies are type-checked against: the
// entity types of the topology and principals, the context of a grant
// request, and one action per interface method, grouped under an action per
// interface.
func schemaText(ifaces []*iface) string {
	var b strings.Builder
	b.WriteString(`entity Place in [Place] { kind: String, place: Place };
entity Device in [Place, Device] { class: String, place: Place };
entity Person in [Place];
entity App;
entity Operator;
type GrantContext = { op: String, depth: Long, minuteOfDay: Long, weekday: Long };
`)
	for _, f := range ifaces {
		fmt.Fprintf(&b, "action %q;\n", f.Name)
		for _, m := range f.Methods {
			fmt.Fprintf(&b, "action %q in [%q] appliesTo { principal: [Device, Person, App, Operator], resource: [Place, Device], context: GrantContext };\n",
				f.Name+"."+m.Name, f.Name)
		}
	}
	return b.String()
}

// PolicyError is a policy file rejected at load: where, and why.
type PolicyError struct {
	File   string
	Line   int // 1-based; 0 when unknown
	Column int
	Reason string
}

func (e *PolicyError) Error() string {
	if e.Line == 0 {
		return e.File + ": " + e.Reason
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Reason)
}

// policy is a loaded, type-checked set of Cedar policies in file order.
type policy struct {
	files []PolicyFile
	list  []policyEntry
	index map[cedar.PolicyID]int
}

type policyEntry struct {
	id  cedar.PolicyID
	p   *cedar.Policy
	cav policyCaveats
}

// All yields the policies in file order, so Cedar's reasons come out in a
// deterministic order.
func (ps *policy) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] {
	return func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		for _, e := range ps.list {
			if !yield(e.id, e.p) {
				return
			}
		}
	}
}

var inputPos = regexp.MustCompile(`<input>:(\d+):(\d+) ?`)

// loadPolicy parses files, type-checks every policy against the schema for
// ifaces and parses the caveat annotations. Every problem found is returned,
// each a *PolicyError.
func loadPolicy(files []PolicyFile, ifaces []*iface) (*policy, error) {
	var sch schema.Schema
	sch.SetFilename("caps-schema")
	if err := sch.UnmarshalCedar([]byte(schemaText(ifaces))); err != nil {
		return nil, fmt.Errorf("build policy schema: %w", err)
	}
	res, err := sch.Resolve()
	if err != nil {
		return nil, fmt.Errorf("resolve policy schema: %w", err)
	}
	v := validate.New(res)
	ps := &policy{files: slices.Clone(files), index: map[cedar.PolicyID]int{}}
	var errs []error
	for _, f := range files {
		list, err := cedar.NewPolicyListFromBytes(f.Name, []byte(f.Text))
		if err != nil {
			pe := &PolicyError{File: f.Name, Reason: strings.TrimPrefix(err.Error(), "parser error: ")}
			if m := inputPos.FindStringSubmatch(pe.Reason); m != nil {
				pe.Line, _ = strconv.Atoi(m[1])
				pe.Column, _ = strconv.Atoi(m[2])
				pe.Reason = strings.Replace(pe.Reason, m[0], "", 1)
			}
			errs = append(errs, pe)
			continue
		}
		for _, p := range list {
			pos := p.Position()
			perr := func(format string, args ...any) {
				errs = append(errs, &PolicyError{File: f.Name, Line: pos.Line, Column: pos.Column, Reason: fmt.Sprintf(format, args...)})
			}
			id := cedar.PolicyID(fmt.Sprintf("%s:%d", f.Name, pos.Line))
			if a, ok := p.Annotations()["id"]; ok {
				id = cedar.PolicyID(a)
			}
			if _, dup := ps.index[id]; dup {
				perr("policy id %q used twice", id)
				continue
			}
			if err := v.Policy(string(id), (*xast.Policy)(p.AST())); err != nil {
				perr("%s", strings.ReplaceAll(strings.ReplaceAll(err.Error(), fmt.Sprintf("for policy `%s`, ", id), ""), "\n", "; "))
				continue
			}
			cav, err := parseAnnotations(p.Annotations())
			if err != nil {
				perr("%v", err)
				continue
			}
			if p.Effect() == cedar.Forbid && cav.any() {
				perr("caveat annotations on a forbid policy have no effect")
				continue
			}
			ps.index[id] = len(ps.list)
			ps.list = append(ps.list, policyEntry{id: id, p: p, cav: cav})
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return ps, nil
}

// policyCaveats are the caveats a permit policy attaches to what it permits,
// read from its annotations:
//
//	@expires("8h")              the grant expires this long after it is issued
//	@window("08:00-18:00")      calls only in this time of day
//	@rate("10/1m")              at most 10 calls a minute
//	@uses("1")                  at most this many calls in all
//	@range("level=0..60, celsius=18..24")  argument bounds
//	@noreshare                  no delegation to others
//	@presence / @presence("room")  bound to the holder's presence in the
//	                            innermost place (or nearest place of that
//	                            kind) containing the resource
type policyCaveats struct {
	expires   time.Duration
	window    Window
	rate      Rate
	uses      int
	ranges    []Range
	noReshare bool
	presence  bool
	presenceK string
}

func (c policyCaveats) any() bool {
	return c.expires != 0 || c.window.Set() || c.rate.Set() || c.uses != 0 || len(c.ranges) > 0 || c.noReshare || c.presence
}

func parseAnnotations(a cedar.Annotations) (policyCaveats, error) {
	var c policyCaveats
	var err error
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, string(k))
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := strings.TrimSpace(string(a[types.AnnotationKey(k)]))
		switch k {
		case "expires":
			c.expires, err = time.ParseDuration(v)
			if err == nil && c.expires <= 0 {
				err = fmt.Errorf("want a positive duration")
			}
		case "window":
			c.window, err = ParseWindow(v)
		case "rate":
			c.rate, err = ParseRate(v)
		case "uses":
			c.uses, err = strconv.Atoi(v)
			if err == nil && c.uses <= 0 {
				err = fmt.Errorf("want a positive count")
			}
		case "range":
			for _, s := range strings.Split(v, ",") {
				var r Range
				if r, err = ParseRange(s); err != nil {
					break
				}
				if _, dup := findRange(c.ranges, r.Arg); dup {
					err = fmt.Errorf("two ranges for %q", r.Arg)
					break
				}
				c.ranges = append(c.ranges, r)
			}
			slices.SortFunc(c.ranges, func(x, y Range) int { return strings.Compare(x.Arg, y.Arg) })
		case "noreshare":
			if v != "" && v != "true" {
				err = fmt.Errorf("want no value or \"true\"")
			}
			c.noReshare = true
		case "presence":
			c.presence, c.presenceK = true, v
		default:
			continue // not ours (e.g. @id)
		}
		if err != nil {
			return policyCaveats{}, fmt.Errorf("annotation @%s(%q): %w", k, v, err)
		}
	}
	return c, nil
}

// caveats turns the policy's caveats into a grant's, for a grant issued at
// issued to holder with place scope scope.
func (c policyCaveats) caveats(issued time.Time, holder Principal, scope string, topo *topology) (Caveats, Code, error) {
	out := Caveats{Window: c.window, Rate: c.rate, Uses: c.uses, Ranges: c.ranges, NoReshare: c.noReshare}
	if c.expires != 0 {
		out.Expires = issued.Add(c.expires)
	}
	if c.presence {
		if holder.Kind != Person {
			return Caveats{}, CodeNotPermitted, fmt.Errorf("policy binds the grant to presence but %s is not a person", holder)
		}
		place, ok := topo.placeOfKind(scope, c.presenceK)
		if !ok {
			return Caveats{}, CodeNotPermitted, fmt.Errorf("policy binds the grant to presence in a %q but %s is in none", c.presenceK, scope)
		}
		out.Presence = []Presence{{Person: holder.ID, Place: place}}
	}
	return out, OK, nil
}

// request is one grant question put to the policy.
type request struct {
	holder Principal
	f      *iface
	// methods asked for; all of f's when asking "what may I have".
	methods methodSet
	scope   string // resource path
	op      string // "open" or "delegate"
	depth   int
	issued  time.Time
}

// answer is what the policy allows for a request.
type answer struct {
	permitted methodSet
	denied    []string // "Light.set (forbidden by p3)" or "Light.set (no permit)"
	policies  []cedar.PolicyID
	caveats   Caveats
}

// evaluate asks the policy about each method of r and combines the caveats
// of every permit policy that applied (the strictest combination).
func (t *Table) evaluate(r request) (answer, Code, error) {
	var a answer
	if t.policy == nil {
		return a, CodeNotPermitted, fmt.Errorf("no policy loaded")
	}
	n := t.topo.nodes[r.scope]
	local := r.issued.In(t.loc)
	h, m, _ := local.Clock()
	ctx := cedar.NewRecord(cedar.RecordMap{
		"op":          cedar.String(r.op),
		"depth":       cedar.Long(r.depth),
		"minuteOfDay": cedar.Long(h*60 + m),
		"weekday":     cedar.Long(local.Weekday()),
	})
	principal := cedar.NewEntityUID(cedar.EntityType(kindTypes[r.holder.Kind]), cedar.String(r.holder.ID))
	used := map[cedar.PolicyID]bool{}
	for i, meth := range r.f.Methods {
		if !r.methods.has(meth.ID) {
			continue
		}
		dec, diag := cedar.Authorize(t.policy, entityView{t}, cedar.Request{
			Principal: principal, Action: r.f.actions[i], Resource: n.uid, Context: ctx,
		})
		if dec == cedar.Allow {
			a.permitted.add(meth.ID)
			for _, why := range diag.Reasons {
				used[why.PolicyID] = true
			}
			continue
		}
		why := "no permit applies"
		if len(diag.Reasons) > 0 {
			why = "forbidden by " + string(diag.Reasons[0].PolicyID)
		} else if len(diag.Errors) > 0 {
			why += "; " + diag.Errors[0].String()
		}
		a.denied = append(a.denied, r.f.Name+"."+meth.Name+" ("+why+")")
	}
	for _, e := range t.policy.list {
		if !used[e.id] {
			continue
		}
		a.policies = append(a.policies, e.id)
		c, code, err := e.cav.caveats(r.issued, r.holder, r.scope, t.topo)
		if err != nil {
			return a, code, fmt.Errorf("%s: %w", e.id, err)
		}
		if a.caveats, err = meet(a.caveats, c); err != nil {
			return a, CodeNotPermitted, fmt.Errorf("policies disagree: %w", err)
		}
	}
	return a, OK, nil
}
