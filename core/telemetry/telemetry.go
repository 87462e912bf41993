// Package telemetry exports a run's metrics with OpenTelemetry: records and
// bytes per pipeline, stage and partition, partition retries and failures,
// and the counters plugins report while they run, for Prometheus at
// /metrics and with OTLP (Start).
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Metrics records a run's figures into OpenTelemetry instruments. It
// implements engine.Recorder.
type Metrics struct {
	meter             metric.Meter
	records, bytes    metric.Int64Counter
	retries, failures metric.Int64Counter
	plugin            metric.Int64Gauge
	inFlight          metric.Int64ObservableGauge
	inFlightBytes     metric.Int64ObservableGauge
}

// New makes the instruments on meter.
func New(meter metric.Meter) (*Metrics, error) {
	m := &Metrics{meter: meter}
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	var err error
	m.records, err = meter.Int64Counter("kpipe.records", metric.WithDescription("records a stage passed on: read by the source, or handed to the sink (not yet durable)"))
	add(err)
	m.bytes, err = meter.Int64Counter("kpipe.bytes", metric.WithUnit("By"), metric.WithDescription("batch bytes (as they travel, compressed or not) a stage passed on"))
	add(err)
	m.retries, err = meter.Int64Counter("kpipe.partition.retries", metric.WithDescription("retryable partition errors retried"))
	add(err)
	m.failures, err = meter.Int64Counter("kpipe.partition.failures", metric.WithDescription("partitions that failed for good"))
	add(err)
	m.plugin, err = meter.Int64Gauge("kpipe.plugin.counter", metric.WithDescription("a counter a plugin reports while it runs, by name"))
	add(err)
	m.inFlight, err = meter.Int64ObservableGauge("kpipe.inflight.batches", metric.WithDescription("batches between the source and the sink's release"))
	add(err)
	m.inFlightBytes, err = meter.Int64ObservableGauge("kpipe.inflight", metric.WithUnit("By"), metric.WithDescription("decompressed batch bytes between the source and the sink's release"))
	add(err)
	return m, errors.Join(errs...)
}

func partAttrs(pipeline, stage, topic string, partition int32) metric.MeasurementOption {
	return metric.WithAttributes(attribute.String("pipeline", pipeline), attribute.String("stage", stage),
		attribute.String("topic", topic), attribute.Int("partition", int(partition)))
}

// Moved counts the records and bytes a stage passed on for one partition.
func (m *Metrics) Moved(pipeline, stage, topic string, partition int32, records, bytes int64) {
	ctx := context.Background()
	o := partAttrs(pipeline, stage, topic, partition)
	m.records.Add(ctx, records, o)
	m.bytes.Add(ctx, bytes, o)
}

// Retried counts a retryable error of a source partition.
func (m *Metrics) Retried(pipeline, topic string, partition int32) {
	m.retries.Add(context.Background(), 1, partAttrs(pipeline, "source", topic, partition))
}

// Failed counts a source partition that failed for good.
func (m *Metrics) Failed(pipeline, topic string, partition int32) {
	m.failures.Add(context.Background(), 1, partAttrs(pipeline, "source", topic, partition))
}

// Running observes a run's batches and decompressed bytes in flight, as
// inFlight tells them, until done is called.
func (m *Metrics) Running(pipeline string, inFlight func() (batches, bytes int64)) (done func()) {
	attrs := metric.WithAttributes(attribute.String("pipeline", pipeline))
	reg, err := m.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		b, n := inFlight()
		o.ObserveInt64(m.inFlight, b, attrs)
		o.ObserveInt64(m.inFlightBytes, n, attrs)
		return nil
	}, m.inFlight, m.inFlightBytes)
	if err != nil {
		return func() {}
	}
	return func() { reg.Unregister() }
}

// PluginCounters records the counters a plugin reported.
func (m *Metrics) PluginCounters(pipeline, role, plugin string, counters map[string]int64) {
	ctx := context.Background()
	for name, v := range counters {
		m.plugin.Record(ctx, v, metric.WithAttributes(attribute.String("pipeline", pipeline),
			attribute.String("role", role), attribute.String("plugin", plugin), attribute.String("name", name)))
	}
}

// Exporter sends the metrics where the user asked: Prometheus /metrics on
// an address, and OTLP when the standard OpenTelemetry environment names an
// endpoint.
type Exporter struct {
	Metrics *Metrics
	// Addr is the address /metrics is served on (the port chosen when
	// asked for 0); empty when not served.
	Addr     string
	srv      *http.Server
	provider *sdkmetric.MeterProvider
}

// Start exports the metrics: at http://addr/metrics when addr is set, and
// with OTLP when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_METRICS_ENDPOINT is set (protocol from
// OTEL_EXPORTER_OTLP[_METRICS]_PROTOCOL: http/protobuf, the default, or
// grpc; the exporters read the other OTEL_EXPORTER_OTLP_* settings, and
// OTEL_METRIC_EXPORT_INTERVAL sets how often, 60s by default, besides a
// last export at Close). It returns nil when neither is asked for.
func Start(ctx context.Context, addr string, log *slog.Logger) (*Exporter, error) {
	var readers []sdkmetric.Option
	var ln net.Listener
	var reg *prometheus.Registry
	if addr != "" {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return nil, &ListenError{Err: err}
		}
		reg = prometheus.NewRegistry()
		exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("prometheus exporter: %w", err)
		}
		readers = append(readers, sdkmetric.WithReader(exp))
	}
	if endpoint := firstEnv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"); endpoint != "" {
		exp, err := otlpExporter(ctx)
		if err != nil {
			if ln != nil {
				ln.Close()
			}
			return nil, fmt.Errorf("OTLP metrics exporter for %s: %w", endpoint, err)
		}
		readers = append(readers, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)))
		log.Info("exporting metrics with OTLP", "endpoint", endpoint)
	}
	if len(readers) == 0 {
		return nil, nil
	}
	provider := sdkmetric.NewMeterProvider(readers...)
	m, err := New(provider.Meter("kpipe"))
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return nil, err
	}
	e := &Exporter{Metrics: m, provider: provider}
	if ln != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		e.Addr = ln.Addr().String()
		e.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := e.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Warn("metrics server stopped", "error", err)
			}
		}()
		log.Info("serving Prometheus metrics", "url", "http://"+e.Addr+"/metrics")
	}
	return e, nil
}

// ListenError says the /metrics address cannot be listened on.
type ListenError struct{ Err error }

func (e *ListenError) Error() string { return e.Err.Error() }
func (e *ListenError) Unwrap() error { return e.Err }

// otlpExporter is the OTLP metric exporter of the protocol the environment
// names.
func otlpExporter(ctx context.Context) (sdkmetric.Exporter, error) {
	switch proto := firstEnv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"); proto {
	case "", "http/protobuf":
		return otlpmetrichttp.New(ctx)
	case "grpc":
		return otlpmetricgrpc.New(ctx)
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q: use http/protobuf or grpc", proto)
	}
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

// Close stops serving and exports what OTLP has not sent yet.
func (e *Exporter) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	if e.srv != nil {
		errs = append(errs, e.srv.Shutdown(ctx))
	}
	return errors.Join(append(errs, e.provider.Shutdown(ctx))...)
}
