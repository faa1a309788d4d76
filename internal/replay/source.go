package replay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"capnproto.org/go/capnp/v3"
	"github.com/dgraph-io/badger"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"

	"github.com/osmose-os/osmose/ledger"
)

// Entry is one ledger entry as replay reads it.
type Entry struct {
	Env *ledger.Envelope
	// Key is the binary form of the envelope's CID (cid.Cid.KeyString).
	Key string
	// Params and Result are the data of the entry's bodies: nil when the
	// entry links none, or when the body is not there (erased: see
	// ParamsGone and ResultGone).
	Params, Result []byte
	// ParamsGone and ResultGone report a body the envelope links that is
	// not stored.
	ParamsGone, ResultGone bool
	// ResultSalt is the result body's salt, with which replay computes the
	// CID of the result it produced.
	ResultSalt []byte

	env                      ledger.Envelope // Env points here, so an entry is one allocation
	paramsBlock, resultBlock []byte
	args                     capnp.Struct // Params decoded, once (paramsStruct)
	argsRead                 bool
}

// paramsStruct returns the params as a Cap'n Proto struct, decoded once;
// the zero Struct when there are none or they do not decode.
func (e *Entry) paramsStruct() capnp.Struct {
	if !e.argsRead && e.Params != nil {
		e.args, e.argsRead = rootStruct(e.Params), true
	}
	return e.args
}

// CID returns the envelope's CID.
func (e *Entry) CID() cid.Cid {
	c, _ := cid.Cast([]byte(e.Key))
	return c
}

// source yields the entries of a ledger in seq order.
type source interface {
	// next returns the entry at seq, which is one more than the seq of
	// the entry it returned last (0 first).
	next(ctx context.Context, seq uint64) (*Entry, error)
	close()
}

// ErrCorrupt marks a ledger replay could not read: an entry that does not
// decode, a broken prev chain, a body that does not hash to its link.
// `osmose ledger verify` says more.
var ErrCorrupt = errors.New("ledger unreadable")

func corrupt(seq uint64, format string, a ...any) error {
	return fmt.Errorf("%w at seq %d: %s", ErrCorrupt, seq, fmt.Sprintf(format, a...))
}

// apiSource reads entries one at a time through Ledger.Read: the
// reference reader, slower by a factor of five or so than storeSource
// (each Read fetches and splits a whole chunk and decodes with
// go-ipld-prime).
type apiSource struct{ l *ledger.Ledger }

func (s apiSource) next(ctx context.Context, seq uint64) (*Entry, error) {
	r, err := s.l.Read(ctx, seq)
	if err != nil {
		return nil, err
	}
	e := &Entry{Env: r.Envelope, Key: r.CID.KeyString()}
	if err := e.fill(seq, r.ParamsBlock, r.ResultBlock); err != nil {
		return nil, err
	}
	return e, nil
}

func (apiSource) close() {}

// fill sets the entry's bodies from their blocks (nil when absent). It
// checks each block against its link, except for calls and returns, the
// bulk of a ledger, whose blocks verifyBodies checks when replay is about
// to report a divergence on them (a body that does not hash to its link
// is a damaged ledger, not a divergence; osmose ledger verify checks them
// all).
func (e *Entry) fill(seq uint64, pb, rb []byte) error {
	env := e.Env
	e.paramsBlock, e.resultBlock = pb, rb
	lazy := env.Kind == ledger.KindCall || env.Kind == ledger.KindReturn
	check := func(name string, link cid.Cid, block []byte) ([]byte, []byte, bool, error) {
		switch {
		case !link.Defined() && len(block) > 0:
			return nil, nil, false, corrupt(seq, "a %s body the envelope does not link", name)
		case !link.Defined():
			return nil, nil, false, nil
		case len(block) == 0:
			return nil, nil, true, nil
		}
		if !lazy && blockKey(block) != link.KeyString() {
			return nil, nil, false, corrupt(seq, "the %s body does not hash to its link %s", name, link)
		}
		data, salt, err := decodeBody(block)
		if err != nil {
			return nil, nil, false, corrupt(seq, "%s: %v", name, err)
		}
		return data, salt, false, nil
	}
	var err error
	if e.Params, _, e.ParamsGone, err = check("params", env.Params, pb); err != nil {
		return err
	}
	e.Result, e.ResultSalt, e.ResultGone, err = check("result", env.Result, rb)
	return err
}

// verifyBodies checks that the entry's bodies hash to their links.
func (e *Entry) verifyBodies() error {
	for _, b := range [...]struct {
		name  string
		link  cid.Cid
		block []byte
	}{{"params", e.Env.Params, e.paramsBlock}, {"result", e.Env.Result, e.resultBlock}} {
		if len(b.block) > 0 && blockKey(b.block) != b.link.KeyString() {
			return corrupt(e.Env.Seq, "the %s body does not hash to its link %s", b.name, b.link)
		}
	}
	return nil
}

// storeSource reads the ledger's records straight from its store, in key
// order, a chunk (up to 64 entries) at a time, decoding envelopes with
// decodeEnvelope. It relies on the storage layout ledger/doc.go documents
// ("Storage": /e/<first>/<n> chunks of framed records, each the envelope
// block and then its non-personal body blocks; personal bodies under
// /p/<pseudonym>/b/<seq>), checks the prev chain as it goes, and stops at
// the ledger's durable size. decode_test.go checks it against Ledger.Read.
type storeSource struct {
	store  ledger.Store
	size   uint64
	it     chunkIter
	recs   [][]byte // records of the current chunk
	first  uint64   // seq of recs[0]
	prev   string   // binary CID of the previous envelope
	in     interner
	frames [][]byte
}

func newStoreSource(ctx context.Context, store ledger.Store, size uint64) (*storeSource, error) {
	s := &storeSource{store: store, size: size, in: interner{}}
	if bs, ok := store.(*ledger.BadgerStore); ok && bs.Datastore != nil && bs.DB != nil {
		s.it = newBadgerChunks(bs.DB)
		return s, nil
	}
	res, err := store.Query(ctx, dsq.Query{Prefix: "/e", Orders: []dsq.Order{dsq.OrderByKey{}}})
	if err != nil {
		return nil, fmt.Errorf("read the ledger's entries: %w", err)
	}
	s.it = dsChunks{res}
	return s, nil
}

func (s *storeSource) close() { s.it.close() }

// chunkIter yields the stored chunks (/e/...) in key order.
type chunkIter interface {
	next() (key string, value []byte, ok bool, err error)
	close()
}

// dsChunks reads chunks with a datastore query: any Store.
type dsChunks struct{ res dsq.Results }

func (c dsChunks) next() (string, []byte, bool, error) {
	r, ok := c.res.NextSync()
	if !ok {
		return "", nil, false, nil
	}
	return r.Key, r.Value, true, r.Error
}

func (c dsChunks) close() { c.res.Close() }

// badgerChunks reads chunks with a Badger iterator on the reader's own
// goroutine, without the query's goroutines and value prefetching: one
// read of the value log per chunk of up to 64 entries.
type badgerChunks struct {
	txn     *badger.Txn
	it      *badger.Iterator
	started bool
}

var chunkPrefix = []byte("/e/")

func newBadgerChunks(db *badger.DB) *badgerChunks {
	txn := db.NewTransaction(false)
	it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: chunkPrefix})
	return &badgerChunks{txn: txn, it: it}
}

func (c *badgerChunks) next() (string, []byte, bool, error) {
	if !c.started {
		c.it.Seek(chunkPrefix)
		c.started = true
	} else {
		c.it.Next()
	}
	if !c.it.ValidForPrefix(chunkPrefix) {
		return "", nil, false, nil
	}
	item := c.it.Item()
	v, err := item.ValueCopy(nil)
	return string(item.Key()), v, true, err
}

func (c *badgerChunks) close() {
	c.it.Close()
	c.txn.Discard()
}

// chunk reads the next chunk, which must start at seq.
func (s *storeSource) chunk(seq uint64) error {
	key, value, ok, err := s.it.next()
	switch {
	case err != nil:
		return fmt.Errorf("read the ledger's entries at seq %d: %w", seq, err)
	case !ok:
		return corrupt(seq, "no stored chunk holds it")
	}
	first, n, err := parseChunkKey(key)
	if err != nil {
		return corrupt(seq, "chunk key %q: %v", key, err)
	}
	if first != seq {
		return corrupt(seq, "the next stored chunk, %s, starts at seq %d", key, first)
	}
	recs, err := splitFrames(value, nil)
	if err != nil || len(recs) != n {
		return corrupt(seq, "chunk %s holds %d records, want %d", key, len(recs), n)
	}
	s.recs, s.first = recs, first
	return nil
}

// parseChunkKey reads "/e/<16 hex digits>/<2 hex digits>".
func parseChunkKey(k string) (first uint64, n int, err error) {
	if len(k) != 3+16+1+2 || k[:3] != "/e/" || k[19] != '/' {
		return 0, 0, errors.New("not a chunk key")
	}
	first, err = strconv.ParseUint(k[3:19], 16, 64)
	if err != nil {
		return 0, 0, err
	}
	m, err := strconv.ParseUint(k[20:], 16, 8)
	if err != nil || m == 0 || m > 64 || m&(m-1) != 0 || first%m != 0 {
		return 0, 0, errors.New("bad chunk length")
	}
	return first, int(m), nil
}

func (s *storeSource) next(ctx context.Context, seq uint64) (*Entry, error) {
	if seq >= s.size {
		return nil, fmt.Errorf("%w: seq %d (size %d)", ledger.ErrNotFound, seq, s.size)
	}
	if seq < s.first || seq >= s.first+uint64(len(s.recs)) {
		if err := s.chunk(seq); err != nil {
			return nil, err
		}
	}
	frames, err := splitFrames(s.recs[seq-s.first], s.frames)
	s.frames = frames
	if err != nil || (len(frames) != 1 && len(frames) != 3) {
		return nil, corrupt(seq, "bad record framing")
	}
	e := &Entry{}
	env := &e.env
	if err := decodeEnvelope(frames[0], s.in, env); err != nil {
		return nil, corrupt(seq, "%v", err)
	}
	if env.Seq != seq {
		return nil, corrupt(seq, "the record holds the envelope of seq %d", env.Seq)
	}
	key := blockKey(frames[0])
	if env.Seq > 0 && env.Prev.KeyString() != s.prev {
		return nil, corrupt(seq, "its prev link is not the CID of entry %d", seq-1)
	}
	s.prev = key
	e.Env, e.Key = env, key
	var pb, rb []byte
	switch {
	case len(frames) == 3:
		pb, rb = frames[1], frames[2]
	case env.Subject != "" && (env.Params.Defined() || env.Result.Defined()):
		v, err := s.store.Get(ctx, personalKey(env.Subject, seq))
		switch {
		case errors.Is(err, ds.ErrNotFound): // erased
		case err != nil:
			return nil, fmt.Errorf("read the personal bodies of seq %d: %w", seq, err)
		default:
			bodies, err := splitFrames(trimPadding(v), nil)
			if err != nil || len(bodies) != 2 {
				return nil, corrupt(seq, "bad personal body framing")
			}
			pb, rb = bodies[0], bodies[1]
		}
	}
	if err := e.fill(seq, pb, rb); err != nil {
		return nil, err
	}
	return e, nil
}

// trimPadding drops the zeros the ledger pads short personal values with
// (after their two frames).
func trimPadding(v []byte) []byte {
	end := 0
	for i := 0; i < 2 && end < len(v); i++ {
		n, k := binary.Uvarint(v[end:])
		if k <= 0 || uint64(len(v)-end-k) < n {
			return v
		}
		end += k + int(n)
	}
	return v[:end]
}

func personalKey(subject string, seq uint64) ds.Key {
	return ds.RawKey(fmt.Sprintf("/p/%s/b/%016x", subject, seq))
}
