package ledger_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/ledger/ledgertest"
)

// forgetChild forgets OSMOSE_FORGET_SUBJECT in the ledger in dir. With
// OSMOSE_FORGET_STOP=STEP:N it stops (prints "stopped" and sleeps, to be
// killed) as soon as the erasure's step STEP reports N done. With
// OSMOSE_FORGET_FRESH=MARKER it first makes the subject and appends
// freshEntries entries carrying MARKER.
const freshEntries = 300

func forgetChild(dir string) error {
	ctx := context.Background()
	subject := os.Getenv("OSMOSE_FORGET_SUBJECT")
	stopStep, stopAt := "", 0
	if st := os.Getenv("OSMOSE_FORGET_STOP"); st != "" {
		name, n, _ := strings.Cut(st, ":")
		stopStep = name
		stopAt, _ = strconv.Atoi(n)
	}
	s, err := ledger.OpenBadger(dir, ledger.BadgerOptions{})
	if err != nil {
		return err
	}
	l, err := ledger.Open(ctx, s, ledger.Options{Key: ledgertest.Key(1), CheckpointEvery: 500})
	if err != nil {
		return err
	}
	fmt.Println("open")
	if marker := os.Getenv("OSMOSE_FORGET_FRESH"); marker != "" {
		// A subject whose entries are all in Badger's memtable and after
		// its value-log head: a kill makes Badger replay their (scrubbed)
		// records.
		p, err := l.Pseudonym(ctx, subject)
		if err != nil {
			return err
		}
		var last *ledger.Pending
		for i := 0; i < freshEntries; i++ {
			if last, err = l.Append(ctx, markedEntry(p, marker, i)); err != nil {
				return err
			}
		}
		if err := last.Wait(ctx); err != nil {
			return err
		}
		fmt.Println("pseudonym", p)
	}
	_, err = l.Forget(ctx, subject, ledger.ForgetOptions{Time: 7, Actor: "op:test", Progress: func(step ledger.ForgetStep, done, total int) {
		if string(step) == stopStep && done >= stopAt {
			fmt.Printf("stopped %s %d/%d\n", step, done, total)
			time.Sleep(time.Hour) // until the parent's kill -9
		}
	}})
	if err != nil {
		return err
	}
	fmt.Println("forgotten")
	if err := l.Close(); err != nil {
		return err
	}
	return s.Close()
}

// TestForgetCrash kills (SIGKILL) a child process forgetting a subject at
// seeded points: before anything is written, after the job record, after
// the redaction entries, between delete transactions, in the middle of the
// value-log scrub, after the end, and at a random moment; then twice more
// for a subject whose entries the child has just written, so that Badger
// replays their scrubbed value-log records on reopening. After each kill
// the ledger verifies as it is; a re-run of the erasure (by id or by
// pseudonym) completes it; the ledger verifies again; and a byte scan of
// the directory finds no marker of any forgotten subject and every marker
// of the others.
func TestForgetCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes")
	}
	seed := *crashSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -crash.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x5bd1e995))
	ctx := context.Background()
	dir := t.TempDir()

	// Seven subjects of 450 entries each among 900 others.
	type person struct {
		id, pseudonym, marker string
		bodies, entries       int
		seqs                  []uint64
		forgotten             bool
	}
	people := make([]*person, 7, 9)
	s, err := ledger.OpenBadger(dir, ledger.BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.Open(ctx, s, ledger.Options{Key: ledgertest.Key(1), CheckpointEvery: 500, MaxBatch: 512})
	if err != nil {
		t.Fatal(err)
	}
	for k := range people {
		p := &person{id: fmt.Sprintf("person-%d@example.org", k), marker: fmt.Sprintf("CRASHMARK-%d-%x", k, rng.Uint32())}
		if p.pseudonym, err = l.Pseudonym(ctx, p.id); err != nil {
			t.Fatal(err)
		}
		people[k] = p
	}
	var last *ledger.Pending
	for i := 0; i < 9*450; i++ {
		e := ledger.Entry{Kind: ledger.KindCall, Actor: "dev:x", Device: "b/f1/light", Time: int64(i), Params: []byte("on")}
		var who *person
		if k := i % 9; k < len(people) {
			who = people[k]
			e = markedEntry(who.pseudonym, who.marker, i)
			who.bodies += bodiesOf(e)
		}
		if last, err = l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
		if who != nil {
			who.seqs = append(who.seqs, last.Seq())
			who.entries++
		}
	}
	if err := last.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	cps, err := l.Checkpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	s.Close()

	steps := []string{"locate", "job", "redact", "delete", "scrub", "done", "random"}
	rng.Shuffle(len(steps), func(i, j int) { steps[i], steps[j] = steps[j], steps[i] })
	// Two subjects made by the child just before it forgets them.
	steps = append(steps, "fresh-scrub", "fresh-done")
	for k := 7; k < 9; k++ {
		p := &person{id: fmt.Sprintf("fresh-%d@example.org", k), marker: fmt.Sprintf("FRESHMARK-%d-%x", k, rng.Uint32()), entries: freshEntries}
		for i := 0; i < freshEntries; i++ {
			p.bodies += bodiesOf(markedEntry("", p.marker, i))
		}
		people = append(people, p)
	}
	for round, mode := range steps {
		who := people[round]
		stop := ""
		var env []string
		if fresh, ok := strings.CutPrefix(mode, "fresh-"); ok {
			mode = fresh
			env = append(env, "OSMOSE_FORGET_FRESH="+who.marker)
		}
		switch mode {
		case "delete":
			stop = "delete:1" // after the first transaction of 256 keys
		case "scrub":
			stop = fmt.Sprintf("scrub:%d", 1+rng.IntN(who.bodies/2+2)) // records: one per entry, and 3
		case "random":
		default:
			stop = mode + ":1"
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "OSMOSE_LEDGER_FORGET_CHILD="+dir, "OSMOSE_FORGET_SUBJECT="+who.id, "OSMOSE_FORGET_STOP="+stop)
		cmd.Env = append(cmd.Env, env...)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 8)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		var delay time.Duration
		stopped := ""
		if mode == "random" {
			if <-lines == "open" {
				delay = time.Duration(rng.IntN(60)) * time.Millisecond
				time.Sleep(delay) // a kill at an arbitrary moment is the point
			}
		} else {
			for line := range lines {
				if p, ok := strings.CutPrefix(line, "pseudonym "); ok {
					who.pseudonym = p
				}
				if strings.HasPrefix(line, "stopped") {
					stopped = line
					break
				}
			}
			if stopped == "" {
				cmd.Wait()
				t.Fatalf("round %d: the child never reached %s: %s", round, stop, stderr.String())
			}
		}
		cmd.Process.Kill()
		for range lines {
		}
		err = cmd.Wait()
		if ee, ok := err.(*exec.ExitError); (!ok && mode != "random") || (ok && ee.ExitCode() == 3) {
			t.Fatalf("round %d: child: %v: %s", round, err, stderr.String())
		}

		s, err := ledger.OpenBadger(dir, ledger.BadgerOptions{})
		if err != nil {
			t.Fatalf("round %d: reopen after a kill at %s: %v", round, mode, err)
		}
		l, err := ledger.Open(ctx, s, ledger.Options{Key: ledgertest.Key(1), CheckpointEvery: 500})
		if err != nil {
			t.Fatalf("round %d: reopen after a kill at %s: %v", round, mode, err)
		}
		pending, err := l.PendingErasure(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wantPending := map[string]string{"locate": "", "job": who.pseudonym, "redact": who.pseudonym, "delete": who.pseudonym, "scrub": who.pseudonym, "done": ""}
		if want, ok := wantPending[mode]; ok && pending != want {
			t.Fatalf("round %d: killed at %s, pending erasure %q, want %q", round, mode, pending, want)
		}
		// Sound as it is, before any re-run.
		if _, err := l.Verify(ctx, nil); err != nil {
			t.Fatalf("round %d: killed at %s (%s): %v", round, mode, stopped, err)
		}
		subject := who.id
		if round%2 == 1 {
			subject = who.pseudonym
		}
		rep, err := l.Forget(ctx, subject, ledger.ForgetOptions{Time: 8, Actor: "op:test"})
		switch {
		case err == nil:
			if rep.Pseudonym != who.pseudonym || rep.Entries != who.entries || len(rep.Removed) != who.bodies {
				t.Fatalf("round %d: re-run erased %s: %d entries, %d bodies; want %s: %d entries, %d bodies", round, rep.Pseudonym, rep.Entries, len(rep.Removed), who.pseudonym, who.entries, who.bodies)
			}
			if rep.Resumed != (pending != "") {
				t.Fatalf("round %d: resumed %v with pending %q", round, rep.Resumed, pending)
			}
		case pending == "" && (mode == "done" || mode == "random") && (errors.Is(err, ledger.ErrUnknownSubject) || errors.Is(err, ledger.ErrForgotten)):
			// The killed run had finished.
		default:
			t.Fatalf("round %d: re-run after a kill at %s: %v", round, mode, err)
		}
		who.forgotten = true
		vr, err := l.Verify(ctx, nil)
		if err != nil {
			t.Fatalf("round %d: after the re-run: %v", round, err)
		}
		want := 0
		for _, p := range people {
			if p.forgotten {
				want += p.bodies
			}
		}
		if vr.Redacted != want || vr.Unerased != 0 {
			t.Fatalf("round %d: verify: %d bodies redacted, %d unerased; want %d, 0", round, vr.Redacted, vr.Unerased, want)
		}
		for _, seq := range who.seqs[:min(20, len(who.seqs))] {
			if r, err := l.Read(ctx, seq); err != nil || r.ParamsBlock != nil || r.ResultBlock != nil {
				t.Fatalf("round %d: seq %d kept its bodies (%v)", round, seq, err)
			}
		}
		after, err := l.Checkpoints(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i, cp := range cps {
			if !bytes.Equal(after[i].Note, cp.Note) {
				t.Fatalf("round %d: the checkpoint of size %d changed", round, cp.Size)
			}
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		needles := make([][]byte, len(people))
		for k, p := range people {
			needles[k] = []byte(p.marker)
		}
		for k, n := range scanDir(t, dir, needles...) {
			p := people[k]
			if p.forgotten && n != 0 || !p.forgotten && p.pseudonym != "" && n < p.bodies {
				t.Fatalf("round %d (kill at %s %s): the marker of %s (forgotten: %v) is on disk %d times (%d bodies)", round, mode, stopped, p.pseudonym, p.forgotten, n, p.bodies)
			}
		}
		at := stopped
		if mode == "random" {
			at = fmt.Sprintf("after %v", delay)
		}
		t.Logf("round %d: killed at %s (%s); pending erasure %q; the re-run completed it", round, steps[round], at, pending)
	}
}
