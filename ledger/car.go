package ledger

// CAR export: the ledger as one self-contained IPLD DAG in a file that
// standard IPLD tools read (go-car, js @ipld/car, `ipfs dag import`).
//
// # What the file holds
//
// The file is a CARv1 (https://ipld.io/specs/transport/car/carv1/) whose
// one root is the export's index block, a dag-cbor map (keys in canonical
// order):
//
//	v            int     format of the index, 1
//	head         link    CID of the newest envelope; the prev links chain
//	                     back from it to the genesis entry
//	root         bytes   the Merkle tree root (32 bytes) at size
//	size         int     number of entries exported
//	origin       string  the ledger's origin, the checkpoints' first line
//	verifier     string  the note verifier key of the checkpoint signer
//	checkpoints  [link]  the stored signed checkpoints, oldest first
//
// Each checkpoint is a raw block (CIDv1, raw codec, sha2-256) holding the
// signed note exactly as the ledger stored it. Every envelope is its own
// dag-cbor block under its CID, and every body block still present is a
// dag-cbor block under the CID its envelope links; an erased body is
// absent, so its link dangles, as erasure intends. Blocks follow the root
// in this order: the index, the checkpoints, then each entry's envelope
// followed by its bodies, in seq order.
//
// # Why CARv1
//
// Every CAR reader reads CARv1 (CARv2 readers included), and it streams: the
// export writes one entry at a time in constant memory, whatever the
// ledger's size. go-car/v2's writers keep an in-memory index of every
// block, which would grow with the ledger; anyone who wants a CARv2 with an
// index can derive it with go-car's tools (car.WrapV1File, `car index`).
//
// An auditor checks an export with the ledger's verifier key alone: every
// block re-hashes to its CID, the prev chain from head reaches seq 0, the
// leaf hashes (LeafHash of each envelope CID in seq order) give the tree
// root of each checkpoint, and each checkpoint note verifies.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	"github.com/multiformats/go-multihash"
	"golang.org/x/mod/sumdb/tlog"
)

// CARIndexVersion is the format of the index block at the root of a CAR
// export, written in its "v" field.
const CARIndexVersion = 1

// CARExport says what ExportCAR wrote.
type CARExport struct {
	Root        cid.Cid // the index block, the CAR's one root
	Head        cid.Cid // the newest envelope
	Size        int64   // entries exported
	TreeRoot    tlog.Hash
	Bodies      int   // body blocks written
	Absent      int   // bodies linked by an envelope but not stored (erased)
	Checkpoints int   // checkpoint notes written
	Blocks      int64 // blocks written, the index included
	Bytes       int64 // bytes written
}

// CARIndex is the decoded index block at the root of a CAR export.
type CARIndex struct {
	Version     int
	Head        cid.Cid
	TreeRoot    tlog.Hash
	Size        int64
	Origin      string
	Verifier    string
	Checkpoints []cid.Cid
}

// CheckpointCID returns the CID under which a CAR export stores a
// checkpoint note: CIDv1, raw codec, sha2-256 of the note bytes.
func CheckpointCID(note []byte) cid.Cid {
	c, err := rawPrefix.Sum(note)
	if err != nil {
		panic(err) // sha2-256 of any bytes succeeds
	}
	return c
}

var rawPrefix = cid.Prefix{Version: 1, Codec: cid.Raw, MhType: multihash.SHA2_256, MhLength: -1}

// ExportCAR writes the durable ledger to w as a CARv1 (see the format
// above). It reads the ledger entry by entry, in constant memory, and
// checks as it goes that each envelope's CID is the leaf the tree holds,
// that its prev link is the CID of the one before and that each body block
// hashes to the CID its envelope links; a mismatch stops it with a
// *VerifyError naming the seq. On error, w holds a partial file:
// the caller writes to a temporary file and renames it only on success.
func (l *Ledger) ExportCAR(ctx context.Context, w io.Writer) (*CARExport, error) {
	size := l.Size()
	cps, err := l.Checkpoints(ctx)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	treeRoot, err := l.TreeHash(size)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	headSize, headRoot, headLast := l.Head()
	if headSize != size || headRoot != treeRoot {
		return nil, fmt.Errorf("export: %w: the head record disagrees with the tree", ErrCorrupt)
	}
	idx := &CARIndex{
		Version: CARIndexVersion, Head: headLast, TreeRoot: treeRoot, Size: size,
		Origin: l.meta.Origin, Verifier: l.meta.Verifier,
	}
	for _, cp := range cps {
		if cp.Size > size {
			return nil, &VerifyError{Seq: uint64(size), Reason: fmt.Sprintf("a checkpoint of size %d is beyond the head (size %d)", cp.Size, size)}
		}
		idx.Checkpoints = append(idx.Checkpoints, CheckpointCID(cp.Note))
	}
	idxBlock, err := EncodeCARIndex(idx)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	root := blockCID(idxBlock)

	cw := &carWriter{w: bufio.NewWriterSize(w, 1<<20)}
	out := &CARExport{Root: root, Head: headLast, Size: size, TreeRoot: treeRoot, Checkpoints: len(cps)}
	if err := cw.header(root); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	cw.block(root, idxBlock)
	for _, cp := range cps {
		cw.block(CheckpointCID(cp.Note), cp.Note)
	}
	prev := cid.Undef
	next := uint64(0) // the seq the scan reads next
	err = l.scan(ctx, 0, uint64(size), func(r *Record) (bool, error) {
		seq := r.Envelope.Seq
		if seq%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return false, err
			}
		}
		if err := exportRecord(l, cw, out, r, prev); err != nil {
			return false, err
		}
		prev, next = r.CID, seq+1
		return cw.err == nil, nil
	})
	var ve *VerifyError
	switch {
	case errors.As(err, &ve):
		return nil, err
	case errors.Is(err, ErrCorrupt):
		return nil, &VerifyError{Seq: next, Reason: unwrapCorrupt(err)}
	case err != nil:
		return nil, fmt.Errorf("export: read seq %d: %w", next, err)
	}
	if size > 0 && !prev.Equals(headLast) {
		return nil, &VerifyError{Seq: uint64(size - 1), Reason: "the head record's last CID differs from the entries"}
	}
	if err := cw.flush(); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	out.Blocks, out.Bytes = cw.blocks, cw.n
	return out, nil
}

// exportRecord checks one entry against the tree and the entry before it,
// and writes its envelope and present bodies.
func exportRecord(l *Ledger, cw *carWriter, out *CARExport, r *Record, prev cid.Cid) error {
	env, seq := r.Envelope, r.Envelope.Seq
	stored, err := l.tiles.ReadHashes([]int64{tlog.StoredHashIndex(0, int64(seq))})
	if err != nil {
		return &VerifyError{Seq: seq, Reason: unwrapCorrupt(err)}
	}
	if stored[0] != leafHash(r.CID.Bytes()) {
		return &VerifyError{Seq: seq, Reason: fmt.Sprintf("envelope CID %s is not the leaf the tree holds", r.CID)}
	}
	if env.Prev != prev {
		return &VerifyError{Seq: seq, Reason: fmt.Sprintf("prev link is %s, but the entry before has CID %s", cidText(env.Prev), cidText(prev))}
	}
	cw.block(r.CID, r.Block)
	for _, b := range [...]struct {
		name  string
		link  cid.Cid
		block []byte
	}{{"params", env.Params, r.ParamsBlock}, {"result", env.Result, r.ResultBlock}} {
		switch {
		case !b.link.Defined():
		case b.block == nil:
			out.Absent++
		default:
			if got := blockCID(b.block); !got.Equals(b.link) {
				return &VerifyError{Seq: seq, Reason: fmt.Sprintf("%s body hashes to %s, the envelope links %s", b.name, got, b.link)}
			}
			cw.block(b.link, b.block)
			out.Bodies++
		}
	}
	return nil
}

// EncodeCARIndex encodes a CAR export's index block as canonical dag-cbor.
func EncodeCARIndex(idx *CARIndex) ([]byte, error) {
	n, err := qp.BuildMap(basicnode.Prototype.Map, 7, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "v", qp.Int(int64(idx.Version)))
		qp.MapEntry(ma, "head", qp.Link(cidlink.Link{Cid: idx.Head}))
		qp.MapEntry(ma, "root", qp.Bytes(idx.TreeRoot[:]))
		qp.MapEntry(ma, "size", qp.Int(idx.Size))
		qp.MapEntry(ma, "origin", qp.String(idx.Origin))
		qp.MapEntry(ma, "verifier", qp.String(idx.Verifier))
		qp.MapEntry(ma, "checkpoints", qp.List(int64(len(idx.Checkpoints)), func(la datamodel.ListAssembler) {
			for _, c := range idx.Checkpoints {
				qp.ListEntry(la, qp.Link(cidlink.Link{Cid: c}))
			}
		}))
	})
	if err != nil {
		return nil, fmt.Errorf("encode CAR index: %w", err)
	}
	var buf bytes.Buffer
	if err := dagcbor.Encode(n, &buf); err != nil {
		return nil, fmt.Errorf("encode CAR index: %w", err)
	}
	return buf.Bytes(), nil
}

// DecodeCARIndex decodes the index block at the root of a CAR export.
func DecodeCARIndex(block []byte) (*CARIndex, error) {
	nb := basicnode.Prototype.Map.NewBuilder()
	if err := dagcbor.Decode(nb, bytes.NewReader(block)); err != nil {
		return nil, fmt.Errorf("decode CAR index: %w", err)
	}
	n := nb.Build()
	idx := &CARIndex{}
	for _, name := range [...]string{"v", "head", "root", "size", "origin", "verifier", "checkpoints"} {
		f, err := n.LookupByString(name)
		if err != nil {
			return nil, fmt.Errorf("decode CAR index: field %q: %w", name, err)
		}
		if err := setIndexField(idx, name, f); err != nil {
			return nil, fmt.Errorf("decode CAR index: field %q: %w", name, err)
		}
	}
	if idx.Version != CARIndexVersion {
		return nil, fmt.Errorf("decode CAR index: version %d, want %d", idx.Version, CARIndexVersion)
	}
	return idx, nil
}

func setIndexField(idx *CARIndex, name string, f datamodel.Node) (err error) {
	switch name {
	case "v":
		var v int64
		v, err = f.AsInt()
		idx.Version = int(v)
	case "head":
		idx.Head, err = asLink(f)
	case "root":
		var b []byte
		if b, err = f.AsBytes(); err == nil && len(b) != len(idx.TreeRoot) {
			err = fmt.Errorf("%d bytes, want %d", len(b), len(idx.TreeRoot))
		}
		copy(idx.TreeRoot[:], b)
	case "size":
		idx.Size, err = f.AsInt()
	case "origin":
		idx.Origin, err = f.AsString()
	case "verifier":
		idx.Verifier, err = f.AsString()
	case "checkpoints":
		it := f.ListIterator()
		if it == nil {
			return errors.New("not a list")
		}
		for !it.Done() {
			_, e, err := it.Next()
			if err != nil {
				return err
			}
			c, err := asLink(e)
			if err != nil {
				return err
			}
			idx.Checkpoints = append(idx.Checkpoints, c)
		}
	}
	return err
}

// carWriter writes CARv1 sections: a varint length, then the CID's bytes
// and the block. The first error sticks and ends the writing.
type carWriter struct {
	w      *bufio.Writer
	n      int64
	blocks int64
	err    error
}

func (cw *carWriter) header(root cid.Cid) error {
	n, err := qp.BuildMap(basicnode.Prototype.Map, 2, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "roots", qp.List(1, func(la datamodel.ListAssembler) {
			qp.ListEntry(la, qp.Link(cidlink.Link{Cid: root}))
		}))
		qp.MapEntry(ma, "version", qp.Int(1))
	})
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := dagcbor.Encode(n, &buf); err != nil {
		return err
	}
	cw.write(binary.AppendUvarint(nil, uint64(buf.Len())))
	cw.write(buf.Bytes())
	return cw.err
}

func (cw *carWriter) block(c cid.Cid, data []byte) {
	cb := c.Bytes()
	var lenBuf [binary.MaxVarintLen64]byte
	cw.write(lenBuf[:binary.PutUvarint(lenBuf[:], uint64(len(cb)+len(data)))])
	cw.write(cb)
	cw.write(data)
	cw.blocks++
}

func (cw *carWriter) write(p []byte) {
	if cw.err != nil {
		return
	}
	n, err := cw.w.Write(p)
	cw.n += int64(n)
	cw.err = err
}

func (cw *carWriter) flush() error {
	if cw.err != nil {
		return cw.err
	}
	return cw.w.Flush()
}
