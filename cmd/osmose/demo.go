package main

// osmose demo: a kernel, a generated building and a working day, in one
// process.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/osmose-os/osmose/internal/simkernel"
	"github.com/osmose-os/osmose/sim"
)

const demoDoc = `
Demo starts a kernel on an embedded Badger ledger in a fresh directory,
generates a building, and simulates a working day in it: people badge in,
sit at their desks, go to meetings and to lunch, and leave; occupancy
sensors see them, lights and heating follow, CO2 rises in full rooms.
Every device's program is a Cap'n Proto client of the kernel on its own
connection, logged in with its own key, and every call it makes is on the
ledger. The door badges report each person entering and leaving a room to
the kernel (a presence bridge, "badges"); people log in with their own
keys and get the lights of the room they are in by grants bound to their
presence, which the kernel revokes when they leave. At the end the ledger
is verified from disk and a summary printed.

The same seed, size and fault list give the same building, the same day
and the same ledger, byte for byte.`

func runDemo(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "demo", "demo [flags]")
	floors := fs.Int("floors", 2, "floors of the generated building")
	rooms := fs.Int("rooms", 4, "rooms per floor")
	per := fs.Int("devices-per-room", len(sim.RoomKit), "devices per room")
	people := fs.Int("people", 24, "people working in the building")
	hours := fs.Float64("hours", 12, "simulated hours, from 07:00")
	step := fs.Duration("step", time.Minute, "simulated time per step")
	seed := fs.Int64("seed", 1, "seed of the building, the people, the noise and every key")
	data := fs.String("data", "", "data `DIR` (default: a new temporary directory)")
	speed := fs.Float64("speed", 0, "simulated seconds per real second (0: as fast as possible)")
	faultList := fs.String("faults", "none", "faults to inject: `LIST` (see above), e.g. all")
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: osmose demo [flags]\n\n%s\n\n%s\nFlags:\n", strings.TrimSpace(demoDoc), faultsDoc())
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if *hours <= 0 || *people < 0 {
		return usagef("--hours must be positive and --people not negative")
	}
	faults, err := sim.ParseFaults(*faultList)
	if err != nil {
		return usagef("--faults: %v", err)
	}
	dir := *data
	if dir == "" {
		d, err := os.MkdirTemp("", "osmose-demo-")
		if err != nil {
			return failf("%v", err)
		}
		dir = d
	} else if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return usagef("--data %s is not empty: the demo wants a fresh directory", dir)
	}
	gc := sim.GenConfig{Floors: *floors, Rooms: *rooms, DevicesPerRoom: *per, People: *people, Seed: *seed}
	top, err := sim.Generate(gc)
	if err != nil {
		return usagef("%v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return failf("%v", err)
	}
	b, err := sim.WriteTopology(top, gc)
	if err != nil {
		return failf("%v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "building.yaml"), b, 0o644); err != nil {
		return failf("%v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.cedar"), []byte(sim.Policy), 0o644); err != nil {
		return failf("%v", err)
	}
	w := e.stdout
	fmt.Fprintf(w, "osmose demo — seed %d, data in %s\n", *seed, dir)
	fmt.Fprintf(w, "building: %d floors × %d rooms, %d devices (building.yaml); %d people; policy: devices their own room, people the room they are in, lights ≤ 80 %% (policy.cedar)\n",
		*floors, *rooms, len(top.Devices), *people)
	if faults.Any() {
		fmt.Fprintf(w, "faults: %s (drawn from the seed)\n", faults)
	}
	fmt.Fprintf(w, "simulating %s to %s, one step every %v of building time...\n",
		simkernel.DefaultStart.Format("Mon 15:04"), simkernel.DefaultStart.Add(time.Duration(*hours*float64(time.Hour))).Format("15:04"), *step)
	t0 := time.Now()
	res, err := simkernel.Run(ctx, simkernel.Options{
		Dir: dir, Topology: top, Seed: *seed, People: *people,
		Duration: time.Duration(*hours * float64(time.Hour)), Step: *step,
		Pace: pacer(*speed), Wall: time.Now, Faults: faults,
		Logger: slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		Progress: func(p sim.Progress) {
			fmt.Fprintf(w, "  %s  %2d people in  %4d badge reports  %6d deliveries  %6d calls  %3d denied  %3d faults  (%.1fs)\n",
				p.Time.Format("15:04"), p.Present, p.Presence, p.Events, p.Calls, p.Denials, p.Faults, time.Since(t0).Seconds())
		},
	})
	if err != nil {
		return failf("%v", err)
	}
	wall := time.Since(t0)
	rep := res.Report
	fr := rep.Faults
	fmt.Fprintln(w)
	fmt.Fprintln(w, "summary")
	fmt.Fprintf(w, "  devices     %d, each running its program on its own connection (%d logged in)\n", rep.Devices, rep.Programs)
	fmt.Fprintf(w, "  people      %d (at most %d in the building at once)\n", rep.People, rep.Peak)
	fmt.Fprintf(w, "  presence    %d door-badge reports (presence entries); %d people logged in and got %d grants on their room's lights, bound to their presence; %d revoked as they left (presence revocations)\n",
		rep.Presence, rep.PeopleIn, rep.PersonGrants, rep.PresenceRevoked)
	fmt.Fprintf(w, "  readings    %d sensor readings and switch presses delivered through the kernel\n", rep.Events)
	fmt.Fprintf(w, "  calls       %d made by device programs and people; %d calls admitted on the ledger in all (%.0f/s)\n",
		rep.Calls, res.Admitted, float64(res.Admitted)/wall.Seconds())
	fmt.Fprintf(w, "  denials     %d (e.g. a long press asking for 100 %% light: the policy allows 80 %%)\n", res.Denied)
	fmt.Fprintf(w, "  latency     p50 %v, p99 %v per device-program call, ledgered and durable\n",
		rep.Percentile(0.5).Round(10*time.Microsecond), rep.Percentile(0.99).Round(10*time.Microsecond))
	if faults.Any() {
		fmt.Fprintf(w, "  faults      %s\n", fr)
		for _, p := range fr.Plan {
			fmt.Fprintf(w, "              %s\n", p)
		}
		fmt.Fprintf(w, "              the kernel served everyone else throughout (%d honest calls failed)\n", rep.Failures)
	}
	fmt.Fprintf(w, "  ledger      %d entries, %s on disk (%s)\n", res.Entries, humanBytes(res.Bytes), kindList(res.Kinds))
	if res.VerifyErr != nil {
		fmt.Fprintf(w, "  verify      FAILED: %v\n", res.VerifyErr)
		return &exitError{code: 1, err: res.VerifyErr}
	}
	fmt.Fprintf(w, "  verify      ok: %d envelopes and %d bodies re-hashed, Merkle root %x…\n", res.Verify.Size, res.Verify.Bodies, res.Root[:8])
	fmt.Fprintf(w, "  time        %s of building time in %.1fs\n", rep.End.Sub(rep.Start), wall.Seconds())
	if len(rep.Skipped) > 0 {
		fmt.Fprintf(w, "  no program  %s\n", strings.Join(rep.Skipped, "; "))
	}
	fmt.Fprintf(w, "\nlook closer: osmose ledger tail --data %s   (and ledger verify, trace, caps who)\n", dir)
	return nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func kindList(kinds map[string]int) string {
	var parts []string
	for _, k := range []string{"login", "grant", "call", "return", "presence", "revoke", "release", "logout", "disconnect"} {
		if kinds[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", kinds[k], k))
		}
	}
	return strings.Join(parts, ", ")
}
