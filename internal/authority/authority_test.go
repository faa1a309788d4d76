package authority_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/osmose-os/osmose/internal/authority"
	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
)

const (
	light = "cam/pem/f1/r1/light-1"
	lamp  = "cam/pem/f1/r1/light-2"
	other = "cam/pem/f1/r10/light-1" // r10 is not under r1
	iface = schema.Light_TypeID
)

// ledgerBuilder hands out seqs and times and writes entries as the kernel
// does (kernel/session.go).
type ledgerBuilder struct {
	t       *testing.T
	seq     uint64
	entries []authority.Entry
	grantAt map[uint64]uint64 // grant id -> seq of its making entry
}

func newBuilder(t *testing.T) *ledgerBuilder {
	return &ledgerBuilder{t: t, grantAt: map[uint64]uint64{}}
}

func (b *ledgerBuilder) add(env ledger.Envelope, params, result []byte) uint64 {
	b.seq++
	env.Seq, env.Time = b.seq, int64(b.seq)*1000
	b.entries = append(b.entries, authority.Entry{Envelope: &env, Params: params, Result: result})
	return b.seq
}

// grantBody is the canonical schema.Grant a kernel writes.
func grantBody(t *testing.T, id uint64, holder, grantor string, parent uint64, target string, methods []string, caveats string, expires int64) []byte {
	t.Helper()
	_, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		t.Fatal(err)
	}
	g, err := schema.NewRootGrant(seg)
	if err != nil {
		t.Fatal(err)
	}
	g.SetId(authority.Name(id))
	g.SetHolder(holder)
	g.SetGrantor(grantor)
	if parent != 0 {
		g.SetParent(authority.Name(parent))
	}
	g.SetTarget(target)
	g.SetInterfaceId(iface)
	g.SetInterfaceName("Light")
	ms, _ := g.NewMethods(int32(len(methods)))
	for i, m := range methods {
		ms.Set(i, m)
	}
	g.SetCaveatsSummary(caveats)
	g.SetExpiresAt(expires)
	b, err := capnp.Canonicalize(capnp.Struct(g))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// root records a root grant that actor opened for holder.
func (b *ledgerBuilder) root(id uint64, actor, holder, target, policy string, expires int64) uint64 {
	s := b.add(ledger.Envelope{
		Kind: ledger.KindGrant, Actor: actor, Grant: id, Device: target, Interface: iface,
		Decision: ledger.DecisionAdmit, Reason: "permitted by " + policy,
	}, nil, grantBody(b.t, id, holder, "policy", 0, target, []string{"set", "setLevel", "state"}, "", expires))
	b.grantAt[id] = s
	return s
}

// delegate records a delegation of parent (held by from) to holder.
func (b *ledgerBuilder) delegate(id, parent uint64, from, holder, target, caveats string) uint64 {
	s := b.add(ledger.Envelope{
		Kind: ledger.KindDelegate, Actor: from, Grant: id, Device: target, Interface: iface,
		Decision: ledger.DecisionAdmit, Reason: "delegated from " + authority.Name(parent) + ", permitted by p.cedar:7",
		Ref: b.grantAt[parent],
	}, nil, grantBody(b.t, id, holder, from, parent, target, []string{"setLevel"}, caveats, 0))
	b.grantAt[id] = s
	return s
}

// end records a revoke or release of id by actor, ending ended.
func (b *ledgerBuilder) end(kind ledger.Kind, id uint64, actor, target string, ended ...uint64) uint64 {
	names := make([]string, len(ended))
	for i, e := range ended {
		names[i] = authority.Name(e)
	}
	reason := ""
	if kind == ledger.KindRevoke {
		reason = "revoked by " + actor
	}
	return b.add(ledger.Envelope{
		Kind: kind, Actor: actor, Grant: id, Device: target, Interface: iface,
		Decision: ledger.DecisionAdmit, Reason: reason, Ref: b.grantAt[id],
	}, []byte(strings.Join(names, " ")), nil)
}

// call records a call and its return, which authority ignores.
func (b *ledgerBuilder) call(grant uint64, actor, target string) {
	s := b.add(ledger.Envelope{Kind: ledger.KindCall, Actor: actor, Grant: grant, Device: target, Interface: iface,
		Method: 1, Decision: ledger.DecisionAdmit}, []byte{0, 0, 0, 0, 1, 0, 0, 0, 40, 0, 0, 0, 0, 0, 0, 0}, nil)
	b.add(ledger.Envelope{Kind: "return", Actor: actor, Grant: grant, Device: target, Interface: iface, Method: 1, Ref: s}, nil, nil)
}

func (b *ledgerBuilder) history() *authority.History {
	b.t.Helper()
	h := authority.New()
	for _, e := range b.entries {
		if err := h.Apply(e); err != nil {
			b.t.Fatalf("apply seq %d: %v", e.Envelope.Seq, err)
		}
	}
	return h
}

// at is the point after the entry at seq.
func at(seq uint64) authority.At { return authority.At{Seq: seq, Time: int64(seq) * 1000} }

func names(gs []*authority.Grant) string {
	var s []string
	for _, g := range gs {
		s = append(s, g.Name())
	}
	return strings.Join(s, " ")
}

func holders(hs []authority.Holding) string {
	var s []string
	for _, h := range hs {
		s = append(s, h.Grant.Name()+"("+h.Grant.Holder+")")
	}
	return strings.Join(s, " ")
}

// story: op opens light-1 (g1), delegates to scenes (g2), who delegates to
// the switch (g3); the switch opens light-2 (g4) and light-1 of r10 (g5).
func story(t *testing.T) *ledgerBuilder {
	b := newBuilder(t)
	b.root(1, "op", "op", light, "p.cedar:10", 0)
	b.delegate(2, 1, "op", "scenes", light, "range:level=0..60")
	b.delegate(3, 2, "scenes", "sw", light, "range:level=0..60")
	b.root(4, "sw", "sw", lamp, "p.cedar:2", 0)
	b.root(5, "op", "op", other, "p.cedar:10", 0)
	b.call(3, "sw", light)
	return b
}

func TestChainOfThree(t *testing.T) {
	b := story(t)
	h := b.history()
	c, err := h.Chain(3)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(c); got != "g3 g2 g1" {
		t.Fatalf("chain of g3 = %s, want g3 g2 g1", got)
	}
	g3, g1 := c[0], c[2]
	if g3.Holder != "sw" || g3.Grantor != "scenes" || g3.Parent != 2 || g3.Made.Actor != "scenes" || g3.Made.Kind != ledger.KindDelegate ||
		g3.Caveats != "range:level=0..60" || !slices.Equal(g3.Methods, []string{"setLevel"}) || g3.InterfaceName != "Light" {
		t.Errorf("g3 = %+v", g3)
	}
	if g1.Grantor != "policy" || g1.Parent != 0 || g1.Made.Seq != 1 || !slices.Equal(g1.Policies, []string{"p.cedar:10"}) {
		t.Errorf("g1 = %+v", g1)
	}
	if got := holders(h.Holders("cam/pem/f1/r1", at(b.seq))); got != "g1(op) g2(scenes) g3(sw) g4(sw)" {
		t.Errorf("holders of r1 = %s", got)
	}
	if hs := h.Holders(light, at(b.seq)); len(hs) != 3 || names(hs[2].Chain) != "g2 g1" {
		t.Errorf("holders of light-1 = %s, chain of the last %v", holders(hs), hs)
	}
	if got := holders(h.Holders("cam/pem", at(b.seq))); got != "g1(op) g2(scenes) g3(sw) g4(sw) g5(op)" {
		t.Errorf("holders of cam/pem = %s", got)
	}
	if !h.Touches("cam/pem/f1/r10", at(b.seq)) || h.Touches("cam/pem/f1/r1/light", at(b.seq)) || h.Touches("cam/pem/f2", at(b.seq)) {
		t.Error("Touches matches bytes, not path segments")
	}
	if _, err := h.Chain(9); !errors.Is(err, authority.ErrNoGrant) {
		t.Errorf("chain of g9: %v, want ErrNoGrant", err)
	}
	if len(h.Anomalies) != 0 {
		t.Errorf("anomalies: %q", h.Anomalies)
	}
}

func TestRevokeMiddleCascades(t *testing.T) {
	b := story(t)
	rev := b.end(ledger.KindRevoke, 2, "op", light, 2, 3)
	b.call(4, "sw", lamp)
	h := b.history()
	for id, want := range map[uint64]authority.State{1: authority.Live, 2: authority.Revoked, 3: authority.Revoked, 4: authority.Live} {
		g, _ := h.Grant(id)
		if got := g.StateAt(at(b.seq)); got != want {
			t.Errorf("%s is %s, want %s", g.Name(), got, want)
		}
	}
	g3, _ := h.Grant(3)
	if e := g3.Ended; e == nil || e.Seq != rev || e.Actor != "op" || e.Root != 2 || e.Reason != "revoked by op" {
		t.Errorf("g3 ended %+v", g3.Ended)
	}
	if got := holders(h.Holders("cam/pem/f1/r1", at(b.seq))); got != "g1(op) g4(sw)" {
		t.Errorf("holders after the revocation = %s", got)
	}
}

func TestRelease(t *testing.T) {
	b := story(t)
	rel := b.end(ledger.KindRelease, 2, "scenes", light, 2)
	h := b.history()
	g2, _ := h.Grant(2)
	if g2.StateAt(at(rel)) != authority.Released || g2.StateAt(at(rel-1)) != authority.Live {
		t.Errorf("g2 at release %s, before %s", g2.StateAt(at(rel)), g2.StateAt(at(rel-1)))
	}
	// The kernel's release ends only the released grant: g3 stands,
	// and its chain still shows where its power came from.
	hs := h.Holders(light, at(rel))
	if got := holders(hs); got != "g1(op) g3(sw)" {
		t.Fatalf("holders after the release = %s", got)
	}
	if c := hs[1].Chain; names(c) != "g2 g1" || c[0].StateAt(at(rel)) != authority.Released {
		t.Errorf("chain of g3 after the release: %s", names(c))
	}
}

func TestTimeTravel(t *testing.T) {
	b := story(t)
	before := b.seq
	rev := b.end(ledger.KindRevoke, 1, "op", light, 1, 2, 3)
	b.root(6, "op", "op", light, "p.cedar:10", 0)
	h := b.history()
	for _, c := range []struct {
		seq  uint64
		want string
	}{
		{0, ""},
		{1, "g1(op)"},
		{2, "g1(op) g2(scenes)"},
		{before, "g1(op) g2(scenes) g3(sw)"},
		{rev, ""},
		{b.seq, "g6(op)"},
	} {
		if got := holders(h.Holders(light, at(c.seq))); got != c.want {
			t.Errorf("holders of light-1 after seq %d = %q, want %q", c.seq, got, c.want)
		}
	}
	// Folding only up to a point gives the same answer as asking the
	// full history about that point.
	part := authority.New()
	for _, e := range b.entries[:before] {
		if err := part.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	if got := holders(part.Holders(light, at(before))); got != "g1(op) g2(scenes) g3(sw)" {
		t.Errorf("partial fold: %s", got)
	}
}

func TestExpiry(t *testing.T) {
	b := newBuilder(t)
	b.root(1, "op", "guest", light, "p.cedar:1", 3000) // expires at the time of seq 3
	b.call(1, "guest", light)
	h := b.history()
	g, _ := h.Grant(1)
	if g.StateAt(at(2)) != authority.Live || g.StateAt(at(3)) != authority.Expired {
		t.Errorf("states %s %s", g.StateAt(at(2)), g.StateAt(at(3)))
	}
}

func TestRefusalsAndDenialsChangeNothing(t *testing.T) {
	b := story(t)
	b.add(ledger.Envelope{Kind: ledger.KindDelegate, Actor: "sw", Device: light, Decision: ledger.DecisionDeny,
		Reason: "delegate: amplify", Ref: b.grantAt[3]}, nil, nil)
	b.add(ledger.Envelope{Kind: ledger.KindRevoke, Actor: "sw", Grant: 1, Device: light, Decision: ledger.DecisionDeny,
		Reason: "permission: revoke: sw holds neither g1 nor an ancestor of it"}, nil, nil)
	h := b.history()
	if h.Len() != 5 {
		t.Errorf("%d grants, want 5", h.Len())
	}
	if got := holders(h.Holders(light, at(b.seq))); got != "g1(op) g2(scenes) g3(sw)" {
		t.Errorf("holders = %s", got)
	}
}

func TestOrderAndMalformed(t *testing.T) {
	b := story(t)
	h := b.history()
	if err := h.Apply(b.entries[0]); !errors.Is(err, authority.ErrOrder) {
		t.Errorf("re-applying seq 1: %v, want ErrOrder", err)
	}
	bad := newBuilder(t)
	bad.root(1, "op", "op", light, "p.cedar:1", 0)
	bad.add(ledger.Envelope{Kind: ledger.KindRevoke, Actor: "op", Grant: 1, Decision: ledger.DecisionAdmit}, []byte{0, 1, 2}, nil)
	h = authority.New()
	if err := h.Apply(bad.entries[0]); err != nil {
		t.Fatal(err)
	}
	if err := h.Apply(bad.entries[1]); err == nil {
		t.Error("a revoke whose params are not a grant list was accepted")
	}
	// A grant body naming another grant than its envelope is refused.
	forged := newBuilder(t)
	forged.add(ledger.Envelope{Kind: ledger.KindGrant, Actor: "op", Grant: 2, Device: light, Decision: ledger.DecisionAdmit},
		nil, grantBody(t, 7, "op", "policy", 0, light, nil, "", 0))
	if err := authority.New().Apply(forged.entries[0]); err == nil {
		t.Error("a body naming g7 under an envelope of g2 was accepted")
	}
}

func TestMissingBodies(t *testing.T) {
	b := story(t)
	// A revocation without its list: inferred from the tree.
	b.add(ledger.Envelope{Kind: ledger.KindRevoke, Actor: "op", Grant: 2, Device: light, Decision: ledger.DecisionAdmit}, nil, nil)
	// A grant without its body: known by its envelope.
	b.add(ledger.Envelope{Kind: ledger.KindGrant, Actor: "op", Grant: 8, Device: lamp, Interface: iface, Decision: ledger.DecisionAdmit}, nil, nil)
	h := b.history()
	if got := holders(h.Holders("cam/pem/f1/r1", at(b.seq))); got != "g1(op) g4(sw) g8()" {
		t.Errorf("holders = %s", got)
	}
	g8, _ := h.Grant(8)
	if !g8.NoBody || g8.Target != lamp {
		t.Errorf("g8 = %+v", g8)
	}
	if len(h.Anomalies) != 2 {
		t.Errorf("anomalies %q, want 2", h.Anomalies)
	}
}

func TestPresenceEndsGrantsInTheListConvention(t *testing.T) {
	b := story(t)
	s := b.add(ledger.Envelope{Kind: ledger.KindPresence, Actor: "sw", Grant: 3, Decision: ledger.DecisionAdmit,
		Reason: "left cam/pem/f1/r1"}, []byte("g3"), nil)
	b.add(ledger.Envelope{Kind: ledger.KindPolicy, Actor: "op"}, []byte{0, 0, 0, 0}, nil) // not a list: ignored
	h := b.history()
	g3, _ := h.Grant(3)
	if got := g3.StateAt(at(s)); got != "presence" {
		t.Errorf("g3 is %s after its presence ended", got)
	}
}

func TestUnder(t *testing.T) {
	for _, c := range []struct {
		p, place string
		want     bool
	}{
		{"a/b/c", "a/b", true}, {"a/b", "a/b", true}, {"a/bc", "a/b", false}, {"a", "a/b", false}, {"a/b", "", true},
	} {
		if got := authority.Under(c.p, c.place); got != c.want {
			t.Errorf("Under(%q, %q) = %v", c.p, c.place, got)
		}
	}
}

// TestRestartEndsEarlierGrants: a kernel's "start" entry ends every grant
// of its earlier runs; grants made after it stand.
func TestRestartEndsEarlierGrants(t *testing.T) {
	b := story(t)
	start := b.add(ledger.Envelope{Kind: ledger.KindStart, Actor: "kernel", Reason: "kernel started: grants g1 to g5 of earlier runs ended"}, nil, nil)
	b.root(6, "sw", "sw", lamp, "p.cedar:2", 0)
	h := b.history()
	for id := uint64(1); id <= 5; id++ {
		g, _ := h.Grant(id)
		if got := g.StateAt(at(b.seq)); got != authority.Restarted {
			t.Errorf("%s after the restart is %s, want restarted", g.Name(), got)
		}
		if got := g.StateAt(at(start - 1)); got != authority.Live {
			t.Errorf("%s before the restart is %s, want live", g.Name(), got)
		}
	}
	if got := holders(h.Holders("cam/pem", at(b.seq))); got != "g6(sw)" {
		t.Errorf("holders after the restart = %s, want g6(sw)", got)
	}
}
