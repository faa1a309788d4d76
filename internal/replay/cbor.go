package replay

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/ipfs/go-cid"

	"github.com/osmose-os/osmose/ledger"
)

// A decoder of the envelope format, version 1, as ledger/doc.go documents
// it: a dag-cbor map whose keys come in dag-cbor's canonical order, zero
// fields omitted except v, seq, kind and t. It accepts exactly the bytes
// ledger.DecodeEnvelope accepts (that function re-encodes what it decoded
// and compares), about twenty times faster, which is what lets replay keep
// up with 100,000 entries a second. decode_test.go checks the two agree on
// every entry of real ledgers and on damaged ones.

var errCBOR = errors.New("not a canonical version 1 envelope")

// envelopeKeys are the envelope's keys in canonical order (shorter first,
// then bytewise).
var envelopeKeys = [...]string{"t", "v", "dec", "dev", "ref", "seq", "why", "kind", "meth", "prev", "subj", "actor", "grant", "iface", "params", "result"}

type cborReader struct {
	b   []byte
	err error
}

func (r *cborReader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{errCBOR}, a...)...)
	}
}

// head reads an item head: its major type and argument, checking that
// the argument is encoded in the fewest bytes (canonical CBOR).
func (r *cborReader) head() (major byte, arg uint64) {
	if r.err != nil {
		return 0, 0
	}
	if len(r.b) == 0 {
		r.fail("truncated")
		return 0, 0
	}
	c := r.b[0]
	major, info := c>>5, c&0x1f
	r.b = r.b[1:]
	var n int
	switch {
	case info < 24:
		return major, uint64(info)
	case info == 24:
		n = 1
	case info == 25:
		n = 2
	case info == 26:
		n = 4
	case info == 27:
		n = 8
	default:
		r.fail("indefinite or reserved length")
		return 0, 0
	}
	if len(r.b) < n {
		r.fail("truncated")
		return 0, 0
	}
	switch n {
	case 1:
		arg = uint64(r.b[0])
	case 2:
		arg = uint64(binary.BigEndian.Uint16(r.b))
	case 4:
		arg = uint64(binary.BigEndian.Uint32(r.b))
	default:
		arg = binary.BigEndian.Uint64(r.b)
	}
	r.b = r.b[n:]
	if min := [...]uint64{1: 24, 2: 1 << 8, 4: 1 << 16, 8: 1 << 32}[n]; arg < min {
		r.fail("integer not in its shortest form")
	}
	return major, arg
}

func (r *cborReader) uint() uint64 {
	m, v := r.head()
	if m != 0 {
		r.fail("want an unsigned integer")
	}
	return v
}

func (r *cborReader) int() int64 {
	m, v := r.head()
	switch {
	case m == 0 && v <= math.MaxInt64:
		return int64(v)
	case m == 1 && v <= math.MaxInt64:
		return -1 - int64(v)
	}
	r.fail("want an integer")
	return 0
}

// bytesOf reads a string (major 3) or byte string (major 2) and returns
// its bytes, aliasing the input.
func (r *cborReader) bytesOf(major byte) []byte {
	m, n := r.head()
	if r.err != nil {
		return nil
	}
	if m != major || n > uint64(len(r.b)) {
		r.fail("want a string of major type %d", major)
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *cborReader) link() cid.Cid {
	if len(r.b) < 2 || r.b[0] != 0xd8 || r.b[1] != 42 {
		r.fail("want a link (tag 42)")
		return cid.Undef
	}
	r.b = r.b[2:]
	raw := r.bytesOf(2)
	if r.err != nil {
		return cid.Undef
	}
	if len(raw) < 2 || raw[0] != 0 {
		r.fail("link without its identity multibase prefix")
		return cid.Undef
	}
	n, c, err := cid.CidFromBytes(raw[1:])
	if err != nil || n != len(raw)-1 {
		r.fail("bad CID in a link")
		return cid.Undef
	}
	return c
}

// interner keeps one copy of each string the envelopes repeat (actors,
// devices, kinds), so decoding allocates once per distinct value.
type interner map[string]string

func (in interner) get(b []byte) string {
	if s, ok := in[string(b)]; ok {
		return s
	}
	if len(in) > 1<<16 {
		clear(in)
	}
	s := string(b)
	in[s] = s
	return s
}

// decodeEnvelope decodes a version 1 envelope, accepting only its
// canonical encoding.
func decodeEnvelope(block []byte, in interner, env *ledger.Envelope) error {
	r := cborReader{b: block}
	m, n := r.head()
	if r.err == nil && m != 5 {
		r.fail("not a map")
	}
	if n > uint64(len(envelopeKeys)) {
		r.fail("%d fields", n)
	}
	next := 0 // index of the least key allowed next
	var have [len(envelopeKeys)]bool
	for i := uint64(0); i < n && r.err == nil; i++ {
		key := r.bytesOf(3)
		k := next
		for k < len(envelopeKeys) && envelopeKeys[k] != string(key) {
			k++
		}
		if k == len(envelopeKeys) {
			r.fail("field %q unknown or out of canonical order", key)
			break
		}
		next, have[k] = k+1, true
		zero := false
		switch envelopeKeys[k] {
		case "t":
			env.Time = r.int()
		case "v":
			env.Version = int(r.uint())
		case "dec":
			env.Decision = ledger.Decision(in.get(r.bytesOf(3)))
			zero = env.Decision == ""
		case "dev":
			env.Device = in.get(r.bytesOf(3))
			zero = env.Device == ""
		case "ref":
			env.Ref = r.uint()
			zero = env.Ref == 0
		case "seq":
			env.Seq = r.uint()
		case "why":
			env.Reason = in.get(r.bytesOf(3))
			zero = env.Reason == ""
		case "kind":
			env.Kind = ledger.Kind(in.get(r.bytesOf(3)))
		case "meth":
			v := r.uint()
			if v > math.MaxUint16 {
				r.fail("method id out of range")
			}
			env.Method = uint16(v)
			zero = v == 0
		case "prev":
			env.Prev = r.link()
		case "subj":
			env.Subject = in.get(r.bytesOf(3))
			zero = env.Subject == ""
		case "actor":
			env.Actor = in.get(r.bytesOf(3))
			zero = env.Actor == ""
		case "grant":
			env.Grant = r.uint()
			zero = env.Grant == 0
		case "iface":
			env.Interface = parseIface(&r, r.bytesOf(3))
			zero = env.Interface == 0
		case "params":
			env.Params = r.link()
		case "result":
			env.Result = r.link()
		}
		if zero && r.err == nil {
			r.fail("field %q holds its zero value (canonical envelopes omit it)", envelopeKeys[k])
		}
	}
	switch {
	case r.err != nil:
	case len(r.b) != 0:
		r.fail("%d bytes after the envelope", len(r.b))
	case !have[0] || !have[1] || !have[5] || !have[7]:
		r.fail("missing one of v, seq, kind, t")
	case env.Version != ledger.FormatVersion:
		r.fail("format version %d", env.Version)
	case env.Kind == "":
		r.fail("empty kind")
	}
	return r.err
}

func parseIface(r *cborReader, t []byte) uint64 {
	if len(t) != 18 || t[0] != '0' || t[1] != 'x' {
		r.fail("interface id %q is not 0x and 16 hex digits", t)
		return 0
	}
	var id uint64
	for _, c := range t[2:] {
		switch {
		case c >= '0' && c <= '9':
			id = id<<4 | uint64(c-'0')
		case c >= 'a' && c <= 'f':
			id = id<<4 | uint64(c-'a'+10)
		default:
			r.fail("interface id %q is not lower-case hex", t)
			return 0
		}
	}
	return id
}

// Body blocks: the dag-cbor map {"d": data, "s": 16-byte salt}.

const saltSize = 16

// decodeBody returns a body block's data and salt, aliasing the block.
func decodeBody(block []byte) (data, salt []byte, err error) {
	r := cborReader{b: block}
	if m, n := r.head(); r.err == nil && (m != 5 || n != 2) {
		r.fail("body is not a map of two fields")
	}
	if string(r.bytesOf(3)) != "d" && r.err == nil {
		r.fail("body's first field is not d")
	}
	data = r.bytesOf(2)
	if string(r.bytesOf(3)) != "s" && r.err == nil {
		r.fail("body's second field is not s")
	}
	salt = r.bytesOf(2)
	if r.err == nil && (len(salt) != saltSize || len(r.b) != 0) {
		r.fail("bad salt or trailing bytes")
	}
	if r.err != nil {
		return nil, nil, fmt.Errorf("body block: %w", r.err)
	}
	return data, salt, nil
}

// cidPrefix is that of every CID the ledger makes: CIDv1, dag-cbor,
// sha2-256, 32 bytes.
var cidPrefix = [4]byte{0x01, 0x71, 0x12, 0x20}

// blockKey returns the binary CID of a block, as cid.Cid.KeyString
// returns it, so it compares with a link without building a cid.Cid.
func blockKey(block []byte) string {
	var b [36]byte
	copy(b[:], cidPrefix[:])
	sum := sha256.Sum256(block)
	copy(b[4:], sum[:])
	return string(b[:])
}

// bodyKey returns the binary CID of the body block {"d": data, "s":
// salt}: what a result's link must be for its body to hold data.
func bodyKey(data, salt []byte, scratch []byte) (string, []byte) {
	b := append(scratch[:0], 0xa2, 0x61, 'd')
	b = appendHead(b, 2, uint64(len(data)))
	b = append(b, data...)
	b = append(b, 0x61, 's')
	b = appendHead(b, 2, uint64(len(salt)))
	b = append(b, salt...)
	return blockKey(b), b
}

func appendHead(b []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(b, m|byte(n))
	case n <= math.MaxUint8:
		return append(b, m|24, byte(n))
	case n <= math.MaxUint16:
		return append(b, m|25, byte(n>>8), byte(n))
	case n <= math.MaxUint32:
		return append(b, m|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return binary.BigEndian.AppendUint64(append(b, m|27), n)
}

// splitFrames cuts uvarint-length-prefixed frames, as the ledger stores
// records in a chunk and blocks in a record.
func splitFrames(b []byte, out [][]byte) ([][]byte, error) {
	out = out[:0]
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return nil, errors.New("bad framing")
		}
		out = append(out, b[k:k+int(n)])
		b = b[k+int(n):]
	}
	return out, nil
}
