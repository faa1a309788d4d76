package ledger

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
)

// referenceEnvelope encodes env with go-ipld-prime, the reference the fast
// encoder must match byte for byte.
func referenceEnvelope(t testing.TB, env *Envelope) []byte {
	t.Helper()
	n, err := qp.BuildMap(basicnode.Prototype.Any, -1, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "v", qp.Int(int64(env.Version)))
		qp.MapEntry(ma, "seq", uintNode(env.Seq))
		qp.MapEntry(ma, "kind", qp.String(string(env.Kind)))
		qp.MapEntry(ma, "t", qp.Int(env.Time))
		if env.Prev.Defined() {
			qp.MapEntry(ma, "prev", qp.Link(cidlink.Link{Cid: env.Prev}))
		}
		str := func(k, v string) {
			if v != "" {
				qp.MapEntry(ma, k, qp.String(v))
			}
		}
		str("actor", env.Actor)
		str("dev", env.Device)
		str("subj", env.Subject)
		str("dec", string(env.Decision))
		str("why", env.Reason)
		u := func(k string, v uint64) {
			if v != 0 {
				qp.MapEntry(ma, k, uintNode(v))
			}
		}
		u("grant", env.Grant)
		if env.Interface != 0 {
			qp.MapEntry(ma, "iface", qp.String(fmt.Sprintf("0x%016x", env.Interface)))
		}
		u("meth", uint64(env.Method))
		u("ref", env.Ref)
		if env.Params.Defined() {
			qp.MapEntry(ma, "params", qp.Link(cidlink.Link{Cid: env.Params}))
		}
		if env.Result.Defined() {
			qp.MapEntry(ma, "result", qp.Link(cidlink.Link{Cid: env.Result}))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := dagcbor.Encode(n, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func uintNode(v uint64) qp.Assemble {
	return func(na datamodel.NodeAssembler) {
		if v > math.MaxInt64 {
			if err := na.AssignNode(basicnode.NewUint(v)); err != nil {
				panic(err)
			}
			return
		}
		if err := na.AssignInt(int64(v)); err != nil {
			panic(err)
		}
	}
}

func randomEnvelope(r *rand.Rand) *Envelope {
	pick := func(s ...string) string { return s[r.IntN(len(s))] }
	someCID := func() cid.Cid {
		if r.IntN(3) == 0 {
			return cid.Undef
		}
		var b [40]byte
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return blockCID(b[:])
	}
	nums := []uint64{0, 1, 23, 24, 255, 256, 65535, 65536, 1<<32 - 1, 1 << 32, math.MaxInt64, math.MaxUint64, r.Uint64()}
	env := &Envelope{
		Version:   FormatVersion,
		Seq:       nums[r.IntN(len(nums))],
		Prev:      someCID(),
		Kind:      Kind(pick("call", "grant", "key-epoch", "x")),
		Actor:     pick("", "dev:light-1", "p-0011aabb", string(make([]byte, 300))),
		Grant:     nums[r.IntN(len(nums))],
		Device:    pick("", "cambridge/pembroke/f1/r12/light-3"),
		Subject:   pick("", "p-00ff"),
		Interface: nums[r.IntN(len(nums))],
		Method:    uint16(nums[r.IntN(len(nums))]),
		Decision:  Decision(pick("", "admit", "deny")),
		Reason:    pick("", "expired", "méthode refusée"),
		Ref:       nums[r.IntN(len(nums))],
		Time:      int64(nums[r.IntN(len(nums))] >> 1),
		Params:    someCID(),
		Result:    someCID(),
	}
	return env
}

func TestEnvelopeMatchesReferenceEncoder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 5000; i++ {
		env := randomEnvelope(r)
		got := appendEnvelope(nil, env)
		want := referenceEnvelope(t, env)
		if !bytes.Equal(got, want) {
			t.Fatalf("envelope %+v:\n got %x\nwant %x", env, got, want)
		}
		back, err := DecodeEnvelope(got)
		if err != nil {
			t.Fatalf("decode %+v: %v", env, err)
		}
		if !bytes.Equal(appendEnvelope(nil, back), got) {
			t.Fatalf("decode round trip changed %+v into %+v", env, back)
		}
	}
}

func TestBodyMatchesReferenceEncoder(t *testing.T) {
	data := []byte("hello, building")
	salt, _ := newSalter([]byte("secret")).salts(7)
	got := appendBody(nil, data, salt)
	n, err := qp.BuildMap(basicnode.Prototype.Any, 2, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "s", qp.Bytes(salt))
		qp.MapEntry(ma, "d", qp.Bytes(data))
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := dagcbor.Encode(n, &buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, buf.Bytes()) {
		t.Fatalf("body block\n got %x\nwant %x", got, buf.Bytes())
	}
	back, err := DecodeBody(got)
	if err != nil || !bytes.Equal(back, data) {
		t.Fatalf("DecodeBody = %q, %v", back, err)
	}
}

func TestDecodeEnvelopeRejectsNonCanonical(t *testing.T) {
	env := &Envelope{Version: 1, Seq: 3, Kind: "call", Time: 5}
	good := appendEnvelope(nil, env)
	// The same map with its first two keys swapped is valid CBOR but not
	// canonical dag-cbor.
	bad := append([]byte{good[0]}, []byte{0x61, 'v', 0x01, 0x61, 't', 0x05}...)
	bad = append(bad, good[7:]...)
	if _, err := DecodeEnvelope(bad); err == nil {
		t.Fatalf("non-canonical envelope %x accepted", bad)
	}
	if _, err := DecodeEnvelope(good); err != nil {
		t.Fatal(err)
	}
}

func FuzzDecodeEnvelope(f *testing.F) {
	f.Add(appendEnvelope(nil, &Envelope{Version: 1, Seq: 3, Kind: "call", Time: 5}))
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := DecodeEnvelope(b)
		if err != nil {
			return
		}
		if !bytes.Equal(appendEnvelope(nil, env), b) {
			t.Fatalf("accepted %x but re-encodes differently", b)
		}
	})
}
