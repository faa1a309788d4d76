package ledger

import (
	"bytes"
	"runtime"
	"testing"
)

// flushingDiscardStats counts the discard-statistics goroutines of Badger
// (value.go, flushDiscardStats), one per open store, by the function that
// starts them (the only goroutine it starts): until it first runs, such a
// goroutine's stack shows a wrapper, not flushDiscardStats.
func flushingDiscardStats() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Count(buf[:n], []byte("created by github.com/dgraph-io/badger.(*valueLog).open "))
		}
		buf = make([]byte, 2*len(buf))
	}
}

// floodDiscardStats keeps Badger's discard-statistics goroutine busy
// appending (each map is over Badger's threshold of 100 updates) until
// stop is closed; done is closed after.
func floodDiscardStats(t *testing.T, s *BadgerStore, stop <-chan struct{}) (done <-chan struct{}) {
	stats := discardStatsChan(t, s)
	d := make(chan struct{})
	go func() {
		defer close(d)
		m := map[uint32]int64{}
		for i := range 200 {
			m[uint32(1000+i)] = 1
		}
		for {
			select {
			case <-stop:
				return
			case stats <- m:
			}
		}
	}()
	return d
}

// The store's Close stops Badger's discard-statistics goroutine before
// Badger's Close stops the writes: Badger's own order lets the goroutine
// send on the closed write channel, a panic.
func TestBadgerCloseStopsDiscardStats(t *testing.T) {
	before := flushingDiscardStats()
	s, err := OpenBadger(t.TempDir(), BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := flushingDiscardStats(); n != before+1 {
		t.Fatalf("%d discard-statistics goroutines with the store open, want %d: the test looks for the wrong function", n, before+1)
	}
	stop := make(chan struct{})
	done := floodDiscardStats(t, s, stop)
	s.discardStats.stop()
	if n := flushingDiscardStats(); n != before {
		t.Fatalf("%d discard-statistics goroutines after stop, want %d", n, before)
	}
	close(stop)
	<-done
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
