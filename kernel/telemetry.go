package kernel

import (
	"context"

	"capnproto.org/go/capnp/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/osmose-os/osmose/ledger"
)

// instrumentation is the name of the kernel's tracer and meter.
const instrumentation = "github.com/osmose-os/osmose/kernel"

// telemetry is the kernel's OpenTelemetry instruments: one span per gated
// call, and counters and histograms of calls, logins and connections.
type telemetry struct {
	tracer     trace.Tracer
	calls      metric.Int64Counter     // osmose.kernel.calls{decision}
	latency    metric.Float64Histogram // osmose.kernel.call.duration, seconds
	logins     metric.Int64Counter     // osmose.kernel.logins{decision}
	overloaded metric.Int64Counter     // osmose.kernel.overloaded
	conns      metric.Int64UpDownCounter

	admitOpt, denyOpt metric.MeasurementOption
	// The same, as the variadic options of a gated call's measurements,
	// built once: a call's own would be allocated on every call.
	admitAdd, denyAdd []metric.AddOption
	admitRec, denyRec []metric.RecordOption
}

func newTelemetry(tp trace.TracerProvider, mp metric.MeterProvider) (*telemetry, error) {
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	m := mp.Meter(instrumentation)
	t := &telemetry{
		tracer:   tp.Tracer(instrumentation),
		admitOpt: metric.WithAttributeSet(attribute.NewSet(attribute.String("decision", "admit"))),
		denyOpt:  metric.WithAttributeSet(attribute.NewSet(attribute.String("decision", "deny"))),
	}
	t.admitAdd, t.denyAdd = []metric.AddOption{t.admitOpt}, []metric.AddOption{t.denyOpt}
	t.admitRec, t.denyRec = []metric.RecordOption{t.admitOpt}, []metric.RecordOption{t.denyOpt}
	var err error
	if t.calls, err = m.Int64Counter("osmose.kernel.calls", metric.WithDescription("Gated calls, by decision.")); err != nil {
		return nil, err
	}
	if t.latency, err = m.Float64Histogram("osmose.kernel.call.duration", metric.WithUnit("s"),
		ledger.DurationBuckets,
		metric.WithDescription("Time from a gated call's arrival to its answer, ledger wait included.")); err != nil {
		return nil, err
	}
	if t.logins, err = m.Int64Counter("osmose.kernel.logins", metric.WithDescription("Login attempts, by decision.")); err != nil {
		return nil, err
	}
	if t.overloaded, err = m.Int64Counter("osmose.kernel.overloaded", metric.WithDescription("Calls refused because their connection had too many in flight.")); err != nil {
		return nil, err
	}
	if t.conns, err = m.Int64UpDownCounter("osmose.kernel.connections", metric.WithDescription("Connections being served.")); err != nil {
		return nil, err
	}
	return t, nil
}

// done records a finished gated call on its span and in the metrics.
func (t *telemetry) done(ctx context.Context, span trace.Span, g *gate, m capnp.Method, admitted bool, reason string, start, end int64) {
	add, rec := t.admitAdd, t.admitRec
	if !admitted {
		add, rec = t.denyAdd, t.denyRec
	}
	t.calls.Add(ctx, 1, add...)
	t.latency.Record(ctx, float64(end-start)/1e9, rec...)
	if span.IsRecording() {
		span.SetName("gate " + m.InterfaceName + "." + m.MethodName)
		span.SetAttributes(spanAttrs(g, m, admitted, reason)...)
		if reason != "" {
			span.SetStatus(codes.Error, reason)
		}
	}
}
