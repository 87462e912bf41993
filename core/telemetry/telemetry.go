// Package telemetry exports a run's metrics with OpenTelemetry: records and
// bytes per pipeline, stage and partition, partition retries and failures,
// and the counters plugins report while they run, for Prometheus at
// /metrics and with OTLP (Start).
package telemetry

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/kpipe/kpipe/sdk"
)

// Metrics records a run's figures into OpenTelemetry instruments. It
// implements engine.Recorder.
type Metrics struct {
	meter             metric.Meter
	records, bytes    metric.Int64Counter
	retries, failures metric.Int64Counter
	plugin            metric.Int64Gauge
	pluginPartition   metric.Int64Gauge
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
	m.pluginPartition, err = meter.Int64Gauge("kpipe.plugin.partition.counter", metric.WithDescription("a figure a plugin reports per partition while it runs, by name (such as a source's lag_records)"))
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

// PluginCounters records the counters a plugin reported, and its figures
// per partition.
func (m *Metrics) PluginCounters(pipeline, role, plugin string, counters map[string]int64, partitions []sdk.PartitionMetric) {
	ctx := context.Background()
	for name, v := range counters {
		m.plugin.Record(ctx, v, metric.WithAttributes(attribute.String("pipeline", pipeline),
			attribute.String("role", role), attribute.String("plugin", plugin), attribute.String("name", name)))
	}
	for _, p := range partitions {
		m.pluginPartition.Record(ctx, p.Value, metric.WithAttributes(attribute.String("pipeline", pipeline),
			attribute.String("role", role), attribute.String("plugin", plugin), attribute.String("name", p.Name),
			attribute.String("topic", p.Topic), attribute.Int("partition", int(p.Partition))))
	}
}
