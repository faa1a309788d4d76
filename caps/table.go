package caps

import (
	"fmt"
	"iter"
	"math"
	"slices"
	"strings"
	"time"

	cedar "github.com/cedar-policy/cedar-go"
)

// DefaultMaxDepth is the delegation depth allowed when Config.MaxDepth is 0.
const DefaultMaxDepth = 8

// Config configures a Table. The zero Config is valid: a table with no
// interfaces, no topology and no policy, which grants nothing.
type Config struct {
	// Interfaces is the catalog of interfaces grants may be for. It fixes
	// the Cedar actions, so it cannot change for the life of the table.
	Interfaces []Interface
	// Topology is the building's places and devices (see SetTopology).
	Topology []Node
	// Policy is the Cedar policy (see SetPolicy).
	Policy []PolicyFile
	// Location is where time-of-day windows and the policy context's
	// minuteOfDay and weekday are reckoned; nil means UTC.
	Location *time.Location
	// MaxDepth bounds delegation chains (a root has depth 0); 0 means
	// DefaultMaxDepth, at most 255.
	MaxDepth int
	// FirstGrant is the id of the first grant the table issues (ids
	// follow in order); 0 means 1. A kernel restarting on a ledger passes
	// one more than the highest id the ledger holds, so no id names two
	// grants.
	FirstGrant GrantID
}

func (c *Config) validate() error {
	if c.MaxDepth < 0 || c.MaxDepth > math.MaxUint8 {
		return fmt.Errorf("max depth %d: want 0..255", c.MaxDepth)
	}
	if c.MaxDepth == 0 {
		c.MaxDepth = DefaultMaxDepth
	}
	if c.Location == nil {
		c.Location = time.UTC
	}
	return nil
}

// Table is the grant table: the derivation tree of every grant, the presence
// of people, the topology and the policy. It is a state machine with no I/O,
// clock or goroutines: each method takes one input and returns its Decision.
// It is not safe for concurrent use; the kernel's sequencer feeds it inputs
// one at a time, in ledger order.
type Table struct {
	loc      *time.Location
	maxDepth int
	ifaces   map[uint64]*iface
	ifaceSeq []*iface // sorted by name
	topo     *topology
	policy   *policy

	// grants[id-base-1] is grant id; ids are dense because the table
	// assigns them, from base+1.
	grants []grant
	base   GrantID
	// presence maps a person to the places they are in, sorted.
	presence map[string][]string
	// bound maps a person to the grants bound to their presence, by id.
	bound map[string][]GrantID
	stack []GrantID // scratch for walks
	// byHolder lists each holder's grants by id; those that ended are
	// dropped whenever HeldBy or Held reads the holder's list.
	byHolder map[Principal][]GrantID
}

// grant is one node of the derivation tree. The fields every admission
// reads come first, together, so a chain walk touches few cache lines.
type grant struct {
	revoked  bool
	released bool
	gone     bool // released with no children left: only the id remains
	parent   GrantID
	exp      int64 // Caveats.Expires in Unix ns; MaxInt64 for none
	interval int64 // rate: ns per token; 0 for no rate
	tol      int64 // rate: burst tolerance, Per - interval
	tat      int64 // rate: theoretical arrival time
	uses     int   // Caveats.Uses
	used     int
	win      Window // Caveats.Window
	methods  methodSet
	scope    string  // effective place scope: cav.Place, or target
	target   string  // shares its bytes with scope when there is no place
	ranges   []Range // Caveats.Ranges

	first, last GrantID // children, in creation order
	next, prev  GrantID // siblings
	holder      Principal
	f           *iface
	cav         Caveats
	issued      time.Time
	policies    []cedar.PolicyID
	depth       uint8
	attenuation bool // a child held by its parent's holder; not policy-checked
}

// New validates cfg and returns an empty table loaded with its topology and
// policy.
func New(cfg Config) (*Table, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("caps config: %w", err)
	}
	byID, list, err := newCatalog(cfg.Interfaces)
	if err != nil {
		return nil, fmt.Errorf("caps config: %w", err)
	}
	t := &Table{loc: cfg.Location, maxDepth: cfg.MaxDepth, ifaces: byID, ifaceSeq: list,
		presence: map[string][]string{}, bound: map[string][]GrantID{}}
	if cfg.FirstGrant > 1 {
		t.base = cfg.FirstGrant - 1
	}
	if t.topo, err = newTopology(cfg.Topology, list); err != nil {
		return nil, fmt.Errorf("caps config: %w", err)
	}
	if len(cfg.Policy) > 0 {
		if t.policy, err = loadPolicy(cfg.Policy, list); err != nil {
			return nil, fmt.Errorf("caps config: %w", err)
		}
	}
	return t, nil
}

func refuse(op Op, id GrantID, code Code, format string, args ...any) Decision {
	return Decision{Op: op, Grant: id, Code: code, Reason: fmt.Sprintf(format, args...)}
}

// Open decides a request for a root grant. The policy is asked, for each
// method wanted, whether o.Holder may call it on the resource (the place
// o.Caveats.Place if set, else o.Target); the permitted methods form the
// grant's method set and the caveats of the permit policies that applied,
// combined with o.Caveats, form its caveats.
func (t *Table) Open(o Open) Decision {
	const op = OpOpen
	f := t.ifaces[o.Interface]
	if f == nil {
		return refuse(op, 0, CodeNotFound, "no interface %#x", o.Interface)
	}
	if !o.Holder.valid() {
		return refuse(op, 0, CodeInvalid, "holder %q is not a device, person, app or operator", o.Holder)
	}
	if t.topo.nodes[o.Target] == nil {
		return refuse(op, 0, CodeNotFound, "target %s is not in the topology", o.Target)
	}
	cav := o.Caveats
	if err := cav.normalize(); err != nil {
		return refuse(op, 0, CodeInvalid, "caveats: %v", err)
	}
	scope := o.Target
	if cav.Place != "" {
		if !pathWithin(cav.Place, o.Target) {
			return refuse(op, 0, CodeOutOfScope, "place %s is not inside target %s", cav.Place, o.Target)
		}
		if t.topo.nodes[cav.Place] == nil {
			return refuse(op, 0, CodeNotFound, "place %s is not in the topology", cav.Place)
		}
		scope = cav.Place
	}
	want := f.all
	if o.Methods != nil {
		var code Code
		var why string
		if want, code, why = f.parseMethods(o.Methods); code != OK {
			return refuse(op, 0, code, "%s", why)
		}
	}
	issued := o.Now.Round(0)
	ans, code, err := t.evaluate(request{holder: o.Holder, f: f, methods: want, scope: scope, op: "open", issued: issued})
	if err != nil {
		return refuse(op, 0, code, "%v", err)
	}
	if ans.permitted.empty() || o.Methods != nil && ans.permitted != want {
		return refuse(op, 0, CodeNotPermitted, "policy does not permit %s on %s: %s", o.Holder, scope, strings.Join(ans.denied, ", "))
	}
	final, err := meet(cav, ans.caveats)
	if err != nil {
		return refuse(op, 0, CodeNotPermitted, "requested caveats conflict with policy: %v", err)
	}
	g := grant{holder: o.Holder, f: f, target: o.Target, scope: scope, methods: ans.permitted,
		cav: final, issued: issued, policies: ans.policies}
	if d, ok := t.admissible(op, &g, issued); !ok {
		return d
	}
	id := t.add(g, 0)
	return Decision{Op: op, Grant: id, Reason: "permitted by " + joinIDs(ans.policies)}
}

// Delegate decides a request for a child of d.From. Anything the child would
// get beyond From (a method, a wider range or place or window, a later
// expiry, more uses, a higher rate, a dropped binding) is refused with
// CodeAmplify. A child for someone else must also be permitted by the policy
// (with context.op "delegate"), whose caveats are added.
func (t *Table) Delegate(d Delegate) Decision {
	const op = OpDelegate
	p, code := t.lookup(d.From)
	if code != OK {
		return refuse(op, 0, code, "no grant %s", d.From)
	}
	switch {
	case p.revoked:
		return refuse(op, 0, CodeRevoked, "%s is revoked", d.From)
	case d.Now.UnixNano() >= p.exp:
		return refuse(op, 0, CodeExpired, "%s expired at %s", d.From, fmtTime(p.cav.Expires))
	case !d.To.valid():
		return refuse(op, 0, CodeInvalid, "holder %q is not a device, person, app or operator", d.To)
	}
	self := d.To == p.holder
	if !self && p.cav.NoReshare {
		return refuse(op, 0, CodeNoReshare, "%s may not be reshared with %s", d.From, d.To)
	}
	if int(p.depth)+1 > t.maxDepth {
		return refuse(op, 0, CodeNotPermitted, "delegation deeper than %d", t.maxDepth)
	}
	methods := p.methods
	if d.Methods != nil {
		var code Code
		var why string
		if methods, code, why = p.f.parseMethods(d.Methods); code != OK {
			return refuse(op, 0, code, "%s", why)
		}
		if !methods.subset(p.methods) {
			var extra methodSet
			for i := range extra {
				extra[i] = methods[i] &^ p.methods[i]
			}
			return refuse(op, 0, CodeAmplify, "methods %s are not in %s's %s", p.f.setString(extra), d.From, p.f.setString(p.methods))
		}
	}
	req := d.Caveats
	if err := req.normalize(); err != nil {
		return refuse(op, 0, CodeInvalid, "caveats: %v", err)
	}
	if req.Place != "" && t.topo.nodes[req.Place] == nil {
		return refuse(op, 0, CodeNotFound, "place %s is not in the topology", req.Place)
	}
	usesLeft := p.uses - p.used
	if p.uses != 0 && usesLeft <= 0 {
		return refuse(op, 0, CodeUsedUp, "%s's %d uses are spent", d.From, p.uses)
	}
	child := overlay(p.cav, req)
	if req.Uses == 0 && p.cav.Uses != 0 {
		child.Uses = usesLeft
	}
	scope := p.scope
	if child.Place != "" {
		scope = child.Place
	}
	if ok, why := within(child, scope, p.cav, p.scope, usesLeft); !ok {
		return refuse(op, 0, CodeAmplify, "%s (compared with %s)", why, d.From)
	}
	issued := d.Now.Round(0)
	g := grant{holder: d.To, f: p.f, target: p.target, scope: scope, methods: methods, cav: child,
		issued: issued, depth: p.depth + 1, attenuation: self}
	reason := "attenuation of " + d.From.String()
	if !self {
		ans, code, err := t.evaluate(request{holder: d.To, f: p.f, methods: methods, scope: scope, op: "delegate", depth: int(g.depth), issued: issued})
		if err != nil {
			return refuse(op, 0, code, "%v", err)
		}
		if ans.permitted != methods {
			return refuse(op, 0, CodeNotPermitted, "policy does not permit %s on %s: %s", d.To, scope, strings.Join(ans.denied, ", "))
		}
		if g.cav, err = meet(g.cav, ans.caveats); err != nil {
			return refuse(op, 0, CodeNotPermitted, "caveats conflict with policy: %v", err)
		}
		g.policies = ans.policies
		reason = "delegated from " + d.From.String() + ", permitted by " + joinIDs(ans.policies)
	}
	if dd, ok := t.admissible(op, &g, issued); !ok {
		return dd
	}
	id := t.add(g, d.From)
	return Decision{Op: op, Grant: id, Reason: reason}
}

// admissible checks a new grant's caveats against the present state: its
// places exist, it has not expired, and every presence binding holds.
func (t *Table) admissible(op Op, g *grant, now time.Time) (Decision, bool) {
	if !g.cav.Expires.IsZero() && !now.Before(g.cav.Expires) {
		return refuse(op, 0, CodeExpired, "grant would expire at %s, not after now (%s)", fmtTime(g.cav.Expires), fmtTime(now)), false
	}
	for _, b := range g.cav.Presence {
		if n := t.topo.nodes[b.Place]; n == nil || n.device() {
			return refuse(op, 0, CodeNotFound, "presence place %s is not a place in the topology", b.Place), false
		}
		if !t.present(b) {
			return refuse(op, 0, CodeNotPresent, "%s is not in %s", b.Person, b.Place), false
		}
	}
	return Decision{}, true
}

func (f *iface) parseMethods(names []string) (methodSet, Code, string) {
	var s methodSet
	for _, n := range names {
		id, ok := f.byName[n]
		if !ok {
			return s, CodeNotFound, fmt.Sprintf("interface %s has no method %q", f.Name, n)
		}
		s.add(id)
	}
	if s.empty() {
		return s, CodeInvalid, "no methods asked for"
	}
	return s, OK, ""
}

func joinIDs(ids []cedar.PolicyID) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = string(id)
	}
	return strings.Join(s, ", ")
}

// add links g into the tree under parent and returns its new id.
func (t *Table) add(g grant, parent GrantID) GrantID {
	id := t.base + GrantID(len(t.grants)+1)
	g.parent = parent
	g.uses, g.win, g.ranges = g.cav.Uses, g.cav.Window, g.cav.Ranges
	if g.scope == g.target {
		g.scope = g.target
	}
	g.exp = math.MaxInt64
	if !g.cav.Expires.IsZero() {
		g.exp = g.cav.Expires.UnixNano()
	}
	if r := g.cav.Rate; r.Set() {
		g.interval = int64(r.Per) / int64(r.N)
		g.tol = int64(r.Per) - g.interval
		g.tat = math.MinInt64 / 2
	}
	if parent != 0 {
		p := &t.grants[parent-t.base-1]
		g.prev = p.last
		if p.last != 0 {
			t.grants[p.last-t.base-1].next = id
		} else {
			p.first = id
		}
		p.last = id
	}
	t.grants = append(t.grants, g)
	if t.byHolder == nil {
		t.byHolder = map[Principal][]GrantID{}
	}
	t.byHolder[g.holder] = append(t.byHolder[g.holder], id)
	seen := map[string]bool{}
	for _, b := range g.cav.Presence {
		if !seen[b.Person] {
			seen[b.Person] = true
			t.bound[b.Person] = append(t.bound[b.Person], id)
		}
	}
	return id
}

// has reports whether the table issued grant id.
func (t *Table) has(id GrantID) bool {
	return id > t.base && id <= t.base+GrantID(len(t.grants))
}

// lookup returns a grant that exists and has not been released.
func (t *Table) lookup(id GrantID) (*grant, Code) {
	if !t.has(id) {
		return nil, CodeNotFound
	}
	g := &t.grants[id-t.base-1]
	if g.gone || g.released {
		return nil, CodeNotFound
	}
	return g, OK
}

// Admit decides a call: it is admitted when every grant from c.Grant up to
// its root is live and admits it (method in the set, place in scope,
// arguments in range, not expired, inside the window, within the rate, uses
// left). Admitting spends a use and a rate token on each grant of the chain;
// a denial changes nothing. A call is never admitted after its grant's
// revocation in input order. Admit does not allocate unless it denies.
func (t *Table) Admit(c Call) Decision {
	code, at := t.check(&c)
	if code != OK {
		return t.denial(&c, code, at)
	}
	now := c.Now.UnixNano()
	for id := c.Grant; id != 0; {
		g := &t.grants[id-t.base-1]
		if g.interval != 0 {
			g.tat = max(g.tat, now) + g.interval
		}
		if g.uses != 0 {
			g.used++
		}
		id = g.parent
	}
	return Decision{Op: OpCall, Grant: c.Grant}
}

// Check decides c like Admit but spends nothing: it answers "would this be
// admitted now?".
func (t *Table) Check(c Call) Decision {
	code, at := t.check(&c)
	if code != OK {
		return t.denial(&c, code, at)
	}
	return Decision{Op: OpCall, Grant: c.Grant}
}

// Live decides whether grant id still stands at now: it and every grant
// it derives from exist, are neither revoked nor released, and have not
// expired. It spends nothing. Capabilities that reach a holder through a
// grant but are not its methods (a subscription, a listener it passed in)
// live as long as this holds.
func (t *Table) Live(id GrantID, now time.Time) Decision {
	if _, code := t.lookup(id); code != OK {
		return refuse(OpCall, id, code, "%s: %s", id, code)
	}
	ns := now.UnixNano()
	for at := id; at != 0; {
		g := &t.grants[at-t.base-1]
		switch {
		case g.revoked:
			return refuse(OpCall, id, CodeRevoked, "%s has been revoked", at)
		case ns >= g.exp:
			return refuse(OpCall, id, CodeExpired, "%s expired", at)
		}
		at = g.parent
	}
	return Decision{Op: OpCall, Grant: id}
}

// check returns the first refusal along c's chain and the grant refusing.
func (t *Table) check(c *Call) (Code, GrantID) {
	g, code := t.lookup(c.Grant)
	if code != OK {
		return code, c.Grant
	}
	now := c.Now.UnixNano()
	minute := -1
	addr := c.Addr
	if addr == "" {
		addr = g.target
	}
	for id := c.Grant; id != 0; id = g.parent {
		g = &t.grants[id-t.base-1]
		switch {
		case g.revoked:
			return CodeRevoked, id
		case now >= g.exp:
			return CodeExpired, id
		case !g.methods.has(c.Method):
			return CodeNotPermitted, id
		case !pathWithin(addr, g.scope):
			return CodeOutOfScope, id
		case g.interval != 0 && now < g.tat-g.tol:
			return CodeRateLimited, id
		case g.uses != 0 && g.used >= g.uses:
			return CodeUsedUp, id
		}
		if g.win.Set() {
			if minute < 0 {
				h, m, _ := c.Now.In(t.loc).Clock()
				minute = h*60 + m
			}
			if !g.win.Contains(minute) {
				return CodeWindow, id
			}
		}
		for i := range g.ranges {
			r := &g.ranges[i]
			for j := range c.Args {
				if a := &c.Args[j]; a.Name == r.Arg && !(a.Value >= r.Min && a.Value <= r.Max) {
					return CodeOutOfRange, id
				}
			}
		}
	}
	return OK, 0
}

// denial explains a refused call.
func (t *Table) denial(c *Call, code Code, at GrantID) Decision {
	d := Decision{Op: OpCall, Grant: c.Grant, Code: code}
	if code == CodeNotFound {
		d.Reason = "no grant " + c.Grant.String()
		return d
	}
	g := &t.grants[at-t.base-1]
	who := at.String()
	if at != c.Grant {
		who = "ancestor " + who
	}
	switch code {
	case CodeRevoked:
		d.Reason = who + " is revoked"
	case CodeExpired:
		d.Reason = who + " expired at " + fmtTime(g.cav.Expires)
	case CodeNotPermitted:
		name := fmt.Sprintf("#%d", c.Method)
		if i, ok := g.f.byID[c.Method]; ok {
			name = g.f.Methods[i].Name
		}
		d.Reason = fmt.Sprintf("method %s is not in %s's %s", name, who, g.f.setString(g.methods))
	case CodeOutOfScope:
		addr := c.Addr
		if addr == "" {
			addr = g.target
		}
		d.Reason = fmt.Sprintf("%s is outside %s's place %s", addr, who, g.scope)
	case CodeRateLimited:
		d.Reason = fmt.Sprintf("%s admits %s", who, g.cav.Rate)
	case CodeUsedUp:
		d.Reason = fmt.Sprintf("%s's %d uses are spent", who, g.cav.Uses)
	case CodeWindow:
		h, m, _ := c.Now.In(t.loc).Clock()
		d.Reason = fmt.Sprintf("%s admits calls %s, not at %02d:%02d", who, g.cav.Window, h, m)
	case CodeOutOfRange:
		for _, r := range g.cav.Ranges {
			for _, a := range c.Args {
				if a.Name == r.Arg && !(a.Value >= r.Min && a.Value <= r.Max) {
					d.Reason = fmt.Sprintf("%s=%v is outside %s's range %s", a.Name, a.Value, who, r)
					return d
				}
			}
		}
	}
	return d
}

// Revoke revokes r.Grant and every grant derived from it, at once: no call
// through any of them is admitted after this input. Decision.Revoked lists
// them so the kernel can cancel their calls in flight.
func (t *Table) Revoke(r Revoke) Decision {
	const op = OpRevoke
	if !t.has(r.Grant) || t.grants[r.Grant-t.base-1].gone {
		return refuse(op, r.Grant, CodeNotFound, "no grant %s", r.Grant)
	}
	g := &t.grants[r.Grant-t.base-1]
	if g.revoked {
		return refuse(op, r.Grant, CodeRevoked, "%s is already revoked", r.Grant)
	}
	if !t.mayRevoke(r.By, r.Grant) {
		return refuse(op, r.Grant, CodeNotPermitted, "%s holds neither %s nor an ancestor of it", r.By, r.Grant)
	}
	reason := r.Reason
	if reason == "" {
		reason = "revoked by " + r.By.String()
	}
	return Decision{Op: op, Grant: r.Grant, Reason: reason, Revoked: t.cascade(r.Grant, reason, nil)}
}

func (t *Table) mayRevoke(by Principal, id GrantID) bool {
	if by == (Principal{}) || by.Kind == Operator {
		return true
	}
	for ; id != 0; id = t.grants[id-t.base-1].parent {
		if t.grants[id-t.base-1].holder == by {
			return true
		}
	}
	return false
}

// cascade revokes root's live subtree in pre-order and appends it to revs.
func (t *Table) cascade(root GrantID, reason string, revs []Revocation) []Revocation {
	stack := append(t.stack[:0], root)
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		g := &t.grants[id-t.base-1]
		if g.revoked {
			continue // its subtree is revoked already
		}
		g.revoked = true
		rv := Revocation{Grant: id, Root: root}
		if id == root {
			rv.Reason = reason
		}
		revs = append(revs, rv)
		// Push children last-first so they pop in creation order.
		for c := g.last; c != 0; c = t.grants[c-t.base-1].prev {
			stack = append(stack, c)
		}
	}
	t.stack = stack
	return revs
}

// Release records that the holder dropped the grant. A released grant
// admits no more calls and cannot be delegated, but it stays in the tree
// (its caveats still bind) while grants derived from it live; once it has
// none it is removed, and so, in turn, are released ancestors left with none.
func (t *Table) Release(id GrantID) Decision {
	const op = OpRelease
	g, code := t.lookup(id)
	if code != OK {
		return refuse(op, id, code, "no grant %s", id)
	}
	g.released = true
	d := Decision{Op: op, Grant: id}
	for id != 0 {
		g := &t.grants[id-t.base-1]
		if !g.released || g.first != 0 {
			break
		}
		parent := g.parent
		if parent != 0 {
			p := &t.grants[parent-t.base-1]
			if g.prev != 0 {
				t.grants[g.prev-t.base-1].next = g.next
			} else {
				p.first = g.next
			}
			if g.next != 0 {
				t.grants[g.next-t.base-1].prev = g.prev
			} else {
				p.last = g.prev
			}
		}
		*g = grant{gone: true, revoked: true}
		id = parent
	}
	return d
}

// Enter records that a person is in a place.
func (t *Table) Enter(p Presence) Decision {
	const op = OpEnter
	n := t.topo.nodes[p.Place]
	if p.Person == "" || n == nil || n.device() {
		return refuse(op, 0, CodeNotFound, "%s is not a person in a place of the topology", p)
	}
	at := t.presence[p.Person]
	if i, found := slices.BinarySearch(at, p.Place); !found {
		t.presence[p.Person] = slices.Insert(at, i, p.Place)
	}
	return Decision{Op: op}
}

// Leave records that a person left a place (and so everything inside it),
// and revokes the grants bound to a presence of theirs that no longer holds.
func (t *Table) Leave(p Presence) Decision {
	const op = OpLeave
	at := slices.DeleteFunc(t.presence[p.Person], func(place string) bool { return pathWithin(place, p.Place) })
	if len(at) == 0 {
		delete(t.presence, p.Person)
	} else {
		t.presence[p.Person] = at
	}
	reason := p.Person + " left " + p.Place
	return Decision{Op: op, Reason: reason, Revoked: t.dropUnbound(p.Person, reason, nil)}
}

// dropUnbound revokes person's presence-bound grants whose binding no
// longer holds.
func (t *Table) dropUnbound(person, reason string, revs []Revocation) []Revocation {
	ids := t.bound[person]
	keep := ids[:0]
	for _, id := range ids {
		g := &t.grants[id-t.base-1]
		if g.revoked {
			continue
		}
		holds := true
		for _, b := range g.cav.Presence {
			if b.Person == person && !t.present(b) {
				holds = false
			}
		}
		if !holds {
			revs = t.cascade(id, reason, revs)
			continue
		}
		keep = append(keep, id)
	}
	if len(keep) == 0 {
		delete(t.bound, person)
	} else {
		t.bound[person] = keep
	}
	return revs
}

// SetPolicy replaces the policy, after parsing and type-checking every
// file; on any error the old policy stays and the error lists each problem
// as a *PolicyError (file, line, reason). Then it re-checks every standing
// grant against the new policy, with the context it was issued in, and
// revokes those the new policy would not grant, or would grant only with
// stricter caveats.
func (t *Table) SetPolicy(files ...PolicyFile) (Decision, error) {
	p, err := loadPolicy(files, t.ifaceSeq)
	if err != nil {
		return Decision{}, err
	}
	t.policy = p
	n := len(p.list)
	return Decision{Op: OpPolicy, Reason: fmt.Sprintf("loaded %d policies from %d files", n, len(files)),
		Revoked: t.recheck()}, nil
}

// SetTopology replaces the topology. People are no longer present in places
// that are gone; then every standing grant is re-checked (target and places
// still exist, presence bindings still hold, the policy still grants it) as
// in SetPolicy.
func (t *Table) SetTopology(nodes []Node) (Decision, error) {
	topo, err := newTopology(nodes, t.ifaceSeq)
	if err != nil {
		return Decision{}, err
	}
	t.topo = topo
	for person, at := range t.presence {
		at = slices.DeleteFunc(at, func(place string) bool { n := topo.nodes[place]; return n == nil || n.device() })
		if len(at) == 0 {
			delete(t.presence, person)
		} else {
			t.presence[person] = at
		}
	}
	return Decision{Op: OpTopology, Reason: fmt.Sprintf("%d nodes", len(nodes)), Revoked: t.recheck()}, nil
}

// recheck revokes, in id order, every live grant that no longer holds.
func (t *Table) recheck() []Revocation {
	var revs []Revocation
	for i := range t.grants {
		if g := &t.grants[i]; !g.revoked {
			if why := t.stillHolds(g); why != "" {
				revs = t.cascade(t.base+GrantID(i+1), why, revs)
			}
		}
	}
	return revs
}

// stillHolds returns why g no longer holds, or "".
func (t *Table) stillHolds(g *grant) string {
	if t.topo.nodes[g.target] == nil {
		return "target " + g.target + " left the topology"
	}
	if t.topo.nodes[g.scope] == nil {
		return "place " + g.scope + " left the topology"
	}
	for _, b := range g.cav.Presence {
		if !t.present(b) {
			return b.Person + " is no longer in " + b.Place
		}
	}
	if g.attenuation {
		return "" // no more than its parent, which is checked itself
	}
	op := "open"
	if g.parent != 0 {
		op = "delegate"
	}
	ans, _, err := t.evaluate(request{holder: g.holder, f: g.f, methods: g.methods, scope: g.scope, op: op, depth: int(g.depth), issued: g.issued})
	if err != nil {
		return "policy: " + err.Error()
	}
	if ans.permitted != g.methods {
		return "policy no longer permits " + strings.Join(ans.denied, ", ")
	}
	if ok, why := within(g.cav, g.scope, ans.caveats, g.scope, ans.caveats.Uses); !ok {
		return "policy now requires stricter caveats: " + why
	}
	return ""
}

// Grant is a read-only view of one grant, for the kernel's ledger entries
// and for provenance queries.
type Grant struct {
	ID        GrantID
	Parent    GrantID // zero for a root
	Holder    Principal
	Target    string
	Interface uint64
	Methods   []Method // by ordinal
	Caveats   Caveats
	Issued    time.Time
	Depth     int
	// Policies are the ids of the permit policies that allowed it; none
	// for an attenuation.
	Policies []string
	UsesLeft int // when Caveats.Uses is set
	Revoked  bool
	Released bool
}

// Grant returns a view of grant id, if it has not been removed.
func (t *Table) Grant(id GrantID) (Grant, bool) {
	if !t.has(id) || t.grants[id-t.base-1].gone {
		return Grant{}, false
	}
	g := &t.grants[id-t.base-1]
	v := Grant{ID: id, Parent: g.parent, Holder: g.holder, Target: g.target, Interface: g.f.ID,
		Methods: g.f.methods(g.methods), Caveats: g.cav, Issued: g.issued, Depth: int(g.depth),
		Revoked: g.revoked, Released: g.released}
	v.Caveats.Ranges = slices.Clone(g.cav.Ranges)
	v.Caveats.Presence = slices.Clone(g.cav.Presence)
	for _, p := range g.policies {
		v.Policies = append(v.Policies, string(p))
	}
	if g.cav.Uses != 0 {
		v.UsesLeft = g.cav.Uses - g.used
	}
	return v, true
}

// HeldBy returns the ids of the grants holder holds that are neither
// revoked nor released, in id order. Its cost is in the holder's grants,
// not the table's.
func (t *Table) HeldBy(holder Principal) []GrantID {
	return slices.Clone(t.live(holder))
}

// Held returns the first grant, by id, that holder holds on target's
// interface iface and that is neither revoked nor released; 0 if none.
func (t *Table) Held(holder Principal, target string, iface uint64) GrantID {
	for _, id := range t.live(holder) {
		if g := &t.grants[id-t.base-1]; g.target == target && g.f.ID == iface {
			return id
		}
	}
	return 0
}

// live drops the holder's ended grants from byHolder and returns the
// rest, in id order; the slice is the index's own.
func (t *Table) live(holder Principal) []GrantID {
	ids := t.byHolder[holder]
	n := 0
	for _, id := range ids {
		if g := &t.grants[id-t.base-1]; !g.revoked && !g.released && !g.gone {
			ids[n] = id
			n++
		}
	}
	clear(ids[n:])
	if n == 0 {
		delete(t.byHolder, holder)
		return nil
	}
	t.byHolder[holder] = ids[:n]
	return ids[:n]
}

// Grants yields every grant not removed, by id.
func (t *Table) Grants() iter.Seq[Grant] {
	return func(yield func(Grant) bool) {
		for i := range t.grants {
			if v, ok := t.Grant(t.base + GrantID(i+1)); ok && !yield(v) {
				return
			}
		}
	}
}

// Children returns the ids of id's children, in creation order.
func (t *Table) Children(id GrantID) []GrantID {
	if !t.has(id) {
		return nil
	}
	var out []GrantID
	for c := t.grants[id-t.base-1].first; c != 0; c = t.grants[c-t.base-1].next {
		out = append(out, c)
	}
	return out
}

// Present returns the places a person is recorded in, sorted.
func (t *Table) Present(person string) []string {
	return slices.Clone(t.presence[person])
}
