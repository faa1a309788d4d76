package ledger_test

import (
	"context"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/ledger/ledgertest"
)

// heldStore holds every Sync until release is closed, and says on
// entered (buffered) when one is being held.
type heldStore struct {
	ledger.Store
	entered chan struct{}
	release chan struct{}
}

func (s *heldStore) Sync(ctx context.Context, k ds.Key) error {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.release
	return s.Store.Sync(ctx, k)
}

// slowMeters delays each record of osmose.ledger.batch.entries, so that a
// batch's metrics are recorded well after its sync.
type slowMeters struct{ metric.MeterProvider }

type slowMeter struct{ metric.Meter }

type slowHistogram struct{ metric.Int64Histogram }

func (p slowMeters) Meter(name string, opts ...metric.MeterOption) metric.Meter {
	return slowMeter{p.MeterProvider.Meter(name, opts...)}
}

func (m slowMeter) Int64Histogram(name string, opts ...metric.Int64HistogramOption) (metric.Int64Histogram, error) {
	h, err := m.Meter.Int64Histogram(name, opts...)
	if name == "osmose.ledger.batch.entries" {
		h = slowHistogram{h}
	}
	return h, err
}

func (h slowHistogram) Record(ctx context.Context, v int64, opts ...metric.RecordOption) {
	time.Sleep(5 * time.Millisecond)
	h.Int64Histogram.Record(ctx, v, opts...)
}

// collect reads the ledger's instruments by name.
func collect(t *testing.T, r *sdkmetric.ManualReader) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

func TestMetrics(t *testing.T) {
	dir := t.TempDir()
	base, err := ledger.OpenBadger(dir, ledger.BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	store := &heldStore{Store: base, entered: make(chan struct{}, 1), release: make(chan struct{})}
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	ctx := context.Background()
	// The genesis entry is synced while the ledger is created, before
	// the pipeline (and its metrics) exist.
	l, err := ledger.Open(ctx, base, ledger.Options{Key: ledgertest.Key(1)})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = ledger.Open(ctx, store, ledger.Options{Key: ledgertest.Key(1), MeterProvider: slowMeters{mp}, MaxBatch: 8})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	var ps []*ledger.Pending
	for i := range n {
		p, err := l.Append(ctx, ledger.Entry{Kind: "call", Actor: "dev-1", Time: int64(i)})
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	// Syncs are held: every entry is pending.
	got := collect(t, reader)
	pending, ok := got["osmose.ledger.pending"].(metricdata.Gauge[int64])
	if !ok || len(pending.DataPoints) != 1 || pending.DataPoints[0].Value != n {
		t.Fatalf("osmose.ledger.pending while syncs are held = %+v, want %d", got["osmose.ledger.pending"], n)
	}
	const held = 20 * time.Millisecond
	<-store.entered
	time.Sleep(held)
	close(store.release)
	for _, p := range ps {
		<-p.Done()
		if err := p.Err(); err != nil {
			t.Fatal(err)
		}
	}
	// A batch is in the metrics before its entries are durable to their
	// waiters: a reader that has seen them durable finds them counted.
	got = collect(t, reader)
	entries, _ := got["osmose.ledger.batch.entries"].(metricdata.Histogram[int64])
	if len(entries.DataPoints) != 1 || entries.DataPoints[0].Sum != n {
		t.Fatalf("osmose.ledger.batch.entries once durable = %+v, want a sum of %d", got["osmose.ledger.batch.entries"], n)
	}
	// MaxBatch 8: at least three batches, none above 8 entries.
	if dp := entries.DataPoints[0]; dp.Count < 3 {
		t.Fatalf("batch entries: %d batches, want at least 3", dp.Count)
	} else if m, ok := dp.Max.Value(); !ok || m > 8 {
		t.Fatalf("batch entries: max %d, want at most 8", m)
	}
	lag, _ := got["osmose.ledger.lag"].(metricdata.Histogram[float64])
	if len(lag.DataPoints) != 1 || lag.DataPoints[0].Count < 3 {
		t.Fatalf("osmose.ledger.lag = %+v, want one value per batch", got["osmose.ledger.lag"])
	}
	// Buckets in seconds, from 100 µs.
	if b := lag.DataPoints[0].Bounds; len(b) == 0 || b[0] != 0.0001 || b[len(b)-1] != 10 {
		t.Errorf("osmose.ledger.lag bounds %v, want 0.0001 s to 10 s", b)
	}
	// The first batch waited for the held sync.
	if m, ok := lag.DataPoints[0].Max.Value(); !ok || m < held.Seconds() {
		t.Fatalf("osmose.ledger.lag max = %v s, want at least the %v the sync was held", m, held)
	}
	syncs, _ := got["osmose.ledger.sync.duration"].(metricdata.Histogram[float64])
	if len(syncs.DataPoints) != 1 || syncs.DataPoints[0].Count < 1 || syncs.DataPoints[0].Count > lag.DataPoints[0].Count {
		t.Fatalf("osmose.ledger.sync.duration = %+v, want between one and one per batch", got["osmose.ledger.sync.duration"])
	}
	if m, _ := syncs.DataPoints[0].Max.Value(); m < held.Seconds() {
		t.Fatalf("osmose.ledger.sync.duration max = %v s, want at least %v (the held sync)", m, held)
	}
	if p := got["osmose.ledger.pending"].(metricdata.Gauge[int64]); p.DataPoints[0].Value != 0 {
		t.Fatalf("osmose.ledger.pending once durable = %d, want 0", p.DataPoints[0].Value)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// A closed ledger no longer reports.
	if _, ok := collect(t, reader)["osmose.ledger.pending"]; ok {
		t.Fatal("osmose.ledger.pending is still observed after Close")
	}
}
