package ledger

import (
	"errors"
	"reflect"

	"github.com/dgraph-io/badger"
	"github.com/dgraph-io/badger/y"
)

// badgerDiscardStats reaches, in Badger v1.6's unexported valueLog
// (value.go), the goroutine that appends the value log's discard
// statistics (flushDiscardStats): compactions hand it their statistics
// on flushChan, and it writes them as a transaction of Badger's own.
//
// Badger's Close races with that goroutine: it stops the writes and
// closes the write channel before it stops the goroutine, and the
// goroutine checks that writes are allowed before it sends. One that
// checked just before Close began sends on the closed channel and panics
// the process (seen under -race in TestVlogTailBadgerOwnAppends). So the
// store stops the goroutine first (stop). Nothing is lost: the statistics
// only steer value-log GC, which the ledger keeps off (OpenBadger), and
// Badger's own Close drops the queued ones the same way.
type badgerDiscardStats struct {
	flushChan *chan map[uint32]int64
	closer    **y.Closer
}

func badgerDiscardStatsOf(db *badger.DB) (badgerDiscardStats, error) {
	v, err := badgerVlog(db)
	if err != nil {
		return badgerDiscardStats{}, err
	}
	p := v.FieldByName("lfDiscardStats")
	if p.Kind() != reflect.Pointer || p.IsNil() {
		return badgerDiscardStats{}, errors.New("badger's valueLog has no v1.6 lfDiscardStats")
	}
	stats := reflect.NewAt(p.Type().Elem(), p.UnsafePointer()).Elem()
	ch, closer := stats.FieldByName("flushChan"), stats.FieldByName("closer")
	if !ch.IsValid() || ch.Type() != reflect.TypeFor[chan map[uint32]int64]() ||
		!closer.IsValid() || closer.Type() != reflect.TypeFor[*y.Closer]() {
		return badgerDiscardStats{}, errors.New("badger's lfDiscardStats has no v1.6 flushChan and closer")
	}
	return badgerDiscardStats{
		flushChan: (*chan map[uint32]int64)(ch.Addr().UnsafePointer()),
		closer:    (**y.Closer)(closer.Addr().UnsafePointer()),
	}, nil
}

// stop ends the goroutine, after the append it may be making (writes are
// still open, so it finishes), and leaves Badger's Close a closer with
// nothing to wait for. Call it once, just before the database's Close,
// from the goroutine that closes it.
func (d badgerDiscardStats) stop() {
	(*d.closer).SignalAndWait()
	*d.closer = y.NewCloser(0)
}
