package kernel_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/osmose-os/osmose/kernel/kerneltest"
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
	ctx := context.Background()
	var next atomic.Int64
	// One goroutine per connection.
	b.SetParallelism((benchConns + 1) / 2)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		l := t.Lights[int(next.Add(1)-1)%len(t.Lights)]
		for i := 0; pb.Next(); i++ {
			if err := kerneltest.Call(ctx, l, uint8(i%80)); err != nil {
				b.Error(err)
				return
			}
		}
	})
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
