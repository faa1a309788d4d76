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
    on a Badger ledger, answered when durable) to in-memory fake drivers.

Each run measures raw then kernel; the medians over --runs runs are
reported: calls/s, p50 and p99 latency, the throughput ratio kernel/raw
(target >= 0.7) and the p99 latency the kernel adds (target <= 1 ms).`

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
}

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
		for _, kind := range []string{"raw", "kernel"} {
			tmp, err := os.MkdirTemp(*dir, "osmose-bench-kernel-")
			if err != nil {
				return failf("bench: %v", err)
			}
			var t *kerneltest.Target
			if kind == "raw" {
				t, err = kerneltest.EchoTarget(ctx, tmp, *conns)
			} else {
				t, err = kerneltest.KernelTarget(ctx, tmp, *conns)
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
				fmt.Fprintf(e.stderr, "run %d %-6s %8.0f calls/s  p50 %7.0f µs  p99 %7.0f µs\n", i+1, kind, r.CallsPerSec, r.P50us, r.P99us)
			}
			if kind == "raw" {
				res.AllRaw = append(res.AllRaw, r)
			} else {
				res.AllKernel = append(res.AllKernel, r)
			}
		}
	}
	res.Raw, res.Kernel = median(res.AllRaw), median(res.AllKernel)
	res.Ratio = res.Kernel.CallsPerSec / res.Raw.CallsPerSec
	res.AddedP99us = res.Kernel.P99us - res.Raw.P99us
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(e.stdout, "raw     %8.0f calls/s  p50 %7.0f µs  p99 %7.0f µs\n", res.Raw.CallsPerSec, res.Raw.P50us, res.Raw.P99us)
	fmt.Fprintf(e.stdout, "kernel  %8.0f calls/s  p50 %7.0f µs  p99 %7.0f µs\n", res.Kernel.CallsPerSec, res.Kernel.P50us, res.Kernel.P99us)
	fmt.Fprintf(e.stdout, "ratio   %.2f (target >= %.1f); added p99 %.0f µs (target <= 1000)\n", res.Ratio, res.RatioTarget, res.AddedP99us)
	return nil
}

// median returns the run with the median throughput, with the median p50
// and p99 of all runs.
func median(rs []kerneltest.Result) kerneltest.Result {
	by := func(f func(kerneltest.Result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	m := rs[0]
	m.CallsPerSec = by(func(r kerneltest.Result) float64 { return r.CallsPerSec })
	m.P50us = by(func(r kerneltest.Result) float64 { return r.P50us })
	m.P99us = by(func(r kerneltest.Result) float64 { return r.P99us })
	m.Seconds = by(func(r kerneltest.Result) float64 { return r.Seconds })
	return m
}
