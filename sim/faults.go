package sim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/osmose-os/osmose/internal/topology"
	"github.com/osmose-os/osmose/schema"
)

// Faults says which faults a run injects, and how many of each (see the
// package doc, "Faults"). The zero value injects none.
type Faults struct {
	Crash     int // device programs that crash, and restart later
	Drop      int // connections the network drops; the program reconnects at once
	Slow      int // devices that answer late for a while
	Stuck     int // sensors that keep reporting one value for a while
	Skew      int // device programs whose clock is off
	Malicious int // device programs that attack the kernel
}

// FaultNames are the names ParseFaults takes, in the order String writes
// them, with the count a bare name means.
var FaultNames = []struct {
	Name    string
	Default int
	Doc     string
}{
	{"crash", 2, "a device program crashes (its connection dies without a word) and restarts 5-45 min later: logs in, opens, subscribes again"},
	{"drop", 2, "the network drops a program's connection; the program reconnects at once, keeping its state"},
	{"slow", 2, "a light's or display's hardware answers each request 2-20 ms late for 30-120 min"},
	{"stuck", 2, "a sensor keeps reporting the value it last reported for 30-180 min"},
	{"skew", 2, "an occupancy or display program's clock is 3-20 min off: the display stamps the wrong time, the lights-off timer fires early or late"},
	{"malicious", 1, "a sensor's program attacks: opens devices of other rooms, calls methods it was never given, replays a released grant and its own login, floods past the in-flight bound, sends garbage and forged capabilities on new connections"},
}

func (f *Faults) field(name string) *int {
	switch name {
	case "crash":
		return &f.Crash
	case "drop":
		return &f.Drop
	case "slow":
		return &f.Slow
	case "stuck":
		return &f.Stuck
	case "skew":
		return &f.Skew
	case "malicious":
		return &f.Malicious
	}
	return nil
}

// ParseFaults reads a fault list: comma-separated names of FaultNames,
// each with an optional count ("crash=3"; a bare name takes its default
// count), or "all" (every fault at its default count), or "none" or ""
// (no faults).
func ParseFaults(list string) (Faults, error) {
	var f Faults
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		name, count, hasCount := strings.Cut(item, "=")
		switch name {
		case "", "none":
			continue
		case "all":
			for _, n := range FaultNames {
				*f.field(n.Name) = n.Default
			}
			continue
		}
		p := f.field(name)
		if p == nil {
			return Faults{}, fmt.Errorf("unknown fault %q (want %s, all or none)", name, strings.Join(faultNameList(), ", "))
		}
		n := 0
		for _, d := range FaultNames {
			if d.Name == name {
				n = d.Default
			}
		}
		if hasCount {
			var err error
			if n, err = strconv.Atoi(count); err != nil || n < 0 || n > 1000 {
				return Faults{}, fmt.Errorf("fault %s: count %q: want 0..1000", name, count)
			}
		}
		*p = n
	}
	return f, nil
}

func faultNameList() []string {
	var out []string
	for _, n := range FaultNames {
		out = append(out, n.Name)
	}
	return out
}

// Any says whether f injects anything.
func (f Faults) Any() bool { return f != Faults{} }

// String returns f as ParseFaults reads it ("crash=2,malicious=1"), or
// "none".
func (f Faults) String() string {
	var parts []string
	for _, n := range FaultNames {
		if v := *f.field(n.Name); v > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", n.Name, v))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

// FaultReport counts what the faults of a run did.
type FaultReport struct {
	Plan []string // each fault as planned: when, what, where

	Crashes, Restarts int // programs crashed, and restarted
	Drops, Reconnects int // connections dropped, and programs reconnected
	Slow              int // devices made slow
	LateAnswers       int // requests slow devices answered late (in process only)
	Stuck             int // sensors stuck
	Skewed            int // programs with a skewed clock

	Malicious  int // malicious programs
	Attacks    int // attacks they made
	Denied     int // of their calls, refused by the kernel (permission, revoked, unimplemented, login)
	Admitted   int // of their calls, admitted (a flood's first calls; a replayed grant's first call)
	Overloaded int // of their flood calls, refused with "overloaded"
	Hostile    int // connections on which they sent garbage or forged capabilities
	Replays    int // replays (a released grant's gate, a used login)
}

// String summarises r in one line, e.g. "2 crashes (2 restarts), 1 drop,
// 41 calls of the malicious program denied, ...".
func (r FaultReport) String() string {
	var parts []string
	add := func(n int, one, many string, args ...any) {
		if n == 0 {
			return
		}
		w := many
		if n == 1 {
			w = one
		}
		parts = append(parts, fmt.Sprintf("%d "+w, append([]any{n}, args...)...))
	}
	add(r.Crashes, "crash (%d restarted)", "crashes (%d restarted)", r.Restarts)
	add(r.Drops, "dropped connection (%d reconnected)", "dropped connections (%d reconnected)", r.Reconnects)
	add(r.Slow, "slow device (%d late answers)", "slow devices (%d late answers)", r.LateAnswers)
	add(r.Stuck, "stuck sensor", "stuck sensors")
	add(r.Skewed, "skewed clock", "skewed clocks")
	if r.Malicious > 0 {
		parts = append(parts, fmt.Sprintf("%d malicious program: %d attacks, %d calls denied, %d overloaded, %d admitted, %d replays, %d hostile connections",
			r.Malicious, r.Attacks, r.Denied, r.Overloaded, r.Admitted, r.Replays, r.Hostile))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}

// injected counts the faults injected so far.
func (r FaultReport) injected() int {
	return r.Crashes + r.Drops + r.Slow + r.Stuck + r.Attacks
}

// faultKind is one action of the fault plan.
type faultKind int

const (
	fCrash faultKind = iota
	fRestart
	fDrop
	fSlowOn
	fSlowOff
	fStick
	fUnstick
	fAttack
)

// faultAction is one planned fault: at step Step (1-based), do Kind to
// Device.
type faultAction struct {
	Step   int
	Kind   faultKind
	Device string
	Delay  time.Duration // slow: how late each answer
	Attack attackKind
}

// faultPlan is a run's faults, drawn from the seed before the run.
type faultPlan struct {
	actions   []faultAction // by step, stable
	skew      map[string]time.Duration
	malicious map[string]bool
	desc      []string
}

// planFaults draws the faults of a run: which devices, which steps, how
// long, from the seed, the topology (devices whose key derives from the
// seed, in topology order) and the number of steps. It reads nothing else,
// so the same seed, topology, duration and fault list give the same plan.
func planFaults(f Faults, seed int64, devs []topology.Device, steps int, step time.Duration, start time.Time) *faultPlan {
	p := &faultPlan{skew: map[string]time.Duration{}, malicious: map[string]bool{}}
	if !f.Any() || steps < 1 {
		return p
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6661756c7473)) // "faults"
	used := map[string]bool{}
	// pick returns up to n distinct unused devices of the classes, in a
	// seeded order.
	pick := func(n int, classes ...schema.DeviceClass) []topology.Device {
		var cands []topology.Device
		for _, d := range devs {
			if slices.Contains(classes, d.Class) && !used[d.Path] {
				cands = append(cands, d)
			}
		}
		var out []topology.Device
		for _, i := range rng.Perm(len(cands)) {
			if len(out) == n {
				break
			}
			out = append(out, cands[i])
			used[cands[i].Path] = true
		}
		return out
	}
	at := func(lo, hi float64) int { // a step in [lo, hi) of the run
		a, b := int(lo*float64(steps)), int(hi*float64(steps))
		if b <= a {
			b = a + 1
		}
		return min(steps, 1+a+rng.IntN(b-a))
	}
	span := func(lo, hi time.Duration) int { // steps of a duration in [lo, hi]
		d := lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
		return max(1, int(d/step))
	}
	when := func(s int) string { return start.Add(time.Duration(s) * step).Format("15:04") }
	add := func(a faultAction) { p.actions = append(p.actions, a) }

	// The malicious program first: a passive sensor's, so that its own
	// program's work is not missed; then the others, each on devices of
	// their own.
	mal := pick(f.Malicious, schema.DeviceClass_temperature, schema.DeviceClass_illuminance, schema.DeviceClass_co2)
	if len(mal) < f.Malicious {
		mal = append(mal, pick(f.Malicious-len(mal), schema.DeviceClass_occupancy)...)
	}
	for _, d := range mal {
		p.malicious[d.Path] = true
		n := min(30, max(len(attackKinds), steps/8))
		first := rng.IntN(len(attackKinds))
		for i := range n {
			// Spread over the run, jittered within each stretch.
			s := 1 + i*steps/n + rng.IntN(max(1, steps/n))
			add(faultAction{Step: min(s, steps), Kind: fAttack, Device: d.Path, Attack: attackKinds[(first+i)%len(attackKinds)]})
		}
		p.desc = append(p.desc, fmt.Sprintf("malicious %s: %d attacks", d.Path, n))
	}
	// The faults with the fewest candidates pick first.
	for _, d := range pick(f.Skew, schema.DeviceClass_occupancy, schema.DeviceClass_display) {
		off := time.Duration(3+rng.IntN(18)) * time.Minute
		if rng.IntN(2) == 0 {
			off = -off
		}
		p.skew[d.Path] = off
		p.desc = append(p.desc, fmt.Sprintf("skew %s %+v", d.Path, off))
	}
	for _, d := range pick(f.Stuck, schema.DeviceClass_temperature, schema.DeviceClass_co2, schema.DeviceClass_illuminance, schema.DeviceClass_occupancy) {
		s := at(0.05, 0.7)
		n := span(30*time.Minute, 180*time.Minute)
		add(faultAction{Step: s, Kind: fStick, Device: d.Path})
		if s+n <= steps {
			add(faultAction{Step: s + n, Kind: fUnstick, Device: d.Path})
		}
		p.desc = append(p.desc, fmt.Sprintf("stuck %s %s-%s", d.Path, when(s), when(s+n)))
	}
	for _, d := range pick(f.Slow, schema.DeviceClass_light, schema.DeviceClass_display) {
		s := at(0.05, 0.6)
		n := span(30*time.Minute, 120*time.Minute)
		delay := time.Duration(2+rng.IntN(19)) * time.Millisecond
		add(faultAction{Step: s, Kind: fSlowOn, Device: d.Path, Delay: delay})
		if s+n <= steps {
			add(faultAction{Step: s + n, Kind: fSlowOff, Device: d.Path})
		}
		p.desc = append(p.desc, fmt.Sprintf("slow %s (%v per answer) %s-%s", d.Path, delay, when(s), when(s+n)))
	}
	// Crashes and drops: programs whose subscriptions, if any, are to
	// sensors (the harness can tell when a sensor's driver has dropped a
	// dead program's subscription; a switch's driver does not say).
	restartable := []schema.DeviceClass{
		schema.DeviceClass_light, schema.DeviceClass_doorLock, schema.DeviceClass_speaker, schema.DeviceClass_microphone,
		schema.DeviceClass_occupancy, schema.DeviceClass_thermostat, schema.DeviceClass_co2, schema.DeviceClass_temperature,
		schema.DeviceClass_illuminance, schema.DeviceClass_display,
	}
	for _, d := range pick(f.Crash, restartable...) {
		s := at(0.1, 0.7)
		down := span(5*time.Minute, 45*time.Minute)
		add(faultAction{Step: s, Kind: fCrash, Device: d.Path})
		if s+down <= steps {
			add(faultAction{Step: s + down, Kind: fRestart, Device: d.Path})
		}
		p.desc = append(p.desc, fmt.Sprintf("crash %s at %s, restart at %s", d.Path, when(s), when(s+down)))
	}
	for _, d := range pick(f.Drop, restartable...) {
		s := at(0.1, 0.9)
		add(faultAction{Step: s, Kind: fDrop, Device: d.Path})
		p.desc = append(p.desc, fmt.Sprintf("drop %s at %s", d.Path, when(s)))
	}
	slices.SortStableFunc(p.actions, func(a, b faultAction) int { return a.Step - b.Step })
	return p
}

// at returns the actions of step i.
func (p *faultPlan) at(i int) []faultAction {
	lo, _ := slices.BinarySearchFunc(p.actions, i, func(a faultAction, i int) int { return a.Step - i })
	hi := lo
	for hi < len(p.actions) && p.actions[hi].Step == i {
		hi++
	}
	return p.actions[lo:hi]
}

// fault injects one planned fault.
func (r *runner) fault(ctx context.Context, a faultAction) {
	w := r.cfg.World
	fr := &r.rep.Faults
	count := func(n *int) {
		r.mu.Lock()
		*n++
		r.mu.Unlock()
	}
	p := r.byPath[a.Device]
	switch a.Kind {
	case fCrash:
		if p == nil || p.down || p.c == nil {
			return
		}
		if err := p.cut(ctx); err != nil {
			r.logf("%s: crash: %v", a.Device, err)
		}
		p.down = true
		count(&fr.Crashes)
	case fRestart:
		if p == nil || !p.down {
			return
		}
		// A restarted program starts from scratch.
		fresh := &program{r: r, dev: p.dev, room: p.room, skew: p.skew, malicious: p.malicious}
		if err := fresh.connect(ctx); err != nil {
			r.logf("%s: restart: %v", a.Device, err)
			return
		}
		r.progs[slices.Index(r.progs, p)] = fresh
		r.byPath[a.Device] = fresh
		if err := fresh.start(ctx); err != nil {
			r.logf("%s: restart: %v", a.Device, err)
		}
		count(&fr.Restarts)
	case fDrop:
		if p == nil || p.down || p.c == nil {
			return
		}
		if err := p.cut(ctx); err != nil {
			r.logf("%s: drop: %v", a.Device, err)
		}
		count(&fr.Drops)
		// The program notices and reconnects at once, keeping its state.
		if err := p.connect(ctx); err != nil {
			r.logf("%s: reconnect: %v", a.Device, err)
			p.down = true
			return
		}
		if err := p.start(ctx); err != nil {
			r.logf("%s: reconnect: %v", a.Device, err)
		}
		count(&fr.Reconnects)
	case fSlowOn:
		w.Slow(a.Device, a.Delay)
		count(&fr.Slow)
	case fSlowOff:
		w.Slow(a.Device, 0)
	case fStick:
		if _, err := w.Freeze(a.Device); err != nil {
			r.logf("%s: stick: %v", a.Device, err)
			return
		}
		count(&fr.Stuck)
	case fUnstick:
		if err := w.Unstick(a.Device); err != nil {
			r.logf("%s: unstick: %v", a.Device, err)
		}
	case fAttack:
		if p == nil || p.down || p.c == nil {
			return
		}
		r.attack(ctx, p, a.Attack)
	}
}

// connect dials the kernel and logs the program in.
func (p *program) connect(ctx context.Context) error {
	nc, err := p.r.cfg.Dial(ctx)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	c, err := dial(ctx, nc, p.r.cfg.KernelID, p.dev.Path, Key(p.r.cfg.Seed, p.dev.Path))
	if err != nil {
		return err
	}
	p.c, p.down = c, false
	return nil
}
