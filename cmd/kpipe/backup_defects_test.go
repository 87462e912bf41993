package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/internal/testkit"
	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/storage"
)

// kpipeWithin runs kpipe like kpipe does, but kills it after d: a run that
// would hang fails the test instead of stalling it.
func kpipeWithin(t *testing.T, d time.Duration, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, testkit.KpipeBinary(t), append([]string{"--plugin-dir", testkit.PluginDir(t)}, args...)...)
	cmd.Dir = t.TempDir()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("kpipe %s: still running after %s; stderr:\n%s", strings.Join(args, " "), d, errb.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

// TestAPartitionEmptiedByRetentionEndsWithAGap: a partition whose records
// were all deleted (log start = end > 0) used to make the backup wait
// forever. It ends, and the backup records the deleted offsets as a gap.
func TestAPartitionEmptiedByRetentionEndsWithAGap(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "drained")
	ts := time.Now().Add(-time.Hour).UnixMilli()
	seedPartitions(t, addr, topic, 2, 5, ts)
	adm := kadm.NewClient(testkit.Client(t, addr))
	var del kadm.Offsets
	del.AddOffset(topic, 0, 5, -1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := adm.DeleteRecords(ctx, del)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	path := t.TempDir()
	code, _, stderr := kpipeWithin(t, 60*time.Second, "backup", "--bootstrap-servers", addr, "--topics", topic, "--path", path, "--backup-id", "b")
	if code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	parts := testkit.Manifests(t, path, "b")
	if len(parts) != 2 {
		t.Fatalf("backup holds %d partitions, want 2", len(parts))
	}
	p0 := parts[0]
	if len(p0.Entries) != 1 {
		t.Fatalf("partition 0 entries %+v, want one gap", p0.Entries)
	}
	g := p0.Entries[0]
	if g.Kind != storage.KindGap || g.MinOffset != 0 || g.MaxOffset != 4 || g.NextOffset != 5 || g.Reason != sdk.GapDeleted {
		t.Fatalf("partition 0 entry %+v, want a gap of offsets 0-4 (next 5), reason %q", g, sdk.GapDeleted)
	}
	if n := parts[1].Records(); n != 5 {
		t.Fatalf("partition 1 holds %d records, want 5", n)
	}
	// Run again: nothing new, nothing written twice.
	code, _, stderr = kpipeWithin(t, 60*time.Second, "backup", "--bootstrap-servers", addr, "--topics", topic, "--path", path, "--backup-id", "b", "--fresh")
	if code != 0 {
		t.Fatalf("second backup: exit %d: %s", code, stderr)
	}
	if again := testkit.Manifests(t, path, "b"); len(again[0].Entries) != 1 || len(again[1].Entries) != len(parts[1].Entries) {
		t.Fatalf("a second run changed the backup: %+v", again)
	}
}

// TestSIGTERMToTheProcessGroupStopsGracefully sends SIGTERM to the whole
// process group of a continuous backup, as systemd and timeout(1) do: the
// plugins used to die first and the run ended with exit 1. It stops as on a
// SIGTERM to kpipe alone: what was read is made durable, exit 3.
func TestSIGTERMToTheProcessGroupStopsGracefully(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "group")
	ts := time.Now().Add(-time.Hour).UnixMilli()
	seedPartitions(t, addr, topic, 2, 300, ts)
	path, state := t.TempDir(), t.TempDir()
	backup := backupAt{path, "g"}
	cmd := exec.Command(testkit.KpipeBinary(t), "--plugin-dir", testkit.PluginDir(t), "backup", "--bootstrap-servers", addr, "--topics", topic,
		"--path", path, "--backup-id", "g", "--state-dir", state, "--continuous")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	deadline := time.Now().Add(60 * time.Second)
	for held(t, backup) < 600 {
		if time.Now().After(deadline) {
			t.Fatalf("continuous backup holds %d of 600 records after 60s: %s", held(t, backup), stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	var more []*kgo.Record
	for i := range 200 {
		more = append(more, &kgo.Record{Topic: topic, Partition: int32(i % 2), Value: []byte("more"), Timestamp: time.UnixMilli(ts + 1000)})
	}
	testkit.Produce(t, addr, more)
	time.Sleep(500 * time.Millisecond) // read, not yet committed (flush_interval is 5s)
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitInterrupted {
		t.Fatalf("after SIGTERM to the process group: %v, want exit code %d; stderr:\n%s", err, exitInterrupted, stderr.String())
	}
	if n := held(t, backup); n != 800 {
		t.Fatalf("after a clean stop the backup holds %d records, want 800 (every record read made durable)", n)
	}
}

// TestEmptyPartitionsEmptyTopicsAndConfigsComeBack: a 4-partition topic
// that only used partition 2, and a topic with no records at all, each with
// topic configs of their own, come back from a restore with their
// partitions and configs.
func TestEmptyPartitionsEmptyTopicsAndConfigsComeBack(t *testing.T) {
	addr := testkit.Kafka(t)
	prefix := testkit.Topic(t, "meta")
	used, empty := prefix+"-used", prefix+"-empty"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	usedCfg := map[string]*string{"retention.ms": ptr("987654321"), "max.message.bytes": ptr("2000000")}
	emptyCfg := map[string]*string{"cleanup.policy": ptr("compact"), "min.cleanable.dirty.ratio": ptr("0.2")}
	// Both topics are served before the backup lists the cluster's topics:
	// a topic the broker does not serve yet is not there to back up.
	testkit.CreateTopicWithConfigs(t, addr, used, 4, usedCfg)
	testkit.CreateTopicWithConfigs(t, addr, empty, 3, emptyCfg)
	var recs []*kgo.Record
	for i := range 10 {
		recs = append(recs, &kgo.Record{Topic: used, Partition: 2, Key: []byte(fmt.Sprint(i)), Value: []byte("v")})
	}
	testkit.Produce(t, addr, recs)
	path := t.TempDir()
	code, _, stderr := kpipeWithin(t, 60*time.Second, "backup", "--bootstrap-servers", addr, "--topics", prefix+"-*", "--path", path, "--backup-id", "b")
	if code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	meta, err := testkit.Backup(t, path, "b").Metadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if meta.ClusterID == "" {
		t.Errorf("the backup's metadata has no cluster id: %+v", meta)
	}
	if len(meta.Topics) != 2 {
		t.Fatalf("the backup's metadata lists %d topics, want 2: %+v", len(meta.Topics), meta)
	}
	for _, tm := range meta.Topics {
		if tm.ID == (sdk.TopicID{}) || tm.ReplicationFactor != 1 || tm.MinInsyncReplicas != 1 {
			t.Errorf("topic metadata %+v: want a topic id, replication factor 1 and min.insync.replicas 1", tm)
		}
	}
	dst := testkit.Topic(t, "metadst")
	code, _, stderr = kpipeWithin(t, 60*time.Second, "restore", "--bootstrap-servers", addr, "--path", path, "--backup-id", "b",
		"--topic-mapping", used+"="+dst+"-used,"+empty+"="+dst+"-empty")
	if code != 0 {
		t.Fatalf("restore: exit %d: %s", code, stderr)
	}
	adm := kadm.NewClient(testkit.Client(t, addr))
	details, err := adm.ListTopics(ctx, dst+"-used", dst+"-empty")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{dst + "-used": 4, dst + "-empty": 3} {
		if got := len(details[name].Partitions); got != want {
			t.Errorf("restored %s has %d partitions, want %d", name, got, want)
		}
	}
	for name, want := range map[string]map[string]*string{dst + "-used": usedCfg, dst + "-empty": emptyCfg} {
		rcs, err := adm.DescribeTopicConfigs(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := rcs.On(name, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, c := range rc.Configs {
			if c.Source == 1 { // DYNAMIC_TOPIC_CONFIG: set on the topic
				got[c.Key] = c.MaybeValue()
			}
		}
		for k, v := range want {
			if got[k] != *v {
				t.Errorf("restored %s: %s = %q, want %q (topic configs %v)", name, k, got[k], *v, got)
			}
		}
	}
	if got := testkit.ConsumeAll(t, addr, dst+"-used"); len(got) != 10 || got[0].Partition != 2 {
		t.Fatalf("restored %d records, want the 10 of partition 2", len(got))
	}
}

func ptr(s string) *string { return &s }

// TestADiskFullBackupReportsOnlyWhatIsDurable backs up into a filesystem too
// small for it. The run fails naming the partition whose write failed; a
// first run that committed nothing leaves no backup that looks valid; the
// report counts only what is durable.
func TestADiskFullBackupReportsOnlyWhatIsDurable(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "full")
	testkit.CreateTopic(t, addr, topic, 3)
	var recs []*kgo.Record
	for i := range 3000 {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: 1, Value: testkit.AppendHex(nil, rand.New(rand.NewPCG(uint64(i), 1)), 1024)})
	}
	for i := range 3 { // a few small records that fit
		recs = append(recs, &kgo.Record{Topic: topic, Partition: 0, Value: []byte(fmt.Sprint(i))})
	}
	testkit.Produce(t, addr, recs)

	small := tmpfs(t, "256k")
	code, stdout, stderr := kpipeWithin(t, 60*time.Second, "--format", "json", "backup", "--bootstrap-servers", addr, "--topics", topic,
		"--path", small, "--backup-id", "b", "--compression", "none")
	if code != exitFailed {
		t.Fatalf("backup into 256 KiB: exit %d, want %d: %s", code, exitFailed, stderr)
	}
	if want := topic + "/1"; !strings.Contains(errorText(stderr), want) || strings.Contains(errorText(stderr), topic+"/0") || strings.Contains(errorText(stderr), topic+"/2") {
		t.Fatalf("error %q does not name %s alone", errorText(stderr), want)
	}
	// Partition 0's 3 records may be committed before partition 1's write
	// fails (when that is found at the run's last commit): then the backup
	// holds them, and the report says so. Else nothing was committed, and
	// no backup may be left behind.
	_, err := storage.OpenBackup(context.Background(), testkit.Store(t, small), "b")
	switch n := backedUp(t, stdout); {
	case n == 0 && !errors.Is(err, storage.ErrBackupNotFound):
		entries, _ := filepath.Glob(filepath.Join(small, "b", "*"))
		t.Fatalf("a failed first run that committed nothing left a backup behind: %v (open: %v)", entries, err)
	case n != 0 && (n != 3 || err != nil || testkit.Records(t, small, "b") != 3):
		t.Fatalf("report says %d records backed up (open: %v), want 0, or partition 0's 3 when the backup holds them", n, err)
	}

	// Room for a few segments, not all: what the report counts is what the
	// backup holds.
	medium := tmpfs(t, "1m")
	code, stdout, stderr = kpipeWithin(t, 60*time.Second, "--format", "json", "backup", "--bootstrap-servers", addr, "--topics", topic,
		"--path", medium, "--backup-id", "b", "--compression", "none", "--segment-max-bytes", "200000")
	if code != exitFailed {
		t.Fatalf("backup into 1 MiB: exit %d, want %d: %s", code, exitFailed, stderr)
	}
	held := testkit.Records(t, medium, "b")
	if held == 0 || held == 3000 {
		t.Fatalf("backup into 1 MiB holds %d records, want some, not all", held)
	}
	if n := backedUp(t, stdout); n != held {
		t.Fatalf("report says %d records backed up, the backup holds %d", n, held)
	}
}

// backedUp is records_backed_up of a JSON backup report.
func backedUp(t *testing.T, stdout string) int64 {
	t.Helper()
	var r struct {
		N *int64 `json:"records_backed_up"`
	}
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || r.N == nil {
		t.Fatalf("no records_backed_up in the report (%v): %s", err, stdout)
	}
	return *r.N
}

// tmpfs mounts a filesystem of size for the test, or skips the test where
// mounting is not allowed.
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("cannot mount a small filesystem here (%v): run as root to test a full disk", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// TestARecreatedTopicIsKeptApart deletes and re-creates a topic under a
// continuous backup, and again between two runs. The backup used to die
// with UNKNOWN_TOPIC_ID, and a later run spliced the new incarnation's
// offsets after the old ones, losing its first records. Each incarnation
// is kept apart; a restore takes the latest unless told which.
func TestARecreatedTopicIsKeptApart(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "recreated")
	adm := kadm.NewClient(testkit.Client(t, addr))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	incarnation := func(partitions int32, label string, per int) sdk.TopicID {
		t.Helper()
		resp, err := adm.CreateTopic(ctx, partitions, 1, nil, topic)
		if err == nil {
			err = resp.Err
		}
		for err != nil && errors.Is(err, kerr.TopicAlreadyExists) { // the deletion is not done yet
			time.Sleep(200 * time.Millisecond)
			resp, err = adm.CreateTopic(ctx, partitions, 1, nil, topic)
			if err == nil {
				err = resp.Err
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		var recs []*kgo.Record
		for p := range partitions {
			for i := range per {
				recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Value: []byte(fmt.Sprintf("%s-%d-%d", label, p, i))})
			}
		}
		testkit.Produce(t, addr, recs)
		return sdk.TopicID(resp.ID)
	}
	remove := func() {
		t.Helper()
		if _, err := adm.DeleteTopic(ctx, topic); err != nil {
			t.Fatal(err)
		}
	}
	path := t.TempDir()
	backup := backupAt{path, "b"}
	first := incarnation(2, "first", 10)

	cmd := exec.Command(testkit.KpipeBinary(t), "--plugin-dir", testkit.PluginDir(t), "backup", "--bootstrap-servers", addr, "--topics", topic,
		"--path", path, "--backup-id", "b", "--state-dir", t.TempDir(), "--continuous", "--segment-max-interval", "200ms")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitHeld := func(want int64) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); held(t, backup) < want; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the backup holds %d of %d records after a minute: %s", held(t, backup), want, stderr.String())
			}
		}
	}
	waitHeld(20)
	remove()
	second := incarnation(3, "second", 5)
	waitHeld(35)
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); cmd.ProcessState.ExitCode() != exitInterrupted {
		t.Fatalf("continuous backup across a re-creation: %v, want exit %d: %s", err, exitInterrupted, stderr.String())
	}

	// Re-created between two runs, with one partition: the next run backs
	// the new incarnation up from its start.
	remove()
	third := incarnation(1, "third", 3)
	code, _, errText := kpipeWithin(t, time.Minute, "backup", "--bootstrap-servers", addr, "--topics", topic, "--path", path, "--backup-id", "b")
	if code != 0 {
		t.Fatalf("backup after a re-creation between runs: exit %d: %s", code, errText)
	}
	if n := held(t, backup); n != 38 {
		t.Fatalf("the backup holds %d records, want 10+10 + 3*5 + 3", n)
	}
	for _, m := range testkit.Manifests(t, path, "b") {
		if m.Partition != 0 {
			continue
		}
		var got []string
		for _, e := range m.Entries {
			got = append(got, fmt.Sprintf("%s:%d-%d", e.TopicID, e.MinOffset, e.NextOffset))
		}
		// Segments may split an incarnation's offsets; their ranges join.
		want := []string{first.String() + ":0-10", second.String() + ":0-5", third.String() + ":0-3"}
		if joined := joinRanges(got); !slices.Equal(joined, want) {
			t.Fatalf("partition 0 entries %v, want the incarnations apart: %v", got, want)
		}
	}

	restored := func(label string, extra ...string) map[string]int {
		t.Helper()
		dst := testkit.Topic(t, "recreated-"+label)
		args := append([]string{"restore", "--bootstrap-servers", addr, "--path", path, "--backup-id", "b", "--topic-mapping", topic + "=" + dst}, extra...)
		if code, _, errText := kpipeWithin(t, time.Minute, args...); code != 0 {
			t.Fatalf("restore %v: exit %d: %s", extra, code, errText)
		}
		count := map[string]int{}
		for _, r := range testkit.ConsumeAll(t, addr, dst) {
			label, _, _ := strings.Cut(string(r.Value), "-")
			count[label]++
		}
		return count
	}
	if got := restored("latest"); len(got) != 1 || got["third"] != 3 {
		t.Fatalf("default restore took %v, want the 3 records of the latest incarnation", got)
	}
	if got := restored("first", "--topic-incarnation", topic+"="+first.String()); len(got) != 1 || got["first"] != 20 {
		t.Fatalf("restore of the first incarnation took %v, want its 20 records", got)
	}
	if got := restored("second", "--topic-incarnation", topic+"="+second.String()); len(got) != 1 || got["second"] != 15 {
		t.Fatalf("restore of the second incarnation took %v, want its 15 records", got)
	}

	// describe lists the incarnations in order with their partitions and
	// records; validate passes the backup, each incarnation's offsets
	// starting over.
	var incs []string
	for _, inc := range describeBackup(t, path, "b").Topics[0].Incarnations {
		incs = append(incs, fmt.Sprintf("%s current=%v partitions=%d records=%d details=%d", inc.TopicID, inc.Current, inc.Partitions, inc.Records, len(inc.PartitionDetails)))
	}
	want := []string{
		first.String() + " current=false partitions=2 records=20 details=2",
		second.String() + " current=false partitions=3 records=15 details=3",
		third.String() + " current=true partitions=1 records=3 details=1",
	}
	if !slices.Equal(incs, want) {
		t.Fatalf("incarnations\n%s\nwant\n%s", strings.Join(incs, "\n"), strings.Join(want, "\n"))
	}
	validBackup(t, path, "b")
}

// joinRanges joins adjacent "id:from-to" ranges of one id.
func joinRanges(rs []string) []string {
	var out []string
	for _, r := range rs {
		id, span, _ := strings.Cut(r, ":")
		from, to, _ := strings.Cut(span, "-")
		if n := len(out); n > 0 {
			pid, pspan, _ := strings.Cut(out[n-1], ":")
			pfrom, pto, _ := strings.Cut(pspan, "-")
			if pid == id && pto == from {
				out[n-1] = fmt.Sprintf("%s:%s-%s", id, pfrom, to)
				continue
			}
		}
		out = append(out, r)
	}
	return out
}
