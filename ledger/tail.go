package ledger

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/dgraph-io/badger"
)

// vlogTail makes the Badger store's commits durable more cheaply than
// Badger's own sync, which fsyncs the newest value-log file.
//
// On ext4 (and most file systems), syncing an appended file writes its
// data, then its inode (the size; with fsync, the times), then the block
// bitmaps and extents of the blocks the append allocated: three writes in
// turn, and a flush. Writing into blocks that already hold data, with
// fdatasync, writes the data and flushes; nothing else changed. So the
// tail keeps zeros written after the end of Badger's data in the newest
// file (appendAhead bytes, written chunk by chunk as Badger's data nears
// their end, with write-back started at once), and syncs with fdatasync
// through a descriptor of its own. Badger writes its values over the
// zeros. A sync then costs about half the device time and half the CPU
// (BENCHMARKS.md, "Zeros ahead of the value log").
//
// Zeros never overwrite a value. They are written after the end of the
// file, with no commit in flight (BadgerStore.commitMu), and the tail
// reads where Badger's next append goes (badgerLog). Badger also appends
// by itself, outside any commit: its discard statistics, a record of 16
// bytes per value-log file after some compactions, one at a time; one may
// be in flight while the tail looks. So zeros go right at the end of the
// file only while they leave Badger appendGuard bytes or more; otherwise
// (after an open or a rotation, or after a commit larger than the zeros)
// they start appendGuard past the end, and Badger's next appends fill the
// hole between as ordinary appends.
//
// Badger truncates the zeros itself when it rotates to a new file and
// when it closes (the store then syncs the file, so that the truncation
// is durable); a writable open after a crash truncates them as it does a
// torn record (Badger stops replaying at the first record whose checksum
// fails, and a record of zeros fails it). A read-only open after a crash
// reports the store as needing recovery, as it did before.
type vlogTail struct {
	dir      string
	fileSize int64 // Badger's ValueLogFileSize: it rotates past it
	log      badgerLog

	mu  sync.Mutex
	fid int      // the newest value-log file
	f   *os.File // a descriptor of it, for writing zeros and for syncs
	// end is the file's size when the tail last looked or wrote: Badger's
	// data, then the tail's zeros. A larger size means Badger wrote past
	// the zeros.
	end   int64
	zeros []byte
	// cut: the file is smaller than the tail left it: Badger truncated it,
	// rotating to a new file. No more zeros go into it. (A rotation that
	// begins after the tail has looked can still leave one chunk in the
	// older file, after its last record, where nothing reads it and a
	// replay cuts it: TestVlogTailZerosLeftInOlderFile.)
	cut bool
	// off: writing zeros failed (e.g. the disk is full), or the tail lost
	// track of Badger's file; it writes no more zeros and still syncs.
	off bool
}

var errTailClosed = errors.New("value-log tail closed")

const (
	appendChunk = 1 << 20
	appendAhead = 4 << 20
	// appendGuard is far more than one append of Badger's own: a
	// discard-statistics record of 16 bytes for each of up to 65,536
	// value-log files (16 TiB).
	appendGuard = 1 << 20
)

// badgerLog reads, in Badger v1.6's unexported valueLog (value.go), the
// newest value-log file (maxFid) and the offset in it where Badger's next
// append goes (writableLogOffset); Badger updates both atomically.
type badgerLog struct{ maxFid, offset *uint32 }

func badgerLogOf(db *badger.DB) (badgerLog, error) {
	v, err := badgerVlog(db)
	if err != nil {
		return badgerLog{}, err
	}
	fid, off := v.FieldByName("maxFid"), v.FieldByName("writableLogOffset")
	if fid.Kind() != reflect.Uint32 || off.Kind() != reflect.Uint32 {
		return badgerLog{}, errors.New("badger's valueLog has no v1.6 maxFid and writableLogOffset")
	}
	return badgerLog{
		maxFid: (*uint32)(unsafe.Pointer(fid.UnsafeAddr())),
		offset: (*uint32)(unsafe.Pointer(off.UnsafeAddr())),
	}, nil
}

// badgerVlog returns Badger v1.6's unexported valueLog in db, whose
// fields the tail (badgerLog) and the store's close (badgerDiscardStats)
// read.
func badgerVlog(db *badger.DB) (reflect.Value, error) {
	v := reflect.ValueOf(db).Elem().FieldByName("vlog")
	if v.Kind() != reflect.Struct {
		return reflect.Value{}, errors.New("badger.DB has no v1.6 vlog field")
	}
	return v, nil
}

// position returns Badger's newest file and the offset of its next
// append in it; ok is false while Badger moves to a new file (it raises
// maxFid, then resets the offset).
func (b badgerLog) position() (fid int, off int64, ok bool) {
	f := atomic.LoadUint32(b.maxFid)
	o := atomic.LoadUint32(b.offset)
	return int(f), int64(o), f == atomic.LoadUint32(b.maxFid)
}

// openVlogTail opens the newest value-log file in dir, which Badger has
// just opened (and, after a crash, truncated to its last whole commit).
func openVlogTail(db *badger.DB, dir string, fileSize int64) (*vlogTail, error) {
	log, err := badgerLogOf(db)
	if err != nil {
		return nil, err
	}
	fid, _, _ := log.position()
	t := &vlogTail{dir: dir, fileSize: fileSize, log: log}
	if err := t.reopen(fid); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *vlogTail) path(fid int) string {
	return filepath.Join(t.dir, fmt.Sprintf("%06d.vlog", fid))
}

// reopen makes fid the tail's file, in which it has written no zeros yet.
func (t *vlogTail) reopen(fid int) error {
	f, err := os.OpenFile(t.path(fid), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	size, err := fileSize(f)
	if err != nil {
		f.Close()
		return err
	}
	if t.f != nil {
		t.f.Close() // a sync still running on it holds it open (datasync)
	}
	t.fid, t.f, t.end, t.cut = fid, f, size, false
	return nil
}

// fileSize returns f's size without a stat: on Linux, a stat of the file
// makes its next write take a fine-grained time (multigrain timestamps),
// which dirties the inode, and the next fdatasync then writes the inode
// as well. A seek to the end reads the size alone. (The tail writes with
// WriteAt, so its descriptor's offset does not matter.)
func fileSize(f *os.File) (int64, error) { return f.Seek(0, io.SeekEnd) }

// follow moves to Badger's newest file if it has rotated. Badger synced
// the older file before it created the new one.
func (t *vlogTail) follow() error {
	for {
		if newest, _, _ := t.log.position(); newest <= t.fid {
			return nil
		}
		_, err := os.Stat(t.path(t.fid + 1))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := t.reopen(t.fid + 1); err != nil {
			return err
		}
	}
}

// committed is told, with no other commit in flight, that a commit
// returned; it writes a chunk of zeros when fewer than appendAhead bytes
// are left after Badger's next append. If it cannot, it stops writing
// zeros (the store works as it would without them); a sync that cannot
// follow Badger's newest file reports it.
func (t *vlogTail) committed() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.f == nil || t.off {
		return
	}
	if err := t.follow(); err != nil {
		t.off = true
		return
	}
	size, err := fileSize(t.f)
	if err != nil {
		t.off = true
		return
	}
	switch {
	case size < t.end:
		t.cut = true
	case size > t.end:
		t.end = size // Badger wrote past the zeros
	}
	fid, off, ok := t.log.position()
	if !ok || fid != t.fid {
		return // Badger is moving to its next file: the next commit follows
	}
	if t.cut || t.end-off >= appendAhead || t.end >= t.fileSize+appendAhead {
		return
	}
	if err := t.appendZeros(off); err != nil {
		t.off = true
	}
}

// appendZeros writes a chunk of zeros after the end of the file: right at
// it if that leaves appendGuard bytes after next, the offset of Badger's
// next append, else appendGuard past it. Nothing is written below the
// file's size.
func (t *vlogTail) appendZeros(next int64) error {
	if t.zeros == nil {
		t.zeros = make([]byte, appendChunk)
	}
	at := t.end
	if t.end-next < appendGuard {
		at += appendGuard
	}
	n, err := t.f.WriteAt(t.zeros, at)
	t.end = at + int64(n)
	if err != nil {
		return err
	}
	startWriteback(t.f, at, int64(n))
	return nil
}

// sync makes every commit that returned before it was called durable.
func (t *vlogTail) sync() error {
	for {
		t.mu.Lock()
		if t.f == nil {
			t.mu.Unlock()
			return errTailClosed
		}
		err := t.follow()
		f := t.f
		t.mu.Unlock()
		if err != nil {
			return err
		}
		err = datasync(f)
		if !errors.Is(err, os.ErrClosed) {
			return err
		}
		// A commit moved the tail to Badger's next file (and closed f)
		// before the sync began: Badger synced f when it rotated, and the
		// next file is the one to sync.
	}
}

// syncClosed syncs the newest value-log file once Badger has closed and
// cut the zeros off it, which Badger does not sync.
func (t *vlogTail) syncClosed() error {
	fid, _, _ := t.log.position() // Badger's newest file, as it closed
	f, err := os.OpenFile(t.path(fid), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// close closes the tail's descriptor; the zeros stay until Badger closes
// (and truncates them).
func (t *vlogTail) close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.f == nil {
		return nil
	}
	err := t.f.Close()
	t.f = nil
	t.off = true
	return err
}
