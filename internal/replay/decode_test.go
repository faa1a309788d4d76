package replay

import (
	"bytes"
	"context"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/osmose-os/osmose/ledger"
)

// TestStoreReaderAgrees reads a real ledger with the store reader and with
// Ledger.Read (the reference): every entry, envelope, CID and body must be
// the same.
func TestStoreReaderAgrees(t *testing.T) {
	dir := faultySim(t)
	l, s := openRO(t, dir)
	ctx := context.Background()
	fast, err := newStoreSource(ctx, s, uint64(l.Size()))
	if err != nil {
		t.Fatal(err)
	}
	defer fast.close()
	slow := apiSource{l}
	for seq := uint64(0); seq < uint64(l.Size()); seq++ {
		a, err := fast.next(ctx, seq)
		if err != nil {
			t.Fatalf("store reader: %v", err)
		}
		b, err := slow.next(ctx, seq)
		if err != nil {
			t.Fatalf("Ledger.Read: %v", err)
		}
		if !reflect.DeepEqual(*a.Env, *b.Env) || a.Key != b.Key || !bytes.Equal(a.Params, b.Params) || !bytes.Equal(a.Result, b.Result) ||
			!bytes.Equal(a.ResultSalt, b.ResultSalt) || a.ParamsGone != b.ParamsGone || a.ResultGone != b.ResultGone {
			t.Fatalf("seq %d: the readers disagree:\nstore  %+v %+v\nledger %+v %+v", seq, a, a.Env, b, b.Env)
		}
	}
	if _, err := fast.next(ctx, uint64(l.Size())); err == nil {
		t.Error("the store reader read past the ledger's size")
	}
}

// envelopeBlocks returns the envelope blocks of a real ledger.
func envelopeBlocks(t testing.TB) [][]byte {
	dir := faultySim(t)
	l, _ := openRO(t, dir)
	var out [][]byte
	for seq := uint64(0); seq < uint64(l.Size()); seq++ {
		r, err := l.Read(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r.Block)
	}
	return out
}

// agree checks decodeEnvelope against ledger.DecodeEnvelope on one block:
// both accept it, with the same envelope, or both refuse it.
func agree(t testing.TB, block []byte) {
	var got ledger.Envelope
	err := decodeEnvelope(block, interner{}, &got)
	want, werr := ledger.DecodeEnvelope(block)
	switch {
	case (err == nil) != (werr == nil):
		t.Fatalf("block %x: decodeEnvelope: %v; ledger.DecodeEnvelope: %v", block, err, werr)
	case err == nil && !reflect.DeepEqual(got, *want):
		t.Fatalf("block %x: decodeEnvelope %+v, ledger.DecodeEnvelope %+v", block, got, *want)
	}
}

// TestDecodeEnvelopeAgrees checks the fast decoder against the ledger's
// on every envelope of a real ledger and on thousands of damaged copies
// (bytes flipped, cut, inserted, dropped), drawn from a fixed seed.
func TestDecodeEnvelopeAgrees(t *testing.T) {
	blocks := envelopeBlocks(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, b := range blocks {
		agree(t, b)
	}
	for range 20000 {
		b := bytes.Clone(blocks[rng.IntN(len(blocks))])
		switch rng.IntN(4) {
		case 0:
			b[rng.IntN(len(b))] ^= byte(1 << rng.IntN(8))
		case 1:
			b = b[:rng.IntN(len(b))]
		case 2:
			i := rng.IntN(len(b) + 1)
			b = append(b[:i], append([]byte{byte(rng.IntN(256))}, b[i:]...)...)
		case 3:
			i := rng.IntN(len(b))
			b = append(b[:i], b[i+1:]...)
		}
		agree(t, b)
	}
}

// FuzzDecodeEnvelope checks the fast decoder against the ledger's.
func FuzzDecodeEnvelope(f *testing.F) {
	for i, b := range envelopeBlocks(f) {
		if i%16 == 0 {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) { agree(t, b) })
}
