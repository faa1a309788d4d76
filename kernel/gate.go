package kernel

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/server"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/osmose-os/osmose/caps"
	"github.com/osmose-os/osmose/internal/idleserver"
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

// gate is the kernel-hosted membrane around one capability. Every call on
// it is admitted or denied by the sequencer, recorded on the ledger, and
// forwarded to inner only when admitted; its answer goes back once the
// call's return entry is durable. Capabilities in params and results are
// wrapped in gates of the same grant and session.
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

	// Calls wait in the gate's server queue and run one at a time on the
	// gate's goroutine, which exists only while the gate has calls or is
	// among the most recently used (idleserver). A call lets the next one start (server.Call.Go, which
	// starts a new goroutine to take over the queue) only once its place
	// in the ledger is fixed and only if another call is waiting: a burst
	// of calls on a gate runs on one goroutine instead of a new one each.
	qmu      sync.Mutex
	waiting  int          // calls that have arrived and not yet started
	running  *server.Call // the call holding the queue, nil if none
	admitted bool         // running's order is fixed: the next may start
}

// gateHook is a gate's server with arrivals counted (see gate.waiting).
type gateHook struct {
	*idleserver.Server
	g *gate
}

func (h gateHook) Recv(ctx context.Context, r capnp.Recv) capnp.PipelineCaller {
	h.g.arrive()
	return h.Server.Recv(ctx, r)
}

func (h gateHook) Send(ctx context.Context, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	h.g.arrive()
	// A call whose params cannot be placed is answered at once and never
	// queued: it must not stay counted, or every later call on the gate
	// would take a goroutine of its own.
	var unplaced bool
	if place := s.PlaceArgs; place != nil {
		// Until placed, the call is not queued: the params message may
		// fail to be made before PlaceArgs is called at all.
		unplaced = true
		s.PlaceArgs = func(st capnp.Struct) error {
			err := place(st)
			unplaced = err != nil
			return err
		}
	}
	ans, rel := h.Server.Send(ctx, s)
	if unplaced {
		h.g.qmu.Lock()
		if h.g.waiting > 0 {
			h.g.waiting--
		}
		h.g.qmu.Unlock()
	}
	return ans, rel
}

// arrive notes a call about to join the queue and, if the running call is
// already admitted, lets the queue go on without it.
func (g *gate) arrive() {
	g.qmu.Lock()
	g.waiting++
	if g.running != nil && g.admitted {
		g.running.Go()
		g.running = nil
	}
	g.qmu.Unlock()
}

// serve runs one call's handler as the holder of the queue.
func (g *gate) serve(ctx context.Context, call *server.Call, h func(context.Context, *server.Call) error) error {
	g.qmu.Lock()
	if g.waiting > 0 {
		g.waiting--
	}
	g.running, g.admitted = call, false
	g.qmu.Unlock()
	defer func() {
		g.qmu.Lock()
		if g.running == call {
			g.running = nil
		}
		g.qmu.Unlock()
	}()
	return h(ctx, call)
}

// ordered says that call's place in the ledger is fixed: a call waiting
// behind it may start now, and one that arrives later will.
func (g *gate) ordered(call *server.Call) {
	g.qmu.Lock()
	if g.running == call {
		if g.waiting > 0 {
			call.Go()
			g.running = nil
		} else {
			g.admitted = true
		}
	}
	g.qmu.Unlock()
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
	// The method table is made when a call finds the gate idle.
	methods := func() []server.Method {
		if derived {
			return nil
		}
		ms := make([]server.Method, len(f.methods))
		for i, m := range f.methods {
			ms[i] = server.Method{Method: m, Impl: func(ctx context.Context, call *server.Call) error {
				return g.serve(ctx, call, func(ctx context.Context, call *server.Call) error { return g.call(ctx, m, call) })
			}}
		}
		return ms
	}
	srv := idleserver.New(methods, g, g)
	srv.HandleUnknownMethod = func(m capnp.Method) *server.Method {
		m.InterfaceName, m.MethodName = k.cat.methodName(m)
		if !derived {
			return &server.Method{Method: m, Impl: func(ctx context.Context, call *server.Call) error {
				return g.serve(ctx, call, func(ctx context.Context, call *server.Call) error { return g.unknown(ctx, m, call) })
			}}
		}
		return &server.Method{Method: m, Impl: func(ctx context.Context, call *server.Call) error {
			return g.serve(ctx, call, func(ctx context.Context, call *server.Call) error { return g.call(ctx, m, call) })
		}}
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
	return capnp.NewClient(gateHook{Server: srv, g: g})
}

// Shutdown runs when the last reference to the gate is gone.
func (g *gate) Shutdown() {
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
// what they wrap (so the driver drops subscriptions). Device gates are
// refused by the caps table. The caller holds k.seq.mu.
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
	if v, ok := idleserver.IsServer(b); ok {
		if og, ok := v.(*gate); ok && og.k == g.k {
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
	}
	return g.k.newGate(g.s, g.grant, g.device, nil, dir, c, true)
}

// wrapTable wraps every capability of a message's table.
func (g *gate) wrapTable(ct *capnp.CapTable, dir gateDir) {
	for i := 0; i < ct.Len(); i++ {
		ct.Set(capnp.CapabilityID(i), g.wrap(ct.At(i), dir))
	}
}

// admission is the sequencer's answer to one call.
type admission struct {
	pend    *ledger.Pending // the call entry
	err     error           // a refusal (*Error), or a failure to record
	ans     *capnp.Answer   // the driver's answer when admitted
	release capnp.ReleaseFunc
	ctx     context.Context // the driver's context: cancelled when the grant ends
	cancel  context.CancelCauseFunc
}

// admit decides a call, records it and, when admitted, forwards it, all in
// one critical section of the sequencer: so the ledger order of call
// entries is the admission order, no call is admitted after its grant's
// revocation, and the calls on one driver are sent in admission order.
func (k *Kernel) admit(ctx context.Context, g *gate, m capnp.Method, args capnp.Struct, params []byte, now int64) *admission {
	k.seq.mu.Lock()
	defer k.seq.mu.Unlock()
	var refusal *Error
	switch {
	case g.s.ended:
		refusal = &Error{Op: m.MethodName, Kind: Revoked, Cause: ErrSessionEnded}
	case k.seq.dead[g.grant]:
		refusal = errorf(Revoked, m.MethodName, "%s has ended", g.grant)
	case g.derived:
		// A subscription, a listener: it lives while its grant stands.
		if d := k.seq.table.Live(g.grant, k.unix(now)); !d.OK() {
			refusal = capsError(m.MethodName, d)
		}
	default:
		var cargs []caps.Arg
		if fn := g.f.args[m.MethodID]; fn != nil && args.IsValid() {
			cargs = fn(args)
		}
		if d := k.seq.table.Admit(caps.Call{Grant: g.grant, Method: m.MethodID, Args: cargs, Now: k.unix(now)}); !d.OK() {
			refusal = capsError(m.MethodName, d)
		}
	}
	// What the gate wraps cannot go under us: cut runs under the
	// sequencer's lock (held here), from Shutdown, which waits for the
	// gate's calls to return, or at the session's end, after ended was set
	// under the sequencer's lock (checked above: an ended session admits
	// nothing). So it is used without a reference of our own.
	var target capnp.Client
	if refusal == nil {
		g.mu.Lock()
		target = g.inner
		g.mu.Unlock()
		if target == (capnp.Client{}) {
			refusal = &Error{Op: m.MethodName, Kind: Revoked, Cause: ErrGateReleased}
		}
	}
	e := ledger.Entry{
		Kind: ledger.KindCall, Actor: g.actor, Grant: uint64(g.grant), Device: g.device, Subject: g.s.subject,
		Interface: m.InterfaceID, Method: m.MethodID, Decision: ledger.DecisionAdmit, Time: now, Params: params,
	}
	if refusal != nil {
		e.Decision, e.Reason = ledger.DecisionDeny, truncate(refusal.Error())
	}
	if g.s.ended {
		// A call on an ended session is refused without its params: the
		// session may have ended because its person was forgotten.
		e.Params, e.Subject = nil, ""
	}
	p, err := k.led.Append(ctx, e)
	if err != nil {
		return &admission{err: &Error{Op: m.MethodName, Kind: Failed, Cause: fmt.Errorf("record call: %w", err)}}
	}
	if refusal != nil {
		return &admission{pend: p, err: refusal}
	}
	a := &admission{pend: p}
	a.ctx, a.cancel = context.WithCancelCause(ctx)
	k.seq.fly(g.grant, a)
	send := capnp.Send{Method: m}
	if args.IsValid() {
		send.ArgsSize = args.Size()
		send.PlaceArgs = func(s capnp.Struct) error {
			if err := s.CopyFrom(args); err != nil {
				return err
			}
			g.wrapTable(s.Message().CapTable(), g.dir.flip())
			return nil
		}
	}
	a.ans, a.release = target.SendCall(a.ctx, send)
	return a
}

// call is the gate's handler for every method.
func (g *gate) call(ctx context.Context, m capnp.Method, call *server.Call) error {
	k := g.k
	if g.dir == outward {
		if !g.s.c.enter() {
			return overloaded(m.MethodName)
		}
		defer g.s.c.leave()
	}
	start := k.now().UnixNano()
	ctx, span := k.tel.tracer.Start(ctx, "gate", trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()

	args := call.Args()
	var params []byte
	if args.IsValid() {
		var err error
		if params, err = canonical(args); err != nil {
			return toException(&Error{Op: m.MethodName, Kind: Invalid, Cause: err})
		}
	}
	adm := k.admit(ctx, g, m, args, params, start)
	// Admission fixed the order; later calls on this gate may start.
	g.ordered(call)
	if adm.err != nil {
		if adm.pend != nil {
			if err := adm.pend.Wait(ctx); err != nil {
				return toException(&Error{Op: m.MethodName, Kind: Failed, Cause: fmt.Errorf("record call: %w", err)})
			}
		}
		k.tel.done(ctx, span, g, m, false, adm.err.Error(), start, k.now().UnixNano())
		return toException(adm.err)
	}
	defer adm.release()

	var res capnp.Struct
	var cerr error
	select {
	case <-adm.ans.Done():
		res, cerr = adm.ans.Struct()
	case <-adm.ctx.Done():
		cerr = context.Cause(adm.ctx)
		select {
		case <-adm.ans.Done():
			// The driver answered too: the answer is what happened.
			res, cerr = adm.ans.Struct()
		default:
		}
	}
	// A call the grant's end cut short failed because of it, whether the
	// driver's answer (its context cancelled) or the cancellation came
	// first; an answer that succeeded stands.
	if cerr != nil && errors.Is(context.Cause(adm.ctx), errEnded) {
		cerr = &Error{Op: m.MethodName, Kind: Revoked, Cause: fmt.Errorf("%w (%s)", ErrEndedInFlight, g.grant)}
	}
	k.seq.land(g.grant, adm)
	adm.cancel(nil)
	ret := ledger.Entry{
		Kind: "return", Actor: g.actor, Grant: uint64(g.grant), Device: g.device, Subject: g.s.subject,
		Interface: m.InterfaceID, Method: m.MethodID, Ref: adm.pend.Seq(), Time: k.now().UnixNano(),
	}
	if cerr != nil {
		ret.Reason = truncate(cerr.Error())
	} else if res.IsValid() {
		if ret.Result, cerr = canonical(res); cerr != nil {
			ret.Reason = truncate(cerr.Error())
		}
	}
	// An admitted call's return is recorded even if its caller has gone.
	p, err := k.led.Append(context.WithoutCancel(ctx), ret)
	if err != nil {
		return toException(&Error{Op: m.MethodName, Kind: Failed, Cause: fmt.Errorf("record return: %w", err)})
	}
	if cerr == nil && res.IsValid() {
		out, err := call.AllocResults(res.Size())
		if err == nil {
			err = out.CopyFrom(res)
		}
		if err != nil {
			cerr = err
		} else {
			g.wrapTable(out.Message().CapTable(), g.dir)
		}
	}
	if err := p.Wait(ctx); err != nil {
		return toException(&Error{Op: m.MethodName, Kind: Failed, Cause: fmt.Errorf("record return: %w", err)})
	}
	reason := ""
	if cerr != nil {
		reason = cerr.Error()
	}
	k.tel.done(ctx, span, g, m, true, reason, start, k.now().UnixNano())
	return toException(cerr)
}

// unknown refuses, and records, a call of a method the gate's interface
// does not have.
func (g *gate) unknown(ctx context.Context, m capnp.Method, call *server.Call) error {
	k := g.k
	reason := fmt.Sprintf("unimplemented: %s has no method %s (interface %#x, method %d)", g.f.name, m.MethodName, m.InterfaceID, m.MethodID)
	now := k.now().UnixNano()
	k.seq.mu.Lock()
	p, err := k.led.Append(ctx, ledger.Entry{
		Kind: ledger.KindCall, Actor: g.actor, Grant: uint64(g.grant), Device: g.device, Subject: g.s.subject,
		Interface: m.InterfaceID, Method: m.MethodID, Decision: ledger.DecisionDeny, Reason: truncate(reason), Time: now,
	})
	k.seq.mu.Unlock()
	g.ordered(call)
	if err == nil {
		err = p.Wait(ctx)
	}
	if err != nil {
		return toException(&Error{Op: m.MethodName, Kind: Failed, Cause: fmt.Errorf("record call: %w", err)})
	}
	return capnp.Unimplemented(reason)
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
