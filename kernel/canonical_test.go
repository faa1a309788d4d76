package kernel

import (
	"bytes"
	"math"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/osmose-os/osmose/schema"
)

// TestCanonicalMatchesCapnp: the direct encoding of pointer-free structs is
// byte for byte capnp.Canonicalize's, and everything else is
// capnp.Canonicalize's own.
func TestCanonicalMatchesCapnp(t *testing.T) {
	check := func(name string, s capnp.Struct) {
		t.Helper()
		want, err := capnp.Canonicalize(s)
		if err != nil {
			t.Fatalf("%s: Canonicalize: %v", name, err)
		}
		got, err := canonical(s)
		if err != nil {
			t.Fatalf("%s: canonical: %v", name, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: canonical = %x, capnp.Canonicalize = %x", name, got, want)
		}
	}
	for level := range 256 {
		_, seg, _ := capnp.NewMessage(capnp.SingleSegment(nil))
		p, err := schema.NewRootLight_setLevel_Params(seg)
		if err != nil {
			t.Fatal(err)
		}
		p.SetLevel(uint8(level))
		check("setLevel", capnp.Struct(p))
	}
	for _, c := range []float64{0, math.Copysign(0, -1), 21.5, -40, math.Inf(1), math.NaN(), math.SmallestNonzeroFloat64} {
		_, seg, _ := capnp.NewMessage(capnp.SingleSegment(nil))
		p, err := schema.NewRootThermostat_setSetpoint_Params(seg)
		if err != nil {
			t.Fatal(err)
		}
		p.SetCelsius(c)
		check("setSetpoint", capnp.Struct(p))
	}
	// A struct whose data section is larger than it needs: trailing zero
	// words are trimmed; and one with pointers, set and unset.
	for _, sz := range []capnp.ObjectSize{{DataSize: 24}, {DataSize: 16, PointerCount: 2}, {}} {
		for _, v := range []uint64{0, 1, 1 << 63} {
			_, seg, _ := capnp.NewMessage(capnp.SingleSegment(nil))
			s, err := capnp.NewRootStruct(seg, sz)
			if err != nil {
				t.Fatal(err)
			}
			if sz.DataSize > 0 {
				s.SetUint64(0, v)
			}
			check("struct", s)
			if sz.PointerCount > 0 && v != 0 {
				txt, err := capnp.NewText(seg, "x")
				if err != nil {
					t.Fatal(err)
				}
				if err := s.SetPtr(1, txt.ToPtr()); err != nil {
					t.Fatal(err)
				}
				check("struct with pointer", s)
			}
		}
	}
	check("invalid", capnp.Struct{})
}
