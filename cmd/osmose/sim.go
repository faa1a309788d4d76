package main

// osmose topology gen and osmose sim: generate a building, simulate one.

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/osmose-os/osmose/internal/topology"
	"github.com/osmose-os/osmose/sim"
)

func runTopologyGen(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "topology gen", "topology gen --floors F --rooms R --devices-per-room D [--people N] --seed S [--out FILE] [--policy FILE]")
	floors := fs.Int("floors", 1, "number of floors")
	rooms := fs.Int("rooms", 4, "rooms per floor")
	per := fs.Int("devices-per-room", len(sim.RoomKit), "devices per room (the first N of the room kit; more adds lights)")
	people := fs.Int("people", 10, "people to declare as persons p-0001.. (pseudonyms), for presence and their own logins")
	seed := fs.Int64("seed", 1, "seed the keys derive from")
	out := fs.String("out", "", "write the topology to `FILE` instead of standard output")
	policy := fs.String("policy", "", "also write the default Cedar policy to `FILE`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	c := sim.GenConfig{Floors: *floors, Rooms: *rooms, DevicesPerRoom: *per, People: *people, Seed: *seed}
	top, err := sim.Generate(c)
	if err != nil {
		return usagef("%v", err)
	}
	b, err := sim.WriteTopology(top, c)
	if err != nil {
		return failf("%v", err)
	}
	if *policy != "" {
		if err := os.WriteFile(*policy, []byte(sim.Policy), 0o644); err != nil {
			return failf("write policy: %v", err)
		}
	}
	if *out == "" {
		_, err = e.stdout.Write(b)
		return err
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		return failf("write topology: %v", err)
	}
	fmt.Fprintf(e.stderr, "wrote %s: %d places, %d devices, %d principals (seed %d)\n", *out, len(top.Places), len(top.Devices), len(top.Principals), *seed)
	return nil
}

// pacer returns a sim.Config.Pace that keeps simulated time at speed
// times real time (0: as fast as possible).
func pacer(speed float64) func(ctx context.Context, elapsed time.Duration) error {
	if speed <= 0 {
		return nil
	}
	start := time.Now()
	return func(ctx context.Context, elapsed time.Duration) error {
		due := start.Add(time.Duration(float64(elapsed) / speed))
		if d := time.Until(due); d > 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
}

// faultsDoc documents --faults for osmose sim and osmose demo.
func faultsDoc() string {
	var b strings.Builder
	b.WriteString(`Faults (--faults LIST): comma-separated names, each with an optional count
(crash=3; a bare name takes the count in brackets), "all" or "none". Which
devices, when and how long are drawn from --seed, so a run with the same
seed, building and list injects the same faults.
`)
	for _, f := range sim.FaultNames {
		fmt.Fprintf(&b, "  %-10s [%d] %s\n", f.Name, f.Default, f.Doc)
	}
	return b.String()
}

const simDoc = `
Sim runs the building simulator against a running kernel: every device of
the topology whose key derives from --seed gets its program, on its own
connection, logged in with its own key; the door-badge bridge ("badges",
an operator) reports people entering and leaving rooms; people log in with
their own keys to use the lights of the room they are in. The world's
physics drive only the programs' view here: the kernel's drivers are its
own (osmose serve --drivers fake). osmose demo runs kernel and simulator
in one process, where the same seed gives the same ledger.`

func runSim(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "sim", "sim --connect ADDR --topology FILE --seed S [--people N] [--duration D] [--speed X] [--faults LIST]")
	connect := fs.String("connect", "", "kernel `ADDR`: a Unix socket path, unix:PATH, tcp:HOST:PORT or HOST:PORT")
	topo := fs.String("topology", "", "topology `FILE` (its keys must derive from --seed)")
	seed := fs.Int64("seed", 1, "seed of the keys, the people, the noise and the faults")
	people := fs.Int("people", 10, "number of people")
	duration := fs.Duration("duration", 2*time.Hour, "simulated time to run")
	speed := fs.Float64("speed", 60, "simulated seconds per real second (0: as fast as possible)")
	kernelID := fs.String("kernel-id", "", "refuse a kernel with another id (default: accept the kernel's)")
	faultList := fs.String("faults", "none", "faults to inject: `LIST` (see above)")
	flood := fs.Int("flood", 300, "calls a malicious program's flood sends at once (above the kernel's --max-inflight, 256 by default)")
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: osmose sim --connect ADDR --topology FILE --seed S [--people N] [--duration D] [--speed X] [--faults LIST]\n\n%s\n\n%s\nAgainst a kernel in another process, slow and stuck act on this world's\nhardware only (the kernel's drivers are its own), a flood's split between\nadmitted and overloaded calls depends on timing, and so does the ledger;\nosmose demo runs every fault deterministically.\n\nFlags:\n",
			strings.TrimSpace(simDoc), faultsDoc())
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	faults, ferr := sim.ParseFaults(*faultList)
	switch {
	case fs.NArg() > 0:
		return usagef("unexpected argument %q", fs.Arg(0))
	case *connect == "":
		return usagef("--connect ADDR is required")
	case *topo == "":
		return usagef("--topology FILE is required")
	case ferr != nil:
		return usagef("--faults: %v", ferr)
	}
	top, err := topology.Load(*topo)
	if err != nil {
		return failf("%v", err)
	}
	start := time.Now().UTC().Truncate(time.Minute)
	world, err := sim.NewWorld(sim.WorldConfig{Topology: top, Seed: *seed, People: *people, Start: start})
	if err != nil {
		return failf("%v", err)
	}
	network, addr := listenAddr(*connect)
	fmt.Fprintf(e.stderr, "osmose sim: seed %d, %d devices, %d people, %v at %gx, faults %s, kernel %s\n", *seed, len(top.Devices), *people, *duration, *speed, faults, *connect)
	fmt.Fprintln(e.stderr, "note: the kernel's drivers are its own (osmose serve --drivers fake); this world's physics drive only an in-process kernel (osmose demo)")
	rep, err := sim.Run(ctx, sim.Config{
		Topology: top, World: world, Seed: *seed, KernelID: *kernelID,
		Dial: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		Duration: *duration, Pace: pacer(*speed), Wall: time.Now,
		Faults: faults, FloodCalls: *flood,
		Progress: func(p sim.Progress) {
			fmt.Fprintf(e.stderr, "  %s  %3d/%d steps  %d people in  %d badge reports  %d calls  %d denied  %d faults\n",
				p.Time.Format("15:04"), p.Step, p.Steps, p.Present, p.Presence, p.Calls, p.Denials, p.Faults)
		},
	})
	if rep != nil {
		fmt.Fprintf(e.stdout, "seed %d: programs %d of %d devices; calls %d, denied %d, failed %d; latency p50 %v p99 %v\n",
			rep.Seed, rep.Programs, rep.Devices, rep.Calls, rep.Denials, rep.Failures, rep.Percentile(0.5).Round(time.Microsecond), rep.Percentile(0.99).Round(time.Microsecond))
		fmt.Fprintf(e.stdout, "presence: %d badge reports, %d presence-bound grants revoked as people left; %d people logged in, %d grants, %d calls\n",
			rep.Presence, rep.PresenceRevoked, rep.PeopleIn, rep.PersonGrants, rep.PersonCalls)
		if faults.Any() {
			fmt.Fprintf(e.stdout, "faults: %s\n", rep.Faults)
			for _, p := range rep.Faults.Plan {
				fmt.Fprintf(e.stdout, "  %s\n", p)
			}
		}
		if len(rep.Skipped) > 0 {
			fmt.Fprintf(e.stdout, "no program: %s\n", strings.Join(rep.Skipped, "; "))
		}
	}
	if err != nil {
		return failf("%v", err)
	}
	return nil
}
