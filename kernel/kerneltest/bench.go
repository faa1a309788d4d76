package kerneltest

import (
	"context"
	"crypto/ed25519"
	crand "crypto/rand"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"
	"capnproto.org/go/capnp/v3/rpc/transport"

	ds "github.com/ipfs/go-datastore"

	"github.com/osmose-os/osmose/caps"
	"github.com/osmose-os/osmose/kernel"
	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
)

// Target is a set of light capabilities, one per client connection, that a
// benchmark calls: a raw echo server or a kernel's gates.
type Target struct {
	Lights []schema.Light
	close  []func() error
}

// Close releases the lights and stops the servers.
func (t *Target) Close() error {
	for _, l := range t.Lights {
		l.Release()
	}
	var errs []error
	for i := len(t.close) - 1; i >= 0; i-- {
		errs = append(errs, t.close[i]())
	}
	return errors.Join(errs...)
}

// echoLight is the trivial Light of the raw baseline: it does nothing.
type echoLight struct{}

func (echoLight) Set(context.Context, schema.Light_set) error           { return nil }
func (echoLight) SetLevel(context.Context, schema.Light_setLevel) error { return nil }
func (echoLight) State(context.Context, schema.Light_state) error       { return nil }

// EchoTarget serves a trivial go-capnp Light server (no kernel, no ledger)
// on a Unix socket in dir and connects conns clients to it: the baseline.
func EchoTarget(ctx context.Context, dir string, conns int) (*Target, error) {
	l, err := net.Listen("unix", filepath.Join(dir, "echo.sock"))
	if err != nil {
		return nil, err
	}
	t := &Target{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var served []*rpc.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			c := rpc.NewConn(transport.NewStream(nc), &rpc.Options{
				BootstrapClient: capnp.Client(schema.Light_ServerToClient(echoLight{})),
			})
			mu.Lock()
			served = append(served, c)
			mu.Unlock()
		}
	}()
	t.close = append(t.close, func() error {
		l.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range served {
			c.Close()
		}
		return nil
	})
	for range conns {
		c, err := Dial(ctx, "unix", l.Addr().String())
		if err != nil {
			t.Close()
			return nil, err
		}
		t.close = append(t.close, c.Conn.Close)
		t.Lights = append(t.Lights, schema.Light(c.Gateway)) // the bootstrap is the light
	}
	return t, nil
}

// KernelTarget runs a kernel with fake drivers on a Badger ledger in dir,
// serving a Unix socket there, and logs conns device programs in, each of
// which opens the other light of its own room: gated, ledgered calls.
func KernelTarget(ctx context.Context, dir string, conns int) (*Target, error) {
	store, err := ledger.OpenBadger(filepath.Join(dir, "ledger"), ledger.BadgerOptions{})
	if err != nil {
		return nil, err
	}
	return kernelTarget(ctx, dir, conns, store)
}

// MemoryKernelTarget is KernelTarget on the in-memory ledger store: the
// same gates, entries and group commits, but no disk and nothing durable.
// Against KernelTarget it shows what the disk's syncs cost the kernel.
func MemoryKernelTarget(ctx context.Context, dir string, conns int) (*Target, error) {
	return kernelTarget(ctx, dir, conns, ledger.NewMemStore())
}

// kernelTarget is KernelTarget on store, which it closes with the target.
func kernelTarget(ctx context.Context, dir string, conns int, store ledger.Store) (*Target, error) {
	t := &Target{close: []func() error{store.Close}}
	fail := func(err error) (*Target, error) {
		t.Close()
		return nil, err
	}
	_, key, err := ed25519.GenerateKey(crand.Reader)
	if err != nil {
		return fail(err)
	}
	led, err := ledger.Open(ctx, store, ledger.Options{Key: key, Origin: "osmose/bench"})
	if err != nil {
		return fail(err)
	}
	t.close = append(t.close, led.Close)
	const seed = "bench"
	// One room per connection: the program r<i>/light-1 calls r<i>/light-2,
	// so each connection has its own driver, as each raw connection has
	// its own server.
	top := Building(seed, conns)
	k, err := kernel.New(kernel.Config{
		Ledger: led, Topology: top, Now: time.Now, Rand: crand.Reader,
		Policy:  []caps.PolicyFile{{Name: "bench.cedar", Text: Policy}},
		Drivers: NewFakes(top, time.Now).Drivers(),
	})
	if err != nil {
		return fail(err)
	}
	l, err := net.Listen("unix", filepath.Join(dir, "kernel.sock"))
	if err != nil {
		k.Close()
		return fail(err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Serve(sctx, l) }()
	t.close = append(t.close, func() error {
		cancel()
		err := <-done
		return errors.Join(err, k.Close())
	})
	for i := 1; i <= conns; i++ {
		room := fmt.Sprintf("cam/pem/f1/r%d", i)
		id := room + "/light-1"
		c, err := Dial(ctx, "unix", l.Addr().String())
		if err != nil {
			return fail(err)
		}
		t.close = append(t.close, c.Close)
		s, err := Login(ctx, c.Gateway, k.ID(), id, Key(seed, id))
		if err != nil {
			return fail(err)
		}
		t.close = append(t.close, func() error { s.Release(); return nil })
		cs, _, err := Open(ctx, s, room+"/light-2")
		if err != nil {
			return fail(fmt.Errorf("open: %w", err))
		}
		t.Lights = append(t.Lights, schema.Light(cs[0]))
	}
	return t, nil
}

// Call makes one setLevel call on l.
func Call(ctx context.Context, l schema.Light, level uint8) error {
	f, rel := l.SetLevel(ctx, func(p schema.Light_setLevel_Params) error {
		p.SetLevel(level)
		return nil
	})
	_, err := f.Struct()
	rel()
	return err
}

// Result is one measured run.
type Result struct {
	Name        string  `json:"name"`
	Conns       int     `json:"conns"`
	Calls       int     `json:"calls"`
	Seconds     float64 `json:"seconds"`
	CallsPerSec float64 `json:"calls_per_sec"`
	P50us       float64 `json:"p50_us"`
	P99us       float64 `json:"p99_us"`
}

// Measure makes calls setLevel calls spread over the target's connections,
// one goroutine per connection, each call waiting for its answer, and
// reports throughput and latency.
func Measure(ctx context.Context, name string, t *Target, calls int) (Result, error) {
	n := len(t.Lights)
	per := calls / n
	lat := make([][]time.Duration, n)
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for i, l := range t.Lights {
		lat[i] = make([]time.Duration, 0, per)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range per {
				t0 := time.Now()
				if err := Call(ctx, l, uint8(j%80)); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if e := failed.Load(); e != nil {
		return Result{}, *e
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	q := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(p*float64(len(all)-1))].Nanoseconds()) / 1e3
	}
	return Result{
		Name: name, Conns: n, Calls: len(all), Seconds: elapsed.Seconds(),
		CallsPerSec: float64(len(all)) / elapsed.Seconds(), P50us: q(0.50), P99us: q(0.99),
	}, nil
}

// SyncResult is the latency of the ledger store's durable writes alone.
type SyncResult struct {
	Syncs int     `json:"syncs"`
	Bytes int     `json:"bytes"`
	P50us float64 `json:"p50_us"`
	P99us float64 `json:"p99_us"`
	MaxUs float64 `json:"max_us"`
}

// SyncLatency measures the disk under a ledger in dir: on a Badger store
// opened as the ledger opens it, one writer commits n transactions of one
// value of size bytes, each followed by a Sync, and the time of each
// commit and sync is reported. A group commit of the kernel benchmark
// (about 32 entries) writes about 16 KiB.
func SyncLatency(ctx context.Context, dir string, n, size int) (res SyncResult, err error) {
	if n < 1 || size < 2 {
		return SyncResult{}, fmt.Errorf("sync latency: %d syncs of %d bytes: need at least 1 sync of 2 bytes", n, size)
	}
	store, err := ledger.OpenBadger(dir, ledger.BadgerOptions{})
	if err != nil {
		return SyncResult{}, err
	}
	defer func() { err = errors.Join(err, store.Close()) }()
	value := make([]byte, size)
	lat := make([]time.Duration, 0, n)
	for i := range n {
		value[0], value[1] = byte(i), byte(i>>8) // distinct values
		t0 := time.Now()
		txn, err := store.NewTransaction(ctx, false)
		if err != nil {
			return SyncResult{}, err
		}
		err = txn.Put(ctx, ds.NewKey(fmt.Sprintf("/sync/%08d", i)), value)
		if err == nil {
			err = txn.Commit(ctx)
		}
		txn.Discard(ctx)
		if err == nil {
			err = store.Sync(ctx, ds.NewKey("/"))
		}
		if err != nil {
			return SyncResult{}, fmt.Errorf("sync %d: %w", i, err)
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	return SyncResult{
		Syncs: n, Bytes: size,
		P50us: us(lat[n/2]), P99us: us(lat[(n-1)*99/100]), MaxUs: us(lat[n-1]),
	}, nil
}
