package replay

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/osmose-os/osmose/internal/replay/replaytest"
	"github.com/osmose-os/osmose/internal/simkernel"
	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
	"github.com/osmose-os/osmose/sim"
)

var (
	shared     sync.Once
	sharedDir  string
	sharedErr  error
	sharedRoot string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedRoot != "" {
		os.RemoveAll(sharedRoot)
	}
	os.Exit(code)
}

// faultySim returns the data directory of a simulator run with every
// fault (crashes, drops, slow and stuck devices, skewed clocks, a
// malicious program), presence reports and people, made once per test
// binary. Tests must not change it.
func faultySim(t testing.TB) string {
	t.Helper()
	shared.Do(func() {
		sharedRoot, sharedErr = os.MkdirTemp("", "replay-sim-")
		if sharedErr != nil {
			return
		}
		sharedDir = filepath.Join(sharedRoot, "data")
		top, err := sim.Generate(sim.GenConfig{Floors: 1, Rooms: 2, DevicesPerRoom: 12, People: 6, Seed: 5})
		if err != nil {
			sharedErr = err
			return
		}
		faults, err := sim.ParseFaults("all")
		if err != nil {
			sharedErr = err
			return
		}
		_, sharedErr = simkernel.Run(context.Background(), simkernel.Options{Dir: sharedDir, Topology: top, Seed: 5, People: 6,
			Start: simkernel.DefaultStart.Add(time.Hour), Duration: 4 * time.Hour, Step: 2 * time.Minute,
			Faults: faults, MaxInFlight: 8, Sleep: func(time.Duration) {}})
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return sharedDir
}

// openRO opens a data directory's ledger read-only.
func openRO(t testing.TB, dir string) (*ledger.Ledger, *ledger.BadgerStore) {
	t.Helper()
	s, err := ledger.OpenBadger(filepath.Join(dir, "ledger"), ledger.BadgerOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.Open(context.Background(), s, ledger.Options{})
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); s.Close() })
	return l, s
}

// replayAll replays a data directory's whole ledger.
func replayAll(t testing.TB, dir string, opts Options) (Report, error) {
	t.Helper()
	l, s := openRO(t, dir)
	ctx := context.Background()
	rp, err := Open(ctx, l, s, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	err = rp.Advance(ctx, ^uint64(0))
	return rp.Report(), err
}

// TestSimWithFaults replays a simulator run with every fault, both
// readers, with and without drivers: it passes, and checks what it says.
func TestSimWithFaults(t *testing.T) {
	dir := faultySim(t)
	for _, o := range []Options{{Drivers: true}, {Drivers: true, SlowReader: true}, {}} {
		rep, err := replayAll(t, dir, o)
		if err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		if o.Drivers && !o.SlowReader {
			t.Log(rep.Text())
		}
		if rep.Entries != uint64(rep.Size) || rep.Runs != 1 {
			t.Errorf("%+v: replayed %d of %d entries in %d runs", o, rep.Entries, rep.Size, rep.Runs)
		}
		calls := rep.Kinds[ledger.KindCall]
		if calls == nil || calls.Checked < 400 {
			t.Errorf("%+v: calls %+v: want hundreds checked", o, calls)
		}
		for _, k := range []ledger.Kind{ledger.KindGrant, ledger.KindPresence, ledger.KindRelease} {
			if rep.Kinds[k] == nil || rep.Kinds[k].Checked == 0 {
				t.Errorf("%+v: no %s entry checked: %+v", o, k, rep.Kinds[k])
			}
		}
		if o.Drivers && (rep.Results.Reproduced < 100 || rep.Results.World == 0) {
			t.Errorf("%+v: results %+v: want hundreds reproduced and some with the world's values", o, rep.Results)
		}
		if !o.Drivers && rep.Results.Reproduced != 0 {
			t.Errorf("%+v: results reproduced without drivers: %+v", o, rep.Results)
		}
	}
}

// find returns the seq of the first entry for which match holds.
func find(t *testing.T, dir string, match func(*ledger.Record) bool) uint64 {
	t.Helper()
	l, _ := openRO(t, dir)
	for s := uint64(0); s < uint64(l.Size()); s++ {
		r, err := l.Read(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		if match(r) {
			return s
		}
	}
	t.Fatal("no entry matches")
	return 0
}

// forge copies dir with one entry changed and replays the copy.
func forge(t *testing.T, dir string, seq uint64, change func(*ledger.Entry) error) (Report, error) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "forged")
	if err := replaytest.Forge(context.Background(), dir, dst, seq, change); err != nil {
		t.Fatal(err)
	}
	l, _ := openRO(t, dst)
	if _, err := l.Verify(context.Background(), nil); err != nil {
		t.Fatalf("the forged ledger does not verify: %v", err)
	}
	return replayAll(t, dst, Options{Drivers: true})
}

func wantDivergence(t *testing.T, err error, seq uint64, what string) *Divergence {
	t.Helper()
	var d *Divergence
	if !errors.As(err, &d) {
		t.Fatalf("replay of the forged ledger: %v, want a divergence at seq %d", err, seq)
	}
	if d.Seq != seq || d.What != what {
		t.Fatalf("divergence %v, want one of %s at seq %d", d, what, seq)
	}
	t.Logf("caught: %v", d)
	return d
}

func isDeviceCall(r *ledger.Record, iface uint64, method uint16) bool {
	e := r.Envelope
	return e.Kind == ledger.KindCall && e.Interface == iface && e.Method == method
}

// TestForgedDecisions changes one recorded decision (re-signing the
// whole ledger, as a forger with the kernel's key would): replay catches
// each at its seq.
func TestForgedDecisions(t *testing.T) {
	dir := faultySim(t)
	denied := find(t, dir, func(r *ledger.Record) bool {
		e := r.Envelope
		return e.Kind == ledger.KindCall && e.Decision == ledger.DecisionDeny && strings.HasPrefix(e.Reason, "permission: ")
	})
	admitted := find(t, dir, func(r *ledger.Record) bool {
		return isDeviceCall(r, schema.Light_TypeID, 1) && r.Envelope.Decision == ledger.DecisionAdmit
	})
	granted := find(t, dir, func(r *ledger.Record) bool {
		return r.Envelope.Kind == ledger.KindGrant && r.Envelope.Decision == ledger.DecisionAdmit
	})
	t.Run("deny to admit", func(t *testing.T) {
		_, err := forge(t, dir, denied, func(e *ledger.Entry) error {
			e.Decision, e.Reason = ledger.DecisionAdmit, ""
			return nil
		})
		wantDivergence(t, err, denied, "decision")
	})
	t.Run("admit to deny", func(t *testing.T) {
		_, err := forge(t, dir, admitted, func(e *ledger.Entry) error {
			e.Decision, e.Reason = ledger.DecisionDeny, "permission: setLevel: call g1: level=80 is outside g1's range level=0..60: argument out of range"
			return nil
		})
		wantDivergence(t, err, admitted, "decision")
	})
	t.Run("reason", func(t *testing.T) {
		_, err := forge(t, dir, denied, func(e *ledger.Entry) error {
			e.Reason = strings.Replace(e.Reason, "permission", "not-exist", 1)
			return nil
		})
		wantDivergence(t, err, denied, "reason")
	})
	t.Run("grant body", func(t *testing.T) {
		_, err := forge(t, dir, granted, func(e *ledger.Entry) error {
			var err error
			e.Result, err = rewrite(e.Result, func(s capnp.Struct) error {
				return schema.Grant(s).SetCaveatsSummary("range:level=0..100")
			}, schema.NewRootGrant)
			return err
		})
		wantDivergence(t, err, granted, "grant body")
	})
	t.Run("grant id", func(t *testing.T) {
		_, err := forge(t, dir, granted, func(e *ledger.Entry) error {
			e.Grant += 100
			return nil
		})
		wantDivergence(t, err, granted, "grant")
	})
}

// rewrite copies a body struct into a new message made by newRoot, lets
// edit change it, and returns its canonical bytes.
func rewrite[T ~capnp.StructKind](body []byte, edit func(capnp.Struct) error, newRoot func(*capnp.Segment) (T, error)) ([]byte, error) {
	_, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		return nil, err
	}
	root, err := newRoot(seg)
	if err != nil {
		return nil, err
	}
	s := capnp.Struct(root)
	if err := s.CopyFrom(rootStruct(body)); err != nil {
		return nil, err
	}
	if err := edit(s); err != nil {
		return nil, err
	}
	return capnp.Canonicalize(s)
}

// TestForgedResults changes one recorded result of a deterministic
// driver: replay catches it at the return entry's seq. A changed reading
// (the world's, an input) passes.
func TestForgedResults(t *testing.T) {
	dir := faultySim(t)
	l, _ := openRO(t, dir)
	var state, show, reading uint64
	for s := uint64(1); s < uint64(l.Size()) && (state == 0 || show == 0 || reading == 0); s++ {
		r, err := l.Read(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		e := r.Envelope
		switch {
		case e.Kind == ledger.KindReturn && e.Interface == schema.Light_TypeID && e.Method == 2 && r.Result() != nil && state == 0:
			state = s
		case e.Kind == ledger.KindReturn && e.Interface == schema.Display_TypeID && e.Method == 0 && show == 0:
			show = s
		case e.Kind == ledger.KindCall && e.Interface == schema.ReadingListener_TypeID && e.Decision == ledger.DecisionAdmit && reading == 0:
			reading = s
		}
	}
	if state == 0 || show == 0 || reading == 0 {
		t.Fatalf("no Light.state return (%d), Display.show return (%d) or reading (%d) in the ledger", state, show, reading)
	}
	t.Run("light state", func(t *testing.T) {
		_, err := forge(t, dir, state, func(e *ledger.Entry) error {
			var err error
			e.Result, err = rewrite(e.Result, func(s capnp.Struct) error {
				st, err := schema.Light_state_Results(s).State()
				if err != nil {
					return err
				}
				st.SetLevel(st.Level()/2 + 1)
				return nil
			}, schema.NewRootLight_state_Results)
			return err
		})
		d := wantDivergence(t, err, state, "result")
		if !strings.Contains(d.Recorded, "level") || !strings.Contains(d.Replayed, "level") {
			t.Errorf("the divergence does not show the two states: %v", d)
		}
	})
	t.Run("display error", func(t *testing.T) {
		_, err := forge(t, dir, show, func(e *ledger.Entry) error {
			e.Result, e.Reason = nil, "display: panel unplugged"
			return nil
		})
		// Display.show calls the hardware: a recorded failure is an
		// input, and replay takes it.
		if err != nil {
			t.Fatalf("a hardware failure was not taken as input: %v", err)
		}
	})
	t.Run("reading", func(t *testing.T) {
		rep, err := forge(t, dir, reading, func(e *ledger.Entry) error {
			var err error
			e.Params, err = rewrite(e.Params, func(s capnp.Struct) error {
				r, err := schema.ReadingListener_reading_Params(s).Reading()
				if err != nil {
					return err
				}
				r.SetValue(r.Value() + 1000)
				return nil
			}, schema.NewRootReadingListener_reading_Params)
			return err
		})
		if err != nil {
			t.Fatalf("a changed reading (the world's) failed replay: %v", err)
		}
		if rep.Entries != uint64(rep.Size) {
			t.Fatalf("replayed %d of %d", rep.Entries, rep.Size)
		}
	})
}

// TestAfterErasure forgets a person who was granted a light while
// present: replay still passes, with the erased bodies as opaque steps.
// Who the erased presence was, replay learns from the person's login
// (which names their pseudonym) or, on a ledger whose logins do not,
// from the grant that could only have been made with it.
func TestAfterErasure(t *testing.T) {
	src := faultySim(t)
	t.Run("named by login", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "data")
		if err := copyDir(src, dir); err != nil {
			t.Fatal(err)
		}
		rep := forgetAndReplay(t, dir)
		if rep.Inputs["people whose erased presence a later entry named"] != 1 {
			t.Errorf("inputs %v: want the forgotten person named by their login", rep.Inputs)
		}
	})
	t.Run("found by a grant", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "data")
		err := replaytest.ForgeAll(context.Background(), src, dir, func(_ uint64, e *ledger.Entry) error {
			if e.Kind == ledger.KindLogin {
				e.Subject = "" // as kernels before logins named pseudonyms
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		rep := forgetAndReplay(t, dir)
		if rep.Inputs["people whose erased presence replay matched to a later decision"] != 1 {
			t.Errorf("inputs %v: want the forgotten person found by the grant they got", rep.Inputs)
		}
	})
}

// forgetAndReplay forgets, in the data directory dir, a person who was
// granted something while present, and replays the ledger.
func forgetAndReplay(t *testing.T, dir string) Report {
	ctx := context.Background()
	seed, err := os.ReadFile(filepath.Join(dir, "kernel.key"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ledger.OpenBadger(filepath.Join(dir, "ledger"), ledger.BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.Open(ctx, s, ledger.Options{Key: ed25519.NewKeyFromSeed(seed), Origin: "osmose-sim"})
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	subject := ""
	persons := map[string]string{} // person -> pseudonym, from the bodies (before they go)
	for s := uint64(1); s < uint64(l.Size()) && subject == ""; s++ {
		r, err := l.Read(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		e := r.Envelope
		switch {
		case e.Kind == ledger.KindPresence && r.Params() != nil:
			var b presenceBody
			if err := json.Unmarshal(r.Params(), &b); err != nil {
				t.Fatal(err)
			}
			persons[b.Person] = e.Subject
		case e.Kind == ledger.KindGrant && e.Decision == ledger.DecisionAdmit && persons[e.Actor] != "":
			subject = persons[e.Actor]
		}
	}
	if subject == "" {
		t.Fatal("no person was granted anything while present")
	}
	er, err := l.Forget(ctx, subject, ledger.ForgetOptions{Time: time.Date(2025, 3, 4, 0, 0, 0, 0, time.UTC).UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(l.Close(), s.Close()); err != nil {
		t.Fatal(err)
	}
	rep, err := replayAll(t, dir, Options{Drivers: true})
	if err != nil {
		t.Fatalf("replay after forgetting %s: %v", er.Pseudonym, err)
	}
	t.Log(rep.Text())
	p := rep.Kinds[ledger.KindPresence]
	if p == nil || p.Opaque == 0 {
		t.Errorf("presence %+v: want the erased entries opaque", p)
	}
	return rep
}

// copyDir copies a directory tree.
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o644)
	})
}

// TestProgressAndPrefix: progress is reported as replay goes, a replay
// advanced in steps is the replay in one go, and --until's prefix reports
// the calls still awaiting their returns.
func TestProgressAndPrefix(t *testing.T) {
	dir := faultySim(t)
	l, s := openRO(t, dir)
	ctx := context.Background()
	var seen []uint64
	rp, err := Open(ctx, l, s, Options{Drivers: true, ProgressEvery: 100, Progress: func(done, last uint64) {
		if last != uint64(l.Size())-1 && last != 600 {
			t.Errorf("progress toward %d", last)
		}
		seen = append(seen, done)
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	if err := rp.Advance(ctx, 600); err != nil {
		t.Fatal(err)
	}
	mid := rp.Report()
	if mid.Entries != 601 || mid.Last != 600 {
		t.Errorf("after Advance(600): %d entries, last %d", mid.Entries, mid.Last)
	}
	if err := rp.Advance(ctx, ^uint64(0)); err != nil {
		t.Fatal(err)
	}
	if len(seen) != int(l.Size()-1)/100 || seen[0] != 100 {
		t.Errorf("progress at %v", seen)
	}
	whole, err := replayAll(t, dir, Options{Drivers: true})
	if err != nil {
		t.Fatal(err)
	}
	got := rp.Report()
	if !reflect.DeepEqual(got.Kinds, whole.Kinds) || !reflect.DeepEqual(got.Results, whole.Results) {
		t.Errorf("in steps %+v %+v, in one go %+v %+v", got.Kinds, got.Results, whole.Kinds, whole.Results)
	}
	var b strings.Builder
	WriteProgress(&b, 0)(500, 1000)
	if !strings.HasPrefix(b.String(), "replay: seq 500 of 1000 (50%), ") {
		t.Errorf("progress line %q", b.String())
	}
}
