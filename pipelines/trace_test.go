package pipelines_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/kpipe/kpipe/core/config"
	"github.com/kpipe/kpipe/core/engine"
	"github.com/kpipe/kpipe/core/telemetry"
	"github.com/kpipe/kpipe/internal/testkit"
	"github.com/kpipe/kpipe/pipelines"
)

// traced runs a pipeline with its spans going to an in-memory exporter.
func traced(t *testing.T, p config.Pipeline, opts engine.Options) (*engine.Report, error, tracetest.SpanStubs) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	traces := telemetry.NewTraces(exp)
	opts.Tracing = traces
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := engine.Run(ctx, p, opts)
	if serr := traces.ForceFlush(ctx); serr != nil { // (Shutdown would empty the exporter)
		t.Fatal(serr)
	}
	return rep, err, exp.GetSpans()
}

// attr returns a span's or resource's attribute.
func attr(kvs []attribute.KeyValue, key string) attribute.Value {
	for _, kv := range kvs {
		if string(kv.Key) == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// spanTree indexes a trace's spans.
type spanTree struct {
	byID map[trace.SpanID]tracetest.SpanStub
	run  tracetest.SpanStub
}

// checkTrace checks what every traced run shows: one trace; one kpipe.run
// span, made in this process, the root; every other span under it; each
// plugin's spans made in that plugin's process, named after it.
func checkTrace(t *testing.T, spans tracetest.SpanStubs, rep *engine.Report) spanTree {
	t.Helper()
	tree := spanTree{byID: map[trace.SpanID]tracetest.SpanStub{}}
	var runs int
	for _, s := range spans {
		tree.byID[s.SpanContext.SpanID()] = s
		if s.Name == "kpipe.run" {
			tree.run = s
			runs++
		}
	}
	if runs != 1 {
		t.Fatalf("%d kpipe.run spans among %d, want 1", runs, len(spans))
	}
	if tree.run.Parent.IsValid() || attr(tree.run.Resource.Attributes(), "process.pid").AsInt64() != int64(os.Getpid()) ||
		attr(tree.run.Resource.Attributes(), "service.name").AsString() != "kpipe" {
		t.Errorf("kpipe.run: parent %v, resource %v; want a root made by service kpipe in this process (pid %d)", tree.run.Parent, tree.run.Resource, os.Getpid())
	}
	pids := map[int64]engine.PluginReport{}
	for _, p := range rep.Plugins {
		if p.Pid == os.Getpid() {
			t.Fatalf("plugin %s runs in the test's process", p.Plugin)
		}
		pids[int64(p.Pid)] = p
	}
	seen := map[int64]int{}
	for _, s := range spans {
		if s.SpanContext.TraceID() != tree.run.SpanContext.TraceID() {
			t.Errorf("span %s is in trace %s, the run in %s", s.Name, s.SpanContext.TraceID(), tree.run.SpanContext.TraceID())
		}
		if s.Name == "kpipe.run" {
			continue
		}
		// Every span leads up to the run.
		up := s
		for hops := 0; up.Parent.SpanID() != tree.run.SpanContext.SpanID(); hops++ {
			parent, ok := tree.byID[up.Parent.SpanID()]
			if !ok || hops > 10 {
				t.Fatalf("span %s (%v) does not lead up to the run", s.Name, s.Attributes)
			}
			up = parent
		}
		pid := attr(s.Resource.Attributes(), "process.pid").AsInt64()
		if s.Name == "kpipe.partition" {
			if pid != int64(os.Getpid()) {
				t.Errorf("kpipe.partition made in pid %d, want the host's %d", pid, os.Getpid())
			}
			continue
		}
		p, ok := pids[pid]
		if !ok {
			t.Fatalf("span %s was made in pid %d, which runs no plugin of the run %+v", s.Name, pid, rep.Plugins)
		}
		if svc := attr(s.Resource.Attributes(), "service.name").AsString(); svc != "kpipe-plugin-"+p.Plugin {
			t.Errorf("span %s from pid %d: service %q, want kpipe-plugin-%s", s.Name, pid, svc, p.Plugin)
		}
		if want := "kpipe." + p.Role; len(s.Name) < len(want) || s.Name[:len(want)] != want {
			t.Errorf("span %s was made by the %s", s.Name, p.Role)
		}
		seen[pid]++
	}
	for pid, p := range pids {
		if seen[pid] == 0 {
			t.Errorf("no span from the %s %s (pid %d)", p.Role, p.Plugin, pid)
		}
	}
	return tree
}

// named returns the spans of one name.
func named(spans tracetest.SpanStubs, name string) tracetest.SpanStubs {
	var out tracetest.SpanStubs
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// TestARunIsOneTraceAcrossPluginProcesses traces a backup and a restore
// through two transforms: one trace each, with spans made by the host and
// by every plugin process, each batch's hops joined parent to child.
func TestARunIsOneTraceAcrossPluginProcesses(t *testing.T) {
	addr := testkit.Kafka(t)
	src := testkit.Topic(t, "src")
	testkit.CreateTopic(t, addr, src, 2)
	var recs []*kgo.Record
	for p := int32(0); p < 2; p++ {
		for i := range 30 {
			recs = append(recs, &kgo.Record{Topic: src, Partition: p, Value: []byte(fmt.Sprint(i)), Timestamp: time.UnixMilli(1_700_000_000_000 + int64(i))})
		}
	}
	testkit.Produce(t, addr, recs)
	root := t.TempDir()
	bp := pipelines.Backup("backup", pipelines.BackupOptions{BootstrapServers: []string{addr}, Topics: []string{src}, Path: root, BackupID: "t"})
	setParam(&bp.Sink, "segment_max_records", 10)
	rep, err, spans := traced(t, bp, options(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("backup: %d spans", len(spans))
	tree := checkTrace(t, spans, rep)
	if got := attr(tree.run.Attributes, "kpipe.records").AsInt64(); got != 60 {
		t.Errorf("kpipe.run counts %d records, want 60", got)
	}
	parts := named(spans, "kpipe.partition")
	if len(parts) != 2 {
		t.Fatalf("%d kpipe.partition spans, want 2", len(parts))
	}
	for _, s := range parts {
		if attr(s.Attributes, "kpipe.topic").AsString() != src || attr(s.Attributes, "kpipe.records").AsInt64() != 30 ||
			attr(s.Attributes, "kpipe.offset.next").AsInt64() != 30 || s.Parent.SpanID() != tree.run.SpanContext.SpanID() {
			t.Errorf("kpipe.partition %v under %s: want 30 records of %s up to offset 30, under the run", s.Attributes, s.Parent.SpanID(), src)
		}
	}
	// Each batch: read by the source, under the run; written by the sink,
	// under the source's span of that batch.
	reads := named(spans, "kpipe.source.read")
	var read int64
	for _, s := range reads {
		read += attr(s.Attributes, "kpipe.records").AsInt64()
		if s.Parent.SpanID() != tree.run.SpanContext.SpanID() {
			t.Errorf("kpipe.source.read %v is not under the run", s.Attributes)
		}
	}
	writes := named(spans, "kpipe.sink.write")
	var written int64
	for _, s := range writes {
		written += attr(s.Attributes, "kpipe.records").AsInt64()
		parent := tree.byID[s.Parent.SpanID()]
		if parent.Name != "kpipe.source.read" || attr(parent.Attributes, "kpipe.batch.seq") != attr(s.Attributes, "kpipe.batch.seq") {
			t.Errorf("kpipe.sink.write of batch %v is under %s %v, want the source's span of that batch", attr(s.Attributes, "kpipe.batch.seq"), parent.Name, parent.Attributes)
		}
		if s.Status.Code != codes.Unset || len(s.Events) == 0 || s.Events[0].Name != "written" {
			t.Errorf("kpipe.sink.write %v: status %v, events %v; want a written batch made durable", s.Attributes, s.Status, s.Events)
		}
	}
	if read != 60 || written != 60 || len(reads) != len(writes) {
		t.Errorf("%d records in %d source spans, %d in %d sink spans; want 60 in as many", read, len(reads), written, len(writes))
	}

	// A restore through the filter (which gets the batches' bytes) and the
	// remap (which gets envelopes only): source → filter → remap → sink.
	rp := pipelines.Restore("restore", pipelines.RestoreOptions{Path: root, BackupID: "t", BootstrapServers: []string{addr},
		TimeWindowStart: -1, TimeWindowEnd: -1})
	filter := config.Stage{Plugin: "filter", Params: map[string]json.RawMessage{}}
	setParam(&filter, "expression", "offset < 25")
	rp.Transforms = []config.Stage{filter, remapStage(t, src, testkit.Topic(t, "dst"))}
	rep, err, spans = traced(t, rp, options(t))
	if err != nil {
		t.Fatal(err)
	}
	tree = checkTrace(t, spans, rep)
	var restored int64
	for _, s := range named(spans, "kpipe.sink.write") {
		restored += attr(s.Attributes, "kpipe.records").AsInt64()
		chain := []string{s.Name}
		for up := s; up.Parent.SpanID() != tree.run.SpanContext.SpanID(); {
			up = tree.byID[up.Parent.SpanID()]
			chain = append(chain, up.Name+"@"+attr(up.Resource.Attributes(), "service.name").AsString())
		}
		want := fmt.Sprint([]string{"kpipe.sink.write", "kpipe.transform.process@kpipe-plugin-remap", "kpipe.transform.process@kpipe-plugin-filter", "kpipe.source.read@kpipe-plugin-fs"})
		if fmt.Sprint(chain) != want {
			t.Errorf("a restored batch went %v, want %s", chain, want)
		}
	}
	if restored != 50 {
		t.Errorf("the sink's spans count %d records, want 50 (offsets 0 to 24 of two partitions)", restored)
	}
}
