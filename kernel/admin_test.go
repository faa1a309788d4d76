package kernel_test

import (
	"context"
	"crypto/ed25519"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"github.com/ipfs/go-cid"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/osmose-os/osmose/kernel/kerneltest"
	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
)

// operator returns the Operator interface of a session; the test's cleanup
// releases it.
func (h *harness) operator(d *device) schema.Operator {
	h.t.Helper()
	f, rel := d.sess.Operator(context.Background(), nil)
	defer rel()
	r, err := f.Struct()
	if err != nil {
		h.t.Fatalf("operator: %v", err)
	}
	o := r.Operator().AddRef()
	h.t.Cleanup(o.Release)
	return o
}

// auditor returns the Auditor interface of a session; the test's cleanup
// releases it.
func (h *harness) auditor(d *device) schema.Auditor {
	h.t.Helper()
	f, rel := d.sess.Auditor(context.Background(), nil)
	defer rel()
	r, err := f.Struct()
	if err != nil {
		h.t.Fatalf("auditor: %v", err)
	}
	a := r.Auditor().AddRef()
	h.t.Cleanup(a.Release)
	return a
}

// checkpoint fetches the latest checkpoint and opens it with nothing but
// the kernel's public key.
func checkpoint(t *testing.T, a schema.Auditor) *ledger.Checkpoint {
	t.Helper()
	f, rel := a.Checkpoint(context.Background(), nil)
	defer rel()
	r, err := f.Struct()
	if err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	c, _ := r.Checkpoint()
	note, _ := c.Note()
	v, err := ledger.NewVerifier("osmose/test", kerneltest.Key(seed, "kernel").Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	cp, err := ledger.OpenCheckpoint([]byte(note), v)
	if err != nil {
		t.Fatalf("open checkpoint: %v", err)
	}
	if root, _ := c.RootHash(); cp.Size != int64(c.Size()) || string(root) != string(cp.Root[:]) {
		t.Errorf("checkpoint fields size %d root %x disagree with the note", c.Size(), root)
	}
	return cp
}

func hashes(t *testing.T, l capnp.DataList) []tlog.Hash {
	t.Helper()
	out := make([]tlog.Hash, l.Len())
	for i := range out {
		b, err := l.At(i)
		if err != nil || len(b) != len(tlog.Hash{}) {
			t.Fatalf("hash %d: %x, %v", i, b, err)
		}
		copy(out[i][:], b)
	}
	return out
}

// entryCID reads one envelope through the auditor and checks that its
// bytes and bodies hash to their CIDs.
func entryCID(t *testing.T, a schema.Auditor, seq uint64) (cid.Cid, *ledger.Envelope) {
	t.Helper()
	f, rel := a.Entry(context.Background(), func(p schema.Auditor_entry_Params) error { p.SetSeq(seq); return nil })
	defer rel()
	r, err := f.Struct()
	if err != nil {
		t.Fatalf("entry %d: %v", seq, err)
	}
	env, _ := r.Envelope()
	cb, _ := env.Cid()
	data, _ := env.Data()
	c, err := cid.Cast(cb)
	if err != nil {
		t.Fatal(err)
	}
	if sum, err := c.Prefix().Sum(data); err != nil || !sum.Equals(c) {
		t.Fatalf("entry %d: data hashes to %v, want %v (%v)", seq, sum, c, err)
	}
	e, err := ledger.DecodeEnvelope(data)
	if err != nil || e.Seq != seq || env.Seq() != seq || env.LeafIndex() != seq {
		t.Fatalf("entry %d: envelope %+v, %v", seq, e, err)
	}
	bl, _ := env.Bodies()
	for i := 0; i < bl.Len(); i++ {
		bb, _ := bl.At(i).Cid()
		bd, _ := bl.At(i).Data()
		bc, _ := cid.Cast(bb)
		if sum, err := bc.Prefix().Sum(bd); err != nil || !sum.Equals(bc) {
			t.Errorf("entry %d body %d does not hash to its CID", seq, i)
		}
	}
	return c, e
}

func inclusion(a schema.Auditor, seq, size uint64) (uint64, []byte, capnp.DataList, capnp.ReleaseFunc, error) {
	f, rel := a.InclusionProof(context.Background(), func(p schema.Auditor_inclusionProof_Params) error {
		p.SetSeq(seq)
		p.SetSize(size)
		return nil
	})
	r, err := f.Struct()
	if err != nil {
		rel()
		return 0, nil, capnp.DataList{}, nil, err
	}
	leaf, _ := r.LeafHash()
	hs, _ := r.Hashes()
	return r.LeafIndex(), leaf, hs, rel, nil
}

func consistency(a schema.Auditor, oldSize, newSize uint64) (capnp.DataList, capnp.ReleaseFunc, error) {
	f, rel := a.ConsistencyProof(context.Background(), func(p schema.Auditor_consistencyProof_Params) error {
		p.SetOldSize(oldSize)
		p.SetNewSize(newSize)
		return nil
	})
	r, err := f.Struct()
	if err != nil {
		rel()
		return capnp.DataList{}, nil, err
	}
	hs, _ := r.Hashes()
	return hs, rel, nil
}

func wantErr(t *testing.T, what string, err error, prefix string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), prefix) {
		t.Errorf("%s: %v, want %q", what, err, prefix)
	}
}

func TestAuditorProofs(t *testing.T) {
	h := newHarness(t, 1)
	d := h.login("cam/pem/f1/r1/light-1")
	c, _ := h.open(d, "cam/pem/f1/r1/light-2")
	if err := setLevel(schema.Light(c), 40); err != nil {
		t.Fatal(err)
	}
	a := h.auditor(h.login("audit"))
	cp1 := checkpoint(t, a)

	// Every entry of the first tree is in it, by a proof the auditor
	// checks with tlog alone.
	for seq := uint64(0); seq < uint64(cp1.Size); seq++ {
		c, _ := entryCID(t, a, seq)
		idx, leaf, hs, rel, err := inclusion(a, seq, uint64(cp1.Size))
		if err != nil {
			t.Fatalf("inclusion %d: %v", seq, err)
		}
		want := ledger.LeafHash(c)
		if idx != seq || string(leaf) != string(want[:]) {
			t.Errorf("inclusion %d: leaf index %d hash %x, want %x", seq, idx, leaf, want)
		}
		if err := tlog.CheckRecord(hashes(t, hs), cp1.Size, cp1.Root, int64(seq), want); err != nil {
			t.Errorf("inclusion %d: %v", seq, err)
		}
		rel()
	}

	// More happens; the old tree is a prefix of the new one.
	if err := setLevel(schema.Light(c), 50); err != nil {
		t.Fatal(err)
	}
	cp2 := checkpoint(t, a)
	if cp2.Size <= cp1.Size {
		t.Fatalf("checkpoint did not grow: %d -> %d", cp1.Size, cp2.Size)
	}
	hs, rel, err := consistency(a, uint64(cp1.Size), uint64(cp2.Size))
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckTree(hashes(t, hs), cp2.Size, cp2.Root, cp1.Size, cp1.Root); err != nil {
		t.Errorf("consistency: %v", err)
	}
	rel()
	// The newest entry is in the newest tree (size 0: the latest).
	last := uint64(cp2.Size - 1)
	c2, _ := entryCID(t, a, last)
	if _, _, hs, rel, err := inclusion(a, last, 0); err != nil {
		t.Error(err)
	} else {
		if err := tlog.CheckRecord(hashes(t, hs), cp2.Size, cp2.Root, int64(last), ledger.LeafHash(c2)); err != nil {
			t.Errorf("inclusion in the latest tree: %v", err)
		}
		rel()
	}

	// Refusals.
	_, _, _, _, err = inclusion(a, uint64(cp1.Size), uint64(cp1.Size))
	wantErr(t, "entry past the tree", err, "not-exist: inclusionProof: ")
	_, _, _, _, err = inclusion(a, 1, 1<<40)
	wantErr(t, "size past the ledger", err, "invalid: inclusionProof: ")
	for _, sz := range [][2]uint64{{0, 3}, {4, 3}, {1, 1 << 40}} {
		_, _, err := consistency(a, sz[0], sz[1])
		wantErr(t, "consistency", err, "invalid: consistencyProof: ")
	}
	f, rel := a.Entry(context.Background(), func(p schema.Auditor_entry_Params) error { p.SetSeq(1 << 40); return nil })
	_, err = f.Struct()
	wantErr(t, "entry past the end", err, "not-exist: entry: ")
	rel()
}

// trace runs one trace query.
func trace(a schema.Auditor, set func(schema.TraceQuery) error) ([]traced, error) {
	f, rel := a.Trace(context.Background(), func(p schema.Auditor_trace_Params) error {
		q, err := p.NewQuery()
		if err != nil {
			return err
		}
		return set(q)
	})
	defer rel()
	r, err := f.Struct()
	if err != nil {
		return nil, err
	}
	l, _ := r.Entries()
	out := make([]traced, l.Len())
	for i := range out {
		e := l.At(i)
		out[i].seq = e.Seq()
		out[i].kind, _ = e.Kind()
		out[i].actor, _ = e.Actor()
		out[i].grant, _ = e.Grant()
		out[i].target, _ = e.Target()
		out[i].method, _ = e.Method()
		out[i].reason, _ = e.Reason()
		out[i].decision = e.Decision()
	}
	return out, nil
}

type traced struct {
	seq                                        uint64
	kind, actor, grant, target, method, reason string
	decision                                   schema.Decision
}

func summary(ts []traced) string {
	var b []string
	for _, e := range ts {
		s := e.kind
		if e.method != "" {
			s += "." + e.method
		}
		switch e.decision {
		case schema.Decision_allowed:
			s += "/allowed"
		case schema.Decision_denied:
			s += "/denied"
		}
		b = append(b, s)
	}
	return strings.Join(b, " ")
}

func TestTrace(t *testing.T) {
	h := newHarness(t, 1)
	const me, target = "cam/pem/f1/r1/light-1", "cam/pem/f1/r1/light-2"
	d := h.login(me)
	c, grant := h.open(d, target)
	light := schema.Light(c)
	for _, lv := range []uint8{10, 90, 30} { // 90 is outside the policy's 0..80
		setLevel(light, lv)
	}
	// Delegate to the app, which calls.
	df, drel := d.sess.Delegate(context.Background(), func(p schema.Session_delegate_Params) error {
		p.SetGrant(grant)
		return p.SetTo("scenes")
	})
	dr, err := df.Struct()
	if err != nil {
		t.Fatalf("delegate: %v", err)
	}
	child, _ := dr.Grant()
	childID, _ := child.Id()
	drel()
	app := h.login("scenes")
	ac, _ := h.open(app, target)
	if err := setLevel(schema.Light(ac), 20); err != nil {
		t.Fatal(err)
	}

	a := h.auditor(h.login("audit"))
	byDevice := func(q schema.TraceQuery) error { return q.By().SetDevice(target) }
	all, err := trace(a, byDevice)
	if err != nil {
		t.Fatal(err)
	}
	want := "grant/allowed call.setLevel/allowed return.setLevel call.setLevel/denied call.setLevel/allowed return.setLevel " +
		"delegate/allowed call.setLevel/allowed return.setLevel"
	if got := summary(all); got != want {
		t.Fatalf("trace by device:\n got %s\nwant %s", got, want)
	}
	for i := 1; i < len(all); i++ {
		if all[i].seq <= all[i-1].seq {
			t.Errorf("trace out of order at %d", i)
		}
	}
	if e := all[3]; !strings.HasPrefix(e.reason, "permission: setLevel: ") || e.actor != me || e.grant != grant {
		t.Errorf("denied call %+v", e)
	}

	// Page by page gives the same entries.
	var paged []traced
	var after uint64
	for {
		page, err := trace(a, func(q schema.TraceQuery) error {
			q.SetLimit(3)
			q.SetAfterSeq(after)
			return byDevice(q)
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > 3 {
			t.Fatalf("page of %d entries, limit 3", len(page))
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, page...)
		after = page[len(page)-1].seq
	}
	if summary(paged) != want {
		t.Errorf("paged trace: %s", summary(paged))
	}

	// A grant's trace starts with the chain of who gave the power.
	byGrant, err := trace(a, func(q schema.TraceQuery) error { return q.By().SetGrant(childID) })
	if err != nil {
		t.Fatal(err)
	}
	if got, want := summary(byGrant), "grant/allowed delegate/allowed call.setLevel/allowed return.setLevel"; got != want {
		t.Errorf("trace by grant:\n got %s\nwant %s", got, want)
	}
	if byGrant[0].grant != grant || byGrant[1].grant != childID {
		t.Errorf("grant chain %s, %s", byGrant[0].grant, byGrant[1].grant)
	}

	// A principal's trace: what it did, and the grant it received before
	// it first logged in.
	byApp, err := trace(a, func(q schema.TraceQuery) error { return q.By().SetPrincipal("scenes") })
	if err != nil {
		t.Fatal(err)
	}
	if got, want := summary(byApp), "delegate/allowed login/allowed call.setLevel/allowed return.setLevel"; got != want {
		t.Errorf("trace by principal:\n got %s\nwant %s", got, want)
	}

	// Time window: only the entries from the denied call's time on.
	full, _ := h.led.Read(context.Background(), all[3].seq)
	late, err := trace(a, func(q schema.TraceQuery) error {
		q.SetSinceTime(full.Envelope.Time)
		return byDevice(q)
	})
	if err != nil || len(late) == 0 || late[0].seq != all[3].seq {
		t.Errorf("since-time trace starts at %v, want seq %d (%v)", late, all[3].seq, err)
	}

	_, err = trace(a, func(q schema.TraceQuery) error { return q.By().SetGrant("nonsense") })
	wantErr(t, "bad grant id", err, "not-exist: trace: ")
	_, err = trace(a, func(q schema.TraceQuery) error { return q.By().SetDevice("") })
	wantErr(t, "empty device", err, "invalid: trace: ")
}

func TestTraceBounds(t *testing.T) {
	h := newHarness(t, 1)
	const dev = "cam/pem/f1/r1/light-1"
	// 10,050 entries on one device, appended to the ledger directly.
	var last *ledger.Pending
	for i := 0; i < 10050; i++ {
		p, err := h.led.Append(context.Background(), ledger.Entry{Kind: "test", Actor: "t", Device: dev, Time: int64(i + 1)})
		if err != nil {
			t.Fatal(err)
		}
		last = p
	}
	if err := last.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	a := h.auditor(h.login("audit"))
	for _, c := range []struct{ limit, want uint32 }{{0, 1000}, {50000, 10000}, {7, 7}} {
		got, err := trace(a, func(q schema.TraceQuery) error {
			q.SetLimit(c.limit)
			return q.By().SetDevice(dev)
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != int(c.want) {
			t.Errorf("limit %d: %d entries, want %d", c.limit, len(got), c.want)
		}
	}
	// The rest is one page on.
	first, _ := trace(a, func(q schema.TraceQuery) error { q.SetLimit(50000); return q.By().SetDevice(dev) })
	rest, err := trace(a, func(q schema.TraceQuery) error {
		q.SetLimit(50000)
		q.SetAfterSeq(first[len(first)-1].seq)
		return q.By().SetDevice(dev)
	})
	if err != nil || len(rest) != 50 || rest[0].seq != first[len(first)-1].seq+1 {
		t.Errorf("second page: %d entries, %v", len(rest), err)
	}
}

func grantsOf(t *testing.T, o schema.Operator, holder string) []string {
	t.Helper()
	f, rel := o.Grants(context.Background(), func(p schema.Operator_grants_Params) error { return p.SetHolder(holder) })
	defer rel()
	r, err := f.Struct()
	if err != nil {
		t.Fatalf("grants: %v", err)
	}
	l, _ := r.Grants()
	var ids []string
	for i := 0; i < l.Len(); i++ {
		id, _ := l.At(i).Id()
		ids = append(ids, id)
	}
	return ids
}

func opGrant(o schema.Operator, to, target string, classes ...schema.DeviceClass) ([]string, error) {
	f, rel := o.Grant(context.Background(), func(p schema.Operator_grant_Params) error {
		p.SetTo(to)
		p.SetTarget(target)
		cl, err := p.NewClasses(int32(len(classes)))
		if err != nil {
			return err
		}
		for i, c := range classes {
			cl.Set(i, c)
		}
		return nil
	})
	defer rel()
	r, err := f.Struct()
	if err != nil {
		return nil, err
	}
	l, _ := r.Grants()
	var ids []string
	for i := 0; i < l.Len(); i++ {
		id, _ := l.At(i).Id()
		ids = append(ids, id)
	}
	return ids, nil
}

func opRevoke(o schema.Operator, grant string) error {
	f, rel := o.Revoke(context.Background(), func(p schema.Operator_revoke_Params) error { return p.SetGrant(grant) })
	defer rel()
	_, err := f.Struct()
	return err
}

func TestOperatorGrantRevoke(t *testing.T) {
	h := newHarness(t, 2)
	const sw, target = "cam/pem/f1/r1/switch", "cam/pem/f1/r1/light-1"
	o := h.operator(h.login("op"))
	start := uint64(h.led.Size())
	ids, err := opGrant(o, sw, target)
	if err != nil || len(ids) != 1 {
		t.Fatalf("grant: %v, %v", ids, err)
	}
	grant := ids[0]
	if got := grantsOf(t, o, sw); len(got) != 1 || got[0] != grant {
		t.Errorf("grants of the switch: %v", got)
	}
	// The device opens what it was given, and calls.
	d := h.login(sw)
	c, opened := h.open(d, target)
	if opened != grant {
		t.Errorf("open gave %s, want the operator's %s", opened, grant)
	}
	if err := setLevel(schema.Light(c), 60); err != nil {
		t.Fatal(err)
	}
	if err := opRevoke(o, grant); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	wantErr(t, "call after revoke", setLevel(schema.Light(c), 70), "revoked: ")
	if err := opRevoke(o, grant); err != nil {
		t.Errorf("revoking again: %v", err)
	}
	if got := grantsOf(t, o, sw); len(got) != 0 {
		t.Errorf("grants after revoke: %v", got)
	}
	if _, lv, _ := h.fakes.Lights[target].State(); lv != 60 {
		t.Errorf("light level %d, want 60", lv)
	}

	rs := h.entries(start)
	if got, want := kinds(rs), "grant/admit login/admit call/admit return revoke/admit call/deny"; got != want {
		t.Fatalf("ledger:\n got %s\nwant %s", got, want)
	}
	if e := rs[0].Envelope; e.Actor != "op" || e.Device != target || "g"+itoa(e.Grant) != grant {
		t.Errorf("grant entry %+v", e)
	}
	gm, err := kerneltest.ReadBody(rs[0].Result())
	if err != nil {
		t.Fatal(err)
	}
	if sg, err := schema.ReadRootGrant(gm); err != nil {
		t.Error(err)
	} else if holder, _ := sg.Holder(); holder != sw {
		t.Errorf("grant body holder %q", holder)
	}
	if e := rs[4].Envelope; e.Actor != "op" || "g"+itoa(e.Grant) != grant || string(rs[4].Params()) != grant {
		t.Errorf("revoke entry %+v params %q", e, rs[4].Params())
	}

	// A place: every light of the room; the policy refuses other rooms.
	ids, err = opGrant(o, sw, "cam/pem/f1/r1", schema.DeviceClass_light)
	if err != nil || len(ids) != 2 {
		t.Errorf("grant room lights: %v, %v", ids, err)
	}
	_, err = opGrant(o, sw, "cam/pem/f1/r2/light-1")
	wantErr(t, "other room", err, "permission: grant: ")
	_, err = opGrant(o, "nobody", target)
	wantErr(t, "unknown principal", err, "not-exist: grant: ")
	_, err = opGrant(o, sw, "cam/nowhere")
	wantErr(t, "unknown target", err, "not-exist: grant: ")
	_, err = opGrant(o, "audit", target)
	wantErr(t, "auditor", err, "invalid: grant: ")
	_, err = opGrant(o, sw, target, schema.DeviceClass_speaker)
	wantErr(t, "wrong class", err, "not-exist: grant: ")
	wantErr(t, "revoke unknown", opRevoke(o, "g999999"), "not-exist: revoke: ")
	wantErr(t, "revoke malformed", opRevoke(o, "x"), "not-exist: revoke: ")
}

func itoa(n uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

// entryListener records what a watch delivers. If hold is set, each call
// waits for a value from it first.
type entryListener struct {
	got      chan batch
	hold     chan struct{}
	inflight sync.Mutex // held during a call: TryLock fails on overlap
	overlap  atomic.Bool
	shut     chan struct{}
}

type batch struct {
	seqs    []uint64
	kinds   []string
	skipped uint64
}

func newEntryListener() *entryListener {
	return &entryListener{got: make(chan batch, 1024), shut: make(chan struct{})}
}

func (l *entryListener) Entries(ctx context.Context, call schema.EntryListener_entries) error {
	if !l.inflight.TryLock() {
		l.overlap.Store(true)
		return nil
	}
	defer l.inflight.Unlock()
	if l.hold != nil {
		select {
		case <-l.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	es, err := call.Args().Entries()
	if err != nil {
		return err
	}
	b := batch{skipped: call.Args().Skipped()}
	for i := 0; i < es.Len(); i++ {
		b.seqs = append(b.seqs, es.At(i).Seq())
		k, _ := es.At(i).Kind()
		b.kinds = append(b.kinds, k)
	}
	l.got <- b
	return nil
}

func (l *entryListener) Shutdown() { close(l.shut) }

func watch(t *testing.T, o schema.Operator, l *entryListener, backlog uint32) schema.Subscription {
	t.Helper()
	f, rel := o.Watch(context.Background(), func(p schema.Operator_watch_Params) error {
		p.SetBacklog(backlog)
		return p.SetListener(schema.EntryListener_ServerToClient(l))
	})
	defer rel()
	r, err := f.Struct()
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	return r.Subscription().AddRef()
}

// next waits for the listener's next batch.
func (l *entryListener) next(t *testing.T) batch {
	t.Helper()
	select {
	case b := <-l.got:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("no entries delivered")
		return batch{}
	}
}

// waitShut waits until the kernel has released the listener.
func (l *entryListener) waitShut(t *testing.T) {
	t.Helper()
	select {
	case <-l.shut:
	case <-time.After(10 * time.Second):
		t.Fatal("the kernel still holds the listener")
	}
}

func TestOperatorWatch(t *testing.T) {
	h := newHarness(t, 1)
	o := h.operator(h.login("op"))
	d := h.login("cam/pem/f1/r1/light-1")
	c, _ := h.open(d, "cam/pem/f1/r1/light-2")
	size := uint64(h.led.Size())

	l := newEntryListener()
	sub := watch(t, o, l, 3)
	b := l.next(t)
	if len(b.seqs) != 3 || b.seqs[0] != size-3 || b.skipped != 0 {
		t.Fatalf("backlog %v, want the 3 entries before %d", b, size)
	}
	// New entries arrive in order, with nothing left out.
	next := size
	for i := 0; i < 5; i++ {
		if err := setLevel(schema.Light(c), uint8(10+i)); err != nil {
			t.Fatal(err)
		}
	}
	for next < size+10 {
		b := l.next(t)
		if b.skipped != 0 {
			t.Errorf("skipped %d", b.skipped)
		}
		for i, s := range b.seqs {
			if s != next {
				t.Fatalf("entry seq %d, want %d", s, next)
			}
			if want := []string{"call", "return"}[(s-size)%2]; b.kinds[i] != want {
				t.Errorf("entry %d kind %s, want %s", s, b.kinds[i], want)
			}
			next++
		}
	}
	// Cancel: the kernel lets go of the listener, and nothing more comes.
	cf, crel := sub.Cancel(context.Background(), nil)
	if _, err := cf.Struct(); err != nil {
		t.Fatal(err)
	}
	crel()
	sub.Release()
	l.waitShut(t)
	if err := setLevel(schema.Light(c), 1); err != nil {
		t.Fatal(err)
	}
	if n := len(l.got); n != 0 || l.overlap.Load() {
		t.Errorf("%d batches after cancel; overlapping calls %v", n, l.overlap.Load())
	}
}

func TestWatchSlowListener(t *testing.T) {
	h := newHarness(t, 1)
	o := h.operator(h.login("op"))
	l := newEntryListener()
	l.hold = make(chan struct{})
	sub := watch(t, o, l, 1)
	defer sub.Release()
	// The first call is held; 12,000 entries pile up meanwhile.
	var last *ledger.Pending
	for i := 0; i < 12000; i++ {
		p, err := h.led.Append(context.Background(), ledger.Entry{Kind: "test", Actor: "t", Time: int64(i + 1)})
		if err != nil {
			t.Fatal(err)
		}
		last = p
	}
	if err := last.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	end := last.Seq() + 1
	close(l.hold)
	b := l.next(t)
	if len(b.seqs) != 1 {
		t.Fatalf("first batch %d entries", len(b.seqs))
	}
	next, skipped := b.seqs[0]+1, uint64(0)
	for next < end {
		b := l.next(t)
		if len(b.seqs) == 0 || len(b.seqs) > 256 {
			t.Fatalf("batch of %d entries", len(b.seqs))
		}
		if b.seqs[0] != next+b.skipped {
			t.Fatalf("batch starts at %d, want %d + skipped %d", b.seqs[0], next, b.skipped)
		}
		skipped += b.skipped
		next = b.seqs[len(b.seqs)-1] + 1
	}
	if skipped == 0 {
		t.Error("a listener 12,000 entries behind was not skipped ahead")
	}
	if l.overlap.Load() {
		t.Error("two calls were outstanding at once")
	}
}

func TestWatchEndsWithSession(t *testing.T) {
	h := newHarness(t, 1)
	op := h.login("op")
	o := h.operator(op)
	l := newEntryListener()
	sub := watch(t, o, l, 0)
	defer sub.Release()
	op.sess.Release()
	l.waitShut(t)
	// The operator interface outlives the session but refuses.
	wantErr(t, "grants after logout", func() error {
		f, rel := o.Grants(context.Background(), nil)
		defer rel()
		_, err := f.Struct()
		return err
	}(), "revoked: grants: session ended")
}

func TestAdminPermission(t *testing.T) {
	h := newHarness(t, 1)
	d := h.login("cam/pem/f1/r1/light-1")
	f, rel := d.sess.Operator(context.Background(), nil)
	_, err := f.Struct()
	wantErr(t, "device operator()", err, "permission: operator: ")
	rel()
	af, arel := d.sess.Auditor(context.Background(), nil)
	_, err = af.Struct()
	wantErr(t, "device auditor()", err, "permission: auditor: ")
	arel()
	au := h.login("audit")
	f, rel = au.sess.Operator(context.Background(), nil)
	_, err = f.Struct()
	wantErr(t, "auditor operator()", err, "permission: operator: ")
	rel()
	// An operator is an auditor too.
	checkpoint(t, h.auditor(h.login("op")))
}

func TestOperatorQueries(t *testing.T) {
	h := newHarness(t, 2)
	o := h.operator(h.login("op"))
	ctx := context.Background()

	pf, prel := o.Places(ctx, nil)
	pr, err := pf.Struct()
	if err != nil {
		t.Fatal(err)
	}
	pl, _ := pr.Places()
	var paths []string
	for i := 0; i < pl.Len(); i++ {
		p, _ := pl.At(i).Path()
		paths = append(paths, p)
	}
	prel()
	if got, want := strings.Join(paths, " "), "cam cam/pem cam/pem/f1 cam/pem/f1/r1 cam/pem/f1/r2"; got != want {
		t.Errorf("places: %s", got)
	}

	df, drel := o.Devices(ctx, func(p schema.Operator_devices_Params) error {
		cl, _ := p.NewClasses(1)
		cl.Set(0, schema.DeviceClass_light)
		return p.SetUnder("cam/pem/f1/r2")
	})
	dr, err := df.Struct()
	if err != nil {
		t.Fatal(err)
	}
	dl, _ := dr.Devices()
	if dl.Len() != 2 {
		t.Errorf("%d lights in r2", dl.Len())
	} else {
		p, _ := dl.At(0).Path()
		name, _ := dl.At(0).InterfaceName()
		who, _ := dl.At(0).Principal()
		if p != "cam/pem/f1/r2/light-1" || name != "Light" || who != p || !dl.At(0).Online() {
			t.Errorf("device %s %s %s online=%v", p, name, who, dl.At(0).Online())
		}
	}
	drel()

	rf, rrel := o.Principals(ctx, func(p schema.Operator_principals_Params) error {
		kl, _ := p.NewKinds(2)
		kl.Set(0, schema.PrincipalKind_auditor)
		kl.Set(1, schema.PrincipalKind_operator)
		return nil
	})
	rr, err := rf.Struct()
	if err != nil {
		t.Fatal(err)
	}
	rl, _ := rr.Principals()
	var ids []string
	for i := 0; i < rl.Len(); i++ {
		id, _ := rl.At(i).Id()
		ids = append(ids, id)
	}
	rrel()
	if got := strings.Join(ids, " "); got != "audit op" {
		t.Errorf("principals: %s", got)
	}

	// Device state, from the driver.
	d := h.login("cam/pem/f1/r1/light-1")
	c, _ := h.open(d, "cam/pem/f1/r1/light-2")
	if err := setLevel(schema.Light(c), 35); err != nil {
		t.Fatal(err)
	}
	sf, srel := o.DeviceState(ctx, func(p schema.Operator_deviceState_Params) error { return p.SetPath("cam/pem/f1/r1/light-2") })
	sr, err := sf.Struct()
	if err != nil {
		t.Fatal(err)
	}
	st, _ := sr.State()
	ls, err := st.Detail().Light()
	sum, _ := st.Summary()
	if err != nil || !ls.On() || ls.Level() != 35 || sum != "on, 35 %" || st.LastSeen() == 0 {
		t.Errorf("light state on=%v level=%d summary %q (%v)", ls.On(), ls.Level(), sum, err)
	}
	srel()
	sf, srel = o.DeviceState(ctx, func(p schema.Operator_deviceState_Params) error { return p.SetPath("cam/pem/f1/r1/occupancy") })
	if sr, err := sf.Struct(); err != nil {
		t.Error(err)
	} else if st, _ := sr.State(); st.Detail().Which() != schema.DeviceState_detail_Which_reading {
		t.Errorf("sensor state detail %v", st.Detail().Which())
	}
	srel()
	sf, srel = o.DeviceState(ctx, func(p schema.Operator_deviceState_Params) error { return p.SetPath("cam/nowhere/x") })
	_, err = sf.Struct()
	wantErr(t, "unknown device", err, "not-exist: deviceState: ")
	srel()

	ff, frel := o.Forget(ctx, func(p schema.Operator_forget_Params) error { return p.SetSubject("p-1") })
	_, err = ff.Struct()
	wantErr(t, "forget an unknown subject", err, "not-exist: forget: ")
	frel()
}

// TestTraceGrantAfterRestart: a grant of an earlier run is traced with
// its ancestry from the ledger alone.
func TestTraceGrantAfterRestart(t *testing.T) {
	dir := t.TempDir()
	const me, target = "cam/pem/f1/r1/light-1", "cam/pem/f1/r1/light-2"
	h1 := newHarnessAt(t, dir, 1)
	d := h1.login(me)
	c, grant := h1.open(d, target)
	df, drel := d.sess.Delegate(context.Background(), func(p schema.Session_delegate_Params) error {
		p.SetGrant(grant)
		return p.SetTo("scenes")
	})
	dr, err := df.Struct()
	if err != nil {
		t.Fatalf("delegate: %v", err)
	}
	child, _ := dr.Grant()
	childID, _ := child.Id()
	drel()
	c.Release()
	d.close()
	h1.stop()

	h2 := newHarnessAt(t, dir, 1)
	a := h2.auditor(h2.login("audit"))
	got, err := trace(a, func(q schema.TraceQuery) error { return q.By().SetGrant(childID) })
	if err != nil {
		t.Fatal(err)
	}
	if s := summary(got); s != "grant/allowed delegate/allowed" || got[0].grant != grant {
		t.Errorf("trace of %s after restart: %s (%+v)", childID, s, got)
	}
}
