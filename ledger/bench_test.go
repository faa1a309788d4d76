package ledger

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"sync"
	"testing"
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

func benchAppend(b *testing.B, s Store) {
	ctx := context.Background()
	l, err := Open(ctx, s, Options{Key: testKey(1)})
	if err != nil {
		b.Fatal(err)
	}
	const appenders, window = 64, 32
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N/appenders + 1
	for a := 0; a < appenders; a++ {
		wg.Add(1)
		go func(a int) {
			defer wg.Done()
			ring := make([]*Pending, 0, window)
			for i := 0; i < per; i++ {
				if len(ring) == window {
					if err := ring[0].Wait(ctx); err != nil {
						b.Error(err)
						return
					}
					ring = ring[1:]
				}
				p, err := l.Append(ctx, benchEntry(a*per+i))
				if err != nil {
					b.Error(err)
					return
				}
				ring = append(ring, p)
			}
			for _, p := range ring {
				p.Wait(ctx)
			}
		}(a)
	}
	wg.Wait()
	b.StopTimer()
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
}
