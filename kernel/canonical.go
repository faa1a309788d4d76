package kernel

import (
	"encoding/binary"

	"capnproto.org/go/capnp/v3"
)

// canonical returns the canonical Cap'n Proto encoding of s, byte for byte
// what capnp.Canonicalize returns. A struct with no pointers and a
// non-empty data section (the params of most device methods: a level, a
// setpoint) is encoded here directly, without building a message: its
// canonical form is a root struct pointer at offset 0 followed by its
// data words, trailing zero words trimmed. Anything else goes to
// capnp.Canonicalize.
func canonical(s capnp.Struct) ([]byte, error) {
	if !s.IsValid() {
		return capnp.Canonicalize(s)
	}
	sz := s.Size()
	if sz.DataSize%8 != 0 {
		return capnp.Canonicalize(s)
	}
	for i := uint16(0); i < sz.PointerCount; i++ {
		if s.HasPtr(i) {
			return capnp.Canonicalize(s)
		}
	}
	words := int(sz.DataSize / 8)
	for words > 0 && s.Uint64(capnp.DataOffset((words-1)*8)) == 0 {
		words--
	}
	if words == 0 {
		// The empty struct has its own pointer encoding.
		return capnp.Canonicalize(s)
	}
	b := make([]byte, 8+8*words)
	// Struct pointer: type 0, offset 0, data words, no pointers.
	binary.LittleEndian.PutUint64(b, uint64(words)<<32)
	for i := range words {
		binary.LittleEndian.PutUint64(b[8+8*i:], s.Uint64(capnp.DataOffset(i*8)))
	}
	return b, nil
}
