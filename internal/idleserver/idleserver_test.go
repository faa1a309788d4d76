package idleserver_test

import (
	"context"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"
	"capnproto.org/go/capnp/v3/rpc/transport"
	"capnproto.org/go/capnp/v3/server"

	"github.com/osmose-os/osmose/internal/idleserver"
	"github.com/osmose-os/osmose/schema"
)

// light records the order of its calls and can hold one until released.
type light struct {
	mu       sync.Mutex
	levels   []uint8
	hold     chan struct{} // setLevel(255) waits on it
	shutdown int
}

func (l *light) Set(ctx context.Context, call schema.Light_set) error { return nil }

func (l *light) SetLevel(ctx context.Context, call schema.Light_setLevel) error {
	lv := call.Args().Level()
	if lv == 254 {
		call.Go()
	}
	if lv == 255 {
		<-l.hold
	}
	l.mu.Lock()
	l.levels = append(l.levels, lv)
	l.mu.Unlock()
	return nil
}

func (l *light) State(ctx context.Context, call schema.Light_state) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	st, err := res.NewState()
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.levels); n > 0 {
		st.SetLevel(l.levels[n-1])
	}
	return nil
}

func (l *light) Shutdown() {
	l.mu.Lock()
	l.shutdown++
	l.mu.Unlock()
}

func (l *light) snapshot() ([]uint8, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]uint8(nil), l.levels...), l.shutdown
}

// settle waits for the goroutine count to fall to at most n.
func settle(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond)
	}
}

func TestOrderIdleAndShutdown(t *testing.T) {
	ctx := context.Background()
	before := runtime.NumGoroutine()
	l := &light{hold: make(chan struct{})}
	c := schema.Light(idleserver.Of[schema.Light_Server](schema.Light_Methods, l))
	settle(t, before) // no goroutine while idle

	// Pipelined calls run one at a time in order, the first held.
	var futs []schema.Light_setLevel_Results_Future
	var rels []capnp.ReleaseFunc
	for _, lv := range []uint8{255, 1, 2, 3} {
		f, rel := c.SetLevel(ctx, func(p schema.Light_setLevel_Params) error { p.SetLevel(lv); return nil })
		futs, rels = append(futs, f), append(rels, rel)
	}
	time.Sleep(10 * time.Millisecond)
	if got, _ := l.snapshot(); len(got) != 0 {
		t.Fatalf("calls ran past the held one: %v", got)
	}
	close(l.hold)
	for i, f := range futs {
		if _, err := f.Struct(); err != nil {
			t.Fatal(err)
		}
		rels[i]()
	}
	if got, _ := l.snapshot(); string(got) != string([]uint8{255, 1, 2, 3}) {
		t.Fatalf("order %v", got)
	}
	settle(t, before+1) // warm: its goroutine stays for the next call

	// Go lets the next call start; all still return.
	f1, r1 := c.SetLevel(ctx, func(p schema.Light_setLevel_Params) error { p.SetLevel(254); return nil })
	f2, r2 := c.State(ctx, nil)
	if _, err := f1.Struct(); err != nil {
		t.Fatal(err)
	}
	st, err := f2.State().Struct()
	if err != nil {
		t.Fatal(err)
	}
	_ = st
	r1()
	r2()
	settle(t, before+1)

	// Unknown methods are refused.
	ans, rel := capnp.Client(c).SendCall(ctx, capnp.Send{Method: capnp.Method{InterfaceID: 1, MethodID: 2}})
	if _, err := ans.Struct(); err == nil {
		t.Fatal("unknown method answered")
	}
	rel()

	if _, n := l.snapshot(); n != 0 {
		t.Fatalf("shut down with a client left: %d", n)
	}
	c.Release()
	waitShutdowns(t, l, 1)
	settle(t, before)
}

// TestShutdownAfterPendingCalls: the last client gone while a call runs,
// the shutdown waits for the call.
func TestShutdownAfterPendingCalls(t *testing.T) {
	ctx := context.Background()
	l := &light{hold: make(chan struct{})}
	c := schema.Light(idleserver.Of[schema.Light_Server](schema.Light_Methods, l))
	f, rel := c.SetLevel(ctx, func(p schema.Light_setLevel_Params) error { p.SetLevel(255); return nil })
	c.Release()
	time.Sleep(5 * time.Millisecond)
	if _, n := l.snapshot(); n != 0 {
		t.Fatal("shut down with a call running")
	}
	close(l.hold)
	if _, err := f.Struct(); err != nil {
		t.Fatal(err)
	}
	rel()
	waitShutdowns(t, l, 1)
}

// waitShutdowns waits until l has been shut down n times, and checks that
// it is not shut down again.
func waitShutdowns(t *testing.T, l *light, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, got := l.snapshot(); got == n {
			break
		}
		if time.Now().After(deadline) {
			_, got := l.snapshot()
			t.Fatalf("%d shutdowns, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(10 * time.Millisecond)
	if _, got := l.snapshot(); got != n {
		t.Fatalf("%d shutdowns, want %d", got, n)
	}
}

// TestOverRPC serves the light over a real connection (Recv path) and
// checks that the server side holds no goroutine beyond the
// connection's own between calls.
func TestOverRPC(t *testing.T) {
	ctx := context.Background()
	l := &light{hold: make(chan struct{})}
	close(l.hold)
	p1, p2 := pipe()
	srv := rpc.NewConn(p1, &rpc.Options{BootstrapClient: idleserver.Of[schema.Light_Server](schema.Light_Methods, l)})
	cli := rpc.NewConn(p2, nil)
	boot := schema.Light(cli.Bootstrap(ctx))
	for i := 1; i <= 50; i++ {
		f, rel := boot.SetLevel(ctx, func(p schema.Light_setLevel_Params) error { p.SetLevel(uint8(i)); return nil })
		if _, err := f.Struct(); err != nil {
			t.Fatal(err)
		}
		rel()
	}
	got, _ := l.snapshot()
	if len(got) != 50 || got[49] != 50 {
		t.Fatalf("levels %v", got)
	}
	boot.Release()
	cli.Close()
	<-srv.Done()
	waitShutdowns(t, l, 1)
}

func TestIsServer(t *testing.T) {
	l := &light{}
	c := idleserver.Of[schema.Light_Server](schema.Light_Methods, l)
	defer c.Release()
	snap := c.Snapshot()
	defer snap.Release()
	v, ok := idleserver.IsServer(snap.Brand())
	if !ok || v != any(l) {
		t.Fatalf("IsServer = %v, %v", v, ok)
	}
	sc := capnp.NewClient(server.New(nil, l, nil))
	defer sc.Release()
	s2 := sc.Snapshot()
	defer s2.Release()
	if _, ok := idleserver.IsServer(s2.Brand()); ok {
		t.Fatal("a server.Server's brand taken for an idleserver's")
	}
}

// pipe is an in-memory stream pair carrying the Cap'n Proto framing.
func pipe() (transport.Transport, transport.Transport) {
	a, b := net.Pipe()
	return transport.NewStream(a), transport.NewStream(b)
}

// TestWarmBound: servers called once and then idle keep at most
// WarmServers goroutines between them, and none once released.
func TestWarmBound(t *testing.T) {
	ctx := context.Background()
	settle(t, runtime.NumGoroutine())
	before := runtime.NumGoroutine()
	const n = idleserver.WarmServers + 500
	var cs []schema.Light
	for i := 0; i < n; i++ {
		l := &light{hold: make(chan struct{})}
		c := schema.Light(idleserver.Of[schema.Light_Server](schema.Light_Methods, l))
		f, rel := c.SetLevel(ctx, func(p schema.Light_setLevel_Params) error { p.SetLevel(1); return nil })
		if _, err := f.Struct(); err != nil {
			t.Fatal(err)
		}
		rel()
		cs = append(cs, c)
	}
	settle(t, before+idleserver.WarmServers)
	for _, c := range cs {
		c.Release()
	}
	settle(t, before)
}
