package ledger

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// BenchmarkForget forgets one data subject with 10,000 entries in a Badger
// ledger of 1,000,000 entries, and (with OSMOSE_BENCH_FORGET_10M=1) of
// 10,000,000: the cost must follow the subject's entries, not the
// ledger's size. Building the ledgers takes about 10 s and 90 s, once per
// test binary (or once, kept, in $OSMOSE_FORGET_BENCH_DIR). Each run
// forgets a fresh subject, and a ledger holds 12, so run it as
//
//	go test ./ledger -run '^$' -bench Forget -benchtime 1x -count 3
//
// The ledger: entry i belongs to target subject i mod (N/10,000) when
// that is below 12, else to one of 1,000 other subjects when i is a
// multiple of 4, else to nobody; every entry is a typical call with a
// 20-byte params and a 16-byte result body. The timer covers Forget only:
// the store is opened (and its log replayed) before.
func BenchmarkForget(b *testing.B) {
	for _, n := range []int{1_000_000, 10_000_000} {
		b.Run(fmt.Sprintf("entries=%dM", n/1_000_000), func(b *testing.B) {
			if n > 1_000_000 && os.Getenv("OSMOSE_BENCH_FORGET_10M") == "" {
				b.Skip("set OSMOSE_BENCH_FORGET_10M=1 to build and erase in a 10-million-entry ledger")
			}
			benchForget(b, n)
		})
	}
}

const (
	forgetBenchTargets = 12
	forgetBenchEntries = 10_000 // per target subject
	forgetBenchOthers  = 1000
)

var forgetBench struct {
	sync.Mutex
	dirs map[int]string
	tmp  []string
}

// CleanupBenchForTest removes the ledgers BenchmarkForget built in
// temporary directories; TestMain calls it.
func CleanupBenchForTest() {
	forgetBench.Lock()
	defer forgetBench.Unlock()
	for _, d := range forgetBench.tmp {
		os.RemoveAll(d)
	}
}

func forgetBenchDir(b *testing.B, n int) string {
	forgetBench.Lock()
	defer forgetBench.Unlock()
	if d, ok := forgetBench.dirs[n]; ok {
		return d
	}
	var dir string
	if root := os.Getenv("OSMOSE_FORGET_BENCH_DIR"); root != "" {
		dir = filepath.Join(root, strconv.Itoa(n))
	} else {
		tmp, err := os.MkdirTemp("", "osmose-forget-bench-")
		if err != nil {
			b.Fatal(err)
		}
		forgetBench.tmp = append(forgetBench.tmp, tmp)
		dir = filepath.Join(tmp, "ledger")
	}
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); err != nil {
		t0 := time.Now()
		buildForgetBench(b, dir, n)
		b.Logf("built a %d-entry ledger in %v", n, time.Since(t0).Round(time.Millisecond))
	}
	if forgetBench.dirs == nil {
		forgetBench.dirs = map[int]string{}
	}
	forgetBench.dirs[n] = dir
	return dir
}

func buildForgetBench(b *testing.B, dir string, n int) {
	ctx := context.Background()
	s, err := OpenBadger(dir, BadgerOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	l, err := Open(ctx, s, Options{Key: testKey(1)})
	if err != nil {
		b.Fatal(err)
	}
	targets := make([]string, forgetBenchTargets)
	for i := range targets {
		if targets[i], err = l.Pseudonym(ctx, fmt.Sprintf("target-%d", i)); err != nil {
			b.Fatal(err)
		}
	}
	others := make([]string, forgetBenchOthers)
	for i := range others {
		if others[i], err = l.Pseudonym(ctx, fmt.Sprintf("other-%d", i)); err != nil {
			b.Fatal(err)
		}
	}
	stride := n / forgetBenchEntries
	var last *Pending
	for i := 1; i < n; i++ {
		e := makeBenchEntry(i)
		if k := i % stride; k < forgetBenchTargets {
			e.Subject = targets[k]
		} else if i%4 == 0 {
			e.Subject = others[(i/4)%forgetBenchOthers]
		}
		if last, err = l.Append(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
	if err := last.Wait(ctx); err != nil {
		b.Fatal(err)
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
}

func benchForget(b *testing.B, n int) {
	ctx := context.Background()
	dir := forgetBenchDir(b, n)
	s, err := OpenBadger(dir, BadgerOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	l, err := Open(ctx, s, Options{Key: testKey(1)})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	var subjects []string
	for k := 0; k < forgetBenchTargets && len(subjects) < b.N; k++ {
		id := fmt.Sprintf("target-%d", k)
		if _, err := l.resolveSubject(ctx, id); err == nil {
			subjects = append(subjects, id)
		}
	}
	if len(subjects) < b.N {
		b.Fatalf("%d of the ledger's %d target subjects are left, b.N is %d: run with -benchtime 1x, or remove %s", len(subjects), forgetBenchTargets, b.N, dir)
	}
	var phases [6]time.Duration
	order := map[ForgetStep]int{StepLocate: 0, StepJob: 1, StepRedact: 2, StepDelete: 3, StepScrub: 4, StepDone: 5}
	var prev time.Time
	progress := func(step ForgetStep, done, total int) {
		now := time.Now()
		if done == total {
			phases[order[step]] += now.Sub(prev)
			prev = now
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		prev = time.Now()
		rep, err := l.Forget(ctx, subjects[i], ForgetOptions{Time: 1, Actor: "op:bench", Progress: progress})
		if err != nil {
			b.Fatal(err)
		}
		if rep.Entries != forgetBenchEntries-boolInt(subjects[i] == "target-0") || rep.Scrubbed != rep.Keys {
			b.Fatalf("erased %d entries, scrubbed %d of %d keys' records", rep.Entries, rep.Scrubbed, rep.Keys)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/forget")
	for i, name := range []string{"locate", "job", "redact", "delete", "scrub", "done"} {
		b.ReportMetric(float64(phases[i].Microseconds())/1000/float64(b.N), name+"-ms")
	}
	if _, err := l.resolveSubject(ctx, subjects[0]); !errors.Is(err, ErrUnknownSubject) {
		b.Fatalf("the forgotten subject resolves: %v", err)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
