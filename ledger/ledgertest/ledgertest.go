// Package ledgertest is the conformance suite every ledger store passes:
// the Badger store and the in-memory store run the same tests, through the
// ledger, from an appender's and from an auditor's point of view.
//
// A store's test calls Run with a Harness that makes fresh stores and
// reopens them.
package ledgertest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/osmose-os/osmose/ledger"
)

// Harness makes stores for the suite.
type Harness struct {
	// New returns a fresh, empty store; the suite closes it.
	New func(t *testing.T) ledger.Store
	// Reopen closes s and returns a store over the same data.
	Reopen func(t *testing.T, s ledger.Store) ledger.Store
}

// Key returns a fixed test signing key.
func Key(seed byte) ed25519.PrivateKey {
	var s [32]byte
	s[0] = seed
	s[1] = 0x5e
	return ed25519.NewKeyFromSeed(s[:])
}

// Run runs the conformance suite.
func Run(t *testing.T, h Harness) {
	for _, tc := range []struct {
		name string
		f    func(*testing.T, Harness)
	}{
		{"AppendRead", testAppendRead},
		{"Concurrent", testConcurrent},
		{"Proofs", testProofs},
		{"Checkpoints", testCheckpoints},
		{"Reopen", testReopen},
		{"Indexes", testIndexes},
		{"IndexesUnderLoad", testIndexesUnderLoad},
		{"PersonalBodies", testPersonalBodies},
		{"Backpressure", testBackpressure},
		{"WriteFailure", testWriteFailure},
		{"Tamper", testTamper},
		{"BadInput", testBadInput},
		{"Forget", testForget},
		{"ForgetUnderLoad", testForgetUnderLoad},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, h) })
	}
}

func open(t *testing.T, s ledger.Store, o ledger.Options) *ledger.Ledger {
	t.Helper()
	if o.Key == nil {
		o.Key = Key(1)
	}
	l, err := ledger.Open(context.Background(), s, o)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return l
}

// entry returns a deterministic entry for i.
func entry(i int) ledger.Entry {
	e := ledger.Entry{
		Kind:      ledger.KindCall,
		Actor:     fmt.Sprintf("dev:switch-%d", i%7),
		Grant:     uint64(100 + i%5),
		Device:    fmt.Sprintf("b/f1/r%d/light-1", i%3),
		Interface: 0xa1b2c3d4e5f60718,
		Method:    uint16(i % 3),
		Decision:  ledger.DecisionAdmit,
		Time:      int64(i) * 1e6,
		Params:    []byte(fmt.Sprintf("params-%d", i)),
	}
	switch i % 4 {
	case 1:
		e.Result = []byte(fmt.Sprintf("result-%d", i))
	case 2:
		e.Decision, e.Reason, e.Params = ledger.DecisionDeny, "method not granted", nil
	case 3:
		e.Kind, e.Decision, e.Method, e.Interface = ledger.KindGrant, "", 0, 0
	}
	return e
}

func appendAll(t *testing.T, l *ledger.Ledger, from, n int) {
	t.Helper()
	ctx := context.Background()
	ps := make([]*ledger.Pending, 0, n)
	for i := from; i < from+n; i++ {
		p, err := l.Append(ctx, entry(i))
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		ps = append(ps, p)
	}
	for _, p := range ps {
		if err := p.Wait(ctx); err != nil {
			t.Fatalf("wait seq %d: %v", p.Seq(), err)
		}
	}
}

func checkEntry(t *testing.T, l *ledger.Ledger, seq uint64, want ledger.Entry) {
	t.Helper()
	r, err := l.Read(context.Background(), seq)
	if err != nil {
		t.Fatalf("read %d: %v", seq, err)
	}
	env := r.Envelope
	got := ledger.Entry{Kind: env.Kind, Actor: env.Actor, Grant: env.Grant, Device: env.Device, Subject: env.Subject,
		Interface: env.Interface, Method: env.Method, Decision: env.Decision, Reason: env.Reason, Ref: env.Ref,
		Time: env.Time, Params: r.Params(), Result: r.Result()}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("seq %d:\n got %+v\nwant %+v", seq, got, want)
	}
}

func testAppendRead(t *testing.T, h Harness) {
	s := h.New(t)
	defer s.Close()
	l := open(t, s, ledger.Options{})
	defer l.Close()
	ctx := context.Background()
	if l.Size() != 1 {
		t.Fatalf("new ledger has size %d, want 1 (genesis)", l.Size())
	}
	var ps []*ledger.Pending
	for i := 0; i < 300; i++ {
		p, err := l.Append(ctx, entry(i))
		if err != nil {
			t.Fatal(err)
		}
		if p.Seq() != uint64(i+1) {
			t.Fatalf("append %d got seq %d", i, p.Seq())
		}
		ps = append(ps, p)
	}
	for i, p := range ps {
		if err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		checkEntry(t, l, p.Seq(), entry(i))
		r, _ := l.Read(ctx, p.Seq())
		if !r.CID.Equals(p.CID()) {
			t.Fatalf("seq %d: read CID %s, append gave %s", p.Seq(), r.CID, p.CID())
		}
		prev, _ := l.Read(ctx, p.Seq()-1)
		if !r.Envelope.Prev.Equals(prev.CID) {
			t.Fatalf("seq %d: prev %s, want %s", p.Seq(), r.Envelope.Prev, prev.CID)
		}
		seq, err := l.SeqOf(ctx, p.CID())
		if err != nil || seq != p.Seq() {
			t.Fatalf("SeqOf(%s) = %d, %v; want %d", p.CID(), seq, err, p.Seq())
		}
	}
	if _, err := l.Read(ctx, 301); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("read past the end: %v, want ErrNotFound", err)
	}
	g, err := l.Read(ctx, 0)
	if err != nil || g.Envelope.Kind != ledger.KindGenesis {
		t.Fatalf("genesis: %+v, %v", g, err)
	}
	if _, err := l.Verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

func testConcurrent(t *testing.T, h Harness) {
	s := h.New(t)
	defer s.Close()
	l := open(t, s, ledger.Options{MaxBatch: 64, MaxPending: 256})
	ctx := context.Background()
	const workers, each = 16, 250
	var wg sync.WaitGroup
	seqs := make([][]uint64, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				seq, _, err := l.Commit(ctx, entry(w*each+i))
				if err != nil {
					t.Error(err)
					return
				}
				seqs[w] = append(seqs[w], seq)
			}
		}(w)
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for w, ss := range seqs {
		for i, s := range ss {
			if seen[s] {
				t.Fatalf("seq %d given twice", s)
			}
			seen[s] = true
			checkEntry(t, l, s, entry(w*each+i))
			if i > 0 && s <= ss[i-1] {
				t.Fatalf("worker %d: seq %d after %d", w, s, ss[i-1])
			}
		}
	}
	if l.Size() != workers*each+1 {
		t.Fatalf("size %d, want %d", l.Size(), workers*each+1)
	}
	if _, err := l.Verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func testProofs(t *testing.T, h Harness) {
	s := h.New(t)
	defer s.Close()
	l := open(t, s, ledger.Options{})
	defer l.Close()
	ctx := context.Background()
	appendAll(t, l, 0, 1000)
	// The auditor's view: the public key, a checkpoint, and proofs.
	v, err := ledger.NewVerifier("osmose", Key(1).Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	cpOld, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, l, 1000, 777)
	cpRaw, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := ledger.OpenCheckpoint(cpRaw.Note, v)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != l.Size() {
		t.Fatalf("checkpoint size %d, ledger size %d", cp.Size, l.Size())
	}
	maxLen := bits.Len64(uint64(cp.Size - 1)) // ⌈log2 N⌉
	r := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 200; i++ {
		seq := uint64(r.Int64N(cp.Size))
		if i == 0 {
			seq = uint64(cp.Size - 1)
		}
		proof, err := l.ProveInclusion(seq, cp.Size)
		if err != nil {
			t.Fatal(err)
		}
		if len(proof) > maxLen {
			t.Fatalf("proof of %d hashes in a tree of %d, more than %d", len(proof), cp.Size, maxLen)
		}
		rec, err := l.Read(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckRecord(proof, cp.Size, cp.Root, int64(seq), ledger.LeafHash(rec.CID)); err != nil {
			t.Fatalf("inclusion of %d: %v", seq, err)
		}
		other, _ := l.Read(ctx, (seq+1)%uint64(cp.Size))
		if err := tlog.CheckRecord(proof, cp.Size, cp.Root, int64(seq), ledger.LeafHash(other.CID)); err == nil {
			t.Fatalf("proof of %d accepts another entry", seq)
		}
	}
	tp, err := l.ProveConsistency(cpOld.Size, cp.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckTree(tp, cp.Size, cp.Root, cpOld.Size, cpOld.Root); err != nil {
		t.Fatalf("consistency %d..%d: %v", cpOld.Size, cp.Size, err)
	}
	bad := cpOld.Root
	bad[0] ^= 1
	if err := tlog.CheckTree(tp, cp.Size, cp.Root, cpOld.Size, bad); err == nil {
		t.Fatal("consistency proof accepts a wrong old root")
	}
	if _, err := l.ProveInclusion(uint64(cp.Size), cp.Size); err == nil {
		t.Fatal("proof of a seq outside the tree")
	}
}

func testCheckpoints(t *testing.T, h Harness) {
	s := h.New(t)
	defer s.Close()
	l := open(t, s, ledger.Options{CheckpointEvery: 100})
	ctx := context.Background()
	appendAll(t, l, 0, 450)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	cps, err := l.Checkpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int64
	for _, c := range cps {
		sizes = append(sizes, c.Size)
	}
	if fmt.Sprint(sizes) != "[100 200 300 400 451]" {
		t.Fatalf("stored checkpoints at %v, want [100 200 300 400 451]", sizes)
	}
	v, _ := ledger.NewVerifier("osmose", Key(1).Public().(ed25519.PublicKey))
	for _, c := range cps {
		if _, err := ledger.OpenCheckpoint(c.Note, v); err != nil {
			t.Fatal(err)
		}
		root, err := l.TreeHash(c.Size)
		if err != nil || root != c.Root {
			t.Fatalf("checkpoint %d root %s, tree %s (%v)", c.Size, c.Root, root, err)
		}
	}
	other, _ := ledger.NewVerifier("osmose", Key(2).Public().(ed25519.PublicKey))
	if _, err := ledger.OpenCheckpoint(cps[0].Note, other); err == nil {
		t.Fatal("checkpoint verified with another key")
	}
	forged := bytes.Replace(cps[0].Note, []byte("\n100\n"), []byte("\n101\n"), 1)
	if _, err := ledger.OpenCheckpoint(forged, v); err == nil {
		t.Fatal("altered checkpoint verified")
	}
	rep, err := l.Verify(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Checkpoints != 5 {
		t.Fatalf("verify checked %d checkpoints, want 5", rep.Checkpoints)
	}
}

func testReopen(t *testing.T, h Harness) {
	s := h.New(t)
	ctx := context.Background()
	l := open(t, s, ledger.Options{IndexEvery: 50})
	appendAll(t, l, 0, 333)
	root1, _ := l.TreeHash(l.Size())
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	s = h.Reopen(t, s)
	l = open(t, s, ledger.Options{IndexEvery: 50})
	if l.Size() != 334 {
		t.Fatalf("reopened size %d, want 334", l.Size())
	}
	if root2, _ := l.TreeHash(334); root2 != root1 {
		t.Fatal("root changed across reopen")
	}
	appendAll(t, l, 333, 222)
	checkEntry(t, l, 334, entry(333))
	if _, err := l.Verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
	l.Close()

	// Read-only: no key, the same data, no writes.
	s = h.Reopen(t, s)
	defer s.Close()
	ro, err := ledger.Open(ctx, s, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if ro.Size() != 556 {
		t.Fatalf("read-only size %d, want 556", ro.Size())
	}
	if _, err := ro.Append(ctx, entry(1)); !errors.Is(err, ledger.ErrReadOnly) {
		t.Fatalf("append to read-only: %v", err)
	}
	if _, err := ro.Verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ro.Checkpoint(ctx); err != nil {
		t.Fatalf("read-only checkpoint: %v", err)
	}
	// The wrong key is refused.
	if _, err := ledger.Open(ctx, s, ledger.Options{Key: Key(9)}); err == nil {
		t.Fatal("opened with another key")
	}
}

func testIndexes(t *testing.T, h Harness) {
	s := h.New(t)
	ctx := context.Background()
	opts := ledger.Options{IndexEvery: 64}
	l := open(t, s, opts)
	const n = 500
	appendAll(t, l, 0, n)
	check := func(l *ledger.Ledger) {
		t.Helper()
		want := map[string][]uint64{}
		for i := 0; i < n; i++ {
			e := entry(i)
			seq := uint64(i + 1)
			want["grant="+fmt.Sprint(e.Grant)] = append(want["grant="+fmt.Sprint(e.Grant)], seq)
			want["principal="+e.Actor] = append(want["principal="+e.Actor], seq)
			want["device="+e.Device] = append(want["device="+e.Device], seq)
			want["kind="+string(e.Kind)] = append(want["kind="+string(e.Kind)], seq)
		}
		for _, q := range []struct {
			ix    ledger.Index
			value string
		}{{ledger.ByGrant, "102"}, {ledger.ByPrincipal, "dev:switch-3"}, {ledger.ByDevice, "b/f1/r2/light-1"}, {ledger.ByKind, "grant"}} {
			var got []uint64
			if err := l.Lookup(ctx, q.ix, q.value, 0, 1<<62, func(s uint64) bool { got = append(got, s); return true }); err != nil {
				t.Fatal(err)
			}
			key := q.ix.String() + "=" + q.value
			if fmt.Sprint(got) != fmt.Sprint(want[key]) {
				t.Fatalf("%s: got %v\nwant %v", key, got, want[key])
			}
			// A range.
			got = got[:0]
			l.Lookup(ctx, q.ix, q.value, 100, 200, func(s uint64) bool { got = append(got, s); return true })
			var wr []uint64
			for _, s := range want[key] {
				if s >= 100 && s < 200 {
					wr = append(wr, s)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(wr) {
				t.Fatalf("%s in [100,200): got %v want %v", key, got, wr)
			}
		}
		vals, err := l.IndexValues(ctx, ledger.ByKind)
		if err != nil || vals["call"] != 375 || vals["grant"] != 125 || vals["genesis"] != 1 {
			t.Fatalf("kind counts %v, %v", vals, err)
		}
	}
	check(l)
	// Crash-like reopen without Close: the unflushed postings come back
	// from the envelopes.
	s = h.Reopen(t, s)
	defer s.Close()
	l2 := open(t, s, opts)
	defer l2.Close()
	check(l2)
	l2.Close()

	// Damaged indexes are rebuilt from the envelopes.
	if err := queryPrefixDelete(ctx, s, "/i"); err != nil {
		t.Fatal(err)
	}
	l3 := open(t, s, ledger.Options{IndexEvery: 64, Reindex: true})
	defer l3.Close()
	check(l3)
	r, _ := l3.Read(ctx, 77)
	if seq, err := l3.SeqOf(ctx, r.CID); err != nil || seq != 77 {
		t.Fatalf("SeqOf after rebuild: %d, %v", seq, err)
	}
}

// queryPrefixDelete deletes every other key under prefix.
func queryPrefixDelete(ctx context.Context, s ledger.Store, prefix string) error {
	res, err := s.Query(ctx, dsq.Query{Prefix: prefix, KeysOnly: true})
	if err != nil {
		return err
	}
	all, err := res.Rest()
	if err != nil {
		return err
	}
	for i, e := range all {
		if i%2 == 0 {
			if err := s.Delete(ctx, ds.RawKey(e.Key)); err != nil {
				return err
			}
		}
	}
	return nil
}

// testIndexesUnderLoad looks up while entries are appended and index
// segments are frozen and written: no seq is ever missed or repeated.
func testIndexesUnderLoad(t *testing.T, h Harness) {
	s := h.New(t)
	defer s.Close()
	ctx := context.Background()
	l := open(t, s, ledger.Options{IndexEvery: 37, MaxBatch: 16})
	done := make(chan struct{})
	go func() {
		defer close(done)
		appendAll(t, l, 0, 3000)
	}()
	check := func() {
		size := uint64(l.Size())
		var got []uint64
		if err := l.Lookup(ctx, ledger.ByGrant, "102", 0, size, func(s uint64) bool { got = append(got, s); return true }); err != nil {
			t.Fatal(err)
		}
		var want []uint64
		for s := uint64(1); s < size; s++ {
			if (s-1)%5 == 2 {
				want = append(want, s)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("size %d: lookup gave %d seqs, want %d\n got %v\nwant %v", size, len(got), len(want), got, want)
		}
	}
	for {
		select {
		case <-done:
			check()
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			check()
			return
		default:
			check()
		}
	}
}

func testPersonalBodies(t *testing.T, h Harness) {
	s := h.New(t)
	defer s.Close()
	l := open(t, s, ledger.Options{})
	defer l.Close()
	ctx := context.Background()
	alice, err := l.Pseudonym(ctx, "badge:alice")
	if err != nil {
		t.Fatal(err)
	}
	again, _ := l.Pseudonym(ctx, "badge:alice")
	bob, _ := l.Pseudonym(ctx, "badge:bob")
	if alice != again || alice == bob {
		t.Fatalf("pseudonyms alice=%s again=%s bob=%s", alice, again, bob)
	}
	e := ledger.Entry{Kind: "presence", Actor: "dev:door-1", Subject: alice, Device: "b/f1/r1", Time: 5, Params: []byte("alice entered r1")}
	seq, _, err := l.Commit(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	checkEntry(t, l, seq, e)
	rec, _ := l.Read(ctx, seq)
	if bytes.Contains(rec.Block, []byte("alice")) {
		t.Fatal("the envelope carries the body")
	}
	n := 0
	if err := l.Lookup(ctx, ledger.BySubject, alice, 0, 1<<62, func(uint64) bool { n++; return true }); err != nil || n != 1 {
		t.Fatalf("subject index: %d entries, %v", n, err)
	}
	// The body lives under the subject's prefix, and nowhere else.
	found := false
	res, err := s.Query(ctx, queryAll())
	if err != nil {
		t.Fatal(err)
	}
	for r := range res.Next() {
		if strings.HasPrefix(r.Key, "/p/"+alice+"/b/") && len(r.Value) < 64 {
			t.Fatalf("personal value %s of %d bytes: Badger would keep it inline, out of erasure's reach", r.Key, len(r.Value))
		}
		if bytes.Contains(r.Value, []byte("alice entered")) {
			if !bytes.HasPrefix([]byte(r.Key), []byte("/p/"+alice+"/")) {
				t.Fatalf("alice's body under %s", r.Key)
			}
			found = true
		}
		if bytes.Contains([]byte(r.Key), []byte("badge:alice")) || bytes.Contains(r.Value, []byte("badge:alice")) {
			t.Fatalf("the subject id is stored in clear under %s", r.Key)
		}
	}
	res.Close()
	if !found {
		t.Fatal("alice's body not found in the store")
	}
	if _, err := l.Append(ctx, ledger.Entry{Kind: "presence", Subject: "p-0123"}); err == nil {
		t.Fatal("an entry for an unknown pseudonym was accepted")
	}
}

// slowStore holds every Sync until released, and again after hold.
type slowStore struct {
	ledger.Store
	fail chan error

	mu      sync.Mutex
	release chan struct{} // closed while syncs go through
}

func newSlowStore(base ledger.Store, fail chan error) *slowStore {
	return &slowStore{Store: base, fail: fail, release: make(chan struct{})}
}

func (s *slowStore) gate() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.release
}

// open lets syncs through; hold stops those that start after it.
func (s *slowStore) open() { close(s.gate()) }
func (s *slowStore) hold() {
	s.mu.Lock()
	s.release = make(chan struct{})
	s.mu.Unlock()
}

func (s *slowStore) Sync(ctx context.Context, k ds.Key) error {
	select {
	case <-s.gate():
	case err := <-s.fail:
		return err
	}
	return s.Store.Sync(ctx, k)
}

func testBackpressure(t *testing.T, h Harness) {
	base := h.New(t)
	defer base.Close()
	ctx := context.Background()
	l := open(t, base, ledger.Options{})
	l.Close()
	s := newSlowStore(base, make(chan error))
	l = open(t, s, ledger.Options{MaxPending: 8, MaxBatch: 4})
	var ps []*ledger.Pending
	for i := 0; i < 8; i++ {
		p, err := l.Append(ctx, entry(i))
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := l.Append(short, entry(8)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("append beyond MaxPending: %v, want DeadlineExceeded", err)
	}
	if l.TryReserve() {
		t.Fatal("TryReserve found room beyond MaxPending")
	}
	if err := l.Reserve(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("reserve beyond MaxPending: %v, want DeadlineExceeded", err)
	}
	if err := l.WaitRoom(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitRoom beyond MaxPending: %v, want DeadlineExceeded", err)
	}
	// AppendNow takes an entry beyond the bound, without waiting; its
	// completion gives back no room it did not take.
	over, err := l.AppendNow(entry(8))
	if err != nil {
		t.Fatalf("AppendNow beyond MaxPending: %v", err)
	}
	ps = append(ps, over)
	s.open()
	for _, p := range ps {
		if err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Room taken by a refused entry is given back: MaxPending refusals in
	// a row leave room for MaxPending entries.
	for i := 0; i < 8; i++ {
		if !l.TryReserve() {
			t.Fatalf("TryReserve %d: no room in an idle ledger", i)
		}
		if _, err := l.AppendReserved(ledger.Entry{}); err == nil {
			t.Fatal("an entry without a kind was accepted")
		}
	}
	if err := l.WaitRoom(ctx); err != nil {
		t.Fatal(err)
	}
	// Syncs held again, MaxPending entries fill the ledger: the entry
	// AppendNow took beyond the bound has left no room behind.
	s.hold()
	var rs []*ledger.Pending
	for i := 0; i < 8; i++ {
		if !l.TryReserve() {
			t.Fatalf("TryReserve %d: room was not given back", i)
		}
		p, err := l.AppendReserved(entry(9 + i))
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, p)
	}
	if l.TryReserve() {
		t.Fatal("room beyond MaxPending after an AppendNow beyond it")
	}
	s.open()
	for _, p := range rs {
		if err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	appendAll(t, l, 17, 10)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func testWriteFailure(t *testing.T, h Harness) {
	base := h.New(t)
	ctx := context.Background()
	l := open(t, base, ledger.Options{})
	appendAll(t, l, 0, 20)
	l.Close()
	s := newSlowStore(base, make(chan error, 1))
	l = open(t, s, ledger.Options{})
	s.fail <- errors.New("disk on fire")
	p, err := l.Append(ctx, entry(20))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(ctx); !errors.Is(err, ledger.ErrFailed) {
		t.Fatalf("entry of a failed batch: %v, want ErrFailed", err)
	}
	if _, err := l.Append(ctx, entry(21)); !errors.Is(err, ledger.ErrFailed) {
		t.Fatalf("append after a failure: %v, want ErrFailed", err)
	}
	if err := l.Close(); !errors.Is(err, ledger.ErrFailed) {
		t.Fatalf("close after failure: %v", err)
	}
	base = h.Reopen(t, base)
	defer base.Close()
	l = open(t, base, ledger.Options{})
	defer l.Close()
	if _, err := l.Verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
	appendAll(t, l, 20, 5)
}

func testTamper(t *testing.T, h Harness) {
	ctx := context.Background()
	build := func() ledger.Store {
		s := h.New(t)
		l := open(t, s, ledger.Options{CheckpointEvery: 64})
		appendAll(t, l, 0, 700)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		return s
	}
	verify := func(s ledger.Store) error {
		l, err := ledger.Open(ctx, s, ledger.Options{})
		if err != nil {
			return err
		}
		_, err = l.Verify(ctx, nil)
		return err
	}
	wantBad := func(s ledger.Store, seq uint64) {
		t.Helper()
		err := verify(s)
		var ve *ledger.VerifyError
		if !errors.As(err, &ve) || ve.Seq != seq {
			t.Fatalf("verify = %v, want the first bad seq %d", err, seq)
		}
		s.Close()
	}
	// holding returns the key of the stored value that holds marker.
	holding := func(s ledger.Store, marker string) ds.Key {
		t.Helper()
		res, err := s.Query(ctx, dsq.Query{Prefix: "/e"})
		if err != nil {
			t.Fatal(err)
		}
		defer res.Close()
		for r := range res.Next() {
			if bytes.Contains(r.Value, []byte(marker)) {
				return ds.RawKey(r.Key)
			}
		}
		t.Fatalf("no record holds %q", marker)
		return ds.Key{}
	}
	flip := func(s ledger.Store, k ds.Key, at func(v []byte) int) {
		t.Helper()
		v, err := s.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		v = bytes.Clone(v)
		v[at(v)] ^= 0x01
		if err := s.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	// A changed byte in an envelope: seq 321's actor, the last one written
	// before its params body (entry 320's).
	s := build()
	flip(s, holding(s, "params-320"), func(v []byte) int {
		return bytes.LastIndex(v[:bytes.Index(v, []byte("params-320"))], []byte("switch"))
	})
	wantBad(s, 321)
	// A changed byte in a body.
	s = build()
	flip(s, holding(s, "params-399"), func(v []byte) int { return bytes.Index(v, []byte("params-399")) + 7 })
	wantBad(s, 400)
	// A changed tree hash.
	s = build()
	flip(s, ds.RawKey("/t/0/000000000001"), func(v []byte) int { return 32*10 + 5 })
	wantBad(s, 256+10)
	// A changed hash in a piece of the last, partial tile.
	s = build()
	res, err := s.Query(ctx, dsq.Query{Prefix: "/t/0/000000000002", KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	pieces, _ := res.Rest()
	if len(pieces) == 0 {
		t.Fatal("the partial tile has no pieces")
	}
	last := pieces[len(pieces)-1].Key
	var start uint64
	fmt.Sscanf(last[len("/t/0/000000000002/"):], "%x", &start)
	flip(s, ds.RawKey(last), func([]byte) int { return 5 })
	wantBad(s, 512+start)
	// A missing run of entries: the first missing seq is named.
	s = build()
	k := holding(s, "params-499")
	if err := s.Delete(ctx, k); err != nil {
		t.Fatal(err)
	}
	var first uint64
	fmt.Sscanf(k.String(), "/e/%x/", &first)
	if first == 0 || first > 500 {
		t.Fatalf("record key %s", k)
	}
	wantBad(s, first)
	// The untouched ledger verifies.
	s = build()
	if err := verify(s); err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func testBadInput(t *testing.T, h Harness) {
	s := h.New(t)
	defer s.Close()
	ctx := context.Background()
	if _, err := ledger.Open(ctx, s, ledger.Options{}); !errors.Is(err, ledger.ErrNotLedger) {
		t.Fatalf("read-only open of an empty store: %v, want ErrNotLedger", err)
	}
	l := open(t, s, ledger.Options{})
	defer l.Close()
	for _, e := range []ledger.Entry{
		{},
		{Kind: "Call"},
		{Kind: ledger.KindGenesis},
		{Kind: "call", Decision: "maybe"},
		{Kind: "call", Subject: "alice"},
		{Kind: "call", Time: -1},
		{Kind: "call", Params: make([]byte, 2<<20)},
	} {
		if _, err := l.Append(ctx, e); err == nil {
			t.Errorf("append %+v accepted", e)
		}
	}
	if l.Size() != 1 {
		t.Fatalf("bad entries changed the size to %d", l.Size())
	}
}

func queryAll() dsq.Query { return dsq.Query{Prefix: "/"} }
