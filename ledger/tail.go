package ledger

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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
// file, with no commit in flight (BadgerStore.commitMu). Badger also
// appends by itself, outside any commit: its discard statistics, a small
// record after some compactions. So zeros go right at the end of the file
// only while the zeros already there leave Badger appendGuard bytes or
// more; otherwise (after an open or a rotation, or after a commit larger
// than the zeros) they start appendGuard past the end, and Badger's next
// appends fill the hole between as ordinary appends. Badger truncates the
// zeros itself when it rotates to a new file and when it closes (the
// store then syncs the file, so that the truncation is durable); a
// writable open after a crash truncates them as it does a torn record
// (Badger stops replaying at the first record whose checksum fails, and a
// record of zeros fails it). A read-only open after a crash reports the
// store as needing recovery, as it did before.
type vlogTail struct {
	dir      string
	fileSize int64 // Badger's ValueLogFileSize: it rotates past it

	mu  sync.Mutex
	fid int      // the newest value-log file
	f   *os.File // a descriptor of it, for writing zeros and for syncs
	// end is the file's size when the tail last looked or wrote: Badger's
	// data, then the tail's zeros. A larger size means Badger wrote past
	// the zeros.
	end int64
	// data is where Badger's data ends: the value-log bytes of every
	// commit are added (an upper bound), but not Badger's own appends,
	// which are small (see appendGuard).
	data  int64
	zeros []byte
	// cut: the file is smaller than the tail left it: Badger truncated it,
	// rotating to a new file or closing. No more zeros go into it.
	cut bool
	// off: writing zeros failed (e.g. the disk is full), or the tail lost
	// track of Badger's file; it writes no more zeros and still syncs.
	off bool
}

var errTailClosed = errors.New("value-log tail closed")

const (
	appendChunk = 1 << 20
	appendAhead = 4 << 20
	// appendGuard is far more than Badger appends outside the ledger's
	// commits before a commit shows the tail where its data ends: a
	// discard-statistics record holds a few bytes per value-log file.
	appendGuard = 1 << 20
)

// Badger v1.6's value-log record: an 18-byte header, the key with an
// 8-byte version, the value, a 4-byte CRC (see vlog.go); every commit ends
// with a record of key "!badger!txn" whose value is the commit timestamp
// in decimal (at most 20 digits).
const (
	vlogRecordOverhead = vlogHeaderLen + vlogVersionLen + vlogCRCLen
	vlogCommitRecord   = vlogRecordOverhead + len("!badger!txn") + 20
)

// openVlogTail opens the newest value-log file in dir, which Badger has
// just opened (and, after a crash, truncated to its last whole commit).
func openVlogTail(dir string, fileSize int64) (*vlogTail, error) {
	fid, err := newestVlog(dir)
	if err != nil {
		return nil, err
	}
	t := &vlogTail{dir: dir, fileSize: fileSize}
	if err := t.reopen(fid); err != nil {
		return nil, err
	}
	return t, nil
}

// newestVlog returns the number of the newest value-log file in dir.
func newestVlog(dir string) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	fid := -1
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), ".vlog")
		if !ok {
			continue
		}
		if id, err := strconv.Atoi(n); err == nil && id > fid {
			fid = id
		}
	}
	if fid < 0 {
		return 0, fmt.Errorf("no value-log file in %s", dir)
	}
	return fid, nil
}

func (t *vlogTail) path(fid int) string {
	return filepath.Join(t.dir, fmt.Sprintf("%06d.vlog", fid))
}

// reopen makes fid the tail's file. Its size is Badger's data: the tail
// has written no zeros in it yet, and no commit is in flight (or the
// caller learns only a lower bound, which is safe: see appendZeros).
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
	t.fid, t.f, t.end, t.data, t.cut = fid, f, size, size, false
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
// appended at most n bytes to the value log; it writes a chunk of zeros
// when fewer than appendAhead bytes are left after Badger's data. If it
// cannot, it stops writing zeros (the store works as it would without
// them); a sync that cannot follow Badger's newest file reports it.
func (t *vlogTail) committed(n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.f == nil || t.off {
		return
	}
	fid := t.fid
	if err := t.follow(); err != nil {
		t.off = true
		return
	}
	if t.fid == fid {
		t.data += n
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
		// Badger wrote past the zeros: the file is its data.
		t.end, t.data = size, size
	}
	t.data = min(t.data, t.end)
	if t.cut || t.end-t.data >= appendAhead || t.end >= t.fileSize+appendAhead {
		return
	}
	if err := t.appendZeros(); err != nil {
		t.off = true
	}
}

// appendZeros writes a chunk of zeros after the end of the file: right at
// it if the zeros there leave Badger appendGuard bytes, else appendGuard
// past it. Nothing is written below the file's size, which no commit
// changes meanwhile.
func (t *vlogTail) appendZeros() error {
	if t.zeros == nil {
		t.zeros = make([]byte, appendChunk)
	}
	at := t.end
	if t.end-t.data < appendGuard {
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
	fid, err := newestVlog(t.dir)
	if err != nil {
		return err
	}
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
