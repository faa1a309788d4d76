package kernel_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/osmose-os/osmose/caps"
	"github.com/osmose-os/osmose/internal/topology"
	"github.com/osmose-os/osmose/kernel"
	"github.com/osmose-os/osmose/kernel/kerneltest"
	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
)

const seed = "kernel-test"

// leaks collects capnp clients that were garbage collected unreleased.
var leaks leakLog

type leakLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *leakLog) add(m string) {
	l.mu.Lock()
	l.msgs = append(l.msgs, m)
	l.mu.Unlock()
}

type harness struct {
	t      *testing.T
	k      *kernel.Kernel
	led    *ledger.Ledger
	top    *topology.Topology
	fakes  *kerneltest.Fakes
	clock  *kerneltest.Clock
	spans  *tracetest.InMemoryExporter
	sock   string
	cancel context.CancelFunc
	served chan struct{}
	stop   func() // ends the kernel, closes the ledger and its store; once
}

type option func(*kernel.Config)

// newHarness starts a kernel on a Badger ledger in a temp dir, serving a
// Unix socket, with fake drivers for a Building of rooms rooms.
func newHarness(t *testing.T, rooms int, opts ...option) *harness {
	t.Helper()
	return newHarnessAt(t, t.TempDir(), rooms, opts...)
}

// newHarnessAt is newHarness on the data directory dir, which may hold the
// ledger of an earlier harness (stopped).
func newHarnessAt(t *testing.T, dir string, rooms int, opts ...option) *harness {
	t.Helper()
	store, err := ledger.OpenBadger(filepath.Join(dir, "ledger"), ledger.BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	clock := kerneltest.NewClock(time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC))
	led, err := ledger.Open(context.Background(), store, ledger.Options{
		Key: kerneltest.Key(seed, "kernel"), Origin: "osmose/test", GenesisTime: clock.Now().UnixNano(),
	})
	if err != nil {
		t.Fatal(err)
	}
	top := kerneltest.Building(seed, rooms)
	fakes := kerneltest.NewFakes(top, clock.Now)
	spans := tracetest.NewInMemoryExporter()
	cfg := kernel.Config{
		Ledger: led, Topology: top, Now: clock.Now, Rand: bytes.NewReader(bytes.Repeat([]byte{7}, 1<<24)),
		Policy:         []caps.PolicyFile{{Name: "test.cedar", Text: kerneltest.Policy}},
		Drivers:        fakes.Drivers(),
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans)),
	}
	for _, o := range opts {
		o(&cfg)
	}
	k, err := kernel.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "k.sock")
	os.Remove(sock) // left by an earlier harness on dir
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, k: k, led: led, top: top, fakes: fakes, clock: clock, spans: spans, sock: sock, cancel: cancel, served: make(chan struct{})}
	go func() {
		defer close(h.served)
		if err := k.Serve(ctx, l); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			<-h.served
			if err := k.Close(); err != nil {
				t.Error(err)
			}
			if err := led.Close(); err != nil {
				t.Error(err)
			}
			if err := store.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(h.stop)
	return h
}

// device is one logged-in device program.
type device struct {
	c    *kerneltest.Client
	sess schema.Session
}

func (h *harness) login(id string) *device {
	h.t.Helper()
	ctx := context.Background()
	c, err := kerneltest.Dial(ctx, "unix", h.sock)
	if err != nil {
		h.t.Fatal(err)
	}
	s, err := kerneltest.Login(ctx, c.Gateway, h.k.ID(), id, kerneltest.Key(seed, id))
	if err != nil {
		c.Close()
		h.t.Fatalf("login %s: %v", id, err)
	}
	d := &device{c: c, sess: s}
	h.t.Cleanup(d.close)
	return d
}

func (d *device) close() {
	d.sess.Release()
	d.c.Close()
}

// open opens one capability and returns it with its grant id.
func (h *harness) open(d *device, path string) (capnp.Client, string) {
	h.t.Helper()
	cs, ids, err := kerneltest.Open(context.Background(), d.sess, path)
	if err != nil {
		h.t.Fatalf("open %s: %v", path, err)
	}
	if len(cs) != 1 {
		h.t.Fatalf("open %s: %d capabilities", path, len(cs))
	}
	h.t.Cleanup(cs[0].Release)
	return cs[0], ids[0]
}

func setLevel(l schema.Light, level uint8) error {
	f, rel := l.SetLevel(context.Background(), func(p schema.Light_setLevel_Params) error {
		p.SetLevel(level)
		return nil
	})
	defer rel()
	_, err := f.Struct()
	return err
}

// entries reads the ledger from seq from to its durable end.
func (h *harness) entries(from uint64) []*ledger.Record {
	h.t.Helper()
	var out []*ledger.Record
	for s := from; s < uint64(h.led.Size()); s++ {
		r, err := h.led.Read(context.Background(), s)
		if err != nil {
			h.t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func kinds(rs []*ledger.Record) string {
	var b []string
	for _, r := range rs {
		e := r.Envelope
		s := string(e.Kind)
		if e.Decision != "" {
			s += "/" + string(e.Decision)
		}
		b = append(b, s)
	}
	return strings.Join(b, " ")
}

func TestEndToEnd(t *testing.T) {
	h := newHarness(t, 2)
	start := uint64(h.led.Size())
	const me = "cam/pem/f1/r1/light-1"
	const target = "cam/pem/f1/r1/light-2"
	d := h.login(me)
	c, grant := h.open(d, target)
	light := schema.Light(c)
	if err := setLevel(light, 40); err != nil {
		t.Fatal(err)
	}
	f, rel := light.State(context.Background(), nil)
	st, err := f.Struct()
	if err != nil {
		t.Fatal(err)
	}
	ls, _ := st.State()
	if !ls.On() || ls.Level() != 40 {
		t.Errorf("state on=%v level=%d, want on at 40", ls.On(), ls.Level())
	}
	rel()
	if on, level, _ := h.fakes.Lights[target].State(); !on || level != 40 {
		t.Errorf("driver: on=%v level=%d", on, level)
	}

	rs := h.entries(start)
	if got, want := kinds(rs), "login/admit grant/admit call/admit return call/admit return"; got != want {
		t.Fatalf("ledger kinds:\n got %s\nwant %s", got, want)
	}
	login, gr, call, ret := rs[0].Envelope, rs[1].Envelope, rs[2].Envelope, rs[3].Envelope
	if login.Actor != me {
		t.Errorf("login actor %q", login.Actor)
	}
	if gr.Actor != me || gr.Device != target || gr.Interface != schema.Light_TypeID || fmt.Sprintf("g%d", gr.Grant) != grant {
		t.Errorf("grant entry %+v, grant %s", gr, grant)
	}
	// The grant's body is the schema Grant.
	gm, err := kerneltest.ReadBody(rs[1].Result())
	if err != nil {
		t.Fatal(err)
	}
	sg, err := schema.ReadRootGrant(gm)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := sg.Id(); id != grant {
		t.Errorf("grant body id %q, want %q", id, grant)
	}
	if sum, _ := sg.CaveatsSummary(); !strings.Contains(sum, "level=0..80") {
		t.Errorf("grant caveats %q, want the policy's level range", sum)
	}
	if call.Method != 1 || call.Grant != gr.Grant || call.Actor != me || call.Decision != ledger.DecisionAdmit {
		t.Errorf("call entry %+v", call)
	}
	pm, err := kerneltest.ReadBody(rs[2].Params())
	if err != nil {
		t.Fatal(err)
	}
	pp, err := schema.ReadRootLight_setLevel_Params(pm)
	if err != nil || pp.Level() != 40 {
		t.Errorf("call params level=%d err=%v", pp.Level(), err)
	}
	if ret.Kind != "return" || ret.Ref != call.Seq || ret.Grant != gr.Grant {
		t.Errorf("return entry %+v (call seq %d)", ret, call.Seq)
	}
	// The state call's result is on the ledger.
	rm, err := kerneltest.ReadBody(rs[5].Result())
	if err != nil {
		t.Fatal(err)
	}
	sr, err := schema.ReadRootLight_state_Results(rm)
	if err != nil {
		t.Fatal(err)
	}
	if rst, _ := sr.State(); rst.Level() != 40 {
		t.Errorf("state result level %d", rst.Level())
	}

	// One span per gated call.
	var gated int
	for _, s := range h.spans.GetSpans() {
		if strings.HasPrefix(s.Name, "gate Light.") {
			gated++
		}
	}
	if gated != 2 {
		t.Errorf("%d gate spans, want 2", gated)
	}

	// A second open reuses the grant, and whoAmI and list see it.
	_, grant2 := h.open(d, target)
	if grant2 != grant {
		t.Errorf("second open gave %s, want %s", grant2, grant)
	}
	lf, lrel := d.sess.List(context.Background(), nil)
	lr, err := lf.Struct()
	if err != nil {
		t.Fatal(err)
	}
	gl, _ := lr.Grants()
	if gl.Len() != 1 {
		t.Errorf("list: %d grants", gl.Len())
	}
	lrel()
}

// TestPipelinedCalls: calls a program sends on one capability without
// waiting are all answered, admitted and recorded in the order sent, and
// reach the driver in that order.
func TestPipelinedCalls(t *testing.T) {
	h := newHarness(t, 2)
	const target = "cam/pem/f1/r1/light-2"
	d := h.login("cam/pem/f1/r1/light-1")
	c, _ := h.open(d, target)
	light := schema.Light(c)
	start := uint64(h.led.Size())
	const n = 100
	var futs []schema.Light_setLevel_Results_Future
	var rels []capnp.ReleaseFunc
	for i := range n {
		f, rel := light.SetLevel(context.Background(), func(p schema.Light_setLevel_Params) error {
			p.SetLevel(uint8(1 + i%80))
			return nil
		})
		futs, rels = append(futs, f), append(rels, rel)
	}
	for i, f := range futs {
		if _, err := f.Struct(); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		rels[i]()
	}
	if _, level, calls := h.fakes.Lights[target].State(); level != uint8(1+(n-1)%80) || calls != n {
		t.Errorf("driver: level %d after %d calls, want %d after %d", level, calls, 1+(n-1)%80, n)
	}
	var levels []uint8
	calls := map[uint64]bool{}
	for _, r := range h.entries(start) {
		switch e := r.Envelope; e.Kind {
		case ledger.KindCall:
			levels = append(levels, setLevelOf(t, r))
			calls[e.Seq] = true
		case "return":
			if !calls[e.Ref] {
				t.Errorf("return %d refers to %d, not an earlier call", e.Seq, e.Ref)
			}
		}
	}
	if len(levels) != n {
		t.Fatalf("%d call entries, want %d", len(levels), n)
	}
	for i, lv := range levels {
		if lv != uint8(1+i%80) {
			t.Fatalf("call entry %d has level %d, want %d: admitted out of order", i, lv, 1+i%80)
		}
	}
}

func TestDenied(t *testing.T) {
	h := newHarness(t, 2)
	const target = "cam/pem/f1/r1/light-2"
	d := h.login("cam/pem/f1/r1/occupancy")
	c, _ := h.open(d, target)
	start := uint64(h.led.Size())
	err := setLevel(schema.Light(c), 90)
	if err == nil || !strings.Contains(err.Error(), "permission: setLevel: ") {
		t.Fatalf("setLevel(90): %v, want a permission error", err)
	}
	if _, _, calls := h.fakes.Lights[target].State(); calls != 0 {
		t.Errorf("driver saw %d calls", calls)
	}
	rs := h.entries(start)
	if got := kinds(rs); got != "call/deny" {
		t.Fatalf("ledger: %s", got)
	}
	if e := rs[0].Envelope; !strings.Contains(e.Reason, "level") || !strings.HasSuffix(err.Error(), e.Reason) {
		t.Errorf("deny reason %q, caller got %q", e.Reason, err)
	}

	// Another room's device: the policy grants nothing.
	_, _, err = kerneltest.Open(context.Background(), d.sess, "cam/pem/f1/r2/light-1")
	if err == nil || !strings.Contains(err.Error(), "permission: open: ") {
		t.Errorf("open other room: %v", err)
	}
	// Unknown path.
	_, _, err = kerneltest.Open(context.Background(), d.sess, "cam/nowhere")
	if err == nil || !strings.Contains(err.Error(), "not-exist: ") {
		t.Errorf("open unknown: %v", err)
	}
	// A place gives every device of it the policy allows.
	cs, _, err := kerneltest.Open(context.Background(), d.sess, "cam/pem/f1", schema.DeviceClass_light)
	if err != nil || len(cs) != 2 {
		t.Errorf("open floor lights: %d, %v", len(cs), err)
	}
	for _, c := range cs {
		c.Release()
	}
}

func TestUnknownMethod(t *testing.T) {
	h := newHarness(t, 1)
	d := h.login("cam/pem/f1/r1/light-1")
	c, _ := h.open(d, "cam/pem/f1/r1/light-2")
	start := uint64(h.led.Size())
	for _, m := range []capnp.Method{
		{InterfaceID: schema.Light_TypeID, MethodID: 9},
		{InterfaceID: schema.DoorLock_TypeID, MethodID: 1}, // a lock method on a light
	} {
		f, rel := c.SendCall(context.Background(), capnp.Send{Method: m})
		_, err := f.Struct()
		rel()
		if err == nil || !capnp.IsUnimplemented(err) {
			t.Errorf("%v: %v, want unimplemented", m, err)
		}
	}
	if got := kinds(h.entries(start)); got != "call/deny call/deny" {
		t.Errorf("ledger: %s", got)
	}
}

func TestReleaseAndRevoke(t *testing.T) {
	h := newHarness(t, 1)
	d := h.login("cam/pem/f1/r1/light-1")
	c, grant := h.open(d, "cam/pem/f1/r1/light-2")
	light := schema.Light(c)
	if err := setLevel(light, 10); err != nil {
		t.Fatal(err)
	}
	// Delegate to the app, which calls; then revoke the delegation.
	df, drel := d.sess.Delegate(context.Background(), func(p schema.Session_delegate_Params) error {
		p.SetGrant(grant)
		return p.SetTo("scenes")
	})
	dr, err := df.Struct()
	if err != nil {
		t.Fatalf("delegate: %v", err)
	}
	child, _ := dr.Grant()
	childID, _ := child.Id()
	drel()
	app := h.login("scenes")
	ac, _ := h.open(app, "cam/pem/f1/r1/light-2")
	if err := setLevel(schema.Light(ac), 20); err != nil {
		t.Fatalf("app call: %v", err)
	}
	rf, rrel := d.sess.Revoke(context.Background(), func(p schema.Session_revoke_Params) error { return p.SetGrant(childID) })
	if _, err := rf.Struct(); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	rrel()
	if err := setLevel(schema.Light(ac), 20); err == nil || !strings.Contains(err.Error(), "revoked: ") {
		t.Errorf("app call after revoke: %v", err)
	}
	// The holder's own grant still works; then release it.
	if err := setLevel(light, 30); err != nil {
		t.Fatal(err)
	}
	f, rel := d.sess.ReleaseGrant(context.Background(), func(p schema.Session_releaseGrant_Params) error { return p.SetGrant(grant) })
	if _, err := f.Struct(); err != nil {
		t.Fatalf("release: %v", err)
	}
	rel()
	if err := setLevel(light, 30); err == nil || !strings.Contains(err.Error(), "revoked: ") {
		t.Errorf("call after release: %v", err)
	}
	var revokes, releases int
	for _, r := range h.entries(0) {
		switch r.Envelope.Kind {
		case ledger.KindRevoke:
			revokes++
		case ledger.KindRelease:
			releases++
		}
	}
	if revokes != 1 || releases != 1 {
		t.Errorf("%d revoke and %d release entries", revokes, releases)
	}
}

// listener is a program's ReadingListener.
type listener struct{ got chan float64 }

func (l *listener) Reading(ctx context.Context, call schema.ReadingListener_reading) error {
	r, err := call.Args().Reading()
	if err != nil {
		return err
	}
	l.got <- r.Value()
	return nil
}

func TestSubscription(t *testing.T) {
	h := newHarness(t, 1)
	const sensor = "cam/pem/f1/r1/occupancy"
	d := h.login("cam/pem/f1/r1/light-1")
	c, _ := h.open(d, sensor)
	l := &listener{got: make(chan float64, 4)}
	f, rel := schema.Sensor(c).Subscribe(context.Background(), func(p schema.Sensor_subscribe_Params) error {
		return p.SetListener(schema.ReadingListener_ServerToClient(l))
	})
	res, err := f.Struct()
	if err != nil {
		t.Fatal(err)
	}
	sub := res.Subscription().AddRef()
	rel()
	fake := h.fakes.Sensors[sensor]
	start := uint64(h.led.Size())
	if err := fake.Publish(context.Background(), 3); err != nil {
		t.Fatal(err)
	}
	if v := <-l.got; v != 3 {
		t.Errorf("reading %v", v)
	}
	rs := h.entries(start)
	if got := kinds(rs); got != "call/admit return" {
		t.Fatalf("ledger: %s", got)
	}
	if e := rs[0].Envelope; e.Actor != sensor || e.Interface != schema.ReadingListener_TypeID {
		t.Errorf("listener call entry %+v", e)
	}
	// reading() returns nothing: its return entry has no result body.
	if e := rs[1].Envelope; e.Result.Defined() || rs[1].ResultBlock != nil {
		t.Errorf("listener return entry has a result body: %+v", e)
	}
	// Cancelling goes through a gate too, and stops deliveries.
	cf, crel := sub.Cancel(context.Background(), nil)
	if _, err := cf.Struct(); err != nil {
		t.Fatal(err)
	}
	crel()
	sub.Release()
	if n := fake.Subscribers(); n != 0 {
		t.Errorf("%d subscribers after cancel", n)
	}
}

// TestPipelinedOnAnswer: a call made on a capability of a gated call's
// results before those results arrive (promise pipelining) waits for
// them, then goes through the results' gate and onto the ledger.
func TestPipelinedOnAnswer(t *testing.T) {
	h := newHarness(t, 1)
	const sensor = "cam/pem/f1/r1/occupancy"
	d := h.login("cam/pem/f1/r1/light-1")
	c, _ := h.open(d, sensor)
	start := uint64(h.led.Size())
	l := &listener{got: make(chan float64, 4)}
	f, rel := schema.Sensor(c).Subscribe(context.Background(), func(p schema.Sensor_subscribe_Params) error {
		return p.SetListener(schema.ReadingListener_ServerToClient(l))
	})
	// Sent before the subscribe call is answered.
	cf, crel := f.Subscription().Cancel(context.Background(), nil)
	if _, err := cf.Struct(); err != nil {
		t.Fatal(err)
	}
	crel()
	if _, err := f.Struct(); err != nil {
		t.Fatal(err)
	}
	rel()
	if n := h.fakes.Sensors[sensor].Subscribers(); n != 0 {
		t.Errorf("%d subscribers after a pipelined cancel", n)
	}
	rs := h.entries(start)
	var methods []string
	for _, r := range rs {
		if r.Envelope.Kind == ledger.KindCall {
			methods = append(methods, fmt.Sprintf("%#x.%d", r.Envelope.Interface, r.Envelope.Method))
		}
	}
	want := []string{fmt.Sprintf("%#x.1", uint64(schema.Sensor_TypeID)), fmt.Sprintf("%#x.0", uint64(schema.Subscription_TypeID))}
	if fmt.Sprint(methods) != fmt.Sprint(want) {
		t.Errorf("calls on the ledger %v, want %v (%s)", methods, want, kinds(rs))
	}
}

func TestSubscriptionEndsWithGrant(t *testing.T) {
	h := newHarness(t, 1)
	const sensor = "cam/pem/f1/r1/occupancy"
	d := h.login("cam/pem/f1/r1/light-1")
	c, grant := h.open(d, sensor)
	l := &listener{got: make(chan float64, 4)}
	f, rel := schema.Sensor(c).Subscribe(context.Background(), func(p schema.Sensor_subscribe_Params) error {
		return p.SetListener(schema.ReadingListener_ServerToClient(l))
	})
	if _, err := f.Struct(); err != nil {
		t.Fatal(err)
	}
	rel()
	fake := h.fakes.Sensors[sensor]
	rf, rrel := d.sess.ReleaseGrant(context.Background(), func(p schema.Session_releaseGrant_Params) error { return p.SetGrant(grant) })
	if _, err := rf.Struct(); err != nil {
		t.Fatal(err)
	}
	rrel()
	// The release cut the subscription gate, so the driver's subscription
	// was released.
	if n := fake.Subscribers(); n != 0 {
		t.Errorf("%d subscribers after the grant ended", n)
	}
}

func TestLoginFailures(t *testing.T) {
	h := newHarness(t, 1)
	ctx := context.Background()
	c, err := kerneltest.Dial(ctx, "unix", h.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := uint64(h.led.Size())
	wrong := ed25519.NewKeyFromSeed(make([]byte, 32))
	if _, err := kerneltest.Login(ctx, c.Gateway, h.k.ID(), "cam/pem/f1/r1/light-1", wrong); err == nil ||
		!strings.Contains(err.Error(), "permission: login: login failed") {
		t.Errorf("wrong key: %v", err)
	}
	if _, err := kerneltest.Login(ctx, c.Gateway, h.k.ID(), "nobody", wrong); err == nil ||
		!strings.Contains(err.Error(), "permission: login: login failed") {
		t.Errorf("unknown principal: %v", err)
	}
	// A replayed nonce.
	lf, rel := c.Gateway.Login(ctx, func(p schema.Gateway_login_Params) error {
		p.SetPrincipal("op")
		p.SetNonce(make([]byte, 32))
		return p.SetSignature(make([]byte, 64))
	})
	if _, err := lf.Struct(); err == nil || !strings.Contains(err.Error(), "permission") {
		t.Errorf("never-issued nonce: %v", err)
	}
	rel()
	lf, rel = c.Gateway.Login(ctx, func(p schema.Gateway_login_Params) error {
		p.SetPrincipal("op")
		p.SetNonce(make([]byte, 5))
		return p.SetSignature(make([]byte, 64))
	})
	if _, err := lf.Struct(); err == nil || !strings.Contains(err.Error(), "invalid: login: nonce is 5 bytes") {
		t.Errorf("short nonce: %v", err)
	}
	rel()
	rs := h.entries(start)
	if got := kinds(rs); got != "login/deny login/deny login/deny login/deny" {
		t.Fatalf("ledger: %s", got)
	}
	for i, want := range []string{"bad signature", "unknown principal", "unknown or used nonce", "nonce is 5 bytes"} {
		if !strings.Contains(rs[i].Envelope.Reason, want) {
			t.Errorf("entry %d reason %q, want %q", i, rs[i].Envelope.Reason, want)
		}
	}
	// The same connection can still log in.
	s, err := kerneltest.Login(ctx, c.Gateway, h.k.ID(), "op", kerneltest.Key(seed, "op"))
	if err != nil {
		t.Fatal(err)
	}
	s.Release()
}

// blockingLight is a light driver whose calls wait for release.
type blockingLight struct {
	arrived chan struct{}
	release chan struct{}
}

func (b *blockingLight) Set(ctx context.Context, call schema.Light_set) error {
	call.Go()
	b.arrived <- struct{}{}
	<-b.release
	return nil
}
func (b *blockingLight) SetLevel(ctx context.Context, call schema.Light_setLevel) error { return nil }
func (b *blockingLight) State(ctx context.Context, call schema.Light_state) error       { return nil }

func TestOverloaded(t *testing.T) {
	const target = "cam/pem/f1/r1/light-2"
	b := &blockingLight{arrived: make(chan struct{}, 8), release: make(chan struct{})}
	h := newHarness(t, 1, func(c *kernel.Config) {
		c.MaxInFlight = 2
		c.Drivers[target].Release()
		c.Drivers[target] = capnp.Client(schema.Light_ServerToClient(b))
	})
	d := h.login("cam/pem/f1/r1/light-1")
	c, _ := h.open(d, target)
	light := schema.Light(c)
	set := func() (schema.Light_set_Results_Future, capnp.ReleaseFunc) {
		return light.Set(context.Background(), func(p schema.Light_set_Params) error { p.SetOn(true); return nil })
	}
	f1, r1 := set()
	f2, r2 := set()
	<-b.arrived
	<-b.arrived
	f3, r3 := set()
	_, err := f3.Struct()
	r3()
	if err == nil || !strings.Contains(err.Error(), "overloaded: ") || !exc.IsType(err, exc.Overloaded) {
		t.Errorf("third call: %v, want an overloaded exception", err)
	}
	close(b.release)
	for _, f := range []schema.Light_set_Results_Future{f1, f2} {
		if _, err := f.Struct(); err != nil {
			t.Error(err)
		}
	}
	r1()
	r2()
}

func TestSessionEndsOnDisconnect(t *testing.T) {
	h := newHarness(t, 1)
	d := h.login("cam/pem/f1/r1/light-1")
	h.open(d, "cam/pem/f1/r1/light-2")
	d.c.Close()
	// Wait for the kernel to notice: the session's end. Closing the rpc
	// connection may send the session's release before the connection
	// goes down, so the kernel may see a logout rather than a disconnect.
	h.waitEntry(func(e *ledger.Envelope) bool {
		return (e.Kind == "disconnect" || e.Kind == "logout") && e.Actor == "cam/pem/f1/r1/light-1"
	})
	// Everyone else is served.
	d2 := h.login("cam/pem/f1/r1/light-2")
	c, _ := h.open(d2, "cam/pem/f1/r1/light-1")
	if err := setLevel(schema.Light(c), 5); err != nil {
		t.Fatal(err)
	}
}

// TestLogout: a program that logs out ends its session with a "logout"
// entry, durable when logout returns, whatever it does next; its
// capabilities stop working.
func TestLogout(t *testing.T) {
	h := newHarness(t, 1)
	const me = "cam/pem/f1/r1/light-1"
	d := h.login(me)
	c, _ := h.open(d, "cam/pem/f1/r1/light-2")
	f, rel := d.sess.Logout(context.Background(), nil)
	if _, err := f.Struct(); err != nil {
		t.Fatal(err)
	}
	rel()
	last, err := h.led.Read(context.Background(), uint64(h.led.Size()-1))
	if err != nil {
		t.Fatal(err)
	}
	if e := last.Envelope; e.Kind != "logout" || e.Actor != me {
		t.Errorf("last entry %+v, want %s's logout", e, me)
	}
	wantErr(t, "call after logout", setLevel(schema.Light(c), 5), "session ended")
	f2, rel2 := d.sess.Logout(context.Background(), nil)
	_, err = f2.Struct()
	rel2()
	wantErr(t, "second logout", err, "session ended")
	// Closing now records nothing more for the session.
	size := h.led.Size()
	c.Release()
	d.c.Close()
	d2 := h.login("cam/pem/f1/r1/light-2") // a later entry, once the close is seen
	_ = d2
	for _, r := range h.entries(uint64(size)) {
		if e := r.Envelope; e.Actor == me {
			t.Errorf("entry after logout: %+v", e)
		}
	}
}

// waitEntry waits until the ledger holds an entry that match accepts,
// blocking on the ledger's growth (WaitSize) between looks.
func (h *harness) waitEntry(match func(*ledger.Envelope) bool) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var seen uint64
	for {
		size := h.led.Size()
		for _, r := range h.entries(seen) {
			if match(r.Envelope) {
				return
			}
		}
		seen = uint64(size)
		if _, err := h.led.WaitSize(ctx, size); err != nil {
			h.t.Fatalf("no matching entry: %v", err)
		}
	}
}

// TestSubscriptionEndsWithExpiry: readings stop reaching a program once
// the grant it subscribed through has expired; the refusal is on the
// ledger.
func TestSubscriptionEndsWithExpiry(t *testing.T) {
	h := newHarness(t, 1)
	const sensor = "cam/pem/f1/r1/occupancy"
	d := h.login("cam/pem/f1/r1/light-1")
	ctx := context.Background()
	of, orel := d.sess.Open(ctx, func(p schema.Session_open_Params) error {
		if err := p.SetPath(sensor); err != nil {
			return err
		}
		cav, err := p.NewCaveats()
		if err != nil {
			return err
		}
		cav.SetExpiresAt(h.clock.Now().Add(time.Minute).UnixNano())
		return nil
	})
	ores, err := of.Struct()
	if err != nil {
		t.Fatal(err)
	}
	held, err := ores.Caps()
	if err != nil || held.Len() != 1 {
		t.Fatalf("open: %d caps, %v", held.Len(), err)
	}
	c := held.At(0).Cap().AddRef()
	orel()
	defer c.Release()
	l := &listener{got: make(chan float64, 4)}
	f, rel := schema.Sensor(c).Subscribe(ctx, func(p schema.Sensor_subscribe_Params) error {
		return p.SetListener(schema.ReadingListener_ServerToClient(l))
	})
	if _, err := f.Struct(); err != nil {
		t.Fatal(err)
	}
	rel()
	fake := h.fakes.Sensors[sensor]
	if err := fake.Publish(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if v := <-l.got; v != 3 {
		t.Fatalf("reading %v", v)
	}
	h.clock.Advance(2 * time.Minute)
	start := uint64(h.led.Size())
	fake.Publish(ctx, 4) // the listener's gate refuses it
	rs := h.entries(start)
	if got := kinds(rs); got != "call/deny" {
		t.Fatalf("ledger after expiry: %s", got)
	}
	if e := rs[0].Envelope; e.Actor != sensor || !strings.Contains(e.Reason, "expired") {
		t.Errorf("refusal %+v", e)
	}
	select {
	case v := <-l.got:
		t.Fatalf("reading %v delivered after the grant expired", v)
	default:
	}
}

// setLevelOf returns the level of a recorded Light.setLevel call.
func setLevelOf(t *testing.T, r *ledger.Record) uint8 {
	t.Helper()
	pm, err := kerneltest.ReadBody(r.Params())
	if err != nil {
		t.Fatal(err)
	}
	pp, err := schema.ReadRootLight_setLevel_Params(pm)
	if err != nil {
		t.Fatal(err)
	}
	return pp.Level()
}
