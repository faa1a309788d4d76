package ledger

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// instrumentation is the name of the ledger's meter.
const instrumentation = "github.com/osmose-os/osmose/ledger"

// metrics are the ledger's OpenTelemetry instruments. They measure the
// group commit, so an operator can tell how much of a call's latency is
// the wait for its entries to be durable:
//
//	osmose.ledger.lag            s        per batch: from the append of its
//	                                      first entry until the batch is
//	                                      durable (the longest any of its
//	                                      entries waited; for a batch cut
//	                                      by MaxBatch from a longer queue,
//	                                      from when that queue began, so
//	                                      never less)
//	osmose.ledger.sync.duration  s        per sync of the store
//	osmose.ledger.batch.entries  entries  per batch
//	osmose.ledger.pending        entries  appended and not yet durable
//
// Durations are read from the monotonic clock and go to the meter only,
// never into the ledger.
type metrics struct {
	lag     metric.Float64Histogram
	sync    metric.Float64Histogram
	entries metric.Int64Histogram
	reg     metric.Registration
}

// DurationBuckets are the bucket boundaries of osmose's latency
// histograms, in seconds: 100 µs to 10 s. (The SDK's defaults suit
// milliseconds.) The kernel's call latency uses them too.
var DurationBuckets = metric.WithExplicitBucketBoundaries(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

// entryBuckets: powers of two up to MaxBatch's default.
var entryBuckets = metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

func newMetrics(mp metric.MeterProvider, pending func() int64) (*metrics, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := mp.Meter(instrumentation)
	var t metrics
	var err error
	if t.lag, err = m.Float64Histogram("osmose.ledger.lag", metric.WithUnit("s"), DurationBuckets,
		metric.WithDescription("Per batch, from the append of its first entry until it is durable.")); err != nil {
		return nil, err
	}
	if t.sync, err = m.Float64Histogram("osmose.ledger.sync.duration", metric.WithUnit("s"), DurationBuckets,
		metric.WithDescription("Duration of one sync of the ledger's store.")); err != nil {
		return nil, err
	}
	if t.entries, err = m.Int64Histogram("osmose.ledger.batch.entries", metric.WithUnit("{entry}"), entryBuckets,
		metric.WithDescription("Entries per group commit.")); err != nil {
		return nil, err
	}
	gauge, err := m.Int64ObservableGauge("osmose.ledger.pending", metric.WithUnit("{entry}"),
		metric.WithDescription("Entries appended and not yet durable."))
	if err != nil {
		return nil, err
	}
	if t.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(gauge, pending())
		return nil
	}, gauge); err != nil {
		return nil, err
	}
	return &t, nil
}

// synced records one sync of the store and the batches it made durable.
func (t *metrics) synced(group []*batch, start, end time.Time) {
	ctx := context.Background()
	t.sync.Record(ctx, end.Sub(start).Seconds())
	for _, b := range group {
		if b.err != nil || len(b.items) == 0 {
			continue
		}
		t.lag.Record(ctx, end.Sub(b.since).Seconds())
		t.entries.Record(ctx, int64(len(b.items)))
	}
}
