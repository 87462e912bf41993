package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/internal/testkit"
)

// TestABackupConfigFileBacksUpAsItsPipelineFileDoes backs the same topics
// up from a kafka-backup style YAML file and from the HCL pipeline that
// says the same: the two backups hold the same segments (by offsets,
// records and compression) and restore to the same records. The YAML's
// topics.exclude, compression, compression_level, segment_max_records and
// stop_at_current_offsets each show in the result; the same file with
// storage type: s3 writes into the S3 server.
func TestABackupConfigFileBacksUpAsItsPipelineFileDoes(t *testing.T) {
	addr := testkit.Kafka(t)
	srv := testkit.S3(t)
	prefix := testkit.Topic(t, "yaml")
	ts := time.Now().Add(-time.Hour).UnixMilli()
	var recs []*kgo.Record
	for _, tp := range []struct {
		topic      string
		partitions int32
		per        int
	}{{prefix + "-a", 2, 50}, {prefix + "-b", 1, 30}, {prefix + "-tmp", 1, 10}} {
		testkit.CreateTopic(t, addr, tp.topic, tp.partitions)
		for p := range tp.partitions {
			for i := range tp.per {
				recs = append(recs, &kgo.Record{Topic: tp.topic, Partition: p, Key: []byte(fmt.Sprint(i)), Value: []byte(fmt.Sprintf("%s-%d-%d", tp.topic, p, i)),
					Headers: []kgo.RecordHeader{{Key: "h", Value: []byte{byte(i)}}}, Timestamp: time.UnixMilli(ts + int64(i))})
			}
		}
	}
	testkit.Produce(t, addr, recs)

	dir := t.TempDir()
	yamlPath, hclPath := filepath.Join(dir, "y"), filepath.Join(dir, "h")
	t.Setenv("KPIPE_TEST_BROKERS", addr)
	config := fmt.Sprintf(`# a backup as kafka-backup users write it
mode: backup
backup_id: nightly
source:
  bootstrap_servers: ["${KPIPE_TEST_BROKERS}"]
  topics:
    include: ["%s-*"]
    exclude: ["%s-tmp"]
storage:
  backend: filesystem
  path: %s
backup:
  compression: lz4
  compression_level: 9
  segment_max_records: 20
  stop_at_current_offsets: true
`, prefix, prefix, yamlPath)
	yamlFile := filepath.Join(dir, "backup.yaml")
	if err := os.WriteFile(yamlFile, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errText := kpipeWithin(t, time.Minute, "backup", "--config", yamlFile); code != 0 {
		t.Fatalf("backup --config: exit %d: %s", code, errText)
	}
	hcl := writeFile(t, fmt.Sprintf(`pipeline "backup" {
  source "kafka" {
    bootstrap_servers = [%q]
    topics            = ["%s-*"]
    exclude_topics    = ["%s-tmp"]
  }
  sink "fs" {
    path                = %q
    backup_id           = "nightly"
    compression         = "lz4"
    compression_level   = 9
    segment_max_records = 20
    flush_interval      = "10s"
  }
}
`, addr, prefix, prefix, hclPath))
	if code, _, errText := kpipeWithin(t, time.Minute, "run", hcl, "--state-dir", t.TempDir()); code != 0 {
		t.Fatalf("run: exit %d: %s", code, errText)
	}

	layout := func(root string) []string {
		var out []string
		for _, m := range testkit.Manifests(t, root, "nightly") {
			for _, e := range m.Entries {
				out = append(out, fmt.Sprintf("%s/%d %d-%d %d %s", m.Topic, m.Partition, e.MinOffset, e.NextOffset, e.Records, e.Compression))
			}
		}
		return out
	}
	fromYAML, fromHCL := layout(yamlPath), layout(hclPath)
	if !slices.Equal(fromYAML, fromHCL) {
		t.Fatalf("segments from YAML:\n%s\nfrom HCL:\n%s", strings.Join(fromYAML, "\n"), strings.Join(fromHCL, "\n"))
	}
	// 2×50 + 30 records in segments of 20, lz4 at level 9; the tmp topic
	// left out.
	want := []string{}
	for _, tp := range []struct {
		name    string
		p, recs int
	}{{prefix + "-a", 0, 50}, {prefix + "-a", 1, 50}, {prefix + "-b", 0, 30}} {
		for from := 0; from < tp.recs; from += 20 {
			to := min(from+20, tp.recs)
			want = append(want, fmt.Sprintf("%s/%d %d-%d %d lz4:9", tp.name, tp.p, from, to, to-from))
		}
	}
	if !slices.Equal(fromYAML, want) {
		t.Fatalf("segments from YAML:\n%s\nwant:\n%s", strings.Join(fromYAML, "\n"), strings.Join(want, "\n"))
	}
	restored := func(root, label string) []string {
		t.Helper()
		var out []string
		for _, topic := range []string{prefix + "-a", prefix + "-b"} {
			dst := testkit.Topic(t, label)
			if code, _, errText := kpipeWithin(t, time.Minute, "restore", "--bootstrap-servers", addr, "--path", root, "--backup-id", "nightly",
				"--topics", topic, "--topic-mapping", topic+"="+dst); code != 0 {
				t.Fatalf("restore: exit %d: %s", code, errText)
			}
			for _, r := range testkit.ConsumeAll(t, addr, dst) {
				out = append(out, fmt.Sprintf("%d %s %s %v %d", r.Partition, r.Key, r.Value, r.Headers, r.Timestamp.UnixMilli()))
			}
		}
		return out
	}
	if a, b := restored(yamlPath, "fromyaml"), restored(hclPath, "fromhcl"); len(a) != 130 || !slices.Equal(a, b) {
		t.Fatalf("restored from YAML %d records, from HCL %d; they differ or are not 130", len(a), len(b))
	}

	// The same file with an s3 block: the backup goes to the S3 server.
	s3Prefix := srv.Prefix(t)
	s3Config := strings.Replace(config, "  backend: filesystem\n  path: "+yamlPath+"\n", fmt.Sprintf(`  type: s3
  s3:
    bucket: %s
    prefix: %s
    endpoint: %s
    region: %s
    force_path_style: true
`, srv.Bucket, s3Prefix, srv.Endpoint, srv.Region), 1)
	if err := os.WriteFile(yamlFile, []byte(s3Config), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errText := kpipeWithin(t, time.Minute, "backup", "--config", yamlFile); code != 0 {
		t.Fatalf("backup --config with an s3 block: exit %d: %s", code, errText)
	}
	if got := layout("s3://" + srv.Bucket + "/" + s3Prefix); !slices.Equal(got, want) {
		t.Fatalf("segments in S3:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestBadBackupConfigExitsTwo: a config mistake is bad input (exit 2)
// naming the file, line and key; flags that the file replaces are refused
// beside it.
func TestBadBackupConfigExitsTwo(t *testing.T) {
	file := filepath.Join(t.TempDir(), "backup.yaml")
	os.WriteFile(file, []byte("mode: backup\nbackup_id: b\nbackupp: {}\n"), 0o644)
	code, _, stderr := kpipe(t, "backup", "--config", file)
	if want := "kpipe: " + file + ":3: backupp: unknown key; did you mean backup?"; code != exitBadInput || errorText(stderr) != want {
		t.Fatalf("exit %d, error %q; want exit %d, %q", code, errorText(stderr), exitBadInput, want)
	}
	code, _, stderr = kpipe(t, "backup", "--config", file, "--topics", "x")
	if want := "kpipe: --topics with --config: the config file says what to back up; give one or the other"; code != exitBadInput || errorText(stderr) != want {
		t.Fatalf("exit %d, error %q; want exit %d, %q", code, errorText(stderr), exitBadInput, want)
	}
}

// TestVersion prints kpipe's version, plugin protocol and backup format.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}} {
		code, stdout, _ := kpipe(t, args...)
		if code != 0 || !strings.HasPrefix(stdout, "kpipe 0.2.0 (plugin protocol 2, backup format 3, go") {
			t.Fatalf("kpipe %v: exit %d, %q", args, code, stdout)
		}
	}
}

// TestInternalTopicsOnlyWhenAsked: a glob matches a topic whose name
// starts with __ only with backup.include_internal_topics.
func TestInternalTopicsOnlyWhenAsked(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := "__" + testkit.Topic(t, "internal")
	seedPartitions(t, addr, topic, 1, 3, time.Now().UnixMilli())
	dir := t.TempDir()
	config := func(include bool) string {
		file := filepath.Join(t.TempDir(), "backup.yaml")
		os.WriteFile(file, []byte(fmt.Sprintf(`mode: backup
backup_id: internal
source:
  bootstrap_servers: [%q]
  topics:
    include: ["%s*"]
storage:
  backend: filesystem
  path: %s
backup:
  include_internal_topics: %t
`, addr, topic, dir, include)), 0o644)
		return file
	}
	code, _, stderr := kpipeWithin(t, time.Minute, "backup", "--config", config(false))
	if want := fmt.Sprintf("no topic on the cluster matches %q; fix topics", topic+"*"); code != exitFailed || !strings.Contains(errorText(stderr), want) {
		t.Fatalf("without include_internal_topics: exit %d, %q; want exit %d naming %q", code, errorText(stderr), exitFailed, want)
	}
	if code, _, stderr := kpipeWithin(t, time.Minute, "backup", "--config", config(true)); code != 0 {
		t.Fatalf("with include_internal_topics: exit %d: %s", code, stderr)
	}
	if n := testkit.Records(t, dir, "internal"); n != 3 {
		t.Fatalf("the backup holds %d records, want 3", n)
	}
}
