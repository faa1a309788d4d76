package ledger

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"
)

func testKey(seed byte) ed25519.PrivateKey {
	var s [32]byte
	s[0] = seed
	return ed25519.NewKeyFromSeed(s[:])
}

// benchEntry is a typical call entry: a device calling a light through a
// grant, with small params and result bodies.
func benchEntry(i int) Entry {
	return benchEntries[i%len(benchEntries)]
}

var benchEntries = func() []Entry {
	es := make([]Entry, 4096)
	for i := range es {
		es[i] = makeBenchEntry(i)
	}
	return es
}()

func makeBenchEntry(i int) Entry {
	return Entry{
		Kind: KindCall, Actor: fmt.Sprintf("dev:switch-%d", i%64), Grant: uint64(1000 + i%512),
		Device: fmt.Sprintf("cambridge/pembroke/f1/r%d/light-%d", i%32, i%4), Interface: 0xa1b2c3d4e5f60718,
		Method: 1, Decision: DecisionAdmit, Time: int64(i) * 1000,
		Params: []byte("\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00"),
		Result: []byte("\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
	}
}

func BenchmarkAppendBadger(b *testing.B) {
	s, err := OpenBadger(b.TempDir(), BadgerOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	benchAppend(b, s)
}

func BenchmarkAppendMem(b *testing.B) { benchAppend(b, NewMemStore()) }

// benchAppend runs 64 appenders, each keeping up to 32 appends in flight,
// and reports entries/s and the append-to-durable latency percentiles.
func benchAppend(b *testing.B, s Store) {
	ctx := context.Background()
	l, err := Open(ctx, s, Options{Key: testKey(1)})
	if err != nil {
		b.Fatal(err)
	}
	const appenders, window = 64, 16
	per := b.N/appenders + 1
	lat := make([][]time.Duration, appenders)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for a := 0; a < appenders; a++ {
		type inflight struct {
			p  *Pending
			t0 time.Time
		}
		q := make(chan inflight, window)
		wg.Add(2)
		go func(a int) {
			defer wg.Done()
			defer close(q)
			for i := 0; i < per; i++ {
				t0 := time.Now()
				p, err := l.Append(ctx, benchEntry(a*per+i))
				if err != nil {
					b.Error(err)
					return
				}
				q <- inflight{p, t0}
			}
		}(a)
		go func(a int) {
			defer wg.Done()
			ls := make([]time.Duration, 0, per)
			for f := range q {
				if err := f.p.Wait(ctx); err != nil {
					b.Error(err)
				}
				ls = append(ls, time.Since(f.t0))
			}
			lat[a] = ls
		}(a)
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	var all []time.Duration
	for _, ls := range lat {
		all = append(all, ls...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "entries/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
}
