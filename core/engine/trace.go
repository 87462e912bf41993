package engine

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/spans"
)

// Tracing makes a run's spans and exports them with the spans its plugins
// made in their own processes.
//
// A traced run is one trace: a kpipe.run span, a kpipe.partition span per
// source partition (from its first batch to the end of the run), and under
// the run, in each plugin process, a span per batch and hop
// (kpipe.source.read, kpipe.transform.process, kpipe.sink.write) joined by
// the trace context each batch carries.
type Tracing interface {
	Tracer() trace.Tracer
	// Import takes spans a plugin ended in its own process, as OTLP
	// TracesData.
	Import(tracesData []byte) error
}

// traces holds a run's spans; its methods do nothing on a run not traced.
type traces struct {
	t    Tracing
	run  trace.Span
	ctx  context.Context // holds the run span
	mu   sync.Mutex
	part map[topicPartition]*partSpan
}

type partSpan struct {
	span           trace.Span
	records, bytes int64
}

func startTraces(t Tracing, pipeline, identity string) *traces {
	if t == nil {
		return &traces{}
	}
	ctx, run := t.Tracer().Start(context.Background(), "kpipe.run", trace.WithAttributes(spans.Pipeline.String(pipeline), spans.Identity.String(identity)))
	return &traces{t: t, run: run, ctx: ctx, part: map[topicPartition]*partSpan{}}
}

// context is the run's W3C trace context, which plugins trace under; empty
// when not tracing.
func (tr *traces) context() (traceparent, tracestate string) {
	if tr.t == nil {
		return "", ""
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(tr.ctx, c)
	return c["traceparent"], c["tracestate"]
}

// read counts a source batch on its partition's span.
func (tr *traces) read(e sdk.Envelope) {
	if tr.t == nil {
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	p := tr.get(e.Topic, e.Partition)
	p.records += e.Count
	p.bytes += e.FrameBytes
}

// partition returns the span of a partition (one that does nothing when
// not tracing).
func (tr *traces) partition(topic string, partition int32) trace.Span {
	if tr.t == nil {
		return trace.SpanFromContext(context.Background())
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.get(topic, partition).span
}

// get returns a partition's span, starting it at the partition's first
// batch or error (an error can overtake batches still being encoded).
func (tr *traces) get(topic string, partition int32) *partSpan {
	tp := topicPartition{topic, partition}
	p := tr.part[tp]
	if p == nil {
		_, span := tr.t.Tracer().Start(tr.ctx, "kpipe.partition", trace.WithAttributes(spans.Topic.String(topic), spans.Partition.Int(int(partition))))
		p = &partSpan{span: span}
		tr.part[tp] = p
	}
	return p
}

// logArgs are the trace and span ids of a partition's span, for a log line.
func (tr *traces) logArgs(topic string, partition int32) []any {
	sc := tr.partition(topic, partition).SpanContext()
	if !sc.IsValid() {
		return nil
	}
	return []any{"trace_id", sc.TraceID().String(), "span_id", sc.SpanID().String()}
}

// imported hands spans a plugin sent to the exporter.
func (tr *traces) imported(data []byte) error {
	if tr.t == nil {
		return nil
	}
	return tr.t.Import(data)
}

// end ends every span with what the run did.
func (tr *traces) end(rep *Report, err error) {
	if tr.t == nil {
		return
	}
	if rep == nil { // the run failed before it began
		rep = &Report{}
	}
	next := map[topicPartition]int64{}
	for _, p := range rep.Positions {
		next[topicPartition{p.Topic, p.Partition}] = p.NextOffset
	}
	tr.mu.Lock()
	for tp, p := range tr.part {
		p.span.SetAttributes(spans.Records.Int64(p.records), spans.Bytes.Int64(p.bytes))
		if n, ok := next[tp]; ok {
			p.span.SetAttributes(spans.NextOffset.Int64(n))
		}
		p.span.End()
	}
	tr.mu.Unlock()
	tr.run.SetAttributes(spans.Records.Int64(rep.RecordsOut), spans.Bytes.Int64(rep.BytesOut),
		attribute.Bool("kpipe.stopped", rep.Stopped), attribute.Int("kpipe.partitions.failed", len(rep.FailedPartitions)))
	if err != nil {
		tr.run.RecordError(err)
		tr.run.SetStatus(codes.Error, err.Error())
	}
	tr.run.End()
}
