package sim

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"hash/fnv"
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
	// Wall, if set, is the real clock used to measure call latencies and
	// to note when the kernel last called a program (Ending.Called); an
	// effect at the edge: nothing simulated depends on it.
	Wall func() time.Time
	// Progress, if set, is called every ProgressEvery of simulated time
	// (default 1 h) and at the end.
	Progress      func(Progress)
	ProgressEvery time.Duration
	// Settle, if set, ends one connection (a program stopping at the end,
	// crashing, dropped, a hostile connection) so that the kernel's record
	// of it lands at a fixed point of the ledger: it runs e.Quit, if set,
	// and waits for the kernel's one entry for it (a "logout"), then runs
	// e.Close and waits (without Quit) for the kernel's one entry (a
	// "disconnect"); then until the kernel has stopped serving the
	// connection and its drivers have dropped e.Subs subscriptions to
	// sensors. Before closing it lets the kernel's rpc layer finish its
	// last call to the program (e.Called). internal/simkernel provides
	// it. Nil runs Quit and Close and waits for nothing.
	Settle func(ctx context.Context, e Ending) error
	// Ended, if set, is called once when the simulation has ended, before
	// the programs stop (the ledger is quiet then).
	Ended func()
	// Logger receives failures of single calls. Default: discard.
	Logger *slog.Logger

	// Faults are the faults to inject (see the package doc); the zero
	// value injects none. They are drawn from Seed.
	Faults Faults
	// FloodCalls is how many calls a malicious program's flood sends at
	// once. It should exceed the kernel's bound on calls in flight per
	// connection (kernel.Config.MaxInFlight, 256 by default), or the flood
	// is not one. Default 300.
	FloodCalls int
	// Hardware says that World is the hardware behind the kernel's
	// drivers (internal/simkernel): then a malicious program's flood holds
	// its sensor's answers until every call of the flood has been
	// admitted or refused, and releases them one at a time, which makes
	// the flood's entries deterministic; and slow devices slow the
	// kernel's calls. Against another kernel (osmose sim --connect) the
	// flood is racy and slow devices slow nothing.
	Hardware bool
}

// Progress is a snapshot of a running simulation.
type Progress struct {
	Time    time.Time
	Step    int
	Steps   int
	Present int // people in the building
	Events  int // readings and button events delivered
	Calls   int // calls made by device programs and people
	Denials int
	// Presence is the door badges' reports so far; Faults the faults
	// injected so far (crashes, drops, slow and stuck devices, attacks).
	Presence int
	Faults   int
}

// Report is what a run did and measured.
type Report struct {
	Seed       int64
	Start, End time.Time // simulated
	Steps      int
	Devices    int      // devices of the topology
	Programs   int      // device programs that logged in and started
	Skipped    []string // devices (and other principals) without a program, and why
	People     int
	Peak       int // most people in the building at once
	Events     int // readings and button events delivered through drivers
	Calls      int // calls device programs and people made (opens included)
	Denials    int // of which the kernel refused with "permission"
	Failures   int // of which failed otherwise
	Latencies  []time.Duration

	// Presence: the door-badge bridge's reports (Operator.presence) and
	// the presence-bound grants the kernel revoked on them.
	Presence        int
	PresenceRevoked int
	// People's own sessions: how many logged in, the presence-bound
	// grants they got, and the calls they made (counted in Calls too).
	PeopleIn     int
	PersonGrants int
	PersonCalls  int

	// Faults is what the injected faults did.
	Faults FaultReport
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
	plan    *faultPlan
	step    int // the step being run, for seeded choices

	progs  []*program
	byPath map[string]*program
	badges *bridge
	people map[string]*occupant
	order  []*occupant // people in world order

	mu       sync.Mutex
	calls    int
	denials  int
	failures int
	lat      []time.Duration
	rep      *Report // counters other than calls, under mu
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
//     with the device's key, open, subscribe; then the door-badge bridge;
//  2. for each step: moves the clock; injects the step's planned faults
//     (crash, restart, drop, slow, stuck); advances the world; reports
//     its door badges to the kernel and delivers its readings and presses
//     one at a time through the drivers (each returns once the programs
//     have reacted); lets the people who came into a room use its lights;
//     runs the malicious programs' attacks of the step; then paces;
//  3. stops the programs, the people's sessions and the bridge, one after
//     the other.
//
// Everything the kernel sees happens in an order fixed by the topology,
// the seed, the fault list and the world, which is what makes two runs'
// ledgers equal.
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
	if cfg.FloodCalls <= 0 {
		cfg.FloodCalls = 300
	}
	r := &runner{cfg: cfg, classes: map[string]schema.DeviceClass{}, labels: map[string]string{},
		byPath: map[string]*program{}, people: map[string]*occupant{}}
	for _, d := range cfg.Topology.Devices {
		r.classes[d.Path] = d.Class
	}
	for _, p := range cfg.Topology.Places {
		r.labels[p.Path] = p.Label
	}
	w := cfg.World
	start := w.Now()
	steps := int(cfg.Duration / cfg.Step)
	rep := &Report{Seed: cfg.Seed, Start: start, Steps: steps, Devices: len(cfg.Topology.Devices), People: len(w.People())}
	r.rep = rep

	// The fault plan, from the seed and the devices that run programs.
	var runnable []topology.Device
	for _, d := range cfg.Topology.Devices {
		if r.seeded(d.Path, d.Key) {
			runnable = append(runnable, d)
		}
	}
	r.plan = planFaults(cfg.Faults, cfg.Seed, runnable, steps, cfg.Step, start)
	rep.Faults.Plan = r.plan.desc
	rep.Faults.Malicious = len(r.plan.malicious)
	rep.Faults.Skewed = len(r.plan.skew)

	// 1. Programs, the badge bridge, the people.
	defer r.stopAll(ctx)
	for _, d := range cfg.Topology.Devices {
		if !r.seeded(d.Path, d.Key) {
			rep.Skipped = append(rep.Skipped, d.Path+": key not derived from the seed")
			continue
		}
		nc, err := cfg.Dial(ctx)
		if err != nil {
			return r.finish(rep, w), fmt.Errorf("sim: dial for %s: %w", d.Path, err)
		}
		c, err := dial(ctx, nc, cfg.KernelID, d.Path, Key(cfg.Seed, d.Path))
		if err != nil {
			rep.Skipped = append(rep.Skipped, fmt.Sprintf("%s: %v", d.Path, err))
			continue
		}
		p := &program{r: r, dev: d, room: topology.Parent(d.Path), c: c, skew: r.plan.skew[d.Path], malicious: r.plan.malicious[d.Path]}
		r.progs = append(r.progs, p)
		r.byPath[d.Path] = p
		if err := p.start(ctx); err != nil {
			rep.Skipped = append(rep.Skipped, fmt.Sprintf("%s: %v", d.Path, err))
			continue
		}
		rep.Programs++
	}
	if err := r.startBridge(ctx); err != nil {
		rep.Skipped = append(rep.Skipped, fmt.Sprintf("%s: %v", BadgesID, err))
	}
	r.addPeople()

	// 2. Steps.
	nextProgress := start.Add(cfg.ProgressEvery)
	report := func(i int, t time.Time) {
		if cfg.Progress == nil {
			return
		}
		r.mu.Lock()
		pr := Progress{Time: t, Step: i, Steps: steps, Present: w.Occupied(), Events: rep.Events, Calls: r.calls, Denials: r.denials,
			Presence: rep.Presence, Faults: rep.Faults.injected()}
		r.mu.Unlock()
		cfg.Progress(pr)
	}
	for i := 1; i <= steps; i++ {
		if err := ctx.Err(); err != nil {
			return r.finish(rep, w), err
		}
		r.step = i
		t := start.Add(time.Duration(i) * cfg.Step)
		if cfg.Clock != nil {
			cfg.Clock.Set(t)
		}
		acts := r.plan.at(i)
		for _, a := range acts {
			if a.Kind != fAttack {
				r.fault(ctx, a)
			}
		}
		var entered []Event
		for _, e := range w.Advance(t) {
			if e.Person != "" {
				r.badge(ctx, e)
				if e.Present {
					entered = append(entered, e)
				}
				continue
			}
			if err := w.Fire(ctx, e); err != nil {
				r.logf("deliver %v: %v", e, err)
			}
			r.mu.Lock()
			rep.Events++
			r.mu.Unlock()
		}
		for _, e := range entered {
			if o := r.people[e.Person]; o != nil {
				o.entered(ctx, e.Place)
			}
		}
		for _, a := range acts {
			if a.Kind == fAttack {
				r.fault(ctx, a)
			}
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
	if cfg.Ended != nil {
		cfg.Ended()
	}
	return r.finish(rep, w), nil
}

// seeded says whether key is the key the seed derives for id, so the
// simulator can log in as id.
func (r *runner) seeded(id string, key ed25519.PublicKey) bool {
	return key != nil && bytes.Equal(Key(r.cfg.Seed, id).Public().(ed25519.PublicKey), key)
}

// stopAll stops the device programs, then the people, then the bridge,
// each in order.
func (r *runner) stopAll(ctx context.Context) {
	for _, p := range r.progs {
		p.stop(ctx)
	}
	for _, o := range r.order {
		o.stop(ctx)
	}
	if r.badges != nil {
		r.badges.stop(ctx)
	}
}

func (r *runner) finish(rep *Report, w *World) *Report {
	rep.End = w.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	rep.Calls, rep.Denials, rep.Failures = r.calls, r.denials, r.failures
	rep.Latencies = slices.Clone(r.lat)
	slices.Sort(rep.Latencies)
	if r.cfg.Hardware {
		rep.Faults.LateAnswers = w.LateAnswers()
	}
	return rep
}

// chance returns a uniform number in [0, 1) for this run's seed, the
// current step and the parts.
func (r *runner) chance(parts ...string) float64 {
	return float64(r.hash(parts...)>>11) / (1 << 53)
}

// hash returns a 64-bit hash of the seed, the current step and the parts.
func (r *runner) hash(parts ...string) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "run\x00%d\x00%d", r.cfg.Seed, r.step)
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	return mix(h.Sum64())
}

// mix is the splitmix64 finaliser: fnv's low bits are weak.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
