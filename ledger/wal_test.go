package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	ds "github.com/ipfs/go-datastore"

	"github.com/osmose-os/osmose/ledger"
)

// The write-ahead log is tested by giving a store whose Badger files lack
// transactions the log file of a store that has them: what a machine crash
// leaves when Badger's value log was not synced and the log was.

func openStore(t *testing.T, dir string) *ledger.BadgerStore {
	t.Helper()
	s, err := ledger.OpenBadger(dir, ledger.BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// commit writes key i (and deletes key i-1's twin) in one transaction.
func commit(t *testing.T, s ledger.Store, i int) {
	t.Helper()
	ctx := context.Background()
	txn, err := s.NewTransaction(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Discard(ctx)
	if err := txn.Put(ctx, ds.NewKey(fmt.Sprintf("/k/%d", i)), []byte(fmt.Sprintf("value %d", i))); err != nil {
		t.Fatal(err)
	}
	if err := txn.Put(ctx, ds.NewKey(fmt.Sprintf("/twin/%d", i)), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := txn.Delete(ctx, ds.NewKey(fmt.Sprintf("/twin/%d", i-1))); err != nil {
		t.Fatal(err)
	}
	if err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func syncStore(t *testing.T, s ledger.Store) {
	t.Helper()
	if err := s.Sync(context.Background(), ds.NewKey("/")); err != nil {
		t.Fatal(err)
	}
}

// checkKeys checks that keys 1..n are there, and n+1.. are not.
func checkKeys(t *testing.T, s ledger.Store, n, upto int) {
	t.Helper()
	ctx := context.Background()
	for i := 1; i <= upto; i++ {
		v, err := s.Get(ctx, ds.NewKey(fmt.Sprintf("/k/%d", i)))
		switch {
		case i <= n && err != nil:
			t.Fatalf("key %d: %v", i, err)
		case i <= n && string(v) != fmt.Sprintf("value %d", i):
			t.Fatalf("key %d: %q", i, v)
		case i > n && !errors.Is(err, ds.ErrNotFound):
			t.Fatalf("key %d: want not found, got %q, %v", i, v, err)
		}
		twin, err := s.Has(ctx, ds.NewKey(fmt.Sprintf("/twin/%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if twin != (i == n) {
			t.Fatalf("twin %d: present %v with %d transactions", i, twin, n)
		}
	}
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// copyWAL gives the store in dst the write-ahead log of the one in src.
func copyWAL(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(src, "osmose.wal"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, "osmose.wal"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// putBig writes value under key in a transaction of its own.
func putBig(t *testing.T, s ledger.Store, key string, value []byte) {
	t.Helper()
	ctx := context.Background()
	txn, err := s.NewTransaction(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Discard(ctx)
	if err := txn.Put(ctx, ds.NewKey(key), value); err != nil {
		t.Fatal(err)
	}
	if err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// lagging returns a store directory whose Badger files hold transactions
// 1..5 and whose write-ahead log, taken from a store that went on, holds
// the transactions until more, each synced alone; settleAt > 0 settles
// the log (as erasure does) before that transaction. The store first
// writes big transactions of 256 KiB, synced in threes.
func lagging(t *testing.T, more, settleAt, big int) string {
	t.Helper()
	live, lag := t.TempDir(), t.TempDir()
	s := openStore(t, live)
	v := make([]byte, 256<<10)
	for i := 0; i < big; i++ {
		v[0], v[1] = byte(i), byte(i>>8)
		putBig(t, s, fmt.Sprintf("/big/%03d", i), v)
		if i%3 == 2 {
			syncStore(t, s)
		}
	}
	for i := 1; i <= 5; i++ {
		commit(t, s, i)
		syncStore(t, s)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	copyDir(t, live, lag)
	s = openStore(t, live)
	defer s.Close()
	for i := 6; i <= more; i++ {
		if i == settleAt {
			if err := ledger.SettleLog(s); err != nil {
				t.Fatal(err)
			}
		}
		commit(t, s, i)
		syncStore(t, s)
	}
	copyWAL(t, live, lag)
	return lag
}

func TestWALReplaysWhatBadgerLacks(t *testing.T) {
	dir := lagging(t, 40, 0, 0)
	if _, err := ledger.OpenBadger(dir, ledger.BadgerOptions{ReadOnly: true}); !errors.Is(err, ledger.ErrNeedsRecovery) {
		t.Fatalf("read-only open of a store its log is ahead of: %v, want ErrNeedsRecovery", err)
	}
	s := openStore(t, dir)
	checkKeys(t, s, 40, 45)
	// The store goes on from there, and a clean reopen replays nothing.
	for i := 41; i <= 45; i++ {
		commit(t, s, i)
	}
	syncStore(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ro, err := ledger.OpenBadger(dir, ledger.BadgerOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	checkKeys(t, ro, 45, 46)
	ro.Close()
}

func TestWALTornRecord(t *testing.T) {
	dir := lagging(t, 12, 0, 0)
	// Each sync wrote one 4 KiB record from the log's start: transaction
	// 12's is the seventh. Damage its last byte of data.
	path := filepath.Join(dir, "osmose.wal")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rec := b[6*4096 : 7*4096]
	if string(rec[:4]) != "OSWL" {
		t.Fatalf("no record at the seventh block: %q", rec[:4])
	}
	rec[40] ^= 0xff
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, dir)
	defer s.Close()
	checkKeys(t, s, 11, 13)
}

func TestWALGap(t *testing.T) {
	// The log was settled before transaction 9: it holds 9..12, and the
	// Badger files 1..5. Nothing can fill 6..8.
	dir := lagging(t, 12, 9, 0)
	_, err := ledger.OpenBadger(dir, ledger.BadgerOptions{})
	if !errors.Is(err, ledger.ErrCorrupt) {
		t.Fatalf("open with a gap before the log: %v, want ErrCorrupt", err)
	}
}

func TestWALWrapsAround(t *testing.T) {
	// Transactions of 256 KiB, synced in threes, go through both halves
	// of the log several times; every value is there after a reopen.
	// Then a lagging store gets its missing transactions from a log whose
	// records after them, and in the other half, are from earlier passes.
	dir := lagging(t, 20, 0, 300)
	s := openStore(t, dir)
	defer s.Close()
	checkKeys(t, s, 20, 21)
	ctx := context.Background()
	for i := 0; i < 300; i++ {
		v, err := s.Get(ctx, ds.NewKey(fmt.Sprintf("/big/%03d", i)))
		if err != nil || len(v) != 256<<10 || v[0] != byte(i) || v[1] != byte(i>>8) {
			t.Fatalf("big %d: %d bytes, %v", i, len(v), err)
		}
	}
}

func TestWALFillsHalvesExactly(t *testing.T) {
	// 4,300 syncs of one small transaction: 4 KiB records that fill each
	// half of the 4 MiB log exactly, then wrap into the first again.
	dir := t.TempDir()
	s := openStore(t, dir)
	for i := 1; i <= 4300; i++ {
		commit(t, s, i)
		syncStore(t, s)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	defer s.Close()
	checkKeys(t, s, 4300, 4301)
}

func TestWALAfterABigSync(t *testing.T) {
	// A sync of more than a quarter of the log syncs Badger instead; the
	// records after it must still be found. The lagging copy of Badger's
	// files is taken right after that sync.
	live, lag := t.TempDir(), t.TempDir()
	s := openStore(t, live)
	defer s.Close()
	for i := 1; i <= 5; i++ {
		commit(t, s, i)
		syncStore(t, s)
	}
	putBig(t, s, "/big", make([]byte, 1536<<10))
	syncStore(t, s)
	copyDir(t, live, lag)
	for i := 6; i <= 8; i++ {
		commit(t, s, i)
		syncStore(t, s)
	}
	copyWAL(t, live, lag)
	s2 := openStore(t, lag)
	defer s2.Close()
	checkKeys(t, s2, 8, 9)
}
