package ledger

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	ds "github.com/ipfs/go-datastore"
	badgerds "github.com/ipfs/go-ds-badger"
)

// TestWriteTxn: a write-only transaction's writes are all seen once it
// commits, none before or after a discard; it refuses reads; it commits
// alongside ordinary transactions that read and write, with no conflict;
// and its writes survive a reopen.
func TestWriteTxn(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenBadger(dir, BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, ds.RawKey("/gone"), []byte("x")); err != nil {
		t.Fatal(err)
	}

	txn, err := newWriteTxn(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := txn.(*writeTxn); !ok {
		t.Fatalf("newWriteTxn on a Badger store: %T, want *writeTxn", txn)
	}
	for i := range 100 {
		if err := txn.Put(ctx, ds.RawKey(fmt.Sprintf("/w/%03d", i)), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := txn.Delete(ctx, ds.RawKey("/gone")); err != nil {
		t.Fatal(err)
	}
	if _, err := txn.Get(ctx, ds.RawKey("/w/000")); !errors.Is(err, errWriteOnly) {
		t.Errorf("Get in a write-only transaction: %v, want %v", err, errWriteOnly)
	}
	if _, err := txn.Has(ctx, ds.RawKey("/w/000")); !errors.Is(err, errWriteOnly) {
		t.Errorf("Has in a write-only transaction: %v, want %v", err, errWriteOnly)
	}
	if ok, _ := s.Has(ctx, ds.RawKey("/w/000")); ok {
		t.Error("a write is seen before its transaction commits")
	}
	if err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	txn.Discard(ctx) // after Commit: nothing
	for i := range 100 {
		if v, err := s.Get(ctx, ds.RawKey(fmt.Sprintf("/w/%03d", i))); err != nil || len(v) != 1 || v[0] != byte(i) {
			t.Fatalf("/w/%03d after commit: %v, %v", i, v, err)
		}
	}
	if ok, _ := s.Has(ctx, ds.RawKey("/gone")); ok {
		t.Error("a deleted key is still there after commit")
	}

	discarded, err := newWriteTxn(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if err := discarded.Put(ctx, ds.RawKey("/discarded"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	discarded.Discard(ctx)
	if ok, _ := s.Has(ctx, ds.RawKey("/discarded")); ok {
		t.Error("a discarded transaction's write is seen")
	}

	// Write-only transactions on their own keys, and ordinary ones that
	// read a counter and write it back, all at once.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 4 {
		wg.Go(func() {
			for i := range 200 {
				txn, err := newWriteTxn(ctx, s)
				if err == nil {
					err = txn.Put(ctx, ds.RawKey(fmt.Sprintf("/c/%d/%03d", w, i)), []byte("v"))
				}
				if err == nil {
					err = txn.Commit(ctx)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
		wg.Go(func() {
			key := ds.RawKey(fmt.Sprintf("/n/%d", w))
			for i := range 200 {
				txn, err := s.NewTransaction(ctx, false)
				if err != nil {
					errs <- err
					return
				}
				v, err := txn.Get(ctx, key)
				if errors.Is(err, ds.ErrNotFound) {
					v, err = []byte{0}, nil
				}
				if err == nil && int(v[0]) != i {
					err = fmt.Errorf("counter %s: read %d, want %d", key, v[0], i)
				}
				if err == nil {
					err = txn.Put(ctx, key, []byte{byte(i + 1)})
				}
				if err == nil {
					err = txn.Commit(ctx)
				}
				txn.Discard(ctx)
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	late, err := s.NewWriteTransaction(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := late.Put(ctx, ds.RawKey("/late"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := late.Commit(ctx); !errors.Is(err, badgerds.ErrClosed) {
		t.Errorf("a commit after Close: %v, want %v", err, badgerds.ErrClosed)
	}
	if _, err := s.NewWriteTransaction(ctx); !errors.Is(err, badgerds.ErrClosed) {
		t.Errorf("a write-only transaction on a closed store: %v, want %v", err, badgerds.ErrClosed)
	}

	s, err = OpenBadger(dir, BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for w := range 4 {
		if _, err := s.Get(ctx, ds.RawKey(fmt.Sprintf("/c/%d/199", w))); err != nil {
			t.Errorf("/c/%d/199 after reopen: %v", w, err)
		}
		if v, err := s.Get(ctx, ds.RawKey(fmt.Sprintf("/n/%d", w))); err != nil || v[0] != 200 {
			t.Errorf("/n/%d after reopen: %v, %v", w, v, err)
		}
	}
	if _, err := s.Get(ctx, ds.RawKey("/w/099")); err != nil {
		t.Errorf("/w/099 after reopen: %v", err)
	}
	if ok, _ := s.Has(ctx, ds.RawKey("/late")); ok {
		t.Error("a write committed after Close is there after reopen")
	}
}
