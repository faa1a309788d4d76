package sim

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/osmose-os/osmose/internal/topology"
	"github.com/osmose-os/osmose/schema"
)

// Config configures Run.
type Config struct {
	// Topology is the building, World its model (NewWorld on the same
	// topology and seed). Both required.
	Topology *topology.Topology
	World    *World
	// Seed derives the device keys (Key). Devices whose key in the
	// topology is not Key(Seed, path) run no program.
	Seed int64
	// Dial opens one new connection to the kernel. Required.
	Dial func(ctx context.Context) (net.Conn, error)
	// KernelID is the kernel id programs sign logins for; empty accepts
	// whatever id the kernel gives (fine in one process, unwise across a
	// network).
	KernelID string
	// Clock, if set, is moved to each step's time before the step's events
	// are delivered: the in-process kernel and drivers read it.
	Clock *Clock
	// Duration is how much simulated time to run; Step the simulated time
	// between two steps (default 1 min).
	Duration, Step time.Duration
	// Pace, if set, is called after each step with the simulated time
	// elapsed so far; it waits to keep the run at its speed (see
	// cmd/osmose). Nil runs as fast as the kernel answers.
	Pace func(ctx context.Context, elapsed time.Duration) error
	// Wall, if set, is the real clock used to measure call latencies (an
	// effect at the edge; nothing simulated depends on it).
	Wall func() time.Time
	// Progress, if set, is called every ProgressEvery of simulated time
	// (default 1 h) and at the end.
	Progress      func(Progress)
	ProgressEvery time.Duration
	// Settle, if set, is called when each program stops: it calls hangUp
	// (which closes the program's connection) and waits until the kernel
	// has recorded the session's end, so the ledger's last entries come in
	// program order too. Nil just hangs up.
	Settle func(ctx context.Context, hangUp func()) error
	// Logger receives failures of single calls. Default: discard.
	Logger *slog.Logger
}

// Progress is a snapshot of a running simulation.
type Progress struct {
	Time    time.Time
	Step    int
	Steps   int
	Present int // people in the building
	Events  int // readings and button events delivered
	Calls   int // calls made by device programs
	Denials int
}

// Report is what a run did and measured.
type Report struct {
	Seed       int64
	Start, End time.Time // simulated
	Steps      int
	Devices    int      // devices of the topology
	Programs   int      // device programs that logged in and started
	Skipped    []string // devices without a program, and why
	People     int
	Peak       int // most people in the building at once
	Events     int // readings and button events delivered through drivers
	Calls      int // calls device programs made (opens included)
	Denials    int // of which the kernel refused with "permission"
	Failures   int // of which failed otherwise
	Latencies  []time.Duration
}

// Percentile returns the q-th (0..1) latency of the programs' calls.
func (r *Report) Percentile(q float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := int(q * float64(len(r.Latencies)-1))
	return r.Latencies[i]
}

// runner is one run's shared state.
type runner struct {
	cfg     Config
	classes map[string]schema.DeviceClass
	labels  map[string]string

	mu       sync.Mutex
	calls    int
	denials  int
	failures int
	lat      []time.Duration
}

func (r *runner) classOf(path string) schema.DeviceClass { return r.classes[path] }

func (r *runner) label(room string) string {
	if l := r.labels[room]; l != "" {
		return l
	}
	return room
}

func (r *runner) count(d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if err != nil {
		if denialKind(err) == "permission" {
			r.denials++
		} else {
			r.failures++
		}
	}
	if r.cfg.Wall != nil {
		r.lat = append(r.lat, d)
	}
}

func (r *runner) logf(format string, args ...any) {
	r.cfg.Logger.Warn(fmt.Sprintf(format, args...))
}

// Run runs the simulation:
//
//  1. starts every device program, one after the other: dial, log in
//     with the device's key, open, subscribe;
//  2. for each step: moves the clock, advances the world, and delivers
//     its events one at a time through the drivers (each returns once the
//     programs have reacted), then paces;
//  3. stops the programs one after the other.
//
// Everything the kernel sees happens in an order fixed by the topology,
// the seed and the world, which is what makes two runs' ledgers equal.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	switch {
	case cfg.Topology == nil || cfg.World == nil:
		return nil, errors.New("sim: Config.Topology and Config.World are required")
	case cfg.Dial == nil:
		return nil, errors.New("sim: Config.Dial is required")
	}
	if cfg.Step <= 0 {
		cfg.Step = time.Minute
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &runner{cfg: cfg, classes: map[string]schema.DeviceClass{}, labels: map[string]string{}}
	for _, d := range cfg.Topology.Devices {
		r.classes[d.Path] = d.Class
	}
	for _, p := range cfg.Topology.Places {
		r.labels[p.Path] = p.Label
	}
	w := cfg.World
	start := w.Now()
	rep := &Report{Seed: cfg.Seed, Start: start, Devices: len(cfg.Topology.Devices), People: len(w.People())}

	// 1. Programs.
	var progs []*program
	defer func() {
		for _, p := range progs {
			p.stop(ctx)
		}
	}()
	for _, d := range cfg.Topology.Devices {
		key := Key(cfg.Seed, d.Path)
		if d.Key == nil || !bytes.Equal(key.Public().(ed25519.PublicKey), d.Key) {
			rep.Skipped = append(rep.Skipped, d.Path+": key not derived from the seed")
			continue
		}
		nc, err := cfg.Dial(ctx)
		if err != nil {
			return rep, fmt.Errorf("sim: dial for %s: %w", d.Path, err)
		}
		c, err := dial(ctx, nc, cfg.KernelID, d.Path, key)
		if err != nil {
			rep.Skipped = append(rep.Skipped, fmt.Sprintf("%s: %v", d.Path, err))
			continue
		}
		p := &program{r: r, dev: d, room: topology.Parent(d.Path), c: c}
		progs = append(progs, p)
		if err := p.start(ctx); err != nil {
			rep.Skipped = append(rep.Skipped, fmt.Sprintf("%s: %v", d.Path, err))
			continue
		}
		rep.Programs++
	}

	// 2. Steps.
	steps := int(cfg.Duration / cfg.Step)
	rep.Steps = steps
	nextProgress := start.Add(cfg.ProgressEvery)
	report := func(i int, t time.Time) {
		if cfg.Progress == nil {
			return
		}
		r.mu.Lock()
		pr := Progress{Time: t, Step: i, Steps: steps, Present: w.Occupied(), Events: rep.Events, Calls: r.calls, Denials: r.denials}
		r.mu.Unlock()
		cfg.Progress(pr)
	}
	for i := 1; i <= steps; i++ {
		if err := ctx.Err(); err != nil {
			return r.finish(rep, w), err
		}
		t := start.Add(time.Duration(i) * cfg.Step)
		if cfg.Clock != nil {
			cfg.Clock.Set(t)
		}
		for _, e := range w.Advance(t) {
			if err := w.Fire(ctx, e); err != nil {
				r.logf("deliver %v: %v", e, err)
			}
			rep.Events++
		}
		if n := w.Occupied(); n > rep.Peak {
			rep.Peak = n
		}
		if !t.Before(nextProgress) || i == steps {
			report(i, t)
			nextProgress = nextProgress.Add(cfg.ProgressEvery)
		}
		if cfg.Pace != nil {
			if err := cfg.Pace(ctx, t.Sub(start)); err != nil {
				return r.finish(rep, w), err
			}
		}
	}
	return r.finish(rep, w), nil
}

func (r *runner) finish(rep *Report, w *World) *Report {
	rep.End = w.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	rep.Calls, rep.Denials, rep.Failures = r.calls, r.denials, r.failures
	rep.Latencies = slices.Clone(r.lat)
	slices.Sort(rep.Latencies)
	return rep
}
