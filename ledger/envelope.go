package ledger

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math"
	"strings"

	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
)

// FormatVersion is the envelope format version, written in every envelope's
// "v" field. A reader refuses envelopes of a version it does not know.
const FormatVersion = 1

// Kind names what an entry records. The kernel may add kinds; the ledger
// only requires a short lower-case name.
type Kind string

// The kinds the kernel writes.
const (
	KindGenesis   Kind = "genesis"
	KindLogin     Kind = "login"
	KindGrant     Kind = "grant"
	KindDelegate  Kind = "delegate"
	KindRevoke    Kind = "revoke"
	KindRelease   Kind = "release"
	KindCall      Kind = "call"
	KindPresence  Kind = "presence"
	KindKeyEpoch  Kind = "key-epoch"
	KindPolicy    Kind = "policy"
	KindRedaction Kind = "redaction"
	KindReturn    Kind = "return" // a call's result; Ref is the call's seq
	KindStart     Kind = "start"  // a kernel started; grants of earlier runs ended
)

// Decision is the gate's verdict on a call, if the entry records one.
type Decision string

// Decisions.
const (
	DecisionNone  Decision = ""
	DecisionAdmit Decision = "admit"
	DecisionDeny  Decision = "deny"
)

// Entry is what a caller appends: the permanent facts of one event and its
// bodies. The ledger assigns Seq and Prev.
type Entry struct {
	Kind      Kind
	Actor     string   // principal that acted (device, person pseudonym, app, operator)
	Grant     uint64   // grant the event happened under, 0 for none
	Device    string   // target device or place path, "" for none
	Subject   string   // data subject pseudonym whose data the bodies carry, "" for none
	Interface uint64   // Cap'n Proto interface id, 0 for none
	Method    uint16   // method ordinal within Interface
	Decision  Decision // admit or deny for calls
	Reason    string   // why a call was denied, or a short note; never personal data
	Ref       uint64   // seq of a related entry (a grant's parent, a revoked grant), 0 for none
	Time      int64    // logical time, nanoseconds since the Unix epoch
	Params    []byte   // body: canonical Cap'n Proto bytes of params, nil for none
	Result    []byte   // body: canonical Cap'n Proto bytes of results, nil for none
}

// Envelope is the permanent, decoded form of an entry: its fields and the
// links to its bodies. Body bytes are not part of an envelope.
type Envelope struct {
	Version   int
	Seq       uint64
	Prev      cid.Cid // cid.Undef at seq 0
	Kind      Kind
	Actor     string
	Grant     uint64
	Device    string
	Subject   string
	Interface uint64
	Method    uint16
	Decision  Decision
	Reason    string
	Ref       uint64
	Time      int64
	Params    cid.Cid // cid.Undef when the entry has no params body
	Result    cid.Cid // cid.Undef when the entry has no result body
}

// Limits on entry fields, so one envelope stays small.
const (
	maxTextField = 1024
	maxBody      = 1 << 20
)

var errInvalidEntry = errors.New("invalid entry")

func validateEntry(e *Entry) error {
	if e.Kind == "" || len(e.Kind) > 32 {
		return fmt.Errorf("%w: kind %q must be 1 to 32 characters", errInvalidEntry, e.Kind)
	}
	for _, r := range e.Kind {
		if !(r >= 'a' && r <= 'z' || r == '-') {
			return fmt.Errorf("%w: kind %q must be lower-case letters and '-'", errInvalidEntry, e.Kind)
		}
	}
	if e.Kind == KindGenesis {
		return fmt.Errorf("%w: only the ledger writes a genesis entry", errInvalidEntry)
	}
	for _, f := range [...]struct{ name, v string }{{"actor", e.Actor}, {"device", e.Device}, {"subject", e.Subject}, {"reason", e.Reason}} {
		if len(f.v) > maxTextField {
			return fmt.Errorf("%w: %s is %d bytes, more than %d", errInvalidEntry, f.name, len(f.v), maxTextField)
		}
	}
	switch e.Decision {
	case DecisionNone, DecisionAdmit, DecisionDeny:
	default:
		return fmt.Errorf("%w: decision %q", errInvalidEntry, e.Decision)
	}
	if len(e.Params) > maxBody || len(e.Result) > maxBody {
		return fmt.Errorf("%w: body larger than %d bytes", errInvalidEntry, maxBody)
	}
	if e.Subject != "" && !validPseudonym(e.Subject) {
		return fmt.Errorf("%w: subject %q is not a pseudonym", errInvalidEntry, e.Subject)
	}
	if e.Time < 0 {
		return fmt.Errorf("%w: negative time", errInvalidEntry)
	}
	return nil
}

// validPseudonym reports whether s has the shape the ledger gives
// pseudonyms: "p-" and lower-case hex.
func validPseudonym(s string) bool {
	if len(s) < 3 || len(s) > 64 || !strings.HasPrefix(s, "p-") {
		return false
	}
	for _, r := range s[2:] {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

// CID prefixes: CIDv1, dag-cbor, sha2-256 with a 32-byte digest.
var cidPrefix = []byte{0x01, 0x71, 0x12, 0x20}

// blockCID returns the CIDv1 (dag-cbor, sha2-256) of a block.
func blockCID(block []byte) cid.Cid {
	return new(cidBuf).blockCID(block)
}

func cidFromDigest(d []byte) cid.Cid {
	return new(cidBuf).cid(d)
}

// cidBuf is where a CID's binary form is assembled. cid.Cast copies it,
// but the compiler cannot tell, so a buffer on the stack would move to the
// heap at every CID: the encoder reuses one.
type cidBuf [36]byte

// cid returns the CID of a sha2-256 digest; b then holds its binary form
// (which c.Bytes would copy out again).
func (b *cidBuf) cid(d []byte) cid.Cid {
	copy(b[:], cidPrefix)
	copy(b[4:], d)
	c, err := cid.Cast(b[:])
	if err != nil {
		panic(err) // the prefix is constant and valid
	}
	return c
}

// blockCID returns the CID of a block, as the function blockCID does;
// b then holds its binary form.
func (b *cidBuf) blockCID(block []byte) cid.Cid {
	d := sha256.Sum256(block)
	return b.cid(d[:])
}

// digestOf returns the sha2-256 digest of a CID made by blockCID, or false
// for any other CID.
func digestOf(c cid.Cid) ([]byte, bool) {
	b := c.Bytes()
	if len(b) != 36 || !bytes.Equal(b[:4], cidPrefix) {
		return nil, false
	}
	return b[4:], true
}

// cborWriter appends canonical (RFC 7049 §3.9, as dag-cbor requires) CBOR.
type cborWriter struct{ b []byte }

func (w *cborWriter) head(major byte, n uint64) {
	m := major << 5
	switch {
	case n < 24:
		w.b = append(w.b, m|byte(n))
	case n <= math.MaxUint8:
		w.b = append(w.b, m|24, byte(n))
	case n <= math.MaxUint16:
		w.b = append(w.b, m|25, byte(n>>8), byte(n))
	case n <= math.MaxUint32:
		w.b = append(w.b, m|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	default:
		w.b = append(w.b, m|27)
		w.b = binary.BigEndian.AppendUint64(w.b, n)
	}
}

func (w *cborWriter) uint(n uint64) { w.head(0, n) }

func (w *cborWriter) int(n int64) {
	if n < 0 {
		w.head(1, uint64(-(n + 1)))
		return
	}
	w.head(0, uint64(n))
}

func (w *cborWriter) bytes(p []byte) {
	w.head(2, uint64(len(p)))
	w.b = append(w.b, p...)
}

func (w *cborWriter) text(s string) {
	w.head(3, uint64(len(s)))
	w.b = append(w.b, s...)
}

func (w *cborWriter) link(c cid.Cid) {
	w.b = append(w.b, 0xd8, 42) // tag 42
	raw := c.Bytes()
	w.head(2, uint64(len(raw)+1))
	w.b = append(w.b, 0x00)
	w.b = append(w.b, raw...)
}

// appendEnvelope appends the canonical dag-cbor encoding of env to dst.
// Fields holding their zero value are omitted, except v, seq, kind and t.
// Keys are written in dag-cbor's canonical order: shorter keys first, then
// bytewise.
func appendEnvelope(dst []byte, env *Envelope) []byte {
	n := 4 // v, seq, kind, t
	if env.Prev.Defined() {
		n++
	}
	for _, s := range [...]string{env.Actor, env.Device, env.Subject, string(env.Decision), env.Reason} {
		if s != "" {
			n++
		}
	}
	for _, u := range [...]uint64{env.Grant, env.Interface, uint64(env.Method), env.Ref} {
		if u != 0 {
			n++
		}
	}
	if env.Params.Defined() {
		n++
	}
	if env.Result.Defined() {
		n++
	}
	w := cborWriter{b: dst}
	w.head(5, uint64(n))
	w.text("t")
	w.int(env.Time)
	w.text("v")
	w.uint(uint64(env.Version))
	if env.Decision != "" {
		w.text("dec")
		w.text(string(env.Decision))
	}
	if env.Device != "" {
		w.text("dev")
		w.text(env.Device)
	}
	if env.Ref != 0 {
		w.text("ref")
		w.uint(env.Ref)
	}
	w.text("seq")
	w.uint(env.Seq)
	if env.Reason != "" {
		w.text("why")
		w.text(env.Reason)
	}
	w.text("kind")
	w.text(string(env.Kind))
	if env.Method != 0 {
		w.text("meth")
		w.uint(uint64(env.Method))
	}
	if env.Prev.Defined() {
		w.text("prev")
		w.link(env.Prev)
	}
	if env.Subject != "" {
		w.text("subj")
		w.text(env.Subject)
	}
	if env.Actor != "" {
		w.text("actor")
		w.text(env.Actor)
	}
	if env.Grant != 0 {
		w.text("grant")
		w.uint(env.Grant)
	}
	if env.Interface != 0 {
		w.text("iface")
		w.head(3, 18)
		w.b = appendHex16(append(w.b, "0x"...), env.Interface)
	}
	if env.Params.Defined() {
		w.text("params")
		w.link(env.Params)
	}
	if env.Result.Defined() {
		w.text("result")
		w.link(env.Result)
	}
	return w.b
}

// saltSize is the length of a body block's salt.
const saltSize = 16

// salter derives the salts of an entry's bodies from a secret:
// HMAC-SHA256(secret, seq) split in two, the first half salting the params
// block and the second the result block. It keeps the keyed HMAC state, so
// one entry costs one HMAC.
type salter struct {
	mac hash.Hash
	sum [sha256.Size]byte
}

func newSalter(secret []byte) *salter { return &salter{mac: hmac.New(sha256.New, secret)} }

// salts returns the params and result salts of entry seq; they stay valid
// until the next call.
func (s *salter) salts(seq uint64) (params, result []byte) {
	s.mac.Reset()
	var in [8]byte
	binary.BigEndian.PutUint64(in[:], seq)
	s.mac.Write(in[:])
	s.mac.Sum(s.sum[:0])
	return s.sum[:saltSize], s.sum[saltSize:]
}

// appendBody appends the dag-cbor body block {"d": data, "s": salt}.
func appendBody(dst, data, salt []byte) []byte {
	w := cborWriter{b: dst}
	w.head(5, 2)
	w.text("d")
	w.bytes(data)
	w.text("s")
	w.bytes(salt)
	return w.b
}

// DecodeBody returns the data of a body block, checking its shape.
func DecodeBody(block []byte) (data []byte, err error) {
	nb := basicnode.Prototype.Map.NewBuilder()
	if err := dagcbor.Decode(nb, bytes.NewReader(block)); err != nil {
		return nil, fmt.Errorf("decode body: %w", err)
	}
	n := nb.Build()
	if n.Length() != 2 {
		return nil, fmt.Errorf("decode body: %d fields, want 2", n.Length())
	}
	d, err := n.LookupByString("d")
	if err != nil {
		return nil, fmt.Errorf("decode body: %w", err)
	}
	s, err := n.LookupByString("s")
	if err != nil {
		return nil, fmt.Errorf("decode body: %w", err)
	}
	if salt, err := s.AsBytes(); err != nil || len(salt) != saltSize {
		return nil, fmt.Errorf("decode body: bad salt")
	}
	return d.AsBytes()
}

// DecodeEnvelope decodes an envelope block with go-ipld-prime's dag-cbor
// codec and checks that it is in canonical form: re-encoding it gives the
// same bytes.
func DecodeEnvelope(block []byte) (*Envelope, error) {
	nb := basicnode.Prototype.Map.NewBuilder()
	if err := dagcbor.Decode(nb, bytes.NewReader(block)); err != nil {
		return nil, fmt.Errorf("decode envelope: %w", err)
	}
	n := nb.Build()
	if n.Kind() != datamodel.Kind_Map {
		return nil, errors.New("decode envelope: not a map")
	}
	env := &Envelope{}
	it := n.MapIterator()
	for !it.Done() {
		k, v, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("decode envelope: %w", err)
		}
		key, _ := k.AsString()
		if err := setField(env, key, v); err != nil {
			return nil, fmt.Errorf("decode envelope: field %q: %w", key, err)
		}
	}
	if env.Version != FormatVersion {
		return nil, fmt.Errorf("decode envelope: format version %d, want %d", env.Version, FormatVersion)
	}
	if env.Kind == "" {
		return nil, errors.New("decode envelope: no kind")
	}
	if !bytes.Equal(appendEnvelope(nil, env), block) {
		return nil, errors.New("decode envelope: not in canonical form")
	}
	return env, nil
}

// parseIface reads a Cap'n Proto interface id as envelopes write it, as the
// schema language does: "0x" and 16 hex digits (ids are 64-bit and often
// above 2^63, which many IPLD tools, dag-json among them, cannot hold as
// integers).
func parseIface(t string) (uint64, error) {
	if len(t) != 18 || t[:2] != "0x" {
		return 0, fmt.Errorf("interface id %q is not 0x and 16 hex digits", t)
	}
	var id uint64
	for _, c := range t[2:] {
		switch {
		case c >= '0' && c <= '9':
			id = id<<4 | uint64(c-'0')
		case c >= 'a' && c <= 'f':
			id = id<<4 | uint64(c-'a'+10)
		default:
			return 0, fmt.Errorf("interface id %q is not lower-case hex", t)
		}
	}
	return id, nil
}

func asUint(v datamodel.Node) (uint64, error) {
	if u, ok := v.(datamodel.UintNode); ok {
		return u.AsUint()
	}
	i, err := v.AsInt()
	if err != nil {
		return 0, err
	}
	if i < 0 {
		return 0, errors.New("negative")
	}
	return uint64(i), nil
}

func asLink(v datamodel.Node) (cid.Cid, error) {
	l, err := v.AsLink()
	if err != nil {
		return cid.Undef, err
	}
	cl, ok := l.(cidlink.Link)
	if !ok {
		return cid.Undef, errors.New("not a CID")
	}
	return cl.Cid, nil
}

func setField(env *Envelope, key string, v datamodel.Node) error {
	var err error
	var u uint64
	switch key {
	case "v":
		u, err = asUint(v)
		env.Version = int(u)
	case "seq":
		env.Seq, err = asUint(v)
	case "t":
		env.Time, err = v.AsInt()
	case "kind":
		var s string
		s, err = v.AsString()
		env.Kind = Kind(s)
	case "actor":
		env.Actor, err = v.AsString()
	case "dev":
		env.Device, err = v.AsString()
	case "subj":
		env.Subject, err = v.AsString()
	case "why":
		env.Reason, err = v.AsString()
	case "dec":
		var s string
		s, err = v.AsString()
		env.Decision = Decision(s)
	case "grant":
		env.Grant, err = asUint(v)
	case "iface":
		var t string
		if t, err = v.AsString(); err == nil {
			env.Interface, err = parseIface(t)
		}
	case "ref":
		env.Ref, err = asUint(v)
	case "meth":
		u, err = asUint(v)
		if err == nil && u > math.MaxUint16 {
			err = errors.New("method id out of range")
		}
		env.Method = uint16(u)
	case "prev":
		env.Prev, err = asLink(v)
	case "params":
		env.Params, err = asLink(v)
	case "result":
		env.Result, err = asLink(v)
	default:
		err = errors.New("unknown field")
	}
	return err
}
