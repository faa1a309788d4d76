package simkernel

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/osmose-os/osmose/caps"
	"github.com/osmose-os/osmose/drivers"
	"github.com/osmose-os/osmose/internal/topology"
	"github.com/osmose-os/osmose/kernel"
	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/sim"
)

// DefaultStart is when a simulated day starts: Monday 3 March 2025, 07:00
// building time (UTC).
var DefaultStart = time.Date(2025, 3, 3, 7, 0, 0, 0, time.UTC)

// Options configure Run.
type Options struct {
	// Dir is the data directory: ledger/ and kernel.key. Required; a
	// ledger already there is appended to (and the run is then not
	// reproducible).
	Dir string
	// Topology is the building. Required.
	Topology *topology.Topology
	// Policy is the Cedar policy; empty means sim.Policy.
	Policy string
	// Seed, People, Start, Duration and Step: see sim.Config and
	// sim.WorldConfig. Start defaults to DefaultStart.
	Seed     int64
	People   int
	Start    time.Time
	Duration time.Duration
	Step     time.Duration
	// Origin is the ledger's origin and kernel id. Default "osmose-sim".
	Origin string
	// Pace, Wall, Progress, ProgressEvery: see sim.Config. Wall defaults
	// to time.Now (the harness needs a real clock; see sim.Ending.Called).
	Pace          func(ctx context.Context, elapsed time.Duration) error
	Wall          func() time.Time
	Progress      func(sim.Progress)
	ProgressEvery time.Duration
	// Logger receives the kernel's and the simulator's rare messages.
	Logger *slog.Logger

	// Faults are the faults to inject (sim.Faults; see the sim package
	// doc), drawn from Seed. The zero value injects none.
	Faults sim.Faults
	// MaxInFlight is the kernel's bound on calls in flight per connection
	// (kernel.Config.MaxInFlight); 0 takes the kernel's default (256). A
	// malicious program's flood sends a quarter more calls than the bound.
	MaxInFlight int
	// Sleep is how slow devices answer late; default time.Sleep.
	Sleep func(time.Duration)
}

// kernelMaxInFlight is kernel.Config.MaxInFlight's default.
const kernelMaxInFlight = 256

// finishDelay is how long after a call's answer go-capnp's rpc sends its
// Finish (250 ms, rpc.go "incoming return"), with a margin.
const finishDelay = 350 * time.Millisecond

// Result is what a run did, as the simulator measured it and as the
// ledger records it.
type Result struct {
	Report *sim.Report
	// Ledger figures, read back from disk after the run.
	Entries  int64
	Root     tlog.Hash
	Kinds    map[string]int // entries by kind
	Admitted int            // call entries admitted
	Denied   int            // call (and other) entries denied
	Bytes    int64          // size of DIR/ledger on disk
	Verify   *ledger.VerifyReport
	// Quiesced is the ledger's size when the simulation ended, before the
	// programs stopped: the entries after it end the sessions, one
	// "logout" per program, person and bridge, in that order.
	Quiesced int64
	// VerifyErr is why verification failed; nil when it passed.
	VerifyErr error
	Verifier  string
}

// seeded returns a deterministic random reader for one purpose.
func seeded(seed int64, purpose string) *rand.ChaCha8 {
	return rand.NewChaCha8(sha256.Sum256([]byte(fmt.Sprintf("osmose-sim-v1\x00%d\x00%s", seed, purpose))))
}

// Run runs one simulation against an in-process kernel; see the package
// doc for the steps.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Dir == "" || o.Topology == nil {
		return nil, errors.New("simkernel: Options.Dir and Options.Topology are required")
	}
	if o.Start.IsZero() {
		o.Start = DefaultStart
	}
	if o.Policy == "" {
		o.Policy = sim.Policy
	}
	if o.Origin == "" {
		o.Origin = "osmose-sim"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Sleep == nil {
		o.Sleep = time.Sleep
	}
	world, err := sim.NewWorld(sim.WorldConfig{Topology: o.Topology, Seed: o.Seed, People: o.People, Start: o.Start, Sleep: o.Sleep})
	if err != nil {
		return nil, err
	}
	clock := sim.NewClock(o.Start)
	devs := make([]drivers.Device, len(o.Topology.Devices))
	for i, d := range o.Topology.Devices {
		devs[i] = drivers.Device{Path: d.Path, Class: d.Class}
	}
	set, err := drivers.NewSet(devs, func(d drivers.Device) any { return world.Hardware(d.Path) }, clock.Now)
	if err != nil {
		return nil, err
	}

	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	key := sim.Key(o.Seed, "kernel")
	if err := os.WriteFile(filepath.Join(o.Dir, "kernel.key"), key.Seed(), 0o600); err != nil {
		return nil, fmt.Errorf("write kernel key: %w", err)
	}
	ledgerDir := filepath.Join(o.Dir, "ledger")
	store, err := ledger.OpenBadger(ledgerDir, ledger.BadgerOptions{})
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	led, err := ledger.Open(ctx, store, ledger.Options{
		Key: key, Origin: o.Origin, Rand: seeded(o.Seed, "ledger"),
		GenesisTime: o.Start.UnixNano(), Logger: o.Logger,
	})
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	res := &Result{Verifier: led.Meta().Verifier}
	k, err := kernel.New(kernel.Config{
		Ledger: led, Topology: o.Topology,
		Policy:  []caps.PolicyFile{{Name: "policy.cedar", Text: o.Policy}},
		Drivers: set.Clients(), Now: clock.Now, Rand: seeded(o.Seed, "kernel"), Logger: o.Logger,
		MaxInFlight: o.MaxInFlight,
	})
	if err != nil {
		led.Close()
		store.Close()
		return nil, err
	}

	var wg sync.WaitGroup
	var served gauge // connections the kernel is serving
	dial := func(ctx context.Context) (net.Conn, error) {
		client, server := net.Pipe()
		wg.Add(1)
		served.add(1)
		k.Attach(ctx, socket{server}, func() {
			served.add(-1)
			wg.Done()
		})
		return client, nil
	}
	sensorSubs := func() int {
		n := 0
		for _, p := range set.Paths() {
			if d, ok := set.Driver(p); ok {
				if s, ok := d.(*drivers.Sensor); ok {
					n += s.Subscribers()
				}
			}
		}
		return n
	}
	// settle ends one connection and waits until the kernel has recorded
	// its end, stopped serving it, and the drivers have dropped its
	// subscriptions (see sim.Config.Settle). The sim is quiet then (every
	// answered call's entries are durable), so the next entry is the one
	// it waits for.
	settle := func(ctx context.Context, e sim.Ending) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		conns, subs, n := served.get(), sensorSubs(), led.Size()
		// The kernel's rpc layer sends the Finish of its last call on the
		// connection 250 ms after the answer, and records an error of its
		// own (a "disconnect" entry, or another reason in one) if the
		// connection ends just then.
		finished := func() {
			if !e.Called.IsZero() {
				if d := time.Until(e.Called.Add(finishDelay)); d > 0 {
					time.Sleep(d)
				}
			}
		}
		if e.Quit != nil {
			e.Quit()
			if _, err := led.WaitSize(ctx, n); err != nil {
				e.Close()
				return fmt.Errorf("wait for the session's end: %w", err)
			}
			finished()
			e.Close()
		} else {
			finished()
			e.Close()
			if _, err := led.WaitSize(ctx, n); err != nil {
				return fmt.Errorf("wait for the connection's end: %w", err)
			}
		}
		if err := served.wait(ctx, conns-1); err != nil {
			return fmt.Errorf("wait for the kernel to let the connection go: %w", err)
		}
		// A driver drops a subscription a moment after the kernel lets
		// go of it (two goroutine hops); no event may reach a dead
		// listener meanwhile.
		tick := time.NewTicker(200 * time.Microsecond)
		defer tick.Stop()
		for sensorSubs() > subs-e.Subs {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return fmt.Errorf("wait for the drivers to drop %d subscriptions: %w", e.Subs, ctx.Err())
			}
		}
		return nil
	}
	bound := o.MaxInFlight
	if bound <= 0 {
		bound = kernelMaxInFlight
	}
	wall := o.Wall
	if wall == nil {
		wall = time.Now // settle needs it (sim.Ending.Called)
	}
	rep, runErr := sim.Run(ctx, sim.Config{
		Topology: o.Topology, World: world, Seed: o.Seed, Dial: dial, KernelID: k.ID(), Clock: clock,
		Duration: o.Duration, Step: o.Step, Pace: o.Pace, Wall: wall,
		Progress: o.Progress, ProgressEvery: o.ProgressEvery, Settle: settle, Logger: o.Logger,
		Ended:  func() { res.Quiesced = led.Size() },
		Faults: o.Faults, FloodCalls: bound + bound/4 + 4, Hardware: true,
	})
	res.Report = rep
	k.Close()
	wg.Wait()
	if err := led.Close(); err != nil && runErr == nil {
		runErr = fmt.Errorf("close ledger: %w", err)
	}
	if err := store.Close(); err != nil && runErr == nil {
		runErr = fmt.Errorf("close ledger store: %w", err)
	}
	if runErr != nil {
		return res, runErr
	}
	if err := res.check(ctx, ledgerDir); err != nil {
		return res, err
	}
	return res, nil
}

// check reopens the ledger read-only, verifies it and counts its entries.
func (res *Result) check(ctx context.Context, dir string) error {
	store, err := ledger.OpenBadger(dir, ledger.BadgerOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("reopen ledger: %w", err)
	}
	defer store.Close()
	led, err := ledger.Open(ctx, store, ledger.Options{})
	if err != nil {
		return fmt.Errorf("reopen ledger: %w", err)
	}
	defer led.Close()
	res.Verify, res.VerifyErr = led.Verify(ctx, nil)
	res.Entries, res.Root, _ = led.Head()
	res.Kinds = map[string]int{}
	for seq := uint64(0); seq < uint64(res.Entries); seq++ {
		rec, err := led.Read(ctx, seq)
		if err != nil {
			return fmt.Errorf("read entry %d: %w", seq, err)
		}
		res.Kinds[string(rec.Envelope.Kind)]++
		switch rec.Envelope.Decision {
		case ledger.DecisionAdmit:
			if rec.Envelope.Kind == "call" {
				res.Admitted++
			}
		case ledger.DecisionDeny:
			res.Denied++
		}
	}
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				res.Bytes += fi.Size()
			}
		}
		return nil
	})
	return nil
}

// CIDs returns the envelope CIDs of every entry of the ledger in dir, in
// seq order, for comparing two runs, and a one-line summary of each.
func CIDs(ctx context.Context, dir string) (cids, summaries []string, err error) {
	store, err := ledger.OpenBadger(filepath.Join(dir, "ledger"), ledger.BadgerOptions{ReadOnly: true})
	if err != nil {
		return nil, nil, err
	}
	defer store.Close()
	led, err := ledger.Open(ctx, store, ledger.Options{})
	if err != nil {
		return nil, nil, err
	}
	defer led.Close()
	cids = make([]string, led.Size())
	summaries = make([]string, led.Size())
	for i := range cids {
		rec, err := led.Read(ctx, uint64(i))
		if err != nil {
			return nil, nil, err
		}
		e := rec.Envelope
		cids[i] = rec.CID.String()
		summaries[i] = fmt.Sprintf("%d %s actor=%s dev=%s grant=%d meth=%d dec=%s why=%q t=%d", e.Seq, e.Kind, e.Actor, e.Device, e.Grant, e.Method, e.Decision, e.Reason, e.Time)
	}
	return cids, summaries, nil
}

// gauge is a count that can be waited on.
type gauge struct {
	mu      sync.Mutex
	n       int
	changed chan struct{}
}

func (g *gauge) add(d int) {
	g.mu.Lock()
	g.n += d
	if g.changed != nil {
		close(g.changed)
		g.changed = nil
	}
	g.mu.Unlock()
}

func (g *gauge) get() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

// wait waits until the count is at most n.
func (g *gauge) wait(ctx context.Context, n int) error {
	for {
		g.mu.Lock()
		if g.n <= n {
			g.mu.Unlock()
			return nil
		}
		if g.changed == nil {
			g.changed = make(chan struct{})
		}
		ch := g.changed
		g.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// socket is the kernel's end of an in-memory pipe, made to fail as a
// socket does: reading from a pipe end closed locally fails with
// io.ErrClosedPipe, where a socket's read fails with net.ErrClosed, which
// the kernel takes for a clean end. (Without this, a connection the kernel
// itself aborts, for a hostile peer's bytes, is recorded with the pipe's
// error or the peer's, depending on which goroutine gets there first.)
type socket struct{ net.Conn }

func (s socket) Read(b []byte) (int, error) {
	n, err := s.Conn.Read(b)
	if errors.Is(err, io.ErrClosedPipe) {
		err = net.ErrClosed
	}
	return n, err
}
