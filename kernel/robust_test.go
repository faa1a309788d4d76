package kernel_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
	ds "github.com/ipfs/go-datastore"

	"github.com/osmose-os/osmose/caps"
	"github.com/osmose-os/osmose/kernel"
	"github.com/osmose-os/osmose/kernel/kerneltest"
	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
)

// TestMain reports capnp clients that were never released. Leak
// reporting records a stack trace per client, so benchmarks run without it.
func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		capnp.SetClientLeakFunc(func(msg string) { leaks.add(msg) })
	}
	code := m.Run()
	runtime.GC()
	runtime.GC()
	leaks.mu.Lock()
	var ours []string
	for _, m := range leaks.msgs {
		// go-capnp v3.1.0-alpha.2 keeps the snapshots of a return's
		// capabilities when its connection shuts down while the return is
		// being prepared; that one is upstream's, not the kernel's.
		if !strings.Contains(m, "rpc.(*ansent).prepareSendReturn") {
			ours = append(ours, m)
		}
	}
	if len(ours) > 0 {
		fmt.Fprintf(os.Stderr, "%d capnp clients leaked; first:\n%s\n", len(ours), ours[0])
		code = 1
	}
	leaks.mu.Unlock()
	os.Exit(code)
}

// rpcMessage builds one framed rpc message.
func rpcMessage(t testing.TB, build func(rpccp.Message, *capnp.Segment) error) []byte {
	t.Helper()
	msg, seg := capnp.NewSingleSegmentMessage(nil)
	m, err := rpccp.NewRootMessage(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := build(m, seg); err != nil {
		t.Fatal(err)
	}
	b, err := msg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// forgedCall is a call on capability id 42, which the kernel never
// exported.
func forgedCall(t testing.TB) []byte {
	return rpcMessage(t, func(m rpccp.Message, seg *capnp.Segment) error {
		call, err := m.NewCall()
		if err != nil {
			return err
		}
		call.SetQuestionId(1)
		tgt, err := call.NewTarget()
		if err != nil {
			return err
		}
		tgt.SetImportedCap(42)
		call.SetInterfaceId(schema.Light_TypeID)
		call.SetMethodId(1)
		p, err := call.NewParams()
		if err != nil {
			return err
		}
		st, err := capnp.NewStruct(seg, capnp.ObjectSize{DataSize: 8})
		if err != nil {
			return err
		}
		return p.SetContent(st.ToPtr())
	})
}

func TestHostilePeers(t *testing.T) {
	h := newHarness(t, 1)
	oversized := make([]byte, 8)
	binary.LittleEndian.PutUint32(oversized[4:], 1<<26) // one segment of 512 MiB
	for _, tc := range []struct {
		name   string
		send   []byte
		reason string // in the disconnect entry and the abort
	}{
		{"garbage", bytes.Repeat([]byte{0xff}, 64), "invalid: frame: "},
		{"oversized", oversized, "invalid: frame: decode: message too large"},
		{"forged capability", forgedCall(t), "unknown export ID"},
		{"not a message", append([]byte{0, 0, 0, 0, 2, 0, 0, 0}, bytes.Repeat([]byte{0xee}, 16)...), "invalid: rpc: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := net.Dial("unix", h.sock)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if _, err := nc.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			// The kernel answers with an abort naming the problem, then
			// closes the connection.
			msg, err := capnp.NewDecoder(nc).Decode()
			if err != nil {
				t.Fatalf("read abort: %v", err)
			}
			m, err := rpccp.ReadRootMessage(msg)
			if err != nil || m.Which() != rpccp.Message_Which_abort {
				t.Fatalf("got %v (%v), want an abort", m.Which(), err)
			}
			a, _ := m.Abort()
			if r, _ := a.Reason(); !strings.Contains(r, strings.TrimPrefix(strings.TrimPrefix(tc.reason, "invalid: frame: "), "invalid: rpc: ")) {
				t.Errorf("abort reason %q, want %q", r, tc.reason)
			}
			h.waitEntry(func(e *ledger.Envelope) bool {
				return e.Kind == "disconnect" && strings.Contains(e.Reason, tc.reason)
			})
			// Everyone else is still served.
			d := h.login("cam/pem/f1/r1/light-1")
			c, _ := h.open(d, "cam/pem/f1/r1/light-2")
			if err := setLevel(schema.Light(c), 1); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestThousandConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 connections")
	}
	const n = 1000
	h := newHarness(t, (n+len(kerneltest.RoomDevices)-1)/len(kerneltest.RoomDevices))
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := uint64(h.led.Size())

	ctx := context.Background()
	devices := h.top.Devices[:n]
	var ready, done sync.WaitGroup
	ready.Add(n)
	done.Add(n)
	release := make(chan struct{})
	errs := make(chan error, n)
	for _, d := range devices {
		go func() {
			defer done.Done()
			err := func() error {
				c, err := kerneltest.Dial(ctx, "unix", h.sock)
				if err != nil {
					ready.Done()
					return err
				}
				defer c.Close()
				s, err := kerneltest.Login(ctx, c.Gateway, h.k.ID(), d.Path, kerneltest.Key(seed, d.Path))
				if err != nil {
					ready.Done()
					return fmt.Errorf("%s: %w", d.Path, err)
				}
				defer s.Release()
				cs, _, err := kerneltest.Open(ctx, s, d.Place()+"/light-1")
				if err != nil {
					ready.Done()
					return fmt.Errorf("%s: open: %w", d.Path, err)
				}
				defer cs[0].Release()
				err = setLevel(schema.Light(cs[0]), 50)
				ready.Done()
				<-release // hold the connection while the others connect
				return err
			}()
			if err != nil {
				errs <- err
			}
		}()
	}
	ready.Wait()
	var during runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&during)
	conns := h.k.Conns()
	close(release)
	done.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if conns != n {
		t.Errorf("kernel served %d connections at once, want %d", conns, n)
	}
	heap := int64(during.HeapInuse) - int64(before.HeapInuse)
	t.Logf("%d connections: heap in use grew by %.1f MiB (%.1f KiB per connection, client side included); goroutines %d",
		n, float64(heap)/(1<<20), float64(heap)/1024/n, runtime.NumGoroutine())

	var logins, grants, calls, returns int
	for _, r := range h.entries(start) {
		switch r.Envelope.Kind {
		case ledger.KindLogin:
			logins++
		case ledger.KindGrant:
			grants++
		case ledger.KindCall:
			calls++
		case "return":
			returns++
		}
	}
	if logins != n || grants != n || calls != n || returns != n {
		t.Errorf("ledger: %d logins, %d grants, %d calls, %d returns; want %d each", logins, grants, calls, returns, n)
	}
	// Every session ends as its connection closes.
	ended := 0
	h.waitEntry(func(e *ledger.Envelope) bool {
		if e.Seq >= start && (e.Kind == "disconnect" || e.Kind == "logout") {
			ended++
		}
		return ended == n
	})
}

// heldStore holds every Sync while held is set.
type heldStore struct {
	ledger.Store
	mu   sync.Mutex
	held chan struct{} // closed to release; nil when not held
}

func (s *heldStore) hold() {
	s.mu.Lock()
	s.held = make(chan struct{})
	s.mu.Unlock()
}

func (s *heldStore) release() {
	s.mu.Lock()
	close(s.held)
	s.held = nil
	s.mu.Unlock()
}

func (s *heldStore) Sync(ctx context.Context, k ds.Key) error {
	s.mu.Lock()
	held := s.held
	s.mu.Unlock()
	if held != nil {
		<-held
	}
	return s.Store.Sync(ctx, k)
}

// heldKernel is a kernel serving on a Unix socket over a ledger whose
// fsync the test holds (heldStore), with room for maxPending entries.
type heldKernel struct {
	k     *kernel.Kernel
	led   *ledger.Ledger
	store *heldStore
	fakes *kerneltest.Fakes
	sock  string
}

func newHeldKernel(t *testing.T, maxPending int, config func(*kernel.Config)) *heldKernel {
	t.Helper()
	dir := t.TempDir()
	badger, err := ledger.OpenBadger(filepath.Join(dir, "ledger"), ledger.BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { badger.Close() })
	store := &heldStore{Store: badger}
	led, err := ledger.Open(context.Background(), store, ledger.Options{
		Key: kerneltest.Key(seed, "kernel"), Origin: "osmose/test", MaxPending: maxPending,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	top := kerneltest.Building(seed, 1)
	fakes := kerneltest.NewFakes(top, time.Now)
	cfg := kernel.Config{
		Ledger: led, Topology: top, Now: time.Now, Rand: bytes.NewReader(bytes.Repeat([]byte{7}, 1<<16)),
		Policy:  []caps.PolicyFile{{Name: "test.cedar", Text: kerneltest.Policy}},
		Drivers: fakes.Drivers(),
	}
	if config != nil {
		config(&cfg)
	}
	k, err := kernel.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "k.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- k.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		<-served
		k.Close()
	})
	return &heldKernel{k: k, led: led, store: store, fakes: fakes, sock: sock}
}

// login connects and logs in as the device id.
func (h *heldKernel) login(t *testing.T, id string) schema.Session {
	t.Helper()
	ctx := context.Background()
	c, err := kerneltest.Dial(ctx, "unix", h.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := kerneltest.Login(ctx, c.Gateway, h.k.ID(), id, kerneltest.Key(seed, id))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Release() })
	return s
}

// TestFullLedgerBacklog: while the ledger is full (its fsync held), calls
// on a gate wait in the gate's backlog, the connection's receive loop
// goes on serving, and once the disk moves the calls are admitted and
// reach the driver in the order they were sent.
func TestFullLedgerBacklog(t *testing.T) {
	const maxPending = 8
	hk := newHeldKernel(t, maxPending, nil)
	led, store, fakes := hk.led, hk.store, hk.fakes
	ctx := context.Background()
	const room = "cam/pem/f1/r1"
	s := hk.login(t, room+"/light-1")
	cs, _, err := kerneltest.Open(ctx, s, room+"/light-2")
	if err != nil {
		t.Fatal(err)
	}
	light := schema.Light(cs[0])
	defer light.Release()
	from := led.Size()

	store.hold()
	const n = 3 * maxPending
	futs := make([]schema.Light_setLevel_Results_Future, n)
	for i := range futs {
		f, rel := light.SetLevel(ctx, func(p schema.Light_setLevel_Params) error {
			p.SetLevel(uint8(i + 1))
			return nil
		})
		defer rel()
		futs[i] = f
	}
	// The receive loop is not stuck behind the full ledger: a call that
	// records nothing is answered while the calls above wait.
	who, rel := s.WhoAmI(ctx, nil)
	defer rel()
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	select {
	case <-who.Done():
		if _, err := who.Struct(); err != nil {
			t.Fatal(err)
		}
	case <-wctx.Done():
		t.Fatal("whoAmI was not answered while the ledger was full")
	}
	if _, _, calls := fakes.Lights[room+"/light-2"].State(); calls >= n {
		t.Fatalf("the driver had all %d calls while the ledger was full", calls)
	}
	store.release()
	for i, f := range futs {
		if _, err := f.Struct(); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	if _, level, calls := fakes.Lights[room+"/light-2"].State(); level != n || calls != n {
		t.Fatalf("light: level %d after %d calls, want %d after %d", level, calls, n, n)
	}
	// The call entries are in the order the calls were sent.
	var levels []uint8
	for seq := uint64(from); seq < uint64(led.Size()); seq++ {
		r, err := led.Read(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if r.Envelope.Kind != ledger.KindCall {
			continue
		}
		levels = append(levels, setLevelOf(t, r))
	}
	if len(levels) != n {
		t.Fatalf("%d call entries, want %d", len(levels), n)
	}
	for i, lv := range levels {
		if lv != uint8(i+1) {
			t.Fatalf("call entries in the order %v", levels)
		}
	}
}

// grabSensor hands the test the listener of each subscription, as a
// driver would keep it.
type grabSensor struct{ got chan schema.ReadingListener }

func (s *grabSensor) Read(context.Context, schema.Sensor_read) error { return nil }
func (s *grabSensor) Subscribe(ctx context.Context, call schema.Sensor_subscribe) error {
	s.got <- call.Args().Listener().AddRef()
	return nil
}

// listenerGate subscribes a ReadingListener to sensor and returns the
// listener's inward gate as the sensor's driver holds it.
func listenerGate(t *testing.T, hk *heldKernel, gs *grabSensor, sensor string, l *listener) schema.ReadingListener {
	t.Helper()
	ctx := context.Background()
	s := hk.login(t, "cam/pem/f1/r1/light-1")
	cs, _, err := kerneltest.Open(ctx, s, sensor)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cs[0].Release)
	f, rel := schema.Sensor(cs[0]).Subscribe(ctx, func(p schema.Sensor_subscribe_Params) error {
		return p.SetListener(schema.ReadingListener_ServerToClient(l))
	})
	defer rel()
	if _, err := f.Struct(); err != nil {
		t.Fatal(err)
	}
	return <-gs.got
}

// sendReadings makes n pipelined reading calls on gate.
func sendReadings(t *testing.T, gate schema.ReadingListener, n int) []schema.ReadingListener_reading_Results_Future {
	futs := make([]schema.ReadingListener_reading_Results_Future, n)
	for i := range futs {
		f, rel := gate.Reading(context.Background(), func(p schema.ReadingListener_reading_Params) error {
			r, err := p.NewReading()
			if err != nil {
				return err
			}
			r.SetValue(float64(i))
			return nil
		})
		t.Cleanup(rel)
		futs[i] = f
	}
	return futs
}

// grabbingSensor replaces sensor's driver with gs.
func grabbingSensor(sensor string, gs *grabSensor) func(*kernel.Config) {
	return func(c *kernel.Config) {
		c.Drivers[sensor].Release()
		c.Drivers[sensor] = capnp.Client(schema.Sensor_ServerToClient(gs))
	}
}

// TestReleaseAfterBacklog: a driver that sends readings and drops its
// listener at once, while the ledger is full, still has every reading
// delivered: a gate released with calls in its backlog admits them first.
func TestReleaseAfterBacklog(t *testing.T) {
	const sensor = "cam/pem/f1/r1/occupancy"
	const maxPending = 8
	gs := &grabSensor{got: make(chan schema.ReadingListener, 1)}
	hk := newHeldKernel(t, maxPending, grabbingSensor(sensor, gs))
	l := &listener{got: make(chan float64, 64)}
	gate := listenerGate(t, hk, gs, sensor, l)

	hk.store.hold()
	const n = 2 * maxPending
	futs := sendReadings(t, gate, n)
	gate.Release() // its last reference: the gate shuts down now, calls waiting
	hk.store.release()
	for i, f := range futs {
		if _, err := f.Struct(); err != nil {
			t.Errorf("reading %d: %v", i, err)
		}
	}
	if len(l.got) != n {
		t.Errorf("%d readings delivered, want %d", len(l.got), n)
	}
}

// TestBacklogBound: a driver calling a listener while the ledger is full
// fills the gate's backlog only up to MaxInFlight calls; the calls beyond
// are refused as overloaded, and those queued are delivered once the disk
// moves.
func TestBacklogBound(t *testing.T) {
	const sensor = "cam/pem/f1/r1/occupancy"
	const maxPending, maxInFlight, n = 8, 4, 40
	gs := &grabSensor{got: make(chan schema.ReadingListener, 1)}
	grab := grabbingSensor(sensor, gs)
	hk := newHeldKernel(t, maxPending, func(c *kernel.Config) {
		grab(c)
		c.MaxInFlight = maxInFlight
	})
	l := &listener{got: make(chan float64, n)}
	gate := listenerGate(t, hk, gs, sensor, l)
	defer gate.Release()

	hk.store.hold()
	futs := sendReadings(t, gate, n)
	hk.store.release()
	var refused int
	for i, f := range futs {
		if _, err := f.Struct(); err != nil {
			if !strings.Contains(err.Error(), "overloaded") {
				t.Errorf("reading %d: %v", i, err)
			}
			refused++
		}
	}
	if refused == 0 || refused > n-maxInFlight {
		t.Errorf("%d of %d readings refused, want some, and at most %d", refused, n, n-maxInFlight)
	}
	if got := len(l.got); got != n-refused {
		t.Errorf("%d readings delivered, want %d", got, n-refused)
	}
}

// stuckLight's setLevel returns only when its context ends: a device that
// never answers.
type stuckLight struct {
	started chan struct{}
	cause   chan error
}

func (l *stuckLight) Set(context.Context, schema.Light_set) error { return nil }
func (l *stuckLight) SetLevel(ctx context.Context, call schema.Light_setLevel) error {
	close(l.started)
	<-ctx.Done()
	l.cause <- context.Cause(ctx)
	return ctx.Err()
}
func (l *stuckLight) State(context.Context, schema.Light_state) error { return nil }

// TestDisconnectCutsCallsInFlight: when a program disconnects while a
// driver has its call, the session's end cuts the call short: the
// driver's context ends, the return entry says why, and the connection is
// let go (go-capnp waits for every call of a closing connection).
func TestDisconnectCutsCallsInFlight(t *testing.T) {
	const me = "cam/pem/f1/r1/light-1"
	const target = "cam/pem/f1/r1/light-2"
	sl := &stuckLight{started: make(chan struct{}), cause: make(chan error, 1)}
	h := newHarness(t, 1, func(c *kernel.Config) {
		c.Drivers[target].Release()
		c.Drivers[target] = capnp.Client(schema.Light_ServerToClient(sl))
	})
	d := h.login(me)
	c, _ := h.open(d, target)
	start := uint64(h.led.Size())
	f, rel := schema.Light(c).SetLevel(context.Background(), func(p schema.Light_setLevel_Params) error {
		p.SetLevel(10)
		return nil
	})
	defer rel()
	<-sl.started
	d.c.Close()
	select {
	case cause := <-sl.cause:
		if !errors.Is(cause, kernel.ErrSessionEnded) {
			t.Errorf("driver's context ended with %v, want the session's end", cause)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the driver's context did not end after its caller disconnected")
	}
	_ = f
	deadline := time.Now().Add(5 * time.Second)
	for h.k.Conns() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the kernel still serves %d connections", h.k.Conns())
		}
		time.Sleep(10 * time.Millisecond)
	}
	var ret, end *ledger.Envelope
	for ret == nil && time.Now().Before(deadline) {
		for _, r := range h.entries(start) {
			switch r.Envelope.Kind {
			case "return":
				ret = r.Envelope
			case "disconnect", "logout":
				end = r.Envelope
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ret == nil || !strings.Contains(ret.Reason, "session") {
		t.Fatalf("return entry %+v, want the session's end as its reason", ret)
	}
	// The call ends after the session's end, which caused it.
	if end == nil || end.Seq > ret.Seq {
		t.Errorf("session end %+v, return %+v: want the end first", end, ret)
	}
}

// stallHook is a driver that holds its first call until released: while
// it does, the goroutine admitting calls holds the sequencer's turn.
type stallHook struct {
	entered, release chan struct{}
	once             sync.Once
}

func (h *stallHook) Recv(ctx context.Context, r capnp.Recv) capnp.PipelineCaller {
	h.once.Do(func() {
		close(h.entered)
		<-h.release
	})
	r.ReleaseArgs()
	r.Returner.PrepareReturn(nil)
	r.Returner.Return()
	r.Returner.ReleaseResults()
	return nil
}

func (h *stallHook) Send(ctx context.Context, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	return capnp.ErrorAnswer(s.Method, errors.New("stallHook: no local calls")), func() {}
}
func (h *stallHook) Brand() capnp.Brand { return capnp.Brand{} }
func (h *stallHook) Shutdown()          {}
func (h *stallHook) String() string     { return "stallHook" }

// TestReleaseAfterQueued: a driver that sends readings and drops its
// listener at once, while the readings wait in the sequencer's queue
// (another call holds the turn), still has every reading delivered: a gate
// released with calls queued admits them first.
func TestReleaseAfterQueued(t *testing.T) {
	const sensor, light = "cam/pem/f1/r1/occupancy", "cam/pem/f1/r1/light-2"
	gs := &grabSensor{got: make(chan schema.ReadingListener, 1)}
	stall := &stallHook{entered: make(chan struct{}), release: make(chan struct{})}
	hk := newHeldKernel(t, 1024, func(c *kernel.Config) {
		grabbingSensor(sensor, gs)(c)
		c.Drivers[light].Release()
		c.Drivers[light] = capnp.NewClient(stall)
	})
	l := &listener{got: make(chan float64, 64)}
	gate := listenerGate(t, hk, gs, sensor, l)

	ctx := context.Background()
	s := hk.login(t, "cam/pem/f1/r1/light-1")
	cs, _, err := kerneltest.Open(ctx, s, light)
	if err != nil {
		t.Fatal(err)
	}
	defer cs[0].Release()
	stalled := make(chan error, 1)
	go func() { stalled <- kerneltest.Call(ctx, schema.Light(cs[0]), 10) }()
	<-stall.entered

	const n = 8
	futs := sendReadings(t, gate, n)
	gate.Release() // its last reference, with every reading still queued
	close(stall.release)
	if err := <-stalled; err != nil {
		t.Errorf("the stalled call: %v", err)
	}
	for i, f := range futs {
		if _, err := f.Struct(); err != nil {
			t.Errorf("reading %d: %v", i, err)
		}
	}
	if len(l.got) != n {
		t.Errorf("%d readings delivered, want %d", len(l.got), n)
	}
}
