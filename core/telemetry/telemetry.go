// Package telemetry exports a run's metrics with OpenTelemetry: records and
// bytes per pipeline, stage and partition, partition retries and failures,
// and the counters plugins report while they run. Serve exposes them for
// Prometheus at /metrics.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Metrics records a run's figures into OpenTelemetry instruments. It
// implements engine.Recorder.
type Metrics struct {
	records, bytes    metric.Int64Counter
	retries, failures metric.Int64Counter
	plugin            metric.Int64Gauge
}

// New makes the instruments on meter.
func New(meter metric.Meter) (*Metrics, error) {
	m := &Metrics{}
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	var err error
	m.records, err = meter.Int64Counter("kpipe.records", metric.WithDescription("records a stage passed on: the source as read, the sink as written"))
	add(err)
	m.bytes, err = meter.Int64Counter("kpipe.bytes", metric.WithUnit("By"), metric.WithDescription("batch bytes (as they travel, compressed or not) a stage passed on"))
	add(err)
	m.retries, err = meter.Int64Counter("kpipe.partition.retries", metric.WithDescription("retryable partition errors retried"))
	add(err)
	m.failures, err = meter.Int64Counter("kpipe.partition.failures", metric.WithDescription("partitions that failed for good"))
	add(err)
	m.plugin, err = meter.Int64Gauge("kpipe.plugin.counter", metric.WithDescription("a counter a plugin reports while it runs, by name"))
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

// PluginCounters records the counters a plugin reported.
func (m *Metrics) PluginCounters(pipeline, role, plugin string, counters map[string]int64) {
	ctx := context.Background()
	for name, v := range counters {
		m.plugin.Record(ctx, v, metric.WithAttributes(attribute.String("pipeline", pipeline),
			attribute.String("role", role), attribute.String("plugin", plugin), attribute.String("name", name)))
	}
}

// Server serves the metrics for Prometheus.
type Server struct {
	Metrics *Metrics
	// Addr is the address it listens on (the port chosen when asked for 0).
	Addr     string
	srv      *http.Server
	provider *sdkmetric.MeterProvider
}

// Serve listens on addr (HOST:PORT) and serves /metrics until Close.
func Serve(addr string, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	m, err := New(provider.Meter("kpipe"))
	if err != nil {
		ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s := &Server{Metrics: m, Addr: ln.Addr().String(), provider: provider,
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics server stopped", "error", err)
		}
	}()
	log.Info("serving Prometheus metrics", "url", "http://"+s.Addr+"/metrics")
	return s, nil
}

// Close stops the server.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return errors.Join(s.srv.Shutdown(ctx), s.provider.Shutdown(ctx))
}
