package main

// osmose replay and osmose bench replay: the auditor's re-execution of a
// ledger from genesis (internal/replay).

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/osmose-os/osmose/internal/replay"
	"github.com/osmose-os/osmose/internal/replay/replaytest"
	"github.com/osmose-os/osmose/ledger"
)

const replayDoc = `
Replay rebuilds the kernel's state from the ledger's genesis, entry by
entry, and checks that every recorded decision comes out the same: each
grant, delegation, revocation, release, policy change, presence report
and call is asked again of the caps table (built from the run's topology
and policy entries) at its recorded time, and its decision, reason and
grant must match. With --drivers sim (the default) every admitted call is
also run on a fresh driver of package drivers, and its result must hash to
the recorded result's CID; the world's values in a result (a sensor's
reading, a measured temperature), hardware failures and which switch
buttons are held are inputs, taken from the record. Logins, session ends
and the answers of callbacks are inputs too; bodies an erasure removed
make their entries opaque steps. The report counts each kind of entry as
checked, input, opaque or skipped, and says why entries were inputs.

It exits 0 when every entry replays, and 1 at the first divergence,
naming its seq, what was recorded and what replay produced. --until SEQ
stops after that entry. Progress goes to stderr every second when it is a
terminal, or with --progress.

A ledger written by a kernel whose drivers are not package drivers on a
logical clock shared with the kernel (osmose serve's fake drivers, real
hardware with wall-clock timestamps) replays with --drivers none: its
decisions are checked, its results are inputs.`

// replayFlags are the flags replay and state share.
type replayFlags struct {
	ledgerFlags
	drivers  string
	tz       string
	progress bool
	reader   string
}

func (rf *replayFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&rf.drivers, "drivers", "sim", "re-run the drivers of package drivers and check their results (`sim`), or take results as inputs (none)")
	fs.StringVar(&rf.tz, "tz", "UTC", "the time `ZONE` the kernel reckoned caveat time windows in (kernel.Config.Location)")
	fs.BoolVar(&rf.progress, "progress", false, "report progress on stderr even when it is not a terminal")
	fs.StringVar(&rf.reader, "reader", "store", "read entries from the store (`store`, fast) or through the ledger API (ledger)")
}

// options checks the flags and returns the replay options.
func (rf *replayFlags) options(e *env) (replay.Options, error) {
	var o replay.Options
	switch rf.drivers {
	case "sim":
		o.Drivers = true
	case "none":
	default:
		return o, usagef("--drivers %q: want sim or none", rf.drivers)
	}
	switch rf.reader {
	case "store":
	case "ledger":
		o.SlowReader = true
	default:
		return o, usagef("--reader %q: want store or ledger", rf.reader)
	}
	loc, err := time.LoadLocation(rf.tz)
	if err != nil {
		return o, usagef("--tz %q: %v", rf.tz, err)
	}
	o.Location = loc
	if rf.progress || isTerminal(e.stderr) {
		o.Progress = replay.WriteProgress(e.stderr, time.Second)
		o.ProgressEvery = 4096
	}
	return o, nil
}

// openReplay opens a data directory's ledger read-only and prepares a
// replay of it. The close function closes all.
func openReplay(ctx context.Context, rf *replayFlags, o replay.Options) (*replay.Replay, func(), error) {
	dir, err := ledgerStoreDir(rf.data)
	if err != nil {
		return nil, nil, err
	}
	if rf.key != "" {
		if _, err := note.NewVerifier(rf.key); err != nil {
			return nil, nil, usagef("--key: not a note verifier key: %v", err)
		}
	}
	store, err := openBadgerReadOnly(dir)
	if err != nil {
		return nil, nil, err
	}
	l, err := ledger.Open(ctx, store, ledger.Options{})
	if err != nil {
		store.Close()
		return nil, nil, failf("%s: %v", dir, strings.TrimPrefix(err.Error(), "open ledger: "))
	}
	closeAll := func() {
		l.Close()
		store.Close()
	}
	if rf.key != "" && rf.key != l.Meta().Verifier {
		closeAll()
		return nil, nil, failf("the ledger's checkpoints are signed by %s, not by the trusted key %s", l.Meta().Verifier, rf.key)
	}
	rp, err := replay.Open(ctx, l, store, o)
	if err != nil {
		closeAll()
		return nil, nil, failf("%v", err)
	}
	return rp, func() { rp.Close(); closeAll() }, nil
}

// parseSeq reads a seq argument and checks it is on the ledger.
func parseSeq(what, s string, size uint64) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, usagef("%s %q: want a seq (a number)", what, s)
	}
	if n >= size {
		return 0, failf("no entry at seq %d: the ledger holds seqs 0 to %d", n, size-1)
	}
	return n, nil
}

// replayFailure turns a replay's error into the command's: a divergence
// or an unreadable ledger exits 1, a cancellation says so.
func replayFailure(err error) error {
	switch {
	case errors.Is(err, context.Canceled):
		return failf("interrupted")
	case replay.IsDivergence(err), errors.Is(err, replay.ErrCorrupt):
		return &exitError{code: 1, err: err}
	}
	return failf("%v", err)
}

func runReplay(ctx context.Context, e *env, args []string) error {
	var rf replayFlags
	fs := ledgerFlagSet(e, "replay", "replay --data DIR [--until SEQ] [--drivers sim|none] [--json] [--progress]", replayDoc, &rf.ledgerFlags)
	until := fs.String("until", "", "replay the entries up to and including `SEQ` (default: all)")
	rf.register(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	o, err := rf.options(e)
	if err != nil {
		return err
	}
	rp, closeFn, err := openReplay(ctx, &rf, o)
	if err != nil {
		return err
	}
	defer closeFn()
	last := rp.Size() - 1
	if *until != "" {
		if last, err = parseSeq("--until", *until, rp.Size()); err != nil {
			return err
		}
	}
	rerr := rp.Advance(ctx, last)
	rep := rp.Report()
	if rf.json {
		out := map[string]any{"ok": rerr == nil, "report": jsonReport(rep)}
		var d *replay.Divergence
		if errors.As(rerr, &d) {
			out["divergence"] = d
		} else if rerr != nil {
			out["error"] = rerr.Error()
		}
		if err := writeJSON(e.stdout, out); err != nil {
			return err
		}
	} else {
		if rerr != nil {
			fmt.Fprintf(e.stdout, "replayed %d entries before seq %d\n", rep.Entries, rep.Entries)
		} else {
			fmt.Fprint(e.stdout, rep.Text())
		}
	}
	if rerr != nil {
		return replayFailure(rerr)
	}
	return nil
}

// jsonReport is a report as --json prints it: the report and its rate.
func jsonReport(r replay.Report) map[string]any {
	rate := 0.0
	if r.Elapsed > 0 {
		rate = float64(r.Entries) / r.Elapsed.Seconds()
	}
	b, _ := json.Marshal(r)
	var m map[string]any
	json.Unmarshal(b, &m)
	m["entries_per_second"] = rate
	return m
}

// ---- bench replay ----

const benchReplayDoc = `
Bench replay writes a ledger with a real kernel (package drivers on the
simulator's hardware, a Badger ledger, the simulator's clock; --rooms
device programs calling their rooms' lights, thermostats and displays
concurrently, a tenth of the light levels denied by the policy), then
replays it --runs times, with the drivers re-run (as osmose replay does by
default) and without (decisions only), and reports entries/s: each run's
and the medians. The target is >= 100,000 entries/s.`

type benchReplayRun struct {
	Drivers    bool    `json:"drivers"`
	Entries    uint64  `json:"entries"`
	Seconds    float64 `json:"seconds"`
	EntriesSec float64 `json:"entries_per_second"`
}

type benchReplayResult struct {
	Entries        int64            `json:"entries"`
	Calls          int              `json:"calls"`
	Rooms          int              `json:"rooms"`
	BuildSeconds   float64          `json:"build_seconds"`
	Runs           int              `json:"runs"`
	CPUs           int              `json:"cpus"`
	Go             string           `json:"go"`
	MedianDrivers  float64          `json:"median_entries_per_second_drivers"`
	MedianDecision float64          `json:"median_entries_per_second_decisions"`
	Target         float64          `json:"target_entries_per_second"`
	All            []benchReplayRun `json:"all"`
}

func runBenchReplay(ctx context.Context, e *env, args []string) error {
	const synopsis = "bench replay [--calls N] [--rooms 8] [--runs 3] [--dir DIR] [--json]"
	fs := newFlags(e, "bench replay", synopsis)
	calls := fs.Int("calls", 60_000, "calls the programs make (about two entries each)")
	rooms := fs.Int("rooms", 8, "rooms, each with one program on its own connection (1..99)")
	runs := fs.Int("runs", 3, "replays of each kind; medians are reported")
	dir := fs.String("dir", "", "where to write the ledger (default: the system's temporary directory)")
	asJSON := fs.Bool("json", false, "machine-readable output (JSON)")
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: osmose %s\n\n%s\n\nFlags:\n", synopsis, strings.TrimSpace(benchReplayDoc))
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if *calls < 1 || *rooms < 1 || *rooms > 99 || *runs < 1 {
		return usagef("--calls and --runs must be positive, --rooms 1..99")
	}
	tmp, err := os.MkdirTemp(*dir, "osmose-bench-replay-")
	if err != nil {
		return failf("bench: %v", err)
	}
	defer os.RemoveAll(tmp)
	if !*asJSON {
		fmt.Fprintf(e.stderr, "writing a ledger: %d calls from %d rooms...\n", *calls, *rooms)
	}
	t0 := time.Now()
	size, err := replaytest.Bench(ctx, tmp, replaytest.BenchConfig{Calls: *calls, Rooms: *rooms, Seed: 1})
	if err != nil {
		return failf("bench: write the ledger: %v", err)
	}
	res := benchReplayResult{Entries: size, Calls: *calls, Rooms: *rooms, BuildSeconds: time.Since(t0).Seconds(), Runs: *runs,
		CPUs: runtime.NumCPU(), Go: runtime.Version(), Target: 100_000}
	rf := replayFlags{ledgerFlags: ledgerFlags{data: tmp}, drivers: "sim", tz: "UTC", reader: "store"}
	var with, without []float64
	for i := range *runs {
		for _, drivers := range []bool{true, false} {
			rf.drivers = map[bool]string{true: "sim", false: "none"}[drivers]
			o, err := rf.options(&env{stdout: e.stdout, stderr: discard{}})
			if err != nil {
				return err
			}
			rp, closeFn, err := openReplay(ctx, &rf, o)
			if err != nil {
				return err
			}
			err = rp.Advance(ctx, rp.Size()-1)
			rep := rp.Report()
			closeFn()
			if err != nil {
				return failf("bench: replay: %v", err)
			}
			r := benchReplayRun{Drivers: drivers, Entries: rep.Entries, Seconds: rep.Elapsed.Seconds(), EntriesSec: float64(rep.Entries) / rep.Elapsed.Seconds()}
			res.All = append(res.All, r)
			if drivers {
				with = append(with, r.EntriesSec)
			} else {
				without = append(without, r.EntriesSec)
			}
			if !*asJSON {
				fmt.Fprintf(e.stderr, "run %d %-9s %9.0f entries/s (%d entries in %.2f s)\n", i+1, rf.drivers, r.EntriesSec, r.Entries, r.Seconds)
			}
		}
	}
	res.MedianDrivers, res.MedianDecision = medianOf(with), medianOf(without)
	if *asJSON {
		return writeJSON(e.stdout, res)
	}
	fmt.Fprintf(e.stdout, "ledger     %d entries (%d calls, %d rooms), written in %.1f s\n", res.Entries, res.Calls, res.Rooms, res.BuildSeconds)
	fmt.Fprintf(e.stdout, "drivers    %9.0f entries/s (median of %d; target >= %.0f)\n", res.MedianDrivers, *runs, res.Target)
	fmt.Fprintf(e.stdout, "decisions  %9.0f entries/s (median of %d)\n", res.MedianDecision, *runs)
	return nil
}

func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// discard is an io.Writer that is not a terminal.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
