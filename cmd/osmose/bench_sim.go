package main

// osmose bench sim: a building of thousands of devices, each program on
// its own connection to one kernel, for a simulated hour or more.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/osmose-os/osmose/internal/simkernel"
	"github.com/osmose-os/osmose/sim"
)

const benchSimDoc = `
Bench sim generates a building (--floors × --rooms rooms of
--devices-per-room devices; the defaults make 10,080 devices) and runs the
simulator against an in-process kernel on a Badger ledger in a temporary
directory, as osmose demo does: every device's program logs in on its own
Cap'n Proto connection, opens what the policy gives it and reacts to the
simulated building for --hours of building time, every call admitted and
ledgered.

It reports the calls the programs made per second of wall time between the
first memory sample (every program started) and the last, their latency
(p50, p99), the time to the first sample, and memory sampled every --sample
of building time: the process's
resident set, Go heap and stacks in use, goroutines. Memory per device is
the growth of the resident set from before the kernel started to the
first sample (all programs running), divided by the devices. Targets (the
2-core machine): 10,000 devices for at least one simulated hour, resident
set at most 1 GiB, and no growth over the run (heap in use at the end
within 10 % of the first sample).

The process runs with a soft memory limit (Go's GOMEMLIMIT, here
--memory-limit, default 900 MiB; 0 for none; a GOMEMLIMIT in the
environment wins): the garbage collector then works harder as the heap
nears the limit instead of letting it grow to twice what is live. The
limit is in the report. 900 MiB leaves room under the 1 GiB target for
what the Go runtime does not count (Badger's memory-mapped tables).

Running as many connections needs a file-descriptor limit above twice the
devices (Go raises the soft limit to the hard one).`

type benchSimSample struct {
	SimMinutes  float64 `json:"sim_minutes"`
	WallSeconds float64 `json:"wall_seconds"`
	Calls       int     `json:"calls"`
	RSSMB       float64 `json:"rss_mb"`
	HeapInuseMB float64 `json:"heap_inuse_mb"`
	StackMB     float64 `json:"stack_inuse_mb"`
	Goroutines  int     `json:"goroutines"`
}

type benchSimResult struct {
	Devices        int              `json:"devices"`
	Programs       int              `json:"programs"`
	People         int              `json:"people"`
	SimHours       float64          `json:"sim_hours"`
	CPUs           int              `json:"cpus"`
	Go             string           `json:"go"`
	StartupSeconds float64          `json:"startup_seconds"` // to the first sample
	RunSeconds     float64          `json:"run_seconds"`     // first to last sample
	Calls          int              `json:"calls"`
	CallsPerSec    float64          `json:"calls_per_sec"`
	P50us          float64          `json:"p50_us"`
	P99us          float64          `json:"p99_us"`
	Entries        int64            `json:"ledger_entries"`
	LedgerMB       float64          `json:"ledger_mb"`
	Verified       bool             `json:"verified"`
	MemoryLimitMB  float64          `json:"memory_limit_mb,omitempty"` // the Go runtime's soft limit; 0 for none
	BaselineRSSMB  float64          `json:"baseline_rss_mb"`
	MaxRSSMB       float64          `json:"max_rss_mb"`
	PerDeviceKB    float64          `json:"rss_per_device_kb"`
	HeapGrowth     float64          `json:"heap_growth"` // end / first sample
	Samples        []benchSimSample `json:"samples"`
	TargetsMet     map[string]bool  `json:"targets_met"`
}

// parseMemoryLimit reads a size as GOMEMLIMIT does: a number of bytes
// with an optional unit B, KiB, MiB, GiB or TiB; 0 or "off" for none.
func parseMemoryLimit(v string) (int64, error) {
	orig := v
	v = strings.TrimSpace(v)
	if v == "off" || v == "0" {
		return 0, nil
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSuffix(v, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is not a size such as 900MiB or 1GiB", orig)
	}
	return n * mult, nil
}

func limitText(mb float64) string {
	if mb == 0 {
		return "no memory limit"
	}
	return fmt.Sprintf("soft memory limit %.0f MiB", mb)
}

// writeProfiles writes the named runtime profiles as NAME.pprof into dir.
func writeProfiles(dir string, names ...string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range names {
		f, err := os.Create(filepath.Join(dir, name+".pprof"))
		if err != nil {
			return err
		}
		err = pprof.Lookup(name).WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write %s profile: %w", name, err)
		}
	}
	return nil
}

func runBenchSim(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "bench sim", "bench sim [--floors 10] [--rooms 84] [--devices-per-room 12] [--people N] [--hours 1] [--json]")
	floors := fs.Int("floors", 10, "floors of the generated building")
	rooms := fs.Int("rooms", 84, "rooms per floor")
	per := fs.Int("devices-per-room", len(sim.RoomKit), "devices per room")
	people := fs.Int("people", 400, "people working in the building")
	hours := fs.Float64("hours", 1, "simulated hours, from 07:00")
	step := fs.Duration("step", time.Minute, "simulated time per step")
	sample := fs.Duration("sample", 5*time.Minute, "building time between memory samples")
	seed := fs.Int64("seed", 1, "seed of the building, the people, the noise and every key")
	dir := fs.String("dir", "", "where to put the ledger (default: the system's temporary directory)")
	asJSON := fs.Bool("json", false, "machine-readable output (JSON)")
	memLimit := fs.String("memory-limit", "900MiB", "soft memory limit of the process (Go's GOMEMLIMIT syntax; 0 for none); GOMEMLIMIT in the environment wins")
	profile := fs.String("profile", "", "write heap and goroutine profiles (pprof) at the first sample into this directory")
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: osmose bench sim [flags]\n\n%s\n\nFlags:\n", strings.TrimSpace(benchSimDoc))
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return usagef("unexpected argument %q", fs.Arg(0))
	case *hours <= 0 || *people < 0 || *sample <= 0:
		return usagef("--hours and --sample must be positive, --people not negative")
	}
	limit, err := parseMemoryLimit(*memLimit)
	if err != nil {
		return usagef("--memory-limit: %v", err)
	}
	if os.Getenv("GOMEMLIMIT") == "" && limit > 0 {
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(limit))
	}
	top, err := sim.Generate(sim.GenConfig{Floors: *floors, Rooms: *rooms, DevicesPerRoom: *per, People: *people, Seed: *seed})
	if err != nil {
		return usagef("%v", err)
	}
	tmp, err := os.MkdirTemp(*dir, "osmose-bench-sim-")
	if err != nil {
		return failf("%v", err)
	}
	defer os.RemoveAll(tmp)

	res := &benchSimResult{Devices: len(top.Devices), People: *people, SimHours: *hours, CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		res.MemoryLimitMB = mib(uint64(l))
	}
	runtime.GC()
	res.BaselineRSSMB = mib(readRSS())
	fmt.Fprintf(e.stderr, "bench sim: %d devices, %d people, %.1f h of building time; starting programs...\n", len(top.Devices), *people, *hours)
	t0 := time.Now()
	var started time.Time
	snap := func(p sim.Progress) benchSimSample {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return benchSimSample{
			SimMinutes: p.Time.Sub(simkernel.DefaultStart).Minutes(), WallSeconds: time.Since(t0).Seconds(), Calls: p.Calls,
			RSSMB: mib(readRSS()), HeapInuseMB: mib(ms.HeapInuse), StackMB: mib(ms.StackInuse), Goroutines: runtime.NumGoroutine(),
		}
	}
	out, err := simkernel.Run(ctx, simkernel.Options{
		Dir: tmp, Topology: top, Seed: *seed, People: *people,
		Duration: time.Duration(*hours * float64(time.Hour)), Step: *step,
		Wall: time.Now, ProgressEvery: *sample,
		Logger: slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		Progress: func(p sim.Progress) {
			if started.IsZero() {
				// The first sample comes after every program started.
				started = time.Now()
				res.StartupSeconds = started.Sub(t0).Seconds()
			}
			s := snap(p)
			if len(res.Samples) == 0 && *profile != "" {
				if err := writeProfiles(*profile, "heap", "goroutine"); err != nil {
					fmt.Fprintf(e.stderr, "bench sim: %v\n", err)
				}
			}
			res.Samples = append(res.Samples, s)
			fmt.Fprintf(e.stderr, "  %5.0f min  %8d calls  rss %6.0f MiB  heap %6.0f MiB  stacks %5.0f MiB  %7d goroutines  (%.0fs)\n",
				s.SimMinutes, s.Calls, s.RSSMB, s.HeapInuseMB, s.StackMB, s.Goroutines, s.WallSeconds)
		},
	})
	if err != nil {
		return failf("%v", err)
	}
	rep := out.Report
	res.Programs = rep.Programs
	res.Calls = rep.Calls
	if n := len(res.Samples); n >= 2 {
		// From the first sample (every program started) to the last (the
		// end of the building time); the ledger's verification after it
		// is not part of the run.
		first, last := res.Samples[0], res.Samples[n-1]
		res.RunSeconds = last.WallSeconds - first.WallSeconds
		if res.RunSeconds > 0 {
			res.CallsPerSec = float64(last.Calls-first.Calls) / res.RunSeconds
		}
	}
	res.P50us = float64(rep.Percentile(0.5).Nanoseconds()) / 1e3
	res.P99us = float64(rep.Percentile(0.99).Nanoseconds()) / 1e3
	res.Entries, res.LedgerMB, res.Verified = out.Entries, float64(out.Bytes)/(1<<20), out.VerifyErr == nil
	for _, s := range res.Samples {
		res.MaxRSSMB = max(res.MaxRSSMB, s.RSSMB)
	}
	if n := len(res.Samples); n > 0 {
		first, last := res.Samples[0], res.Samples[n-1]
		res.PerDeviceKB = (first.RSSMB - res.BaselineRSSMB) * 1024 / float64(max(1, res.Devices))
		if first.HeapInuseMB > 0 {
			res.HeapGrowth = last.HeapInuseMB / first.HeapInuseMB
		}
	}
	res.TargetsMet = map[string]bool{
		"devices_10000":   res.Devices >= 10_000 && res.Programs >= 10_000,
		"sim_hour":        *hours >= 1,
		"rss_1gib":        res.MaxRSSMB > 0 && res.MaxRSSMB <= 1024,
		"no_heap_growth":  len(res.Samples) >= 2 && res.HeapGrowth <= 1.1,
		"ledger_verifies": res.Verified,
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		w := e.stdout
		fmt.Fprintf(w, "devices       %d (%d programs on their own connections), %d people, %.1f h of building time\n", res.Devices, res.Programs, res.People, res.SimHours)
		fmt.Fprintf(w, "startup       %.1fs to start every program\n", res.StartupSeconds)
		fmt.Fprintf(w, "calls         %d, %.0f/s after startup; latency p50 %.2f ms, p99 %.2f ms\n", res.Calls, res.CallsPerSec, res.P50us/1e3, res.P99us/1e3)
		fmt.Fprintf(w, "memory        rss max %.0f MiB (baseline %.0f), %.1f KiB per device; heap end/first %.2f; %s\n", res.MaxRSSMB, res.BaselineRSSMB, res.PerDeviceKB, res.HeapGrowth, limitText(res.MemoryLimitMB))
		fmt.Fprintf(w, "ledger        %d entries, %.1f MiB, verified %v\n", res.Entries, res.LedgerMB, res.Verified)
		for _, k := range []string{"devices_10000", "sim_hour", "rss_1gib", "no_heap_growth", "ledger_verifies"} {
			fmt.Fprintf(w, "target %-16s %v\n", k, map[bool]string{true: "met", false: "NOT met"}[res.TargetsMet[k]])
		}
	}
	if out.VerifyErr != nil {
		return &exitError{code: 1, err: out.VerifyErr}
	}
	return nil
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
