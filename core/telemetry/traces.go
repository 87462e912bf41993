package telemetry

import (
	"context"
	"os"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/spans"
)

// Traces makes the host's spans and sends them, with the spans plugins made
// in their own processes, to one exporter. It implements engine.Tracing.
type Traces struct {
	provider *sdktrace.TracerProvider
	batches  sdktrace.SpanProcessor
	tracer   trace.Tracer
}

// NewTraces sends spans to exp in batches. The host's spans have the
// service name kpipe (OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES may
// say otherwise) and the host's process.pid; plugins' spans keep their own.
func NewTraces(exp sdktrace.SpanExporter) *Traces {
	res, err := resource.Merge(resource.NewSchemaless(
		attribute.String("service.name", "kpipe"),
		attribute.String("service.version", sdk.Version),
		attribute.Int("process.pid", os.Getpid()),
	), resource.Environment())
	if err != nil {
		res = resource.Environment()
	}
	batches := sdktrace.NewBatchSpanProcessor(exp)
	provider := sdktrace.NewTracerProvider(sdktrace.WithResource(res), sdktrace.WithSpanProcessor(batches))
	return &Traces{provider: provider, batches: batches, tracer: provider.Tracer("github.com/kpipe/kpipe", trace.WithInstrumentationVersion(sdk.Version))}
}

// Tracer makes the host's spans.
func (t *Traces) Tracer() trace.Tracer { return t.tracer }

// Import exports spans a plugin ended in its own process (OTLP TracesData).
func (t *Traces) Import(tracesData []byte) error {
	ended, err := spans.Decode(tracesData)
	if err != nil {
		return err
	}
	for _, s := range ended {
		t.batches.OnEnd(s)
	}
	return nil
}

// Shutdown exports what is left and stops.
func (t *Traces) Shutdown(ctx context.Context) error { return t.provider.Shutdown(ctx) }

// ForceFlush exports every span ended so far.
func (t *Traces) ForceFlush(ctx context.Context) error { return t.provider.ForceFlush(ctx) }
