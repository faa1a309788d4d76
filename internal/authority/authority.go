package authority

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"capnproto.org/go/capnp/v3"

	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
)

// Kinds are the ledger kinds that make or end grants: what a caller feeds
// Apply (ledger.Lookup with ledger.ByKind for each, merged in seq order).
var Kinds = []ledger.Kind{
	ledger.KindGrant, ledger.KindDelegate, ledger.KindRevoke, ledger.KindRelease,
	ledger.KindPresence, ledger.KindPolicy, ledger.KindStart,
}

// Sentinel errors callers branch on.
var (
	// ErrNoGrant: no grant of that id was made on the ledger so far.
	ErrNoGrant = errors.New("no such grant")
	// ErrOrder: entries must be applied in ascending seq order.
	ErrOrder = errors.New("entry out of order")
)

// Event is when and by whom something happened to a grant: one ledger
// entry.
type Event struct {
	Seq    uint64
	Time   int64       // logical time, ns since the Unix epoch
	Kind   ledger.Kind // grant or delegate (made); revoke, release, ... (ended)
	Actor  string      // the principal that acted
	Reason string      // the entry's reason, as the kernel wrote it
}

// End is how a grant ended.
type End struct {
	Event
	// Root is the grant the entry was about: the grant itself, or the
	// ancestor whose revocation cascaded to it.
	Root uint64
}

// Grant is the history of one grant.
type Grant struct {
	ID            uint64
	Holder        string // "" when the entry's body is missing
	Grantor       string // "policy" for a root, the parent's holder for a child
	Parent        uint64 // 0 for a root
	Target        string // device path
	Interface     uint64
	InterfaceName string
	Methods       []string
	Caveats       string // effective caveats in one line, as the kernel wrote them
	Expires       int64  // logical ns; 0 = never
	// Made is the entry that made the grant. For a root (kind grant) the
	// actor is who asked (the holder opening it, or an operator granting
	// it), and the decision was the policy's: Policies names the policies
	// that permitted it.
	Made     Event
	Policies []string
	// Ended is the entry that ended it, nil while it stands.
	Ended *End
	// NoBody is set when the entry's result body (the schema.Grant) was not
	// there to read: Holder, Grantor, Methods and Caveats are unknown.
	NoBody bool
}

// Name is the grant's id as the kernel writes it: "g12".
func (g *Grant) Name() string { return Name(g.ID) }

// Name writes a grant id as the kernel does: "g12".
func Name(id uint64) string { return "g" + strconv.FormatUint(id, 10) }

// ParseName reads a grant id written "g12" or "12".
func ParseName(s string) (uint64, bool) {
	n, err := strconv.ParseUint(strings.TrimPrefix(s, "g"), 10, 64)
	return n, err == nil && n != 0
}

// At is a point of the ledger: the state after the entry at Seq, whose
// logical time is Time.
type At struct {
	Seq  uint64
	Time int64
}

// State is what a grant is at a point.
type State string

// States.
const (
	Unmade   State = "unmade" // made after the point
	Live     State = "live"
	Expired  State = "expired"
	Revoked  State = "revoked"
	Released State = "released"
	// Restarted: a kernel restart ended it (the kernel's "start" entry).
	Restarted State = "restarted"
)

// StateAt says what g is at a point.
func (g *Grant) StateAt(at At) State {
	switch {
	case g.Made.Seq > at.Seq:
		return Unmade
	case g.Ended != nil && g.Ended.Seq <= at.Seq:
		switch g.Ended.Kind {
		case ledger.KindRevoke:
			return Revoked
		case ledger.KindRelease:
			return Released
		case ledger.KindStart:
			return Restarted
		default:
			return State(g.Ended.Kind) // presence, policy: ended by that entry
		}
	case g.Expires != 0 && at.Time >= g.Expires:
		return Expired
	}
	return Live
}

// Entry is one ledger entry as Apply reads it: its envelope and the data
// of its bodies (nil when absent).
type Entry struct {
	Envelope       *ledger.Envelope
	Params, Result []byte
}

// History is the history of every grant made on a ledger, as far as it
// has been applied. The zero value is not usable; call New.
type History struct {
	grants  map[uint64]*Grant
	bySeq   map[uint64]uint64 // seq of a making entry -> grant id
	applied bool
	last    uint64
	// Anomalies are what Apply found odd but could work around (a missing
	// body, an ended grant that was never made), with the seq.
	Anomalies []string
}

// New returns an empty history.
func New() *History {
	return &History{grants: map[uint64]*Grant{}, bySeq: map[uint64]uint64{}}
}

// Last returns the seq of the last entry applied, and false before any.
func (h *History) Last() (uint64, bool) { return h.last, h.applied }

// Len returns how many grants have been made.
func (h *History) Len() int { return len(h.grants) }

// Apply folds one entry into the history. Entries must come in ascending
// seq order; kinds other than Kinds are ignored.
func (h *History) Apply(e Entry) error {
	env := e.Envelope
	if h.applied && env.Seq <= h.last {
		return fmt.Errorf("%w: seq %d after %d", ErrOrder, env.Seq, h.last)
	}
	h.applied, h.last = true, env.Seq
	if env.Decision == ledger.DecisionDeny {
		return nil
	}
	ev := Event{Seq: env.Seq, Time: env.Time, Kind: env.Kind, Actor: env.Actor, Reason: env.Reason}
	switch env.Kind {
	case ledger.KindGrant, ledger.KindDelegate:
		if env.Grant == 0 || env.Decision != ledger.DecisionAdmit {
			return nil // a refusal
		}
		return h.make(ev, env, e.Result)
	case ledger.KindStart:
		// A kernel started: no grant of an earlier run is live in it.
		for _, g := range h.grants {
			if g.Ended == nil {
				g.Ended = &End{Event: ev}
			}
		}
	case ledger.KindRevoke, ledger.KindRelease, ledger.KindPresence, ledger.KindPolicy:
		ids, ok := parseList(e.Params)
		if !ok {
			switch {
			case env.Kind != ledger.KindRevoke && env.Kind != ledger.KindRelease:
				return nil // not a revocation in the grant-list convention
			case e.Params != nil:
				return fmt.Errorf("seq %d: %s: params body is not a grant list: %q", env.Seq, env.Kind, truncate(e.Params))
			case env.Grant == 0:
				return nil
			}
			// No body to read: end the grant named, and for a
			// revocation every live grant under it.
			h.anomaly(env.Seq, "%s entry without its list of ended grants: inferred from the tree", env.Kind)
			ids = []uint64{env.Grant}
			if env.Kind == ledger.KindRevoke {
				ids = h.liveSubtree(env.Grant)
			}
		}
		for _, id := range ids {
			g, ok := h.grants[id]
			if !ok {
				h.anomaly(env.Seq, "%s ends %s, which no entry made", env.Kind, Name(id))
				continue
			}
			if g.Ended != nil {
				h.anomaly(env.Seq, "%s ends %s, already ended at seq %d", env.Kind, Name(id), g.Ended.Seq)
				continue
			}
			g.Ended = &End{Event: ev, Root: env.Grant}
		}
	}
	return nil
}

func (h *History) make(ev Event, env *ledger.Envelope, body []byte) error {
	if old, ok := h.grants[env.Grant]; ok {
		return fmt.Errorf("seq %d: %s made again (first at seq %d)", env.Seq, Name(env.Grant), old.Made.Seq)
	}
	g := &Grant{
		ID: env.Grant, Target: env.Device, Interface: env.Interface, Made: ev,
		Policies: policies(env.Reason),
	}
	if env.Kind == ledger.KindDelegate {
		g.Parent = h.bySeq[env.Ref]
	} else {
		g.Grantor = "policy"
	}
	if body == nil {
		g.NoBody = true
		h.anomaly(env.Seq, "%s entry of %s without its grant body", env.Kind, Name(env.Grant))
	} else if err := g.decode(body); err != nil {
		return fmt.Errorf("seq %d: grant body of %s: %w", env.Seq, Name(env.Grant), err)
	}
	if env.Kind == ledger.KindDelegate && g.Parent == 0 {
		h.anomaly(env.Seq, "delegation %s names no parent made on this ledger (ref %d)", Name(g.ID), env.Ref)
	}
	h.grants[g.ID] = g
	h.bySeq[env.Seq] = g.ID
	return nil
}

// decode fills g from its schema.Grant body.
func (g *Grant) decode(body []byte) error {
	msg, _, err := capnp.NewMessage(capnp.SingleSegment(body))
	if err != nil {
		return err
	}
	sg, err := schema.ReadRootGrant(msg)
	if err != nil {
		return err
	}
	var errs []error
	text := func(s string, err error) string {
		errs = append(errs, err)
		return s
	}
	if id, ok := ParseName(text(sg.Id())); !ok || id != g.ID {
		return fmt.Errorf("body names grant %q, the envelope %s", text(sg.Id()), Name(g.ID))
	}
	g.Holder = text(sg.Holder())
	if gr := text(sg.Grantor()); gr != "" {
		g.Grantor = gr
	}
	if p := text(sg.Parent()); p != "" {
		id, ok := ParseName(p)
		if !ok {
			return fmt.Errorf("parent %q is not a grant id", p)
		}
		if g.Parent != 0 && g.Parent != id {
			return fmt.Errorf("body names parent %s, the entry's ref %s", p, Name(g.Parent))
		}
		g.Parent = id
	}
	if t := text(sg.Target()); t != "" {
		g.Target = t
	}
	g.InterfaceName = text(sg.InterfaceName())
	if g.Interface == 0 {
		g.Interface = sg.InterfaceId()
	}
	ms, err := sg.Methods()
	errs = append(errs, err)
	for i := 0; i < ms.Len(); i++ {
		g.Methods = append(g.Methods, text(ms.At(i)))
	}
	g.Caveats = text(sg.CaveatsSummary())
	g.Expires = sg.ExpiresAt()
	return errors.Join(errs...)
}

func (h *History) anomaly(seq uint64, format string, a ...any) {
	h.Anomalies = append(h.Anomalies, fmt.Sprintf("seq %d: ", seq)+fmt.Sprintf(format, a...))
}

// liveSubtree lists id and every grant derived from it that has not ended,
// root first.
func (h *History) liveSubtree(id uint64) []uint64 {
	out := []uint64{id}
	all := h.sorted()
	for i := 0; i < len(out); i++ {
		for _, g := range all {
			if g.Parent == out[i] && g.Ended == nil {
				out = append(out, g.ID)
			}
		}
	}
	return out
}

// sorted returns every grant in id order.
func (h *History) sorted() []*Grant {
	out := make([]*Grant, 0, len(h.grants))
	for _, g := range h.grants {
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b *Grant) int { return cmpU(a.ID, b.ID) })
	return out
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Grant returns the grant of an id.
func (h *History) Grant(id uint64) (*Grant, bool) {
	g, ok := h.grants[id]
	return g, ok
}

// Chain returns the grant id and its ancestors, the root last. It fails
// with ErrNoGrant for an id never made.
func (h *History) Chain(id uint64) ([]*Grant, error) {
	g, ok := h.grants[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoGrant, Name(id))
	}
	out := []*Grant{g}
	for g.Parent != 0 {
		p, ok := h.grants[g.Parent]
		if !ok || len(out) > len(h.grants) {
			break // made before this history began, or a cycle in a forged ledger
		}
		out = append(out, p)
		g = p
	}
	return out, nil
}

// Holding is one grant live over a path, with its chain.
type Holding struct {
	Grant *Grant
	// Chain is the grant's ancestors, its parent first and the root
	// last. An ancestor may have ended (a released parent) while the
	// grant stands.
	Chain []*Grant
}

// Under reports whether path p is at or under place (by path segments:
// "a/b" is under "a", "a/bc" is not).
func Under(p, place string) bool {
	return p == place || place == "" || (strings.HasPrefix(p, place) && p[len(place)] == '/')
}

// Touches reports whether any grant made up to at targeted path or a
// device under it.
func (h *History) Touches(path string, at At) bool {
	for _, g := range h.grants {
		if g.Made.Seq <= at.Seq && Under(g.Target, path) {
			return true
		}
	}
	return false
}

// Holders returns every grant live at a point on the device at path or on
// a device at or under the place at path, ordered by target then grant
// id, each with its chain.
func (h *History) Holders(path string, at At) []Holding {
	var out []Holding
	for _, g := range h.sorted() {
		if !Under(g.Target, path) || g.StateAt(at) != Live {
			continue
		}
		c, _ := h.Chain(g.ID)
		out = append(out, Holding{Grant: g, Chain: c[1:]})
	}
	slices.SortStableFunc(out, func(a, b Holding) int { return strings.Compare(a.Grant.Target, b.Grant.Target) })
	return out
}

// parseList reads the params body of an ending entry: grant ids "g2 g3".
func parseList(b []byte) ([]uint64, bool) {
	if len(b) == 0 {
		return nil, false
	}
	var ids []uint64
	for _, f := range strings.Fields(string(b)) {
		if !strings.HasPrefix(f, "g") {
			return nil, false
		}
		id, ok := ParseName(f)
		if !ok {
			return nil, false
		}
		ids = append(ids, id)
	}
	return ids, len(ids) > 0
}

// policies extracts the policy ids from a grant entry's reason:
// "permitted by a.cedar:3, a.cedar:9" or "delegated from g1, permitted by
// a.cedar:3".
func policies(reason string) []string {
	_, list, ok := strings.Cut(reason, "permitted by ")
	if !ok {
		return nil
	}
	var out []string
	for _, p := range strings.Split(list, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func truncate(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}
