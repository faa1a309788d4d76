package kernel

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/osmose-os/osmose/caps"
	"github.com/osmose-os/osmose/internal/idleserver"
	"github.com/osmose-os/osmose/internal/topology"
	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
)

// session is the authority of one logged-in principal, bound at login.
type session struct {
	k       *Kernel
	c       *conn
	p       topology.Principal
	holder  caps.Principal
	canHold bool // false for auditors

	// subject is the ledger's pseudonym of a person principal: the entries
	// of the person's session are filed under it, so that erasure finds
	// their bodies. "" for other principals.
	subject string

	ended bool // guarded by k.seq.mu

	// gates are the session's gates not yet shut down. The session's end
	// cuts them: a gate handed out in a result that carried more than one
	// capability is never shut down by go-capnp v3.1.0-alpha.2 (its
	// answer releases only the last of the result's capabilities), and
	// must not keep its driver or listener after the session.
	gmu      sync.Mutex
	gates    map[*gate]struct{}
	gatesCut bool // the session has ended and cut its gates

	flight *gcall // the session's calls at drivers (sequencer.flight)
}

func newSessionClient(s *session) schema.Session {
	return schema.Session(idleserver.Of[schema.Session_Server](schema.Session_Methods, s))
}

// Shutdown is called when the program drops its last reference to the
// Session, or its connection goes down: the session ends ("logout", or
// "disconnect" with the connection's failure).
func (s *session) Shutdown() {
	if down, reason := s.c.endReason(); down {
		if reason == "" {
			reason = "connection closed"
		}
		s.hangUp(reason, "disconnect")
		return
	}
	s.hangUp("session released", "logout")
}

// Logout ends the session at the program's request.
func (s *session) Logout(ctx context.Context, call schema.Session_logout) error {
	const op = "logout"
	if err := s.enter(op); err != nil {
		return err
	}
	defer s.c.leave()
	p, err := s.end("logout requested", "logout")
	if err != nil {
		return toException(&Error{Op: op, Kind: Failed, Cause: err})
	}
	if p == nil {
		return toException(&Error{Op: op, Kind: Revoked, Cause: ErrSessionEnded})
	}
	if err := p.Wait(ctx); err != nil {
		return toException(&Error{Op: op, Kind: Failed, Cause: err})
	}
	return nil
}

// end ends the session once: its gates stop admitting calls, and the end is
// on the ledger. It returns the entry; nil and no error if the session
// had ended already.
func (s *session) end(reason, kind string) (*ledger.Pending, error) {
	k := s.k
	k.seq.mu.Lock()
	ended := s.ended
	k.seq.mu.Unlock()
	if ended {
		return nil, nil
	}
	// Room in the ledger is taken before the sequencer, which is never
	// held waiting for the disk (gates admit in connections' receive
	// loops).
	if err := k.led.Reserve(context.Background()); err != nil {
		return nil, err
	}
	k.seq.mu.Lock()
	if s.ended {
		k.seq.mu.Unlock()
		k.led.Unreserve()
		return nil, nil
	}
	s.ended = true
	p, err := k.led.AppendReserved(ledger.Entry{
		Kind: ledger.Kind(kind), Actor: s.p.ID, Reason: truncate(reason), Time: k.now().UnixNano(),
	})
	// The session's calls in flight end after the entry that ends it, as
	// a grant's do after its revocation.
	k.seq.groundSession(s)
	k.seq.mu.Unlock()
	// No call is admitted through the session's gates any more (admission
	// checks ended under k.seq.mu), so what they wrap can go.
	s.gmu.Lock()
	gates := s.gates
	s.gates, s.gatesCut = nil, true
	s.gmu.Unlock()
	for g := range gates {
		g.cut()
	}
	s.c.mu.Lock()
	for i, o := range s.c.sessions {
		if o == s {
			s.c.sessions = append(s.c.sessions[:i], s.c.sessions[i+1:]...)
			break
		}
	}
	s.c.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("record session end: %w", err)
	}
	return p, nil
}

// hangUp ends the session when nobody waits for the answer, logging a
// failure to record it.
func (s *session) hangUp(reason, kind string) {
	if _, err := s.end(reason, kind); err != nil {
		s.k.log.Warn("session end", "principal", s.p.ID, "err", err)
	}
}

func (s *session) enter(op string) error {
	if !s.c.enter() {
		return overloaded(op)
	}
	return nil
}

// WhoAmI returns the session's principal.
func (s *session) WhoAmI(ctx context.Context, call schema.Session_whoAmI) error {
	if err := s.enter("whoAmI"); err != nil {
		return err
	}
	defer s.c.leave()
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	p, err := res.NewPrincipal()
	if err != nil {
		return err
	}
	p.SetId(s.p.ID)
	p.SetKind(s.p.Kind)
	p.SetLabel(s.p.Label)
	if s.p.Kind == schema.PrincipalKind_device {
		p.SetPlace(topology.Parent(s.p.ID))
	}
	return nil
}

// List returns the live grants the principal holds.
func (s *session) List(ctx context.Context, call schema.Session_list) error {
	if err := s.enter("list"); err != nil {
		return err
	}
	defer s.c.leave()
	k := s.k
	var gs []caps.Grant
	k.seq.mu.Lock()
	if s.canHold {
		for _, id := range k.seq.table.HeldBy(s.holder) {
			if g, ok := k.seq.table.Grant(id); ok {
				gs = append(gs, g)
			}
		}
	}
	// What the caps table knows is read under the lock; the schema form
	// is written after it.
	seqs := make([]uint64, len(gs))
	grantors := make([]string, len(gs))
	for i, g := range gs {
		seqs[i] = k.seq.grantSeq[g.ID]
		grantors[i] = k.grantor(g)
	}
	k.seq.mu.Unlock()
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	l, err := res.NewGrants(int32(len(gs)))
	if err != nil {
		return err
	}
	for i, g := range gs {
		if err := k.writeGrant(l.At(i), g, seqs[i], grantors[i]); err != nil {
			return err
		}
	}
	return nil
}

// opened is one capability Session.open hands out.
type opened struct {
	grant   caps.Grant
	grantor string // read from the caps table under the sequencer lock
	seq     uint64
	gate    capnp.Client
}

// Open opens gates on the devices at or under a path that the principal
// holds, or that the policy grants it now.
func (s *session) Open(ctx context.Context, call schema.Session_open) error {
	const op = "open"
	if err := s.enter(op); err != nil {
		return err
	}
	defer s.c.leave()
	k := s.k
	args := call.Args()
	path, err := args.Path()
	if err != nil {
		return toException(&Error{Op: op, Kind: Invalid, Cause: err})
	}
	classes, err := args.Classes()
	if err != nil {
		return toException(&Error{Op: op, Kind: Invalid, Cause: err})
	}
	var cav caps.Caveats
	var methods []string
	var wire schema.Caveats // the caveats as asked, for the entries' request bodies
	hasCav := false
	if args.HasCaveats() {
		sc, err := args.Caveats()
		if err != nil {
			return toException(&Error{Op: op, Kind: Invalid, Cause: err})
		}
		if cav, methods, hasCav, err = capsCaveats(sc); err != nil {
			return toException(&Error{Op: op, Kind: Invalid, Cause: err})
		}
		wire = sc
	}
	if !s.canHold {
		return toException(errorf(Permission, op, "a %s holds no grants", s.p.Kind))
	}
	devs, single, err := k.resolve(op, path)
	if err != nil {
		return toException(err)
	}

	now := k.now()
	var out []opened
	var last *ledger.Pending
	var refusal error
	if err := k.led.WaitRoom(ctx); err != nil {
		return toException(&Error{Op: op, Kind: Failed, Cause: err})
	}
	k.seq.mu.Lock()
	if s.ended {
		k.seq.mu.Unlock()
		return toException(&Error{Op: op, Kind: Revoked, Cause: ErrSessionEnded})
	}
	for _, d := range devs {
		f := k.cat.byClass[d.Class]
		if f == nil || !wantClass(classes, d.Class) {
			if single {
				refusal = errorf(NotExist, op, "%s: no capability of the requested classes", d.Path)
			}
			continue
		}
		drv, ok := k.cfg.Drivers[d.Path]
		if !ok {
			if single {
				refusal = errorf(NotExist, op, "%s: device has no driver", d.Path)
			}
			continue
		}
		id := k.seq.held(s.holder, d.Path, f.id)
		var dec caps.Decision
		kind := ledger.KindGrant
		switch {
		case id != 0 && !hasCav:
			dec = caps.Decision{Op: caps.OpOpen, Grant: id}
			kind = ""
		case id != 0:
			dec = k.seq.table.Delegate(caps.Delegate{From: id, To: s.holder, Methods: methods, Caveats: cav, Now: now})
			kind = ledger.KindDelegate
		default:
			dec = k.seq.table.Open(caps.Open{Holder: s.holder, Target: d.Path, Interface: f.id, Methods: methods, Caveats: cav, Now: now})
		}
		var g caps.Grant
		seq := k.seq.grantSeq[dec.Grant]
		if kind == "" {
			g, _ = k.seq.table.Grant(dec.Grant)
		} else {
			var p *ledger.Pending
			var from caps.GrantID
			if kind == ledger.KindDelegate {
				from = id
			}
			g, p, err = k.recordGrant(ctx, kind, s.p.ID, d.Path, f.id, dec, id, now, grantAsk{from: from, holder: s.p.ID, caveats: wire})
			if err != nil {
				refusal = &Error{Op: op, Kind: Failed, Cause: err}
				break
			}
			last, seq = p, p.Seq()
		}
		if !dec.OK() {
			if single {
				refusal = capsError(op, dec)
			}
			continue
		}
		gt := k.newGate(s, g.ID, d.Path, f, outward, drv.AddRef(), false)
		out = append(out, opened{grant: g, grantor: k.grantor(g), seq: seq, gate: gt})
	}
	k.seq.mu.Unlock()
	if last != nil {
		if err := last.Wait(ctx); err != nil && refusal == nil {
			refusal = &Error{Op: op, Kind: Failed, Cause: fmt.Errorf("record grant: %w", err)}
		}
	}
	if refusal != nil {
		for _, o := range out {
			o.gate.Release()
		}
		return toException(refusal)
	}
	res, err := call.AllocResults()
	if err != nil {
		for _, o := range out {
			o.gate.Release()
		}
		return err
	}
	l, err := res.NewCaps(int32(len(out)))
	if err != nil {
		for _, o := range out {
			o.gate.Release()
		}
		return err
	}
	for i, o := range out {
		h := l.At(i)
		if err := h.SetCap(o.gate); err != nil { // steals the reference
			return err
		}
		g, err := h.NewGrant()
		if err != nil {
			return err
		}
		if err := k.writeGrant(g, o.grant, o.seq, o.grantor); err != nil {
			return err
		}
	}
	return nil
}

// resolve finds the devices a path names: the device at path (single), or
// every device at or under the place at path, in topology order.
func (k *Kernel) resolve(op, path string) (devs []topology.Device, single bool, err error) {
	if d, ok := k.top.Device(path); ok {
		return []topology.Device{d}, true, nil
	}
	if _, ok := k.top.Place(path); ok {
		return k.top.Under(path), false, nil
	}
	return nil, false, errorf(NotExist, op, "no device or place %q", path)
}

// wantClass reports whether c is in classes; an empty list wants all.
func wantClass(classes schema.DeviceClass_List, c schema.DeviceClass) bool {
	if classes.Len() == 0 {
		return true
	}
	for i := 0; i < classes.Len(); i++ {
		if classes.At(i) == c {
			return true
		}
	}
	return false
}

// grantAsk is the question a grant or delegation decision answered, as
// the request body of its entry records it (see GrantRequest).
type grantAsk struct {
	from    caps.GrantID   // the grant delegated from; 0 for a root grant
	holder  string         // login id of the principal the grant is for
	caveats schema.Caveats // as asked on the wire; the zero value when none were
}

// GrantRequest is the params body of a "grant" or "delegate" entry,
// decoded: the question the caps table was asked, so that replay
// (internal/replay) can ask it again. The body is the canonical Cap'n
// Proto encoding of a Session.delegate params struct: grant is the grant
// delegated from ("" for a root grant), to the holder, and caveats the
// caveats the requester asked for (methods included), absent when it
// asked none. Operator.grant, Session.open and Session.delegate all record
// their requests in this one form.
type GrantRequest struct {
	From    caps.GrantID // the grant delegated from; 0 for a root grant
	Holder  string       // login id of the principal the grant was asked for
	Methods []string     // methods asked for; nil asks for every method the policy permits
	Caveats caps.Caveats // caveats the requester added
}

// encode returns the request body of an entry.
func (a grantAsk) encode() ([]byte, error) {
	_, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		return nil, err
	}
	r, err := schema.NewRootSession_delegate_Params(seg)
	if err != nil {
		return nil, err
	}
	if a.from != 0 {
		if err := r.SetGrant(a.from.String()); err != nil {
			return nil, err
		}
	}
	if err := r.SetTo(a.holder); err != nil {
		return nil, err
	}
	if capnp.Struct(a.caveats).IsValid() {
		if err := r.SetCaveats(a.caveats); err != nil {
			return nil, err
		}
	}
	return capnp.Canonicalize(capnp.Struct(r))
}

// DecodeGrantRequest reads the params body of a "grant" or "delegate"
// entry. Its caveats are converted as the kernel converted them when it
// asked the caps table.
func DecodeGrantRequest(body []byte) (GrantRequest, error) {
	var q GrantRequest
	msg, _, err := capnp.NewMessage(capnp.SingleSegment(body))
	if err != nil {
		return q, fmt.Errorf("grant request body: %w", err)
	}
	r, err := schema.ReadRootSession_delegate_Params(msg)
	if err != nil {
		return q, fmt.Errorf("grant request body: %w", err)
	}
	from, err := r.Grant()
	if err != nil {
		return q, fmt.Errorf("grant request body: %w", err)
	}
	if from != "" {
		id, perr := parseGrant("delegate", from)
		if perr != nil {
			return q, fmt.Errorf("grant request body: grant %q is not a grant id", from)
		}
		q.From = id
	}
	if q.Holder, err = r.To(); err != nil {
		return q, fmt.Errorf("grant request body: %w", err)
	}
	if r.HasCaveats() {
		sc, err := r.Caveats()
		if err == nil {
			q.Caveats, q.Methods, _, err = capsCaveats(sc)
		}
		if err != nil {
			return q, fmt.Errorf("grant request body: caveats: %w", err)
		}
	}
	return q, nil
}

// recordGrant records a grant or delegation decision of the caps table
// (parent is the grant delegated from, 0 for a root; ask is the question
// it answered) and, for a grant it made, remembers the seq of the entry
// that made it. It returns the grant made (zero when refused) and the
// entry. The caller holds k.seq.mu.
func (k *Kernel) recordGrant(ctx context.Context, kind ledger.Kind, actor, target string, ifaceID uint64, dec caps.Decision, parent caps.GrantID, now time.Time, ask grantAsk) (caps.Grant, *ledger.Pending, error) {
	var g caps.Grant
	if dec.OK() {
		g, _ = k.seq.table.Grant(dec.Grant)
	}
	p, err := k.appendGrant(ctx, kind, actor, target, ifaceID, dec, g, parent, now, ask)
	if err != nil {
		return g, nil, err
	}
	if dec.OK() {
		k.seq.grantSeq[dec.Grant] = p.Seq()
	}
	return g, p, nil
}

// appendGrant records a grant or delegation decision: the request in
// the params body, the grant made in the result body. The caller holds
// k.seq.mu.
func (k *Kernel) appendGrant(ctx context.Context, kind ledger.Kind, actor, target string, ifaceID uint64, dec caps.Decision, g caps.Grant, parent caps.GrantID, now time.Time, ask grantAsk) (*ledger.Pending, error) {
	req, err := ask.encode()
	if err != nil {
		return nil, fmt.Errorf("record the request: %w", err)
	}
	e := ledger.Entry{
		Kind: kind, Actor: actor, Grant: uint64(dec.Grant), Device: target, Interface: ifaceID,
		Decision: ledger.DecisionAdmit, Reason: truncate(dec.Reason), Ref: k.seq.grantSeq[parent], Time: now.UnixNano(),
		Params: req,
	}
	if !dec.OK() {
		e.Decision = ledger.DecisionDeny
		e.Reason = truncate(capsError(string(kind), dec).Error())
	} else {
		body, err := k.grantBytes(g)
		if err != nil {
			return nil, err
		}
		e.Result = body
	}
	return k.led.AppendNow(e)
}

// grantBytes is the canonical Cap'n Proto encoding of a grant, the body
// of its ledger entry.
func (k *Kernel) grantBytes(g caps.Grant) ([]byte, error) {
	_, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		return nil, err
	}
	sg, err := schema.NewRootGrant(seg)
	if err != nil {
		return nil, err
	}
	if err := k.fillGrant(sg, g, 0); err != nil {
		return nil, err
	}
	return capnp.Canonicalize(capnp.Struct(sg))
}

// fillGrant writes a grant in its schema form.
func (k *Kernel) fillGrant(sg schema.Grant, g caps.Grant, seq uint64) error {
	return k.writeGrant(sg, g, seq, k.grantor(g))
}

// grantor names who gave a grant: the policy for a root grant, the
// parent's holder for a delegation. It reads the caps table: the caller
// holds k.seq.mu, or the grant is a root.
func (k *Kernel) grantor(g caps.Grant) string {
	if g.Parent != 0 {
		if pg, ok := k.seq.table.Grant(g.Parent); ok {
			return pg.Holder.ID
		}
	}
	return "policy"
}

// writeGrant writes a grant in its schema form, with its grantor.
func (k *Kernel) writeGrant(sg schema.Grant, g caps.Grant, seq uint64, grantor string) error {
	f := k.cat.byID[g.Interface]
	sg.SetId(g.ID.String())
	sg.SetHolder(g.Holder.ID)
	if g.Parent != 0 {
		sg.SetParent(g.Parent.String())
	}
	sg.SetGrantor(grantor)
	sg.SetTarget(g.Target)
	sg.SetInterfaceId(g.Interface)
	if f != nil {
		sg.SetInterfaceName(f.name)
	}
	ms, err := sg.NewMethods(int32(len(g.Methods)))
	if err != nil {
		return err
	}
	for i, m := range g.Methods {
		ms.Set(i, m.Name)
	}
	c, err := sg.NewCaveats()
	if err != nil {
		return err
	}
	if err := schemaCaveats(c, g.Caveats); err != nil {
		return err
	}
	sg.SetCaveatsSummary(g.Caveats.String())
	if !g.Caveats.Expires.IsZero() {
		sg.SetExpiresAt(g.Caveats.Expires.UnixNano())
	}
	sg.SetCreatedAt(g.Issued.UnixNano())
	sg.SetSeq(seq)
	return nil
}

// capsCaveats converts wire caveats; set reports whether any field is set.
func capsCaveats(sc schema.Caveats) (c caps.Caveats, methods []string, set bool, err error) {
	ml, err := sc.Methods()
	if err != nil {
		return c, nil, false, err
	}
	for i := 0; i < ml.Len(); i++ {
		m, err := ml.At(i)
		if err != nil {
			return c, nil, false, err
		}
		methods = append(methods, m)
	}
	rl, err := sc.Ranges()
	if err != nil {
		return c, nil, false, err
	}
	for i := 0; i < rl.Len(); i++ {
		r := rl.At(i)
		field, err := r.Field()
		if err != nil {
			return c, nil, false, err
		}
		if field == "" {
			return c, nil, false, errors.New("range without a field")
		}
		c.Ranges = append(c.Ranges, caps.Range{Arg: field, Min: r.Min(), Max: r.Max()})
	}
	if v := sc.ExpiresAt(); v != 0 {
		c.Expires = time.Unix(0, v)
	}
	if sc.HasWindow() {
		w, err := sc.Window()
		if err != nil {
			return c, nil, false, err
		}
		c.Window = caps.Window{Start: int(w.StartMinute()), End: int(w.EndMinute())}
	}
	if sc.HasRate() {
		r, err := sc.Rate()
		if err != nil {
			return c, nil, false, err
		}
		c.Rate = caps.Rate{N: int(r.Calls()), Per: time.Duration(r.PeriodNs())}
	}
	if u := sc.MaxUses(); u > 0 {
		if u > math.MaxInt32 {
			u = math.MaxInt32
		}
		c.Uses = int(u)
	}
	if c.Place, err = sc.Place(); err != nil {
		return c, nil, false, err
	}
	c.NoReshare = sc.NoReshare()
	if sc.HasPresence() {
		p, err := sc.Presence()
		if err != nil {
			return c, nil, false, err
		}
		person, _ := p.Person()
		place, _ := p.Place()
		if person != "" || place != "" {
			c.Presence = []caps.Presence{{Person: person, Place: place}}
		}
	}
	set = len(methods) > 0 || len(c.Ranges) > 0 || !c.Expires.IsZero() || c.Window.Set() || c.Rate.Set() ||
		c.Uses > 0 || c.Place != "" || c.NoReshare || len(c.Presence) > 0
	return c, methods, set, nil
}

// schemaCaveats writes caveats in their wire form.
func schemaCaveats(sc schema.Caveats, c caps.Caveats) error {
	if len(c.Ranges) > 0 {
		rl, err := sc.NewRanges(int32(len(c.Ranges)))
		if err != nil {
			return err
		}
		for i, r := range c.Ranges {
			rl.At(i).SetField(r.Arg)
			rl.At(i).SetMin(r.Min)
			rl.At(i).SetMax(r.Max)
		}
	}
	if !c.Expires.IsZero() {
		sc.SetExpiresAt(c.Expires.UnixNano())
	}
	if c.Window.Set() {
		w, err := sc.NewWindow()
		if err != nil {
			return err
		}
		w.SetStartMinute(uint16(c.Window.Start))
		w.SetEndMinute(uint16(c.Window.End))
	}
	if c.Rate.Set() {
		r, err := sc.NewRate()
		if err != nil {
			return err
		}
		r.SetCalls(uint32(c.Rate.N))
		r.SetPeriodNs(int64(c.Rate.Per))
	}
	if c.Uses > 0 {
		sc.SetMaxUses(uint64(c.Uses))
	}
	if c.Place != "" {
		sc.SetPlace(c.Place)
	}
	sc.SetNoReshare(c.NoReshare)
	if len(c.Presence) > 0 {
		p, err := sc.NewPresence()
		if err != nil {
			return err
		}
		p.SetPerson(c.Presence[0].Person)
		p.SetPlace(c.Presence[0].Place)
	}
	return nil
}

// parseGrant parses a wire grant id ("g12").
func parseGrant(op, s string) (caps.GrantID, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(s, "g"), 10, 64)
	if err != nil || n == 0 || !strings.HasPrefix(s, "g") {
		return 0, errorf(NotExist, op, "no grant %q", s)
	}
	return caps.GrantID(n), nil
}

// Delegate gives another principal a grant derived from one this
// principal holds.
func (s *session) Delegate(ctx context.Context, call schema.Session_delegate) error {
	const op = "delegate"
	if err := s.enter(op); err != nil {
		return err
	}
	defer s.c.leave()
	k := s.k
	args := call.Args()
	gs, _ := args.Grant()
	to, _ := args.To()
	from, err := parseGrant(op, gs)
	if err != nil {
		return toException(err)
	}
	var cav caps.Caveats
	var methods []string
	var wire schema.Caveats
	if args.HasCaveats() {
		sc, err := args.Caveats()
		if err == nil {
			cav, methods, _, err = capsCaveats(sc)
		}
		if err != nil {
			return toException(&Error{Op: op, Kind: Invalid, Cause: err})
		}
		wire = sc
	}
	if !s.canHold {
		return toException(errorf(Permission, op, "a %s holds no grants", s.p.Kind))
	}
	tp, ok := k.top.Login(to)
	if !ok {
		return toException(errorf(NotExist, op, "no principal %q", to))
	}
	recipient, ok := capsPrincipal(tp)
	if !ok {
		return toException(errorf(Invalid, op, "a %s holds no grants", tp.Kind))
	}
	now := k.now()
	if err := k.led.WaitRoom(ctx); err != nil {
		return toException(&Error{Op: op, Kind: Failed, Cause: err})
	}
	k.seq.mu.Lock()
	g, ok := k.seq.table.Grant(from)
	if !ok || g.Holder != s.holder {
		k.seq.mu.Unlock()
		return toException(errorf(Permission, op, "%s is not your grant", gs))
	}
	dec := k.seq.table.Delegate(caps.Delegate{From: from, To: recipient, Methods: methods, Caveats: cav, Now: now})
	child, p, err := k.recordGrant(ctx, ledger.KindDelegate, s.p.ID, g.Target, g.Interface, dec, from, now, grantAsk{from: from, holder: tp.ID, caveats: wire})
	grantor := k.grantor(child)
	k.seq.mu.Unlock()
	if err == nil {
		err = p.Wait(ctx)
	}
	if err != nil {
		return toException(&Error{Op: op, Kind: Failed, Cause: err})
	}
	if !dec.OK() {
		return toException(capsError(op, dec))
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	sg, err := res.NewGrant()
	if err != nil {
		return err
	}
	return k.writeGrant(sg, child, p.Seq(), grantor)
}

// Revoke revokes a grant this principal gave (or holds, or an operator's
// any grant), with its subtree.
func (s *session) Revoke(ctx context.Context, call schema.Session_revoke) error {
	const op = "revoke"
	if err := s.enter(op); err != nil {
		return err
	}
	defer s.c.leave()
	gs, _ := call.Args().Grant()
	id, err := parseGrant(op, gs)
	if err != nil {
		return toException(err)
	}
	if !s.canHold {
		return toException(errorf(Permission, op, "a %s holds no grants", s.p.Kind))
	}
	return s.k.retire(ctx, op, s, id, func(t *caps.Table) caps.Decision {
		return t.Revoke(caps.Revoke{Grant: id, By: s.holder, Reason: "revoked by " + s.p.ID})
	})
}

// ReleaseGrant gives up a grant this principal holds.
func (s *session) ReleaseGrant(ctx context.Context, call schema.Session_releaseGrant) error {
	const op = "release"
	if err := s.enter(op); err != nil {
		return err
	}
	defer s.c.leave()
	gs, _ := call.Args().Grant()
	id, err := parseGrant(op, gs)
	if err != nil {
		return toException(err)
	}
	k := s.k
	k.seq.mu.Lock()
	g, ok := k.seq.table.Grant(id)
	k.seq.mu.Unlock()
	if !ok || !s.canHold || g.Holder != s.holder {
		return toException(errorf(Permission, op, "%s is not your grant", gs))
	}
	return k.retire(ctx, op, s, id, func(t *caps.Table) caps.Decision { return t.Release(id) })
}

// retire runs a revocation or release through the sequencer, records it
// and cuts the gates of every grant it ended.
func (k *Kernel) retire(ctx context.Context, op string, s *session, id caps.GrantID, decide func(*caps.Table) caps.Decision) error {
	kind := ledger.KindRevoke
	if op == "release" {
		kind = ledger.KindRelease
	}
	if err := k.led.WaitRoom(ctx); err != nil {
		return toException(&Error{Op: op, Kind: Failed, Cause: err})
	}
	k.seq.mu.Lock()
	g, _ := k.seq.table.Grant(id)
	dec := decide(k.seq.table)
	e := ledger.Entry{
		Kind: kind, Actor: s.p.ID, Grant: uint64(id), Device: g.Target, Interface: g.Interface,
		Decision: ledger.DecisionAdmit, Reason: truncate(dec.Reason), Ref: k.seq.grantSeq[id], Time: k.now().UnixNano(),
	}
	var ended []caps.GrantID
	if !dec.OK() {
		e.Decision, e.Reason = ledger.DecisionDeny, truncate(capsError(op, dec).Error())
	} else {
		ended = make([]caps.GrantID, 0, len(dec.Revoked)+1)
		if op == "release" {
			ended = append(ended, id)
		}
		for _, r := range dec.Revoked {
			ended = append(ended, r.Grant)
		}
		if len(ended) > 0 {
			e.Params = []byte(grantList(ended))
		}
	}
	p, err := k.led.AppendNow(e)
	// Cut after the entry has its seq: the calls it cancels record their
	// end after it.
	k.cut(ended)
	k.seq.mu.Unlock()
	if err == nil {
		err = p.Wait(ctx)
	}
	if err != nil {
		return toException(&Error{Op: op, Kind: Failed, Cause: err})
	}
	if !dec.OK() {
		return toException(capsError(op, dec))
	}
	return nil
}

// grantList is the params body of a revoke or release entry: the grants it
// ended, as "g1 g4 g7".
func grantList(ids []caps.GrantID) string {
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(id.String())
	}
	return b.String()
}

// Checkpoint returns a freshly signed checkpoint of the durable ledger.
func (s *session) Checkpoint(ctx context.Context, call schema.Session_checkpoint) error {
	const op = "checkpoint"
	if err := s.enter(op); err != nil {
		return err
	}
	defer s.c.leave()
	cp, err := s.k.led.Checkpoint(ctx)
	if err != nil {
		return toException(&Error{Op: op, Kind: Failed, Cause: err})
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	c, err := res.NewCheckpoint()
	if err != nil {
		return err
	}
	c.SetNote(string(cp.Note))
	c.SetSize(uint64(cp.Size))
	c.SetRootHash(cp.Root[:])
	c.SetTime(s.k.now().UnixNano())
	return nil
}

// Operator returns the operator interface (admin.go) to an operator.
func (s *session) Operator(ctx context.Context, call schema.Session_operator) error {
	const op = "operator"
	if err := s.enter(op); err != nil {
		return err
	}
	defer s.c.leave()
	if s.p.Kind != schema.PrincipalKind_operator {
		return toException(errorf(Permission, op, "a %s is not an operator", s.p.Kind))
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetOperator(schema.Operator(idleserver.Of[schema.Operator_Server](schema.Operator_Methods, &operator{s: s}))) // steals the reference
}

// Auditor returns the read-only auditor interface (admin.go) to an auditor
// or an operator.
func (s *session) Auditor(ctx context.Context, call schema.Session_auditor) error {
	const op = "auditor"
	if err := s.enter(op); err != nil {
		return err
	}
	defer s.c.leave()
	if s.p.Kind != schema.PrincipalKind_auditor && s.p.Kind != schema.PrincipalKind_operator {
		return toException(errorf(Permission, op, "a %s is not an auditor", s.p.Kind))
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetAuditor(schema.Auditor(idleserver.Of[schema.Auditor_Server](schema.Auditor_Methods, &auditor{s: s}))) // steals the reference
}
