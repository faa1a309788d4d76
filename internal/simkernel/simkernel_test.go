package simkernel

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/osmose-os/osmose/sim"
)

func small(t *testing.T, seed int64) Options {
	t.Helper()
	top, err := sim.Generate(sim.GenConfig{Floors: 1, Rooms: 2, DevicesPerRoom: 12, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	return Options{Dir: t.TempDir(), Topology: top, Seed: seed, People: 6,
		Start: DefaultStart.Add(time.Hour), Duration: 4 * time.Hour, Step: 2 * time.Minute, Wall: time.Now}
}

// TestEndToEnd runs a small building through the kernel: every device
// program logs in, the people's day produces calls on the ledger, and the
// ledger verifies from disk.
func TestEndToEnd(t *testing.T) {
	o := small(t, 7)
	res, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	rep := res.Report
	t.Logf("programs %d/%d, events %d, calls %d, denials %d, failures %d, p50 %v p99 %v; ledger %d entries %v",
		rep.Programs, rep.Devices, rep.Events, rep.Calls, rep.Denials, rep.Failures, rep.Percentile(0.5), rep.Percentile(0.99), res.Entries, res.Kinds)
	if rep.Programs != rep.Devices || len(rep.Skipped) > 0 {
		t.Errorf("%d of %d programs started; skipped %v", rep.Programs, rep.Devices, rep.Skipped)
	}
	if res.VerifyErr != nil {
		t.Fatalf("ledger does not verify: %v", res.VerifyErr)
	}
	if rep.Failures > 0 {
		t.Errorf("%d calls failed", rep.Failures)
	}
	if res.Kinds["login"] != rep.Devices {
		t.Errorf("%d login entries, want %d", res.Kinds["login"], rep.Devices)
	}
	if res.Admitted < 100 || rep.Peak == 0 {
		t.Errorf("only %d admitted calls on the ledger, peak %d people", res.Admitted, rep.Peak)
	}
}

// TestDeterministic runs the same building and seed twice: the two ledgers
// must be equal entry for entry (envelope CIDs, hence the tree root).
func TestDeterministic(t *testing.T) {
	ctx := context.Background()
	var roots []string
	var cids, sums [][]string
	var quiet []int64
	for range 2 {
		o := small(t, 11)
		o.Duration = 2 * time.Hour
		res, err := Run(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		c, s, err := CIDs(ctx, o.Dir)
		if err != nil {
			t.Fatal(err)
		}
		cids, sums = append(cids, c), append(sums, s)
		quiet = append(quiet, res.Quiesced)
		roots = append(roots, res.Root.String())
	}
	a, b := cids[0], cids[1]
	if quiet[0] != quiet[1] || quiet[0] == 0 {
		t.Fatalf("ledgers of %d and %d entries, quiet at %d and %d", len(a), len(b), quiet[0], quiet[1])
	}
	// Up to the end of the simulation: byte for byte.
	for i := range quiet[0] {
		if a[i] != b[i] {
			t.Fatalf("ledgers diverge at seq %d of %d:\n  %s\n  %s", i, len(a), sums[0][i], sums[1][i])
		}
	}
	// The session ends: the same actors in the same order. The kernel
	// records a hang-up as "logout", "disconnect" or occasionally both,
	// depending on a race inside the kernel between the rpc layer
	// releasing the session and the connection's end, so the tail's kinds
	// and length may differ.
	actors := func(sums []string) string {
		var out []string
		for _, s := range sums[quiet[0]:] {
			a := strings.Fields(s)[2]
			if len(out) == 0 || out[len(out)-1] != a {
				out = append(out, a)
			}
		}
		return strings.Join(out, " ")
	}
	if actors(sums[0]) != actors(sums[1]) {
		t.Fatalf("sessions end in a different order:\n  %s\n  %s", actors(sums[0]), actors(sums[1]))
	}
	same := roots[0] == roots[1]
	t.Logf("two runs: %d entries each, identical up to seq %d (end of simulation); whole ledgers identical: %v", len(a), quiet[0], same)
}
