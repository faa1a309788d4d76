package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"testing"

	ds "github.com/ipfs/go-datastore"
)

// vlogDataEnd walks the records of a value-log file and returns where the
// last whole record ends.
func vlogDataEnd(b []byte) int { return vlogRecords(b, nil) }

// vlogRecords walks the whole records of a value-log file, calling key (if
// not nil) with each record's key, its version cut off, and returns where
// the last one ends.
func vlogRecords(b []byte, key func([]byte)) int {
	off := 0
	for off+vlogHeaderLen <= len(b) {
		klen := int(binary.BigEndian.Uint32(b[off:]))
		vlen := int(binary.BigEndian.Uint32(b[off+4:]))
		n := vlogHeaderLen + klen + vlen + vlogCRCLen
		if klen == 0 || off+n > len(b) {
			break
		}
		if crc32.Checksum(b[off:off+n-vlogCRCLen], castagnoli) != binary.BigEndian.Uint32(b[off+n-vlogCRCLen:]) {
			break
		}
		if key != nil {
			key(b[off+vlogHeaderLen : off+vlogHeaderLen+klen-vlogVersionLen])
		}
		off += n
	}
	return off
}

// vlogFiles returns the value-log files of dir in fid order.
func vlogFiles(t *testing.T, dir string) []string {
	t.Helper()
	fs, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(fs)
	return fs
}

// checkTail checks that file holds whole records and then only zeros:
// at least wantZeros of them.
func checkTail(t *testing.T, file string, wantZeros int) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	end := vlogDataEnd(b)
	if end == 0 {
		t.Fatalf("%s: no record", file)
	}
	if i := bytes.IndexFunc(b[end:], func(r rune) bool { return r != 0 }); i >= 0 {
		t.Fatalf("%s: a byte that is not zero at %d, after the records' end %d", file, end+i, end)
	}
	if z := len(b) - end; z < wantZeros {
		t.Fatalf("%s: %d bytes of zeros after the records (at %d), want at least %d", file, z, end, wantZeros)
	}
}

type tailFixture struct {
	t    *testing.T
	dir  string
	opt  BadgerOptions
	s    *BadgerStore
	vals map[string][]byte
	rng  *rand.Rand
}

func newTailFixture(t *testing.T, opt BadgerOptions) *tailFixture {
	f := &tailFixture{t: t, dir: t.TempDir(), opt: opt, vals: map[string][]byte{}, rng: rand.New(rand.NewPCG(1, 2))}
	f.open()
	return f
}

func (f *tailFixture) open() {
	s, err := OpenBadger(f.dir, f.opt)
	if err != nil {
		f.t.Fatal(err)
	}
	f.s = s
}

// commit commits one transaction of n values of size bytes, and syncs.
func (f *tailFixture) commit(n, size int) {
	f.t.Helper()
	ctx := context.Background()
	txn, err := f.s.NewTransaction(ctx, false)
	if err != nil {
		f.t.Fatal(err)
	}
	defer txn.Discard(ctx)
	for range n {
		k := fmt.Sprintf("/v/%06d", len(f.vals))
		v := make([]byte, size)
		for i := range v {
			v[i] = byte(f.rng.Uint32())
		}
		if err := txn.Put(ctx, ds.NewKey(k), v); err != nil {
			f.t.Fatal(err)
		}
		f.vals[k] = v
	}
	if err := txn.Commit(ctx); err != nil {
		f.t.Fatal(err)
	}
	if err := f.s.Sync(ctx, ds.NewKey("/")); err != nil {
		f.t.Fatal(err)
	}
}

// commitMany commits n transactions of one value of size bytes (short
// in -short mode).
func (f *tailFixture) commitMany(n, short, size int) {
	f.t.Helper()
	if testing.Short() {
		n = short
	}
	for range n {
		f.commit(1, size)
	}
}

// check reads every value back.
func (f *tailFixture) check(s *BadgerStore) {
	f.t.Helper()
	for k, want := range f.vals {
		got, err := s.Get(context.Background(), ds.NewKey(k))
		if err != nil {
			f.t.Fatalf("get %s: %v", k, err)
		}
		if !bytes.Equal(got, want) {
			f.t.Fatalf("get %s: wrong value", k)
		}
	}
}

// checkClean checks that file holds whole records and nothing after them.
func checkClean(t *testing.T, file, what string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if end := vlogDataEnd(b); end != len(b) {
		t.Fatalf("%s%s: %d bytes, its records end at %d", file, what, len(b), end)
	}
}

// checkFollows checks that the tail follows the newest value-log file,
// with zeros ahead in it, and returns the files.
func (f *tailFixture) checkFollows() []string {
	f.t.Helper()
	files := vlogFiles(f.t, f.dir)
	newest := files[len(files)-1]
	if got := f.s.tail.path(f.s.tail.fid); got != newest || f.s.tail.cut {
		f.t.Fatalf("the tail follows %s (cut: %v), want %s", got, f.s.tail.cut, newest)
	}
	checkTail(f.t, newest, appendGuard)
	return files
}

// checkReopened reads every value back, closes the store, reopens it and
// reads them again.
func (f *tailFixture) checkReopened() {
	f.t.Helper()
	f.check(f.s)
	f.s.Close()
	f.open()
	f.check(f.s)
	f.s.Close()
}

func TestVlogTailZerosAhead(t *testing.T) {
	f := newTailFixture(t, BadgerOptions{})
	// A chunk of zeros per commit until appendAhead are ahead: each commit
	// here is under 100 KB.
	const warm = appendAhead/appendChunk + 1
	for i := range 200 {
		f.commit(1+i%5, 300+i*97%20000)
		if i < warm || i%25 != 0 {
			continue
		}
		files := vlogFiles(t, f.dir)
		if len(files) != 1 {
			t.Fatalf("%d value-log files, want 1", len(files))
		}
		checkTail(t, files[0], appendAhead-100_000)
	}
	// One commit larger than the zeros ahead: Badger writes past them, and
	// the next zeros start appendGuard past its data.
	f.commit(3, 2<<20)
	f.commit(1, 100)
	checkTail(t, vlogFiles(t, f.dir)[0], appendGuard+appendChunk-200)
	f.check(f.s)
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	// Closed, Badger has cut the zeros: a read-only open finds a clean
	// store.
	checkTail(t, vlogFiles(t, f.dir)[0], 0)
	checkClean(t, vlogFiles(t, f.dir)[0], " of the closed store")
	ro, err := OpenBadger(f.dir, BadgerOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only open after close: %v", err)
	}
	f.check(ro)
	ro.Close()
	// Reopened for writing, it writes zeros ahead again, the first
	// appendGuard past the end: Badger may be appending by itself.
	f.open()
	size := f.s.tail.end
	f.commit(2, 1000)
	checkTail(t, vlogFiles(t, f.dir)[0], appendGuard)
	if f.s.tail.end < size+appendGuard+appendChunk {
		t.Fatalf("reopened at %d bytes, the zeros end at %d: want the first chunk %d bytes past the end", size, f.s.tail.end, appendGuard)
	}
	f.check(f.s)
	f.s.Close()
}

// rotated makes a store of 1 MiB value-log files and commits n
// transactions of two 50 KB values, which must leave at least files
// value-log files; it checks that the tail follows the newest and returns
// the fixture and the files.
func rotated(t *testing.T, n, files int) (*tailFixture, []string) {
	t.Helper()
	f := newTailFixture(t, BadgerOptions{valueLogFileSize: 1 << 20})
	for range n {
		f.commit(2, 50_000)
	}
	got := f.checkFollows()
	if len(got) < files {
		t.Fatalf("%d value-log files, want Badger to have rotated at least %d times", len(got), files-1)
	}
	return f, got
}

func TestVlogTailRotation(t *testing.T) {
	// Older files were cut by Badger when it rotated; the newest has
	// zeros ahead, and the tail syncs it.
	f, files := rotated(t, 60, 3)
	for _, file := range files[:len(files)-1] {
		checkClean(t, file, "")
	}
	f.checkReopened()
}

// A file that shrinks under the tail is one Badger has cut (as it does
// when it rotates, before it makes the next file): the tail writes no more
// zeros into it, commits and syncs go on, and in Badger's next file the
// tail writes zeros again.
func TestVlogTailCut(t *testing.T) {
	f := newTailFixture(t, BadgerOptions{valueLogFileSize: 4 << 20})
	for range 5 {
		f.commit(2, 1000)
	}
	first := f.checkFollows()[0]
	// Cut the zeros off, as Badger's rotation does, with Badger's newest
	// file unchanged.
	b, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(first, int64(vlogDataEnd(b))); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		f.commit(2, 1000)
	}
	if !f.s.tail.cut {
		t.Fatal("the tail did not see its file cut")
	}
	checkClean(t, first, " after the cut")
	f.check(f.s)
	// Badger rotates: the tail follows, and writes zeros ahead again.
	for len(vlogFiles(t, f.dir)) < 2 {
		f.commit(4, 100_000)
	}
	f.commit(1, 100)
	f.checkFollows()
	f.checkReopened()
}

// Syncs running while commits make Badger rotate its value log: a sync
// that finds its file closed by the move to the next one syncs that one.
func TestVlogTailSyncDuringRotation(t *testing.T) {
	f := newTailFixture(t, BadgerOptions{valueLogFileSize: 1 << 20})
	ctx := context.Background()
	stop := make(chan struct{})
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			for {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				if err := f.s.Sync(ctx, ds.NewKey("/")); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	f.commitMany(400, 150, 400_000)
	close(stop)
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("sync during rotations: %v", err)
		}
	}
	if n, want := len(vlogFiles(t, f.dir)), len(f.vals)/4; n < want {
		t.Fatalf("%d value-log files, want Badger to have rotated at least %d times", n, want-1)
	}
	f.check(f.s)
	f.s.Close()
}

// A crash leaves the zeros in the file: a writable open cuts them, as it
// cuts a torn record, and a read-only open asks for that recovery.
func TestVlogTailAfterCrash(t *testing.T) {
	f := newTailFixture(t, BadgerOptions{})
	for i := range 20 {
		f.commit(2, 1000+i*300)
	}
	// The crash: a copy of the directory of the open store.
	crashed := crashCopy(t, f.dir)
	checkTail(t, vlogFiles(t, crashed)[0], appendGuard)
	f.s.Close()

	if _, err := OpenBadger(crashed, BadgerOptions{ReadOnly: true}); !errors.Is(err, ErrNeedsRecovery) {
		t.Fatalf("read-only open of a crashed store: %v, want ErrNeedsRecovery", err)
	}
	f.dir = crashed
	f.open()
	f.check(f.s)
	f.commit(1, 500)
	checkTail(t, vlogFiles(t, crashed)[0], appendGuard)
	f.s.Close()
	ro, err := OpenBadger(crashed, BadgerOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only open after recovery and close: %v", err)
	}
	f.check(ro)
	ro.Close()
}

// A rotation that begins just after the tail has looked can leave one
// chunk of zeros after the last record of the file Badger has just left.
// Nothing reads there: reopened after a clean close, every value reads
// back; after a crash, a writable open replays the file and cuts the
// zeros, as it cuts a torn record, and a read-only open asks for that
// recovery.
func TestVlogTailZerosLeftInOlderFile(t *testing.T) {
	f, files := rotated(t, 30, 2)
	older := files[len(files)-2]
	leaveZeros := func(file string) {
		t.Helper()
		o, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := o.Write(make([]byte, appendChunk)); err != nil {
			t.Fatal(err)
		}
		if err := o.Close(); err != nil {
			t.Fatal(err)
		}
	}

	// The crash: a copy of the directory of the open store, taken before
	// Badger has flushed a memtable, so that an open replays every file.
	crashed := crashCopy(t, f.dir)
	crashedVals := maps.Clone(f.vals)

	// After a clean close.
	f.s.Close()
	leaveZeros(older)
	f.open()
	f.check(f.s)
	f.commit(2, 50_000)
	f.s.Close()
	ro, err := OpenBadger(f.dir, BadgerOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only open with zeros after an older file's records: %v", err)
	}
	f.check(ro)
	ro.Close()

	// After a crash.
	crashedOlder := filepath.Join(crashed, filepath.Base(older))
	leaveZeros(crashedOlder)
	if _, err := OpenBadger(crashed, BadgerOptions{ReadOnly: true}); !errors.Is(err, ErrNeedsRecovery) {
		t.Fatalf("read-only open of a crashed store: %v, want ErrNeedsRecovery", err)
	}
	f.dir, f.vals = crashed, crashedVals
	f.open()
	checkClean(t, crashedOlder, " after a writable open replayed it")
	f.check(f.s)
	f.commit(1, 500)
	f.checkReopened()
}

// crashCopy copies the directory of an open store, as a crash would leave
// it, into a new directory, and returns that.
func crashCopy(t *testing.T, dir string) string {
	t.Helper()
	crashed := t.TempDir()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == "LOCK" {
			continue
		}
		copyFile(t, filepath.Join(dir, e.Name()), filepath.Join(crashed, e.Name()))
	}
	return crashed
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// discardStatsChan returns the channel on which Badger v1.6's compactions
// hand their discard statistics to the goroutine that appends them to the
// value log (value.go, flushDiscardStats): an append outside any commit.
func discardStatsChan(t *testing.T, s *BadgerStore) chan<- map[uint32]int64 {
	t.Helper()
	d, err := badgerDiscardStatsOf(s.DB)
	if err != nil {
		t.Fatal(err)
	}
	return *d.flushChan
}

// Badger appending by itself while commits rotate the value log: the
// zeros never land on its records, and a crash loses no synced value.
func TestVlogTailBadgerOwnAppends(t *testing.T) {
	f := newTailFixture(t, BadgerOptions{valueLogFileSize: 1 << 20})
	stop := make(chan struct{})
	done := floodDiscardStats(t, f.s, stop)
	f.commitMany(300, 120, 300_000)
	close(stop)
	<-done
	// Closed, Badger has cut the newest file's zeros (the store stopped
	// Badger's appends of statistics first, dropping those queued).
	// Every file holds whole records, then zeros only (a record of
	// Badger's that zeros overwrote ends the records early, and records
	// follow), and every committed value is in a record. (The store is
	// not reopened: Badger v1.6's open races with its own flush of the
	// discard statistics it finds, under -race.) The newest file is
	// empty when the last commit made Badger rotate and nothing of
	// Badger's own followed.
	f.s.Close()
	keys := map[string]bool{}
	files := vlogFiles(t, f.dir)
	for i, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 && i == len(files)-1 {
			continue
		}
		checkTail(t, file, 0)
		vlogRecords(b, func(k []byte) { keys[string(k)] = true })
	}
	for k := range f.vals {
		if !keys[k] {
			t.Fatalf("%s: no record of it in the value log", k)
		}
	}
}
