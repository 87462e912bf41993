package conformance

import (
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/kpipe/kpipe/core/plugin"
	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/record"
)

var knownTypes = []string{"string", "int", "bool", "duration", "list(string)", "list(int)", "map(string)", "map(int)"}

// CheckSpec checks that the plugin describes itself completely.
func CheckSpec(t *testing.T, p Plugin) {
	t.Helper()
	spec := start(t, p).Info()
	if spec.Name != p.Name {
		t.Errorf("spec name %q, want %q (the binary's NAME in kpipe-plugin-NAME)", spec.Name, p.Name)
	}
	if spec.Version == "" || spec.Summary == "" {
		t.Errorf("spec needs a version and a summary: %q, %q", spec.Version, spec.Summary)
	}
	if string(spec.Kind) != p.Kind {
		t.Errorf("serves kind %q, want %q", spec.Kind, p.Kind)
	}
	if !slices.Contains(spec.Kinds, spec.Kind) {
		t.Errorf("kinds %v does not list the served kind %v", spec.Kinds, spec.Kind)
	}
	if spec.Pid <= 0 {
		t.Errorf("spec pid %d", spec.Pid)
	}
	seen := map[string]bool{}
	for _, prm := range spec.Params {
		switch {
		case prm.Name == "":
			t.Errorf("a parameter has no name: %v", prm)
		case seen[prm.Name]:
			t.Errorf("parameter %q is listed twice", prm.Name)
		case !slices.Contains(knownTypes, prm.Type):
			t.Errorf("parameter %q has type %q, want one of %v", prm.Name, prm.Type, knownTypes)
		case prm.Description == "":
			t.Errorf("parameter %q has no description", prm.Name)
		case prm.Required && prm.Default != "":
			t.Errorf("parameter %q is required but has default %q", prm.Name, prm.Default)
		}
		seen[prm.Name] = true
	}
}

// CheckRequired checks that Configure accepts p.Params and rejects the
// removal of each required parameter, naming it.
func CheckRequired(t *testing.T, p Plugin) {
	t.Helper()
	configured(t, p) // accepts the valid parameters
	spec := start(t, p).Info()
	for _, prm := range spec.Params {
		if !prm.Required {
			continue
		}
		t.Run("without_"+prm.Name, func(t *testing.T) {
			q := p
			q.Params = maps.Clone(p.Params)
			delete(q.Params, prm.Name)
			inst := start(t, q)
			ps, _ := params(q.Params)
			ctx, cancel := timeout()
			defer cancel()
			err := inst.Configure(ctx, ps)
			var pes param.Errors
			if err == nil {
				t.Fatalf("configure accepted a configuration without required parameter %q", prm.Name)
			}
			if !errors.As(err, &pes) || !slices.ContainsFunc(pes, func(e *param.Error) bool { return e.Param == prm.Name }) {
				t.Fatalf("configure without %q: %v; want an error naming the parameter", prm.Name, err)
			}
		})
	}
}

// Pair is a sink and a source that reads back what the sink wrote, with the
// topic the records go to (a storage plugin writes and reads it; a broker
// plugin needs a topic that does not exist yet, for offsets to start at 0).
type Pair struct {
	Sink   Plugin
	Source Plugin
	Topic  string
	// Partitions and PerPartition size the fixture (default 3 and 250).
	Partitions, PerPartition int
	// BaseTimestamp of the fixture records (default BaseTimestamp).
	BaseTimestamp int64
}

// RunPair runs every check on the pair.
func RunPair(t *testing.T, pr Pair) {
	pr.Sink.Kind, pr.Source.Kind = "sink", "source"
	if pr.Partitions == 0 {
		pr.Partitions = 3
	}
	if pr.PerPartition == 0 {
		pr.PerPartition = 250
	}
	if pr.BaseTimestamp == 0 {
		pr.BaseTimestamp = BaseTimestamp
	}
	t.Run("sink_spec", func(t *testing.T) { CheckSpec(t, pr.Sink) })
	t.Run("source_spec", func(t *testing.T) { CheckSpec(t, pr.Source) })
	t.Run("sink_required", func(t *testing.T) { CheckRequired(t, pr.Sink) })
	t.Run("source_required", func(t *testing.T) { CheckRequired(t, pr.Source) })
	t.Run("round_trip_and_resume", func(t *testing.T) {
		checkRoundTrip(t, pr, func(t *testing.T) plugin.Instance { return configured(t, pr.Sink) },
			func(t *testing.T) plugin.Instance { return configured(t, pr.Source) })
	})
}

// checkRoundTrip writes the fixture through sinks and reads it back through
// sources, each configured anew by the functions given.
func checkRoundTrip(t *testing.T, pr Pair, sink, source func(t *testing.T) plugin.Instance) {
	fixture := Fixture(pr.Partitions, pr.PerPartition, pr.BaseTimestamp)
	batches, err := Batches(pr.Topic, fixture, 40)
	if err != nil {
		t.Fatal(err)
	}
	open, acked, err := WriteAll(sink(t), batches)
	if err != nil {
		t.Fatalf("write: %v", err)
	}
	for i := range batches {
		if n := acked[uint64(i+1)]; n != 1 {
			t.Fatalf("batch %d acked %d times, want once", i+1, n)
		}
	}
	if len(acked) != len(batches) {
		t.Fatalf("%d seqs acked, want %d", len(acked), len(batches))
	}
	if open.TracksPositions && len(open.Resume) != 0 {
		t.Fatalf("a new sink reports positions %v", open.Resume)
	}

	read := func(resume []sdk.Position) map[int32][]record.Record {
		t.Helper()
		got, err := ReadAll(source(t), resume, record.Zstd)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		for _, b := range got {
			if b.Topic != pr.Topic {
				t.Fatalf("read a batch of topic %q, want %q", b.Topic, pr.Topic)
			}
		}
		recs, err := Collect(got)
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}
	compare := func(what string, want, got map[int32][]record.Record) {
		t.Helper()
		for p := int32(0); p < int32(pr.Partitions); p++ {
			if len(got[p]) != len(want[p]) {
				t.Fatalf("%s: partition %d has %d records, want %d", what, p, len(got[p]), len(want[p]))
			}
			for i := range want[p] {
				if d := Diff(want[p][i], got[p][i]); d != "" {
					t.Fatalf("%s: partition %d record %d: %s", what, p, i, d)
				}
			}
		}
		if len(got) != pr.Partitions {
			t.Fatalf("%s: %d partitions, want %d", what, len(got), pr.Partitions)
		}
	}
	compare("round trip", fixture, read(nil))

	// Re-open the source mid-partition: it must continue exactly there.
	var resume []sdk.Position
	want := map[int32][]record.Record{}
	for p := int32(0); p < int32(pr.Partitions); p++ {
		at := int64(pr.PerPartition/2) + int64(p)*7
		resume = append(resume, sdk.Position{Topic: pr.Topic, Partition: p, NextOffset: at})
		want[p] = fixture[p][at:]
	}
	compare("resumed read", want, read(resume))

	if !open.TracksPositions {
		return
	}
	// A sink that tracks positions reports them after a re-open, and stores
	// nothing twice when the same batches come again.
	open, acked, err = WriteAll(sink(t), batches)
	if err != nil {
		t.Fatalf("second write: %v", err)
	}
	got := map[int32]int64{}
	for _, p := range open.Resume {
		if p.Topic != pr.Topic {
			t.Fatalf("sink reports a position for topic %q, want %q", p.Topic, pr.Topic)
		}
		got[p.Partition] = p.NextOffset
	}
	for p := int32(0); p < int32(pr.Partitions); p++ {
		if got[p] != int64(pr.PerPartition) {
			t.Fatalf("re-opened sink reports positions %v, want next offset %d for every partition", got, pr.PerPartition)
		}
	}
	if len(acked) != len(batches) {
		t.Fatalf("second write: %d seqs acked, want %d", len(acked), len(batches))
	}
	compare("after writing the same batches again", fixture, read(nil))
}
