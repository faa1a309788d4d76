package ledger_test

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/ledger/ledgertest"
)

var (
	crashRounds = flag.Int("crash.rounds", 10, "kill -9 rounds in TestCrashRecovery")
	crashSeed   = flag.Uint64("crash.seed", 0, "seed of TestCrashRecovery's kill times (0: from the clock)")
)

func TestMain(m *testing.M) {
	if dir := os.Getenv("OSMOSE_LEDGER_FORGET_CHILD"); dir != "" {
		if err := forgetChild(dir); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	if dir := os.Getenv("OSMOSE_LEDGER_CRASH_CHILD"); dir != "" {
		if err := crashChild(dir); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	code := m.Run()
	ledger.CleanupBenchForTest()
	os.Exit(code)
}

// crashEntry is the entry the crash child appends at seq: content is a
// function of the seq, so the parent can check every recovered entry.
func crashEntry(seq uint64) ledger.Entry {
	e := ledger.Entry{
		Kind: ledger.KindCall, Actor: fmt.Sprintf("dev:%d", seq%13), Grant: seq%97 + 1,
		Device: fmt.Sprintf("b/f%d/r%d", seq%3, seq%11), Time: int64(seq) * 1000,
		Params: []byte("params " + strconv.FormatUint(seq, 10)),
	}
	if seq%5 == 0 {
		e.Result = make([]byte, 3000) // some larger bodies too
		copy(e.Result, "result "+strconv.FormatUint(seq, 10))
	}
	return e
}

// crashChild appends forever, printing "ack SEQ" for every durable entry,
// until it is killed.
func crashChild(dir string) error {
	ctx := context.Background()
	s, err := ledger.OpenBadger(dir, ledger.BadgerOptions{})
	if err != nil {
		return err
	}
	l, err := ledger.Open(ctx, s, ledger.Options{Key: ledgertest.Key(1), MaxBatch: 512, CheckpointEvery: 1000, IndexEvery: 700})
	if err != nil {
		return err
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "open %d\n", l.Size())
	out.Flush()
	acks := make(chan *ledger.Pending, 256)
	var werr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for p := range acks {
			if err := p.Wait(ctx); err != nil {
				werr = err
				return
			}
			fmt.Fprintf(out, "ack %d\n", p.Seq())
			if len(acks) == 0 || p.Seq()%64 == 0 {
				out.Flush()
			}
		}
	}()
	for seq := uint64(l.Size()); ; seq++ {
		p, err := l.Append(ctx, crashEntry(seq))
		if err != nil {
			return err
		}
		if p.Seq() != seq {
			return fmt.Errorf("append gave seq %d, want %d", p.Seq(), seq)
		}
		acks <- p
		if werr != nil {
			return werr
		}
	}
}

// TestCrashRecovery kills a child process appending to a Badger ledger at
// random moments (seeded), many times over the same directory, and checks
// each time that the reopened ledger holds every entry the child saw
// durable, exactly as appended, and verifies.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes")
	}
	seed := *crashSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -crash.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	dir := t.TempDir()
	ctx := context.Background()
	for round := 0; round < *crashRounds; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "OSMOSE_LEDGER_CRASH_CHILD="+dir)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		maxAck := int64(-1)
		opened := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			sc := bufio.NewScanner(stdout)
			first := true
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				if len(f) == 2 && f[0] == "ack" {
					n, _ := strconv.ParseInt(f[1], 10, 64)
					maxAck = max(maxAck, n)
				}
				if first {
					close(opened)
					first = false
				}
			}
			if first {
				close(opened)
			}
		}()
		// Kill at a random moment: sometimes while the ledger is still
		// opening, mostly while it appends.
		var delay time.Duration
		if rng.IntN(4) == 0 {
			delay = time.Duration(rng.IntN(30)) * time.Millisecond
		} else {
			<-opened
			delay = time.Duration(5+rng.IntN(250)) * time.Millisecond
		}
		time.Sleep(delay) // the point of the test is a kill at an arbitrary moment
		cmd.Process.Kill()
		<-done
		err = cmd.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 3 {
			t.Fatalf("round %d: child did not die by the kill (%v): %s", round, err, stderr.String())
		}

		s, err := ledger.OpenBadger(dir, ledger.BadgerOptions{})
		if err != nil {
			t.Fatalf("round %d: reopen store: %v", round, err)
		}
		l, err := ledger.Open(ctx, s, ledger.Options{Key: ledgertest.Key(1), CheckpointEvery: 1000, IndexEvery: 700})
		if err != nil {
			t.Fatalf("round %d: reopen ledger after kill at %v: %v", round, delay, err)
		}
		if l.Size() <= maxAck {
			t.Fatalf("round %d: child saw seq %d durable, the ledger has %d entries", round, maxAck, l.Size())
		}
		if _, err := l.Verify(ctx, nil); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		// Every recovered entry is exactly what was appended.
		for seq := uint64(1); seq < uint64(l.Size()); seq += 1 + uint64(rng.IntN(7)) {
			r, err := l.Read(ctx, seq)
			if err != nil {
				t.Fatal(err)
			}
			want := crashEntry(seq)
			if string(r.Params()) != string(want.Params) || r.Envelope.Actor != want.Actor || string(r.Result()) != string(want.Result) {
				t.Fatalf("round %d: seq %d recovered as %+v", round, seq, r.Envelope)
			}
		}
		n := 0
		l.Lookup(ctx, ledger.ByGrant, "5", 0, uint64(l.Size()), func(uint64) bool { n++; return true })
		wantN := 0
		for seq := uint64(1); seq < uint64(l.Size()); seq++ {
			if seq%97+1 == 5 {
				wantN++
			}
		}
		if n != wantN {
			t.Fatalf("round %d: grant index has %d entries, want %d", round, n, wantN)
		}
		t.Logf("round %d: killed after %v, %d acked, %d recovered", round, delay, maxAck+1, l.Size())
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
