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
	fs := newFlags(e, "topology gen", "topology gen --floors F --rooms R --devices-per-room D --seed S [--out FILE] [--policy FILE]")
	floors := fs.Int("floors", 1, "number of floors")
	rooms := fs.Int("rooms", 4, "rooms per floor")
	per := fs.Int("devices-per-room", len(sim.RoomKit), "devices per room (the first N of the room kit; more adds lights)")
	seed := fs.Int64("seed", 1, "seed the device keys derive from")
	out := fs.String("out", "", "write the topology to `FILE` instead of standard output")
	policy := fs.String("policy", "", "also write the default Cedar policy to `FILE`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	c := sim.GenConfig{Floors: *floors, Rooms: *rooms, DevicesPerRoom: *per, Seed: *seed}
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
	fmt.Fprintf(e.stderr, "wrote %s: %d places, %d devices (seed %d)\n", *out, len(top.Places), len(top.Devices), *seed)
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

func runSim(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "sim", "sim --connect ADDR --topology FILE --seed S [--people N] [--duration D] [--speed X]")
	connect := fs.String("connect", "", "kernel `ADDR`: a Unix socket path, unix:PATH, tcp:HOST:PORT or HOST:PORT")
	topo := fs.String("topology", "", "topology `FILE` (its keys must derive from --seed)")
	seed := fs.Int64("seed", 1, "seed of the keys, the people and the noise")
	people := fs.Int("people", 10, "number of people")
	duration := fs.Duration("duration", 2*time.Hour, "simulated time to run")
	speed := fs.Float64("speed", 60, "simulated seconds per real second (0: as fast as possible)")
	kernelID := fs.String("kernel-id", "", "refuse a kernel with another id (default: accept the kernel's)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return usagef("unexpected argument %q", fs.Arg(0))
	case *connect == "":
		return usagef("--connect ADDR is required")
	case *topo == "":
		return usagef("--topology FILE is required")
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
	fmt.Fprintf(e.stderr, "osmose sim: seed %d, %d devices, %d people, %v at %gx, kernel %s\n", *seed, len(top.Devices), *people, *duration, *speed, *connect)
	fmt.Fprintln(e.stderr, "note: the kernel's drivers are its own (osmose serve --drivers fake); this world's physics drive only an in-process kernel (osmose demo)")
	rep, err := sim.Run(ctx, sim.Config{
		Topology: top, World: world, Seed: *seed, KernelID: *kernelID,
		Dial: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		Duration: *duration, Pace: pacer(*speed), Wall: time.Now,
		Progress: func(p sim.Progress) {
			fmt.Fprintf(e.stderr, "  %s  %3d/%d steps  %d people in  %d calls  %d denied\n", p.Time.Format("15:04"), p.Step, p.Steps, p.Present, p.Calls, p.Denials)
		},
	})
	if rep != nil {
		fmt.Fprintf(e.stdout, "programs %d of %d devices; calls %d, denied %d, failed %d; latency p50 %v p99 %v\n",
			rep.Programs, rep.Devices, rep.Calls, rep.Denials, rep.Failures, rep.Percentile(0.5).Round(time.Microsecond), rep.Percentile(0.99).Round(time.Microsecond))
		if len(rep.Skipped) > 0 {
			fmt.Fprintf(e.stdout, "no program: %s\n", strings.Join(rep.Skipped, "; "))
		}
	}
	if err != nil {
		return failf("%v", err)
	}
	return nil
}
