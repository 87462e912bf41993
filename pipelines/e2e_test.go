package pipelines_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/kpipe/kpipe/conformance"
	"github.com/kpipe/kpipe/core/config"
	"github.com/kpipe/kpipe/core/engine"
	"github.com/kpipe/kpipe/core/host"
	"github.com/kpipe/kpipe/core/plugin"
	"github.com/kpipe/kpipe/internal/testkit"
	"github.com/kpipe/kpipe/pipelines"
	"github.com/kpipe/kpipe/sdk/record"
)

// fidelityRecords returns, for each of 3 partitions, records that exercise
// every fidelity rule, then bulk records with spread (and partly
// out-of-order) timestamps starting at base.
func fidelityRecords(topic string, base int64, bulk int) []*kgo.Record {
	var recs []*kgo.Record
	for p := int32(0); p < 3; p++ {
		ts := base + int64(p)*7
		add := func(key, value []byte, hs []kgo.RecordHeader, tsOff int64) {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Key: key, Value: value, Headers: hs, Timestamp: time.UnixMilli(ts + tsOff)})
		}
		add(nil, []byte("null key"), nil, 0)
		add([]byte{}, []byte("empty key"), nil, 1)
		add([]byte("tombstone"), nil, nil, 2)
		add([]byte("empty value"), []byte{}, nil, 3)
		add([]byte("headers"), []byte("v"), []kgo.RecordHeader{
			{Key: "dup", Value: []byte("1")}, {Key: "null", Value: nil}, {Key: "dup", Value: []byte("2")},
			{Key: "empty", Value: []byte{}}, {Key: "", Value: []byte("empty key")},
		}, 4)
		add([]byte("earlier"), []byte("out of order"), nil, -5000) // older than the records before it
		add(nil, nil, nil, 5)                                      // null key and tombstone
		for i := range bulk {
			off := int64(10 + i*100)
			if i%17 == 0 {
				off -= 2500 // out of order
			}
			add([]byte(fmt.Sprintf("k%d-%d", p, i)), bytes.Repeat([]byte{byte('a' + i%26)}, 50+i%200),
				[]kgo.RecordHeader{{Key: "i", Value: []byte(fmt.Sprint(i))}}, off)
		}
	}
	return recs
}

// sameRecord compares everything a restore must keep (see conformance.Diff),
// and the partition. Offsets are compared too: a restore into a fresh topic
// lands each record at its source offset.
func sameRecord(want, got *kgo.Record) string {
	if want.Partition != got.Partition {
		return fmt.Sprintf("partition %d, want %d", got.Partition, want.Partition)
	}
	return conformance.Diff(asRecord(want), asRecord(got))
}

func asRecord(r *kgo.Record) record.Record {
	out := record.Record{Offset: r.Offset, Timestamp: r.Timestamp.UnixMilli(), Key: r.Key, Value: r.Value}
	for _, h := range r.Headers {
		out.Headers = append(out.Headers, record.Header{Key: h.Key, Value: h.Value})
	}
	return out
}

func compare(t *testing.T, want, got []*kgo.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("restored %d records, want %d", len(got), len(want))
	}
	diffs := 0
	for i := range want {
		if d := sameRecord(want[i], got[i]); d != "" {
			diffs++
			if diffs <= 10 {
				t.Errorf("record %d (partition %d offset %d): %s", i, want[i].Partition, want[i].Offset, d)
			}
		}
	}
	if diffs > 0 {
		t.Fatalf("%d of %d records differ", diffs, len(want))
	}
}

func options(t *testing.T) engine.Options {
	h := &host.Host{Dir: testkit.PluginDir(t)}
	t.Cleanup(func() { h.Close() })
	return engine.Options{Launcher: h, StateDir: t.TempDir()}
}

func run(t *testing.T, p config.Pipeline, opts engine.Options) *engine.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t0 := time.Now()
	rep, err := engine.Run(ctx, p, opts)
	t.Logf("%s took %s", p.Name, time.Since(t0))
	if err != nil {
		t.Fatalf("pipeline %s: %v", p.Name, err)
	}
	return rep
}

func setParam(st *config.Stage, name string, v any) {
	js, _ := json.Marshal(v)
	st.Params[name] = js
}

// TestBackupRestoreRoundTripIsByteExact backs up records that exercise every
// fidelity rule, restores them under a new topic name and compares them
// record by record; then restores a time window and checks that exactly the
// records with start <= timestamp <= end come back.
func TestBackupRestoreRoundTripIsByteExact(t *testing.T) {
	addr := testkit.Kafka(t)
	src := testkit.Topic(t, "src")
	testkit.CreateTopic(t, addr, src, 3)
	base := time.Now().Add(-30 * time.Minute).UnixMilli()
	recs := fidelityRecords(src, base, 400)
	testkit.Produce(t, addr, recs)
	want := testkit.ConsumeAll(t, addr, src) // with offsets, in partition order
	if len(want) != len(recs) {
		t.Fatalf("seeded %d records, read back %d", len(recs), len(want))
	}

	root := t.TempDir()
	bp := pipelines.Backup("backup", pipelines.BackupOptions{BootstrapServers: []string{addr}, Topics: []string{src}, Path: root, BackupID: "b1"})
	setParam(&bp.Sink, "segment_max_records", 60) // many segments, so that pruning has work
	rep := run(t, bp, options(t))
	if rep.RecordsOut != int64(len(recs)) {
		t.Fatalf("backed up %d records, want %d", rep.RecordsOut, len(recs))
	}

	// Whole restore under a new name: the backup's metadata, renamed by
	// remap, tells the sink to create the topic with 3 partitions.
	dst := testkit.Topic(t, "dst")
	ro := pipelines.RestoreOptions{
		Path: root, BackupID: "b1", BootstrapServers: []string{addr},
		TimeWindowStart: -1, TimeWindowEnd: -1, TopicMapping: map[string]string{src: dst},
	}
	rep = run(t, pipelines.Restore("restore", ro), options(t))
	if rep.RecordsOut != int64(len(recs)) {
		t.Fatalf("restored %d records, want %d", rep.RecordsOut, len(recs))
	}
	compare(t, want, testkit.ConsumeAll(t, addr, dst))

	// PITR: the window's bounds are timestamps of real records, to pin
	// down that both bounds are inclusive.
	start, end := base+10+100*100, base+10+100*250 // bulk records 100 and 250 of partition 0
	var inWindow []*kgo.Record
	for _, r := range want {
		if ts := r.Timestamp.UnixMilli(); ts >= start && ts <= end {
			inWindow = append(inWindow, r)
		}
	}
	if !slices.ContainsFunc(inWindow, func(r *kgo.Record) bool { return r.Timestamp.UnixMilli() == start }) ||
		!slices.ContainsFunc(inWindow, func(r *kgo.Record) bool { return r.Timestamp.UnixMilli() == end }) {
		t.Fatal("test data has no record on a window bound")
	}
	pitr := testkit.Topic(t, "pitr")
	opts := options(t)
	var sourceRead atomic.Int64 // the fs source process's rchar, as last seen
	stop := make(chan struct{})
	opts.OnLaunch = func(role string, inst plugin.Instance) {
		if role == "source" {
			go watchRChar(inst.(*host.Instance).Pid(), &sourceRead, stop)
		}
	}
	rep = run(t, pipelines.Restore("pitr", pipelines.RestoreOptions{
		Path: root, BackupID: "b1", BootstrapServers: []string{addr},
		TimeWindowStart: start, TimeWindowEnd: end, TopicMapping: map[string]string{src: pitr},
	}), opts)
	close(stop)
	got := testkit.ConsumeAll(t, addr, pitr)
	if len(got) != len(inWindow) {
		t.Fatalf("PITR restored %d records, want %d", len(got), len(inWindow))
	}
	for i := range inWindow {
		w, g := *inWindow[i], *got[i]
		w.Offset = g.Offset // the window starts mid-partition; offsets are new
		if d := sameRecord(&w, &g); d != "" {
			t.Fatalf("PITR record %d: %s", i, d)
		}
	}
	sum := pipelines.Summarize(rep)
	if sum.Restored != int64(len(inWindow)) || sum.Skipped != int64(len(want)-len(inWindow)) {
		t.Fatalf("summary %+v, want restored %d skipped %d", sum, len(inWindow), len(want)-len(inWindow))
	}
	// The fs source read exactly the record batches that overlap the
	// window, each once: their indexed sizes add up to the bytes it read.
	win := record.Window{Start: start, End: end}
	var overlapping, overlapBytes, all, batches, readBatches int64
	for _, p := range testkit.Manifests(t, root, "b1") {
		for _, e := range p.Entries {
			all++
			n := int64(0)
			for _, bi := range e.Batches {
				batches++
				if win.Overlaps(bi.MinTimestamp, bi.MaxTimestamp) {
					n++
					overlapBytes += bi.Length
				}
			}
			if n > 0 {
				overlapping++
				readBatches += n
			}
		}
	}
	// Each batch's index names its largest record, as the kafka source
	// measured it while building the batch.
	bk := testkit.Backup(t, root, "b1")
	for _, p := range testkit.Manifests(t, root, "b1") {
		for _, e := range p.Entries {
			r := bk.Batches(context.Background(), p.Topic, p.Partition, e, nil)
			for {
				f, bi, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				v, err := record.DecodeView(f)
				if err != nil {
					t.Fatal(err)
				}
				var largest int64
				for i := range v.Len() {
					largest = max(largest, v.RecordBytes(i))
				}
				if bi.MaxRecordBytes != largest || largest == 0 {
					t.Fatalf("%s/%d: a batch's index says its largest record has %d bytes, it has %d", p.Topic, p.Partition, bi.MaxRecordBytes, largest)
				}
			}
		}
	}
	m := rep.Plugins[0].Metrics
	if m["segments_read"] != overlapping || m["bytes_read"] != overlapBytes || m["segments_pruned"] != all-overlapping || m["batches_pruned"] != batches-readBatches {
		t.Fatalf("fs source metrics %v; want %d segments read (%d bytes), %d pruned, %d batches pruned", m, overlapping, overlapBytes, all-overlapping, batches-readBatches)
	}
	if overlapping == 0 || overlapping == all {
		t.Fatalf("%d of %d segments overlap the window: the test proves nothing", overlapping, all)
	}
	// And the process itself read no more than that (plus manifests and
	// its control messages): nothing was read twice.
	if got := sourceRead.Load(); got < overlapBytes || got > overlapBytes+64<<10 {
		t.Fatalf("the fs source process read %d bytes, the overlapping batches hold %d", got, overlapBytes)
	}
}

// TestEveryPluginRunsAsItsOwnProcess runs a restore with two transforms and
// checks that the source, each transform and the sink were distinct OS
// processes running their own binaries, and that all are gone afterwards.
func TestEveryPluginRunsAsItsOwnProcess(t *testing.T) {
	addr := testkit.Kafka(t)
	src := testkit.Topic(t, "src")
	testkit.CreateTopic(t, addr, src, 1)
	testkit.Produce(t, addr, []*kgo.Record{{Topic: src, Value: []byte("x"), Timestamp: time.Now()}})
	root := t.TempDir()
	run(t, pipelines.Backup("backup", pipelines.BackupOptions{BootstrapServers: []string{addr}, Topics: []string{src}, Path: root, BackupID: "b"}), options(t))

	type proc struct {
		role, exe string
		pid       int
	}
	var mu sync.Mutex
	var procs []proc
	opts := options(t)
	opts.OnLaunch = func(role string, pi plugin.Instance) {
		inst := pi.(*host.Instance)
		info := inst.Info()
		pid := inst.Pid()
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil {
			t.Errorf("%s %s: pid %d: %v", role, info.Name, pid, err)
		}
		want, _ := filepath.EvalSymlinks(inst.Path())
		want, _ = filepath.Abs(want)
		if exe != want {
			t.Errorf("%s %s: pid %d runs %s, want %s", role, info.Name, pid, exe, want)
		}
		if pid != info.Pid {
			t.Errorf("%s %s: the host started pid %d, the plugin reports %d", role, info.Name, pid, info.Pid)
		}
		mu.Lock()
		procs = append(procs, proc{role, exe, pid})
		mu.Unlock()
	}
	rp := pipelines.Restore("restore", pipelines.RestoreOptions{
		Path: root, BackupID: "b", BootstrapServers: []string{addr}, TimeWindowStart: time.Now().Add(-time.Hour).UnixMilli(), TimeWindowEnd: -1,
	})
	filter := config.Stage{Plugin: "filter", Params: map[string]json.RawMessage{}}
	setParam(&filter, "expression", "partition == 0")
	rp.Transforms = []config.Stage{filter, remapStage(t, src, testkit.Topic(t, "dst"))}
	run(t, rp, opts)
	if len(procs) != 4 {
		t.Fatalf("launched %d plugins, want 4 (fs source, filter, remap, kafka sink): %v", len(procs), procs)
	}
	seen := map[int]bool{os.Getpid(): true}
	for _, p := range procs {
		if seen[p.pid] {
			t.Fatalf("pid %d is shared: %v (test pid %d)", p.pid, procs, os.Getpid())
		}
		seen[p.pid] = true
	}
	for _, p := range procs {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.pid)); err == nil {
			if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid)); !bytes.Contains(st, []byte(") Z ")) {
				t.Errorf("%s (pid %d) still runs after the pipeline ended", p.role, p.pid)
			}
		}
	}
}

// TestBackupKeepsOnlyCommittedTransactionalData writes committed and aborted
// transactions and checks that the backup holds exactly the committed
// records, no transaction markers, and that its position covers the markers.
func TestBackupKeepsOnlyCommittedTransactionalData(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "txn")
	testkit.CreateTopic(t, addr, topic, 1)
	cl := testkit.Client(t, addr, kgo.TransactionalID(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	now := time.Now()
	txn := func(commit bool, values ...string) {
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(v), Timestamp: now}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	txn(true, "c1", "c2")
	txn(false, "a1", "a2", "a3")
	txn(true, "c3")
	txn(false, "a4") // the log now ends with an abort marker

	root := t.TempDir()
	rep := run(t, pipelines.Backup("backup", pipelines.BackupOptions{BootstrapServers: []string{addr}, Topics: []string{topic}, Path: root, BackupID: "txn"}), options(t))
	if rep.RecordsOut != 3 {
		t.Fatalf("backed up %d records, want the 3 committed ones", rep.RecordsOut)
	}
	// Offsets: c1 0, c2 1, marker 2, a1-a3 3-5, marker 6, c3 7, marker 8, a4 9, marker 10.
	if len(rep.Positions) != 1 || rep.Positions[0].NextOffset != 11 {
		t.Fatalf("positions %v, want next offset 11 (past the last marker)", rep.Positions)
	}
	dst := testkit.Topic(t, "txn-restored")
	run(t, pipelines.Restore("restore", pipelines.RestoreOptions{Path: root, BackupID: "txn", BootstrapServers: []string{addr},
		TimeWindowStart: -1, TimeWindowEnd: -1, TopicMapping: map[string]string{topic: dst}}), options(t))
	var got []string
	for _, r := range testkit.ConsumeAll(t, addr, dst) {
		got = append(got, string(r.Value))
	}
	if !slices.Equal(got, []string{"c1", "c2", "c3"}) {
		t.Fatalf("restored %q, want the committed records c1 c2 c3", got)
	}
	// read_uncommitted backs up aborted records too (never the markers).
	bp := pipelines.Backup("backup", pipelines.BackupOptions{BootstrapServers: []string{addr}, Topics: []string{topic}, Path: root, BackupID: "uncommitted"})
	setParam(&bp.Source, "isolation_level", "read_uncommitted")
	if rep := run(t, bp, options(t)); rep.RecordsOut != 7 {
		t.Fatalf("read_uncommitted backed up %d records, want 7 (3 committed, 4 aborted)", rep.RecordsOut)
	}
	// A second backup run resumes at the end and finds nothing new.
	rep = run(t, pipelines.Backup("backup", pipelines.BackupOptions{BootstrapServers: []string{addr}, Topics: []string{topic}, Path: root, BackupID: "txn"}), options(t))
	if rep.ResumedFrom != "sink" || rep.RecordsOut != 0 {
		t.Fatalf("second run: resumed from %q, wrote %d records; want resumed from sink, 0 records", rep.ResumedFrom, rep.RecordsOut)
	}
}

// TestKafkaTopicsByGlobAndNoTopicCreation backs up two topics by a glob
// (and not a third that does not match), then shows that a sink with
// create_topics = false refuses a missing target topic.
func TestKafkaTopicsByGlobAndNoTopicCreation(t *testing.T) {
	addr := testkit.Kafka(t)
	prefix := testkit.Topic(t, "glob")
	for _, suffix := range []string{"-a", "-b", "x"} {
		testkit.CreateTopic(t, addr, prefix+suffix, 1)
		testkit.Produce(t, addr, []*kgo.Record{{Topic: prefix + suffix, Value: []byte(suffix), Timestamp: time.Now()}})
	}
	root := t.TempDir()
	run(t, pipelines.Backup("backup", pipelines.BackupOptions{BootstrapServers: []string{addr}, Topics: []string{prefix + "-*"}, Path: root, BackupID: "g"}), options(t))
	if parts := testkit.Manifests(t, root, "g"); len(parts) != 2 || parts[0].Topic != prefix+"-a" || parts[1].Topic != prefix+"-b" || parts[0].Records() != 1 {
		t.Fatalf("backup holds %+v, want %s-a and %s-b", parts, prefix, prefix)
	}

	rp := pipelines.Restore("restore", pipelines.RestoreOptions{Path: root, BackupID: "g", BootstrapServers: []string{addr},
		TimeWindowStart: -1, TimeWindowEnd: -1, TopicMapping: map[string]string{prefix + "-a": prefix + "-missing"}, Topics: []string{prefix + "-a"}})
	setParam(&rp.Sink, "create_topics", false)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := engine.Run(ctx, rp, options(t))
	want := `target topic "` + prefix + `-missing" does not exist; create it, or let the restore create it (create_topics = true, --create-topics)`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("restore into a missing topic: %v, want an error containing %q", err, want)
	}
}

// watchRChar keeps the rchar of /proc/PID/io (bytes read through system
// calls) in got until stop closes or the process ends.
func watchRChar(pid int, got *atomic.Int64, stop <-chan struct{}) {
	for {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "rchar: "); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				got.Store(n)
			}
		}
		select {
		case <-stop:
			return
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// TestRestoreCreatesTopicsFromMetadataAndGrowsExistingOnes restores a
// backup of two 3-partition topics. One target is missing: it is created
// with all 3 partitions although the time window holds no record of it.
// The other exists with 2: the batches of partition 2 make it grow to 3,
// and every record lands where it was.
func TestRestoreCreatesTopicsFromMetadataAndGrowsExistingOnes(t *testing.T) {
	addr := testkit.Kafka(t)
	a, b := testkit.Topic(t, "a"), testkit.Topic(t, "b")
	old := time.Now().Add(-48 * time.Hour)
	for _, topic := range []string{a, b} {
		testkit.CreateTopic(t, addr, topic, 3)
	}
	var recs []*kgo.Record
	for p := int32(0); p < 3; p++ {
		recs = append(recs, &kgo.Record{Topic: a, Partition: p, Value: []byte("old"), Timestamp: old})
		for i := range 5 {
			recs = append(recs, &kgo.Record{Topic: b, Partition: p, Key: []byte(fmt.Sprint(i)), Value: []byte("v"), Timestamp: time.Now()})
		}
	}
	testkit.Produce(t, addr, recs)
	want := testkit.ConsumeAll(t, addr, b)
	root := t.TempDir()
	run(t, pipelines.Backup("backup", pipelines.BackupOptions{BootstrapServers: []string{addr}, Topics: []string{a, b}, Path: root, BackupID: "m"}), options(t))

	da, db := testkit.Topic(t, "da"), testkit.Topic(t, "db")
	testkit.CreateTopic(t, addr, db, 2)
	rep := run(t, pipelines.Restore("restore", pipelines.RestoreOptions{
		Path: root, BackupID: "m", BootstrapServers: []string{addr},
		TimeWindowStart: time.Now().Add(-time.Hour).UnixMilli(), TimeWindowEnd: -1,
		TopicMapping: map[string]string{a: da, b: db},
	}), options(t))
	if rep.RecordsOut != int64(len(want)) {
		t.Fatalf("restored %d records, want %d", rep.RecordsOut, len(want))
	}
	adm := kadm.NewClient(testkit.Client(t, addr))
	details, err := adm.ListTopics(context.Background(), da, db)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{da, db} {
		if n := len(details[topic].Partitions); n != 3 {
			t.Errorf("target %s has %d partitions, want 3", topic, n)
		}
	}
	if got := testkit.ConsumeAll(t, addr, da); len(got) != 0 {
		t.Errorf("target %s holds %d records, want none (all lie before the window)", da, len(got))
	}
	compare(t, want, testkit.ConsumeAll(t, addr, db))
}

// TestADamagedPartitionLetsTheOthersRestore deletes a segment of partition
// 1 from a backup and turns the check before reading off: the restore
// writes partitions 0 and 2 whole and
// partition 1 up to the gap, then fails naming partition 1, its offset and
// the cause.
func TestADamagedPartitionLetsTheOthersRestore(t *testing.T) {
	addr := testkit.Kafka(t)
	src := testkit.Topic(t, "src")
	testkit.CreateTopic(t, addr, src, 3)
	var recs []*kgo.Record
	for p := int32(0); p < 3; p++ {
		for i := range 30 {
			recs = append(recs, &kgo.Record{Topic: src, Partition: p, Value: []byte(fmt.Sprint(i)), Timestamp: time.Now()})
		}
	}
	testkit.Produce(t, addr, recs)
	root := t.TempDir()
	bp := pipelines.Backup("backup", pipelines.BackupOptions{BootstrapServers: []string{addr}, Topics: []string{src}, Path: root, BackupID: "d"})
	setParam(&bp.Sink, "segment_max_records", 10)
	run(t, bp, options(t))
	parts := testkit.Manifests(t, root, "d")
	if len(parts) != 3 || len(parts[1].Entries) != 3 || parts[1].Entries[1].MinOffset != 10 {
		t.Fatalf("backup partitions %+v, want 3 of 3 segments of 10", parts)
	}
	if err := os.Remove(testkit.SegmentFile(root, "d", src, 1, parts[1].Entries[1])); err != nil {
		t.Fatal(err)
	}

	dst := testkit.Topic(t, "dst")
	var logs testkit.SyncBuffer
	opts := options(t)
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	opts.Logger, opts.Launcher.(*host.Host).Logger = log, log
	rp := pipelines.Restore("restore", pipelines.RestoreOptions{Path: root, BackupID: "d", BootstrapServers: []string{addr},
		TimeWindowStart: -1, TimeWindowEnd: -1, TopicMapping: map[string]string{src: dst}})
	// The damage a check before reading would find is met while reading.
	setParam(&rp.Source, "preflight", false)
	rep, err, spans := traced(t, rp, opts)
	cause := fmt.Sprintf("segment d/topics/%s/1/%s is missing", src, parts[1].Entries[1].Segment)
	want := fmt.Sprintf(`pipeline "restore": 1 partition(s) failed, the others finished: %s/1 at offset 10: %s (BACKUP_DAMAGED)`, src, cause)
	if err == nil || err.Error() != want {
		t.Fatalf("restore: %v, want %q", err, want)
	}
	wantFailed := []engine.PartitionFailure{{Topic: src, Partition: 1, Offset: 10, Code: "BACKUP_DAMAGED", Cause: cause}}
	if !reflect.DeepEqual(rep.FailedPartitions, wantFailed) {
		t.Errorf("failed partitions %+v, want %+v", rep.FailedPartitions, wantFailed)
	}
	got := map[int32]int{}
	for _, r := range testkit.ConsumeAll(t, addr, dst) {
		got[r.Partition]++
	}
	if got[0] != 30 || got[1] != 10 || got[2] != 30 {
		t.Errorf("restored per partition %v, want 30, 10 (up to the gap) and 30", got)
	}

	// The trace shows where: the partition's span and the source's failed
	// read; the plugin's log line names the partition and that span.
	tree := checkTrace(t, spans, rep)
	var failedRead tracetest.SpanStub
	for _, s := range named(spans, "kpipe.source.read") {
		if s.Status.Code == codes.Error {
			failedRead = s
		}
	}
	if attr(failedRead.Attributes, "kpipe.topic").AsString() != src || attr(failedRead.Attributes, "kpipe.partition").AsInt64() != 1 ||
		failedRead.Status.Description != fmt.Sprintf("%s/1 at offset 10: %s (BACKUP_DAMAGED, fatal)", src, cause) {
		t.Errorf("the failed read's span: %v, %v; want partition 1's error", failedRead.Attributes, failedRead.Status)
	}
	for _, s := range named(spans, "kpipe.partition") {
		p := attr(s.Attributes, "kpipe.partition").AsInt64()
		want := codes.Unset
		if p == 1 {
			want = codes.Error
		}
		if s.Status.Code != want {
			t.Errorf("kpipe.partition %d: status %v, want %v", p, s.Status, want)
		}
	}
	var line map[string]any
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "partition failed") {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	wantLine := map[string]any{
		"level": "WARN", "msg": "partition failed; reading the others on", "logger": "plugin.fs.kpipe-plugin-fs",
		"topic": src, "partition": 1.0, "offset": 10.0, "code": "BACKUP_DAMAGED", "error": cause,
		"trace_id": tree.run.SpanContext.TraceID().String(), "span_id": failedRead.SpanContext.SpanID().String(),
	}
	for k, v := range wantLine {
		if line[k] != v {
			t.Errorf("the plugin's log line %v: %s is %v, want %v", line, k, line[k], v)
		}
	}
}

// remapStage is the remap transform renaming topic from to to.
func remapStage(t *testing.T, from, to string) config.Stage {
	t.Helper()
	st := config.Stage{Plugin: "remap", Params: map[string]json.RawMessage{}}
	setParam(&st, "topic_mapping", map[string]string{from: to})
	return st
}
