package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	carv2 "github.com/ipld/go-car/v2"
	carstorage "github.com/ipld/go-car/v2/storage"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// carLedger builds a ledger of n entries on a memory store: typical calls,
// grants without bodies, and calls with a data subject's bodies. Each
// entry's reason is "note-" and its seq in four digits and its params
// "params-" and the same, so a test can find their bytes in the store. It
// returns the store, the ledger closed and reopened read-only as an
// auditor's tools open it, and the subject's pseudonym.
func carLedger(t *testing.T, n int) (*MemStore, *Ledger, string) {
	t.Helper()
	ctx := context.Background()
	s := NewMemStore()
	l, err := Open(ctx, s, Options{Key: testKey(1), Origin: "osmose/test", CheckpointEvery: 16, GenesisTime: 1})
	if err != nil {
		t.Fatal(err)
	}
	subj, err := l.Pseudonym(ctx, "alice@example.org")
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < n; i++ {
		e := benchEntry(i)
		e.Params = []byte(fmt.Sprintf("params-%04d", i))
		e.Reason = fmt.Sprintf("note-%04d", i)
		switch i % 5 {
		case 1:
			e = Entry{Kind: KindGrant, Actor: "op:admin", Grant: uint64(i), Device: "cambridge/pembroke", Time: int64(i), Reason: e.Reason}
		case 2:
			e.Subject = subj
		}
		if _, _, err := l.Commit(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	ro, err := Open(ctx, s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s, ro, subj
}

func exportCAR(t *testing.T, l *Ledger) ([]byte, *CARExport) {
	t.Helper()
	var buf bytes.Buffer
	x, err := l.ExportCAR(context.Background(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	if x.Bytes != int64(buf.Len()) {
		t.Errorf("export says %d bytes, wrote %d", x.Bytes, buf.Len())
	}
	return buf.Bytes(), x
}

// TestExportCAR reads an export back with go-car/v2 and go-ipld-prime, as
// an auditor with standard tools would, and checks it against the ledger.
func TestExportCAR(t *testing.T) {
	ctx := context.Background()
	_, l, _ := carLedger(t, 100)
	data, x := exportCAR(t, l)

	// go-car reads it, and every block re-hashes to its CID.
	r, err := carv2.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if r.Version != 1 {
		t.Errorf("CAR version %d, want 1", r.Version)
	}
	stats, err := r.Inspect(true)
	if err != nil {
		t.Fatalf("inspect with hash validation: %v", err)
	}
	if int64(stats.BlockCount) != x.Blocks {
		t.Errorf("CAR holds %d blocks, export says %d", stats.BlockCount, x.Blocks)
	}
	br, err := carv2.NewBlockReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(br.Roots) != 1 || !br.Roots[0].Equals(x.Root) {
		t.Fatalf("roots %v, want [%s]", br.Roots, x.Root)
	}
	seen := map[cid.Cid]bool{}
	for {
		b, err := br.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		c := b.Cid()
		got, err := c.Prefix().Sum(b.RawData())
		if err != nil || !got.Equals(c) {
			t.Fatalf("block %s re-hashes to %s (%v)", c, got, err)
		}
		if seen[c] {
			t.Errorf("block %s twice", c)
		}
		seen[c] = true
	}

	// The root is the index; from its head, prev links reach genesis.
	st, err := carstorage.OpenReadable(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	get := func(c cid.Cid) []byte {
		t.Helper()
		b, err := st.Get(ctx, c.KeyString())
		if err != nil {
			t.Fatalf("get %s: %v", c, err)
		}
		return b
	}
	idx, err := DecodeCARIndex(get(x.Root))
	if err != nil {
		t.Fatal(err)
	}
	if idx.Size != l.Size() || idx.Origin != "osmose/test" || idx.Verifier != l.Meta().Verifier {
		t.Errorf("index %+v does not describe the ledger (size %d, meta %+v)", idx, l.Size(), l.Meta())
	}
	root, _ := l.TreeHash(l.Size())
	if idx.TreeRoot != root {
		t.Errorf("index root %s, tree root %s", idx.TreeRoot, root)
	}
	leaves := make([]tlog.Hash, idx.Size)
	bodies := 0
	c := idx.Head
	for seq := idx.Size - 1; seq >= 0; seq-- {
		block := get(c)
		nb := basicnode.Prototype.Any.NewBuilder()
		if err := dagcbor.Decode(nb, bytes.NewReader(block)); err != nil {
			t.Fatalf("seq %d: dag-cbor: %v", seq, err)
		}
		env, err := DecodeEnvelope(block)
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		if env.Seq != uint64(seq) {
			t.Fatalf("walking prev links: seq %d, want %d", env.Seq, seq)
		}
		for _, link := range []cid.Cid{env.Params, env.Result} {
			if link.Defined() {
				if _, err := DecodeBody(get(link)); err != nil {
					t.Fatalf("seq %d: body: %v", seq, err)
				}
				bodies++
			}
		}
		leaves[seq] = LeafHash(c)
		c = env.Prev
	}
	if c.Defined() {
		t.Errorf("genesis has a prev link %s", c)
	}
	if bodies != x.Bodies || x.Absent != 0 {
		t.Errorf("found %d bodies, export says %d (absent %d)", bodies, x.Bodies, x.Absent)
	}

	// The checkpoints verify with nothing but the verifier key, and their
	// roots are the roots of the exported leaves.
	v, err := note.NewVerifier(idx.Verifier)
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Checkpoints) < 2 || len(idx.Checkpoints) != x.Checkpoints {
		t.Fatalf("%d checkpoints in the index, export says %d", len(idx.Checkpoints), x.Checkpoints)
	}
	for _, cc := range idx.Checkpoints {
		if cc.Prefix().Codec != cid.Raw {
			t.Errorf("checkpoint %s is not a raw block", cc)
		}
		cp, err := OpenCheckpoint(get(cc), v)
		if err != nil {
			t.Fatal(err)
		}
		if got := rfc6962Root(leaves[:cp.Size]); got != cp.Root {
			t.Errorf("checkpoint of size %d: root %s, the exported leaves give %s", cp.Size, cp.Root, got)
		}
	}

	// The same ledger exports the same bytes.
	again, _ := exportCAR(t, l)
	if !bytes.Equal(again, data) {
		t.Error("two exports of the same ledger differ")
	}
}

// rfc6962Root is the naive Merkle tree hash of RFC 6962, section 2.1.
func rfc6962Root(leaves []tlog.Hash) tlog.Hash {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	return tlog.NodeHash(rfc6962Root(leaves[:k]), rfc6962Root(leaves[k:]))
}

func TestExportCARErasedBody(t *testing.T) {
	ctx := context.Background()
	s, l, subj := carLedger(t, 20)
	// Erase one subject's bodies as erasure does: their blocks leave the
	// store, their envelope stays.
	if err := s.Delete(ctx, personalKey(subj, 2)); err != nil {
		t.Fatal(err)
	}
	r, err := l.Read(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if r.ParamsBlock != nil {
		t.Fatal("the erased body is still read")
	}
	data, x := exportCAR(t, l)
	if x.Absent != 2 {
		t.Errorf("absent bodies %d, want 2", x.Absent)
	}
	st, err := carstorage.OpenReadable(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := st.Has(ctx, r.Envelope.Params.KeyString()); ok {
		t.Error("the erased params body is in the export")
	}
	if ok, _ := st.Has(ctx, r.CID.KeyString()); !ok {
		t.Error("the envelope of the erased entry is not in the export")
	}
}

func TestExportCARCorrupt(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		mark   string
		seq    uint64
		reason string
	}{
		{"note-0007", 7, "is not the leaf the tree holds"}, // in seq 7's envelope
		{"params-0008", 8, "params body hashes to"},        // in seq 8's params body
		{"params-0007", 7, "params body hashes to"},        // a data subject's body, stored apart
	} {
		s, l, _ := carLedger(t, 20)
		tamperStore(t, s, c.mark)
		_, err := l.ExportCAR(ctx, io.Discard)
		var ve *VerifyError
		if !errors.As(err, &ve) || ve.Seq != c.seq || !strings.Contains(ve.Reason, c.reason) {
			t.Errorf("export of a ledger tampered at %q: %v, want a VerifyError at seq %d saying %q", c.mark, err, c.seq, c.reason)
		}
	}
}

// tamperStore flips the last byte of the first occurrence of mark in the
// values of s.
func tamperStore(t *testing.T, s *MemStore, mark string) {
	t.Helper()
	ctx := context.Background()
	res, err := s.Query(ctx, dsq.Query{})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	for r := range res.Next() {
		if i := bytes.Index(r.Value, []byte(mark)); i >= 0 {
			v := bytes.Clone(r.Value)
			v[i+len(mark)-1] ^= 1
			if err := s.Put(ctx, ds.RawKey(r.Key), v); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("%q is in no stored value", mark)
}

func TestCARIndexRoundTrip(t *testing.T) {
	in := &CARIndex{
		Version: CARIndexVersion, Head: blockCID([]byte("head")), Size: 3, Origin: "o", Verifier: "o+1234+abc",
		Checkpoints: []cid.Cid{CheckpointCID([]byte("a")), CheckpointCID([]byte("b"))},
	}
	in.TreeRoot[0] = 7
	b, err := EncodeCARIndex(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeCARIndex(b)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(in) != fmt.Sprint(out) {
		t.Errorf("round trip: %+v, want %+v", out, in)
	}
	if _, err := DecodeCARIndex(b[:len(b)-1]); err == nil {
		t.Error("a truncated index decodes")
	}
}

func BenchmarkExportCAR(b *testing.B) {
	ctx := context.Background()
	l, err := Open(ctx, NewMemStore(), Options{Key: testKey(1)})
	if err != nil {
		b.Fatal(err)
	}
	const n = 10000
	for i := 1; i < n; i++ {
		if _, err := l.Append(ctx, benchEntry(i)); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := l.ExportCAR(ctx, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/entry")
}
