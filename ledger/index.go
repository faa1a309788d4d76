package ledger

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"sort"
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

// indexer buffers postings in memory between flushes.
type indexer struct {
	mu        sync.Mutex
	buf       map[postingID][]uint64
	grants    map[uint64][]uint64 // ByGrant, kept apart to skip formatting
	cids      []cidPosting
	count     int
	flushedTo uint64 // every seq below it is in the stored postings
}

// The CID index maps an envelope CID's digest to its seq. Each flush writes
// one run per first digest byte: /c/<2 hex>/<first seq> -> repeated
// (8-byte digest prefix, uvarint seq), sorted by digest. A lookup reads the
// runs of one bucket: 1/256 of the index.
type cidPosting struct {
	prefix [8]byte
	seq    uint64
}

const cidPrefixLen = 8

type postingID struct {
	ix    Index
	value string
}

func newIndexer() *indexer {
	return &indexer{buf: map[postingID][]uint64{}, grants: map[uint64][]uint64{}}
}

// moveGrants formats the buffered grant postings into buf.
func (x *indexer) moveGrants() {
	for g, seqs := range x.grants {
		id := postingID{ByGrant, strconv.FormatUint(g, 10)}
		x.buf[id] = append(x.buf[id], seqs...)
	}
	clear(x.grants)
}

func (x *indexer) add(env *Envelope, c cid.Cid) {
	x.mu.Lock()
	if d, ok := digestOf(c); ok {
		var cp cidPosting
		copy(cp.prefix[:], d)
		cp.seq = env.Seq
		x.cids = append(x.cids, cp)
	}
	if env.Grant != 0 {
		x.grants[env.Grant] = append(x.grants[env.Grant], env.Seq)
	}
	for _, f := range [...]struct {
		ix Index
		v  string
	}{{ByPrincipal, env.Actor}, {ByDevice, env.Device}, {BySubject, env.Subject}, {ByKind, string(env.Kind)}} {
		if f.v != "" {
			id := postingID{f.ix, f.v}
			x.buf[id] = append(x.buf[id], env.Seq)
		}
	}
	x.count++
	x.mu.Unlock()
}

func (x *indexer) pending() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.count
}

// flush appends the buffered postings (in a deterministic order) and the
// new flushed-to mark to puts, and empties the buffer.
func (x *indexer) flush(puts []kv, upTo uint64) []kv {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.moveGrants()
	ids := make([]postingID, 0, len(x.buf))
	for id := range x.buf {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		if ids[i].ix != ids[j].ix {
			return ids[i].ix < ids[j].ix
		}
		return ids[i].value < ids[j].value
	})
	for _, id := range ids {
		seqs := x.buf[id]
		val := make([]byte, 0, 2*len(seqs))
		prev := uint64(0)
		for _, s := range seqs {
			val = binary.AppendUvarint(val, s-prev)
			prev = s
		}
		key := ds.RawKey(fmt.Sprintf("%s/%016x", postingPrefix(id.ix, id.value), seqs[0]))
		puts = append(puts, kv{key, val})
	}
	sort.Slice(x.cids, func(i, j int) bool { return bytes.Compare(x.cids[i].prefix[:], x.cids[j].prefix[:]) < 0 })
	for i := 0; i < len(x.cids); {
		bucket := x.cids[i].prefix[0]
		first := x.cids[i].seq
		var val []byte
		for ; i < len(x.cids) && x.cids[i].prefix[0] == bucket; i++ {
			first = min(first, x.cids[i].seq)
			val = append(val, x.cids[i].prefix[:]...)
			val = binary.AppendUvarint(val, x.cids[i].seq)
		}
		puts = append(puts, kv{ds.RawKey(fmt.Sprintf("/c/%02x/%016x", bucket, first)), val})
	}
	x.cids = nil
	puts = append(puts, kv{keyIndexed, binary.BigEndian.AppendUint64(nil, upTo)})
	x.buf = map[postingID][]uint64{}
	x.count = 0
	x.flushedTo = upTo
	return puts
}

// buffered returns the buffered seqs of one posting list, in order.
func (x *indexer) buffered(ix Index, value string) []uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	if ix == ByGrant {
		out := append([]uint64(nil), x.buf[postingID{ix, value}]...)
		if g, err := strconv.ParseUint(value, 10, 64); err == nil && strconv.FormatUint(g, 10) == value {
			out = append(out, x.grants[g]...)
		}
		return out
	}
	return append([]uint64(nil), x.buf[postingID{ix, value}]...)
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
	for _, cp := range l.indexer.cids {
		if bytes.Equal(cp.prefix[:], digest[:cidPrefixLen]) {
			seqs = append(seqs, cp.seq)
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
	stop := false
	emit := func(s uint64) bool {
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
	for _, s := range l.indexer.buffered(ix, value) {
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
			}
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	l.indexer.mu.Lock()
	l.indexer.moveGrants()
	for id, seqs := range l.indexer.buf {
		if id.ix == ix {
			for _, s := range seqs {
				if s < size {
					out[id.value]++
				}
			}
		}
	}
	l.indexer.mu.Unlock()
	return out, nil
}
