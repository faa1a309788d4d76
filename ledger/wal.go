package ledger

// The write-ahead log of a BadgerStore: what makes a commit durable
// without an fsync of Badger's value log.
//
// Badger v1 appends each commit to its value log, and making that durable
// takes an fsync of a growing file: the file system must write the data,
// then commit a journal transaction for the new size and blocks, and the
// fsync waits for both. The write-ahead log is a file of fixed size,
// allocated and zeroed when it is made, which the store overwrites in
// place with O_DSYNC (and O_DIRECT where the file system has it): a sync
// is one write of the commits since the last, which the disk acknowledges
// without a journal commit. Badger's own value log is synced only when the
// log has filled one of its two halves.
//
// Format. The file is two halves of walHalf bytes. Each write is a record
// at a 4 KiB-aligned offset, padded with zeros to a multiple of 4 KiB:
//
//	0   magic     "OSWL"
//	4   crc       CRC-32C (Castagnoli) of bytes 8 .. 24+len
//	8   len       uint32, bytes of transactions after the header
//	12  count     uint32, number of transactions
//	16  first     uint64, number of the first transaction
//	24  transactions: for each, uvarint number of operations, then per
//	    operation a byte (1 put, 2 delete), uvarint key length, key, and
//	    for a put uvarint value length, value
//
// (integers little-endian). Each committed transaction has a number, one
// more than the last, and Badger holds the number of the last one it has
// (walKey, written in the same Badger transaction), so a reopened store
// knows which of the log's transactions it lacks: those numbered after
// Badger's, which it applies in order before anything else. A half is
// written from its start; a record whose first transaction does not follow
// the one before it is left over from an earlier pass and ends the half.
// Before the store writes into a half again, a Badger sync that began
// when it left that half has returned: every transaction in it is in
// Badger's synced value log.
//
// Erasure (ForgetStep StepLocate) zeroes the whole file after a Badger
// sync (settleLog): the log holds every value written since its last pass,
// a data subject's bodies among them.

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"unsafe"

	"github.com/dgraph-io/badger"
	ds "github.com/ipfs/go-datastore"
	badgerds "github.com/ipfs/go-ds-badger"
)

const (
	walFile      = "osmose.wal"
	walHalf      = 2 << 20
	walAlign     = 4096
	walHeaderLen = 24
	walMagic     = "OSWL"
	walPut       = 1
	walDelete    = 2
)

// walKey holds, in Badger, the number of the last transaction committed.
var walKey = ds.RawKey("/l/wal")

// wal is a BadgerStore's write-ahead log.
type wal struct {
	db *badger.DB

	cmu  sync.Mutex // orders commits: number, Badger commit, log order
	next uint64     // the next transaction's number (under cmu)

	mu      sync.Mutex // guards pending, first and count
	pending []byte     // aligned; a record's header room, then transactions
	first   uint64     // number of pending's first transaction
	count   int        // transactions in pending

	smu    sync.Mutex // serialises writes of the log (sync, settle, close)
	f      *os.File
	spare  []byte     // aligned, swapped with pending at each write
	half   int64      // the half being written, 0 or 1
	off    int64      // where the next record goes
	bg     chan error // the Badger sync that covers the half being written
	failed error      // a write failed: nothing after it is durable
	closed bool
}

// alignedBuf returns a zeroed buffer of at least n bytes whose start and
// length are walAlign-aligned (O_DIRECT needs it).
func alignedBuf(n int) []byte {
	n = (n + walAlign - 1) &^ (walAlign - 1)
	b := make([]byte, n+walAlign)
	o := (walAlign - int(uintptr(unsafe.Pointer(&b[0]))&(walAlign-1))) & (walAlign - 1)
	return b[o : o+n : o+n]
}

// walTxn is one transaction read back from the log.
type walTxn struct {
	n   uint64
	ops []walOp
}

type walOp struct {
	kind  byte
	key   string
	value []byte
}

// openWAL opens (making it if needed) the write-ahead log in dir, applies
// to d the transactions it holds that Badger lacks, and syncs Badger. A
// read-only store only checks that there are none.
func openWAL(d *badgerds.Datastore, dir string, readOnly bool) (*wal, error) {
	path := filepath.Join(dir, walFile)
	last, err := walLast(d)
	if err != nil {
		return nil, err
	}
	if readOnly {
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("write-ahead log: %w", err)
		}
		defer f.Close()
		if fi, err := f.Stat(); err != nil {
			return nil, fmt.Errorf("write-ahead log: %w", err)
		} else if fi.Size() != 2*walHalf {
			return nil, fmt.Errorf("write-ahead log %s: %w: %d bytes, want %d", path, ErrCorrupt, fi.Size(), 2*walHalf)
		}
		txns, err := readWAL(f, last)
		if err != nil {
			return nil, err
		}
		if len(txns) > 0 {
			return nil, fmt.Errorf("write-ahead log %s holds %d transactions the store lacks: %w", path, len(txns), ErrNeedsRecovery)
		}
		return nil, nil
	}
	if err := makeWAL(path); err != nil {
		return nil, err
	}
	f, err := openWALFile(path)
	if err != nil {
		return nil, err
	}
	w := &wal{db: d.DB, f: f, pending: alignedBuf(64 << 10)[:walHeaderLen], spare: alignedBuf(64 << 10)}
	txns, err := readWAL(f, last)
	if err == nil {
		err = w.apply(d, txns)
	}
	// Whatever Badger recovered may be in the page cache only (the process
	// died, the machine did not): it is durable once synced, and only then
	// may the log be overwritten.
	if err == nil {
		err = d.DB.Sync()
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	if len(txns) > 0 {
		last = txns[len(txns)-1].n
	}
	w.next, w.first = last+1, last+1
	return w, nil
}

// walLast reads the number of the last transaction Badger holds.
func walLast(d *badgerds.Datastore) (uint64, error) {
	v, err := d.Get(context.Background(), walKey)
	switch {
	case errors.Is(err, ds.ErrNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("write-ahead log: read %s: %w", walKey, err)
	case len(v) != 8:
		return 0, fmt.Errorf("write-ahead log: %w: %s holds %d bytes, want 8", ErrCorrupt, walKey, len(v))
	}
	return binary.LittleEndian.Uint64(v), nil
}

// makeWAL makes the log file, zeroed, unless it exists with its size.
func makeWAL(path string) error {
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.Size() == 2*walHalf:
		return nil
	case err == nil:
		return fmt.Errorf("write-ahead log %s: %w: %d bytes, want %d", path, ErrCorrupt, fi.Size(), 2*walHalf)
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("write-ahead log: %w", err)
	}
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write-ahead log: %w", err)
	}
	zero := make([]byte, 1<<20)
	for off := 0; off < 2*walHalf && err == nil; off += len(zero) {
		_, err = f.Write(zero)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write-ahead log: make %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// openWALFile opens the log for synchronous writes that bypass the page
// cache where the file system allows it.
func openWALFile(path string) (*os.File, error) {
	if oDirect != 0 {
		if f, err := os.OpenFile(path, os.O_RDWR|oDSync|oDirect, 0); err == nil {
			return f, nil
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|oDSync, 0)
	if err != nil {
		return nil, fmt.Errorf("write-ahead log: %w", err)
	}
	return f, nil
}

// readWAL returns, in order, the transactions in the log numbered after
// last. They must follow last without a gap.
func readWAL(f *os.File, last uint64) ([]walTxn, error) {
	var txns []walTxn
	buf := alignedBuf(walHalf)
	for half := int64(0); half < 2; half++ {
		n, err := f.ReadAt(buf, half*walHalf)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("write-ahead log: read: %w", err)
		}
		b := buf[:n]
		next := uint64(0) // the number the next record must start at; 0: any
		for len(b) >= walHeaderLen && string(b[:4]) == walMagic {
			size := int(binary.LittleEndian.Uint32(b[8:]))
			count := binary.LittleEndian.Uint32(b[12:])
			first := binary.LittleEndian.Uint64(b[16:])
			if size > len(b)-walHeaderLen || count == 0 || next != 0 && first != next ||
				crc32.Checksum(b[8:walHeaderLen+size], castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
				break
			}
			if first+uint64(count)-1 > last {
				ts, err := decodeWALTxns(b[walHeaderLen:walHeaderLen+size], first, int(count))
				if err != nil {
					return nil, err
				}
				for _, t := range ts {
					if t.n > last {
						txns = append(txns, t)
					}
				}
			}
			next = first + uint64(count)
			adv := (walHeaderLen + size + walAlign - 1) &^ (walAlign - 1)
			b = b[min(adv, len(b)):]
		}
	}
	slices.SortFunc(txns, func(a, b walTxn) int { return cmp.Compare(a.n, b.n) })
	for i, t := range txns {
		if t.n != last+1+uint64(i) {
			return nil, fmt.Errorf("write-ahead log: %w: the store holds transactions up to %d, the log resumes at %d", ErrCorrupt, last+uint64(i), t.n)
		}
	}
	return txns, nil
}

// decodeWALTxns decodes a record's transactions. A record whose CRC holds
// but whose contents do not parse is corrupt.
func decodeWALTxns(b []byte, first uint64, count int) ([]walTxn, error) {
	bad := fmt.Errorf("write-ahead log: %w: record of transactions %d..%d does not parse", ErrCorrupt, first, first+uint64(count)-1)
	uv := func() (int, bool) {
		v, k := binary.Uvarint(b)
		if k <= 0 || v > uint64(len(b)-k) {
			return 0, false
		}
		b = b[k:]
		return int(v), true
	}
	txns := make([]walTxn, count)
	for i := range txns {
		nops, ok := uv()
		if !ok {
			return nil, bad
		}
		t := walTxn{n: first + uint64(i), ops: make([]walOp, nops)}
		for j := range t.ops {
			if len(b) == 0 {
				return nil, bad
			}
			op := &t.ops[j]
			op.kind, b = b[0], b[1:]
			kl, ok := uv()
			if !ok || op.kind != walPut && op.kind != walDelete {
				return nil, bad
			}
			op.key, b = string(b[:kl]), b[kl:]
			if op.kind == walPut {
				vl, ok := uv()
				if !ok {
					return nil, bad
				}
				op.value, b = append([]byte{}, b[:vl]...), b[vl:] // the read buffer is reused
			}
		}
		txns[i] = t
	}
	if len(b) != 0 {
		return nil, bad
	}
	return txns, nil
}

// apply commits each transaction to Badger as it was committed before,
// with its number.
func (w *wal) apply(d *badgerds.Datastore, txns []walTxn) error {
	ctx := context.Background()
	for _, t := range txns {
		txn, err := d.NewTransaction(ctx, false)
		if err != nil {
			return err
		}
		for _, op := range t.ops {
			if op.kind == walPut {
				err = txn.Put(ctx, ds.RawKey(op.key), op.value)
			} else {
				err = txn.Delete(ctx, ds.RawKey(op.key))
			}
			if err != nil {
				break
			}
		}
		if err == nil {
			err = txn.Put(ctx, walKey, binary.LittleEndian.AppendUint64(nil, t.n))
		}
		if err == nil {
			err = txn.Commit(ctx)
		}
		txn.Discard(ctx)
		if err != nil {
			return fmt.Errorf("write-ahead log: apply transaction %d: %w", t.n, err)
		}
	}
	return nil
}

// loggedTxn is a write transaction whose operations go to the log when it
// commits.
type loggedTxn struct {
	ds.Txn
	w   *wal
	ops []walOp
}

func (t *loggedTxn) Put(ctx context.Context, key ds.Key, value []byte) error {
	if err := t.Txn.Put(ctx, key, value); err != nil {
		return err
	}
	t.ops = append(t.ops, walOp{walPut, key.String(), value})
	return nil
}

func (t *loggedTxn) Delete(ctx context.Context, key ds.Key) error {
	if err := t.Txn.Delete(ctx, key); err != nil {
		return err
	}
	t.ops = append(t.ops, walOp{walDelete, key.String(), nil})
	return nil
}

// Commit commits to Badger, with the transaction's number, and queues the
// transaction for the log's next write. It is durable once the store is
// synced.
func (t *loggedTxn) Commit(ctx context.Context) error {
	if len(t.ops) == 0 {
		return t.Txn.Commit(ctx)
	}
	w := t.w
	w.cmu.Lock()
	defer w.cmu.Unlock()
	var num [8]byte
	binary.LittleEndian.PutUint64(num[:], w.next)
	if err := t.Txn.Put(ctx, walKey, num[:]); err != nil {
		return err
	}
	if err := t.Txn.Commit(ctx); err != nil {
		return err
	}
	size := binary.MaxVarintLen64
	for _, op := range t.ops {
		size += 1 + 2*binary.MaxVarintLen64 + len(op.key) + len(op.value)
	}
	w.mu.Lock()
	if len(w.pending)+size > cap(w.pending) {
		nb := alignedBuf(max(2*cap(w.pending), len(w.pending)+size))
		w.pending = append(nb[:0], w.pending...)
	}
	p := binary.AppendUvarint(w.pending, uint64(len(t.ops)))
	for _, op := range t.ops {
		p = append(p, op.kind)
		p = binary.AppendUvarint(p, uint64(len(op.key)))
		p = append(p, op.key...)
		if op.kind == walPut {
			p = binary.AppendUvarint(p, uint64(len(op.value)))
			p = append(p, op.value...)
		}
	}
	w.pending = p
	w.count++
	w.mu.Unlock()
	w.next++
	t.ops = nil
	return nil
}

// sync makes every transaction committed before it durable.
func (w *wal) sync() error {
	w.smu.Lock()
	defer w.smu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	w.mu.Lock()
	rec, first, count := w.pending, w.first, w.count
	w.pending, w.first, w.count = w.spare[:walHeaderLen], first+uint64(count), 0
	w.mu.Unlock()
	defer func() { w.spare = rec[:0] }()
	if count == 0 {
		return nil
	}
	size := len(rec) - walHeaderLen
	padded := (len(rec) + walAlign - 1) &^ (walAlign - 1)
	if padded > walHalf/2 {
		// Too big for the log: sync Badger instead, which makes these
		// transactions, and every one before, durable. The next record
		// starts the current half again: one after the last record would
		// not follow it, and recovery would stop before it.
		if err := w.db.Sync(); err != nil {
			return w.fail(err)
		}
		w.off = w.half * walHalf
		return nil
	}
	rec = rec[:padded]
	clear(rec[walHeaderLen+size:])
	copy(rec, walMagic)
	binary.LittleEndian.PutUint32(rec[8:], uint32(size))
	binary.LittleEndian.PutUint32(rec[12:], uint32(count))
	binary.LittleEndian.PutUint64(rec[16:], first)
	binary.LittleEndian.PutUint32(rec[4:], crc32.Checksum(rec[8:walHeaderLen+size], castagnoli))
	if w.off+int64(padded) > (w.half+1)*walHalf {
		// Leave this half for the other. That one was left at the last
		// switch, whose Badger sync must be through before it is
		// overwritten; this one's transactions are all committed to
		// Badger, and a sync starting now covers them.
		if err := w.waitBackground(); err != nil {
			return w.fail(err)
		}
		bg := make(chan error, 1)
		go func() { bg <- w.db.Sync() }()
		w.bg = bg
		w.half = 1 - w.half
		w.off = w.half * walHalf
	}
	if _, err := w.f.WriteAt(rec, w.off); err != nil {
		return w.fail(err)
	}
	w.off += int64(padded)
	return nil
}

// usable returns why the log can take no more writes, if it cannot.
// Call it with smu held.
func (w *wal) usable() error {
	if w.closed {
		return ErrClosed
	}
	return w.failed
}

// waitBackground waits for the background Badger sync, if one is under
// way, and returns its error. Call it with smu held.
func (w *wal) waitBackground() error {
	if w.bg == nil {
		return nil
	}
	err := <-w.bg
	w.bg = nil
	return err
}

func (w *wal) fail(err error) error {
	if err != nil {
		w.failed = fmt.Errorf("write-ahead log: %w", err)
	}
	return w.failed
}

// settle syncs Badger and zeroes the log: afterwards no byte written
// before it is in the log's file. Commits wait meanwhile.
func (w *wal) settle() error {
	w.cmu.Lock()
	defer w.cmu.Unlock()
	w.smu.Lock()
	defer w.smu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	if err := w.waitBackground(); err != nil {
		return w.fail(err)
	}
	if err := w.db.Sync(); err != nil {
		return w.fail(err)
	}
	// Everything committed is in Badger's synced value log.
	w.mu.Lock()
	w.pending, w.first, w.count = w.pending[:walHeaderLen], w.next, 0
	w.mu.Unlock()
	zero := alignedBuf(1 << 20)
	for off := int64(0); off < 2*walHalf; off += int64(len(zero)) {
		if _, err := w.f.WriteAt(zero, off); err != nil {
			return w.fail(err)
		}
	}
	w.half, w.off = 0, 0
	return nil
}

// close syncs Badger, so that the log is not needed at the next open, and
// closes the file.
func (w *wal) close() error {
	w.smu.Lock()
	defer w.smu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	err := w.waitBackground()
	if serr := w.db.Sync(); err == nil {
		err = serr
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return err
}
