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
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

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
	// metrics reads a kernel's ledger metrics (nil for the raw echo).
	metrics *sdkmetric.ManualReader
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
	// The ledger's metrics, read around each measurement (Measure), as an
	// operator reads them from osmose serve --metrics.
	t.metrics = sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(t.metrics))
	t.close = append(t.close, func() error { return mp.Shutdown(context.Background()) })
	led, err := ledger.Open(ctx, store, ledger.Options{Key: key, Origin: "osmose/bench", MeterProvider: mp})
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
	CPU
	// Ledger is what a kernel's ledger did meanwhile (nil for the raw
	// echo).
	Ledger *LedgerStats `json:"ledger,omitempty"`
}

// LedgerStats is what a kernel's ledger did during a measurement, from
// its metrics (ledger.Options.MeterProvider): its group commits, and the
// syncs that made them durable.
type LedgerStats struct {
	Syncs      int64   `json:"syncs"`
	Batches    int64   `json:"batches"` // group commits: a store transaction each
	Entries    int64   `json:"entries"`
	SyncMeanUs float64 `json:"sync_mean_us"`
	// LagMeanUs is the mean, over batches, of the time from the append of
	// a batch's first entry until the batch was durable.
	LagMeanUs float64 `json:"lag_mean_us"`
}

// ledgerTotals are a ledger's cumulative metrics: counts and sums of its
// histograms.
type ledgerTotals struct {
	syncs, batches, entries, lags uint64
	syncSecs, lagSecs             float64
}

// ledgerTotals reads the ledger's metrics; false for a target without.
func (t *Target) ledgerTotals(ctx context.Context) (ledgerTotals, bool, error) {
	var tot ledgerTotals
	if t.metrics == nil {
		return tot, false, nil
	}
	var rm metricdata.ResourceMetrics
	if err := t.metrics.Collect(ctx, &rm); err != nil {
		return tot, false, fmt.Errorf("ledger metrics: %w", err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					switch m.Name {
					case "osmose.ledger.sync.duration":
						tot.syncs += p.Count
						tot.syncSecs += p.Sum
					case "osmose.ledger.lag":
						tot.lags += p.Count
						tot.lagSecs += p.Sum
					}
				}
			case metricdata.Histogram[int64]:
				if m.Name == "osmose.ledger.batch.entries" {
					for _, p := range d.DataPoints {
						tot.batches += p.Count
						tot.entries += uint64(p.Sum)
					}
				}
			}
		}
	}
	return tot, true, nil
}

// stats is what the ledger did between two readings.
func (tot ledgerTotals) stats(prev ledgerTotals) *LedgerStats {
	s := &LedgerStats{
		Syncs:   int64(tot.syncs - prev.syncs),
		Batches: int64(tot.batches - prev.batches),
		Entries: int64(tot.entries - prev.entries),
	}
	if s.Syncs > 0 {
		s.SyncMeanUs = (tot.syncSecs - prev.syncSecs) * 1e6 / float64(s.Syncs)
	}
	if n := tot.lags - prev.lags; n > 0 {
		s.LagMeanUs = (tot.lagSecs - prev.lagSecs) * 1e6 / float64(n)
	}
	return s
}

// Measure makes calls setLevel calls spread over the target's connections,
// one goroutine per connection, each call waiting for its answer, and
// reports throughput, latency, the CPU used and, for a kernel, what its
// ledger did.
func Measure(ctx context.Context, name string, t *Target, calls int) (Result, error) {
	led0, hasLedger, err := t.ledgerTotals(ctx)
	if err != nil {
		return Result{}, err
	}
	n := len(t.Lights)
	per := calls / n
	lat := make([][]time.Duration, n)
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	for i := range lat {
		lat[i] = make([]time.Duration, 0, per)
	}
	u0 := ReadUsage()
	start := time.Now()
	for i, l := range t.Lights {
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
	u1 := ReadUsage()
	if e := failed.Load(); e != nil {
		return Result{}, *e
	}
	res := Result{Name: name, Conns: n, Seconds: elapsed.Seconds()}
	if hasLedger {
		// Read after the calls: each was answered once durable, so every
		// batch of the run is counted.
		led1, _, err := t.ledgerTotals(ctx)
		if err != nil {
			return Result{}, err
		}
		res.Ledger = led1.stats(led0)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	q := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(p*float64(len(all)-1))].Nanoseconds()) / 1e3
	}
	res.Calls = len(all)
	res.CallsPerSec = float64(len(all)) / elapsed.Seconds()
	res.P50us, res.P99us = q(0.50), q(0.99)
	res.CPU = u1.Since(u0, len(all))
	return res, nil
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
