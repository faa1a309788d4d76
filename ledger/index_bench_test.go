package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"testing"
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
