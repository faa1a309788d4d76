package kernel

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"capnproto.org/go/capnp/v3"
	"github.com/ipfs/go-cid"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/osmose-os/osmose/caps"
	"github.com/osmose-os/osmose/internal/idleserver"
	"github.com/osmose-os/osmose/internal/topology"
	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
)

// Bounds on what one Operator or Auditor call can make the kernel hold.
const (
	// maxList is the most items one answer lists. Topology and grant
	// listings that match more are refused ("invalid": narrow the
	// filter); a trace page is cut to it.
	maxList = 10000
	// tracePage is the page size of a trace whose limit is 0.
	tracePage = 1000
	// watchBatch is the most entries one EntryListener.entries call
	// carries.
	watchBatch = 256
	// watchLag is how many entries a watch may fall behind the ledger
	// before it skips ahead; it also caps a watch's backlog.
	watchLag = 10000
	// maxAncestry bounds the delegation chain a grant trace follows.
	maxAncestry = 256
)

// begin admits an Operator or Auditor call: it counts against the
// connection's MaxInFlight and is refused once the session has ended. On
// success the caller defers s.c.leave().
func (s *session) begin(op string) error {
	if err := s.enter(op); err != nil {
		return err
	}
	if s.isEnded() {
		s.c.leave()
		return toException(&Error{Op: op, Kind: Revoked, Cause: ErrSessionEnded})
	}
	return nil
}

func (s *session) isEnded() bool {
	s.k.seq.mu.Lock()
	defer s.k.seq.mu.Unlock()
	return s.ended
}

// ledgerError maps a ledger read error: past the end is not-exist.
func ledgerError(op string, err error) error {
	if errors.Is(err, ledger.ErrNotFound) {
		return toException(&Error{Op: op, Kind: NotExist, Cause: err})
	}
	return toException(&Error{Op: op, Kind: Failed, Cause: err})
}

// ---------------------------------------------------------------- Auditor

// auditor is the read-only view of the ledger a session of an auditor or
// an operator gets from Session.auditor. Nothing it does is ledgered.
type auditor struct{ s *session }

// Checkpoint returns a signed checkpoint of the durable ledger.
func (a *auditor) Checkpoint(ctx context.Context, call schema.Auditor_checkpoint) error {
	const op = "checkpoint"
	if err := a.s.begin(op); err != nil {
		return err
	}
	defer a.s.c.leave()
	k := a.s.k
	cp, err := k.led.Checkpoint(ctx)
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
	c.SetSize(uint64(cp.Size))
	c.SetTime(k.now().UnixNano())
	return errors.Join(c.SetNote(string(cp.Note)), c.SetRootHash(cp.Root[:]))
}

// InclusionProof proves that one entry is in the tree of a given size.
func (a *auditor) InclusionProof(ctx context.Context, call schema.Auditor_inclusionProof) error {
	const op = "inclusionProof"
	if err := a.s.begin(op); err != nil {
		return err
	}
	defer a.s.c.leave()
	k := a.s.k
	seq, size := call.Args().Seq(), call.Args().Size()
	latest := uint64(k.led.Size())
	if size == 0 {
		size = latest
	}
	if size > latest {
		return toException(errorf(Invalid, op, "size %d exceeds the latest checkpoint's %d", size, latest))
	}
	if seq >= size {
		return toException(errorf(NotExist, op, "entry %d is not in the tree of size %d", seq, size))
	}
	r, err := k.led.Read(ctx, seq)
	if err != nil {
		return ledgerError(op, err)
	}
	proof, err := k.led.ProveInclusion(seq, int64(size))
	if err != nil {
		return toException(&Error{Op: op, Kind: Failed, Cause: err})
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetLeafIndex(seq)
	leaf := ledger.LeafHash(r.CID)
	if err := res.SetLeafHash(leaf[:]); err != nil {
		return err
	}
	return setHashes(res.NewHashes, proof)
}

// ConsistencyProof proves that one tree size is a prefix of another.
func (a *auditor) ConsistencyProof(ctx context.Context, call schema.Auditor_consistencyProof) error {
	const op = "consistencyProof"
	if err := a.s.begin(op); err != nil {
		return err
	}
	defer a.s.c.leave()
	k := a.s.k
	oldSize, newSize := call.Args().OldSize(), call.Args().NewSize()
	latest := uint64(k.led.Size())
	if newSize == 0 {
		newSize = latest
	}
	if oldSize == 0 || oldSize > newSize || newSize > latest {
		return toException(errorf(Invalid, op, "want 0 < oldSize (%d) <= newSize (%d) <= %d", oldSize, newSize, latest))
	}
	proof, err := k.led.ProveConsistency(int64(oldSize), int64(newSize))
	if err != nil {
		return toException(&Error{Op: op, Kind: Failed, Cause: err})
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return setHashes(res.NewHashes, proof)
}

// Entry returns one committed envelope with its bodies.
func (a *auditor) Entry(ctx context.Context, call schema.Auditor_entry) error {
	const op = "entry"
	if err := a.s.begin(op); err != nil {
		return err
	}
	defer a.s.c.leave()
	seq := call.Args().Seq()
	r, err := a.s.k.led.Read(ctx, seq)
	if err != nil {
		return ledgerError(op, err)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	env, err := res.NewEnvelope()
	if err != nil {
		return err
	}
	env.SetSeq(seq)
	env.SetLeafIndex(seq)
	if err := errors.Join(env.SetCid(r.CID.Bytes()), env.SetData(r.Block)); err != nil {
		return err
	}
	type body struct {
		link  cid.Cid
		block []byte
	}
	var bodies []body
	if e := r.Envelope; e.Params.Defined() {
		bodies = append(bodies, body{e.Params, r.ParamsBlock})
	}
	if e := r.Envelope; e.Result.Defined() {
		bodies = append(bodies, body{e.Result, r.ResultBlock})
	}
	bl, err := env.NewBodies(int32(len(bodies)))
	if err != nil {
		return err
	}
	for i, b := range bodies {
		sb := bl.At(i)
		if err := sb.SetCid(b.link.Bytes()); err != nil {
			return err
		}
		if b.block == nil {
			sb.SetRedacted(true)
		} else if err := sb.SetData(b.block); err != nil {
			return err
		}
	}
	return nil
}

// Trace returns one page of the entries on a device, of a principal or of
// a grant and its ancestry.
func (a *auditor) Trace(ctx context.Context, call schema.Auditor_trace) error {
	const op = "trace"
	if err := a.s.begin(op); err != nil {
		return err
	}
	defer a.s.c.leave()
	k := a.s.k
	q, err := call.Args().Query()
	if err != nil {
		return toException(&Error{Op: op, Kind: Invalid, Cause: err})
	}
	limit := int(q.Limit())
	if limit == 0 {
		limit = tracePage
	}
	limit = min(limit, maxList)
	var from uint64
	if q.AfterSeq() > 0 {
		from = q.AfterSeq() + 1
	}
	to := uint64(k.led.Size())
	var (
		ix    ledger.Index
		value string
		extra []uint64 // seqs the index does not find, ascending
	)
	by := q.By()
	switch by.Which() {
	case schema.TraceQuery_by_Which_device:
		ix = ledger.ByDevice
		value, err = by.Device()
	case schema.TraceQuery_by_Which_principal:
		ix = ledger.ByPrincipal
		value, err = by.Principal()
		if err == nil {
			extra = k.receivedGrants(value)
		}
	case schema.TraceQuery_by_Which_grant:
		ix = ledger.ByGrant
		var gs string
		if gs, err = by.Grant(); err == nil {
			var id caps.GrantID
			if id, err = parseGrant(op, gs); err != nil {
				return toException(err)
			}
			value = fmt.Sprint(uint64(id))
			if extra, err = k.ancestry(ctx, id, to); err != nil {
				return toException(&Error{Op: op, Kind: Failed, Cause: err})
			}
		}
	default:
		return toException(errorf(Invalid, op, "unknown query kind %d", by.Which()))
	}
	if err != nil {
		return toException(&Error{Op: op, Kind: Invalid, Cause: err})
	}
	if value == "" {
		return toException(errorf(Invalid, op, "empty %s", by.Which()))
	}
	since, until := q.SinceTime(), q.UntilTime()
	keep := func(e *ledger.Envelope) bool {
		return (since == 0 || e.Time >= since) && (until == 0 || e.Time <= until)
	}
	got, err := k.trace(ctx, ix, value, extra, from, to, limit, keep)
	if err != nil {
		return toException(&Error{Op: op, Kind: Failed, Cause: err})
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	l, err := res.NewEntries(int32(len(got)))
	if err != nil {
		return err
	}
	for i, e := range got {
		if err := k.fillEntry(l.At(i), e); err != nil {
			return err
		}
	}
	return nil
}

// summary is what a LedgerEntry says of one record; unlike a Record it
// holds no body bytes, so a page of them stays small.
type summary struct {
	env      *ledger.Envelope
	cid      cid.Cid
	redacted bool
}

func summarize(r *ledger.Record) summary {
	e := r.Envelope
	return summary{env: e, cid: r.CID,
		redacted: (e.Params.Defined() && r.ParamsBlock == nil) || (e.Result.Defined() && r.ResultBlock == nil)}
}

// trace returns, in seq order, at most limit entries in [from, to) that
// index ix maps to value or whose seq is in extra (ascending), and that
// keep accepts. It looks up at most limit seqs at a time.
func (k *Kernel) trace(ctx context.Context, ix ledger.Index, value string, extra []uint64, from, to uint64, limit int, keep func(*ledger.Envelope) bool) ([]summary, error) {
	var out []summary
	for from < to && len(out) < limit {
		want := limit - len(out)
		batch := make([]uint64, 0, want)
		err := k.led.Lookup(ctx, ix, value, from, to, func(seq uint64) bool {
			batch = append(batch, seq)
			return len(batch) < want
		})
		if err != nil {
			return nil, err
		}
		bound := to
		if len(batch) == want {
			bound = batch[len(batch)-1] + 1
		}
		for len(extra) > 0 && extra[0] < from {
			extra = extra[1:]
		}
		n := 0
		for n < len(extra) && extra[n] < bound {
			n++
		}
		seqs := append(batch, extra[:n]...)
		extra = extra[n:]
		slices.Sort(seqs)
		seqs = slices.Compact(seqs)
		for _, seq := range seqs {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			r, err := k.led.Read(ctx, seq)
			if err != nil {
				return nil, err
			}
			if keep(r.Envelope) {
				out = append(out, summarize(r))
				if len(out) == limit {
					return out, nil
				}
			}
		}
		from = bound
	}
	return out, nil
}

// receivedGrants returns the seqs of the entries that made the grants a
// principal holds (as the caps table still knows them), ascending: the
// grants others made for it are not under its name in the index.
func (k *Kernel) receivedGrants(principal string) []uint64 {
	var seqs []uint64
	k.seq.mu.Lock()
	for g := range k.seq.table.Grants() {
		if g.Holder.ID == principal {
			if seq := k.seq.grantSeq[g.ID]; seq != 0 {
				seqs = append(seqs, seq)
			}
		}
	}
	k.seq.mu.Unlock()
	slices.Sort(seqs)
	return seqs
}

// ancestry returns the seqs of the grant and delegate entries that made
// the ancestors of grant id, ascending. It follows the chain on the ledger
// itself: a delegate entry's Ref is the seq of the entry that made its
// parent.
func (k *Kernel) ancestry(ctx context.Context, id caps.GrantID, size uint64) ([]uint64, error) {
	k.seq.mu.Lock()
	seq, ok := k.seq.grantSeq[id]
	k.seq.mu.Unlock()
	if !ok {
		// Not made by this kernel run: find the entry that made it.
		first, err := k.trace(ctx, ledger.ByGrant, fmt.Sprint(uint64(id)), nil, 0, size, 1, makes)
		if err != nil || len(first) == 0 {
			return nil, err
		}
		seq = first[0].env.Seq
	}
	var out []uint64
	for range maxAncestry {
		r, err := k.led.Read(ctx, seq)
		if err != nil {
			return nil, err
		}
		e := r.Envelope
		if e.Kind != ledger.KindDelegate || e.Ref == 0 || e.Ref >= seq {
			break
		}
		p, err := k.led.Read(ctx, e.Ref)
		if err != nil {
			return nil, err
		}
		if !makes(p.Envelope) {
			break
		}
		seq = e.Ref
		out = append(out, seq)
	}
	slices.Reverse(out)
	return out, nil
}

// makes reports whether an envelope records the making of a grant.
func makes(e *ledger.Envelope) bool {
	return (e.Kind == ledger.KindGrant || e.Kind == ledger.KindDelegate) && e.Decision == ledger.DecisionAdmit
}

// fillEntry writes the summary of one ledger entry.
func (k *Kernel) fillEntry(le schema.LedgerEntry, s summary) error {
	e := s.env
	le.SetSeq(e.Seq)
	var grant string
	if e.Grant != 0 {
		grant = caps.GrantID(e.Grant).String()
	}
	var method string
	if e.Kind == ledger.KindCall || e.Kind == "return" {
		le.SetInterfaceId(e.Interface)
		le.SetMethodId(e.Method)
		_, method = k.cat.methodName(capnp.Method{InterfaceID: e.Interface, MethodID: e.Method})
	}
	switch e.Decision {
	case ledger.DecisionAdmit:
		le.SetDecision(schema.Decision_allowed)
	case ledger.DecisionDeny:
		le.SetDecision(schema.Decision_denied)
	}
	le.SetTime(e.Time)
	le.SetRedacted(s.redacted)
	return errors.Join(le.SetCid(s.cid.Bytes()), le.SetKind(string(e.Kind)), le.SetActor(e.Actor),
		le.SetGrant(grant), le.SetTarget(e.Device), le.SetMethod(method), le.SetReason(e.Reason))
}

// ---------------------------------------------------------------- Operator

// operator is the operator's view of the building a session of an
// operator gets from Session.operator. Its grants and revocations go
// through the sequencer and onto the ledger with the operator as actor,
// exactly as a session's; its queries are not ledgered.
type operator struct{ s *session }

// Places lists the places at or under a place.
func (o *operator) Places(ctx context.Context, call schema.Operator_places) error {
	const op = "places"
	if err := o.s.begin(op); err != nil {
		return err
	}
	defer o.s.c.leave()
	k := o.s.k
	under, err := call.Args().Under()
	if err != nil {
		return toException(&Error{Op: op, Kind: Invalid, Cause: err})
	}
	if _, ok := k.top.Place(under); under != "" && !ok {
		return toException(errorf(NotExist, op, "no place %q", under))
	}
	var ps []topology.Place
	for _, p := range k.top.Places {
		if under == "" || topology.Within(p.Path, under) {
			ps = append(ps, p)
		}
	}
	if len(ps) > maxList {
		return toException(tooMany(op, len(ps), "places", "under"))
	}
	slices.SortFunc(ps, func(a, b topology.Place) int { return comparePaths(a.Path, b.Path) })
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	l, err := res.NewPlaces(int32(len(ps)))
	if err != nil {
		return err
	}
	for i, p := range ps {
		sp := l.At(i)
		sp.SetKind(p.Kind)
		if err := errors.Join(sp.SetPath(p.Path), sp.SetLabel(p.Label)); err != nil {
			return err
		}
	}
	return nil
}

// Devices lists the devices at or under a path, of some classes.
func (o *operator) Devices(ctx context.Context, call schema.Operator_devices) error {
	const op = "devices"
	if err := o.s.begin(op); err != nil {
		return err
	}
	defer o.s.c.leave()
	k := o.s.k
	under, err1 := call.Args().Under()
	classes, err2 := call.Args().Classes()
	if err := errors.Join(err1, err2); err != nil {
		return toException(&Error{Op: op, Kind: Invalid, Cause: err})
	}
	devs := k.top.Devices
	if under != "" {
		var err error
		if devs, _, err = k.resolve(op, under); err != nil {
			return toException(err)
		}
	}
	var out []topology.Device
	for _, d := range devs {
		if wantClass(classes, d.Class) {
			out = append(out, d)
		}
	}
	if len(out) > maxList {
		return toException(tooMany(op, len(out), "devices", "under or classes"))
	}
	slices.SortFunc(out, func(a, b topology.Device) int { return comparePaths(a.Path, b.Path) })
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	l, err := res.NewDevices(int32(len(out)))
	if err != nil {
		return err
	}
	for i, d := range out {
		if err := k.fillDevice(l.At(i), d); err != nil {
			return err
		}
	}
	return nil
}

// fillDevice writes a device as the operator sees it. Online says that the
// kernel has a driver for it (DeviceState asks the driver).
func (k *Kernel) fillDevice(sd schema.Device, d topology.Device) error {
	sd.SetClass(d.Class)
	var name string
	if f := k.cat.byClass[d.Class]; f != nil {
		name = f.name
		sd.SetInterfaceId(f.id)
	}
	var principal string
	if d.Key != nil {
		principal = d.Path
	}
	_, online := k.cfg.Drivers[d.Path]
	sd.SetOnline(online)
	return errors.Join(sd.SetPath(d.Path), sd.SetInterfaceName(name), sd.SetPrincipal(principal), sd.SetLabel(d.Label))
}

// Principals lists the principals that can log in, of some kinds.
func (o *operator) Principals(ctx context.Context, call schema.Operator_principals) error {
	const op = "principals"
	if err := o.s.begin(op); err != nil {
		return err
	}
	defer o.s.c.leave()
	k := o.s.k
	kinds, err := call.Args().Kinds()
	if err != nil {
		return toException(&Error{Op: op, Kind: Invalid, Cause: err})
	}
	want := func(kind schema.PrincipalKind) bool {
		if kinds.Len() == 0 {
			return true
		}
		for i := 0; i < kinds.Len(); i++ {
			if kinds.At(i) == kind {
				return true
			}
		}
		return false
	}
	type principal struct {
		id, label, place string
		kind             schema.PrincipalKind
	}
	var ps []principal
	if want(schema.PrincipalKind_device) {
		for _, d := range k.top.Devices {
			if d.Key != nil {
				ps = append(ps, principal{id: d.Path, label: d.Label, place: d.Place(), kind: schema.PrincipalKind_device})
			}
		}
	}
	var persons []int
	for _, p := range k.top.Principals {
		if want(p.Kind) {
			if p.Kind == schema.PrincipalKind_person {
				persons = append(persons, len(ps))
			}
			ps = append(ps, principal{id: p.ID, label: p.Label, kind: p.Kind})
		}
	}
	if len(ps) > maxList {
		return toException(tooMany(op, len(ps), "principals", "kinds"))
	}
	if len(persons) > 0 {
		// A person is where the caps table last saw them: the innermost
		// place they are present in.
		k.seq.mu.Lock()
		for _, i := range persons {
			for _, pl := range k.seq.table.Present(ps[i].id) {
				if strings.Count(pl, "/") >= strings.Count(ps[i].place, "/") {
					ps[i].place = pl
				}
			}
		}
		k.seq.mu.Unlock()
	}
	slices.SortFunc(ps, func(a, b principal) int { return strings.Compare(a.id, b.id) })
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	l, err := res.NewPrincipals(int32(len(ps)))
	if err != nil {
		return err
	}
	for i, p := range ps {
		sp := l.At(i)
		sp.SetKind(p.kind)
		if err := errors.Join(sp.SetId(p.id), sp.SetLabel(p.label), sp.SetPlace(p.place)); err != nil {
			return err
		}
	}
	return nil
}

// Grants lists the live grants, by holder and target.
func (o *operator) Grants(ctx context.Context, call schema.Operator_grants) error {
	const op = "grants"
	if err := o.s.begin(op); err != nil {
		return err
	}
	defer o.s.c.leave()
	k := o.s.k
	holder, err1 := call.Args().Holder()
	target, err2 := call.Args().Target()
	if err := errors.Join(err1, err2); err != nil {
		return toException(&Error{Op: op, Kind: Invalid, Cause: err})
	}
	type listed struct {
		g       caps.Grant
		seq     uint64
		grantor string
	}
	var gs []listed
	n := 0
	k.seq.mu.Lock()
	for g := range k.seq.table.Grants() {
		if g.Revoked || g.Released || (holder != "" && g.Holder.ID != holder) ||
			(target != "" && !topology.Within(g.Target, target)) {
			continue
		}
		if n++; n <= maxList {
			gs = append(gs, listed{g: g, seq: k.seq.grantSeq[g.ID], grantor: k.grantor(g)})
		}
	}
	k.seq.mu.Unlock()
	if n > maxList {
		return toException(tooMany(op, n, "grants", "holder or target"))
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	l, err := res.NewGrants(int32(len(gs)))
	if err != nil {
		return err
	}
	for i, x := range gs {
		if err := k.writeGrant(l.At(i), x.g, x.seq, x.grantor); err != nil {
			return err
		}
	}
	return nil
}

// Grant makes root grants to a principal, as the policy allows them, on a
// device or on every device of some classes under a place. Each decision
// is a "grant" entry with the operator as actor.
func (o *operator) Grant(ctx context.Context, call schema.Operator_grant) error {
	const op = "grant"
	if err := o.s.begin(op); err != nil {
		return err
	}
	defer o.s.c.leave()
	s, k := o.s, o.s.k
	args := call.Args()
	to, err1 := args.To()
	target, err2 := args.Target()
	classes, err3 := args.Classes()
	if err := errors.Join(err1, err2, err3); err != nil {
		return toException(&Error{Op: op, Kind: Invalid, Cause: err})
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
	tp, ok := k.top.Login(to)
	if !ok {
		return toException(errorf(NotExist, op, "no principal %q", to))
	}
	recipient, ok := capsPrincipal(tp)
	if !ok {
		return toException(errorf(Invalid, op, "a %s holds no grants", tp.Kind))
	}
	devs, single, err := k.resolve(op, target)
	if err != nil {
		return toException(err)
	}
	type aim struct {
		d topology.Device
		f *iface
	}
	var aims []aim
	for _, d := range devs {
		if f := k.cat.byClass[d.Class]; f != nil && wantClass(classes, d.Class) {
			aims = append(aims, aim{d, f})
		}
	}
	switch {
	case single && len(aims) == 0:
		return toException(errorf(NotExist, op, "%s: no capability of the requested classes", target))
	case len(aims) > maxList:
		return toException(tooMany(op, len(aims), "devices", "target or classes"))
	}

	type made struct {
		g   caps.Grant
		seq uint64
	}
	var out []made
	var last *ledger.Pending
	var refusal error
	now := k.now()
	if err := k.led.WaitRoom(ctx); err != nil {
		return toException(&Error{Op: op, Kind: Failed, Cause: err})
	}
	k.seq.mu.Lock()
	if s.ended {
		k.seq.mu.Unlock()
		return toException(&Error{Op: op, Kind: Revoked, Cause: ErrSessionEnded})
	}
	for _, a := range aims {
		dec := k.seq.table.Open(caps.Open{Holder: recipient, Target: a.d.Path, Interface: a.f.id, Methods: methods, Caveats: cav, Now: now})
		g, p, err := k.recordGrant(ctx, ledger.KindGrant, s.p.ID, a.d.Path, a.f.id, dec, 0, now, grantAsk{holder: tp.ID, caveats: wire})
		if err != nil {
			refusal = &Error{Op: op, Kind: Failed, Cause: err}
			break
		}
		last = p
		if !dec.OK() {
			if single {
				refusal = capsError(op, dec)
			}
			continue
		}
		out = append(out, made{g: g, seq: p.Seq()})
	}
	k.seq.mu.Unlock()
	if last != nil {
		if err := last.Wait(ctx); err != nil && refusal == nil {
			refusal = &Error{Op: op, Kind: Failed, Cause: fmt.Errorf("record grant: %w", err)}
		}
	}
	if refusal != nil {
		return toException(refusal)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	l, err := res.NewGrants(int32(len(out)))
	if err != nil {
		return err
	}
	for i, m := range out {
		// Root grants: their grantor is the policy, without the table.
		if err := k.writeGrant(l.At(i), m.g, m.seq, k.grantor(m.g)); err != nil {
			return err
		}
	}
	return nil
}

// Revoke revokes any grant with its subtree, as Session.revoke does, with
// the operator as actor. Revoking a revoked grant succeeds and records
// nothing.
func (o *operator) Revoke(ctx context.Context, call schema.Operator_revoke) error {
	const op = "revoke"
	if err := o.s.begin(op); err != nil {
		return err
	}
	defer o.s.c.leave()
	s, k := o.s, o.s.k
	gs, err := call.Args().Grant()
	if err != nil {
		return toException(&Error{Op: op, Kind: Invalid, Cause: err})
	}
	id, err := parseGrant(op, gs)
	if err != nil {
		return toException(err)
	}
	k.seq.mu.Lock()
	g, ok := k.seq.table.Grant(id)
	k.seq.mu.Unlock()
	if ok && g.Revoked {
		return nil
	}
	err = k.retire(ctx, op, s, id, func(t *caps.Table) caps.Decision {
		return t.Revoke(caps.Revoke{Grant: id, By: s.holder, Reason: "revoked by " + s.p.ID})
	})
	if errors.Is(err, caps.ErrRevoked) {
		return nil // revoked meanwhile by someone else
	}
	return err
}

// DeviceState asks a device's driver what the device is doing.
func (o *operator) DeviceState(ctx context.Context, call schema.Operator_deviceState) error {
	const op = "deviceState"
	if err := o.s.begin(op); err != nil {
		return err
	}
	defer o.s.c.leave()
	k := o.s.k
	path, err := call.Args().Path()
	if err != nil {
		return toException(&Error{Op: op, Kind: Invalid, Cause: err})
	}
	d, ok := k.top.Device(path)
	if !ok {
		return toException(errorf(NotExist, op, "no device %q", path))
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	st, err := res.NewState()
	if err != nil {
		return err
	}
	sd, err := st.NewDevice()
	if err != nil {
		return err
	}
	if err := k.fillDevice(sd, d); err != nil {
		return err
	}
	drv, ok := k.driver(path)
	if !ok {
		return st.SetSummary("no driver")
	}
	defer drv.Release()
	summary, err := readState(ctx, d.Class, drv, st.Detail())
	if err != nil {
		sd.SetOnline(false)
		st.Detail().SetNone()
		return st.SetSummary(truncate("unreachable: " + err.Error()))
	}
	st.SetLastSeen(k.now().UnixNano())
	return st.SetSummary(summary)
}

// readState calls a driver's state method for its class, copies the
// answer into detail and returns a one-line summary.
func readState(ctx context.Context, class schema.DeviceClass, drv capnp.Client, detail schema.DeviceState_detail) (string, error) {
	switch class {
	case schema.DeviceClass_light:
		f, rel := schema.Light(drv).State(ctx, nil)
		defer rel()
		r, err := f.Struct()
		if err != nil {
			return "", err
		}
		s, err := r.State()
		if err != nil {
			return "", err
		}
		if err := detail.SetLight(s); err != nil {
			return "", err
		}
		if !s.On() {
			return fmt.Sprintf("off (level %d %%)", s.Level()), nil
		}
		return fmt.Sprintf("on, %d %%", s.Level()), nil
	case schema.DeviceClass_thermostat:
		f, rel := schema.Thermostat(drv).State(ctx, nil)
		defer rel()
		r, err := f.Struct()
		if err != nil {
			return "", err
		}
		s, err := r.State()
		if err != nil {
			return "", err
		}
		if err := detail.SetThermostat(s); err != nil {
			return "", err
		}
		return fmt.Sprintf("%.1f °C → %.1f °C %s", s.Temperature(), s.Setpoint(), s.Mode()), nil
	case schema.DeviceClass_occupancy, schema.DeviceClass_temperature, schema.DeviceClass_co2, schema.DeviceClass_illuminance:
		f, rel := schema.Sensor(drv).Read(ctx, nil)
		defer rel()
		r, err := f.Struct()
		if err != nil {
			return "", err
		}
		s, err := r.Reading()
		if err != nil {
			return "", err
		}
		if err := detail.SetReading(s); err != nil {
			return "", err
		}
		unit, _ := s.Unit()
		return fmt.Sprintf("%g %s", s.Value(), unit), nil
	case schema.DeviceClass_doorLock:
		f, rel := schema.DoorLock(drv).State(ctx, nil)
		defer rel()
		r, err := f.Struct()
		if err != nil {
			return "", err
		}
		s, err := r.State()
		if err != nil {
			return "", err
		}
		if err := detail.SetDoorLock(s); err != nil {
			return "", err
		}
		sum := map[bool]string{true: "locked", false: "unlocked"}[s.Locked()] + ", " + map[bool]string{true: "open", false: "closed"}[s.Open()]
		return sum, nil
	case schema.DeviceClass_display:
		f, rel := schema.Display(drv).Content(ctx, nil)
		defer rel()
		r, err := f.Struct()
		if err != nil {
			return "", err
		}
		text, err := r.Text()
		if err != nil {
			return "", err
		}
		if err := detail.SetDisplay(text); err != nil {
			return "", err
		}
		if text == "" {
			return "blank", nil
		}
		line, _, _ := strings.Cut(text, "\n")
		return fmt.Sprintf("%q", truncate(line)), nil
	case schema.DeviceClass_speaker:
		f, rel := schema.Speaker(drv).State(ctx, nil)
		defer rel()
		r, err := f.Struct()
		if err != nil {
			return "", err
		}
		s, err := r.State()
		if err != nil {
			return "", err
		}
		if err := detail.SetSpeaker(s); err != nil {
			return "", err
		}
		sum := fmt.Sprintf("volume %d %%", s.Volume())
		if s.Playing() {
			sum += ", playing"
		}
		return sum, nil
	case schema.DeviceClass_switch:
		f, rel := schema.Switch(drv).Pressed(ctx, nil)
		defer rel()
		r, err := f.Struct()
		if err != nil {
			return "", err
		}
		bs, err := r.Buttons()
		if err != nil {
			return "", err
		}
		if err := detail.SetSwitch(bs); err != nil {
			return "", err
		}
		var held []string
		for i := 0; i < bs.Len(); i++ {
			if bs.At(i) {
				held = append(held, fmt.Sprint(i))
			}
		}
		if len(held) == 0 {
			return "no button held", nil
		}
		return "held: " + strings.Join(held, ", "), nil
	case schema.DeviceClass_microphone:
		// The interface says nothing of recordings running; the format
		// shows the driver answers.
		f, rel := schema.Microphone(drv).Format(ctx, nil)
		defer rel()
		r, err := f.Struct()
		if err != nil {
			return "", err
		}
		af, err := r.Format()
		if err != nil {
			return "", err
		}
		detail.SetNone()
		return fmt.Sprintf("%s %d Hz, %d ch", af.Encoding(), af.SampleRate(), af.Channels()), nil
	}
	detail.SetNone()
	return "no state for class " + class.String(), nil
}

// Watch streams the ledger tail to a listener until the subscription is
// cancelled or released, the listener fails, or the session ends.
func (o *operator) Watch(ctx context.Context, call schema.Operator_watch) error {
	const op = "watch"
	if err := o.s.begin(op); err != nil {
		return err
	}
	defer o.s.c.leave()
	k := o.s.k
	l := call.Args().Listener()
	if !l.IsValid() {
		return toException(errorf(Invalid, op, "no listener"))
	}
	// A running watch holds one of its connection's in-flight calls, so
	// a connection's watches are bounded by MaxInFlight.
	if !o.s.c.enter() {
		return overloaded(op)
	}
	backlog := min(int64(call.Args().Backlog()), watchLag)
	size := k.led.Size()
	wctx, cancel := context.WithCancel(context.Background())
	w := &watch{s: o.s, listener: l.AddRef(), cancel: cancel, done: make(chan struct{})}
	go w.run(wctx, size-min(backlog, size))
	sub := schema.Subscription(idleserver.Of[schema.Subscription_Server](schema.Subscription_Methods, w))
	res, err := call.AllocResults()
	if err != nil {
		sub.Release()
		return err
	}
	return res.SetSubscription(sub) // steals the reference
}

// watch is one Operator.watch: a goroutine that reads the ledger from
// where it left off and makes one EntryListener call at a time, and the
// Subscription that stops it.
type watch struct {
	s        *session
	listener schema.EntryListener // owned; released when run ends
	cancel   context.CancelFunc
	done     chan struct{} // closed when run has ended
}

// run delivers the entries from seq next on, in batches of at most
// watchBatch, one call outstanding: entries committed meanwhile go into
// the next call. When more than watchLag entries wait, it skips to the
// newest watchBatch and reports how many it left out.
func (w *watch) run(ctx context.Context, next int64) {
	k := w.s.k
	defer close(w.done)
	defer w.s.c.leave()
	defer w.listener.Release()
	var skipped uint64
	for {
		size, err := k.led.WaitSize(ctx, next)
		if err != nil || w.s.isEnded() {
			// The session's end is itself an entry, so it wakes us.
			return
		}
		if size-next > watchLag {
			n := size - watchBatch - next
			skipped += uint64(n)
			next += n
		}
		end := min(size, next+watchBatch)
		batch := make([]summary, 0, end-next)
		for seq := next; seq < end; seq++ {
			r, err := k.led.Read(ctx, uint64(seq))
			if err != nil {
				k.log.Warn("watch: read ledger", "seq", seq, "err", err)
				return
			}
			batch = append(batch, summarize(r))
		}
		if !w.send(ctx, batch, skipped) {
			return
		}
		skipped, next = 0, end
	}
}

// send makes one listener call and waits for its answer; false means stop.
func (w *watch) send(ctx context.Context, batch []summary, skipped uint64) bool {
	k := w.s.k
	f, rel := w.listener.Entries(ctx, func(p schema.EntryListener_entries_Params) error {
		p.SetSkipped(skipped)
		l, err := p.NewEntries(int32(len(batch)))
		if err != nil {
			return err
		}
		for i, e := range batch {
			if err := k.fillEntry(l.At(i), e); err != nil {
				return err
			}
		}
		return nil
	})
	defer rel()
	select {
	case <-f.Done():
	case <-ctx.Done():
		return false
	}
	_, err := f.Struct()
	return err == nil
}

// Cancel stops the watch; once it returns, the listener gets no new call.
func (w *watch) Cancel(ctx context.Context, call schema.Subscription_cancel) error {
	w.cancel()
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown runs when the last reference to the subscription is gone.
func (w *watch) Shutdown() {
	w.cancel()
	<-w.done
}

// tooMany refuses a listing larger than maxList.
func tooMany(op string, n int, what, narrow string) *Error {
	return errorf(Invalid, op, "%d %s match, more than %d in one answer: narrow %s", n, what, maxList, narrow)
}

// comparePaths orders paths segment by segment, so that a place comes
// before everything it contains and siblings are in byte order.
func comparePaths(a, b string) int {
	for {
		as, ar, amore := strings.Cut(a, "/")
		bs, br, bmore := strings.Cut(b, "/")
		if c := strings.Compare(as, bs); c != 0 {
			return c
		}
		switch {
		case !amore && !bmore:
			return 0
		case !amore:
			return -1
		case !bmore:
			return 1
		}
		a, b = ar, br
	}
}

// setHashes writes a proof's hashes into a new Data list of a result.
func setHashes(newList func(int32) (capnp.DataList, error), proof []tlog.Hash) error {
	hs, err := newList(int32(len(proof)))
	if err != nil {
		return err
	}
	for i, h := range proof {
		if err := hs.Set(i, h[:]); err != nil {
			return err
		}
	}
	return nil
}
