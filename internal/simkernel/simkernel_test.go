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
	top, err := sim.Generate(sim.GenConfig{Floors: 1, Rooms: 2, DevicesPerRoom: 12, People: 6, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	return Options{Dir: t.TempDir(), Topology: top, Seed: seed, People: 6,
		Start: DefaultStart.Add(time.Hour), Duration: 4 * time.Hour, Step: 2 * time.Minute, Wall: time.Now}
}

// TestEndToEnd runs a small building through the kernel: every device
// program logs in, the people's day produces calls on the ledger, the door
// badges report them in and out, people use the lights of the room they
// are in by grants the kernel revokes when they leave, and the ledger
// verifies from disk.
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
	if want := rep.Devices + 1 + rep.PeopleIn; res.Kinds["login"] != want || res.Kinds["logout"] != want {
		t.Errorf("%d login and %d logout entries, want %d each (devices, the badge bridge, people)", res.Kinds["login"], res.Kinds["logout"], want)
	}
	if res.Admitted < 100 || rep.Peak == 0 {
		t.Errorf("only %d admitted calls on the ledger, peak %d people", res.Admitted, rep.Peak)
	}
	// Presence: every badge report is a presence entry; people got
	// presence-bound grants, which leaving revoked.
	t.Logf("presence: %d reports, %d grants revoked; people: %d logged in, %d grants, %d calls", rep.Presence, rep.PresenceRevoked, rep.PeopleIn, rep.PersonGrants, rep.PersonCalls)
	if rep.Presence == 0 || res.Kinds["presence"] != rep.Presence {
		t.Errorf("%d presence reports, %d presence entries", rep.Presence, res.Kinds["presence"])
	}
	if rep.PeopleIn == 0 || rep.PersonGrants == 0 || rep.PresenceRevoked == 0 || res.Kinds["revoke"] == 0 {
		t.Errorf("people logged in %d, got %d grants, %d revoked by presence, %d revoke entries: want some of each",
			rep.PeopleIn, rep.PersonGrants, rep.PresenceRevoked, res.Kinds["revoke"])
	}
}

// TestDeterministic runs the same building and seed twice: the two ledgers
// must be equal entry for entry (envelope CIDs, hence the tree root), the
// session ends at the very end included.
func TestDeterministic(t *testing.T) {
	runTwice(t, func() Options {
		o := small(t, 11)
		o.Duration = 2 * time.Hour
		return o
	})
}

// TestFaults runs a building with every fault twice: the kernel survives
// them all, the ledger verifies, the faults did what they say, and the two
// ledgers are equal entry for entry.
func TestFaults(t *testing.T) {
	faults, err := sim.ParseFaults("all")
	if err != nil {
		t.Fatal(err)
	}
	res := runTwice(t, func() Options {
		o := small(t, 5)
		o.Faults = faults
		o.MaxInFlight = 8 // a flood of 14 calls: 8 admitted, 6 overloaded
		o.Sleep = func(time.Duration) {}
		return o
	})
	rep, f := res.Report, res.Report.Faults
	t.Logf("faults: %s\nplan:\n  %s", f, strings.Join(f.Plan, "\n  "))
	t.Logf("ledger %d entries %v", res.Entries, res.Kinds)
	if res.VerifyErr != nil {
		t.Fatalf("ledger does not verify: %v", res.VerifyErr)
	}
	if f.Crashes != 2 || f.Restarts != 2 || f.Drops != 2 || f.Reconnects != 2 || f.Slow != 2 || f.Stuck != 2 || f.Skewed != 2 || f.Malicious != 1 {
		t.Errorf("faults injected: %+v", f)
	}
	if f.Attacks < 5 || f.Denied < 5 || f.Overloaded == 0 || f.Hostile == 0 || f.Replays == 0 {
		t.Errorf("the malicious program: %d attacks, %d denied, %d overloaded, %d hostile connections, %d replays", f.Attacks, f.Denied, f.Overloaded, f.Hostile, f.Replays)
	}
	if got := res.Kinds["disconnect"]; got != f.Crashes+f.Drops+f.Hostile {
		t.Errorf("%d disconnect entries, want one per crash, drop and hostile connection (%d)", got, f.Crashes+f.Drops+f.Hostile)
	}
	// Everyone else went on: the programs that were never hit made their
	// calls, and only the malicious program's were refused.
	if rep.Failures > 0 {
		t.Errorf("%d calls of honest programs failed", rep.Failures)
	}
	if res.Admitted < 100 {
		t.Errorf("only %d admitted calls", res.Admitted)
	}
}

// runTwice runs opts() twice and checks that the two ledgers are equal,
// entry for entry; it returns the first run's result.
func runTwice(t *testing.T, opts func() Options) *Result {
	t.Helper()
	ctx := context.Background()
	var results []*Result
	var cids, sums [][]string
	for range 2 {
		o := opts()
		res, err := Run(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		c, s, err := CIDs(ctx, o.Dir)
		if err != nil {
			t.Fatal(err)
		}
		cids, sums = append(cids, c), append(sums, s)
		results = append(results, res)
	}
	a, b := cids[0], cids[1]
	q := results[0].Quiesced
	if q == 0 || q != results[1].Quiesced {
		t.Fatalf("ledgers of %d and %d entries, quiet at %d and %d", len(a), len(b), q, results[1].Quiesced)
	}
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			t.Fatalf("ledgers diverge at seq %d of %d (the simulation ended at %d):\n  %s\n  %s", i, len(a), q, sums[0][i], sums[1][i])
		}
	}
	if len(a) != len(b) || results[0].Root != results[1].Root {
		t.Fatalf("ledgers of %d and %d entries, roots %v and %v", len(a), len(b), results[0].Root, results[1].Root)
	}
	t.Logf("two runs: %d entries each, identical (simulation ended at seq %d)", len(a), q)
	return results[0]
}
