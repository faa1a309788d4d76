package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ds "github.com/ipfs/go-datastore"
)

// TestValueLogLayout guards what erasure reads of Badger v1.6's internals:
// the value pointer in badger.Item's unexported fields, and the value-log
// record layout (header, key with version, value, CRC) it overwrites. If
// the badger module changes, this fails before an erasure leaves bytes
// behind.
func TestValueLogLayout(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenBadger(dir, BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	val := []byte(strings.Repeat("secret value ", 10))
	for _, k := range []string{"/x/a/1", "/x/b/1"} {
		if err := s.Put(ctx, ds.RawKey(k), val); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(ctx, ds.RawKey("/x/a/2"), []byte("short")); err != nil { // inline in the LSM tree
		t.Fatal(err)
	}
	if err := s.Sync(ctx, ds.RawKey("/")); err != nil {
		t.Fatal(err)
	}
	recs, inline, err := s.locateValues("/x/a/", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || inline != 1 {
		t.Fatalf("located %d records and %d inline values, want 1 and 1", len(recs), inline)
	}
	r := recs[0]
	path := filepath.Join(dir, "000000.vlog")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rec := raw[r.Offset : r.Offset+r.Len]
	klen, vlen := binary.BigEndian.Uint32(rec[0:4]), binary.BigEndian.Uint32(rec[4:8])
	if int(klen) != len("/x/a/1")+8 || int(vlen) != len(val) || 18+klen+vlen+4 != r.Len {
		t.Fatalf("record header: key %d, value %d bytes in a record of %d", klen, vlen, r.Len)
	}
	if string(rec[18:18+klen-8]) != "/x/a/1" || !bytes.Equal(rec[18+klen:18+klen+vlen], val) {
		t.Fatalf("the located record holds %q", rec)
	}
	if crc32.Checksum(rec[:len(rec)-4], castagnoli) != binary.BigEndian.Uint32(rec[len(rec)-4:]) {
		t.Fatal("the record's CRC is not Castagnoli CRC-32 of header, key and value")
	}

	// A record whose key is not accepted is left alone.
	if _, err := s.scrubValues(recs, func(k []byte) bool { return false }, nil); err == nil {
		t.Fatal("scrubbed a record whose key was not accepted")
	}
	n, err := s.scrubValues(recs, func(k []byte) bool { return string(k) == "/x/a/1" }, nil)
	if err != nil || n != int64(r.Len) {
		t.Fatalf("scrub: %d bytes, %v", n, err)
	}
	raw, _ = os.ReadFile(path)
	after := raw[r.Offset : r.Offset+r.Len]
	if !bytes.Equal(after[:18], rec[:18]) || !allZero(after[18:18+klen-8]) || !bytes.Equal(after[18+klen-8:18+klen], rec[18+klen-8:18+klen]) || !allZero(after[18+klen:18+klen+vlen]) {
		t.Fatalf("scrubbed record %q", after)
	}
	if crc32.Checksum(after[:len(after)-4], castagnoli) != binary.BigEndian.Uint32(after[len(after)-4:]) {
		t.Fatal("the scrubbed record's CRC does not check")
	}
	if bytes.Count(raw, val) != 1 {
		t.Fatalf("the value is in the log %d times, want once (the other key's)", bytes.Count(raw, val))
	}
	// Again: nothing to do.
	if n, err := s.scrubValues(recs, func([]byte) bool { return false }, nil); err != nil || n != 0 {
		t.Fatalf("second scrub: %d bytes, %v", n, err)
	}
}
