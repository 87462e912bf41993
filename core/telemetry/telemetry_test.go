package telemetry

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/kpipe/kpipe/sdk"
)

// TestServeExposesEveryMetric records one of each figure and scrapes
// /metrics for the names and labels the README documents.
func TestServeExposesEveryMetric(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	s, err := Start(context.Background(), "127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := s.Metrics
	m.Moved("p", "source", "t", 1, 10, 1000)
	m.Moved("p", "source", "t", 1, 5, 500)
	m.Moved("p", "sink", "t", 1, 15, 1500)
	m.Retried("p", "t", 2)
	m.Retried("p", "t", 2)
	m.Failed("p", "t", 3)
	m.PluginCounters("p", "sink", "fs", map[string]int64{"segments_written": 7}, nil)
	m.PluginCounters("p", "source", "kafka", nil, []sdk.PartitionMetric{{Topic: "t", Partition: 4, Name: "lag_records", Value: 12}})
	done := m.Running("p", func() (int64, int64) { return 3, 4096 })
	defer done()

	resp, err := http.Get("http://" + s.Addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`kpipe_records_total{partition="1",pipeline="p",stage="source",topic="t"} 15`,
		`kpipe_records_total{partition="1",pipeline="p",stage="sink",topic="t"} 15`,
		`kpipe_bytes_total{partition="1",pipeline="p",stage="source",topic="t"} 1500`,
		`kpipe_partition_retries_total{partition="2",pipeline="p",stage="source",topic="t"} 2`,
		`kpipe_partition_failures_total{partition="3",pipeline="p",stage="source",topic="t"} 1`,
		`kpipe_plugin_counter{name="segments_written",pipeline="p",plugin="fs",role="sink"} 7`,
		`kpipe_plugin_partition_counter{name="lag_records",partition="4",pipeline="p",plugin="kafka",role="source",topic="t"} 12`,
		`kpipe_inflight_batches{pipeline="p"} 3`,
		`kpipe_inflight_bytes{pipeline="p"} 4096`,
	} {
		if !strings.Contains(string(body), "\n"+want+"\n") {
			t.Errorf("/metrics lacks %s:\n%s", want, body)
		}
	}
}

// TestOTLPSignalsFollowTheEnvironment: an OTLP endpoint exports metrics and
// traces; OTEL_METRICS_EXPORTER=none and OTEL_TRACES_EXPORTER=none turn
// one off; a per-signal endpoint exports that signal alone.
func TestOTLPSignalsFollowTheEnvironment(t *testing.T) {
	for _, c := range []struct {
		env             map[string]string
		metrics, traces bool
	}{
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, true, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_METRICS_EXPORTER": "none"}, false, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_TRACES_EXPORTER": "none"}, true, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_METRICS_EXPORTER": "none", "OTEL_TRACES_EXPORTER": "none"}, false, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, false, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:1"}, true, false},
	} {
		for _, name := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
			"OTEL_METRICS_EXPORTER", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
			t.Setenv(name, c.env[name])
		}
		e, err := Start(context.Background(), "", slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatalf("%v: %v", c.env, err)
		}
		if got := e != nil && e.Metrics != nil; got != c.metrics {
			t.Errorf("%v: metrics exported %v, want %v", c.env, got, c.metrics)
		}
		if got := e != nil && e.Traces != nil; got != c.traces {
			t.Errorf("%v: traces exported %v, want %v", c.env, got, c.traces)
		}
		if e != nil {
			e.Close()
		}
	}
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:1")
	if _, err := Start(context.Background(), "", slog.New(slog.DiscardHandler)); err == nil ||
		err.Error() != `OTLP traces exporter for http://127.0.0.1:1: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL "thrift": use http/protobuf or grpc` {
		t.Errorf("an unknown traces protocol: %v", err)
	}
}

// TestTracesHonourTheSampler: OTEL_TRACES_SAMPLER=always_off exports no
// span; the default exports every one.
func TestTracesHonourTheSampler(t *testing.T) {
	for _, c := range []struct {
		sampler string
		want    int
	}{{"", 1}, {"always_off", 0}} {
		t.Setenv("OTEL_TRACES_SAMPLER", c.sampler)
		exp := tracetest.NewInMemoryExporter()
		tr := NewTraces(exp)
		_, span := tr.Tracer().Start(context.Background(), "kpipe.run")
		span.End()
		tr.ForceFlush(context.Background())
		if got := len(exp.GetSpans()); got != c.want {
			t.Errorf("OTEL_TRACES_SAMPLER=%q: %d spans exported, want %d", c.sampler, got, c.want)
		}
		tr.Shutdown(context.Background())
	}
}
