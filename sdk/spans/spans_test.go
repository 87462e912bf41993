package spans

import (
	"context"
	"errors"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/kpipe/kpipe/internal/fuzzseed"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// TestDecodeReadsWhatEncodeWrote: every field a span carries across
// processes comes back as it was.
func TestDecodeReadsWhatEncodeWrote(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	res := resource.NewWithAttributes("https://opentelemetry.io/schemas/1.26.0", attribute.String("service.name", "kpipe-plugin-test"), attribute.Int("process.pid", 4242))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithResource(res))
	tr := tp.Tracer("kpipe/sdk", trace.WithInstrumentationVersion("1.2.3"))
	t0 := time.Unix(1_700_000_000, 123456789)
	ctx, parent := tr.Start(context.Background(), "parent", trace.WithTimestamp(t0))
	_, other := tr.Start(context.Background(), "other", trace.WithTimestamp(t0))
	_, child := tr.Start(ctx, "child", trace.WithTimestamp(t0.Add(time.Millisecond)), trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithLinks(trace.Link{SpanContext: other.SpanContext(), Attributes: []attribute.KeyValue{attribute.String("why", "same batch")}}),
		trace.WithAttributes(attribute.Bool("b", true), attribute.Int64("i", -7), attribute.Float64("f", 0.5), attribute.String("s", "x"),
			attribute.BoolSlice("bs", []bool{true, false}), attribute.Int64Slice("is", []int64{1, 2}),
			attribute.Float64Slice("fs", []float64{1.5}), attribute.StringSlice("ss", []string{"a", "b"})))
	child.AddEvent("retry", trace.WithTimestamp(t0.Add(2*time.Millisecond)), trace.WithAttributes(attribute.Int("attempt", 2)))
	child.RecordError(errors.New("broker gone"), trace.WithTimestamp(t0.Add(3*time.Millisecond)))
	child.SetStatus(codes.Error, "broker gone")
	child.End(trace.WithTimestamp(t0.Add(4 * time.Millisecond)))
	parent.SetStatus(codes.Ok, "")
	parent.End(trace.WithTimestamp(t0.Add(5 * time.Millisecond)))
	other.End(trace.WithTimestamp(t0.Add(5 * time.Millisecond)))

	ended := rec.Ended()
	data, err := Encode(ended)
	if os.Getenv(fuzzseed.Env) == "1" {
		fuzzseed.Write(t, "FuzzDecode", "spans", data)
	}
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(ended) {
		t.Fatalf("decoded %d spans, want %d", len(got), len(ended))
	}
	for i := range ended {
		want, have := tracetest.SpanStubFromReadOnlySpan(ended[i]), tracetest.SpanStubFromReadOnlySpan(got[i])
		if !have.Resource.Equal(want.Resource) || have.Resource.SchemaURL() != want.Resource.SchemaURL() {
			t.Errorf("span %s: resource %v, want %v", want.Name, have.Resource, want.Resource)
		}
		// What does not cross: the parent's remote flag (a parent from
		// another process is remote by definition), and the counts of what
		// the SDK dropped or how many children a span had.
		want.Parent = trace.NewSpanContext(trace.SpanContextConfig{TraceID: want.Parent.TraceID(), SpanID: want.Parent.SpanID(), TraceFlags: want.Parent.TraceFlags(), Remote: want.Parent.IsValid()})
		for j := range want.Links {
			want.Links[j].SpanContext = want.Links[j].SpanContext.WithRemote(true).WithTraceFlags(0)
		}
		want.ChildSpanCount = 0
		want.Resource, have.Resource = nil, nil
		if !reflect.DeepEqual(have, want) {
			t.Errorf("span %d:\n got %+v\nwant %+v", i, have, want)
		}
	}
}

func TestDecodeRefusesBadInput(t *testing.T) {
	if _, err := Decode([]byte{0xff, 0xff}); err == nil {
		t.Error("decoded garbage")
	}
}
