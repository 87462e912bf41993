package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/kpipe/kpipe/core/config"
	"github.com/kpipe/kpipe/core/plugin"
	"github.com/kpipe/kpipe/core/telemetry"
	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/record"
)

// The engine's tests run fake plugins in process (plugin.Local): the same
// SDK runners and real data links as plugin processes, without the gRPC hop.

// launcher hands out the test's plugin instances by name.
type launcher map[string]any

func (l launcher) Launch(_ context.Context, name string, _ plugin.Kind) (plugin.Instance, error) {
	impl, ok := l[name]
	if !ok {
		return nil, fmt.Errorf("no plugin %q", name)
	}
	return plugin.Local(impl)
}

// flight counts what the source has read and the sink not yet released,
// from outside the engine: credit must bound it.
type flight struct {
	batches, bytes       atomic.Int64
	maxBatches, maxBytes atomic.Int64
	largest              atomic.Int64
}

func (f *flight) read(size int64) {
	raise(&f.maxBatches, f.batches.Add(1))
	raise(&f.maxBytes, f.bytes.Add(size))
	raise(&f.largest, size)
}

func (f *flight) released(size int64) {
	f.batches.Add(-1)
	f.bytes.Add(-size)
}

func raise(m *atomic.Int64, v int64) {
	for {
		old := m.Load()
		if v <= old || m.CompareAndSwap(old, v) {
			return
		}
	}
}

// fakeSource reads batches of perBatch records, round robin over partitions
// of topic "t", offsets from 0, timestamps = 1000 + offset.
type fakeSource struct {
	sdk.UnimplementedSource
	partitions, batches, perBatch int
	flight                        *flight
	traceparent                   string
	// failAt, when positive, makes that Read (1-based) fail.
	failAt int
	// growAt, when positive, adds a partition before that Read's batch
	// and sends the new metadata first.
	growAt int
	grown  bool
	// readHook runs before each Read returns a batch (1-based count).
	readHook func(n int)

	n      int
	next   map[int32]int64
	bld    *record.Builder
	mu     sync.Mutex
	acked  []sdk.Position
	resume []sdk.Position
}

func (s *fakeSource) Spec() sdk.Spec {
	return sdk.Spec{Name: "src", Version: "test", Summary: "fake source"}
}

func (s *fakeSource) Open(_ context.Context, o sdk.SourceOptions) error {
	s.resume = o.Resume
	s.next = map[int32]int64{}
	for _, p := range o.Resume {
		s.next[p.Partition] = p.NextOffset
	}
	s.bld = record.NewBuilder(nil)
	return nil
}

func (s *fakeSource) Read(ctx context.Context) (sdk.Batch, error) {
	if s.n == 0 {
		s.n++
		return sdk.Batch{Metadata: &sdk.Metadata{Topics: []sdk.TopicMetadata{{Name: "t", Partitions: int32(s.partitions)}}}}, nil
	}
	if s.n > s.batches {
		return sdk.Batch{}, io.EOF
	}
	if s.growAt > 0 && s.n == s.growAt && !s.grown {
		s.grown = true
		s.partitions++
		return sdk.Batch{Metadata: &sdk.Metadata{Topics: []sdk.TopicMetadata{{Name: "t", Partitions: int32(s.partitions)}}}}, nil
	}
	if s.failAt > 0 && s.n == s.failAt {
		return sdk.Batch{}, &sdk.PartitionError{Topic: "t", Partition: 0, Offset: 7, Code: "BROKEN", Err: errors.New("the disk is on fire")}
	}
	p := int32((s.n - 1) % s.partitions)
	s.n++
	for range s.perBatch {
		off := s.next[p]
		s.next[p]++
		s.bld.Append(&record.Record{Offset: off, Timestamp: 1000 + off, Key: fmt.Appendf(nil, "k%d", off), Value: make([]byte, 100)})
	}
	b, err := sdk.NewBatch("t", p, s.bld, -1)
	if err != nil {
		return b, err
	}
	b.Traceparent = s.traceparent
	if s.flight != nil {
		s.flight.read(record.Size(b.Record))
	}
	if s.readHook != nil {
		s.readHook(s.n - 1)
	}
	return b, ctx.Err()
}

func (s *fakeSource) Ack(_ context.Context, ps []sdk.Position) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acked = append(s.acked, ps...)
	return nil
}

// fakeSink decodes every batch and keeps its offsets; it acknowledges
// batches in the order ackOrder chooses, in groups of group.
type fakeSink struct {
	sdk.UnimplementedSink
	flight *flight
	group  int
	// reverse acknowledges each group newest first.
	reverse bool
	// releaseEarly releases each batch as soon as it is written.
	releaseEarly bool
	// failAt makes that Write (1-based) fail.
	failAt int
	// writeHook runs at each Write (1-based count).
	writeHook func(n int)

	ack    sdk.Acker
	n      int
	mu     sync.Mutex
	held   []sdk.Batch
	got    map[string][]int64 // topic/partition → offsets
	traces []string
	meta   []sdk.Metadata
	// metaAfter holds, for each metadata message, how many batches the
	// sink had been given before it.
	metaAfter []int
	durable   map[string]int64 // topic/partition → next offset made durable
}

func (s *fakeSink) Spec() sdk.Spec {
	return sdk.Spec{Name: "sink", Version: "test", Summary: "fake sink"}
}

func (s *fakeSink) Open(_ context.Context, ack sdk.Acker) error {
	s.ack = ack
	s.got = map[string][]int64{}
	s.durable = map[string]int64{}
	return nil
}

func (s *fakeSink) WriteMetadata(_ context.Context, m sdk.Metadata) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.meta = append(s.meta, m)
	s.metaAfter = append(s.metaAfter, s.n)
	return nil
}

func (s *fakeSink) Write(_ context.Context, b sdk.Batch) error {
	s.n++
	if s.writeHook != nil {
		s.writeHook(s.n)
	}
	if s.failAt > 0 && s.n == s.failAt {
		return errors.New("the sink is full")
	}
	v, err := record.DecodeView(b.Arrow)
	if err != nil {
		return err
	}
	if int64(v.Len()) != b.Count || v.Bounds() != b.Bounds() {
		return fmt.Errorf("batch %s: envelope %+v, records %+v", b.ID(), b.Bounds(), v.Bounds())
	}
	k := fmt.Sprintf("%s/%d", b.Topic, b.Partition)
	s.mu.Lock()
	for i := range v.Len() {
		s.got[k] = append(s.got[k], v.Offset(i))
	}
	s.traces = append(s.traces, b.Traceparent)
	s.mu.Unlock()
	v.Batch.Release()
	if s.releaseEarly {
		s.released(b)
		b.Release()
	}
	s.held = append(s.held, b)
	if len(s.held) >= max(s.group, 1) {
		s.ackHeld()
	}
	return nil
}

func (s *fakeSink) released(b sdk.Batch) {
	if s.flight != nil {
		s.flight.released(b.Size)
	}
}

func (s *fakeSink) ackHeld() {
	held := s.held
	s.held = nil
	if s.reverse {
		slices.Reverse(held)
	}
	for _, b := range held {
		if !s.releaseEarly {
			s.released(b)
		}
		s.mu.Lock()
		k := fmt.Sprintf("%s/%d", b.Topic, b.Partition)
		s.durable[k] = max(s.durable[k], b.NextOffset)
		s.mu.Unlock()
		s.ack(b.ID())
	}
}

func (s *fakeSink) Flush(context.Context) error {
	s.ackHeld()
	return nil
}

// splitter cuts every batch in two halves; dropper drops partition 1.
type splitter struct{ sdk.UnimplementedTransform }

func (splitter) Spec() sdk.Spec {
	return sdk.Spec{Name: "split", Version: "test", Summary: "splits batches"}
}

func (splitter) Process(_ context.Context, b sdk.Batch) ([]sdk.Batch, error) {
	v, err := record.DecodeView(b.Arrow)
	if err != nil {
		return nil, err
	}
	defer v.Batch.Release()
	var out []sdk.Batch
	bld := record.NewBuilder(nil)
	defer bld.Release()
	half := v.Len() / 2
	for _, r := range [][2]int{{0, half}, {half, v.Len()}} {
		for i := r[0]; i < r[1]; i++ {
			rec := v.Record(i)
			bld.Append(&rec)
		}
		next := int64(-1)
		if r[1] == v.Len() {
			next = b.NextOffset
		}
		o, err := sdk.NewBatch(b.Topic, b.Partition, bld, next)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}

type dropper struct{ sdk.UnimplementedTransform }

func (dropper) Spec() sdk.Spec {
	return sdk.Spec{Name: "drop", Version: "test", Summary: "drops partition 1"}
}

func (dropper) Process(_ context.Context, b sdk.Batch) ([]sdk.Batch, error) {
	if b.Partition == 1 {
		return nil, nil
	}
	return []sdk.Batch{b}, nil
}

// renamer renames topic t to u, on envelopes only.
type renamer struct {
	sdk.UnimplementedTransform
	envelopes atomic.Int64
}

func (*renamer) Spec() sdk.Spec {
	return sdk.Spec{Name: "rename", Version: "test", Summary: "renames t to u"}
}

func (*renamer) Process(context.Context, sdk.Batch) ([]sdk.Batch, error) {
	return nil, errors.New("an envelope-only transform received batch bytes")
}

func (r *renamer) ProcessEnvelope(_ context.Context, e sdk.Envelope) (sdk.Envelope, bool, error) {
	r.envelopes.Add(1)
	e.Topic = "u"
	return e, true, nil
}

func (r *renamer) ProcessMetadata(_ context.Context, m sdk.Metadata) (sdk.Metadata, error) {
	for i := range m.Topics {
		m.Topics[i].Name = "u"
	}
	return m, nil
}

// pipeline builds a config naming the launcher's plugins.
func pipeline(name string, transforms ...string) config.Pipeline {
	p := config.Pipeline{Name: name, Source: config.Stage{Plugin: "src"}, Sink: config.Stage{Plugin: "sink"}}
	for _, t := range transforms {
		p.Transforms = append(p.Transforms, config.Stage{Plugin: t})
	}
	return p
}

func runWith(t *testing.T, ctx context.Context, l launcher, p config.Pipeline, o Options) (*Report, error) {
	t.Helper()
	o.Launcher = l
	if o.StateDir == "" {
		o.StateDir = t.TempDir()
	}
	return Run(ctx, p, o)
}

// wantOffsets checks that the sink got offsets 0..n-1 of each partition, in
// order, once each.
func wantOffsets(t *testing.T, got map[string][]int64, want map[string]int) {
	t.Helper()
	for k, n := range want {
		offs := got[k]
		if len(offs) != n {
			t.Fatalf("%s: %d records, want %d", k, len(offs), n)
		}
		for i, o := range offs {
			if o != int64(i) {
				t.Fatalf("%s: record %d has offset %d", k, i, o)
			}
		}
	}
	if len(got) != len(want) {
		t.Fatalf("sink got partitions %v, want %v", keys(got), want)
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestCreditIsNeverExceeded(t *testing.T) {
	for _, c := range []struct {
		name         string
		window       int
		bytes        int64
		releaseEarly bool
		group        int
	}{
		{"window of 1", 1, 64 << 20, false, 1},
		{"window of 3, acks in threes newest first", 3, 64 << 20, false, 3},
		{"byte budget below the window", 100, 40_000, true, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			fl := &flight{}
			src := &fakeSource{partitions: 3, batches: 60, perBatch: 50, flight: fl}
			sink := &fakeSink{flight: fl, group: c.group, reverse: true, releaseEarly: c.releaseEarly}
			rep, err := runWith(t, context.Background(), launcher{"src": src, "sink": sink}, pipeline("credit"),
				Options{Window: c.window, InFlightBytes: c.bytes})
			if err != nil {
				t.Fatal(err)
			}
			if got := fl.maxBatches.Load(); got > int64(c.window) {
				t.Errorf("the source had %d batches in flight, the window is %d", got, c.window)
			}
			if got, limit := fl.maxBytes.Load(), c.bytes+fl.largest.Load(); got > limit {
				t.Errorf("the source had %d bytes in flight, the budget is %d plus one batch (%d)", got, c.bytes, limit)
			}
			if rep.MaxInFlight != fl.maxBatches.Load() && c.window == 1 {
				t.Errorf("report says %d batches in flight at most, the plugins saw %d", rep.MaxInFlight, fl.maxBatches.Load())
			}
			if rep.MaxInFlight > int64(c.window) || rep.MaxInFlightBytes > c.bytes+fl.largest.Load() {
				t.Errorf("report: %d batches, %d bytes in flight at most; limits %d, %d+%d", rep.MaxInFlight, rep.MaxInFlightBytes, c.window, c.bytes, fl.largest.Load())
			}
			if c.name == "byte budget below the window" && rep.MaxInFlight >= int64(c.window) {
				t.Errorf("the byte budget did not bind: %d batches in flight", rep.MaxInFlight)
			}
			wantOffsets(t, sink.got, map[string]int{"t/0": 1000, "t/1": 1000, "t/2": 1000})
			if rep.RecordsIn != 3000 || rep.RecordsOut != 3000 || rep.BatchesIn != 60 {
				t.Errorf("report: %d records in, %d out, %d batches in", rep.RecordsIn, rep.RecordsOut, rep.BatchesIn)
			}
			if got := positions(rep.Positions); got != "t/0@1000 t/1@1000 t/2@1000" {
				t.Errorf("positions %s", got)
			}
		})
	}
}

// TestAcksInAnyOrderNeverRunAhead: the sink acknowledges groups of batches
// newest first; every position the host reports to the source as persisted
// is covered by what the sink had made durable by then.
func TestAcksInAnyOrderNeverRunAhead(t *testing.T) {
	src := &fakeSource{partitions: 2, batches: 200, perBatch: 10}
	sink := &fakeSink{group: 7, reverse: true}
	var mu sync.Mutex
	var violations []string
	src.readHook = func(int) {
		// Check the acks the source received so far against durability.
		src.mu.Lock()
		acked := append([]sdk.Position(nil), src.acked...)
		src.mu.Unlock()
		sink.mu.Lock()
		defer sink.mu.Unlock()
		for _, p := range acked {
			if d := sink.durable[fmt.Sprintf("%s/%d", p.Topic, p.Partition)]; p.NextOffset > d {
				mu.Lock()
				violations = append(violations, fmt.Sprintf("%s acked, durable only to %d", p, d))
				mu.Unlock()
			}
		}
	}
	rep, err := runWith(t, context.Background(), launcher{"src": src, "sink": sink}, pipeline("acks"),
		Options{Window: 16, CheckpointInterval: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(violations) > 0 {
		t.Fatalf("positions ran ahead of durability: %v", violations[:min(5, len(violations))])
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if len(src.acked) == 0 {
		t.Fatal("the source never heard of a persisted position")
	}
	wantOffsets(t, sink.got, map[string]int{"t/0": 1000, "t/1": 1000})
	if got := positions(rep.Positions); got != "t/0@1000 t/1@1000" {
		t.Errorf("positions %s", got)
	}
}

func TestTransformsThatSplitAndDrop(t *testing.T) {
	src := &fakeSource{partitions: 2, batches: 40, perBatch: 9}
	sink := &fakeSink{group: 5, reverse: true}
	rep, err := runWith(t, context.Background(),
		launcher{"src": src, "split": splitter{}, "drop": dropper{}, "sink": sink},
		pipeline("split-drop", "split", "drop"), Options{Window: 4})
	if err != nil {
		t.Fatal(err)
	}
	// Partition 1 is dropped whole; partition 0 arrives split in halves.
	wantOffsets(t, sink.got, map[string]int{"t/0": 180})
	if rep.BatchesOut != 40 || rep.RecordsOut != 180 || rep.RecordsDropped != 180 {
		t.Errorf("report: %d batches out, %d records out, %d dropped; want 40, 180, 180", rep.BatchesOut, rep.RecordsOut, rep.RecordsDropped)
	}
	// A dropped partition's position moves on all the same.
	if got := positions(rep.Positions); got != "t/0@180 t/1@180" {
		t.Errorf("positions %s", got)
	}
}

// TestEnvelopeOnlyTransformGetsNoBytes: bytes flow past an envelope-only
// transform, which renames the topic in envelopes and metadata; trace
// context travels with each batch.
func TestEnvelopeOnlyTransformGetsNoBytes(t *testing.T) {
	const trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	src := &fakeSource{partitions: 1, batches: 10, perBatch: 5, traceparent: trace}
	sink := &fakeSink{}
	rn := &renamer{}
	var metrics atomic.Int64
	_, err := runWith(t, context.Background(), launcher{"src": src, "rename": rn, "split": splitter{}, "sink": sink},
		pipeline("envelopes", "rename", "split"), Options{MetricsInterval: time.Millisecond,
			OnMetrics: func(string, string, map[string]int64) { metrics.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	wantOffsets(t, sink.got, map[string]int{"u/0": 50})
	if rn.envelopes.Load() != 10 {
		t.Errorf("renamer saw %d envelopes, want 10", rn.envelopes.Load())
	}
	if len(sink.meta) != 1 || len(sink.meta[0].Topics) != 1 || sink.meta[0].Topics[0].Name != "u" {
		t.Errorf("sink metadata %+v, want topic u", sink.meta)
	}
	for _, tr := range sink.traces {
		if tr != trace {
			t.Fatalf("trace context %q reached the sink, want %q", tr, trace)
		}
	}
	if len(sink.traces) != 20 {
		t.Errorf("sink got %d batches, want 20 halves", len(sink.traces))
	}
}

// TestMetadataFlowsAgainWhenItChanges: the source adds a partition after
// four batches and sends its metadata again. The transform rewrites both
// messages, the sink gets them in their place among the batches, and the
// report records what the run saw.
func TestMetadataFlowsAgainWhenItChanges(t *testing.T) {
	src := &fakeSource{partitions: 2, batches: 10, perBatch: 5, growAt: 5}
	sink := &fakeSink{}
	rep, err := runWith(t, context.Background(), launcher{"src": src, "rename": &renamer{}, "sink": sink},
		pipeline("grow", "rename"), Options{Window: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := []sdk.Metadata{
		{Topics: []sdk.TopicMetadata{{Name: "u", Partitions: 2}}},
		{Topics: []sdk.TopicMetadata{{Name: "u", Partitions: 3}}},
	}
	if !reflect.DeepEqual(sink.meta, want) || !slices.Equal(sink.metaAfter, []int{0, 4}) {
		t.Errorf("sink got metadata %+v after %v batches, want %+v after 0 and 4", sink.meta, sink.metaAfter, want)
	}
	if !reflect.DeepEqual(rep.Metadata, want) {
		t.Errorf("report metadata %+v, want %+v", rep.Metadata, want)
	}
	// Batches 1-4 went to partitions 0,1,0,1; the growth read no batch;
	// batches 5-10 (Reads 6-11) go round robin over 3 partitions.
	wantOffsets(t, sink.got, map[string]int{"u/0": 20, "u/1": 20, "u/2": 10})
}

// TestAPluginErrorMidStream: the sink fails on its 6th batch; the run fails
// naming it, and the checkpoint holds only what was durable.
func TestAPluginErrorMidStream(t *testing.T) {
	src := &fakeSource{partitions: 1, batches: 50, perBatch: 10}
	sink := &fakeSink{group: 1, failAt: 6}
	dir := t.TempDir()
	rep, err := runWith(t, context.Background(), launcher{"src": src, "sink": sink}, pipeline("fail"), Options{StateDir: dir})
	want := `pipeline "fail": sink "sink": write t/0: the sink is full`
	if err == nil || err.Error() != want {
		t.Fatalf("Run: %v, want %q", err, want)
	}
	if got := positions(rep.Positions); got != "t/0@50" {
		t.Errorf("positions %s, want the 5 durable batches' t/0@50", got)
	}

	// A source's typed partition error names partition and offset.
	src = &fakeSource{partitions: 1, batches: 50, perBatch: 10, failAt: 3}
	_, err = runWith(t, context.Background(), launcher{"src": src, "sink": &fakeSink{}}, pipeline("fail"), Options{})
	want = `pipeline "fail": source "src": t/0 at offset 7: the disk is on fire (BROKEN, fatal)`
	if err == nil || err.Error() != want {
		t.Fatalf("Run: %v, want %q", err, want)
	}
}

// TestStopWhileBatchesAreInFlight: the run is stopped while the sink is
// slow; every batch read still reaches the sink and is durable, and the
// report says stopped.
func TestStopWhileBatchesAreInFlight(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := &fakeSource{partitions: 2, batches: 10_000, perBatch: 10}
	sink := &fakeSink{group: 3}
	src.readHook = func(n int) {
		if n == 40 {
			cancel()
		}
	}
	sink.writeHook = func(int) { time.Sleep(time.Millisecond) }
	rep, err := runWith(t, ctx, launcher{"src": src, "sink": sink}, pipeline("stop"), Options{Window: 8})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Stopped {
		t.Error("report does not say stopped")
	}
	if rep.RecordsOut != rep.RecordsIn || rep.RecordsIn < 300 || rep.RecordsIn > 480 { // the stop lands near record 400
		t.Fatalf("read %d records, wrote %d; want all read (about 400) written", rep.RecordsIn, rep.RecordsOut)
	}
	var n int
	for _, offs := range sink.got {
		n += len(offs)
	}
	if int64(n) != rep.RecordsIn {
		t.Fatalf("sink got %d records, the source read %d", n, rep.RecordsIn)
	}
	p0, p1 := int64(len(sink.got["t/0"])), int64(len(sink.got["t/1"]))
	if got, want := positions(rep.Positions), fmt.Sprintf("t/0@%d t/1@%d", p0, p1); got != want {
		t.Errorf("positions %s, want %s", got, want)
	}
}

func TestConfigErrorsNameEveryParameter(t *testing.T) {
	p := pipeline("bad")
	p.Source.Params = map[string]json.RawMessage{"nope": json.RawMessage("1")}
	p.Sink.Params = map[string]json.RawMessage{"nada": json.RawMessage(`"x"`)}
	_, err := runWith(t, context.Background(), launcher{"src": &fakeSource{}, "sink": &fakeSink{}}, p, Options{})
	var ce *ConfigError
	want := "pipeline \"bad\" has invalid parameters:\n" +
		"  source \"src\": parameter \"nope\": unknown parameter; this plugin takes none\n" +
		"  sink \"sink\": parameter \"nada\": unknown parameter; this plugin takes none"
	if !errors.As(err, &ce) || err.Error() != want {
		t.Fatalf("Run: %v\nwant %s", err, want)
	}
}

// faultySource reads batches of 5 records round robin over partitions 0-2
// of topic "t", perPartition batches each. Partition 1 fails for good when
// it reaches offset 10; partition 2 fails retryably at offset 5, twice,
// then reads on. It may run without partitions failing on their own
// (PartitionSource), then its first error ends the run.
type faultySource struct {
	sdk.UnimplementedSource
	perPartition int

	mu      sync.Mutex
	next    [3]int64
	stopped [3]bool
	held    [3]bool
	fails2  int
	resumes int
	turn    int
	bld     *record.Builder
}

func (s *faultySource) Spec() sdk.Spec { return sdk.Spec{Name: "faulty", Version: "test"} }

func (s *faultySource) Open(context.Context, sdk.SourceOptions) error {
	s.bld = record.NewBuilder(nil)
	return nil
}

func (s *faultySource) Read(ctx context.Context) (sdk.Batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range 3 {
		p := s.turn % 3
		s.turn++
		if s.stopped[p] || s.held[p] || s.next[p] >= int64(5*s.perPartition) {
			continue
		}
		switch {
		case p == 1 && s.next[p] == 10:
			s.stopped[p] = true
			return sdk.Batch{}, &sdk.PartitionError{Topic: "t", Partition: 1, Offset: 10, Code: "CORRUPT", Err: errors.New("record 10 is unreadable")}
		case p == 2 && s.next[p] == 5 && s.fails2 < 2:
			s.fails2++
			s.held[p] = true
			return sdk.Batch{}, &sdk.PartitionError{Topic: "t", Partition: 2, Offset: 5, Retryable: true, Code: "LEADER_MOVED", Err: errors.New("leader moved")}
		}
		for range 5 {
			off := s.next[p]
			s.next[p]++
			s.bld.Append(&record.Record{Offset: off, Timestamp: 1000 + off, Value: []byte("v")})
		}
		return sdk.NewBatch("t", int32(p), s.bld, -1)
	}
	return sdk.Batch{}, io.EOF
}

// partitionSource adds ResumePartition to a faultySource.
type partitionSource struct{ *faultySource }

func (s partitionSource) ResumePartition(_ context.Context, topic string, partition int32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held[partition] = false
	s.resumes++
	return nil
}

// TestAFailedPartitionLetsTheOthersFinish: partition 1 fails for good
// mid-run; partitions 0 and 2 are read to the end and made durable, the
// report names partition 1 with its offset and cause, and the run fails.
// Partition 2's retryable error clears after two retries and leaves only
// the retry count. With FailFast the first failure ends the run.
func TestAFailedPartitionLetsTheOthersFinish(t *testing.T) {
	src := &faultySource{perPartition: 6}
	sink := &fakeSink{}
	dir := t.TempDir()
	exp := tracetest.NewInMemoryExporter()
	traces := telemetry.NewTraces(exp)
	rep, err := runWith(t, context.Background(), launcher{"src": partitionSource{src}, "sink": sink}, pipeline("faults"), Options{StateDir: dir, Tracing: traces})
	want := `pipeline "faults": 1 partition(s) failed, the others finished: t/1 at offset 10: record 10 is unreadable (CORRUPT)`
	if err == nil || err.Error() != want {
		t.Fatalf("Run: %v, want %q", err, want)
	}
	wantOffsets(t, sink.got, map[string]int{"t/0": 30, "t/1": 10, "t/2": 30})
	if got := positions(rep.Positions); got != "t/0@30 t/1@10 t/2@30" {
		t.Errorf("durable positions %s, want t/0@30 t/1@10 t/2@30", got)
	}
	wantFailed := []PartitionFailure{{Topic: "t", Partition: 1, Offset: 10, Code: "CORRUPT", Cause: "record 10 is unreadable"}}
	if !reflect.DeepEqual(rep.FailedPartitions, wantFailed) || rep.Retries != 2 || src.resumes != 2 {
		t.Errorf("failed %+v, retries %d, resumes %d; want %+v, 2 retries, 2 resumes", rep.FailedPartitions, rep.Retries, src.resumes, wantFailed)
	}
	// The partitions' spans tell the same: partition 1 failed, partition 2
	// was retried twice.
	traces.ForceFlush(context.Background())
	var parts int
	for _, s := range exp.GetSpans() {
		if s.Name != "kpipe.partition" {
			continue
		}
		parts++
		var p int64
		for _, kv := range s.Attributes {
			if kv.Key == "kpipe.partition" {
				p = kv.Value.AsInt64()
			}
		}
		var events []string
		for _, e := range s.Events {
			events = append(events, e.Name)
		}
		got := fmt.Sprintf("%v %q %v", s.Status.Code, s.Status.Description, events)
		want := map[int64]string{0: `Unset "" []`, 1: `Error "t/1 at offset 10: record 10 is unreadable (CORRUPT)" [exception]`, 2: `Unset "" [retry retry]`}[p]
		if got != want {
			t.Errorf("kpipe.partition %d: %s, want %s", p, got, want)
		}
	}
	if parts != 3 {
		t.Errorf("%d kpipe.partition spans, want 3", parts)
	}

	// Fail-fast: the failure of partition 1 ends the run.
	src, sink = &faultySource{perPartition: 6}, &fakeSink{}
	_, err = runWith(t, context.Background(), launcher{"src": partitionSource{src}, "sink": sink}, pipeline("fast"), Options{StateDir: dir, FailFast: true})
	want = `pipeline "fast": source "src": t/1 at offset 10: record 10 is unreadable (CORRUPT, fatal)`
	if err == nil || err.Error() != want {
		t.Fatalf("fail-fast Run: %v, want %q", err, want)
	}

	// A source that cannot go on after an error ends the run at once.
	src, sink = &faultySource{perPartition: 6}, &fakeSink{}
	_, err = runWith(t, context.Background(), launcher{"src": src, "sink": sink}, pipeline("plain"), Options{StateDir: dir})
	want = `t/2 at offset 5: leader moved (LEADER_MOVED, retryable)`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Run of a plain source: %v, want an error containing %q", err, want)
	}
}
