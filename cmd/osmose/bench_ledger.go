package main

// osmose bench ledger: the ledger's append rate and durability latency
// under concurrent appenders, measured against raw Badger writing the same
// bytes in the same run, plus inclusion-proof size and verification time.

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ds "github.com/ipfs/go-datastore"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/osmose-os/osmose/ledger"
)

const benchLedgerDoc = `
Bench ledger measures, in one process, on Badger stores in a temporary
directory:

 1. the ledger: --appenders goroutines append typical call entries (actor,
    grant, device path, interface id, small params and result bodies), each
    keeping --window appends outstanding; it reports entries/s until the
    last is durable (a sync per group commit), the append-to-durable
    latency (p50, p99, max), and heap and RSS sampled during the run;
 2. raw Badger: the same bytes written directly, from one writer: a
    counting wrapper around the ledger's store records each transaction it
    commits (its keys, key bytes, and the count and bytes of its values in
    power-of-two size classes), and the baseline commits as many
    transactions with as many keys of the same sizes, each followed by one
    Sync, on a store opened with the same options; the ratio is
    ledger/raw;
 3. inclusion proofs at the final size: the largest proof in bytes against
    the bound 32·⌈log2 N⌉, and the median time of tlog.CheckRecord.

The targets (on the 2-core machine): 150,000 entries/s, p99 ≤ 20 ms, proofs
verified in ≤ 10 µs, memory flat (compare heap at start, middle and end;
--entries 10000000 runs in constant memory).`

// benchLedgerResult is what bench ledger reports (the --json output).
type benchLedgerResult struct {
	Entries   int    `json:"entries"`
	Appenders int    `json:"appenders"`
	Window    int    `json:"window"`
	CPUs      int    `json:"cpus"`
	Go        string `json:"go"`
	Ledger    struct {
		Seconds       float64            `json:"seconds"`
		EntriesPerSec float64            `json:"entries_per_sec"`
		Batches       int                `json:"batches"`
		PerBatch      float64            `json:"entries_per_batch"`
		Keys          int64              `json:"keys_written"`
		Bytes         int64              `json:"bytes_written"`
		LatencyMS     map[string]float64 `json:"latency_ms"`
	} `json:"ledger"`
	Raw struct {
		Seconds       float64 `json:"seconds"`
		EntriesPerSec float64 `json:"entries_per_sec"`
		Transactions  int     `json:"transactions"`
		Keys          int64   `json:"keys_written"`
		Bytes         int64   `json:"bytes_written"`
	} `json:"raw"`
	Ratio float64 `json:"ratio"`
	Proof struct {
		TreeSize   int64   `json:"tree_size"`
		Samples    int     `json:"samples"`
		MaxBytes   int     `json:"bytes_max"`
		BoundBytes int     `json:"bytes_bound"`
		VerifyUS   float64 `json:"verify_median_us"`
		VerifyP99  float64 `json:"verify_p99_us"`
	} `json:"proof"`
	Memory struct {
		HeapInuseMB map[string]float64 `json:"heap_inuse_mb"`
		RSSMB       map[string]float64 `json:"rss_mb"`
	} `json:"memory"`
	Targets map[string]bool `json:"targets_met"`
}

func runBenchLedger(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "bench ledger", "bench ledger [--entries N] [--appenders 64] [--window 16] [--dir DIR] [--json]")
	entries := fs.Int("entries", 2_000_000, "entries to append")
	appenders := fs.Int("appenders", 64, "concurrent appending goroutines")
	window := fs.Int("window", 16, "outstanding appends per appender")
	dir := fs.String("dir", "", "where to put the temporary stores (default: the system's temporary directory)")
	asJSON := fs.Bool("json", false, "machine-readable output (JSON)")
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: osmose bench ledger [--entries N] [--appenders 64] [--window 16] [--dir DIR] [--json]\n\n%s\n\nFlags:\n", strings.TrimSpace(benchLedgerDoc))
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if *entries < 1 || *appenders < 1 || *window < 1 {
		return usagef("--entries, --appenders and --window must be positive")
	}
	tmp, err := os.MkdirTemp(*dir, "osmose-bench-ledger-")
	if err != nil {
		return failf("bench: %v", err)
	}
	defer os.RemoveAll(tmp)
	progress := func(format string, a ...any) {
		if !*asJSON {
			fmt.Fprintf(e.stderr, format+"\n", a...)
		}
	}
	res := &benchLedgerResult{Entries: *entries, Appenders: *appenders, Window: *window, CPUs: runtime.NumCPU(), Go: runtime.Version()}
	progress("ledger: %d entries, %d appenders, window %d, in %s", *entries, *appenders, *window, tmp)
	rec, err := benchLedgerAppend(ctx, filepath.Join(tmp, "ledger"), res)
	if err != nil {
		return failf("bench ledger: %v", err)
	}
	os.RemoveAll(filepath.Join(tmp, "ledger"))
	if len(rec) == 0 || res.Ledger.Keys == 0 {
		// A store that wraps the counting one, or a way of writing that
		// passes it by, would leave the raw baseline nothing to write.
		return failf("the counting store saw none of the ledger's transactions: no raw baseline to compare with")
	}
	progress("raw badger: %d transactions, %d keys, %d bytes", len(rec), res.Ledger.Keys, res.Ledger.Bytes)
	if err := benchRawBadger(ctx, filepath.Join(tmp, "raw"), rec, res); err != nil {
		return failf("bench raw badger: %v", err)
	}
	res.Ratio = res.Ledger.EntriesPerSec / res.Raw.EntriesPerSec
	res.Targets = map[string]bool{
		"entries_per_sec_150k": res.Ledger.EntriesPerSec >= 150000,
		"p99_20ms":             res.Ledger.LatencyMS["p99"] <= 20,
		"proof_bytes_32_log2n": res.Proof.MaxBytes <= res.Proof.BoundBytes,
		"proof_verify_10us":    res.Proof.VerifyUS <= 10,
	}
	if *asJSON {
		return writeJSON(e.stdout, res)
	}
	printBenchLedger(e, res)
	return nil
}

// benchEntry is a typical call entry, the shape of the ledger package's
// own benchmark: a switch calling a light through a grant, with small
// params and result bodies.
func benchEntry(i int) ledger.Entry {
	return ledger.Entry{
		Kind: ledger.KindCall, Actor: "dev:switch-" + strconv.Itoa(i%64), Grant: uint64(1000 + i%512),
		Device:    "cambridge/pembroke/f1/r" + strconv.Itoa(i%32) + "/light-" + strconv.Itoa(i%4),
		Interface: 0xa1b2c3d4e5f60718, Method: 1, Decision: ledger.DecisionAdmit, Time: int64(i) * 1000,
		Params: benchParams, Result: benchResult,
	}
}

var (
	benchParams = []byte("\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00")
	benchResult = []byte("\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
)

// benchLedgerAppend runs the ledger phase and the proof measurements, and
// returns the transactions the ledger committed while appending.
func benchLedgerAppend(ctx context.Context, dir string, res *benchLedgerResult) ([]txnShape, error) {
	bs, err := ledger.OpenBadger(dir, ledger.BadgerOptions{})
	if err != nil {
		return nil, err
	}
	defer bs.Close()
	store := &countingStore{BadgerStore: bs}
	seed := make([]byte, ed25519.SeedSize) // a fixed key: the bench's runs are comparable
	l, err := ledger.Open(ctx, store, ledger.Options{Key: ed25519.NewKeyFromSeed(seed), Origin: "osmose/bench"})
	if err != nil {
		return nil, err
	}
	defer l.Close()

	n, A, W := res.Entries, res.Appenders, res.Window
	var done atomic.Int64
	mem := startMemSampler(n, &done)
	hists := make([]latencyHist, A)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	start := time.Now()
	for a := range A {
		wg.Add(1)
		go func() {
			defer wg.Done()
			type out struct {
				p  *ledger.Pending
				t0 time.Time
			}
			h := &hists[a]
			ring := make([]out, W) // the outstanding appends, oldest at head
			head, count := 0, 0
			// observe records the oldest outstanding appends that are
			// durable, waiting for the first if block is set. Entries
			// become durable in seq order, so the oldest is done first.
			observe := func(block bool) bool {
				for count > 0 {
					o := ring[head]
					if block {
						if err := o.p.Wait(ctx); err != nil {
							fail(err)
							return false
						}
						block = false
					} else {
						select {
						case <-o.p.Done():
							if err := o.p.Err(); err != nil {
								fail(err)
								return false
							}
						default:
							return true
						}
					}
					h.add(time.Since(o.t0))
					done.Add(1)
					ring[head] = out{}
					head, count = (head+1)%W, count-1
				}
				return true
			}
			for i := a; i < n; i += A {
				if count == W && !observe(true) {
					return
				}
				t0 := time.Now()
				p, err := l.Append(ctx, benchEntry(i))
				if err != nil {
					fail(err)
					return
				}
				ring[(head+count)%W] = out{p, t0}
				count++
			}
			for count > 0 && observe(true) {
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	mem.stop()
	if firstErr != nil {
		return nil, firstErr
	}
	shapes := store.take()

	var h latencyHist
	for i := range hists {
		h.merge(&hists[i])
	}
	L := &res.Ledger
	L.Seconds = elapsed.Seconds()
	L.EntriesPerSec = float64(n) / elapsed.Seconds()
	L.Batches = len(shapes)
	L.PerBatch = float64(n) / float64(max(len(shapes), 1))
	for _, s := range shapes {
		L.Keys += int64(s.keys)
		L.Bytes += int64(s.keyBytes)
		for _, c := range s.classes {
			L.Bytes += c.bytes
		}
	}
	L.LatencyMS = map[string]float64{
		"p50": h.quantile(0.5).Seconds() * 1e3, "p90": h.quantile(0.9).Seconds() * 1e3,
		"p99": h.quantile(0.99).Seconds() * 1e3, "max": h.max.Seconds() * 1e3,
	}
	res.Memory.HeapInuseMB, res.Memory.RSSMB = mem.report()

	if err := benchProofs(ctx, l, res); err != nil {
		return nil, err
	}
	return shapes, nil
}

// benchProofs measures inclusion proofs at the ledger's final size.
func benchProofs(ctx context.Context, l *ledger.Ledger, res *benchLedgerResult) error {
	size := l.Size()
	root, err := l.TreeHash(size)
	if err != nil {
		return err
	}
	const samples = 1000
	var times []time.Duration
	P := &res.Proof
	P.TreeSize, P.BoundBytes = size, 32*ceilLog2(size)
	for i := range samples {
		seq := uint64(int64(i) * size / samples)
		r, err := l.Read(ctx, seq)
		if err != nil {
			return err
		}
		proof, err := l.ProveInclusion(seq, size)
		if err != nil {
			return err
		}
		leaf := ledger.LeafHash(r.CID)
		P.MaxBytes = max(P.MaxBytes, len(proof)*tlog.HashSize)
		for range 10 {
			t0 := time.Now()
			err := tlog.CheckRecord(proof, size, root, int64(seq), leaf)
			times = append(times, time.Since(t0))
			if err != nil {
				return fmt.Errorf("proof of seq %d does not verify: %w", seq, err)
			}
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	P.Samples = len(times)
	P.VerifyUS = float64(times[len(times)/2].Nanoseconds()) / 1e3
	P.VerifyP99 = float64(times[len(times)*99/100].Nanoseconds()) / 1e3
	return nil
}

// benchRawBadger writes the recorded transactions' shapes straight to a
// Badger store from one writer, one Sync per transaction.
func benchRawBadger(ctx context.Context, dir string, shapes []txnShape, res *benchLedgerResult) error {
	s, err := ledger.OpenBadger(dir, ledger.BadgerOptions{})
	if err != nil {
		return err
	}
	defer s.Close()
	maxVal := 1
	for _, sh := range shapes {
		for _, c := range sh.classes {
			maxVal = max(maxVal, int(c.bytes/int64(c.count))+1)
		}
	}
	val := make([]byte, maxVal)
	for i := range val {
		val[i] = byte(i*7 + i>>8) // Badger v1 does not compress; the contents do not matter
	}
	var next uint64
	R := &res.Raw
	start := time.Now()
	for _, sh := range shapes {
		txn, err := s.NewTransaction(ctx, false)
		if err != nil {
			return err
		}
		k := 0 // keys put in this transaction
		put := func(size int) error {
			// Keys are unique, of the ledger's key lengths spread evenly.
			keyLen := sh.keyBytes / sh.keys
			if k < sh.keyBytes%sh.keys {
				keyLen++
			}
			k++
			next++
			key := fmt.Sprintf("/r/%0*x", max(keyLen-3, 1), next)
			R.Keys++
			R.Bytes += int64(len(key) + size)
			return txn.Put(ctx, ds.RawKey(key), val[:size])
		}
		for _, c := range sh.classes {
			// Spread the class's bytes over its values, as evenly as integers allow.
			for i := range c.count {
				size := int(c.bytes / int64(c.count))
				if int64(i) < c.bytes%int64(c.count) {
					size++
				}
				if err := put(size); err != nil {
					txn.Discard(ctx)
					return err
				}
			}
		}
		if err := txn.Commit(ctx); err != nil {
			return err
		}
		if err := s.Sync(ctx, ds.RawKey("/")); err != nil {
			return err
		}
		R.Transactions++
	}
	elapsed := time.Since(start)
	R.Seconds = elapsed.Seconds()
	R.EntriesPerSec = float64(res.Entries) / elapsed.Seconds()
	return nil
}

// txnShape is what one committed transaction wrote: its keys, their
// bytes, and its values by power-of-two size class.
type txnShape struct {
	keys, keyBytes int
	classes        []sizeClass
}

type sizeClass struct {
	log2  int // values of 2^log2 to 2^(log2+1)-1 bytes (log2 -1: empty values)
	count int
	bytes int64
}

// countingStore wraps the ledger's Badger store and records the shape of
// each transaction committed through it.
type countingStore struct {
	*ledger.BadgerStore
	mu     sync.Mutex
	shapes []txnShape
}

func (s *countingStore) NewTransaction(ctx context.Context, readOnly bool) (ds.Txn, error) {
	t, err := s.BadgerStore.NewTransaction(ctx, readOnly)
	if err != nil {
		return nil, err
	}
	return &countingTxn{Txn: t, s: s}, nil
}

func (s *countingStore) take() []txnShape {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.shapes
	s.shapes = nil
	return out
}

type countingTxn struct {
	ds.Txn
	s     *countingStore
	shape txnShape
	by    [65]sizeClass
}

func (t *countingTxn) Put(ctx context.Context, key ds.Key, value []byte) error {
	t.shape.keys++
	t.shape.keyBytes += len(key.String())
	c := &t.by[bits.Len(uint(len(value)))]
	c.count++
	c.bytes += int64(len(value))
	return t.Txn.Put(ctx, key, value)
}

func (t *countingTxn) Commit(ctx context.Context) error {
	if err := t.Txn.Commit(ctx); err != nil {
		return err
	}
	if t.shape.keys > 0 {
		for i, c := range t.by {
			if c.count > 0 {
				c.log2 = i - 1
				t.shape.classes = append(t.shape.classes, c)
			}
		}
		t.s.mu.Lock()
		t.s.shapes = append(t.s.shapes, t.shape)
		t.s.mu.Unlock()
	}
	return nil
}

// latencyHist is a log-linear histogram of durations: 64 sub-buckets per
// power of two of nanoseconds (under 2% error), in constant memory.
type latencyHist struct {
	counts [64 * 64]uint64
	n      uint64
	max    time.Duration
}

func latencyBucket(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < 64 {
		return int(v)
	}
	e := bits.Len64(v) - 7 // v>>e is in [64, 128)
	return (e+1)*64 + int(v>>e) - 64
}

func bucketValue(b int) time.Duration {
	if b < 64 {
		return time.Duration(b)
	}
	e := b/64 - 1
	return time.Duration((uint64(b%64+64)<<e + (1<<e)/2))
}

func (h *latencyHist) add(d time.Duration) {
	h.counts[latencyBucket(d)]++
	h.n++
	h.max = max(h.max, d)
}

func (h *latencyHist) merge(o *latencyHist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

func (h *latencyHist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	var seen uint64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(bucketValue(b), h.max)
		}
	}
	return h.max
}

// memSampler samples heap in use and RSS while the ledger appends.
type memSampler struct {
	total   int
	done    *atomic.Int64
	stopped chan struct{}
	quit    chan struct{}
	mu      sync.Mutex
	samples []memSample
}

type memSample struct {
	done      int64
	heap, rss uint64
}

func startMemSampler(total int, done *atomic.Int64) *memSampler {
	runtime.GC()
	m := &memSampler{total: total, done: done, stopped: make(chan struct{}), quit: make(chan struct{})}
	m.sample(0)
	go func() {
		defer close(m.stopped)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-m.quit:
				return
			case <-t.C:
				m.sample(m.done.Load())
			}
		}
	}()
	return m
}

func (m *memSampler) sample(done int64) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.mu.Lock()
	m.samples = append(m.samples, memSample{done, ms.HeapInuse, readRSS()})
	m.mu.Unlock()
}

func (m *memSampler) stop() {
	close(m.quit)
	<-m.stopped
	m.sample(int64(m.total))
}

// report gives heap in use and RSS, in MiB, at the start, at the sample
// nearest the middle of the appends, at the end, and the largest.
func (m *memSampler) report() (heap, rss map[string]float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mid := m.samples[0]
	for _, s := range m.samples {
		if d := s.done - int64(m.total/2); d*d < (mid.done-int64(m.total/2))*(mid.done-int64(m.total/2)) {
			mid = s
		}
	}
	first, last := m.samples[0], m.samples[len(m.samples)-1]
	var maxHeap, maxRSS uint64
	for _, s := range m.samples {
		maxHeap, maxRSS = max(maxHeap, s.heap), max(maxRSS, s.rss)
	}
	mb := func(b uint64) float64 { return math.Round(float64(b)/(1<<20)*10) / 10 }
	heap = map[string]float64{"start": mb(first.heap), "middle": mb(mid.heap), "end": mb(last.heap), "max": mb(maxHeap)}
	rss = map[string]float64{"start": mb(first.rss), "middle": mb(mid.rss), "end": mb(last.rss), "max": mb(maxRSS)}
	return heap, rss
}

// readRSS returns the process's resident set size, or 0 where /proc is
// not available.
func readRSS() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}

func printBenchLedger(e *env, r *benchLedgerResult) {
	w := e.stdout
	yes := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	L, R, P := &r.Ledger, &r.Raw, &r.Proof
	fmt.Fprintf(w, "osmose bench ledger: %d entries, %d appenders × window %d, %d CPUs, %s\n\n", r.Entries, r.Appenders, r.Window, r.CPUs, r.Go)
	fmt.Fprintf(w, "%-34s %14s %14s\n", "", "ledger", "raw badger")
	fmt.Fprintf(w, "%-34s %14.0f %14.0f\n", "entries/s", L.EntriesPerSec, R.EntriesPerSec)
	fmt.Fprintf(w, "%-34s %14.2f %14.2f\n", "seconds", L.Seconds, R.Seconds)
	fmt.Fprintf(w, "%-34s %14d %14d\n", "transactions (one sync each)", L.Batches, R.Transactions)
	fmt.Fprintf(w, "%-34s %14d %14d\n", "keys written", L.Keys, R.Keys)
	fmt.Fprintf(w, "%-34s %14d %14d\n", "bytes written", L.Bytes, R.Bytes)
	fmt.Fprintf(w, "\nratio ledger/raw                   %.2f\n", r.Ratio)
	fmt.Fprintf(w, "entries per batch                  %.0f\n", L.PerBatch)
	fmt.Fprintf(w, "append→durable latency             p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
		L.LatencyMS["p50"], L.LatencyMS["p90"], L.LatencyMS["p99"], L.LatencyMS["max"])
	fmt.Fprintf(w, "heap in use (MiB)                  start %.1f, middle %.1f, end %.1f, max %.1f\n",
		r.Memory.HeapInuseMB["start"], r.Memory.HeapInuseMB["middle"], r.Memory.HeapInuseMB["end"], r.Memory.HeapInuseMB["max"])
	fmt.Fprintf(w, "RSS (MiB)                          start %.1f, middle %.1f, end %.1f, max %.1f\n",
		r.Memory.RSSMB["start"], r.Memory.RSSMB["middle"], r.Memory.RSSMB["end"], r.Memory.RSSMB["max"])
	fmt.Fprintf(w, "inclusion proof at size %-10d largest %d bytes (bound %d); verify median %.2f µs, p99 %.2f µs\n",
		P.TreeSize, P.MaxBytes, P.BoundBytes, P.VerifyUS, P.VerifyP99)
	fmt.Fprintf(w, "\ntargets: ≥150,000 entries/s %s; p99 ≤ 20 ms %s; proof ≤ 32·⌈log2 N⌉ bytes %s; verify ≤ 10 µs %s\n",
		yes(r.Targets["entries_per_sec_150k"]), yes(r.Targets["p99_20ms"]),
		yes(r.Targets["proof_bytes_32_log2n"]), yes(r.Targets["proof_verify_10us"]))
}
