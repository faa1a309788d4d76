package replay

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osmose-os/osmose/internal/replay/replaytest"
	"github.com/osmose-os/osmose/ledger"
)

// story writes replaytest.Story's ledger.
func story(t *testing.T) (string, map[string]uint64) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	marks, err := replaytest.Story(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, marks
}

// TestStory replays a ledger with every kind of decision (delegation,
// attenuation, refusals, cascading revocation, release, presence,
// a policy change, a restart): it passes, and each was checked.
func TestStory(t *testing.T) {
	dir, marks := story(t)
	rep, err := replayAll(t, dir, Options{Drivers: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(rep.Text())
	if rep.Runs != 2 {
		t.Errorf("%d runs, want 2", rep.Runs)
	}
	for _, k := range []ledger.Kind{ledger.KindGrant, ledger.KindDelegate, ledger.KindRevoke, ledger.KindRelease, ledger.KindPolicy, ledger.KindStart} {
		if tl := rep.Kinds[k]; tl == nil || tl.Checked == 0 || tl.Input+tl.Opaque+tl.Skipped != 0 {
			t.Errorf("%s: %+v, want all checked", k, tl)
		}
	}
	// op's revocation, the leave's, the erasure's and the policy
	// change's; the two runs' start policies, the refused change and the
	// accepted one.
	if rep.Kinds[ledger.KindRevoke].Checked != 4 || rep.Kinds[ledger.KindPolicy].Checked != 4 {
		t.Errorf("revoke %+v, policy %+v: want 4 revocations and 4 policy entries", rep.Kinds[ledger.KindRevoke], rep.Kinds[ledger.KindPolicy])
	}
	// p-0002 was forgotten: their presence report and their call are
	// opaque, their login named their pseudonym.
	want := map[ledger.Kind]Tally{
		ledger.KindPresence: {Checked: 2, Opaque: 1},
		ledger.KindCall:     {Checked: 7, Opaque: 1},
		ledger.KindReturn:   {Checked: 3, Opaque: 1},
	}
	for k, w := range want {
		if got := rep.Kinds[k]; got == nil || *got != w {
			t.Errorf("%s: %+v, want %+v", k, got, w)
		}
	}
	if rep.Inputs["people whose erased presence a later entry named"] != 1 {
		t.Errorf("inputs %v", rep.Inputs)
	}
	if marks["end"] != uint64(rep.Size)-1 || marks["restart"] >= marks["end"] {
		t.Errorf("marks %v, ledger of %d entries", marks, rep.Size)
	}
}

// TestTimeTravel reads the story's state at its marks, and what changed
// between them.
func TestTimeTravel(t *testing.T) {
	dir, marks := story(t)
	l, s := openRO(t, dir)
	ctx := context.Background()
	rp, err := Open(ctx, l, s, Options{Drivers: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	at := func(seq uint64) *State {
		t.Helper()
		if err := rp.Advance(ctx, seq); err != nil {
			t.Fatal(err)
		}
		st, err := rp.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	before := at(marks["revoke"] - 1)
	if ids := grantIDs(before); ids != "g1 g2 g3 g4" {
		t.Errorf("live before the revocation: %s", ids)
	}
	if len(before.Presence) != 1 || before.Presence[0].Places[0] != "campus/hq/f1/r101" {
		t.Errorf("presence before: %+v", before.Presence)
	}
	var g4 *GrantState
	for i := range before.Grants {
		if before.Grants[i].ID == "g4" {
			g4 = &before.Grants[i]
		}
	}
	if g4 == nil || strings.Join(g4.Chain, ",") != "g3 (campus/hq/f1/r101/switch),g1 (op)" || !strings.Contains(g4.Caveats, "level=0..20") {
		t.Errorf("g4: %+v", g4)
	}
	after := at(marks["revoke"])
	d := Compare(before, after)
	if len(d.GrantsEnded) != 3 || d.GrantsEnded[0].How != "revoked" {
		t.Errorf("ended by the revocation: %+v", d.GrantsEnded)
	}
	left := at(marks["leave"] + 1)
	d = Compare(after, left)
	if len(d.Presence) != 1 || len(d.Presence[0].Left) != 1 {
		t.Errorf("presence change: %+v", d.Presence)
	}
	ended := map[string]string{}
	for _, g := range d.GrantsEnded {
		ended[g.ID] = g.How
	}
	if ended["g2"] != "revoked" || ended["g6"] != "" {
		t.Errorf("ended between the revocation and the leave: %+v", d.GrantsEnded)
	}
	end := at(marks["end"])
	d = Compare(left, end)
	if d.Restarts != 1 || d.Policy == nil {
		t.Errorf("diff over the restart: %+v", d)
	}
	for _, g := range d.GrantsEnded {
		if g.How != "kernel restarted" && g.How != "revoked" {
			t.Errorf("grant %s ended %q across the restart", g.ID, g.How)
		}
	}
	var thermo *DeviceState
	for i := range end.Devices {
		if strings.HasSuffix(end.Devices[i].Path, "/thermostat") {
			thermo = &end.Devices[i]
		}
	}
	if thermo == nil || !strings.Contains(thermo.State, "setpoint = 21") {
		t.Errorf("thermostat at the end: %+v", thermo)
	}
	t.Log(end.Text())
}

func grantIDs(st *State) string {
	var ids []string
	for _, g := range st.Grants {
		ids = append(ids, g.ID)
	}
	return strings.Join(ids, " ")
}
