package ledger_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ds "github.com/ipfs/go-datastore"

	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/ledger/ledgertest"
)

// scanDir counts the occurrences of each needle in every byte of every
// file under dir (value logs, tables, manifest, everything).
func scanDir(t *testing.T, dir string, needles ...[]byte) []int {
	t.Helper()
	counts := make([]int, len(needles))
	files := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		for i, n := range needles {
			counts[i] += bytes.Count(b, n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 3 {
		t.Fatalf("scanned only %d files in %s", files, dir)
	}
	return counts
}

// markedEntry is entry i of a subject whose every body carries marker:
// params always, a result on every other entry; sizes vary from a few
// bytes (values Badger would keep inline, unpadded) to 6 KiB.
func markedEntry(p, marker string, i int) ledger.Entry {
	e := ledger.Entry{Kind: ledger.KindCall, Actor: fmt.Sprintf("dev:reader-%d", i%5), Subject: p,
		Device: fmt.Sprintf("b/f%d/door", i%3), Decision: ledger.DecisionAdmit, Time: int64(i) * 1e6,
		Params: []byte(marker)}
	if i%7 == 1 {
		e.Params = []byte(marker + strings.Repeat("-", 6000))
	}
	if i%2 == 0 {
		e.Result = []byte(fmt.Sprintf("%d %s %s", i, marker, strings.Repeat("r", i%300)))
	}
	return e
}

func bodiesOf(e ledger.Entry) int {
	n := 0
	if e.Params != nil {
		n++
	}
	if e.Result != nil {
		n++
	}
	return n
}

// TestForgetLeavesNoByte writes unique markers into three people's bodies
// on a real Badger store (some written before a reopen, so flushed to the
// LSM tables, some still in the memtable), forgets one of them, closes the
// store and scans every byte of the directory: the forgotten subject's
// marker, secret and id hash are nowhere, the others' markers all there.
func TestForgetLeavesNoByte(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	people := []struct{ id, marker string }{
		{"alice@example.org", "MARKER-alice-5b1e9c"},
		{"bob@example.org", "MARKER-bob-93c4d0"},
		{"carol@example.org", "MARKER-carol-d27f3a"},
	}
	bodies := make([]int, len(people))
	var forgottenSeqs []uint64
	openLedger := func() (*ledger.BadgerStore, *ledger.Ledger) {
		s, err := ledger.OpenBadger(dir, ledger.BadgerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		l, err := ledger.Open(ctx, s, ledger.Options{Key: ledgertest.Key(1), CheckpointEvery: 500, MaxBatch: 256})
		if err != nil {
			t.Fatal(err)
		}
		return s, l
	}
	write := func(l *ledger.Ledger, from, to int) {
		var last *ledger.Pending
		pseudonyms := make([]string, len(people))
		for k, who := range people {
			var err error
			if pseudonyms[k], err = l.Pseudonym(ctx, who.id); err != nil {
				t.Fatal(err)
			}
		}
		for i := from; i < to; i++ {
			var e ledger.Entry
			if k := i % 4; k < len(people) {
				e = markedEntry(pseudonyms[k], people[k].marker, i)
				bodies[k] += bodiesOf(e)
			} else {
				e = ledger.Entry{Kind: ledger.KindCall, Actor: "dev:x", Device: "b/f1/light", Time: int64(i), Params: []byte("on")}
			}
			p, err := l.Append(ctx, e)
			if err != nil {
				t.Fatal(err)
			}
			if i%4 == 0 {
				forgottenSeqs = append(forgottenSeqs, p.Seq())
			}
			last = p
		}
		if err := last.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	s, l := openLedger()
	write(l, 0, 4000)
	l.Close()
	s.Close()
	s, l = openLedger()
	write(l, 4000, 6000)

	alice, _ := l.Pseudonym(ctx, people[0].id)
	secret := ledger.SubjectSecretForTest(ctx, l, alice)
	idHash := ledger.IDHashForTest(l, people[0].id)
	if len(secret) != 32 || len(idHash) != 32 {
		t.Fatalf("secret %x, id hash %x", secret, idHash)
	}
	needles := [][]byte{[]byte(people[0].marker), secret, idHash, []byte(people[1].marker), []byte(people[2].marker)}
	// The scan can see them: before the erasure every one is on disk.
	got := scanDir(t, dir, needles...)
	if got[0] < bodies[0] || got[1] < 1 || got[2] < 1 {
		t.Fatalf("before forgetting, the scan finds the marker %d times (%d bodies), the secret %d, the id hash %d", got[0], bodies[0], got[1], got[2])
	}
	cps, err := l.Checkpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}

	rep, err := l.Forget(ctx, people[0].id, ledger.ForgetOptions{Time: 1, Actor: "op:dpo"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Pseudonym != alice || rep.Entries != len(forgottenSeqs) || len(rep.Removed) != bodies[0] || !rep.ValueLog || rep.Unlocated != 0 {
		t.Fatalf("erasure %+v; want %d entries, %d bodies", rep, len(forgottenSeqs), bodies[0])
	}
	t.Logf("forgot %s: %d entries, %d bodies, %d keys, %d value-log records (%d bytes)", rep.Pseudonym, rep.Entries, len(rep.Removed), rep.Keys, rep.Scrubbed, rep.ScrubbedBytes)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	check := func(when string) {
		got := scanDir(t, dir, needles...)
		if got[0] != 0 || got[1] != 0 || got[2] != 0 {
			t.Fatalf("%s: the forgotten subject's marker is on disk %d times, its secret %d, its id hash %d", when, got[0], got[1], got[2])
		}
		if got[3] < bodies[1] || got[4] < bodies[2] {
			t.Fatalf("%s: the others' markers are on disk %d and %d times, want at least %d and %d", when, got[3], got[4], bodies[1], bodies[2])
		}
	}
	check("after closing")

	// Reopened (Badger replays its log): every earlier checkpoint is the
	// same, the ledger verifies, and still nothing of the subject is back.
	s, l = openLedger()
	vr, err := l.Verify(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if vr.Redacted != bodies[0] {
		t.Fatalf("verify found %d redacted bodies, want %d", vr.Redacted, bodies[0])
	}
	after, err := l.Checkpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, cp := range cps {
		if !bytes.Equal(after[i].Note, cp.Note) {
			t.Fatalf("checkpoint of size %d changed", cp.Size)
		}
	}
	for _, seq := range forgottenSeqs[:50] {
		if r, err := l.Read(ctx, seq); err != nil || r.ParamsBlock != nil || r.ResultBlock != nil {
			t.Fatalf("seq %d: %v, bodies still there", seq, err)
		}
	}
	if _, err := l.Forget(ctx, people[0].id, ledger.ForgetOptions{}); !errors.Is(err, ledger.ErrUnknownSubject) {
		t.Fatalf("forgetting again: %v, want ErrUnknownSubject", err)
	}
	if _, err := l.Forget(ctx, alice, ledger.ForgetOptions{}); !errors.Is(err, ledger.ErrForgotten) {
		t.Fatalf("forgetting %s again: %v, want ErrForgotten", alice, err)
	}
	l.Close()
	s.Close()
	check("after reopening")
}

// TestForgetLegacySubject: a subject written before the mapping was
// bucketed and padded (/m/<id hash> -> pseudonym; a 32-byte secret) is
// still found by its id, listed and forgotten; its two short values, which
// Badger kept inline, are reported as unlocated.
func TestForgetLegacySubject(t *testing.T) {
	ctx := context.Background()
	s, err := ledger.OpenBadger(t.TempDir(), ledger.BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l, err := ledger.Open(ctx, s, ledger.Options{Key: ledgertest.Key(1)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const p = "p-00112233aabbccdd"
	mkey := fmt.Sprintf("/m/%x", ledger.IDHashForTest(l, "legacy@example.org"))
	for k, v := range map[string][]byte{mkey: []byte(p), "/p/" + p + "/k": bytes.Repeat([]byte{7}, 32), "/p/" + p + "/m": []byte(mkey)} {
		if err := s.Put(ctx, dsKey(k), v); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := l.Pseudonym(ctx, "legacy@example.org"); err != nil || got != p {
		t.Fatalf("pseudonym of the legacy subject: %q, %v", got, err)
	}
	seq, _, err := l.Commit(ctx, markedEntry(p, "LEGACY-MARK", 2))
	if err != nil {
		t.Fatal(err)
	}
	subs, err := l.Subjects(ctx)
	if err != nil || len(subs) != 1 || subs[0] != (ledger.Subject{Pseudonym: p, Entries: 1, State: ledger.SubjectLive}) {
		t.Fatalf("subjects %+v, %v", subs, err)
	}
	rep, err := l.Forget(ctx, "legacy@example.org", ledger.ForgetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Pseudonym != p || rep.Entries != 1 || rep.Keys != 4 || rep.Scrubbed != 2 || rep.Unlocated != 2 {
		t.Fatalf("erasure %+v: want 4 keys, 2 records scrubbed, 2 unlocated", rep)
	}
	if r, _ := l.Read(ctx, seq); r.ParamsBlock != nil {
		t.Fatal("the legacy subject's body is still there")
	}
	if _, err := l.Verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

func dsKey(k string) ds.Key { return ds.RawKey(k) }
