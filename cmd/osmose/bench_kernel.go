package main

// osmose bench kernel: gated, ledgered calls against a raw go-capnp echo
// server, in one process, over the same transport.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"

	"github.com/osmose-os/osmose/kernel/kerneltest"
)

const benchKernelDoc = `
Bench kernel measures, in one process, over Unix sockets in a temporary
directory, with --conns client connections each making one call at a time:

 1. raw: a trivial go-capnp Light server (no kernel, no ledger);
 2. kernel: the same Light.setLevel calls from --conns logged-in device
    programs through kernel gates (caps admission, call and return entries
    on a Badger ledger, answered when durable) to in-memory fake drivers;
 3. kernel-memory: the same kernel on the in-memory ledger store (no disk,
    not durable), which shows what the disk's syncs cost the kernel;
 4. sync: the disk alone: one writer commits 16 KiB to a Badger store in
    the same directory and syncs, 200 times (about one group commit of
    the kernel run each).

Each run measures them in that order; the medians over --runs runs are
reported: calls/s, p50 and p99 latency, the throughput ratio kernel/raw
(target >= 0.7), the p99 latency the kernel adds (target <= 1 ms), the
ratio kernel-memory/raw, and the sync latency.

Each measurement also reports the process's CPU time per call (clients
and servers alike), the share of the machine's CPU time that was busy and
that the hypervisor took (steal; Linux), and for a kernel its ledger's
syncs and group commits (from the ledger's metrics). Throughput is about
busy time divided by CPU per call, so on a shared host these tell a slow
kernel from a busy neighbour.`

type benchKernelResult struct {
	Conns       int                 `json:"conns"`
	Calls       int                 `json:"calls"`
	Runs        int                 `json:"runs"`
	CPUs        int                 `json:"cpus"`
	Go          string              `json:"go"`
	Raw         kerneltest.Result   `json:"raw"`
	Kernel      kerneltest.Result   `json:"kernel"`
	Ratio       float64             `json:"ratio"`
	AddedP99us  float64             `json:"added_p99_us"`
	AllRaw      []kerneltest.Result `json:"all_raw"`
	AllKernel   []kerneltest.Result `json:"all_kernel"`
	RatioTarget float64             `json:"ratio_target"`
	// Diagnostics: the kernel without the disk, and the disk alone.
	KernelMemory    kerneltest.Result       `json:"kernel_memory"`
	RatioMemory     float64                 `json:"ratio_memory"`
	AllKernelMemory []kerneltest.Result     `json:"all_kernel_memory"`
	Sync            kerneltest.SyncResult   `json:"sync"`
	AllSync         []kerneltest.SyncResult `json:"all_sync"`
}

// Sync baseline of bench kernel: syncs per run, bytes per sync.
const (
	benchSyncs     = 200
	benchSyncBytes = 16 << 10
)

func runBenchKernel(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "bench kernel", "bench kernel [--conns 64] [--calls N] [--runs 3] [--dir DIR] [--json]")
	conns := fs.Int("conns", 64, "client connections, each with one call in flight")
	calls := fs.Int("calls", 64_000, "calls per measurement")
	runs := fs.Int("runs", 3, "runs; medians are reported")
	dir := fs.String("dir", "", "where to put sockets and the ledger (default: the system's temporary directory)")
	asJSON := fs.Bool("json", false, "machine-readable output (JSON)")
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: osmose bench kernel [--conns 64] [--calls N] [--runs 3] [--dir DIR] [--json]\n\n%s\n\nFlags:\n", strings.TrimSpace(benchKernelDoc))
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if *conns < 1 || *calls < *conns || *runs < 1 {
		return usagef("--conns and --runs must be positive and --calls at least --conns")
	}
	res := benchKernelResult{Conns: *conns, Calls: *calls, Runs: *runs, CPUs: runtime.NumCPU(), Go: runtime.Version(), RatioTarget: 0.7}
	for i := range *runs {
		for _, kind := range []string{"raw", "kernel", "kernel-memory"} {
			tmp, err := os.MkdirTemp(*dir, "osmose-bench-kernel-")
			if err != nil {
				return failf("bench: %v", err)
			}
			var t *kerneltest.Target
			switch kind {
			case "raw":
				t, err = kerneltest.EchoTarget(ctx, tmp, *conns)
			case "kernel":
				t, err = kerneltest.KernelTarget(ctx, tmp, *conns)
			default:
				t, err = kerneltest.MemoryKernelTarget(ctx, tmp, *conns)
			}
			if err != nil {
				os.RemoveAll(tmp)
				return failf("bench %s: %v", kind, err)
			}
			r, err := kerneltest.Measure(ctx, kind, t, *calls)
			cerr := t.Close()
			os.RemoveAll(tmp)
			if err != nil {
				return failf("bench %s: %v", kind, err)
			}
			if cerr != nil {
				return failf("bench %s: close: %v", kind, cerr)
			}
			if !*asJSON {
				fmt.Fprintf(e.stderr, "run %d %-13s %8.0f calls/s  p50 %7.0f µs  p99 %7.0f µs  %s\n", i+1, kind, r.CallsPerSec, r.P50us, r.P99us, cpuText(r))
			}
			switch kind {
			case "raw":
				res.AllRaw = append(res.AllRaw, r)
			case "kernel":
				res.AllKernel = append(res.AllKernel, r)
			default:
				res.AllKernelMemory = append(res.AllKernelMemory, r)
			}
		}
		sr, err := benchSync(ctx, *dir)
		if err != nil {
			return failf("bench sync: %v", err)
		}
		if !*asJSON {
			fmt.Fprintf(e.stderr, "run %d %-13s %8d syncs    p50 %7.0f µs  p99 %7.0f µs\n", i+1, "sync", sr.Syncs, sr.P50us, sr.P99us)
		}
		res.AllSync = append(res.AllSync, sr)
	}
	res.Raw, res.Kernel = median(res.AllRaw), median(res.AllKernel)
	res.Ratio = res.Kernel.CallsPerSec / res.Raw.CallsPerSec
	res.AddedP99us = res.Kernel.P99us - res.Raw.P99us
	res.KernelMemory = median(res.AllKernelMemory)
	res.RatioMemory = res.KernelMemory.CallsPerSec / res.Raw.CallsPerSec
	res.Sync = medianSync(res.AllSync)
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(e.stdout, "raw     %8.0f calls/s  p50 %7.0f µs  p99 %7.0f µs\n", res.Raw.CallsPerSec, res.Raw.P50us, res.Raw.P99us)
	fmt.Fprintf(e.stdout, "kernel  %8.0f calls/s  p50 %7.0f µs  p99 %7.0f µs\n", res.Kernel.CallsPerSec, res.Kernel.P50us, res.Kernel.P99us)
	fmt.Fprintf(e.stdout, "ratio   %.2f (target >= %.1f); added p99 %.0f µs (target <= 1000)\n", res.Ratio, res.RatioTarget, res.AddedP99us)
	fmt.Fprintf(e.stdout, "without the disk (in-memory ledger, not durable): %8.0f calls/s  p99 %7.0f µs  ratio %.2f\n", res.KernelMemory.CallsPerSec, res.KernelMemory.P99us, res.RatioMemory)
	fmt.Fprintf(e.stdout, "the disk alone (16 KiB commit + sync): p50 %.0f µs  p99 %.0f µs\n", res.Sync.P50us, res.Sync.P99us)
	fmt.Fprintf(e.stdout, "cpu per call: raw %.0f µs  kernel %.0f µs  kernel-memory %.0f µs (all the process's goroutines, clients included)\n",
		res.Raw.UsPerCall, res.Kernel.UsPerCall, res.KernelMemory.UsPerCall)
	if res.Raw.Busy > 0 {
		fmt.Fprintf(e.stdout, "host busy (steal): raw %.0f%% (%.0f%%)  kernel %.0f%% (%.0f%%)  kernel-memory %.0f%% (%.0f%%)\n",
			100*res.Raw.Busy, 100*res.Raw.Steal, 100*res.Kernel.Busy, 100*res.Kernel.Steal, 100*res.KernelMemory.Busy, 100*res.KernelMemory.Steal)
	}
	if l := res.Kernel.Ledger; l != nil && l.Syncs > 0 && l.Batches > 0 {
		fmt.Fprintf(e.stdout, "kernel's ledger: %.1f calls per sync, %.1f entries per group commit, sync mean %.0f µs, lag mean %.0f µs\n",
			float64(res.Kernel.Calls)/float64(l.Syncs), float64(l.Entries)/float64(l.Batches), l.SyncMeanUs, l.LagMeanUs)
	}
	return nil
}

// cpuText describes a run's CPU use and, for a kernel, its ledger.
func cpuText(r kerneltest.Result) string {
	s := fmt.Sprintf("cpu %4.0f µs/call", r.UsPerCall)
	if r.Busy > 0 {
		s += fmt.Sprintf("  busy %3.0f%%  steal %3.0f%%", 100*r.Busy, 100*r.Steal)
	}
	if l := r.Ledger; l != nil && l.Syncs > 0 {
		s += fmt.Sprintf("  %.1f calls/sync", float64(r.Calls)/float64(l.Syncs))
	}
	return s
}

// benchSync measures the disk's sync latency in a temporary directory
// under dir.
func benchSync(ctx context.Context, dir string) (kerneltest.SyncResult, error) {
	tmp, err := os.MkdirTemp(dir, "osmose-bench-sync-")
	if err != nil {
		return kerneltest.SyncResult{}, err
	}
	defer os.RemoveAll(tmp)
	return kerneltest.SyncLatency(ctx, tmp, benchSyncs, benchSyncBytes)
}

// medianSync returns the median p50, p99 and maximum of the sync runs.
func medianSync(rs []kerneltest.SyncResult) kerneltest.SyncResult {
	m := rs[0]
	m.P50us = medianBy(rs, func(r kerneltest.SyncResult) float64 { return r.P50us })
	m.P99us = medianBy(rs, func(r kerneltest.SyncResult) float64 { return r.P99us })
	m.MaxUs = medianBy(rs, func(r kerneltest.SyncResult) float64 { return r.MaxUs })
	return m
}

// median returns the run with the median throughput, with the median p50
// and p99 of all runs.
func median(rs []kerneltest.Result) kerneltest.Result {
	m := rs[0]
	m.CallsPerSec = medianBy(rs, func(r kerneltest.Result) float64 { return r.CallsPerSec })
	m.P50us = medianBy(rs, func(r kerneltest.Result) float64 { return r.P50us })
	m.P99us = medianBy(rs, func(r kerneltest.Result) float64 { return r.P99us })
	m.Seconds = medianBy(rs, func(r kerneltest.Result) float64 { return r.Seconds })
	m.UsPerCall = medianBy(rs, func(r kerneltest.Result) float64 { return r.UsPerCall })
	m.Busy = medianBy(rs, func(r kerneltest.Result) float64 { return r.Busy })
	m.Steal = medianBy(rs, func(r kerneltest.Result) float64 { return r.Steal })
	if m.Ledger != nil {
		l := *m.Ledger
		l.Syncs = int64(medianBy(rs, func(r kerneltest.Result) float64 { return float64(r.Ledger.Syncs) }))
		l.Batches = int64(medianBy(rs, func(r kerneltest.Result) float64 { return float64(r.Ledger.Batches) }))
		l.Entries = int64(medianBy(rs, func(r kerneltest.Result) float64 { return float64(r.Ledger.Entries) }))
		l.SyncMeanUs = medianBy(rs, func(r kerneltest.Result) float64 { return r.Ledger.SyncMeanUs })
		l.LagMeanUs = medianBy(rs, func(r kerneltest.Result) float64 { return r.Ledger.LagMeanUs })
		m.Ledger = &l
	}
	return m
}

// medianBy returns the median of f over rs.
func medianBy[T any](rs []T, f func(T) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	return v[len(v)/2]
}
