package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/codec/dagjson"
	"github.com/ipld/go-ipld-prime/node/basicnode"

	"github.com/osmose-os/osmose/ledger"
)

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestLedgerExitCodes checks the exit status of each kind of outcome,
// which the scripts can only tell apart as zero or not.
func TestLedgerExitCodes(t *testing.T) {
	data := t.TempDir()
	if _, err := makeTestLedger(data, 20); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"ledger", "verify", "--data", data}, 0},
		{[]string{"ledger", "verify", "--help"}, 0},
		{[]string{"ledger", "verify"}, 2},
		{[]string{"ledger", "verify", "--data", data, "--nope"}, 2},
		{[]string{"ledger", "verify", "--data", data, "extra"}, 2},
		{[]string{"ledger", "show", "--data", data, "not-a-cid"}, 2},
		{[]string{"ledger", "show", "--data", data, "20"}, 1},
		{[]string{"ledger", "show", "--data", data, "19"}, 0},
		{[]string{"ledger", "verify", "--data", filepath.Join(data, "nowhere")}, 1},
		{[]string{"ledger", "verify", "--data", t.TempDir()}, 1},
		{[]string{"ledger", "proof", "--data", data, "--size", "3", "1"}, 1},
		{[]string{"ledger", "tail", "--data", data, "--interval", "0s", "-f"}, 2},
		{[]string{"ledger"}, 2},
	} {
		var out, errb bytes.Buffer
		code := runMain(context.Background(), &env{stdout: &out, stderr: &errb}, c.args)
		if code != c.code {
			t.Errorf("osmose %s: exit %d, want %d (stderr %q)", strings.Join(c.args, " "), code, c.code, errb.String())
		}
		if code != 0 && c.code != 0 && !strings.Contains(strings.Join(c.args, " "), "--nope") && strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("osmose %s: want a one-line error, got %q", strings.Join(c.args, " "), errb.String())
		}
	}
}

// TestEnvelopeDAGJSON checks show's dag-json against go-ipld-prime's
// dagjson encoder, on an envelope that encoder can write, and that an
// interface id above 2^63 comes out exact.
func TestEnvelopeDAGJSON(t *testing.T) {
	ctx := context.Background()
	l, err := ledger.Open(ctx, ledger.NewMemStore(), ledger.Options{Key: testLedgerKey(1), Rand: rand.NewChaCha8([32]byte{})})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	small := benchEntry(1)
	small.Interface, small.Reason = 42, `a "quoted" <note> & \ more`
	for i, e := range []ledger.Entry{small, benchEntry(2)} {
		seq, _, err := l.Commit(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		r, err := l.Read(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		got, err := envelopeDAGJSON(r.Block)
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 && !bytes.Contains(got, []byte(`"iface":"0xa1b2c3d4e5f60718"`)) {
			t.Errorf("dag-json of a large interface id: %s", got)
		}
		nb := basicnode.Prototype.Any.NewBuilder()
		if err := dagcbor.Decode(nb, bytes.NewReader(r.Block)); err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		if err := dagjson.Encode(nb.Build(), &want); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("dag-json:\n got %s\nwant %s", got, want.Bytes())
		}
	}
}

// TestTailFollow follows a ledger that grows while tail -f waits, with the
// ticks in the test's hands, then stops when a kernel takes the lock.
func TestTailFollow(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	data := t.TempDir()
	if _, err := makeTestLedger(data, 5); err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	tl := &tailer{e: &env{stdout: &out, stderr: &out}, lf: &ledgerFlags{data: data}}
	size, err := tl.print(ctx, -2)
	if err != nil || size != 5 {
		t.Fatalf("print: size %d, %v", size, err)
	}
	tick := make(chan time.Time)
	handled := make(chan struct{})
	tl.handled = func() { handled <- struct{}{} }
	done := make(chan error, 1)
	go func() { done <- tl.follow(ctx, size, tick) }()
	stopped := false
	defer func() {
		if !stopped { // the follower must not outlive the directory
			cancel()
			for {
				select {
				case <-handled:
					continue
				case <-done:
				}
				break
			}
		}
	}()

	appendMore := func(from, to int) {
		t.Helper()
		s, err := ledger.OpenBadger(filepath.Join(data, "ledger"), ledger.BadgerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		l, err := ledger.Open(ctx, s, ledger.Options{Key: testLedgerKey(1), Origin: "osmose/test", Rand: rand.NewChaCha8([32]byte{1})})
		if err != nil {
			t.Fatal(err)
		}
		if err := appendTestEntries(ctx, l, from, to); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	step := func() { tick <- time.Time{}; <-handled }

	step()
	appendMore(5, 8)
	step()
	appendMore(8, 9)
	step()
	var seqs []string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		seqs = append(seqs, strings.Fields(line)[0])
	}
	if got := strings.Join(seqs, " "); got != "3 4 5 6 7 8" {
		t.Errorf("followed seqs %q, want %q\n%s", got, "3 4 5 6 7 8", out.String())
	}

	// A kernel takes the ledger: follow stops with a one-line error.
	s, err := ledger.OpenBadger(filepath.Join(data, "ledger"), ledger.BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tick <- time.Time{}
	<-handled
	err = <-done
	stopped = true
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(err.Error(), "in use by another process") {
		t.Errorf("follow of a held ledger: %v", err)
	}
}

// TestTailFollowCancel: interrupting tail -f is a clean exit.
func TestTailFollowCancel(t *testing.T) {
	data := t.TempDir()
	if _, err := makeTestLedger(data, 3); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tl := &tailer{e: &env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}, lf: &ledgerFlags{data: data}}
	cancel()
	if err := tl.follow(ctx, 3, make(chan time.Time)); err != nil {
		t.Errorf("follow after cancel: %v", err)
	}
}

func TestLatencyHist(t *testing.T) {
	var h latencyHist
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, time.Second}} {
		got := h.quantile(c.q)
		if d := float64(got-c.want) / float64(c.want); d < -0.02 || d > 0.02 {
			t.Errorf("quantile %v = %v, want %v ± 2%%", c.q, got, c.want)
		}
	}
	for _, d := range []time.Duration{0, 1, 63, 64, 65, 127, 128, 1 << 20, 1<<40 + 12345} {
		if b := bucketValue(latencyBucket(d)); float64(b) < float64(d)*0.98 || float64(b) > float64(d)*1.02+1 {
			t.Errorf("bucket of %d holds %d", d, b)
		}
	}
}

// TestBenchLedgerSmall runs the bench end to end on a few entries.
func TestBenchLedgerSmall(t *testing.T) {
	var out, errb bytes.Buffer
	code := runMain(context.Background(), &env{stdout: &out, stderr: &errb},
		[]string{"bench", "ledger", "--entries", "3000", "--appenders", "8", "--window", "4", "--dir", t.TempDir(), "--json"})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{`"entries_per_sec"`, `"ratio"`, `"p99"`, `"verify_median_us"`, `"heap_inuse_mb"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %s in %s", want, out.String())
		}
	}
	if !strings.Contains(out.String(), fmt.Sprintf(`"bytes_bound": %d`, 32*12)) {
		t.Errorf("proof bound for 3001 entries is not 384 bytes: %s", out.String())
	}
	// The raw baseline writes what the ledger wrote: as many transactions,
	// keys and bytes.
	var res benchLedgerResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	L, R := res.Ledger, res.Raw
	if L.Batches == 0 || L.Keys == 0 || L.Bytes == 0 {
		t.Errorf("the ledger wrote %d transactions, %d keys, %d bytes", L.Batches, L.Keys, L.Bytes)
	}
	if R.Transactions != L.Batches || R.Keys != L.Keys || R.Bytes != L.Bytes {
		t.Errorf("raw baseline: %d transactions, %d keys, %d bytes; the ledger: %d, %d, %d",
			R.Transactions, R.Keys, R.Bytes, L.Batches, L.Keys, L.Bytes)
	}
}
