package ledger

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

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

// indexValues returns the index values an envelope carries.
func indexValues(env *Envelope, f func(Index, string)) {
	if env.Grant != 0 {
		f(ByGrant, strconv.FormatUint(env.Grant, 10))
	}
	if env.Actor != "" {
		f(ByPrincipal, env.Actor)
	}
	if env.Device != "" {
		f(ByDevice, env.Device)
	}
	if env.Subject != "" {
		f(BySubject, env.Subject)
	}
	f(ByKind, string(env.Kind))
}

// Postings are stored as one key per (index, value, flush):
// /i/<index>/<base64url value>/<first seq> -> uvarint deltas of the seqs.
func postingPrefix(ix Index, value string) string {
	return "/i/" + string(ix) + "/" + base64.RawURLEncoding.EncodeToString([]byte(value))
}

// indexer buffers postings in memory between flushes.
type indexer struct {
	mu        sync.Mutex
	buf       map[postingID][]uint64
	count     int
	flushedTo uint64 // every seq below it is in the stored postings
}

type postingID struct {
	ix    Index
	value string
}

func newIndexer() *indexer { return &indexer{buf: map[postingID][]uint64{}} }

func (x *indexer) add(env *Envelope) {
	x.mu.Lock()
	indexValues(env, func(ix Index, v string) {
		id := postingID{ix, v}
		x.buf[id] = append(x.buf[id], env.Seq)
	})
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
	return append([]uint64(nil), x.buf[postingID{ix, value}]...)
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
