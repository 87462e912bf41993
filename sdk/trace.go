package sdk

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/kpipe/kpipe/sdk/spans"
)

// Tracing. When the host traces a run, it opens each plugin with the run's
// trace context; the runners then make a span per batch in the plugin's own
// process: kpipe.source.read (reading and sending the batch),
// kpipe.transform.process (under the batch's span) and kpipe.sink.write
// (from Write until the batch is durable). Each batch carries its span's
// context on to the next plugin, so one batch's hops form one branch of the
// run's trace. The spans are sent to the host with the other events, and
// the host exports them with its own. In Process, Write and ProcessEnvelope,
// ctx carries the batch's span: a plugin makes spans of its own with
// trace.SpanFromContext(ctx).TracerProvider().

// Span buffering: spans go to the host at each metrics report and whenever
// spansFlushAt have ended since; past spansMaxPending unsent ones, new
// spans are dropped (and counted) rather than held without bound.
const (
	spansFlushAt    = 512
	spansMaxPending = 16384
)

var traceContext = propagation.TraceContext{}

// tracing makes one runner's spans. The zero value traces nothing.
type tracing struct {
	tracer trace.Tracer
	run    context.Context // holds the run's span context
	buf    *spanBuffer
}

// newTracing traces under the run's trace context, if the host gave one.
func newTracing(role string, spec Spec, traceparent, tracestate string) *tracing {
	if traceparent == "" {
		return &tracing{}
	}
	run := traceContext.Extract(context.Background(), propagation.MapCarrier{"traceparent": traceparent, "tracestate": tracestate})
	if !trace.SpanContextFromContext(run).IsValid() {
		logger.Warn("the host's trace context is not valid; tracing nothing", "traceparent", traceparent)
		return &tracing{}
	}
	res := resource.NewSchemaless(
		attribute.String("service.name", "kpipe-plugin-"+spec.Name),
		attribute.String("service.version", spec.Version),
		attribute.Int("process.pid", os.Getpid()),
		attribute.String("kpipe.role", role),
	)
	buf := &spanBuffer{full: make(chan struct{}, 1)}
	tp := sdktrace.NewTracerProvider(sdktrace.WithResource(res), sdktrace.WithSpanProcessor(buf))
	return &tracing{tracer: tp.Tracer("github.com/kpipe/kpipe/sdk", trace.WithInstrumentationVersion(Version)), run: run, buf: buf}
}

func (t *tracing) on() bool { return t.buf != nil }

// start begins a span under parent's trace context (a batch's), or under
// the run's when parent is empty.
func (t *tracing) start(ctx context.Context, name, traceparent, tracestate string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if t.buf == nil {
		return ctx, trace.SpanFromContext(context.Background()) // does nothing
	}
	parent := trace.SpanContextFromContext(t.run)
	if traceparent != "" {
		if sc := trace.SpanContextFromContext(traceContext.Extract(context.Background(),
			propagation.MapCarrier{"traceparent": traceparent, "tracestate": tracestate})); sc.IsValid() {
			parent = sc
		}
	}
	return t.tracer.Start(trace.ContextWithRemoteSpanContext(ctx, parent), name, opts...)
}

// inject renders span's context as a batch carries it.
func inject(span trace.Span) (traceparent, tracestate string) {
	c := propagation.MapCarrier{}
	traceContext.Inject(trace.ContextWithSpan(context.Background(), span), c)
	return c["traceparent"], c["tracestate"]
}

// batchAttrs are the attributes of a batch's span.
func batchAttrs(e Envelope) trace.SpanStartEventOption {
	return trace.WithAttributes(spans.Topic.String(e.Topic), spans.Partition.Int(int(e.Partition)), spans.Seq.Int64(int64(e.Seq)),
		spans.Records.Int64(e.Count), spans.MinOffset.Int64(e.MinOffset), spans.MaxOffset.Int64(e.MaxOffset))
}

// failed marks span as failed with err.
func failed(span trace.Span, err error) {
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}

// full is signalled when enough spans wait to be sent; nil when not
// tracing.
func (t *tracing) full() <-chan struct{} {
	if t.buf == nil {
		return nil
	}
	return t.buf.full
}

// flush sends the spans ended so far to the host.
func (t *tracing) flush(em *emitter) error {
	if t.buf == nil {
		return nil
	}
	ended, dropped := t.buf.take()
	if dropped > 0 {
		logger.Warn("dropped spans: more ended than could be sent", "spans", dropped)
	}
	if len(ended) == 0 {
		return nil
	}
	data, err := spans.Encode(ended)
	if err != nil {
		logger.Warn("cannot encode spans", "error", err)
		return nil
	}
	return em.send(Event{Spans: data})
}

// spanBuffer is a span processor that keeps ended spans until flushed.
type spanBuffer struct {
	mu      sync.Mutex
	ended   []sdktrace.ReadOnlySpan
	dropped int
	full    chan struct{}
}

func (b *spanBuffer) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

func (b *spanBuffer) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.ended) >= spansMaxPending {
		b.dropped++
		return
	}
	b.ended = append(b.ended, s)
	if len(b.ended) == spansFlushAt {
		select {
		case b.full <- struct{}{}:
		default:
		}
	}
}

func (b *spanBuffer) take() ([]sdktrace.ReadOnlySpan, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ended, dropped := b.ended, b.dropped
	b.ended, b.dropped = nil, 0
	return ended, dropped
}

func (b *spanBuffer) Shutdown(context.Context) error   { return nil }
func (b *spanBuffer) ForceFlush(context.Context) error { return nil }

// metered is what every kind of plugin has: Metrics.
type metered interface{ Metrics() map[string]int64 }

// metrics is a plugin's report: its counters and, if it has them, its
// figures per partition.
func metrics(p metered) Event {
	ev := Event{Metrics: p.Metrics()}
	if pm, ok := p.(PartitionMetrics); ok {
		ev.PartitionMetrics = pm.PartitionMetrics()
	}
	if ev.Metrics == nil && ev.PartitionMetrics != nil {
		ev.Metrics = map[string]int64{}
	}
	return ev
}

// report sends the plugin's metrics every interval, and its spans then and
// whenever enough have ended, until ctx ends.
func report(ctx context.Context, every time.Duration, em *emitter, plugin metered, tr *tracing) {
	if every <= 0 && !tr.on() {
		return
	}
	go func() {
		var tick <-chan time.Time
		if every > 0 {
			t := time.NewTicker(every)
			defer t.Stop()
			tick = t.C
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick:
				if ev := metrics(plugin); ev.Metrics != nil {
					if em.send(ev) != nil {
						return
					}
				}
				if tr.flush(em) != nil {
					return
				}
			case <-tr.full():
				if tr.flush(em) != nil {
					return
				}
			}
		}
	}()
}

type logKey struct{}

// logFields are what a plugin's log lines say about the batch at hand.
type logFields struct {
	topic     string
	partition int32
}

func withPartition(ctx context.Context, topic string, partition int32) context.Context {
	return context.WithValue(ctx, logKey{}, logFields{topic, partition})
}

// Log returns the plugin's logger with what ctx tells of the batch at hand:
// in Process, Write and ProcessEnvelope, its topic and partition and, when
// the run is traced, the trace and span ids of its span. The host forwards
// the lines into its own log.
func Log(ctx context.Context) hclog.Logger {
	var args []any
	if f, ok := ctx.Value(logKey{}).(logFields); ok {
		args = append(args, "topic", f.topic, "partition", f.partition)
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		args = append(args, "trace_id", sc.TraceID().String(), "span_id", sc.SpanID().String())
	}
	if len(args) == 0 {
		return logger
	}
	return logger.With(args...)
}
