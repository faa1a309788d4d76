package ledger

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Sentinel errors callers branch on.
var (
	ErrClosed   = errors.New("ledger closed")
	ErrReadOnly = errors.New("ledger opened read-only")
	ErrNotFound = errors.New("not on the ledger")
	ErrCorrupt  = errors.New("ledger corrupt")
	// ErrFailed is returned once a batch could not be written: the
	// ledger stops accepting entries and must be reopened, which recovers
	// the last durable batch.
	ErrFailed = errors.New("ledger failed")
)

// Options configure a ledger. The zero value of every field but Key works.
type Options struct {
	// Origin names the ledger in its checkpoints and is its signing key's
	// name, e.g. "osmose/cambridge-pembroke". Default "osmose".
	Origin string
	// Key signs checkpoints. Without it the ledger is read-only.
	Key ed25519.PrivateKey
	// Rand supplies the randomness of pseudonyms and subject secrets.
	// Default crypto/rand; the simulator passes a seeded source.
	Rand io.Reader
	// GenesisTime is the logical time of the genesis entry.
	GenesisTime int64
	// MaxBatch bounds the entries of one group commit. Default 4096.
	MaxBatch int
	// MaxBatchBytes bounds the bytes of one group commit. Default 4 MiB.
	MaxBatchBytes int
	// MaxPending bounds the entries appended but not yet durable; an
	// appender beyond it waits. Default 16384.
	MaxPending int
	// CheckpointEvery stores a signed checkpoint whenever the tree size
	// reaches a multiple of it. Default 65536.
	CheckpointEvery int64
	// IndexEvery is how many entries the indexes buffer in memory before
	// they are written; entries past the last write are re-indexed from
	// their envelopes on open. Default 16384.
	IndexEvery int
	// Reindex drops every stored index and rebuilds them all from the
	// envelopes while opening. It needs Key.
	Reindex bool
	// Logger receives the ledger's rare operational messages.
	Logger *slog.Logger
	// MeterProvider receives the ledger's metrics (see newMetrics): how
	// long entries wait to be durable, how long syncs take, how many
	// entries a group commit holds and how many are pending. Nil: none.
	MeterProvider metric.MeterProvider
}

func (o *Options) fill() error {
	if o.Origin == "" {
		o.Origin = "osmose"
	}
	if len(o.Origin) > 200 {
		return errors.New("origin longer than 200 bytes")
	}
	for _, r := range o.Origin {
		if r <= ' ' || r == '+' || r > '~' {
			return fmt.Errorf("origin %q: only printable ASCII without spaces or '+'", o.Origin)
		}
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 4096
	}
	if o.MaxBatchBytes <= 0 {
		o.MaxBatchBytes = 4 << 20
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 16384
	}
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = 65536
	}
	if o.IndexEvery <= 0 {
		o.IndexEvery = 16384
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Ledger is an append-only, verifiable log of envelopes over a Store.
// Its methods are safe for concurrent use.
type Ledger struct {
	store  Store
	opts   Options
	meta   Meta
	signer *ed25519Signer
	verify note.Verifier
	tiles  *tileStore
	salt   []byte // secret key of non-personal body salts

	slots chan struct{} // one per pending entry: backpressure
	wake  chan struct{}

	mu         sync.Mutex
	queue      []*Pending
	queuedAt   time.Time // when the queue last became non-empty (metrics)
	nextSeq    uint64
	closing    bool
	forgetting map[string]bool // pseudonyms being or already forgotten: Append refuses them

	pmu      sync.Mutex // serialises the creation of pseudonyms
	forgetMu sync.Mutex // serialises erasures
	// forgets counts the subjects forgotten, so that the encoder drops its
	// cached salters (and their secrets) after each.
	forgets   atomic.Uint64
	saltersAt uint64 // forgets when salters was last cleared; encoder only

	// Owned by the encoder goroutine.
	prev     cid.Cid
	tree     *treeBuilder
	indexer  *indexer
	flushing *indexFlush

	committed chan *batch // from the encoder, to be synced
	stopped   chan struct{}
	failed    atomic.Pointer[error]
	subjects  sync.Map           // pseudonym -> secret []byte
	idCache   sync.Map           // string(idHash) -> pseudonym, of ids looked up
	saltMAC   *salter            // salts of non-personal bodies; encoder only
	scratch   []byte             // the encoder's reusable buffer
	salters   map[string]*salter // salts of personal bodies by pseudonym; encoder only

	metrics *metrics

	dmu      sync.Mutex
	durable  state
	advanced chan struct{} // closed and replaced when durable advances
	cpCache  *Checkpoint
}

// state is the durable head of the ledger.
type state struct {
	size int64
	root tlog.Hash
	last cid.Cid
}

// Meta is the ledger's description, stored at creation and in the genesis
// entry's params body.
type Meta struct {
	Format   int    `json:"format"`
	Origin   string `json:"origin"`
	Verifier string `json:"verifier"` // note verifier key of the checkpoint signer
}

// Store keys. Seqs and sizes are fixed-width hex so keys sort in order.
var (
	keyMeta    = ds.RawKey("/l/meta")
	keyHead    = ds.RawKey("/l/head")
	keyIndexed = ds.RawKey("/l/indexed")
)

// appendHex16 appends v as 16 lower-case hex digits.
func appendHex16(b []byte, v uint64) []byte {
	const digits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, digits[(v>>uint(shift))&0xf])
	}
	return b
}

// Entry records are stored in chunks: a run of consecutive records whose
// length is a power of two up to maxChunk and whose first seq is a multiple
// of its length, under /e/<first seq>/<length>. A batch is cut into the
// fewest such runs, so a busy ledger writes one key per up to 64 entries
// and a quiet one a key per entry, and nothing is ever rewritten. The chunk
// holding a seq is found by trying the (at most 7) aligned runs around it.
const maxChunk = 64

func chunkKey(first uint64, n int) ds.Key {
	var b [3 + 16 + 3]byte
	k := appendHex16(append(b[:0], "/e/"...), first)
	k = append(k, '/', "0123456789abcdef"[n>>4], "0123456789abcdef"[n&0xf])
	return ds.RawKey(string(k))
}

// chunks cuts [first, first+n) into aligned power-of-two runs, calling fn
// with each run's first seq and length.
func chunks(first uint64, n int, fn func(first uint64, n int)) {
	end := first + uint64(n)
	for s := first; s < end; {
		size := uint64(maxChunk)
		for size > 1 && (s%size != 0 || s+size > end) {
			size /= 2
		}
		fn(s, int(size))
		s += size
	}
}

func personalKey(subject string, seq uint64) ds.Key {
	b := make([]byte, 0, 3+len(subject)+3+16)
	b = append(append(append(b, "/p/"...), subject...), "/b/"...)
	return ds.RawKey(string(appendHex16(b, seq)))
}
func subjectPrefix(subject string) string { return "/p/" + subject + "/" }
func checkpointKey(size int64) ds.Key     { return ds.RawKey(fmt.Sprintf("/k/%016x", size)) }

// Open opens the ledger in store, creating it (with its genesis entry) if
// the store is empty and opts.Key is set. It recovers to the last durable
// batch. The ledger does not own the store: close the store after the
// ledger.
func Open(ctx context.Context, store Store, opts Options) (*Ledger, error) {
	if err := opts.fill(); err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	l := &Ledger{
		store:      store,
		opts:       opts,
		tiles:      newTileStore(store),
		slots:      make(chan struct{}, opts.MaxPending),
		wake:       make(chan struct{}, 1),
		committed:  make(chan *batch, 16),
		forgetting: map[string]bool{},
		stopped:    make(chan struct{}),
		advanced:   make(chan struct{}),
	}
	if opts.Key != nil {
		s, v, err := newSigner(opts.Origin, opts.Key)
		if err != nil {
			return nil, fmt.Errorf("open ledger: %w", err)
		}
		l.signer, l.verify = s, v
		m := hmac.New(sha256.New, opts.Key.Seed())
		m.Write([]byte("osmose ledger body salt v1"))
		l.salt = m.Sum(nil)
		l.saltMAC = newSalter(l.salt)
		l.salters = map[string]*salter{}
	}
	raw, err := store.Get(ctx, keyMeta)
	switch {
	case errors.Is(err, ds.ErrNotFound):
		if l.signer == nil {
			return nil, fmt.Errorf("open ledger: %w (no ledger metadata)", ErrNotLedger)
		}
		if err := l.create(ctx); err != nil {
			return nil, fmt.Errorf("open ledger: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("open ledger: read metadata: %w", err)
	default:
		if err := json.Unmarshal(raw, &l.meta); err != nil || l.meta.Format != FormatVersion {
			return nil, fmt.Errorf("open ledger: %w: unreadable metadata (format %d)", ErrNotLedger, l.meta.Format)
		}
		if l.signer != nil {
			if l.meta.Origin != opts.Origin {
				return nil, fmt.Errorf("open ledger: origin is %q, not %q", l.meta.Origin, opts.Origin)
			}
			vk, _ := VerifierKey(opts.Origin, opts.Key.Public().(ed25519.PublicKey))
			if vk != l.meta.Verifier {
				return nil, errors.New("open ledger: the ledger was created with another key")
			}
		} else {
			v, err := note.NewVerifier(l.meta.Verifier)
			if err != nil {
				return nil, fmt.Errorf("open ledger: %w: bad verifier key in metadata", ErrCorrupt)
			}
			l.verify = v
		}
	}
	if err := l.recover(ctx); err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	if l.signer != nil {
		if l.metrics, err = newMetrics(opts.MeterProvider, l.pending); err != nil {
			return nil, fmt.Errorf("open ledger: metrics: %w", err)
		}
		go l.encodeLoop()
		go l.syncLoop()
	} else {
		close(l.stopped)
	}
	return l, nil
}

// create writes the genesis entry and metadata of a new ledger.
func (l *Ledger) create(ctx context.Context) error {
	vk, err := VerifierKey(l.opts.Origin, l.opts.Key.Public().(ed25519.PublicKey))
	if err != nil {
		return err
	}
	l.meta = Meta{Format: FormatVersion, Origin: l.opts.Origin, Verifier: vk}
	metaJSON, err := json.Marshal(l.meta)
	if err != nil {
		return err
	}
	l.tree = newTreeBuilder()
	l.indexer = newIndexer()
	g := &Pending{entry: Entry{Kind: KindGenesis, Time: l.opts.GenesisTime, Params: metaJSON}, seq: 0}
	b := l.encode([]*Pending{g})
	b.puts = append(b.puts, kv{keyMeta, metaJSON})
	if err := l.writeBatch(ctx, b); err != nil {
		return fmt.Errorf("write genesis: %w", err)
	}
	return nil
}

// recover loads the durable head and rebuilds the in-memory edge of the
// tree and the unflushed index postings.
func (l *Ledger) recover(ctx context.Context) error {
	raw, err := l.store.Get(ctx, keyHead)
	if err != nil {
		return fmt.Errorf("%w: no head record: %v", ErrCorrupt, err)
	}
	st, err := decodeHead(raw)
	if err != nil {
		return err
	}
	// A writable ledger appends to the tree's stored edge, so it must be
	// sound; a read-only one need not, and Verify then names the first
	// entry the stored tree disagrees with.
	l.tree, err = restoreTreeBuilder(st.size, l.tiles, l.tiles.tile)
	if err == nil {
		if root, rerr := l.tree.root(); rerr != nil || root != st.root {
			err = fmt.Errorf("%w: stored tiles do not give the head's root at size %d", ErrCorrupt, st.size)
		}
	}
	if err != nil && l.signer != nil {
		return fmt.Errorf("restore tree: %w", err)
	}
	l.prev = st.last
	l.nextSeq = uint64(st.size)
	l.durable = st
	l.indexer = newIndexer()
	indexed := uint64(0)
	if l.opts.Reindex {
		if l.signer == nil {
			return fmt.Errorf("rebuild indexes: %w", ErrReadOnly)
		}
		if err := l.dropIndexes(ctx); err != nil {
			return fmt.Errorf("rebuild indexes: %w", err)
		}
	} else if raw, err := l.store.Get(ctx, keyIndexed); err == nil && len(raw) == 8 {
		indexed = binary.BigEndian.Uint64(raw)
	}
	l.indexer.flushedTo = indexed
	err = l.scan(ctx, indexed, uint64(st.size), func(r *Record) (bool, error) {
		l.indexer.add(r.Envelope, r.CID)
		// A long tail (a rebuild) is written as it goes, so memory
		// stays bounded; a read-only ledger keeps it in memory.
		if l.signer != nil && l.indexer.pending() >= l.opts.IndexEvery {
			g := l.indexer.freeze(r.Envelope.Seq + 1)
			if err := l.writeIndexSegment(ctx, g); err != nil {
				return false, err
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("re-index: %w", err)
	}
	return nil
}

// writeIndexSegment writes a frozen index segment on its own.
func (l *Ledger) writeIndexSegment(ctx context.Context, g *segment) error {
	txn, err := l.store.NewTransaction(ctx, false)
	if err != nil {
		return err
	}
	defer txn.Discard(ctx)
	for _, p := range g.puts() {
		if err := txn.Put(ctx, p.key, p.value); err != nil {
			return err
		}
	}
	if err := txn.Commit(ctx); err != nil {
		return err
	}
	l.indexer.written(g)
	return nil
}

// dropIndexes deletes every stored index posting, so that recover rebuilds
// them all from the envelopes.
func (l *Ledger) dropIndexes(ctx context.Context) error {
	var keys []ds.Key
	for _, prefix := range []string{"/i", "/c"} {
		if err := queryPrefix(ctx, l.store, prefix, true, func(k string, _ []byte) (bool, error) {
			keys = append(keys, ds.RawKey(k))
			return true, nil
		}); err != nil {
			return err
		}
	}
	keys = append(keys, keyIndexed)
	for len(keys) > 0 {
		n := min(len(keys), 10000)
		txn, err := l.store.NewTransaction(ctx, false)
		if err != nil {
			return err
		}
		for _, k := range keys[:n] {
			if err := txn.Delete(ctx, k); err != nil {
				txn.Discard(ctx)
				return err
			}
		}
		if err := txn.Commit(ctx); err != nil {
			return err
		}
		keys = keys[n:]
	}
	return l.store.Sync(ctx, ds.RawKey("/"))
}

func encodeHead(st state) []byte {
	b := make([]byte, 0, 8+32+40)
	b = binary.BigEndian.AppendUint64(b, uint64(st.size))
	b = append(b, st.root[:]...)
	return append(b, st.last.Bytes()...)
}

func decodeHead(b []byte) (state, error) {
	if len(b) < 40 {
		return state{}, fmt.Errorf("%w: head record of %d bytes", ErrCorrupt, len(b))
	}
	st := state{size: int64(binary.BigEndian.Uint64(b))}
	copy(st.root[:], b[8:40])
	c, err := cid.Cast(b[40:])
	if err != nil || st.size <= 0 {
		return state{}, fmt.Errorf("%w: head record unreadable", ErrCorrupt)
	}
	st.last = c
	return st, nil
}

// Meta returns the ledger's description.
func (l *Ledger) Meta() Meta { return l.meta }

// Verifier returns the verifier of the ledger's checkpoints.
func (l *Ledger) Verifier() note.Verifier { return l.verify }

// Pending is an appended entry on its way to disk.
type Pending struct {
	entry Entry
	seq   uint64
	cid   cid.Cid
	// Built by the encoder: the body blocks and their CIDs.
	blocks   [2][]byte
	bodyCIDs [2]cid.Cid
	err      error
	slot     bool // holds room in the ledger (AppendNow may go beyond)

	// Most entries are settled before anyone asks for Done (a kernel
	// waits for a call's return entry, not its call entry), so the
	// channel is made only for those asked about before.
	mu      sync.Mutex
	settled bool          // durable or failed: err is final
	done    chan struct{} // made by Done; closed when settled
}

// closed is the Done of every settled entry no one waited for.
var closed = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// settle records that the entry is durable (err nil) or failed, and
// wakes its waiters.
func (p *Pending) settle(err error) {
	p.mu.Lock()
	p.err, p.settled = err, true
	if p.done != nil {
		close(p.done)
	}
	p.mu.Unlock()
}

// Seq returns the entry's sequence number, fixed when it was appended.
func (p *Pending) Seq() uint64 { return p.seq }

// Done is closed when the entry is durable or has failed.
func (p *Pending) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		if p.settled {
			return closed
		}
		p.done = make(chan struct{})
	}
	return p.done
}

// Err returns nil once the entry is durable, or why it failed. It is valid
// only after Done is closed.
func (p *Pending) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// CID returns the entry's envelope CID; valid after Done is closed with no
// error.
func (p *Pending) CID() cid.Cid { return p.cid }

// Wait blocks until the entry is durable, it fails, or ctx ends. An entry
// whose wait was cancelled may still become durable.
func (p *Pending) Wait(ctx context.Context) error {
	select {
	case <-p.Done():
		return p.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Append adds e to the ledger and returns at once with its sequence
// number; the entry joins the next group commit. Append blocks only when
// MaxPending entries are already waiting to be durable (backpressure), and
// then no longer than ctx allows. The caller must not modify e's bodies
// until the entry is done.
func (l *Ledger) Append(ctx context.Context, e Entry) (*Pending, error) {
	if l.signer == nil {
		return nil, ErrReadOnly
	}
	if err := l.Reserve(ctx); err != nil {
		return nil, err
	}
	return l.AppendReserved(e)
}

// Reserve waits, no longer than ctx allows, until fewer than MaxPending
// entries are waiting to be durable, and takes room for one more: the
// next AppendReserved uses it. A caller that appends under a lock of its
// own reserves first, outside the lock, so that the lock is never held
// waiting for the disk.
func (l *Ledger) Reserve(ctx context.Context) error {
	select {
	case l.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TryReserve is Reserve that never waits: it reports whether there was
// room.
func (l *Ledger) TryReserve() bool {
	select {
	case l.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// Unreserve gives back room taken by Reserve or TryReserve and not used.
func (l *Ledger) Unreserve() { <-l.slots }

// AppendReserved is Append with room already taken by Reserve or
// TryReserve; the room is used, or given back if e is refused. It does
// not wait for the disk, except to read a subject's secret the first time
// the subject appears since the ledger was opened.
func (l *Ledger) AppendReserved(e Entry) (*Pending, error) {
	return l.append(e, true)
}

// AppendNow is Append that never waits for room: when MaxPending entries
// are already waiting, e is taken all the same, beyond the bound. It is
// for a caller that must not wait inside a critical section of its own
// and that waited for room (WaitRoom) before entering it, which keeps the
// excess to the entries such sections append at once.
func (l *Ledger) AppendNow(e Entry) (*Pending, error) {
	return l.append(e, l.TryReserve())
}

// WaitRoom waits, no longer than ctx allows, until fewer than MaxPending
// entries are waiting to be durable, and takes nothing.
func (l *Ledger) WaitRoom(ctx context.Context) error {
	if err := l.Reserve(ctx); err != nil {
		return err
	}
	l.Unreserve()
	return nil
}

// append queues e; slot says whether it holds room (given back when it
// is done, or at once if e is refused).
func (l *Ledger) append(e Entry, slot bool) (*Pending, error) {
	refuse := func(err error) (*Pending, error) {
		if slot {
			<-l.slots
		}
		return nil, err
	}
	if l.signer == nil {
		return refuse(ErrReadOnly)
	}
	if err := validateEntry(&e); err != nil {
		return refuse(err)
	}
	if e.Subject != "" {
		if _, ok := l.subjects.Load(e.Subject); !ok {
			l.mu.Lock()
			forgotten := l.forgetting[e.Subject]
			l.mu.Unlock()
			if forgotten {
				return refuse(fmt.Errorf("%w: %s", ErrForgotten, e.Subject))
			}
			if err := l.loadSubject(context.Background(), e.Subject); err != nil {
				return refuse(err)
			}
		}
	}
	p := &Pending{entry: e, slot: slot}
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return refuse(ErrClosed)
	}
	if f := l.failed.Load(); f != nil {
		l.mu.Unlock()
		return refuse(*f)
	}
	if e.Subject != "" && l.forgetting[e.Subject] {
		l.mu.Unlock()
		return refuse(fmt.Errorf("%w: %s", ErrForgotten, e.Subject))
	}
	p.seq = l.nextSeq
	l.nextSeq++
	l.queue = append(l.queue, p)
	first := len(l.queue) == 1
	if first {
		l.queuedAt = time.Now()
	}
	l.mu.Unlock()
	if first {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
	return p, nil
}

// Commit appends e and waits until it is durable.
func (l *Ledger) Commit(ctx context.Context, e Entry) (uint64, cid.Cid, error) {
	p, err := l.Append(ctx, e)
	if err != nil {
		return 0, cid.Undef, err
	}
	if err := p.Wait(ctx); err != nil {
		return p.seq, cid.Undef, err
	}
	return p.seq, p.cid, nil
}

// take returns the next batch of queued entries and when the queue they
// were taken from became non-empty (no later than the first of them was
// queued: for entries left behind by MaxBatch, earlier), waiting for
// one; nil means the ledger is closing and the queue is empty.
func (l *Ledger) take() ([]*Pending, time.Time) {
	for {
		l.mu.Lock()
		if n := len(l.queue); n > 0 {
			if n > l.opts.MaxBatch {
				n = l.opts.MaxBatch
			}
			items := l.queue[:n:n]
			since := l.queuedAt
			l.queue = l.queue[n:]
			if len(l.queue) == 0 {
				l.queue = nil
			}
			l.mu.Unlock()
			return items, since
		}
		closing := l.closing
		l.mu.Unlock()
		if closing {
			return nil, time.Time{}
		}
		<-l.wake
	}
}

// encodeLoop encodes what is queued and commits it, one batch at a time,
// and hands each batch to the sync loop. Commits and syncs overlap: while
// one sync runs, the next batches are encoded and committed, and one sync
// then makes every batch committed before it durable.
func (l *Ledger) encodeLoop() {
	defer close(l.committed)
	ctx := context.Background()
	for {
		items, since := l.take()
		if items == nil {
			return
		}
		// Split by bytes so one batch stays one store transaction.
		for len(items) > 0 {
			n, bytes := 0, 0
			for n < len(items) && (n == 0 || bytes+entrySize(&items[n].entry) <= l.opts.MaxBatchBytes) {
				bytes += entrySize(&items[n].entry)
				n++
			}
			b := l.encode(items[:n])
			b.since = since
			if f := l.failed.Load(); f != nil {
				b.err = *f
			} else if err := l.commitBatch(ctx, b); err != nil {
				b.err = l.fail(err)
			}
			l.committed <- b
			items = items[n:]
		}
	}
}

// entrySize estimates the stored size of an entry's record: its envelope
// (fixed fields and three 41-byte links) and body blocks (salt and
// framing).
func entrySize(e *Entry) int {
	return 256 + len(e.Actor) + len(e.Device) + len(e.Subject) + len(e.Reason) + len(e.Params) + len(e.Result) + 2*32
}

type kv struct {
	key   ds.Key
	value []byte
}

// batch is one group commit: the entries and every write they make.
type batch struct {
	err      error // the commit's failure
	items    []*Pending
	puts     []kv
	state    state
	segments []*segment // index segments the batch writes
	since    time.Time  // when its first entry was queued (metrics)
}

// indexFlush is a frozen index segment whose writes are being prepared.
type indexFlush struct {
	seg  *segment
	puts chan []kv
}

// encode turns queued entries into envelopes, body blocks, tree hashes and
// index postings, in seq order. It runs on the encoder goroutine only.
func (l *Ledger) encode(items []*Pending) *batch {
	b := &batch{items: items, puts: make([]kv, 0, len(items)/16+16)}
	if len(items) == 0 {
		return b
	}
	// Plan the chunks, then write each record, framed, straight into its
	// chunk's buffer.
	first := items[0].seq
	type chunk struct {
		start uint64
		n     int
		buf   []byte
	}
	var plan []chunk
	chunks(first, len(items), func(start uint64, n int) {
		size := 0
		for _, p := range items[start-first : start-first+uint64(n)] {
			size += entrySize(&p.entry)
		}
		plan = append(plan, chunk{start, n, make([]byte, 0, size)})
	})
	if g := l.forgets.Load(); g != l.saltersAt {
		clear(l.salters) // a forgotten subject's secret leaves memory too
		l.saltersAt = g
	}
	// Body blocks depend only on their entry, so two goroutines build them.
	if len(items) >= 256 {
		half := len(items) / 2
		done := make(chan struct{})
		go func() {
			defer close(done)
			buildBodies(items[half:], newSalter(l.salt), map[string]*salter{}, &l.subjects)
		}()
		buildBodies(items[:half], l.saltMAC, l.salters, &l.subjects)
		<-done
	} else {
		buildBodies(items, l.saltMAC, l.salters, &l.subjects)
	}
	ci := 0
	cidb := new(cidBuf)
	scratch := l.scratch[:0]
	for _, p := range items {
		e := &p.entry
		env := Envelope{
			Version: FormatVersion, Seq: p.seq, Prev: l.prev, Kind: e.Kind, Actor: e.Actor,
			Grant: e.Grant, Device: e.Device, Subject: e.Subject, Interface: e.Interface,
			Method: e.Method, Decision: e.Decision, Reason: e.Reason, Ref: e.Ref, Time: e.Time,
		}
		bodies := p.blocks
		env.Params, env.Result = p.bodyCIDs[0], p.bodyCIDs[1]
		scratch = appendEnvelope(scratch[:0], &env)
		envBytes := scratch
		d := sha256.Sum256(envBytes)
		c := cidb.cid(d[:])
		p.cid = c
		// The record: the envelope, then the bodies that are not personal.
		personal := e.Subject != ""
		recLen := frameLen(len(envBytes))
		if !personal && (bodies[0] != nil || bodies[1] != nil) {
			recLen += frameLen(len(bodies[0])) + frameLen(len(bodies[1]))
		}
		if p.seq >= plan[ci].start+uint64(plan[ci].n) {
			ci++
		}
		cb := plan[ci].buf
		cb = binary.AppendUvarint(cb, uint64(recLen))
		cb = appendFrame(cb, envBytes)
		if !personal {
			cb = appendFrames(cb, bodies)
		}
		plan[ci].buf = cb
		if personal && (bodies[0] != nil || bodies[1] != nil) {
			b.puts = append(b.puts, kv{personalKey(e.Subject, p.seq), personalValue(bodies)})
		}
		l.tree.append(leafHash(cidb[:]))
		if l.tree.size%l.opts.CheckpointEvery == 0 {
			if kvs, err := l.checkpointPut(); err == nil {
				b.puts = append(b.puts, kvs)
			} else {
				l.opts.Logger.Error("ledger: checkpoint", "size", l.tree.size, "err", err)
			}
		}
		l.indexer.add(&env, c)
		l.prev = c
		// The caller may hold the Pending long after; drop the bytes.
		p.entry.Params, p.entry.Result, p.blocks = nil, nil, [2][]byte{}
	}
	l.scratch = scratch
	for _, c := range plan {
		b.puts = append(b.puts, kv{chunkKey(c.start, c.n), c.buf})
	}
	for _, t := range l.tree.takeDirty() {
		b.puts = append(b.puts, t.put())
	}
	root, err := l.tree.root()
	if err != nil {
		panic(err) // the edge always serves its own root
	}
	b.state = state{size: l.tree.size, root: root, last: l.prev}
	b.puts = append(b.puts, kv{keyHead, encodeHead(b.state)})
	// Index postings: a full live segment is frozen and turned into writes
	// on another goroutine; the first batch after they are ready carries
	// them.
	if l.flushing == nil && l.indexer.pending() >= l.opts.IndexEvery {
		g := l.indexer.freeze(uint64(l.tree.size))
		ch := make(chan []kv, 1)
		go func() { ch <- g.puts() }()
		l.flushing = &indexFlush{g, ch}
	}
	if l.flushing != nil {
		select {
		case puts := <-l.flushing.puts:
			b.puts = append(b.puts, puts...)
			b.segments = append(b.segments, l.flushing.seg)
			l.flushing = nil
		default:
		}
	}
	return b
}

// buildBodies builds the salted body blocks of items and their CIDs.
// salters caches the salters of data subjects, whose secrets are in
// subjects.
func buildBodies(items []*Pending, s *salter, salters map[string]*salter, subjects *sync.Map) {
	size := 0
	for _, p := range items {
		size += len(p.entry.Params) + len(p.entry.Result) + 2*(saltSize+16)
	}
	arena := make([]byte, 0, size)
	cb := new(cidBuf)
	for _, p := range items {
		e := &p.entry
		if e.Params == nil && e.Result == nil {
			continue
		}
		es := s
		if e.Subject != "" {
			if es = salters[e.Subject]; es == nil {
				v, _ := subjects.Load(e.Subject)
				es = newSalter(v.([]byte))
				salters[e.Subject] = es
			}
		}
		pSalt, rSalt := es.salts(p.seq)
		if e.Params != nil {
			start := len(arena)
			arena = appendBody(arena, e.Params, pSalt)
			p.blocks[0] = arena[start:len(arena):len(arena)]
			p.bodyCIDs[0] = cb.blockCID(p.blocks[0])
		}
		if e.Result != nil {
			start := len(arena)
			arena = appendBody(arena, e.Result, rSalt)
			p.blocks[1] = arena[start:len(arena):len(arena)]
			p.bodyCIDs[1] = cb.blockCID(p.blocks[1])
		}
	}
}

// frameLen is the length of a framed block of n bytes.
func frameLen(n int) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], uint64(n)) + n
}

// checkpointPut signs the tree at its current size for storing.
func (l *Ledger) checkpointPut() (kv, error) {
	root, err := l.tree.root()
	if err != nil {
		return kv{}, err
	}
	cp, err := signCheckpoint(l.signer, l.opts.Origin, l.tree.size, root)
	if err != nil {
		return kv{}, err
	}
	return kv{checkpointKey(l.tree.size), cp.Note}, nil
}

func appendFrame(dst, block []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(block)))
	return append(dst, block...)
}

// appendFrames appends the params and result blocks, each framed; an absent
// block is a zero-length frame, so the positions stay fixed.
func appendFrames(dst []byte, bodies [2][]byte) []byte {
	if bodies[0] == nil && bodies[1] == nil {
		return dst
	}
	dst = appendFrame(dst, bodies[0])
	return appendFrame(dst, bodies[1])
}

// minPersonalValue is the least size of a stored personal value: Badger
// keeps smaller values inline in its LSM tree, where erasure could not find
// their copy in the value log (see docs/erasure.md). Shorter values are
// padded with zeros after their two frames.
const minPersonalValue = 64

func personalValue(bodies [2][]byte) []byte {
	v := appendFrames(make([]byte, 0, minPersonalValue+len(bodies[0])+len(bodies[1])), bodies)
	for len(v) < minPersonalValue {
		v = append(v, 0)
	}
	return v
}

// splitPersonal returns the two body frames of a personal value.
func splitPersonal(v []byte) ([][]byte, error) {
	out := make([][]byte, 0, 2)
	for i := 0; i < 2; i++ {
		n, k := binary.Uvarint(v)
		if k <= 0 || uint64(len(v)-k) < n {
			return nil, fmt.Errorf("%w: bad personal body framing", ErrCorrupt)
		}
		out = append(out, v[k:k+int(n)])
		v = v[k+int(n):]
	}
	for _, b := range v {
		if b != 0 {
			return nil, fmt.Errorf("%w: personal body padding is not zero", ErrCorrupt)
		}
	}
	return out, nil
}

func splitFrames(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return nil, fmt.Errorf("%w: bad record framing", ErrCorrupt)
		}
		out = append(out, b[k:k+int(n)])
		b = b[k+int(n):]
	}
	return out, nil
}

// fail marks the ledger failed with cause and returns the error every
// append gets from now on.
func (l *Ledger) fail(cause error) error {
	err := fmt.Errorf("%w: %v", ErrFailed, cause)
	if l.failed.CompareAndSwap(nil, &err) {
		l.opts.Logger.Error("ledger: batch write failed; reopen to recover", "err", err)
		return err
	}
	return *l.failed.Load()
}

// syncLoop makes committed batches durable, in order: one sync for every
// batch committed before it starts, then their entries are published
// (durable head, indexes) and their waiters told. It stops once the
// encoder has stopped and every batch is through.
func (l *Ledger) syncLoop() {
	defer close(l.stopped)
	in := l.committed
	ctx := context.Background()
	var group []*batch
	var syncFailed error // a sync failed: nothing after it is durable
	for b := range in {
		group = append(group[:0], b)
	more:
		for {
			select {
			case b2, ok := <-in:
				if !ok {
					break more
				}
				group = append(group, b2)
			default:
				break more
			}
		}
		// A batch committed before another's commit failed is synced and
		// published all the same: it is in the store, and would be found
		// there after a reopen.
		start := time.Now()
		if syncFailed == nil {
			if err := l.store.Sync(ctx, ds.RawKey("/")); err != nil {
				syncFailed = l.fail(fmt.Errorf("sync: %w", err))
			}
		}
		end := time.Now()
		syncErr := syncFailed
		if syncErr == nil {
			// Before the waiters are told, so that whoever sees an entry
			// durable finds its batch in the metrics.
			l.metrics.synced(group, start, end)
		}
		for _, b := range group {
			err := b.err
			if err == nil {
				err = syncErr
			}
			if err == nil {
				l.publish(b)
			}
			for _, p := range b.items {
				p.settle(err)
				if p.slot {
					<-l.slots
				}
			}
		}
	}
}

// commitBatch commits one batch as one store transaction (not yet
// synced).
func (l *Ledger) commitBatch(ctx context.Context, b *batch) error {
	txn, err := l.store.NewTransaction(ctx, false)
	if err != nil {
		return err
	}
	defer txn.Discard(ctx)
	for _, p := range b.puts {
		if err := txn.Put(ctx, p.key, p.value); err != nil {
			return fmt.Errorf("put %s: %w", p.key, err)
		}
	}
	if err := txn.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// writeBatch commits one batch and syncs it, outside the pipeline (the
// genesis entry, the close).
func (l *Ledger) writeBatch(ctx context.Context, b *batch) error {
	if err := l.commitBatch(ctx, b); err != nil {
		return err
	}
	if err := l.store.Sync(ctx, ds.RawKey("/")); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	l.publish(b)
	return nil
}

// publish makes a synced batch's entries the durable head.
func (l *Ledger) publish(b *batch) {
	for _, g := range b.segments {
		l.indexer.written(g)
	}
	l.dmu.Lock()
	l.durable = b.state
	close(l.advanced)
	l.advanced = make(chan struct{})
	l.dmu.Unlock()
}

// Head returns the durable head: the number of entries, the tree root and
// the newest envelope's CID.
func (l *Ledger) Head() (size int64, root tlog.Hash, last cid.Cid) {
	l.dmu.Lock()
	defer l.dmu.Unlock()
	return l.durable.size, l.durable.root, l.durable.last
}

// pending returns the number of entries appended and not yet durable.
func (l *Ledger) pending() int64 {
	l.mu.Lock()
	next := int64(l.nextSeq)
	l.mu.Unlock()
	return max(next-l.Size(), 0)
}

// Size returns the number of durable entries.
func (l *Ledger) Size() int64 {
	l.dmu.Lock()
	defer l.dmu.Unlock()
	return l.durable.size
}

// WaitSize blocks until more than size entries are durable or ctx ends, and
// returns the durable size.
func (l *Ledger) WaitSize(ctx context.Context, size int64) (int64, error) {
	for {
		l.dmu.Lock()
		cur, ch := l.durable.size, l.advanced
		l.dmu.Unlock()
		if cur > size {
			return cur, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return cur, ctx.Err()
		case <-l.stopped:
			return l.Size(), ErrClosed
		}
	}
}

// Checkpoint returns a checkpoint of the durable tree: the newest stored
// one on a read-only ledger, a freshly signed one otherwise.
func (l *Ledger) Checkpoint(ctx context.Context) (*Checkpoint, error) {
	l.dmu.Lock()
	st, cached := l.durable, l.cpCache
	l.dmu.Unlock()
	if cached != nil && cached.Size == st.size {
		return cached, nil
	}
	if l.signer == nil {
		cps, err := l.Checkpoints(ctx)
		if err != nil {
			return nil, err
		}
		if len(cps) == 0 {
			return nil, fmt.Errorf("%w: no stored checkpoint", ErrNotFound)
		}
		return cps[len(cps)-1], nil
	}
	cp, err := signCheckpoint(l.signer, l.opts.Origin, st.size, st.root)
	if err != nil {
		return nil, err
	}
	l.dmu.Lock()
	l.cpCache = cp
	l.dmu.Unlock()
	return cp, nil
}

// Checkpoints returns the stored checkpoints in order of size, each
// verified against the ledger's key.
func (l *Ledger) Checkpoints(ctx context.Context) ([]*Checkpoint, error) {
	var out []*Checkpoint
	err := queryPrefix(ctx, l.store, "/k", false, func(key string, v []byte) (bool, error) {
		cp, err := OpenCheckpoint(v, l.verify)
		if err != nil {
			return false, fmt.Errorf("%w: stored checkpoint %s: %v", ErrCorrupt, key, err)
		}
		if checkpointKey(cp.Size).String() != key {
			return false, fmt.Errorf("%w: checkpoint of size %d stored under %s", ErrCorrupt, cp.Size, key)
		}
		out = append(out, cp)
		return true, nil
	})
	return out, err
}

// Close stops accepting entries, waits for every appended entry to be
// durable, writes the indexes and a final checkpoint, and syncs. It does
// not close the store.
func (l *Ledger) Close() error {
	if l.signer == nil {
		return nil
	}
	l.mu.Lock()
	already := l.closing
	l.closing = true
	l.mu.Unlock()
	if already {
		<-l.stopped
		return nil
	}
	select {
	case l.wake <- struct{}{}:
	default:
	}
	<-l.stopped
	if err := l.metrics.reg.Unregister(); err != nil {
		l.opts.Logger.Warn("ledger: unregister metrics", "err", err)
	}
	if f := l.failed.Load(); f != nil {
		return *f
	}
	ctx := context.Background()
	size := l.tree.size
	var puts []kv
	var segs []*segment
	if l.flushing != nil {
		puts = append(puts, <-l.flushing.puts...)
		segs = append(segs, l.flushing.seg)
		l.flushing = nil
	}
	g := l.indexer.freeze(uint64(size))
	puts = append(puts, g.puts()...)
	segs = append(segs, g)
	if size%l.opts.CheckpointEvery != 0 {
		cp, err := l.checkpointPut()
		if err != nil {
			return fmt.Errorf("close ledger: %w", err)
		}
		puts = append(puts, cp)
	}
	root, _ := l.tree.root()
	b := &batch{puts: puts, state: state{size: size, root: root, last: l.prev}, segments: segs}
	if err := l.writeBatch(ctx, b); err != nil {
		return fmt.Errorf("close ledger: %w", err)
	}
	return nil
}

// Record is one entry as read back: its envelope, CID and bodies.
type Record struct {
	Envelope *Envelope
	CID      cid.Cid
	Block    []byte // the envelope's dag-cbor bytes
	// ParamsBlock and ResultBlock are the body blocks, nil when the entry
	// has none or its body has been erased.
	ParamsBlock, ResultBlock []byte
}

// Params returns the params body's data, or nil.
func (r *Record) Params() []byte { return bodyData(r.ParamsBlock) }

// Result returns the result body's data, or nil.
func (r *Record) Result() []byte { return bodyData(r.ResultBlock) }

func bodyData(block []byte) []byte {
	if block == nil {
		return nil
	}
	d, err := DecodeBody(block)
	if err != nil {
		return nil
	}
	return d
}

// Read returns the durable entry at seq.
func (l *Ledger) Read(ctx context.Context, seq uint64) (*Record, error) {
	if int64(seq) >= l.Size() {
		return nil, fmt.Errorf("%w: seq %d (size %d)", ErrNotFound, seq, l.Size())
	}
	return l.readRecord(ctx, seq)
}

// readChunk returns the records of the chunk holding seq and the chunk's
// first seq.
func (l *Ledger) readChunk(ctx context.Context, seq uint64) ([][]byte, uint64, error) {
	for n := maxChunk; n >= 1; n /= 2 {
		first := seq &^ uint64(n-1)
		v, err := l.store.Get(ctx, chunkKey(first, n))
		if errors.Is(err, ds.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		recs, err := splitFrames(v)
		if err != nil || len(recs) != n {
			return nil, 0, fmt.Errorf("%w: seq %d: chunk %d+%d holds %d records", ErrCorrupt, first, first, n, len(recs))
		}
		return recs, first, nil
	}
	return nil, 0, fmt.Errorf("%w: seq %d: envelope missing", ErrCorrupt, seq)
}

func (l *Ledger) readRecord(ctx context.Context, seq uint64) (*Record, error) {
	recs, first, err := l.readChunk(ctx, seq)
	if err != nil {
		return nil, err
	}
	return l.decodeRecord(ctx, seq, recs[seq-first])
}

// scan calls fn with every record in [from, to), in order, reading a chunk
// at a time, until fn returns false or an error.
func (l *Ledger) scan(ctx context.Context, from, to uint64, fn func(*Record) (bool, error)) error {
	for seq := from; seq < to; {
		recs, first, err := l.readChunk(ctx, seq)
		if err != nil {
			return err
		}
		for ; seq < first+uint64(len(recs)) && seq < to; seq++ {
			r, err := l.decodeRecord(ctx, seq, recs[seq-first])
			if err != nil {
				return err
			}
			if more, err := fn(r); err != nil || !more {
				return err
			}
		}
	}
	return nil
}

func (l *Ledger) decodeRecord(ctx context.Context, seq uint64, rec []byte) (*Record, error) {
	frames, err := splitFrames(rec)
	if err != nil || len(frames) == 0 {
		return nil, fmt.Errorf("%w: seq %d: bad record", ErrCorrupt, seq)
	}
	env, err := DecodeEnvelope(frames[0])
	if err != nil {
		return nil, fmt.Errorf("%w: seq %d: %v", ErrCorrupt, seq, err)
	}
	if env.Seq != seq {
		return nil, fmt.Errorf("%w: seq %d holds the envelope of seq %d", ErrCorrupt, seq, env.Seq)
	}
	r := &Record{Envelope: env, CID: blockCID(frames[0]), Block: frames[0]}
	bodies := frames[1:]
	if env.Subject != "" && (env.Params.Defined() || env.Result.Defined()) {
		pb, err := l.store.Get(ctx, personalKey(env.Subject, seq))
		switch {
		case errors.Is(err, ds.ErrNotFound):
			bodies = nil
		case err != nil:
			return nil, err
		default:
			if bodies, err = splitPersonal(pb); err != nil {
				return nil, fmt.Errorf("seq %d: %w", seq, err)
			}
		}
	}
	if len(bodies) == 2 {
		if len(bodies[0]) > 0 {
			r.ParamsBlock = bodies[0]
		}
		if len(bodies[1]) > 0 {
			r.ResultBlock = bodies[1]
		}
	} else if len(bodies) != 0 {
		return nil, fmt.Errorf("%w: seq %d: %d body frames", ErrCorrupt, seq, len(bodies))
	}
	return r, nil
}

// SeqOf returns the seq of the envelope with CID c.
func (l *Ledger) SeqOf(ctx context.Context, c cid.Cid) (uint64, error) {
	digest, ok := digestOf(c)
	if !ok {
		return 0, fmt.Errorf("%w: %s is not an envelope CID (CIDv1 dag-cbor sha2-256)", ErrNotFound, c)
	}
	var found uint64
	hit := false
	err := l.cidCandidates(ctx, digest, func(seq uint64) (bool, error) {
		if int64(seq) >= l.Size() {
			return true, nil
		}
		r, err := l.readRecord(ctx, seq)
		if err != nil {
			return false, err
		}
		if r.CID.Equals(c) {
			found, hit = seq, true
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return 0, err
	}
	if !hit {
		return 0, fmt.Errorf("%w: %s", ErrNotFound, c)
	}
	return found, nil
}

// ProveInclusion returns the proof that the entry at seq is in the tree of
// the given size.
func (l *Ledger) ProveInclusion(seq uint64, size int64) (tlog.RecordProof, error) {
	if size > l.Size() || int64(seq) >= size {
		return nil, fmt.Errorf("%w: seq %d in a tree of size %d (durable size %d)", ErrNotFound, seq, size, l.Size())
	}
	return tlog.ProveRecord(size, int64(seq), l.tiles)
}

// ProveConsistency returns the proof that the tree of size from is a prefix
// of the tree of size to.
func (l *Ledger) ProveConsistency(from, to int64) (tlog.TreeProof, error) {
	if from <= 0 || from > to || to > l.Size() {
		return nil, fmt.Errorf("%w: sizes %d..%d (durable size %d)", ErrNotFound, from, to, l.Size())
	}
	return tlog.ProveTree(to, from, l.tiles)
}

// TreeHash returns the root of the tree of the given size (≤ Size).
func (l *Ledger) TreeHash(size int64) (tlog.Hash, error) {
	if size <= 0 || size > l.Size() {
		return tlog.Hash{}, fmt.Errorf("%w: tree size %d (durable size %d)", ErrNotFound, size, l.Size())
	}
	return tlog.TreeHash(size, l.tiles)
}

// LeafHash returns the tree leaf hash of an envelope CID, as an auditor
// computes it to check an inclusion proof.
func LeafHash(c cid.Cid) tlog.Hash { return leafHash(c.Bytes()) }

// EncodeProof returns a proof's hashes as base64 text, one per line.
func EncodeProof(hs []tlog.Hash) string {
	var s string
	for _, h := range hs {
		s += base64.StdEncoding.EncodeToString(h[:]) + "\n"
	}
	return s
}
