package ledger

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/dgraph-io/badger"
	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	badgerds "github.com/ipfs/go-ds-badger"
)

// Store is what a ledger needs of a key-value store: a go-datastore that can
// commit a set of writes atomically. The Badger store (OpenBadger) and the
// in-memory store (NewMemStore) both pass the conformance suite in
// ledger/ledgertest.
//
// Keys are written in order within a prefix, and Query with a Prefix and
// OrderByKey (or no order) must return them in ascending key order.
type Store interface {
	ds.Datastore
	ds.TxnDatastore
}

// BadgerStore is a Store on an embedded Badger v1 database in a directory.
// It has the value-log feature erasure needs (vlog.go). Opened for
// writing, it syncs its own way (vlogTail, tail.go): Sync is an fdatasync
// of the newest value-log file, whose next blocks it keeps written with
// zeros.
type BadgerStore struct {
	*badgerds.Datastore
	dir      string // the database and value-log directory
	readOnly bool

	// commitMu is held by every commit and, after it, by the tail's
	// writing of zeros (vlogTail), which must see no commit in flight
	// (Badger's own small appends are what appendGuard is for). Writes go
	// through the store's own methods (NewTransaction, Put, Delete), never
	// the embedded Datastore's.
	commitMu     sync.Mutex
	tail         *vlogTail // nil when read-only
	discardStats badgerDiscardStats
}

// BadgerOptions are the options of OpenBadger.
type BadgerOptions struct {
	// ReadOnly opens the database without writing to it: no recovery
	// truncation, no compaction. Read-only commands (verify, show, export)
	// use it, so that a damaged directory is reported, never changed.
	ReadOnly bool

	valueLogFileSize int64 // tests: Badger rotates its value log past it
}

// Errors of OpenBadger that callers branch on.
var (
	// ErrNotLedger: the directory exists but is not a ledger.
	ErrNotLedger = errors.New("not an osmose ledger directory")
	// ErrStoreLocked: another process (a running kernel) has it open.
	ErrStoreLocked = errors.New("in use by another process")
	// ErrNeedsRecovery: a read-only open found a store that was not closed
	// cleanly (or a damaged value log); a writable open recovers it.
	ErrNeedsRecovery = errors.New("needs recovery (not closed cleanly, or a damaged value log)")
)

// OpenBadger opens (creating if needed, unless read-only) a Badger store in
// dir. Writes are not synced one by one: the ledger syncs once per batch.
func OpenBadger(dir string, opt BadgerOptions) (*BadgerStore, error) {
	fi, err := os.Stat(dir)
	switch {
	case err == nil && !fi.IsDir():
		return nil, fmt.Errorf("open ledger store: %s is not a directory", dir)
	case errors.Is(err, os.ErrNotExist) && opt.ReadOnly:
		return nil, fmt.Errorf("open ledger store: %s does not exist", dir)
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("open ledger store: %w", err)
	case err == nil:
		if err := checkBadgerDir(dir, opt.ReadOnly); err != nil {
			return nil, err
		}
	}
	if !opt.ReadOnly {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("open ledger store: %w", err)
		}
	}
	o := badgerds.DefaultOptions
	o.SyncWrites = false
	// Value-log GC stays off: erasure overwrites a forgotten subject's
	// records in place, which GC would race (a moved value also lives
	// under a move key), and GC's cost follows the ledger's size, not the
	// subject's (docs/erasure.md).
	o.GcInterval = 0
	o.Options.ReadOnly = opt.ReadOnly
	o.Options.Truncate = !opt.ReadOnly
	// A ledger batch is one Badger transaction. Its values go to the value
	// log (below), so in the LSM tree a batch is a few hundred keys and
	// pointers: 16 MiB tables (2.4 MiB transactions) are ample, and three
	// memtables bound Badger's memory to about 50 MiB.
	o.Options.MaxTableSize = 16 << 20
	o.Options.NumMemtables = 3
	o.Options.ValueLogFileSize = 256 << 20
	if opt.valueLogFileSize > 0 {
		o.Options.ValueLogFileSize = opt.valueLogFileSize
	}
	// Envelopes, bodies and tiles go to the value log, which is written
	// once; the LSM tree holds keys and value pointers, so compactions move
	// little. (go-ds-badger's default keeps values up to 64 KiB in the LSM
	// tree, which compaction rewrites at every level.)
	o.Options.ValueThreshold = 64
	// Badger's event log (golang.org/x/net/trace, for a /debug/events page
	// osmose does not serve) formats a line under a lock for every write
	// request: 1.2 % of the kernel benchmark's CPU.
	o.Options.EventLogging = false
	d, err := badgerds.NewDatastore(dir, &o)
	if err != nil {
		// Badger v1 has no typed errors for these; its messages are stable.
		msg := err.Error()
		switch {
		case strings.Contains(msg, "Cannot acquire directory lock"), strings.Contains(msg, "resource temporarily unavailable"):
			return nil, fmt.Errorf("open ledger store %s: %w (%s)", dir, ErrStoreLocked, msg)
		case errors.Is(err, badger.ErrTruncateNeeded), strings.Contains(msg, "truncate required"), strings.Contains(msg, "not properly closed"):
			return nil, fmt.Errorf("open ledger store %s: %w", dir, ErrNeedsRecovery)
		}
		return nil, fmt.Errorf("open ledger store %s: %w", dir, err)
	}
	bs := &BadgerStore{Datastore: d, dir: dir, readOnly: opt.ReadOnly}
	if bs.discardStats, err = badgerDiscardStatsOf(d.DB); err != nil {
		d.Close()
		return nil, fmt.Errorf("open ledger store %s: %w", dir, err)
	}
	if !opt.ReadOnly {
		if bs.tail, err = openVlogTail(d.DB, dir, o.Options.ValueLogFileSize); err != nil {
			bs.discardStats.stop()
			d.Close()
			return nil, fmt.Errorf("open ledger store %s: %w", dir, err)
		}
	}
	return bs, nil
}

// NewTransaction implements ds.TxnDatastore.
func (s *BadgerStore) NewTransaction(ctx context.Context, readOnly bool) (ds.Txn, error) {
	txn, err := s.Datastore.NewTransaction(ctx, readOnly)
	if err != nil {
		return nil, err
	}
	return &badgerTxn{Txn: txn, s: s, readOnly: readOnly}, nil
}

// Put implements ds.Datastore, in a transaction of its own.
func (s *BadgerStore) Put(ctx context.Context, key ds.Key, value []byte) error {
	return s.update(ctx, func(txn ds.Txn) error { return txn.Put(ctx, key, value) })
}

// Delete implements ds.Datastore, in a transaction of its own.
func (s *BadgerStore) Delete(ctx context.Context, key ds.Key) error {
	return s.update(ctx, func(txn ds.Txn) error { return txn.Delete(ctx, key) })
}

func (s *BadgerStore) update(ctx context.Context, fn func(ds.Txn) error) error {
	txn, err := s.NewTransaction(ctx, false)
	if err != nil {
		return err
	}
	defer txn.Discard(ctx)
	if err := fn(txn); err != nil {
		return err
	}
	return txn.Commit(ctx)
}

// Batch is not supported: write in a transaction (NewTransaction).
func (s *BadgerStore) Batch(context.Context) (ds.Batch, error) {
	return nil, ds.ErrBatchUnsupported
}

// Sync makes every commit that returned before it durable. The prefix is
// ignored: a sync covers the whole store, as Badger's does.
func (s *BadgerStore) Sync(ctx context.Context, prefix ds.Key) error {
	if s.tail != nil {
		if err := s.tail.sync(); !errors.Is(err, errTailClosed) {
			return err
		}
	}
	return s.Datastore.Sync(ctx, prefix)
}

// Close closes the store. It stops Badger's discard-statistics goroutine
// first (badgerDiscardStats); Badger truncates the value log's zeros, and
// the store syncs that.
func (s *BadgerStore) Close() error {
	s.discardStats.stop()
	if s.tail == nil {
		return s.Datastore.Close()
	}
	s.commitMu.Lock()
	s.tail.close()
	s.commitMu.Unlock()
	if err := s.Datastore.Close(); err != nil {
		return err
	}
	if err := s.tail.syncClosed(); err != nil {
		return fmt.Errorf("close ledger store %s: sync the value log: %w", s.dir, err)
	}
	return nil
}

// badgerTxn holds commitMu while it commits, and tells the tail after.
type badgerTxn struct {
	ds.Txn
	s        *BadgerStore
	readOnly bool
}

func (t *badgerTxn) Commit(ctx context.Context) error {
	if t.readOnly {
		return t.Txn.Commit(ctx)
	}
	t.s.commitMu.Lock()
	defer t.s.commitMu.Unlock()
	if err := t.Txn.Commit(ctx); err != nil {
		return err
	}
	if t.s.tail != nil {
		t.s.tail.committed()
	}
	return nil
}

// checkBadgerDir refuses a non-empty directory that holds no Badger
// manifest, so that a foreign directory is reported, not written into.
func checkBadgerDir(dir string, readOnly bool) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("open ledger store: %w", err)
	}
	if len(ents) == 0 {
		if readOnly {
			return fmt.Errorf("open ledger store %s: %w (empty directory)", dir, ErrNotLedger)
		}
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); err != nil {
		return fmt.Errorf("open ledger store %s: %w (no Badger MANIFEST)", dir, ErrNotLedger)
	}
	// Badger creates a value log when it finds none, even read-only.
	if vlogs, _ := filepath.Glob(filepath.Join(dir, "*.vlog")); len(vlogs) == 0 && readOnly {
		return fmt.Errorf("open ledger store %s: %w (no Badger value log)", dir, ErrNotLedger)
	}
	return nil
}

// valueViewer is the optional feature of a store that lends a stored value
// without copying it. Erasure reads one envelope out of each of many
// chunks with it.
type valueViewer interface {
	// viewValue calls fn with the value of key, valid only during fn, or
	// returns ds.ErrNotFound.
	viewValue(key ds.Key, fn func(v []byte) error) error
}

func (s *BadgerStore) viewValue(key ds.Key, fn func([]byte) error) error {
	return s.DB.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key.Bytes())
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ds.ErrNotFound
		}
		if err != nil {
			return err
		}
		return item.Value(fn)
	})
}

// viewValue lends the value of key through s's valueViewer, or a copy.
func viewValue(ctx context.Context, s Store, key ds.Key, fn func(v []byte) error) error {
	if vv, ok := s.(valueViewer); ok {
		return vv.viewValue(key, fn)
	}
	v, err := s.Get(ctx, key)
	if err != nil {
		return err
	}
	return fn(v)
}

// queryPrefix runs a prefix query in key order and calls fn for each entry
// until fn returns false or an error.
func queryPrefix(ctx context.Context, s ds.Read, prefix string, keysOnly bool, fn func(key string, value []byte) (bool, error)) error {
	res, err := s.Query(ctx, dsq.Query{Prefix: prefix, KeysOnly: keysOnly, Orders: []dsq.Order{dsq.OrderByKey{}}})
	if err != nil {
		return err
	}
	defer res.Close()
	for r := range res.Next() {
		if r.Error != nil {
			return r.Error
		}
		more, err := fn(r.Key, r.Value)
		if err != nil || !more {
			return err
		}
	}
	return nil
}
