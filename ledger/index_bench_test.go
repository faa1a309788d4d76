package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"testing"

	"github.com/ipfs/go-cid"
)

// BenchmarkSegmentPuts: turning a full index segment (IndexEvery entries
// of the kernel's shape) into its store writes.
func BenchmarkSegmentPuts(b *testing.B) {
	x := newIndexer()
	const n = 16384
	for i := range n {
		e := makeBenchEntry(i)
		env := Envelope{Seq: uint64(i), Kind: e.Kind, Actor: e.Actor, Grant: e.Grant, Device: e.Device}
		var seed [8]byte
		binary.BigEndian.PutUint64(seed[:], uint64(i))
		d := sha256.Sum256(seed[:])
		x.add(&env, cidFromDigest(d[:]))
	}
	g := x.freeze(n)
	b.ResetTimer()
	for range b.N {
		g.puts()
	}
}

// BenchmarkIndexerAdd: buffering one envelope's postings, as the encoder
// does for every entry, a segment frozen every IndexEvery entries.
func BenchmarkIndexerAdd(b *testing.B) {
	const n = 4096
	envs := make([]Envelope, n)
	cids := make([]cid.Cid, n)
	for i := range n {
		e := makeBenchEntry(i)
		if i%2 == 1 {
			e.Kind = KindReturn
		}
		envs[i] = Envelope{Kind: e.Kind, Actor: e.Actor, Grant: e.Grant, Device: e.Device}
		var seed [8]byte
		binary.BigEndian.PutUint64(seed[:], uint64(i))
		d := sha256.Sum256(seed[:])
		cids[i] = cidFromDigest(d[:])
	}
	x := newIndexer()
	b.ResetTimer()
	for i := range b.N {
		env := &envs[i%n]
		env.Seq = uint64(i)
		x.add(env, cids[i%n])
		if (i+1)%16384 == 0 {
			x.written(x.freeze(uint64(i + 1)))
		}
	}
}
