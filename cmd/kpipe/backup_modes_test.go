package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/internal/testkit"
	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/storage"
)

// TestDeleteRecordsBetweenTwoRunsIsAGap: records deleted with
// DeleteRecords between two runs of a backup are recorded as exactly that
// gap; the second run backs up the rest.
func TestDeleteRecordsBetweenTwoRunsIsAGap(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "delrec")
	ts := time.Now().Add(-time.Hour).UnixMilli()
	seedPartitions(t, addr, topic, 1, 10, ts)
	path := t.TempDir()
	run := func() {
		t.Helper()
		if code, _, errText := kpipeWithin(t, time.Minute, "backup", "--bootstrap-servers", addr, "--topics", topic, "--path", path, "--backup-id", "b", "--fresh", "--segment-max-records", "5"); code != 0 {
			t.Fatalf("backup: exit %d: %s", code, errText)
		}
	}
	run()
	var more []*kgo.Record
	for i := range 10 {
		more = append(more, &kgo.Record{Topic: topic, Partition: 0, Value: []byte(fmt.Sprint(10 + i)), Timestamp: time.UnixMilli(ts)})
	}
	testkit.Produce(t, addr, more)
	adm := kadm.NewClient(testkit.Client(t, addr))
	var del kadm.Offsets
	del.AddOffset(topic, 0, 15, -1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if resp, err := adm.DeleteRecords(ctx, del); err != nil || resp.Error() != nil {
		t.Fatalf("delete records: %v %v", err, resp.Error())
	}
	run()
	m := testkit.Manifests(t, path, "b")[0]
	var got []string
	for _, e := range m.Entries {
		got = append(got, fmt.Sprintf("%s %d-%d", e.Kind, e.MinOffset, e.NextOffset))
	}
	want := fmt.Sprint([]string{"segment 0-5", "segment 5-10", "gap 10-15", "segment 15-20"})
	if fmt.Sprint(got) != want {
		t.Fatalf("entries %v, want %s", got, want)
	}
	if g := m.Entries[2]; g.Reason != sdk.GapDeleted {
		t.Fatalf("gap reason %q, want %q", g.Reason, sdk.GapDeleted)
	}

	// describe shows the gap's exact offsets, and the time range and the
	// counts as the PITR guide's describe does; validate passes it.
	d := describeBackup(t, path, "b")
	parts := d.Topics[0].Incarnations[0].PartitionDetails
	if len(parts) != 1 || len(parts[0].GapList) != 1 {
		t.Fatalf("partitions %+v, want one with one gap", parts)
	}
	if g := parts[0].GapList[0]; g.FromOffset != 10 || g.ToOffset != 14 || g.Reason != sdk.GapDeleted || g.RecordedAt.IsZero() {
		t.Fatalf("gap %+v, want offsets 10 to 14, %q", g, sdk.GapDeleted)
	}
	if d.Records != 15 || d.Gaps != 1 || *parts[0].EarliestOffset != 0 || *parts[0].LatestOffset != 19 || parts[0].NextOffset != 20 {
		t.Fatalf("records %d, gaps %d, partition %+v", d.Records, d.Gaps, parts[0])
	}
	code, out, errText := kpipe(t, "describe", "--path", path, "--backup-id", "b")
	first := time.UnixMilli(ts).UTC().Format("2006-01-02T15:04:05.000Z")
	for _, want := range []string{
		"Backup: b\n",
		fmt.Sprintf("Earliest Message: %s (%d)\n", first, ts),
		fmt.Sprintf("Latest Message: %s (%d)\n", time.UnixMilli(ts+9).UTC().Format("2006-01-02T15:04:05.000Z"), ts+9),
		fmt.Sprintf("%s 1 partitions 15 records\n", topic),
		fmt.Sprintf("  %s/0 offsets 10-14: %s (recorded ", topic, sdk.GapDeleted),
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("describe: exit %d, no %q in:\n%s%s", code, want, out, errText)
		}
	}
	validBackup(t, path, "b")
}

// TestAContinuousBackupFollowsNewTopicsAndPartitions: a topic created
// under the backup's glob and partitions added to a backed-up topic are
// backed up from their first offset, and a record produced is durable
// within the segment interval and 2 seconds.
func TestAContinuousBackupFollowsNewTopicsAndPartitions(t *testing.T) {
	addr := testkit.Kafka(t)
	prefix := testkit.Topic(t, "follow")
	a, b := prefix+"-a", prefix+"-b"
	seedPartitions(t, addr, a, 1, 5, time.Now().UnixMilli())
	path := t.TempDir()
	backup := backupAt{path, "f"}
	hcl := writeFile(t, fmt.Sprintf(`pipeline "follow" {
  source "kafka" {
    bootstrap_servers         = [%q]
    topics                    = [%q]
    continuous                = true
    metadata_refresh_interval = "1s"
  }
  sink "fs" {
    path           = %q
    backup_id      = "f"
    flush_interval = "2s"
  }
}
`, addr, prefix+"-*", path))
	cmd := exec.Command(testkit.KpipeBinary(t), "run", hcl, "--plugin-dir", testkit.PluginDir(t), "--state-dir", t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitHeld := func(want int64, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for held(t, backup) < want {
			if time.Since(start) > within {
				t.Fatalf("the backup holds %d of %d records after %s: %s", held(t, backup), want, within, stderr.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		return time.Since(start)
	}
	waitHeld(5, time.Minute)

	seedPartitions(t, addr, b, 2, 5, time.Now().UnixMilli())
	adm := kadm.NewClient(testkit.Client(t, addr))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if resp, err := adm.UpdatePartitions(ctx, 3, a); err != nil || resp.Error() != nil {
		t.Fatalf("add partitions: %v %v", err, resp.Error())
	}
	var recs []*kgo.Record
	for p := int32(1); p < 3; p++ {
		for i := range 5 {
			recs = append(recs, &kgo.Record{Topic: a, Partition: p, Value: []byte(fmt.Sprint(i))})
		}
	}
	testkit.Produce(t, addr, recs)
	waitHeld(25, time.Minute)

	// Durable within the segment interval (2s) and 2 seconds.
	var worst atomic.Int64
	for i := range 3 {
		testkit.Produce(t, addr, []*kgo.Record{{Topic: b, Partition: int32(i % 2), Value: []byte("late")}})
		took := waitHeld(int64(26+i), time.Minute)
		if took > time.Duration(worst.Load()) {
			worst.Store(int64(took))
		}
	}
	if w := time.Duration(worst.Load()); w > 4*time.Second {
		t.Errorf("a record took %s to be durable, want at most 2s + 2s", w)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	for _, m := range testkit.Manifests(t, path, "f") {
		if len(m.Entries) == 0 || m.Entries[0].MinOffset != 0 {
			t.Fatalf("%s/%d: entries %+v, want them from offset 0", m.Topic, m.Partition, m.Entries)
		}
	}
	meta, err := testkit.Backup(t, path, "f").Metadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ta, _ := meta.Topic(a)
	tb, _ := meta.Topic(b)
	if ta.Partitions != 3 || tb.Partitions != 2 {
		t.Fatalf("metadata %+v, want %s with 3 partitions and %s with 2", meta, a, b)
	}
}

// TestASnapshotStopsAtTheEndOffsetsTakenAtStart backs up topics that
// producers keep writing to: the backup ends (exit 0) at end offsets no
// earlier than those before it started and short of those at its end,
// each partition whole up to them.
func TestASnapshotStopsAtTheEndOffsetsTakenAtStart(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "snap")
	seedPartitions(t, addr, topic, 2, 20000, time.Now().UnixMilli())
	adm := kadm.NewClient(testkit.Client(t, addr))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ends := func() map[int32]int64 {
		t.Helper()
		lo, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		out := map[int32]int64{}
		lo.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
		return out
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // producers keep writing
		defer close(done)
		cl := testkit.Client(t, addr, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		for i := 0; ; i++ {
			select {
			case <-stop:
				cl.Flush(ctx)
				return
			default:
			}
			cl.Produce(ctx, &kgo.Record{Topic: topic, Partition: int32(i % 2), Value: []byte("during")}, nil)
			if i%100 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	before := ends()
	path := t.TempDir()
	code, _, errText := kpipeWithin(t, time.Minute, "backup", "--bootstrap-servers", addr, "--topics", topic, "--path", path, "--backup-id", "s")
	after := ends()
	close(stop)
	<-done
	if code != 0 {
		t.Fatalf("snapshot backup: exit %d: %s", code, errText)
	}
	testkit.CheckBackup(t, path, "s") // whole from offset 0
	for _, m := range testkit.Manifests(t, path, "s") {
		end := m.NextOffset()
		if end < before[m.Partition] || end >= after[m.Partition] {
			t.Fatalf("partition %d ends at %d, want in [%d, %d): the end offsets at its start", m.Partition, end, before[m.Partition], after[m.Partition])
		}
		if m.Records() != end {
			t.Fatalf("partition %d holds %d records up to offset %d", m.Partition, m.Records(), end)
		}
	}
}

var _ = storage.KindGap

// TestGroupOffsetsInTheSnapshot: with --consumer-group-snapshot the backup
// holds what each consumer group committed on the topics backed up (and
// nothing of other topics), asked of the groups' coordinators at the
// snapshot's start; without it, none.
func TestGroupOffsetsInTheSnapshot(t *testing.T) {
	addr := testkit.Kafka(t)
	topic, other := testkit.Topic(t, "groups"), testkit.Topic(t, "groups-other")
	seedPartitions(t, addr, topic, 2, 100, time.Now().UnixMilli())
	seedPartitions(t, addr, other, 1, 10, time.Now().UnixMilli())
	adm := kadm.NewClient(testkit.Client(t, addr))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g1, g2 := topic+"-g1", topic+"-g2"
	commit := func(group string, offs map[string]map[int32]int64) {
		t.Helper()
		var o kadm.Offsets
		for tp, parts := range offs {
			for p, at := range parts {
				o.AddOffset(tp, p, at, -1)
			}
		}
		resp, err := adm.CommitOffsets(ctx, group, o)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	commit(g1, map[string]map[int32]int64{topic: {0: 40, 1: 7}})
	commit(g2, map[string]map[int32]int64{topic: {0: 90}, other: {0: 5}})
	path := t.TempDir()
	before := time.Now()
	if code, _, errText := kpipeWithin(t, time.Minute, "backup", "--bootstrap-servers", addr, "--topics", topic, "--path", path,
		"--backup-id", "g", "--consumer-group-snapshot"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, errText)
	}
	meta, err := testkit.Backup(t, path, "g").Metadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, g := range meta.Groups {
		if g.Group == g1 || g.Group == g2 { // other tests' groups may be there too
			got[g.Group] = fmt.Sprint(g.Offsets)
		}
	}
	want := map[string]string{
		g1: fmt.Sprint([]sdk.GroupOffset{{Topic: topic, Partition: 0, Offset: 40, LeaderEpoch: -1}, {Topic: topic, Partition: 1, Offset: 7, LeaderEpoch: -1}}),
		g2: fmt.Sprint([]sdk.GroupOffset{{Topic: topic, Partition: 0, Offset: 90, LeaderEpoch: -1}}),
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("groups in the backup %v, want %v", got, want)
	}
	if at := meta.GroupsTakenAt; at.Before(before.Add(-time.Second)) || at.After(time.Now()) {
		t.Fatalf("groups taken at %s, want during the backup (after %s)", at, before)
	}
	plain := t.TempDir()
	if code, _, errText := kpipeWithin(t, time.Minute, "backup", "--bootstrap-servers", addr, "--topics", topic, "--path", plain, "--backup-id", "g"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, errText)
	}
	if meta, _ := testkit.Backup(t, plain, "g").Metadata(ctx); len(meta.Groups) != 0 || !meta.GroupsTakenAt.IsZero() {
		t.Fatalf("a backup without --consumer-group-snapshot holds groups: %+v", meta.Groups)
	}
}

// TestBigRecordsAndFarApartTimestampsAreBackedUpExactly: records of
// several MiB, and timestamps 40 days apart inside one producer batch
// (beyond the 24.8 days a 32-bit millisecond delta holds), with null and
// empty keys and values, are in the backup byte for byte.
func TestBigRecordsAndFarApartTimestampsAreBackedUpExactly(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "fidelity")
	adm := kadm.NewClient(testkit.Client(t, addr))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	maxBytes := fmt.Sprint(16 << 20)
	if resp, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"max.message.bytes": &maxBytes}, topic); err != nil || resp.Err != nil {
		t.Fatalf("create topic: %v %v", err, resp.Err)
	}
	big := func(n int, b byte) []byte { return bytes.Repeat([]byte{b, b + 1, b + 2}, n/3) }
	day := int64(24 * time.Hour / time.Millisecond)
	t0 := time.Now().Add(-60 * 24 * time.Hour).UnixMilli()
	recs := []*kgo.Record{
		{Topic: topic, Key: []byte("3MiB"), Value: big(3<<20, 1), Timestamp: time.UnixMilli(t0)},
		{Topic: topic, Key: []byte("5MiB"), Value: big(5<<20, 7), Timestamp: time.UnixMilli(t0 + 1)},
		{Topic: topic, Key: nil, Value: []byte{}, Timestamp: time.UnixMilli(t0 + 40*day)},
		{Topic: topic, Key: []byte{}, Value: nil, Timestamp: time.UnixMilli(t0 - 40*day), Headers: []kgo.RecordHeader{{Key: "h", Value: nil}, {Key: "h", Value: []byte{}}}},
	}
	cl := testkit.Client(t, addr, kgo.ProducerBatchMaxBytes(16<<20), kgo.ProducerLinger(50*time.Millisecond), kgo.MaxBufferedBytes(64<<20))
	if err := cl.ProduceSync(ctx, recs[2:]...).FirstErr(); err != nil { // one batch, 80 days wide
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, recs[:2]...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	path := t.TempDir()
	if code, _, errText := kpipeWithin(t, time.Minute, "backup", "--bootstrap-servers", addr, "--topics", topic, "--path", path, "--backup-id", "f"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, errText)
	}
	got := testkit.BackupRecords(t, path, "f")
	want := testkit.ConsumeAll(t, addr, topic)
	if len(got) != 4 || len(want) != 4 {
		t.Fatalf("backup holds %d records, the topic %d; want 4", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Offset != w.Offset || !sameBytes(g.Key, w.Key) || !sameBytes(g.Value, w.Value) || !g.Timestamp.Equal(w.Timestamp) || fmt.Sprint(g.Headers) != fmt.Sprint(w.Headers) ||
			(g.Key == nil) != (w.Key == nil) || (g.Value == nil) != (w.Value == nil) {
			t.Fatalf("record %d: backup has offset %d key %q (%d value bytes, nil %v) at %s, the topic offset %d key %q (%d value bytes, nil %v) at %s",
				i, g.Offset, g.Key, len(g.Value), g.Value == nil, g.Timestamp, w.Offset, w.Key, len(w.Value), w.Value == nil, w.Timestamp)
		}
		for j, h := range w.Headers {
			if (h.Value == nil) != (g.Headers[j].Value == nil) {
				t.Fatalf("record %d header %d: null %v in the topic, %v in the backup", i, j, h.Value == nil, g.Headers[j].Value == nil)
			}
		}
	}
}

func sameBytes(a, b []byte) bool { return bytes.Equal(a, b) && len(a) == len(b) }

// TestACompactedTopicBacksUpToItsEnd: a topic the broker's cleaner has
// compacted (offsets missing in the middle) is backed up to its end
// offset, every record left in it once, without stalling on the holes.
func TestACompactedTopicBacksUpToItsEnd(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "compacted")
	adm := kadm.NewClient(testkit.Client(t, addr))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := map[string]*string{}
	for k, v := range map[string]string{"cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.001",
		"delete.retention.ms": "100", "min.compaction.lag.ms": "0", "max.compaction.lag.ms": "100"} {
		cfg[k] = &v
	}
	if resp, err := adm.CreateTopic(ctx, 1, 1, cfg, topic); err != nil || resp.Err != nil {
		t.Fatalf("create topic: %v %v", err, resp.Err)
	}
	produced := 0
	for round := range 5 { // several segments, each rolled by the next round's records
		var recs []*kgo.Record
		for k := range 10 {
			recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(fmt.Sprint("k", k)), Value: []byte(fmt.Sprint(round))})
		}
		testkit.Produce(t, addr, recs)
		produced += len(recs)
		time.Sleep(300 * time.Millisecond)
	}
	// Wait for the cleaner (it looks every 15 s by default), nudging the
	// active segment to roll.
	var left []*kgo.Record
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(time.Second) {
		if left = testkit.ConsumeAll(t, addr, topic); len(left) < produced {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the broker's log cleaner did not compact the topic within 90s: the test proves nothing")
		}
		testkit.Produce(t, addr, []*kgo.Record{{Topic: topic, Key: []byte("nudge"), Value: []byte("x")}})
		produced++
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup(topic, 0)
	path := t.TempDir()
	if code, _, errText := kpipeWithin(t, time.Minute, "backup", "--bootstrap-servers", addr, "--topics", topic, "--path", path, "--backup-id", "c"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, errText)
	}
	m := testkit.Manifests(t, path, "c")[0]
	got := testkit.BackupRecords(t, path, "c")
	if m.NextOffset() < end.Offset || len(got) < len(left) {
		t.Fatalf("backup ends at %d with %d records; the compacted topic ends at %d with %d records", m.NextOffset(), len(got), end.Offset, len(left))
	}
	for i, w := range left {
		if got[i].Offset != w.Offset || string(got[i].Key) != string(w.Key) || string(got[i].Value) != string(w.Value) {
			t.Fatalf("record %d: backup %d %s=%s, topic %d %s=%s", i, got[i].Offset, got[i].Key, got[i].Value, w.Offset, w.Key, w.Value)
		}
	}
	t.Logf("%d records produced, %d left after compaction, all backed up up to offset %d", produced, len(left), end.Offset)
}
