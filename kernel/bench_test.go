package kernel_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/osmose-os/osmose/kernel/kerneltest"
	"github.com/osmose-os/osmose/ledger"
)

// benchConns is the number of device connections of the benchmarks, as
// issue 3's target states it.
const benchConns = 64

func runBench(b *testing.B, t *kerneltest.Target) {
	b.Helper()
	defer func() {
		if err := t.Close(); err != nil {
			b.Error(err)
		}
	}()
	// Both benchmarks run with the P the ledger's fsyncs need, as the
	// osmose command does (ledger.SyncProcs).
	defer ledger.SyncProcs()()
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	u0 := kerneltest.ReadUsage()
	// One goroutine per connection, each with one call in flight.
	for c := range benchConns {
		l := t.Lights[c%len(t.Lights)]
		wg.Go(func() {
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				if err := kerneltest.Call(ctx, l, uint8(i%80)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	// What the host did meanwhile: CPU per call (clients and servers), and
	// how busy the machine was and how much the hypervisor took.
	cpu := kerneltest.ReadUsage().Since(u0, b.N)
	b.ReportMetric(cpu.UsPerCall, "cpu-us/op")
	b.ReportMetric(100*cpu.Busy, "busy-%")
	b.ReportMetric(100*cpu.Steal, "steal-%")
}

// BenchmarkRawEcho is the baseline: a trivial go-capnp Light server, no
// kernel, 64 connections over a Unix socket.
func BenchmarkRawEcho(b *testing.B) {
	t, err := kerneltest.EchoTarget(context.Background(), b.TempDir(), benchConns)
	if err != nil {
		b.Fatal(err)
	}
	runBench(b, t)
}

// BenchmarkGatedCall: the same calls through kernel gates, admitted by the
// caps table and recorded (call and return) on a Badger ledger, answered
// when durable.
func BenchmarkGatedCall(b *testing.B) {
	t, err := kerneltest.KernelTarget(context.Background(), b.TempDir(), benchConns)
	if err != nil {
		b.Fatal(err)
	}
	runBench(b, t)
}

// BenchmarkGatedCallMemory: BenchmarkGatedCall on the in-memory ledger
// store, no disk and nothing durable: against BenchmarkGatedCall it shows
// what the disk's syncs cost a gated call.
func BenchmarkGatedCallMemory(b *testing.B) {
	t, err := kerneltest.MemoryKernelTarget(context.Background(), b.TempDir(), benchConns)
	if err != nil {
		b.Fatal(err)
	}
	runBench(b, t)
}
