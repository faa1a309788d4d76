package ledger

// Physical erasure on Badger v1's value log (docs/erasure.md): find where
// a key's values lie in the log before the key is deleted, and overwrite
// those records in place after.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"sort"

	"github.com/dgraph-io/badger"
)

// valueLog is the optional feature of a store that keeps every value it is
// given in an append-only log until the log is rewritten (Badger v1's value
// log, which is also its write-ahead log), so that deleting a key leaves
// its bytes on disk. Erasure asks it where the values of the keys it will
// delete lie (locateValues), and overwrites those records once the keys
// are deleted and the deletion is durable (scrubValues). A store without
// it (MemStore) forgets a value when its key is deleted.
type valueLog interface {
	// locateValues returns the value-log record of every stored version
	// of every key under prefix (a raw key prefix; with exact, the key
	// equal to it), and the number of versions whose value the store
	// keeps elsewhere (inline in its index), which it cannot find in its
	// log.
	locateValues(prefix string, exact bool) (recs []vlogRecord, inline int, err error)
	// scrubValues overwrites the key and value of every record with
	// zeros, keeping the record readable by the store, and syncs. accept
	// must hold for the key of every record not yet scrubbed: a record
	// holding any other key is left alone and reported. Scrubbing a
	// record twice is harmless. progress, if not nil, is called with the
	// number of records done.
	scrubValues(recs []vlogRecord, accept func(key []byte) bool, progress func(done int)) (bytes int64, err error)
}

// vlogRecord is the place of one record in a value log.
type vlogRecord struct {
	Fid    uint32
	Offset uint32
	Len    uint32
}

// Badger v1.6's value-log layout (value.go, structs.go): an 18-byte header
// (key length, value length: big-endian uint32; expiry: uint64; meta,
// user meta: a byte each), the key with its 8-byte version suffix, the
// value, and a big-endian Castagnoli CRC-32 of all that.
const (
	vlogHeaderLen   = 18
	vlogVersionLen  = 8
	vlogCRCLen      = 4
	bitValuePointer = 1 << 1 // badger's meta bit: the LSM holds a pointer
	bitDelete       = 1 << 0
	vptrLen         = 12 // Fid, Len, Offset, big-endian uint32 each
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// badgerMovePrefix is where value-log GC re-files the values it moves.
// The ledger keeps GC off, but a store that ever ran it may hold them.
const badgerMovePrefix = "!badger!move"

// errBadgerLayout: the badger module is not the version whose internals
// erasure reads.
var errBadgerLayout = errors.New("badger.Item does not have the v1.6 fields erasure reads (meta byte, vptr []byte): erasure cannot locate values")

// itemPointer reads the value pointer Badger v1.6 keeps in an Item's
// unexported fields (meta, vptr). ok is false when the version's value is
// inline in the LSM tree, or it is a deletion.
func itemPointer(it *badger.Item) (rec vlogRecord, ok bool, err error) {
	v := reflect.ValueOf(it).Elem()
	meta, vptr := v.FieldByName("meta"), v.FieldByName("vptr")
	if meta.Kind() != reflect.Uint8 || vptr.Kind() != reflect.Slice || vptr.Type().Elem().Kind() != reflect.Uint8 {
		return vlogRecord{}, false, errBadgerLayout
	}
	m := byte(meta.Uint())
	if m&bitValuePointer == 0 || m&bitDelete != 0 {
		return vlogRecord{}, false, nil
	}
	b := vptr.Bytes()
	if len(b) < vptrLen {
		return vlogRecord{}, false, fmt.Errorf("value pointer of %d bytes", len(b))
	}
	return vlogRecord{
		Fid:    binary.BigEndian.Uint32(b[0:4]),
		Len:    binary.BigEndian.Uint32(b[4:8]),
		Offset: binary.BigEndian.Uint32(b[8:12]),
	}, true, nil
}

func (s *BadgerStore) locateValues(prefix string, exact bool) (recs []vlogRecord, inline int, err error) {
	err = s.DB.View(func(txn *badger.Txn) error {
		for _, p := range []string{prefix, badgerMovePrefix + prefix} {
			it := txn.NewIterator(badger.IteratorOptions{AllVersions: true, Prefix: []byte(p), InternalAccess: true})
			for it.Rewind(); it.Valid(); it.Next() {
				item := it.Item()
				if exact && string(item.Key()) != p {
					continue
				}
				rec, ok, err := itemPointer(item)
				if err != nil {
					it.Close()
					return fmt.Errorf("key %q: %w", item.Key(), err)
				}
				switch {
				case ok:
					recs = append(recs, rec)
				case !item.IsDeletedOrExpired():
					inline++
				}
			}
			it.Close()
		}
		return nil
	})
	return recs, inline, err
}

func (s *BadgerStore) scrubValues(recs []vlogRecord, accept func(key []byte) bool, progress func(int)) (int64, error) {
	if s.readOnly {
		return 0, ErrReadOnly
	}
	recs = append([]vlogRecord(nil), recs...)
	sort.Slice(recs, func(i, j int) bool {
		if recs[i].Fid != recs[j].Fid {
			return recs[i].Fid < recs[j].Fid
		}
		return recs[i].Offset < recs[j].Offset
	})
	var (
		f     *os.File
		fid   uint32
		buf   []byte
		total int64
	)
	closeFile := func() error {
		if f == nil {
			return nil
		}
		err := f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		f = nil
		if err != nil {
			return fmt.Errorf("sync value log %06d: %w", fid, err)
		}
		return nil
	}
	for i, r := range recs {
		if i > 0 && r == recs[i-1] {
			continue
		}
		if f == nil || r.Fid != fid {
			if err := closeFile(); err != nil {
				return total, err
			}
			var err error
			fid = r.Fid
			if f, err = os.OpenFile(filepath.Join(s.dir, fmt.Sprintf("%06d.vlog", fid)), os.O_RDWR, 0); err != nil {
				return total, fmt.Errorf("open value log: %w", err)
			}
		}
		if cap(buf) < int(r.Len) {
			buf = make([]byte, r.Len)
		}
		rec := buf[:r.Len]
		if _, err := f.ReadAt(rec, int64(r.Offset)); err != nil {
			f.Close()
			return total, fmt.Errorf("read value log %06d at %d: %w", fid, r.Offset, err)
		}
		changed, err := scrubRecord(rec, accept)
		if err != nil {
			f.Close()
			return total, fmt.Errorf("value log %06d at %d: %w", fid, r.Offset, err)
		}
		if changed {
			// One write per record: a process killed mid-scrub leaves each
			// record either whole or scrubbed, never torn.
			if _, err := f.WriteAt(rec, int64(r.Offset)); err != nil {
				f.Close()
				return total, fmt.Errorf("scrub value log %06d at %d: %w", fid, r.Offset, err)
			}
			total += int64(r.Len)
		}
		if progress != nil {
			progress(i + 1)
		}
	}
	return total, closeFile()
}

// scrubRecord zeroes the key (but its version suffix, which Badger's
// replay reads) and the value of one value-log record in place and sets its
// CRC, keeping the header; it reports whether it changed anything.
func scrubRecord(rec []byte, accept func(key []byte) bool) (bool, error) {
	if len(rec) < vlogHeaderLen+vlogVersionLen+vlogCRCLen {
		return false, fmt.Errorf("a record of %d bytes is too short", len(rec))
	}
	klen := binary.BigEndian.Uint32(rec[0:4])
	vlen := binary.BigEndian.Uint32(rec[4:8])
	if uint64(vlogHeaderLen)+uint64(klen)+uint64(vlen)+vlogCRCLen != uint64(len(rec)) || klen < vlogVersionLen {
		return false, fmt.Errorf("the record's header (key %d, value %d bytes) does not fit its %d bytes: not the record erasure located", klen, vlen, len(rec))
	}
	key := rec[vlogHeaderLen : vlogHeaderLen+klen-vlogVersionLen]
	val := rec[vlogHeaderLen+klen : vlogHeaderLen+klen+vlen]
	body := rec[:len(rec)-vlogCRCLen]
	crcOK := crc32.Checksum(body, castagnoli) == binary.BigEndian.Uint32(rec[len(rec)-vlogCRCLen:])
	if allZero(key) && allZero(val) {
		if crcOK {
			return false, nil // scrubbed before
		}
	} else {
		user := key
		if bytes.HasPrefix(user, []byte(badgerMovePrefix)) {
			user = user[len(badgerMovePrefix):]
		}
		if !accept(user) {
			return false, fmt.Errorf("the record holds key %q, which is not being erased: left alone", key)
		}
		clear(key)
		clear(val)
	}
	binary.BigEndian.PutUint32(rec[len(rec)-vlogCRCLen:], crc32.Checksum(body, castagnoli))
	return true, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
