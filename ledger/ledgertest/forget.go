package ledgertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/osmose-os/osmose/ledger"
)

// personalEntry is an entry carrying subject p's data: the marker in its
// params, and in its result on every other entry.
func personalEntry(p, marker string, i int) ledger.Entry {
	e := ledger.Entry{Kind: ledger.KindCall, Actor: "dev:door-" + fmt.Sprint(i%3), Subject: p, Device: "b/f1/door",
		Decision: ledger.DecisionAdmit, Time: int64(i) * 1e6, Params: []byte(fmt.Sprintf("%s badge-in %d", marker, i))}
	if i%2 == 0 {
		e.Result = []byte(fmt.Sprintf("%s welcome %d %s", marker, i, strings.Repeat("x", i%200)))
	}
	return e
}

// testForget: forgetting a subject removes exactly its bodies, lists them
// on a redaction entry, keeps every envelope and checkpoint, refuses its
// new entries, and verifies; an unknown or forgotten subject changes
// nothing.
func testForget(t *testing.T, h Harness) {
	ctx := context.Background()
	s := h.New(t)
	defer func() { s.Close() }()
	l := open(t, s, ledger.Options{CheckpointEvery: 32})
	alice, err := l.Pseudonym(ctx, "badge:alice")
	if err != nil {
		t.Fatal(err)
	}
	bob, _ := l.Pseudonym(ctx, "badge:bob")
	var aliceSeqs, bobSeqs []uint64
	for i := 0; i < 300; i++ {
		var e ledger.Entry
		switch i % 3 {
		case 0:
			e = personalEntry(alice, "ALICE", i)
		case 1:
			e = personalEntry(bob, "BOB", i)
		default:
			e = entry(i)
		}
		seq, _, err := l.Commit(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		switch i % 3 {
		case 0:
			aliceSeqs = append(aliceSeqs, seq)
		case 1:
			bobSeqs = append(bobSeqs, seq)
		}
	}
	before := snapshot(t, l)

	// An unknown subject, or a pseudonym never issued: nothing changes.
	for _, subj := range []string{"badge:nobody", "p-0123456789abcdef", ""} {
		if _, err := l.Forget(ctx, subj, ledger.ForgetOptions{}); !errors.Is(err, ledger.ErrUnknownSubject) {
			t.Fatalf("forget %q: %v, want ErrUnknownSubject", subj, err)
		}
	}
	if l.Size() != before.size {
		t.Fatalf("a refused erasure changed the ledger: size %d, was %d", l.Size(), before.size)
	}

	var steps []ledger.ForgetStep
	rep, err := l.Forget(ctx, "badge:alice", ledger.ForgetOptions{Time: 5e9, Actor: "op:dpo", Progress: func(s ledger.ForgetStep, done, total int) {
		if len(steps) == 0 || steps[len(steps)-1] != s {
			steps = append(steps, s)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(steps); got != "[locate job redact delete scrub done]" && got != "[locate job redact delete done]" {
		t.Fatalf("steps %s", got)
	}
	wantBodies := len(aliceSeqs) + (len(aliceSeqs)+1)/2
	if rep.Pseudonym != alice || rep.Entries != len(aliceSeqs) || len(rep.Removed) != wantBodies || len(rep.Redactions) != 1 || rep.Resumed {
		t.Fatalf("report %+v: want %d entries, %d bodies, one redaction", rep, len(aliceSeqs), wantBodies)
	}
	if rep.Keys != len(aliceSeqs)+3 { // bodies, secret, reverse mapping, mapping
		t.Fatalf("deleted %d keys, want %d", rep.Keys, len(aliceSeqs)+3)
	}
	if rep.ValueLog && rep.Scrubbed != rep.Keys {
		t.Fatalf("scrubbed %d value-log records, want %d", rep.Scrubbed, rep.Keys)
	}

	// The redaction entry: signed like any entry, naming nobody.
	r, err := l.Read(ctx, rep.Redactions[0])
	if err != nil {
		t.Fatal(err)
	}
	if r.Envelope.Kind != ledger.KindRedaction || r.Envelope.Subject != "" || r.Envelope.Actor != "op:dpo" || r.Envelope.Time != 5e9 {
		t.Fatalf("redaction entry %+v", r.Envelope)
	}
	if bytes.Contains(r.Params(), []byte(alice)) || bytes.Contains(r.Params(), []byte("alice")) {
		t.Fatalf("the redaction names the subject: %s", r.Params())
	}
	checkForgotten(t, l, before, alice, aliceSeqs, bobSeqs)

	// The subject is gone for writers: its new entries are refused, its id
	// finds a new subject.
	if _, err := l.Append(ctx, personalEntry(alice, "ALICE", 1)); !errors.Is(err, ledger.ErrForgotten) {
		t.Fatalf("append for the forgotten subject: %v, want ErrForgotten", err)
	}
	if _, err := l.Forget(ctx, alice, ledger.ForgetOptions{}); !errors.Is(err, ledger.ErrForgotten) {
		t.Fatalf("forget %s again: %v, want ErrForgotten", alice, err)
	}
	if _, err := l.Forget(ctx, "badge:alice", ledger.ForgetOptions{}); !errors.Is(err, ledger.ErrUnknownSubject) {
		t.Fatalf("forget badge:alice again: %v, want ErrUnknownSubject", err)
	}
	size := l.Size()
	again, err := l.Pseudonym(ctx, "badge:alice")
	if err != nil || again == alice {
		t.Fatalf("pseudonym of a forgotten id: %s, %v (was %s)", again, err, alice)
	}
	subs, err := l.Subjects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]ledger.Subject{
		alice: {Pseudonym: alice, Entries: len(aliceSeqs), State: ledger.SubjectForgotten},
		bob:   {Pseudonym: bob, Entries: len(bobSeqs), State: ledger.SubjectLive},
		again: {Pseudonym: again, State: ledger.SubjectLive},
	}
	if len(subs) != len(want) {
		t.Fatalf("subjects %+v", subs)
	}
	for _, sub := range subs {
		if want[sub.Pseudonym] != sub {
			t.Fatalf("subject %+v, want %+v", sub, want[sub.Pseudonym])
		}
	}
	// A subject without bodies: its secret and mapping go, no redaction.
	rep, err = l.Forget(ctx, again, ledger.ForgetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != 0 || len(rep.Removed) != 0 || len(rep.Redactions) != 0 || rep.Keys != 3 || l.Size() != size {
		t.Fatalf("forgetting a subject without bodies: %+v, size %d (was %d)", rep, l.Size(), size)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopened: the same, and the forgotten pseudonym stays unknown.
	s = h.Reopen(t, s)
	l = open(t, s, ledger.Options{CheckpointEvery: 32})
	defer l.Close()
	if l.Size() != size {
		t.Fatalf("reopened with %d entries, want %d", l.Size(), size)
	}
	checkForgotten(t, l, before, alice, aliceSeqs, bobSeqs)
	if _, err := l.Append(ctx, personalEntry(alice, "ALICE", 1)); !errors.Is(err, ledger.ErrUnknownSubject) {
		t.Fatalf("append for the forgotten subject after reopening: %v, want ErrUnknownSubject", err)
	}
	if p, err := l.PendingErasure(ctx); p != "" || err != nil {
		t.Fatalf("pending erasure %q, %v", p, err)
	}
}

// ledgerState is what an erasure must keep: the envelopes and the stored
// checkpoints.
type ledgerState struct {
	size        int64
	envelopes   [][]byte
	checkpoints map[int64][]byte
}

func snapshot(t *testing.T, l *ledger.Ledger) ledgerState {
	t.Helper()
	ctx := context.Background()
	st := ledgerState{size: l.Size(), checkpoints: map[int64][]byte{}}
	for seq := uint64(0); seq < uint64(st.size); seq++ {
		r, err := l.Read(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		st.envelopes = append(st.envelopes, r.Block)
	}
	cps, err := l.Checkpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, cp := range cps {
		st.checkpoints[cp.Size] = cp.Note
	}
	if len(cps) < 5 {
		t.Fatalf("only %d checkpoints", len(cps))
	}
	return st
}

// checkForgotten checks that the subject's bodies are gone and listed,
// everyone else's are there, every envelope and earlier checkpoint is
// byte-identical, and the ledger verifies.
func checkForgotten(t *testing.T, l *ledger.Ledger, before ledgerState, p string, gone, kept []uint64) {
	t.Helper()
	ctx := context.Background()
	for seq := uint64(0); seq < uint64(before.size); seq++ {
		r, err := l.Read(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(r.Block, before.envelopes[seq]) {
			t.Fatalf("envelope %d changed", seq)
		}
	}
	for _, seq := range gone {
		r, _ := l.Read(ctx, seq)
		if r.ParamsBlock != nil || r.ResultBlock != nil || r.Envelope.Subject != p {
			t.Fatalf("seq %d of the forgotten subject still has bodies (or names %q)", seq, r.Envelope.Subject)
		}
	}
	for _, seq := range kept {
		r, _ := l.Read(ctx, seq)
		if !bytes.Contains(r.Params(), []byte("BOB badge-in")) {
			t.Fatalf("seq %d of another subject lost its params: %q", seq, r.Params())
		}
	}
	cps, err := l.Checkpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, cp := range cps {
		if old, ok := before.checkpoints[cp.Size]; ok {
			if !bytes.Equal(old, cp.Note) {
				t.Fatalf("checkpoint of size %d changed", cp.Size)
			}
			n++
		}
	}
	if n != len(before.checkpoints) {
		t.Fatalf("%d of %d earlier checkpoints are still stored", n, len(before.checkpoints))
	}
	rep, err := l.Verify(ctx, nil)
	if err != nil {
		t.Fatalf("verify after erasure: %v", err)
	}
	if rep.Redacted != len(gone)+(len(gone)+1)/2 || rep.Unerased != 0 {
		t.Fatalf("verify: %d bodies redacted, %d unerased; want %d, 0", rep.Redacted, rep.Unerased, len(gone)+(len(gone)+1)/2)
	}
	res, err := l.Subjects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res {
		if s.Pseudonym == p && s.State != ledger.SubjectForgotten {
			t.Fatalf("subject %+v", s)
		}
	}
}

// testForgetUnderLoad forgets a subject while other goroutines append its
// entries and others': every entry of the subject that was accepted is
// erased, every later one refused, and the ledger verifies.
func testForgetUnderLoad(t *testing.T, h Harness) {
	ctx := context.Background()
	s := h.New(t)
	defer s.Close()
	l := open(t, s, ledger.Options{MaxBatch: 16})
	defer l.Close()
	carol, _ := l.Pseudonym(ctx, "carol")
	dave, _ := l.Pseudonym(ctx, "dave")
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := map[uint64]bool{}
	refused := 0
	stop := make(chan struct{})
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p := dave
				if w%2 == 0 {
					p = carol
				}
				pe, err := l.Append(ctx, personalEntry(p, "LOAD", i))
				if errors.Is(err, ledger.ErrForgotten) && p == carol {
					mu.Lock()
					refused++
					mu.Unlock()
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				if p == carol {
					mu.Lock()
					accepted[pe.Seq()] = true
					mu.Unlock()
				}
				if i%50 == 0 {
					pe.Wait(ctx)
				}
			}
		}(w)
	}
	for l.Size() < 400 {
		l.WaitSize(ctx, l.Size())
	}
	rep, err := l.Forget(ctx, carol, ledger.ForgetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for l.Size() < int64(rep.Redactions[0])+200 {
		l.WaitSize(ctx, l.Size())
	}
	close(stop)
	wg.Wait()
	if refused == 0 {
		t.Fatal("no append for the subject was refused during or after the erasure")
	}
	if rep.Entries != len(accepted) {
		t.Fatalf("erased %d entries, %d were accepted", rep.Entries, len(accepted))
	}
	for seq := range accepted {
		r, err := l.Read(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if r.ParamsBlock != nil || r.ResultBlock != nil {
			t.Fatalf("seq %d of the forgotten subject kept its bodies", seq)
		}
	}
	if _, err := l.Verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
}
