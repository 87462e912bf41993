package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/internal/testkit"
	"github.com/kpipe/kpipe/sdk/storage"
)

func seedPartitions(t *testing.T, addr, topic string, partitions int32, per int, ts int64) {
	t.Helper()
	testkit.CreateTopic(t, addr, topic, partitions)
	var recs []*kgo.Record
	for p := range partitions {
		for i := range per {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Value: []byte(fmt.Sprintf("p%d-%d", p, i)), Timestamp: time.UnixMilli(ts + int64(i))})
		}
	}
	testkit.Produce(t, addr, recs)
}

// TestRestoreVerbSelectsRemapsAndReports backs up with the backup verb and
// restores two of three partitions, moving partition 2 into partition 1,
// under a new topic name, with a JSON report.
func TestRestoreVerbSelectsRemapsAndReports(t *testing.T) {
	addr := testkit.Kafka(t)
	src := testkit.Topic(t, "src")
	ts := time.Now().Add(-time.Hour).UnixMilli()
	seedPartitions(t, addr, src, 3, 20, ts)
	path := t.TempDir()
	code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", src, "--path", path, "--backup-id", "b", "--compression", "lz4")
	if code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	if parts := testkit.Manifests(t, path, "b"); len(parts) != 3 || parts[0].Entries[0].Compression != "lz4" {
		t.Fatalf("backup partitions %+v; want 3 partitions of lz4 segments", parts)
	}
	dst := testkit.Topic(t, "dst")
	code, stdout, stderr := kpipe(t, "restore", "--format", "json", "--bootstrap-servers", addr, "--path", path, "--backup-id", "b",
		"--topics", src, "--source-partitions", "0,2", "--partition-mapping", "2=1", "--topic-mapping", src+"="+dst,
		"--time-window-start", fmt.Sprint(ts+5), "--time-window-end", fmt.Sprint(ts+14))
	if code != 0 {
		t.Fatalf("restore: exit %d: %s", code, stderr)
	}
	var rep struct {
		Summary struct {
			Restored int64 `json:"records_restored"`
			Skipped  int64 `json:"records_skipped"`
		} `json:"summary"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, stdout)
	}
	if rep.Summary.Restored != 20 || rep.Summary.Skipped != 20 {
		t.Fatalf("summary %+v, want 20 restored and 20 skipped (partitions 0 and 2, records 5..14 of 20 each)", rep.Summary)
	}
	got := map[int32][]string{}
	for _, r := range testkit.ConsumeAll(t, addr, dst) {
		got[r.Partition] = append(got[r.Partition], string(r.Value))
	}
	for p, from := range map[int32]int{0: 0, 1: 2} {
		var want []string
		for i := 5; i <= 14; i++ {
			want = append(want, fmt.Sprintf("p%d-%d", from, i))
		}
		if fmt.Sprint(got[p]) != fmt.Sprint(want) {
			t.Errorf("partition %d holds %v, want %v", p, got[p], want)
		}
	}
	if len(got) != 2 {
		t.Errorf("restored partitions %v, want 0 and 1", got)
	}
}

// TestContinuousBackupStopsCleanlyOnSIGTERM runs a continuous backup, stops
// it with SIGTERM (exit 3, checkpoint saved), and resumes it to the end:
// every record backed up once.
func TestContinuousBackupStopsCleanlyOnSIGTERM(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "cont")
	ts := time.Now().Add(-time.Hour).UnixMilli()
	seedPartitions(t, addr, topic, 2, 300, ts)
	path, state := t.TempDir(), t.TempDir()
	backup := backupAt{path, "c"}
	args := []string{"--plugin-dir", testkit.PluginDir(t), "backup", "--bootstrap-servers", addr, "--topics", topic,
		"--path", path, "--backup-id", "c", "--state-dir", state}
	cmd := exec.Command(testkit.KpipeBinary(t), append(args, "--continuous")...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Continuous: it keeps running; wait until it has read everything, then
	// add more and stop it while it may be in the middle of them.
	deadline := time.Now().Add(60 * time.Second)
	for held(t, backup) < 600 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("continuous backup holds %d of 600 records after 60s: %s", held(t, backup), stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	var more []*kgo.Record
	for i := range 200 {
		more = append(more, &kgo.Record{Topic: topic, Partition: int32(i % 2), Value: []byte("more"), Timestamp: time.UnixMilli(ts + 1000)})
	}
	testkit.Produce(t, addr, more)
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitInterrupted {
		t.Fatalf("after SIGTERM: %v, want exit code %d; stderr:\n%s", err, exitInterrupted, stderr.String())
	}
	if n := held(t, backup); n < 600 {
		t.Fatalf("after a clean stop the backup holds %d records, want at least 600", n)
	}
	if files, _ := filepath.Glob(filepath.Join(state, "backup-*.checkpoint.json")); len(files) != 1 {
		t.Fatalf("checkpoints after a clean stop: %v, want one backup-IDENTITY.checkpoint.json", files)
	}
	code, _, errText := kpipe(t, args[2:]...)
	if code != 0 {
		t.Fatalf("resumed backup: exit %d: %s", code, errText)
	}
	if n := held(t, backup); n != 800 {
		t.Fatalf("resumed backup holds %d records, want 800", n)
	}
}

// backupAt names a backup under an fs path.
type backupAt struct{ path, id string }

// held is how many records a backup holds; 0 before it exists.
func held(t *testing.T, b backupAt) int64 { return testkit.Records(t, b.path, b.id) }

// TestExamplePipelinesRunAgainstABroker runs pipelines.example.hcl as the
// README and the demo do: a backup, then a PITR restore of a window; and
// pipelines.s3.example.hcl the same way, into the test S3 server,
// encrypted.
func TestExamplePipelinesRunAgainstABroker(t *testing.T) {
	t.Run("fs", func(t *testing.T) {
		dir := runExample(t, "pipelines.example.hcl", nil)
		if parts := testkit.Manifests(t, filepath.Join(dir, ".kpipe", "backups"), "ex"); len(parts) != 2 {
			t.Fatalf("backup under the example's path: %v", parts)
		}
	})
	t.Run("s3", func(t *testing.T) {
		srv := testkit.S3(t)
		path := srv.Path(t)
		key := filepath.Join(t.TempDir(), "key")
		os.WriteFile(key, []byte(strings.Repeat("c3", 32)), 0o600)
		runExample(t, "pipelines.s3.example.hcl", []string{"KPIPE_S3_PATH=" + path, "KPIPE_S3_ENDPOINT=" + srv.Endpoint, "KPIPE_KEY_FILE=" + key})
		parts := testkit.Manifests(t, path, "ex")
		if len(parts) != 2 || parts[0].Entries[0].Encryption != "aes-256-gcm" {
			t.Fatalf("backup under the example's path: %v, want 2 partitions of encrypted segments", parts)
		}
	})
}

// runExample runs an example pipeline file from a folder of its own, with
// env added, on 2000 records, and checks its report; it returns the folder.
func runExample(t *testing.T, name string, env []string) string {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "example")
	ts := time.Now().Add(-time.Hour).UnixMilli()
	seedPartitions(t, addr, topic, 2, 1000, ts) // timestamps ts+0 .. ts+999
	example, err := os.ReadFile(filepath.Join(testkit.Root(), name))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, example, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testkit.KpipeBinary(t), "--plugin-dir", testkit.PluginDir(t), "run", file, "--format", "json")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "KPIPE_BOOTSTRAP="+addr, "KPIPE_TOPIC="+topic, "KPIPE_BACKUP_ID=ex",
		fmt.Sprintf("KPIPE_WINDOW_START=%d", ts+100), fmt.Sprintf("KPIPE_WINDOW_END=%d", ts+299))
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kpipe run: %v\n%s", err, stderr.String())
	}
	var rep struct {
		Pipelines []struct {
			Pipeline   string `json:"pipeline"`
			RecordsOut int64  `json:"records_out"`
		} `json:"pipelines"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, stdout.String())
	}
	if len(rep.Pipelines) != 2 || rep.Pipelines[0].Pipeline != "backup" || rep.Pipelines[0].RecordsOut != 2000 ||
		rep.Pipelines[1].Pipeline != "pitr-restore" || rep.Pipelines[1].RecordsOut != 400 {
		t.Fatalf("report %+v, want backup of 2000 records, then a restore of 400 (200 per partition)", rep.Pipelines)
	}
	if got := len(testkit.ConsumeAll(t, addr, topic+"-pitr")); got != 400 {
		t.Fatalf("%s-pitr holds %d records, want 400", topic, got)
	}
	return dir
}

// TestPluginCPUProfiles runs a backup with KPIPE_PLUGIN_CPUPROFILE set: each
// plugin process leaves gzipped pprof profiles named after its binary, kind
// and pid: its CPU, what it allocated, and its heap when largest.
func TestPluginCPUProfiles(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "prof")
	seedPartitions(t, addr, topic, 1, 50, time.Now().UnixMilli())
	profiles := t.TempDir()
	cmd := exec.Command(testkit.KpipeBinary(t), "--plugin-dir", testkit.PluginDir(t), "backup",
		"--bootstrap-servers", addr, "--topics", topic, "--path", t.TempDir(), "--backup-id", "p", "--state-dir", t.TempDir())
	cmd.Env = append(os.Environ(), "KPIPE_PLUGIN_CPUPROFILE="+profiles)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	entries, err := os.ReadDir(profiles)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		name := e.Name()
		data, err := os.ReadFile(filepath.Join(profiles, name))
		if err != nil {
			t.Fatal(err)
		}
		if len(data) < 2 || data[0] != 0x1f || data[1] != 0x8b {
			t.Errorf("%s is not a gzipped pprof profile (%d bytes)", name, len(data))
		}
		// Drop the pid: kpipe-plugin-kafka-source-1234.allocs.pprof.
		dash := strings.LastIndexByte(name, '-')
		got = append(got, name[:dash]+name[strings.IndexByte(name[dash:], '.')+dash:])
	}
	sort.Strings(got)
	want := []string{
		"kpipe-plugin-fs-sink.allocs.pprof", "kpipe-plugin-fs-sink.heap.pprof", "kpipe-plugin-fs-sink.pprof",
		"kpipe-plugin-kafka-source.allocs.pprof", "kpipe-plugin-kafka-source.heap.pprof", "kpipe-plugin-kafka-source.pprof",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("profiles %v, want %v", got, want)
	}
}

// TestWindowBoundsBatchesInFlight backs up a topic in many small batches
// with --window 1 and 3: the report's max_in_flight shows that no more
// batches than the window were ever between source and sink, and the
// backup is complete either way.
func TestWindowBoundsBatchesInFlight(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "window")
	seedPartitions(t, addr, topic, 3, 400, time.Now().UnixMilli())
	for _, window := range []int64{1, 3} {
		code, stdout, stderr := kpipe(t, "--format", "json", "backup", "--bootstrap-servers", addr, "--topics", topic,
			"--path", t.TempDir(), "--backup-id", "w", "--state-dir", t.TempDir(), "--window", strconv.FormatInt(window, 10))
		if code != 0 {
			t.Fatalf("--window %d: exit %d: %s", window, code, stderr)
		}
		var rep struct {
			Records int64 `json:"records_backed_up"`
			Report  struct {
				BatchesIn   int64 `json:"batches_in"`
				MaxInFlight int64 `json:"max_in_flight"`
			} `json:"report"`
		}
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("report is not JSON: %v\n%s", err, stdout)
		}
		if rep.Records != 1200 || rep.Report.BatchesIn < 3 {
			t.Fatalf("--window %d: %d records in %d batches, want 1200 in at least 3", window, rep.Records, rep.Report.BatchesIn)
		}
		if rep.Report.MaxInFlight < 1 || rep.Report.MaxInFlight > window {
			t.Fatalf("--window %d: %d batches were in flight at once, want 1 to %d", window, rep.Report.MaxInFlight, window)
		}
	}
}

// TestRestoreReplicationFactor restores into topics the kafka sink creates:
// replication_factor 2 on a one-broker cluster fails with an error that
// names the parameter and the fix; 1 creates the topic with one replica.
func TestRestoreReplicationFactor(t *testing.T) {
	addr := testkit.Kafka(t)
	src := testkit.Topic(t, "rf")
	seedPartitions(t, addr, src, 1, 50, time.Now().UnixMilli())
	path := t.TempDir()
	if code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", src, "--path", path, "--backup-id", "rf", "--state-dir", t.TempDir()); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	restore := func(rf int, dst string) (int, string) {
		file := writeFile(t, fmt.Sprintf(`pipeline "r" {
  source "fs" {
    path      = %q
    backup_id = "rf"
  }
  transform "remap" {
    topic_mapping = { %q = %q }
  }
  sink "kafka" {
    bootstrap_servers  = [%q]
    replication_factor = %d
  }
}
`, path, src, dst, addr, rf))
		code, _, stderr := kpipe(t, "run", file, "--state-dir", t.TempDir())
		return code, errorText(stderr)
	}
	tooMany := src + "-rf2"
	code, msg := restore(2, tooMany)
	want := fmt.Sprintf(`create target topic %q: replication factor 2 (replication_factor) needs 2 brokers, the target cluster has 1: nothing was written; set replication_factor (--replication-factor) to 1 or less, or -1 for the broker default`, tooMany)
	if code != exitFailed || !strings.HasSuffix(msg, want) {
		t.Fatalf("replication_factor 2 on one broker: exit %d, error %q; want exit %d and an error ending in %q", code, msg, exitFailed, want)
	}
	one := src + "-rf1"
	if code, msg := restore(1, one); code != 0 {
		t.Fatalf("replication_factor 1: exit %d: %s", code, msg)
	}
	if n := len(testkit.ConsumeAll(t, addr, one)); n != 50 {
		t.Fatalf("%s holds %d records, want 50", one, n)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	details, err := kadm.NewClient(cl).ListTopics(ctx, one)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range details[one].Partitions {
		if len(p.Replicas) != 1 {
			t.Fatalf("%s partition %d has replicas %v, want 1", one, p.Partition, p.Replicas)
		}
	}
}

// TestInFlightBytesBoundsTheBackup backs up 8 MB with --in-flight-bytes
// 1MiB: the report shows that no more than the budget plus one batch (at
// most the 1 MiB the kafka source fetches at once) was ever between source
// and sink.
func TestInFlightBytesBoundsTheBackup(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "inflight")
	seedPayload(t, addr, topic, 4, 8000)
	code, stdout, stderr := kpipe(t, "--format", "json", "backup", "--bootstrap-servers", addr, "--topics", topic,
		"--path", t.TempDir(), "--backup-id", "b", "--state-dir", t.TempDir(), "--in-flight-bytes", "1MiB")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep struct {
		Records int64 `json:"records_backed_up"`
		Report  struct {
			MaxInFlightBytes int64 `json:"max_in_flight_bytes"`
		} `json:"report"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, stdout)
	}
	if rep.Records != 8000 {
		t.Fatalf("backed up %d records, want 8000", rep.Records)
	}
	if got := rep.Report.MaxInFlightBytes; got < 100_000 || got > 2<<20 {
		t.Fatalf("max_in_flight_bytes %d, want at most 1 MiB plus one batch (2 MiB)", got)
	}
}

// TestRestoresKeepStateOfTheirOwn runs two restores with different targets
// from one state folder: each restores everything. Running one again says
// it had finished and moves nothing; --fresh restores it again.
func TestRestoresKeepStateOfTheirOwn(t *testing.T) {
	addr := testkit.Kafka(t)
	src := testkit.Topic(t, "src")
	seedPartitions(t, addr, src, 2, 10, time.Now().Add(-time.Hour).UnixMilli())
	path, state := t.TempDir(), t.TempDir()
	if code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", src, "--path", path, "--backup-id", "b", "--state-dir", state); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	restore := func(dst string, extra ...string) string {
		t.Helper()
		args := append([]string{"restore", "--bootstrap-servers", addr, "--path", path, "--backup-id", "b",
			"--topic-mapping", src + "=" + dst, "--state-dir", state}, extra...)
		code, stdout, stderr := kpipe(t, args...)
		if code != 0 {
			t.Fatalf("restore to %s %v: exit %d: %s", dst, extra, code, stderr)
		}
		return stdout
	}
	count := func(topic string) int { return len(testkit.ConsumeAll(t, addr, topic)) }
	one, two := testkit.Topic(t, "one"), testkit.Topic(t, "two")
	if out := restore(one); !strings.Contains(out, "\n  metadata: 1 message(s), the last naming "+src+" (2 partitions)\n") {
		t.Errorf("restore report %q does not name the metadata the sink got", out)
	}
	restore(two)
	if n1, n2 := count(one), count(two); n1 != 20 || n2 != 20 {
		t.Fatalf("two restores from one state folder wrote %d and %d records, want 20 each", n1, n2)
	}

	out := restore(one)
	if !strings.HasPrefix(out, "pipeline restore: already finished at ") ||
		!strings.HasSuffix(out, " (20 records written); nothing to do, --fresh runs it again\n") {
		t.Fatalf("the same restore again printed %q, want that it had finished", out)
	}
	var rep struct {
		Report struct {
			AlreadyFinished struct {
				RecordsOut int64 `json:"records_out"`
			} `json:"already_finished"`
			Plugins []any `json:"plugins"`
		} `json:"report"`
	}
	if err := json.Unmarshal([]byte(restore(one, "--format", "json")), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Report.AlreadyFinished.RecordsOut != 20 || len(rep.Report.Plugins) != 0 {
		t.Fatalf("JSON report %+v, want already_finished with 20 records and no plugin started", rep.Report)
	}
	if n := count(one); n != 20 {
		t.Fatalf("a finished restore run again left %d records, want 20", n)
	}

	// --fresh starts over, and the target holds records now: refused, until
	// appending is allowed.
	code, _, stderr := kpipe(t, "restore", "--bootstrap-servers", addr, "--path", path, "--backup-id", "b",
		"--topic-mapping", src+"="+one, "--state-dir", state, "--fresh")
	if want := "target partition " + one + "/0 already holds records (offsets 0 to 9)"; code != 1 || !strings.Contains(stderr, want) {
		t.Fatalf("--fresh onto the filled target: exit %d, stderr %q; want exit 1 and %q", code, stderr, want)
	}
	if n := count(one); n != 20 {
		t.Fatalf("the refused restore left %d records in the target, want 20", n)
	}
	restore(one, "--fresh", "--allow-nonempty-target")
	if n := count(one); n != 40 {
		t.Fatalf("after --fresh the target holds %d records, want 40 (restored again)", n)
	}
	if out := restore(one); !strings.Contains(out, "already finished") {
		t.Fatalf("after the --fresh run, the same restore printed %q, want that it had finished", out)
	}
}

// TestRestoreWithAMissingSegment: without --fail-fast the other partitions
// are restored and the report names the failed one; with it the run ends at
// TestRestoreChecksTheBackupFirst: a segment missing from partition 1
// fails the restore before anything is written (no target topic); a
// segment of partition 2 with a flipped byte passes that check, and the
// restore stops at it, naming it, writing nothing of it, its report saying
// exactly what the target holds; with --verify the flipped byte fails it
// before anything is written.
func TestRestoreChecksTheBackupFirst(t *testing.T) {
	addr := testkit.Kafka(t)
	src := testkit.Topic(t, "src")
	seedPartitions(t, addr, src, 3, 20, time.Now().Add(-time.Hour).UnixMilli())
	backup := func() (string, []storage.Manifest) {
		path := t.TempDir()
		if code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", src, "--path", path, "--backup-id", "b", "--compression", "none"); code != 0 {
			t.Fatalf("backup: exit %d: %s", code, stderr)
		}
		parts := testkit.Manifests(t, path, "b")
		if len(parts) != 3 {
			t.Fatalf("backup partitions %+v", parts)
		}
		return path, parts
	}
	restore := func(path string, extra ...string) (string, int, string, string) {
		dst := testkit.Topic(t, "dst")
		code, stdout, stderr := kpipe(t, append([]string{"restore", "--bootstrap-servers", addr, "--path", path, "--backup-id", "b", "--topic-mapping", src + "=" + dst,
			"--state-dir", t.TempDir()}, extra...)...)
		return dst, code, stdout, stderr
	}

	path, parts := backup()
	seg := parts[1].Entries[0].Segment
	if err := os.Remove(testkit.SegmentFile(path, "b", src, 1, parts[1].Entries[0])); err != nil {
		t.Fatal(err)
	}
	dst, code, _, stderr := restore(path)
	want := fmt.Sprintf(`kpipe: pipeline "restore": open source "fs": open: backup "b" at %s is damaged where this run reads, so nothing was read: %s/1: segment %s is missing: its 20 records (offsets 0 to 19) are lost; kpipe validate lists every problem`, path, src, seg)
	if code != 1 || errorText(stderr) != want {
		t.Fatalf("restore with a missing segment: exit %d, error\n%s\nwant exit 1 and\n%s", code, errorText(stderr), want)
	}
	if testkit.ListTopics(t, addr)[dst] {
		t.Fatalf("the restore of a damaged backup created %s", dst)
	}

	path, parts = backup()
	seg = parts[2].Entries[0].Segment
	file := testkit.SegmentFile(path, "b", src, 2, parts[2].Entries[0])
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	at := parts[2].Entries[0].Batches[0].Start + parts[2].Entries[0].Batches[0].Length/2
	data[at] ^= 0xff
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// One batch in flight: partitions 0 and 1 are written before the source
	// reads partition 2.
	dst, code, stdout, stderr := restore(path, "--window", "1")
	if code != 1 || !strings.Contains(errorText(stderr), fmt.Sprintf("%s/2 at offset 0: segment b/topics/%s/2/%s: batch at byte ", src, src, seg)) || !strings.Contains(errorText(stderr), "checksum") {
		t.Fatalf("restore onto a flipped byte: exit %d, error %q; want exit 1 naming %s/2 and segment %s and its checksum", code, errorText(stderr), src, seg)
	}
	got := map[int32]int{}
	for _, r := range testkit.ConsumeAll(t, addr, dst) {
		got[r.Partition]++
	}
	if got[0] != 20 || got[1] != 20 || got[2] != 0 {
		t.Errorf("written per partition %v, want partitions 0 and 1 whole and nothing of the damaged partition 2", got)
	}
	// The report says exactly what the target holds: the records that got
	// there before the restore stopped, and nothing else.
	said := fmt.Sprintf("\n  %[1]s/0: 20 records at offsets 0 to 19\n  %[1]s/1: 20 records at offsets 0 to 19\n  1 other partition of the target topics got no records\n", dst)
	if !strings.Contains(stdout, said) {
		t.Errorf("the report of the stopped restore:\n%s\nwant it to say what the target holds (%v): %q", stdout, got, said)
	}
	dst, code, _, stderr = restore(path, "--verify")
	want = fmt.Sprintf(`kpipe: pipeline "restore": open source "fs": open: backup "b" at %s is damaged where this run reads, so nothing was read: %s/2: `, path, src)
	if code != 1 || !strings.HasPrefix(errorText(stderr), want) || !strings.Contains(errorText(stderr), seg) {
		t.Fatalf("restore --verify onto a flipped byte: exit %d, error\n%s\nwant exit 1, beginning\n%s\nand naming %s", code, errorText(stderr), want, seg)
	}
	if testkit.ListTopics(t, addr)[dst] {
		t.Fatalf("restore --verify of a damaged backup created %s", dst)
	}
}

// TestMetricsDuringAContinuousBackup scrapes /metrics (--metrics-addr)
// while a continuous backup runs: the records of each partition rise as
// more are produced.
func TestMetricsDuringAContinuousBackup(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "metrics")
	ts := time.Now().Add(-time.Hour).UnixMilli()
	seedPartitions(t, addr, topic, 2, 100, ts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := ln.Addr().String()
	ln.Close()
	path := t.TempDir()
	args := []string{"backup", "--bootstrap-servers", addr, "--topics", topic, "--path", path, "--backup-id", "m", "--state-dir", t.TempDir()}

	if code, _, stderr := kpipe(t, append(args, "--metrics-addr", "127.0.0.1:notaport")...); code != 2 ||
		!strings.HasPrefix(errorText(stderr), `kpipe: --metrics-addr "127.0.0.1:notaport": `) ||
		!strings.HasSuffix(errorText(stderr), "; give a free HOST:PORT, such as 127.0.0.1:9464") {
		t.Fatalf("a bad --metrics-addr: exit %d, %q", code, errorText(stderr))
	}

	cmd := exec.Command(testkit.KpipeBinary(t), append([]string{"--plugin-dir", testkit.PluginDir(t)},
		append(args, "--continuous", "--metrics-addr", metricsAddr)...)...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// records returns the sink's records of partition p as scraped.
	records := func(p int) int {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		prefix := fmt.Sprintf(`kpipe_records_total{partition="%d",pipeline="backup",stage="sink",topic="%s"} `, p, topic)
		for _, line := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, prefix); ok {
				n, _ := strconv.Atoi(v)
				return n
			}
		}
		return 0
	}
	waitFor := func(want int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for records(0) != want || records(1) != want {
			if time.Now().After(deadline) {
				t.Fatalf("/metrics shows %d and %d records for partitions 0 and 1, want %d each; stderr:\n%s", records(0), records(1), want, stderr.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor(100)
	var more []*kgo.Record
	for i := range 100 {
		more = append(more, &kgo.Record{Topic: topic, Partition: int32(i % 2), Value: []byte("more"), Timestamp: time.UnixMilli(ts + 1000)})
	}
	testkit.Produce(t, addr, more)
	waitFor(150)
	// Caught up: the kafka source reports no lag (its counters come every
	// second).
	// lag returns the source's lag_records: in all, and per partition.
	lag := func() string {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		got := map[string]string{}
		for _, line := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, `kpipe_plugin_counter{name="lag_records",pipeline="backup",plugin="kafka",role="source"} `); ok {
				got["all"] = v
			}
			for _, p := range []string{"0", "1"} {
				prefix := fmt.Sprintf(`kpipe_plugin_partition_counter{name="lag_records",partition="%s",pipeline="backup",plugin="kafka",role="source",topic="%s"} `, p, topic)
				if v, ok := strings.CutPrefix(line, prefix); ok {
					got[p] = v
				}
			}
		}
		return fmt.Sprintf("%s (%s and %s)", got["all"], got["0"], got["1"])
	}
	for deadline := time.Now().Add(10 * time.Second); lag() != "0 (0 and 0)"; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the source's lag_records is %s after catching up, want 0 (0 and 0 for partitions 0 and 1)", lag())
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err == nil || err.(*exec.ExitError).ExitCode() != exitInterrupted {
		t.Fatalf("after SIGTERM: %v, want exit %d", err, exitInterrupted)
	}
}
