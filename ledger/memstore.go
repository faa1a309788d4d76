package ledger

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/google/btree"
	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
)

// MemStore is an in-memory Store: an ordered tree of keys behind a lock,
// with transactions that apply all their writes at once. It passes the same
// conformance suite as the Badger store and is meant for tests and for
// replaying a ledger that fits in memory.
type MemStore struct {
	mu     sync.RWMutex
	tree   *btree.BTreeG[memItem]
	closed bool
}

type memItem struct {
	key   string
	value []byte
}

func lessItem(a, b memItem) bool { return a.key < b.key }

// NewMemStore returns an empty in-memory store.
func NewMemStore() *MemStore {
	return &MemStore{tree: btree.NewG(32, lessItem)}
}

var errStoreClosed = errors.New("store closed")

// Get implements ds.Read.
func (m *MemStore) Get(_ context.Context, key ds.Key) ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, errStoreClosed
	}
	it, ok := m.tree.Get(memItem{key: key.String()})
	if !ok {
		return nil, ds.ErrNotFound
	}
	return append([]byte(nil), it.value...), nil
}

// Has implements ds.Read.
func (m *MemStore) Has(_ context.Context, key ds.Key) (bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return false, errStoreClosed
	}
	return m.tree.Has(memItem{key: key.String()}), nil
}

// GetSize implements ds.Read.
func (m *MemStore) GetSize(_ context.Context, key ds.Key) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return -1, errStoreClosed
	}
	it, ok := m.tree.Get(memItem{key: key.String()})
	if !ok {
		return -1, ds.ErrNotFound
	}
	return len(it.value), nil
}

// Query implements ds.Read. Prefixes are path prefixes, as in go-ds-badger:
// "/a" matches "/a/b" but not "/ab". Results come in ascending key order, or
// descending when the first order is OrderByKeyDescending.
func (m *MemStore) Query(_ context.Context, q dsq.Query) (dsq.Results, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, errStoreClosed
	}
	prefix := ds.NewKey(q.Prefix).String()
	if prefix != "/" {
		prefix += "/"
	}
	desc := false
	if len(q.Orders) > 0 {
		switch q.Orders[0].(type) {
		case dsq.OrderByKey, *dsq.OrderByKey:
		case dsq.OrderByKeyDescending, *dsq.OrderByKeyDescending:
			desc = true
		default:
			return nil, errors.New("memstore: only key orders are supported")
		}
	}
	var entries []dsq.Entry
	skip := q.Offset
	visit := func(it memItem) bool {
		if !strings.HasPrefix(it.key, prefix) {
			return false
		}
		e := dsq.Entry{Key: it.key, Size: len(it.value)}
		if !q.KeysOnly {
			e.Value = append([]byte(nil), it.value...)
		}
		for _, f := range q.Filters {
			if !f.Filter(e) {
				return true
			}
		}
		if skip > 0 {
			skip--
			return true
		}
		entries = append(entries, e)
		return q.Limit <= 0 || len(entries) < q.Limit
	}
	if desc {
		// The last key with the prefix sorts before prefix+"\xff...".
		m.tree.DescendLessOrEqual(memItem{key: prefix + "\xff\xff\xff\xff"}, visit)
	} else {
		m.tree.AscendGreaterOrEqual(memItem{key: prefix}, visit)
	}
	return dsq.ResultsWithEntries(q, entries), nil
}

// Put implements ds.Write.
func (m *MemStore) Put(_ context.Context, key ds.Key, value []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errStoreClosed
	}
	m.tree.ReplaceOrInsert(memItem{key.String(), append([]byte(nil), value...)})
	return nil
}

// Delete implements ds.Write.
func (m *MemStore) Delete(_ context.Context, key ds.Key) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errStoreClosed
	}
	m.tree.Delete(memItem{key: key.String()})
	return nil
}

// Sync implements ds.Datastore; memory has nothing to sync.
func (m *MemStore) Sync(context.Context, ds.Key) error { return nil }

// Close implements ds.Datastore.
func (m *MemStore) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

// DropPrefix removes every key under the path prefix.
func (m *MemStore) DropPrefix(prefix string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var keys []string
	m.tree.AscendGreaterOrEqual(memItem{key: prefix}, func(it memItem) bool {
		if !strings.HasPrefix(it.key, prefix) {
			return false
		}
		keys = append(keys, it.key)
		return true
	})
	for _, k := range keys {
		m.tree.Delete(memItem{key: k})
	}
	return nil
}

// NewTransaction implements ds.TxnDatastore. Reads see the store as it is
// (not the transaction's own writes); writes apply at Commit, all at once.
func (m *MemStore) NewTransaction(_ context.Context, readOnly bool) (ds.Txn, error) {
	return &memTxn{m: m, readOnly: readOnly}, nil
}

type memTxn struct {
	m        *MemStore
	readOnly bool
	ops      []memOp
	done     bool
}

type memOp struct {
	key    string
	value  []byte
	delete bool
}

func (t *memTxn) Get(ctx context.Context, k ds.Key) ([]byte, error) { return t.m.Get(ctx, k) }
func (t *memTxn) Has(ctx context.Context, k ds.Key) (bool, error)   { return t.m.Has(ctx, k) }
func (t *memTxn) GetSize(ctx context.Context, k ds.Key) (int, error) {
	return t.m.GetSize(ctx, k)
}
func (t *memTxn) Query(ctx context.Context, q dsq.Query) (dsq.Results, error) {
	return t.m.Query(ctx, q)
}

func (t *memTxn) Put(_ context.Context, k ds.Key, v []byte) error {
	if t.readOnly || t.done {
		return errors.New("memstore: write to a read-only or finished transaction")
	}
	t.ops = append(t.ops, memOp{key: k.String(), value: append([]byte(nil), v...)})
	return nil
}

func (t *memTxn) Delete(_ context.Context, k ds.Key) error {
	if t.readOnly || t.done {
		return errors.New("memstore: write to a read-only or finished transaction")
	}
	t.ops = append(t.ops, memOp{key: k.String(), delete: true})
	return nil
}

func (t *memTxn) Commit(context.Context) error {
	if t.done {
		return errors.New("memstore: transaction already finished")
	}
	t.done = true
	t.m.mu.Lock()
	defer t.m.mu.Unlock()
	if t.m.closed {
		return errStoreClosed
	}
	for _, op := range t.ops {
		if op.delete {
			t.m.tree.Delete(memItem{key: op.key})
		} else {
			t.m.tree.ReplaceOrInsert(memItem{op.key, op.value})
		}
	}
	t.ops = nil
	return nil
}

func (t *memTxn) Discard(context.Context) { t.done = true; t.ops = nil }
