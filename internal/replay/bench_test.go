package replay

import (
	"context"
	"testing"
	"time"

	"github.com/osmose-os/osmose/internal/replay/replaytest"
)

// BenchmarkReplay replays a ledger of about 100,000 entries that a real
// kernel wrote (replaytest.Bench), drivers re-run, and reports entries/s.
func BenchmarkReplay(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	t0 := time.Now()
	size, err := replaytest.Bench(ctx, dir, replaytest.BenchConfig{Calls: 55_000, Rooms: 8, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("built a ledger of %d entries in %v", size, time.Since(t0))
	for _, drivers := range []bool{true, false} {
		name := "drivers"
		if !drivers {
			name = "decisions"
		}
		b.Run(name, func(b *testing.B) {
			l, s := openRO(b, dir)
			var entries uint64
			for b.Loop() {
				rp, err := Open(ctx, l, s, Options{Drivers: drivers})
				if err != nil {
					b.Fatal(err)
				}
				if err := rp.Advance(ctx, ^uint64(0)); err != nil {
					b.Fatal(err)
				}
				entries += rp.Report().Entries
				rp.Close()
			}
			b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}
