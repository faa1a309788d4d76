package ledger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/ipfs/go-cid"
	"golang.org/x/mod/sumdb/tlog"
)

// VerifyError reports the first thing verification found wrong: the seq of
// the first bad entry and what is wrong with it.
type VerifyError struct {
	Seq    uint64
	Reason string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("ledger unsound at seq %d: %s", e.Seq, e.Reason)
}

func (e *VerifyError) Unwrap() error { return ErrCorrupt }

// VerifyReport says what a successful verification checked.
type VerifyReport struct {
	Size        int64     // entries checked
	Root        tlog.Hash // the tree root at Size
	Bodies      int       // body blocks re-hashed to their CIDs
	Redacted    int       // bodies missing and listed by a redaction entry
	Checkpoints int       // stored checkpoints whose signature and root were checked
	// Unerased counts bodies a redaction entry lists that are still
	// present: an erasure was interrupted between its redaction and its
	// deletion (Forget completes it; Ledger.PendingErasure names it).
	Unerased int
}

// Redaction lists the bodies an erasure removed; a redaction entry's params
// body holds it (see the erasure documentation).
type Redaction struct {
	Removed []RedactedBody `json:"removed"`
}

// RedactedBody names one removed body block.
type RedactedBody struct {
	Seq uint64 `json:"seq"`
	CID string `json:"cid"`
}

// Verify recomputes every envelope CID, the prev chain, every body's CID,
// the Merkle tree (against the stored tiles and the head) and every stored
// checkpoint (signature and root). A missing body must be listed by a
// redaction entry, and every body a redaction entry lists must be one its
// envelope links. It returns a *VerifyError naming the first bad seq. progress, if not nil, is called now and then with the
// number of entries checked.
func (l *Ledger) Verify(ctx context.Context, progress func(done, total int64)) (*VerifyReport, error) {
	size := l.Size()
	rep := &VerifyReport{Size: size}
	redacted, err := l.redactions(ctx)
	if err != nil {
		return nil, err
	}
	cps, err := l.Checkpoints(ctx)
	if err != nil {
		return nil, err
	}
	cpAt := map[int64]*Checkpoint{}
	for _, cp := range cps {
		if cp.Size > size {
			return nil, &VerifyError{Seq: uint64(size), Reason: fmt.Sprintf("a checkpoint of size %d is beyond the head (size %d)", cp.Size, size)}
		}
		cpAt[cp.Size] = cp
	}
	tb := newTreeBuilder()
	prev := cid.Undef
	checkTiles := func() error {
		for _, t := range tb.takeDirty() {
			stored, err := l.tiles.tile(t.level, t.n)
			first := uint64(t.n) << (tileHeight * (t.level + 1))
			if err != nil {
				return &VerifyError{Seq: first, Reason: err.Error()}
			}
			if len(stored) < len(t.data) {
				return &VerifyError{Seq: first, Reason: fmt.Sprintf("tile %d/%d holds %d hashes, want %d", t.level, t.n, len(stored)/tlog.HashSize, len(t.data)/tlog.HashSize)}
			}
			if !bytes.Equal(stored[:len(t.data)], t.data) {
				i := 0
				for ; i < len(t.data); i += tlog.HashSize {
					if !bytes.Equal(stored[i:i+tlog.HashSize], t.data[i:i+tlog.HashSize]) {
						break
					}
				}
				bad := first + uint64(i/tlog.HashSize)<<(tileHeight*t.level)
				return &VerifyError{Seq: bad, Reason: fmt.Sprintf("stored tree hash (tile %d/%d, hash %d) differs from the one recomputed from the envelopes", t.level, t.n, i/tlog.HashSize)}
			}
		}
		return nil
	}
	var recs [][]byte
	var first uint64
	for seq := uint64(0); seq < uint64(size); seq++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if recs == nil || seq >= first+uint64(len(recs)) {
			if recs, first, err = l.readChunk(ctx, seq); err != nil {
				return nil, &VerifyError{Seq: seq, Reason: unwrapCorrupt(err)}
			}
		}
		r, err := l.decodeRecord(ctx, seq, recs[seq-first])
		if err != nil {
			return nil, &VerifyError{Seq: seq, Reason: unwrapCorrupt(err)}
		}
		env := r.Envelope
		leaf := leafHash(r.CID.Bytes())
		stored, err := l.tiles.ReadHashes([]int64{tlog.StoredHashIndex(0, int64(seq))})
		if err != nil {
			return nil, &VerifyError{Seq: seq, Reason: unwrapCorrupt(err)}
		}
		if stored[0] != leaf {
			return nil, &VerifyError{Seq: seq, Reason: fmt.Sprintf("envelope CID %s is not the leaf the tree holds", r.CID)}
		}
		if env.Prev != prev {
			return nil, &VerifyError{Seq: seq, Reason: fmt.Sprintf("prev link is %s, but the entry before has CID %s", cidText(env.Prev), cidText(prev))}
		}
		if (seq == 0) != (env.Kind == KindGenesis) {
			return nil, &VerifyError{Seq: seq, Reason: fmt.Sprintf("kind %q at seq %d", env.Kind, seq)}
		}
		for _, b := range [...]struct {
			name  string
			link  cid.Cid
			block []byte
		}{{"params", env.Params, r.ParamsBlock}, {"result", env.Result, r.ResultBlock}} {
			switch {
			case !b.link.Defined() && b.block != nil:
				return nil, &VerifyError{Seq: seq, Reason: fmt.Sprintf("a %s body is stored but the envelope links none", b.name)}
			case !b.link.Defined():
			case b.block == nil:
				m := redacted[redactionKey{seq, b.link.KeyString()}]
				if m == nil {
					return nil, &VerifyError{Seq: seq, Reason: fmt.Sprintf("%s body %s is missing and on no redaction list", b.name, b.link)}
				}
				m.linked = true
				rep.Redacted++
			default:
				if m := redacted[redactionKey{seq, b.link.KeyString()}]; m != nil {
					m.linked = true
					rep.Unerased++
				}
				if got := blockCID(b.block); !got.Equals(b.link) {
					return nil, &VerifyError{Seq: seq, Reason: fmt.Sprintf("%s body hashes to %s, the envelope links %s", b.name, got, b.link)}
				}
				if _, err := DecodeBody(b.block); err != nil {
					return nil, &VerifyError{Seq: seq, Reason: err.Error()}
				}
				rep.Bodies++
			}
		}
		prev = r.CID
		tb.append(leaf)
		if tb.size%tileWidth == 0 {
			if err := checkTiles(); err != nil {
				return nil, err
			}
		}
		if cp := cpAt[tb.size]; cp != nil {
			root, _ := tb.root()
			if root != cp.Root {
				return nil, &VerifyError{Seq: seq, Reason: fmt.Sprintf("stored checkpoint of size %d has root %s, the entries give %s", cp.Size, cp.Root, root)}
			}
			rep.Checkpoints++
		}
		if progress != nil && seq%65536 == 65535 {
			progress(int64(seq)+1, size)
		}
	}
	if err := checkTiles(); err != nil {
		return nil, err
	}
	var bogus *VerifyError
	for k, m := range redacted {
		if !m.linked && (bogus == nil || m.by < bogus.Seq) {
			bogus = &VerifyError{Seq: m.by, Reason: fmt.Sprintf("the redaction lists a body %s of seq %d, which that entry does not link", cidFromKey(k.cid), k.seq)}
		}
	}
	if bogus != nil {
		return nil, bogus
	}
	root, _ := tb.root()
	l.dmu.Lock()
	head := l.durable
	l.dmu.Unlock()
	if root != head.root || !prev.Equals(head.last) {
		return nil, &VerifyError{Seq: uint64(size - 1), Reason: "the head record's root or last CID differs from the entries"}
	}
	rep.Root = root
	if progress != nil {
		progress(size, size)
	}
	return rep, nil
}

type redactionKey struct {
	seq uint64
	cid string
}

// redactionMark is a body a redaction entry lists.
type redactionMark struct {
	by     uint64 // seq of the (first) redaction entry listing it
	linked bool   // Verify found the body's link in its envelope
}

// redactions reads every redaction entry's list of removed bodies.
func (l *Ledger) redactions(ctx context.Context) (map[redactionKey]*redactionMark, error) {
	var seqs []uint64
	if err := l.Lookup(ctx, ByKind, string(KindRedaction), 0, uint64(l.Size()), func(s uint64) bool {
		seqs = append(seqs, s)
		return true
	}); err != nil {
		return nil, err
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	out := map[redactionKey]*redactionMark{}
	for _, s := range seqs {
		r, err := l.readRecord(ctx, s)
		if err != nil {
			return nil, &VerifyError{Seq: s, Reason: unwrapCorrupt(err)}
		}
		red, err := parseRedaction(r.Params())
		if err != nil {
			return nil, &VerifyError{Seq: s, Reason: err.Error()}
		}
		for _, b := range red.Removed {
			c, err := cid.Decode(b.CID)
			if err != nil || b.Seq >= s {
				return nil, &VerifyError{Seq: s, Reason: fmt.Sprintf("redaction lists a bad body (%d, %q)", b.Seq, b.CID)}
			}
			if k := (redactionKey{b.Seq, c.KeyString()}); out[k] == nil {
				out[k] = &redactionMark{by: s}
			}
		}
	}
	return out, nil
}

func unwrapCorrupt(err error) string {
	var ve *VerifyError
	if errors.As(err, &ve) {
		return ve.Reason
	}
	return err.Error()
}

func cidFromKey(k string) string {
	c, err := cid.Cast([]byte(k))
	if err != nil {
		return "?"
	}
	return c.String()
}

func cidText(c cid.Cid) string {
	if !c.Defined() {
		return "none"
	}
	return c.String()
}

// parseRedaction reads a redaction entry's params body.
func parseRedaction(body []byte) (*Redaction, error) {
	var red Redaction
	if err := json.Unmarshal(body, &red); err != nil {
		return nil, fmt.Errorf("redaction body: %w", err)
	}
	return &red, nil
}
