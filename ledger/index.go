package ledger

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
)

// Index names one of the ledger's secondary indexes. Each maps a value to
// the seqs of the entries that carry it, in order.
type Index byte

// The indexes.
const (
	ByGrant     Index = 'g' // Envelope.Grant, as decimal
	ByPrincipal Index = 'a' // Envelope.Actor
	ByDevice    Index = 'd' // Envelope.Device
	BySubject   Index = 's' // Envelope.Subject
	ByKind      Index = 'k' // Envelope.Kind
)

func (ix Index) String() string {
	switch ix {
	case ByGrant:
		return "grant"
	case ByPrincipal:
		return "principal"
	case ByDevice:
		return "device"
	case BySubject:
		return "subject"
	case ByKind:
		return "kind"
	}
	return "index(" + string(ix) + ")"
}

var allIndexes = [...]Index{ByGrant, ByPrincipal, ByDevice, BySubject, ByKind}

// Postings are stored as one key per (index, value, flush):
// /i/<index>/<base64url value>/<first seq> -> uvarint deltas of the seqs.
func postingPrefix(ix Index, value string) string {
	return "/i/" + string(ix) + "/" + base64.RawURLEncoding.EncodeToString([]byte(value))
}

// indexer buffers postings in memory between flushes. The live segment
// takes new entries; when it is full the encoder freezes it, a goroutine
// turns it into store writes, and a later batch writes them. Until that
// batch is durable the frozen segment still answers lookups.
type indexer struct {
	mu        sync.Mutex
	live      *segment
	frozen    []*segment // being written, oldest first
	flushedTo uint64     // every seq below it is in the stored postings
}

// segment is the postings of a run of consecutive entries.
type segment struct {
	// byValue holds the postings of the indexes of textIndexes, one map
	// each: keyed by the value alone, a map takes the runtime's fast path
	// for string keys, which a key of index and value does not.
	byValue [len(textIndexes)]map[string][]uint64
	grants  map[uint64][]uint64 // ByGrant, kept apart to skip formatting
	cids    []cidPosting
	count   int
	upTo    uint64 // set when frozen: the seq after the segment's last
}

func newSegment() *segment {
	g := &segment{grants: map[uint64][]uint64{}}
	for i := range g.byValue {
		g.byValue[i] = map[string][]uint64{}
	}
	return g
}

// textIndexes are the indexes whose values are an envelope's text fields,
// in the order of segment.byValue and of textValues.
var textIndexes = [...]Index{ByPrincipal, ByDevice, BySubject, ByKind}

// textValues returns env's values for textIndexes.
func textValues(env *Envelope) [len(textIndexes)]string {
	return [...]string{env.Actor, env.Device, env.Subject, string(env.Kind)}
}

// postings returns the segment's buffered postings of a text index, or
// nil for any other.
func (g *segment) postings(ix Index) map[string][]uint64 {
	for i, t := range textIndexes {
		if t == ix {
			return g.byValue[i]
		}
	}
	return nil
}

// The CID index maps an envelope CID's digest to its seq. Each flush writes
// one run per first digest byte: /c/<2 hex>/<first seq> -> repeated
// (8-byte digest prefix, uvarint seq), sorted by digest. A lookup reads the
// runs of one bucket: 1/256 of the index.
type cidPosting struct {
	prefix uint64 // the digest's first cidPrefixLen bytes, big-endian
	seq    uint64
}

const cidPrefixLen = 8

type postingID struct {
	ix    Index
	value string
}

func newIndexer() *indexer { return &indexer{live: newSegment()} }

func (x *indexer) add(env *Envelope, c cid.Cid) {
	x.mu.Lock()
	g := x.live
	if d, ok := digestOf(c); ok {
		g.cids = append(g.cids, cidPosting{binary.BigEndian.Uint64(d), env.Seq})
	}
	if env.Grant != 0 {
		g.grants[env.Grant] = append(g.grants[env.Grant], env.Seq)
	}
	for i, v := range textValues(env) {
		if v != "" {
			m := g.byValue[i]
			m[v] = append(m[v], env.Seq)
		}
	}
	g.count++
	x.mu.Unlock()
}

func (x *indexer) pending() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.live.count
}

// freeze makes the live segment a frozen one and starts a new live
// segment. The caller writes the frozen segment's puts and then calls
// written.
func (x *indexer) freeze(upTo uint64) *segment {
	x.mu.Lock()
	defer x.mu.Unlock()
	g := x.live
	g.upTo = upTo
	x.frozen, x.live = append(x.frozen, g), newSegment()
	return g
}

// written records that a frozen segment's puts are durable.
func (x *indexer) written(g *segment) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for i, f := range x.frozen {
		if f == g {
			x.frozen = append(x.frozen[:i:i], x.frozen[i+1:]...)
			break
		}
	}
	x.flushedTo = max(x.flushedTo, g.upTo)
}

// puts returns a frozen segment's store writes, in a deterministic order,
// ending with the new flushed-to mark. It reads only the segment, which no
// one changes once frozen.
func (g *segment) puts() []kv {
	var puts []kv
	type list struct {
		id   postingID
		seqs []uint64
	}
	n := len(g.grants)
	for _, m := range g.byValue {
		n += len(m)
	}
	lists := make([]list, 0, n)
	for i, m := range g.byValue {
		for v, seqs := range m {
			lists = append(lists, list{postingID{textIndexes[i], v}, seqs})
		}
	}
	for n, seqs := range g.grants {
		lists = append(lists, list{postingID{ByGrant, strconv.FormatUint(n, 10)}, seqs})
	}
	slices.SortFunc(lists, func(a, b list) int {
		if c := cmp.Compare(a.id.ix, b.id.ix); c != 0 {
			return c
		}
		return strings.Compare(a.id.value, b.id.value)
	})
	for _, l := range lists {
		id, seqs := l.id, l.seqs
		val := make([]byte, 0, 2*len(seqs))
		prev := uint64(0)
		for _, s := range seqs {
			val = binary.AppendUvarint(val, s-prev)
			prev = s
		}
		key := ds.RawKey(fmt.Sprintf("%s/%016x", postingPrefix(id.ix, id.value), seqs[0]))
		puts = append(puts, kv{key, val})
	}
	// One run per first digest byte: the postings go to their buckets (a
	// counting sort), and each bucket is sorted by digest.
	var start [257]int
	for _, c := range g.cids {
		start[c.prefix>>56+1]++
	}
	for b := 1; b < len(start); b++ {
		start[b] += start[b-1]
	}
	cids := make([]cidPosting, len(g.cids))
	next := start
	for _, c := range g.cids {
		b := c.prefix >> 56
		cids[next[b]] = c
		next[b]++
	}
	for b := range 256 {
		run := cids[start[b]:start[b+1]]
		if len(run) == 0 {
			continue
		}
		slices.SortFunc(run, func(x, y cidPosting) int { return cmp.Compare(x.prefix, y.prefix) })
		first := run[0].seq
		val := make([]byte, 0, len(run)*(cidPrefixLen+3))
		for _, c := range run {
			first = min(first, c.seq)
			val = binary.BigEndian.AppendUint64(val, c.prefix)
			val = binary.AppendUvarint(val, c.seq)
		}
		puts = append(puts, kv{ds.RawKey(fmt.Sprintf("/c/%02x/%016x", b, first)), val})
	}
	return append(puts, kv{keyIndexed, binary.BigEndian.AppendUint64(nil, g.upTo)})
}

// segments returns the frozen (if any) and live segments, oldest first.
// Call with x.mu held.
func (x *indexer) segments() []*segment {
	return append(x.frozen[:len(x.frozen):len(x.frozen)], x.live)
}

// buffered returns the buffered seqs of one posting list, in order.
func (x *indexer) buffered(ix Index, value string) []uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []uint64
	for _, g := range x.segments() {
		if ix == ByGrant {
			if n, err := strconv.ParseUint(value, 10, 64); err == nil && strconv.FormatUint(n, 10) == value {
				out = append(out, g.grants[n]...)
			}
			continue
		}
		out = append(out, g.postings(ix)[value]...)
	}
	return out
}

// cidCandidates calls fn with every seq whose envelope digest starts like
// digest, stored or buffered, until fn returns false or an error.
func (l *Ledger) cidCandidates(ctx context.Context, digest []byte, fn func(seq uint64) (bool, error)) error {
	stop := false
	err := queryPrefix(ctx, l.store, fmt.Sprintf("/c/%02x", digest[0]), false, func(key string, v []byte) (bool, error) {
		for len(v) > 0 {
			if len(v) < cidPrefixLen+1 {
				return false, fmt.Errorf("%w: CID index run %s", ErrCorrupt, key)
			}
			p := v[:cidPrefixLen]
			seq, n := binary.Uvarint(v[cidPrefixLen:])
			if n <= 0 {
				return false, fmt.Errorf("%w: CID index run %s", ErrCorrupt, key)
			}
			v = v[cidPrefixLen+n:]
			if bytes.Equal(p, digest[:cidPrefixLen]) {
				more, err := fn(seq)
				if err != nil || !more {
					stop = true
					return false, err
				}
			}
		}
		return true, nil
	})
	if err != nil || stop {
		return err
	}
	l.indexer.mu.Lock()
	var seqs []uint64
	prefix := binary.BigEndian.Uint64(digest)
	for _, g := range l.indexer.segments() {
		for _, cp := range g.cids {
			if cp.prefix == prefix {
				seqs = append(seqs, cp.seq)
			}
		}
	}
	l.indexer.mu.Unlock()
	for _, s := range seqs {
		if more, err := fn(s); err != nil || !more {
			return err
		}
	}
	return nil
}

// Lookup calls fn, in ascending order, with the seq of every durable entry
// in [from, to) whose index ix has the given value, until fn returns false.
func (l *Ledger) Lookup(ctx context.Context, ix Index, value string, from, to uint64, fn func(seq uint64) bool) error {
	size := uint64(l.Size())
	if to > size {
		to = size
	}
	if from >= to {
		return nil
	}
	// Take the buffered postings before reading the store: a segment
	// written meanwhile is then seen twice (and skipped the second time),
	// never missed.
	buffered := l.indexer.buffered(ix, value)
	stop := false
	last, any := uint64(0), false
	emit := func(s uint64) bool {
		if any && s <= last {
			return true
		}
		last, any = s, true
		if s >= to {
			stop = true
			return false
		}
		if s >= from && !fn(s) {
			stop = true
			return false
		}
		return true
	}
	prefix := postingPrefix(ix, value)
	err := queryPrefix(ctx, l.store, prefix, false, func(key string, v []byte) (bool, error) {
		if _, err := strconv.ParseUint(key[strings.LastIndexByte(key, '/')+1:], 16, 64); err != nil {
			return false, fmt.Errorf("%w: posting key %s", ErrCorrupt, key)
		}
		prev := uint64(0)
		for len(v) > 0 {
			d, n := binary.Uvarint(v)
			if n <= 0 {
				return false, fmt.Errorf("%w: posting %s", ErrCorrupt, key)
			}
			v = v[n:]
			prev += d
			if !emit(prev) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil || stop {
		return err
	}
	for _, s := range buffered {
		if !emit(s) {
			break
		}
	}
	return nil
}

// IndexValues lists the values of an index with their entry counts, over
// the durable entries. It reads every posting of the index; use it for
// listings (e.g. the data subjects), not on a hot path.
func (l *Ledger) IndexValues(ctx context.Context, ix Index) (map[string]int, error) {
	out := map[string]int{}
	size := uint64(l.Size())
	// As in Lookup: the buffered postings first, then the store; a seq seen
	// in both is counted once (postings are in seq order, so a buffered seq
	// not above the value's newest stored one is a repeat).
	buffered := map[string][]uint64{}
	l.indexer.mu.Lock()
	for _, g := range l.indexer.segments() {
		if ix == ByGrant {
			for n, seqs := range g.grants {
				v := strconv.FormatUint(n, 10)
				buffered[v] = append(buffered[v], seqs...)
			}
			continue
		}
		for v, seqs := range g.postings(ix) {
			buffered[v] = append(buffered[v], seqs...)
		}
	}
	l.indexer.mu.Unlock()
	newest := map[string]uint64{}
	err := queryPrefix(ctx, l.store, "/i/"+string(ix), false, func(key string, v []byte) (bool, error) {
		parts := strings.Split(key, "/")
		if len(parts) != 5 {
			return false, fmt.Errorf("%w: posting key %s", ErrCorrupt, key)
		}
		val, err := base64.RawURLEncoding.DecodeString(parts[3])
		if err != nil {
			return false, fmt.Errorf("%w: posting key %s", ErrCorrupt, key)
		}
		prev := uint64(0)
		for len(v) > 0 {
			d, n := binary.Uvarint(v)
			if n <= 0 {
				return false, fmt.Errorf("%w: posting %s", ErrCorrupt, key)
			}
			v = v[n:]
			prev += d
			if prev < size {
				out[string(val)]++
				newest[string(val)] = prev
			}
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	for v, seqs := range buffered {
		n, stored := newest[v]
		for _, s := range seqs {
			if s < size && (!stored || s > n) {
				out[v]++
			}
		}
	}
	return out, nil
}
