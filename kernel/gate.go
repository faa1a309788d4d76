package kernel

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/osmose-os/osmose/caps"
	"github.com/osmose-os/osmose/ledger"
)

// gateDir says which side calls through a gate.
type gateDir uint8

const (
	// outward: the program calls; the gate forwards to the driver (or to a
	// capability the driver returned).
	outward gateDir = iota
	// inward: the driver calls; the gate forwards to a capability the
	// program passed in (a listener, a sink).
	inward
)

func (d gateDir) flip() gateDir { return 1 - d }

// gate is the kernel-hosted membrane around one capability, and its own
// capnp.ClientHook: a call is queued for the sequencer, in arrival order,
// admitted or denied there (on the goroutine that delivered it, or on the
// one admitting queued calls at the time: Kernel.enqueue), recorded on the
// ledger, and forwarded to inner only when admitted; its answer goes back
// once the call's return entry is durable. A gate has no goroutine of its
// own. Admission never waits for the driver or for an fsync, and waits for
// room in the ledger only on a goroutine of the gate's backlog (see
// gate.recv); the goroutine that delivers a call never waits for the
// sequencer.
// Capabilities in params and results are wrapped in gates of the same
// grant and session.
//
// A device gate (derived false) enforces its grant through the caps table.
// A derived gate wraps a capability found in params or results (a
// Subscription, a ReadingListener, an AudioSink); it admits while its grant
// is live and its session has not ended.
type gate struct {
	k       *Kernel
	s       *session
	grant   caps.GrantID
	device  string
	f       *iface // the device interface; nil for derived gates
	dir     gateDir
	derived bool
	actor   string // who calls through the gate, for the ledger

	mu    sync.Mutex
	inner capnp.Client // owned; zero once released or cut

	// The backlog holds, in arrival order, the calls that found the ledger
	// full (or a backlog already there): a goroutine admits them once the
	// ledger has room, and calls arriving meanwhile join the queue, so the
	// gate's calls are still admitted in arrival order.
	qmu      sync.Mutex
	backlog  []*gcall
	queued   int  // calls in the sequencer's queue (sequencer.enqueue)
	retiring bool // released while calls were queued or in the backlog
}

// gateRegistry finds the derived gates of a grant, to cut them when the
// grant ends. Lock order: sequencer.mu, then gateRegistry.mu, then gate.mu.
type gateRegistry struct {
	mu      sync.Mutex
	byGrant map[caps.GrantID]map[*gate]struct{}
}

// newGate returns a client of a new gate around inner, whose reference it
// steals. The caller owns the returned client.
func (k *Kernel) newGate(s *session, grant caps.GrantID, device string, f *iface, dir gateDir, inner capnp.Client, derived bool) capnp.Client {
	g := &gate{k: k, s: s, grant: grant, device: device, f: f, dir: dir, derived: derived, inner: inner, actor: s.p.ID}
	if dir == inward {
		g.actor = device
	}
	s.gmu.Lock()
	late := s.gatesCut
	if !late {
		if s.gates == nil {
			s.gates = map[*gate]struct{}{}
		}
		s.gates[g] = struct{}{}
	}
	s.gmu.Unlock()
	if late {
		g.cut() // the session has ended: the gate admits nothing
	}
	if derived {
		k.gates.mu.Lock()
		set := k.gates.byGrant[grant]
		if set == nil {
			set = map[*gate]struct{}{}
			k.gates.byGrant[grant] = set
		}
		set[g] = struct{}{}
		k.gates.mu.Unlock()
	}
	return capnp.NewClient(g)
}

// String implements capnp.ClientHook.
func (g *gate) String() string { return "osmose gate on " + g.device }

// Brand implements capnp.ClientHook: the kernel recognises its own gates by
// it.
func (g *gate) Brand() capnp.Brand { return capnp.Brand{Value: g} }

// Shutdown implements capnp.ClientHook: it runs when the last reference to
// the gate is gone, possibly in a connection's receive loop or under its
// caller's locks, so the gate is retired on a goroutine of its own. Calls
// already forwarded keep running: the driver holds what they need.
func (g *gate) Shutdown() {
	g.qmu.Lock()
	defer g.qmu.Unlock()
	if len(g.backlog) > 0 || g.queued > 0 {
		// Calls sent before the last release wait in the backlog or the
		// sequencer's queue: they are admitted first, and the gate is
		// retired once the last of them is through (sequenced).
		g.retiring = true
		return
	}
	go g.retire()
}

// sequenced notes that one of the gate's queued calls has been through
// the sequencer, and retires a released gate once none is left.
func (g *gate) sequenced() {
	g.qmu.Lock()
	g.queued--
	retire := g.retiring && g.queued == 0 && len(g.backlog) == 0
	if retire {
		g.retiring = false
	}
	g.qmu.Unlock()
	if retire {
		go g.retire()
	}
}

func (g *gate) retire() {
	g.cut()
	g.s.gmu.Lock()
	delete(g.s.gates, g)
	g.s.gmu.Unlock()
	if g.derived {
		g.k.gates.mu.Lock()
		if set := g.k.gates.byGrant[g.grant]; set != nil {
			delete(set, g)
			if len(set) == 0 {
				delete(g.k.gates.byGrant, g.grant)
			}
		}
		g.k.gates.mu.Unlock()
	}
}

// cut releases the gate's capability: no call goes through it any more.
func (g *gate) cut() {
	g.mu.Lock()
	inner := g.inner
	g.inner = capnp.Client{}
	g.mu.Unlock()
	inner.Release()
}

// cut ends the given grants: derived gates admit nothing more and release
// what they wrap (so the driver drops subscriptions), and the calls the
// grants have at drivers are cut short. Device gates are refused by the
// caps table. The caller holds k.seq.mu.
func (k *Kernel) cut(ids []caps.GrantID) {
	var gs []*gate
	k.gates.mu.Lock()
	for _, id := range ids {
		k.seq.dead[id] = true
		for g := range k.gates.byGrant[id] {
			gs = append(gs, g)
		}
	}
	k.gates.mu.Unlock()
	for _, g := range gs {
		g.cut()
	}
	k.seq.ground(ids)
}

// wrap returns the capability c as the program or the driver on the other
// side of dir may hold it: a gate of the same grant and session, or, for
// one of this session's gates coming back through the membrane, the
// capability it wraps. It steals c and returns an owned client.
func (g *gate) wrap(c capnp.Client, dir gateDir) capnp.Client {
	if !c.IsValid() {
		return c
	}
	snap := c.Snapshot()
	b := snap.Brand()
	snap.Release()
	if og, ok := b.Value.(*gate); ok && og.k == g.k {
		if og.dir != dir && og.s == g.s {
			og.mu.Lock()
			inner := og.inner.AddRef()
			og.mu.Unlock()
			if inner.IsValid() {
				c.Release()
				return inner
			}
		}
		return c // already a kernel gate: calls on it are gated
	}
	return g.k.newGate(g.s, g.grant, g.device, nil, dir, c, true)
}

// wrapTable wraps every capability of a message's table.
func (g *gate) wrapTable(ct *capnp.CapTable, dir gateDir) {
	for i := 0; i < ct.Len(); i++ {
		ct.Set(capnp.CapabilityID(i), g.wrap(ct.At(i), dir))
	}
}

// Send implements capnp.ClientHook for callers in this process (a driver
// calling an inward gate, a test): the params are placed in a new message
// and the call takes the same path as one from the network.
func (g *gate) Send(ctx context.Context, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	var args capnp.Struct
	if s.PlaceArgs != nil {
		_, seg, err := capnp.NewMessage(capnp.MultiSegment(nil))
		if err == nil {
			args, err = capnp.NewRootStruct(seg, s.ArgsSize)
			if err == nil {
				err = s.PlaceArgs(args)
			}
			if err != nil {
				seg.Message().Release()
			}
		}
		if err != nil {
			return capnp.ErrorAnswer(s.Method, exc.WrapError("place args", err)), func() {}
		}
	}
	ret := new(capnp.StructReturner)
	pcall := g.Recv(ctx, capnp.Recv{
		Method:      s.Method,
		Args:        args,
		ReleaseArgs: idempotent(func() { args.Message().Release() }, args.IsValid()),
		Returner:    ret,
	})
	return ret.Answer(s.Method, pcall)
}

// serverSpan is the kind of a gated call's span.
var serverSpan = trace.WithSpanKind(trace.SpanKindServer)

// idempotent returns f made safe to call more than once, or a no-op if
// there is nothing to do.
func idempotent(f func(), something bool) func() {
	if !something {
		return func() {}
	}
	var once sync.Once
	return func() { once.Do(f) }
}

// gcall is one call through a gate, from its arrival to its answer. It
// lives across callbacks instead of a goroutine: admission runs on the
// goroutine that delivered the call or on the one admitting queued calls
// at the time, the return entry on the driver's when
// it returns (or on the goroutine that cut the call short), and the
// answer on the kernel's answerer once the entry it waits for is durable.
type gcall struct {
	g      *gate
	ctx    context.Context
	span   trace.Span
	m      capnp.Method
	r      capnp.Recv // the caller's: its args, its returner
	start  int64
	params []byte // canonical bytes of the args
	known  bool   // the method is one of the gate's interface

	seqd     chan struct{}   // closed once through the sequencer (backlog calls only)
	entered  bool            // counts against the connection's MaxInFlight
	traced   bool            // record telemetry when answered
	admitted bool            // the sequencer admitted it
	pend     *ledger.Pending // the entry the answer waits for
	record   string          // what pend records, for a failure: "record call"
	err      error           // the answer: an exception, or nil for results
	results  capnp.Struct    // the caller's results

	// An admitted call at the driver: the driver's context (cancelled
	// when the grant or the session ends), the call entry, and how the
	// call ended. done is set by whichever of the driver's return and
	// that end comes first.
	dctx   context.Context
	cancel context.CancelCauseFunc
	dtxn   *ledger.Pending
	done   atomic.Bool
	// The grant's and the session's calls in flight (sequencer.flight),
	// under its fmu.
	prev, next   *gcall
	sprev, snext *gcall
	flying       bool
	// The driver's results, in a message of their own until they are
	// copied to the caller.
	dmsg *capnp.Message
	dres capnp.Struct
	derr error

	// Calls pipelined on the call's answer: most calls have none, so the
	// queue is made only when one comes (see pipeline).
	pmu     sync.Mutex
	aq      *capnp.AnswerQueue
	settled bool  // answered, with final
	final   error // the answer: nil for results
}

// Recv implements capnp.ClientHook: the data path of one call (see the
// package documentation). It never waits for the driver or the ledger's
// fsync: the call is queued for admission here, in arrival order, and the
// answer is given later by the kernel's answerer.
func (g *gate) Recv(ctx context.Context, r capnp.Recv) capnp.PipelineCaller {
	k := g.k
	m := r.Method
	known := true
	if g.f != nil {
		if mm, ok := g.f.method(m.MethodID); ok && m.InterfaceID == g.f.id {
			m = mm
		} else {
			known = false
			m.InterfaceName, m.MethodName = k.cat.methodName(m)
		}
	} else {
		m.InterfaceName, m.MethodName = k.cat.methodName(m)
	}
	c := &gcall{g: g, ctx: ctx, m: m, r: r, known: known}
	c.start = k.now().UnixNano()
	if g.dir == outward {
		// Every call the program makes counts, unknown methods too: each
		// takes an entry in the ledger.
		if !g.s.c.enter() {
			c.err = overloaded(m.MethodName)
			c.answer()
			return c
		}
		c.entered = true
	}
	if known {
		c.ctx, c.span = k.tel.tracer.Start(ctx, "gate", serverSpan)
		c.traced = true
		if r.Args.IsValid() {
			var err error
			if c.params, err = canonical(r.Args); err != nil {
				c.err = toException(&Error{Op: m.MethodName, Kind: Invalid, Cause: err})
				c.answer()
				return c
			}
		}
	}
	g.recv(c)
	return c
}

// pipeline returns the queue of the calls pipelined on c's answer, made
// on first use, and settled at once if c is already answered.
func (c *gcall) pipeline() *capnp.AnswerQueue {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if c.aq == nil {
		c.aq = capnp.NewAnswerQueue(c.m)
		if c.settled {
			settle(c.aq, c.results, c.final)
		}
	}
	return c.aq
}

// PipelineRecv implements capnp.PipelineCaller: a call on a capability
// in c's results, made before they arrived.
func (c *gcall) PipelineRecv(ctx context.Context, transform []capnp.PipelineOp, r capnp.Recv) capnp.PipelineCaller {
	return c.pipeline().PipelineRecv(ctx, transform, r)
}

// PipelineSend implements capnp.PipelineCaller.
func (c *gcall) PipelineSend(ctx context.Context, transform []capnp.PipelineOp, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	return c.pipeline().PipelineSend(ctx, transform, s)
}

// settle delivers the calls queued on an answer: to the results, or
// rejected with err.
func settle(aq *capnp.AnswerQueue, results capnp.Struct, err error) {
	if err == nil {
		aq.Fulfill(results.ToPtr())
	} else {
		aq.Reject(err)
	}
}

// recv queues c for admission if the gate has no backlog and the ledger
// has room for its entry; otherwise c joins the backlog. The backlog holds
// at most MaxInFlight calls: beyond it a call is refused as overloaded and
// not recorded, as beyond a connection's bound (a driver calling a
// listener counts against no connection).
func (g *gate) recv(c *gcall) {
	g.qmu.Lock()
	if len(g.backlog) == 0 && g.k.led.TryReserve() {
		g.queued++
		g.qmu.Unlock()
		g.k.enqueue(c)
		return
	}
	if len(g.backlog) >= g.k.cfg.MaxInFlight {
		g.qmu.Unlock()
		g.k.tel.overloaded.Add(context.Background(), 1)
		c.err = overloaded(c.m.MethodName)
		c.answer()
		return
	}
	g.backlog = append(g.backlog, c)
	first := len(g.backlog) == 1
	g.qmu.Unlock()
	if first {
		go g.drain()
	}
}

// drain admits the backlog in order, each call once the ledger has room
// for its entry.
func (g *gate) drain() {
	for {
		g.qmu.Lock()
		c := g.backlog[0]
		g.qmu.Unlock()
		if err := g.k.led.Reserve(c.ctx); err != nil {
			c.err = toException(&Error{Op: c.m.MethodName, Kind: Failed, Cause: fmt.Errorf("record call: %w", err)})
			c.answer()
		} else {
			// Behind the calls queued before it; the next waits until
			// this one is through.
			c.seqd = make(chan struct{})
			g.qmu.Lock()
			g.queued++
			g.qmu.Unlock()
			g.k.enqueue(c)
			<-c.seqd
		}
		g.qmu.Lock()
		g.backlog[0] = nil
		g.backlog = g.backlog[1:]
		more := len(g.backlog) > 0
		retire := !more && g.retiring && g.queued == 0
		if retire {
			g.retiring = false
		}
		g.qmu.Unlock()
		if retire {
			g.retire()
		}
		if !more {
			return
		}
	}
}

// admit decides a call, records it and, when admitted, forwards it, all in
// one critical section of the sequencer: so the ledger order of call
// entries is the admission order, no call is admitted after its grant's
// revocation, and the calls on one driver are sent in admission order.
// The caller has reserved room in the ledger for the call's entry and has
// the sequencer's turn (admitQueued). A refused call is queued to be
// answered once its entry is durable.
func (k *Kernel) admit(c *gcall) {
	g, m, args := c.g, c.m, c.r.Args
	k.seq.mu.Lock()
	var refusal error
	switch {
	case !c.known:
		reason := fmt.Sprintf("unimplemented: %s has no method %s (interface %#x, method %d)", g.f.name, m.MethodName, m.InterfaceID, m.MethodID)
		refusal = capnp.Unimplemented(reason)
	case g.s.ended:
		refusal = &Error{Op: m.MethodName, Kind: Revoked, Cause: ErrSessionEnded}
	case k.seq.dead[g.grant]:
		refusal = errorf(Revoked, m.MethodName, "%s has ended", g.grant)
	case g.derived:
		// A subscription, a listener: it lives while its grant stands.
		if d := k.seq.table.Live(g.grant, k.unix(c.start)); !d.OK() {
			refusal = capsError(m.MethodName, d)
		}
	default:
		var cargs []caps.Arg
		if fn := g.f.args[m.MethodID]; fn != nil && args.IsValid() {
			cargs = fn(args)
		}
		if d := k.seq.table.Admit(caps.Call{Grant: g.grant, Method: m.MethodID, Args: cargs, Now: k.unix(c.start)}); !d.OK() {
			refusal = capsError(m.MethodName, d)
		}
	}
	// What the gate wraps is borrowed, not referenced: nothing cuts the
	// gate between here and the driver's taking the call. Kernel.cut runs
	// under the sequencer's lock; session.end cuts its gates only after it
	// has marked the session ended under that lock, and such a session's
	// calls are refused above; a released gate is retired only once its
	// queued calls, this one among them, are through (gate.sequenced).
	// Once the driver has the call, it holds what the call needs.
	var target capnp.Client
	if refusal == nil {
		g.mu.Lock()
		target = g.inner
		g.mu.Unlock()
		// Zero once cut, and until then a reference the gate owns, never
		// released: no need to ask the client (a lock and a reference
		// count round trip).
		if target == (capnp.Client{}) {
			refusal = &Error{Op: m.MethodName, Kind: Revoked, Cause: ErrGateReleased}
		}
	}
	e := ledger.Entry{
		Kind: ledger.KindCall, Actor: g.actor, Grant: uint64(g.grant), Device: g.device, Subject: g.s.subject,
		Interface: m.InterfaceID, Method: m.MethodID, Decision: ledger.DecisionAdmit, Time: c.start, Params: c.params,
	}
	if refusal != nil {
		e.Decision, e.Reason = ledger.DecisionDeny, truncate(refusal.Error())
	}
	if g.s.ended {
		// A call on an ended session is refused without its params: the
		// session may have ended because its person was forgotten.
		e.Params, e.Subject = nil, ""
	}
	p, err := k.led.AppendReserved(e)
	if err != nil {
		k.seq.mu.Unlock()
		c.err = toException(&Error{Op: m.MethodName, Kind: Failed, Cause: fmt.Errorf("record call: %w", err)})
		c.answer()
		return
	}
	if refusal != nil {
		k.seq.mu.Unlock()
		c.pend, c.record = p, "record call"
		if e, ok := refusal.(*Error); ok {
			c.err = toException(e)
		} else {
			c.err = refusal
		}
		k.answers.push(c)
		return
	}
	c.dtxn, c.admitted = p, true
	// The driver's context has the call's values (its span) but not its
	// cancellation: an admitted call runs to its end at the driver, and
	// its return entry records how it ended, whether or not its caller
	// is still there. Only the end of its grant or of its session (ground,
	// groundSession) cuts it short.
	c.dctx, c.cancel = context.WithCancelCause(context.WithoutCancel(c.ctx))
	k.seq.fly(c)
	// The driver gets the caller's params, every capability in them
	// wrapped in a gate of the opposite direction: the message's table is
	// rewritten in place, and the message (released by whoever releases
	// the args) owns the gates.
	if args.IsValid() {
		g.wrapTable(args.Message().CapTable(), g.dir.flip())
	}
	recv := capnp.Recv{Method: m, Args: args, ReleaseArgs: c.r.ReleaseArgs, Returner: (*driverReturner)(c)}
	if g.derived && nested(target) {
		// A promise the program passed in has resolved to one of the
		// kernel's own gates, which admits in the sequencer too: it is
		// called once the sequencer is free, and the grant's end may cut
		// this gate meanwhile, so the call holds a reference of its own.
		target = target.AddRef()
		k.seq.mu.Unlock()
		target.RecvCall(c.dctx, recv)
		target.Release()
		return
	}
	target.RecvCall(c.dctx, recv)
	k.seq.mu.Unlock()
}

// nested reports whether c is a kernel gate (a derived gate's capability
// may be a promise that resolved to one).
func nested(c capnp.Client) bool {
	snap := c.Snapshot()
	_, ok := snap.Brand().Value.(*gate)
	snap.Release()
	return ok
}

// driverReturner is the Returner an admitted call gives the driver: its
// Return continues the call on the driver's goroutine.
type driverReturner gcall

func (d *driverReturner) AllocResults(sz capnp.ObjectSize) (capnp.Struct, error) {
	if d.dmsg != nil {
		return capnp.Struct{}, errors.New("gate: results allocated twice")
	}
	_, seg, err := capnp.NewMessage(capnp.MultiSegment(nil))
	if err != nil {
		return capnp.Struct{}, err
	}
	d.dmsg = seg.Message()
	d.dres, err = capnp.NewRootStruct(seg, sz)
	return d.dres, err
}

func (d *driverReturner) PrepareReturn(e error) { d.derr = e }

func (d *driverReturner) Return() {
	(*gcall)(d).returned(d.dres, d.derr)
}

func (d *driverReturner) ReleaseResults() {
	if d.dmsg != nil {
		d.dmsg.Release()
	}
}

// cut ends a call in flight at once: its driver's context ends with cause,
// and its return entry is recorded off the sequencer's lock, whatever the
// driver does. The caller holds the sequencer's locks.
func (c *gcall) cut(cause error) {
	c.cancel(cause)
	go c.returned(capnp.Struct{}, cause)
}

// returned records the driver's answer (or the end of the call's grant or
// session, whichever comes first) as the call's return entry (Ref = the
// call's seq, result body = canonical bytes of the results, or Reason =
// the error), copies the results to the caller wrapping every capability
// in a gate of the gate's direction, and queues the answer until the
// entry is durable.
func (c *gcall) returned(res capnp.Struct, cerr error) {
	if !c.done.CompareAndSwap(false, true) {
		return
	}
	g, k, m := c.g, c.g.k, c.m
	// A call its grant's or session's end cut short failed because of it,
	// whether the driver's answer (its context cancelled) or the
	// cancellation came first; an answer that succeeded stands.
	if cerr != nil {
		switch cause := context.Cause(c.dctx); {
		case errors.Is(cause, errEnded):
			cerr = &Error{Op: m.MethodName, Kind: Revoked, Cause: fmt.Errorf("%w (%s)", ErrEndedInFlight, g.grant)}
		case errors.Is(cause, errSessionCut):
			cerr = &Error{Op: m.MethodName, Kind: Revoked, Cause: ErrSessionEnded}
		}
	}
	k.seq.land(c)
	c.cancel(nil)
	ret := ledger.Entry{
		Kind: "return", Actor: g.actor, Grant: uint64(g.grant), Device: g.device, Subject: g.s.subject,
		Interface: m.InterfaceID, Method: m.MethodID, Ref: c.dtxn.Seq(), Time: k.now().UnixNano(),
	}
	if res.IsValid() && res.Size() == (capnp.ObjectSize{}) {
		// A struct without fields (a void method's results, as a peer's
		// rpc layer hands them over) carries nothing to record or copy.
		res = capnp.Struct{}
	}
	// The results are recorded as the caller gets them: a failure to
	// encode or copy them is the call's error, on the ledger too.
	if cerr == nil && res.IsValid() {
		if ret.Result, cerr = canonical(res); cerr == nil {
			out, err := c.r.Returner.AllocResults(res.Size())
			if err == nil {
				err = out.CopyFrom(res)
			}
			if err != nil {
				cerr, ret.Result = err, nil
			} else {
				c.results = out
				g.wrapTable(out.Message().CapTable(), g.dir)
			}
		}
	}
	if cerr != nil {
		ret.Reason = truncate(cerr.Error())
	}
	c.record, c.err = "record return", cerr
	// An admitted call's return is recorded even if its caller has gone.
	// The driver's goroutine may be a connection's receive loop (a gate
	// of a listener the program passed in), so it never waits for room in
	// the ledger: a full ledger takes the entry on a goroutine of its own.
	if k.led.TryReserve() {
		c.recordReturn(ret)
		return
	}
	go c.recordReturnLater(ret)
}

// recordReturn appends a call's return entry, room for which is reserved.
func (c *gcall) recordReturn(ret ledger.Entry) {
	p, err := c.g.k.led.AppendReserved(ret)
	c.recorded(p, err)
}

// recordReturnLater waits for room in the ledger and appends a call's
// return entry. (A function of its own, so that the entry of a call that
// finds room, nearly every call, stays on the stack.)
func (c *gcall) recordReturnLater(ret ledger.Entry) {
	if err := c.g.k.led.Reserve(context.WithoutCancel(c.ctx)); err != nil {
		c.recorded(nil, err)
		return
	}
	c.recordReturn(ret)
}

// recorded queues the answer of a call whose return entry is p.
func (c *gcall) recorded(p *ledger.Pending, err error) {
	if err != nil {
		c.err = toException(&Error{Op: c.m.MethodName, Kind: Failed, Cause: fmt.Errorf("record return: %w", err)})
		c.answer()
		return
	}
	c.pend = p
	c.g.k.answers.push(c)
}

// answer completes the call with c.err (nil: c.results), or with a ledger
// failure if the entry it waited for could not be recorded.
func (c *gcall) answer() {
	err := c.err
	if c.pend != nil {
		if perr := c.pend.Err(); perr != nil {
			err = toException(&Error{Op: c.m.MethodName, Kind: Failed, Cause: fmt.Errorf("%s: %w", c.record, perr)})
		}
	}
	if c.traced {
		reason := ""
		if err != nil {
			reason = err.Error()
		}
		k := c.g.k
		k.tel.done(c.ctx, c.span, c.g, c.m, c.admitted, reason, c.start, k.now().UnixNano())
	}
	if c.span != nil {
		c.span.End()
	}
	if c.entered {
		c.g.s.c.leave()
	}
	if !c.admitted {
		// An admitted call's params went to the driver, which releases
		// them (possibly after a call cut short was answered).
		c.r.ReleaseArgs()
	}
	c.r.Returner.PrepareReturn(err)
	c.pmu.Lock()
	c.settled, c.final = true, err
	aq := c.aq
	c.pmu.Unlock()
	if aq != nil {
		settle(aq, c.results, err)
	}
	c.r.Returner.Return()
	c.r.Returner.ReleaseResults()
}

// answerer answers calls once the entries they wait for are durable: one
// goroutine for the kernel's life, which wakes once per group commit
// rather than once per call. Entries become durable in seq order, and
// calls are queued about in that order, so none waits long behind another.
type answerer struct {
	mu      sync.Mutex
	queue   []*gcall
	stopped bool
	wake    chan struct{} // buffered 1: the queue is no longer empty
	stop    chan struct{} // closed by Kernel.Close
	done    chan struct{} // closed when run returns
}

func newAnswerer() *answerer {
	a := &answerer{wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go a.run()
	return a
}

func (a *answerer) push(c *gcall) {
	a.mu.Lock()
	if a.stopped {
		// The kernel has closed: a call that ends late (its driver
		// outlived its connection) is answered on its own.
		a.mu.Unlock()
		go func() {
			<-c.pend.Done()
			c.answer()
		}()
		return
	}
	a.queue = append(a.queue, c)
	first := len(a.queue) == 1
	a.mu.Unlock()
	if first {
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
}

func (a *answerer) run() {
	defer close(a.done)
	var batch []*gcall
	for {
		stopping := false
		select {
		case <-a.wake:
		case <-a.stop:
			stopping = true
		}
		for {
			a.mu.Lock()
			if len(a.queue) == 0 {
				a.stopped = stopping
				a.mu.Unlock()
				break
			}
			batch, a.queue = a.queue, batch[:0]
			a.mu.Unlock()
			for i, c := range batch {
				<-c.pend.Done()
				c.answer()
				batch[i] = nil
			}
		}
		if stopping {
			return
		}
	}
}

// close answers the calls waiting and stops the answerer.
func (a *answerer) close() {
	close(a.stop)
	<-a.done
}

// spanAttrs describes a finished call on its span.
func spanAttrs(g *gate, m capnp.Method, admitted bool, reason string) []attribute.KeyValue {
	d := "admit"
	if !admitted {
		d = "deny"
	}
	a := []attribute.KeyValue{
		attribute.String("osmose.principal", g.s.p.ID),
		attribute.String("osmose.grant", g.grant.String()),
		attribute.String("osmose.device", g.device),
		attribute.String("osmose.interface", m.InterfaceName),
		attribute.String("osmose.method", m.MethodName),
		attribute.String("osmose.decision", d),
	}
	if reason != "" {
		a = append(a, attribute.String("osmose.reason", reason))
	}
	return a
}
