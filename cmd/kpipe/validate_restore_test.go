package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.yaml.in/yaml/v3"

	"github.com/kpipe/kpipe/internal/testkit"
	"github.com/kpipe/kpipe/pipelines"
	"github.com/kpipe/kpipe/sdk/record"
)

// TestValidateRestoreSaysWhatRestoreDoes: for a whole restore, a window
// on batch bounds, a window that cuts batches, a merge and a
// repartitioning, validate-restore writes nothing, says VALID, and the
// restore then writes what it said: exactly the records it counted where
// it says exact, within its range where it says estimate, into the
// partitions it said. Run again on the targets the restores filled, it
// says INVALID with the reason, exit 1.
func TestValidateRestoreSaysWhatRestoreDoes(t *testing.T) {
	addr := testkit.Kafka(t)
	src := testkit.Topic(t, "vr")
	testkit.CreateTopic(t, addr, src, 3)
	base := time.Now().Add(-time.Hour).Truncate(time.Second).UnixMilli()
	var recs []*kgo.Record
	for p := range int32(3) {
		for i := range 60 {
			r := &kgo.Record{Topic: src, Partition: p, Key: fmt.Appendf(nil, "k%d", i%13), Value: fmt.Appendf(nil, "%d-%d", p, i), Timestamp: time.UnixMilli(base + int64(i)*1000)}
			recs = append(recs, r)
		}
	}
	testkit.Produce(t, addr, recs)
	path := t.TempDir()
	if code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", src, "--path", path, "--backup-id", "v", "--segment-max-records", "10"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	// Segments (and batches) of 10 records: offsets 10 to 29 are records
	// base+10s to base+29s.
	type report struct {
		pipelines.RestoreValidation
	}
	cases := []struct {
		name, options string
		exact         bool
		partitions    int32
		want          int // records the restore writes
	}{
		{"whole", "", true, 3, 180},
		{"window on batch bounds", fmt.Sprintf("time_window_start: %d\n  time_window_end: %d\n", base+10_000, base+29_999), true, 3, 60},
		{"window that cuts batches", fmt.Sprintf("time_window_start: %d\n  time_window_end: %d\n", base+15_000, base+24_000), false, 3, 30},
		{"merge", "partition_mapping: {1: 0, 2: 0}\n", true, 1, 180},
		{"repartitioning", "repartitioning: {DST: {strategy: murmur2, target_partitions: 2}}\n", true, 2, 180},
	}
	var configs []string
	for _, c := range cases {
		dst := testkit.Topic(t, "vrdst")
		config := writeYAMLFile(t, fmt.Sprintf("mode: restore\nbackup_id: v\nstorage: {backend: filesystem, path: %s}\ntarget: {bootstrap_servers: [%s]}\nrestore:\n  topic_mapping: {%s: %s}\n  %s",
			path, addr, src, dst, strings.ReplaceAll(c.options, "DST", dst)))
		configs = append(configs, config)
		code, stdout, stderr := kpipe(t, "validate-restore", "--config", config, "--format", "json")
		if code != 0 {
			t.Fatalf("%s: validate-restore: exit %d\n%s%s", c.name, code, stdout, stderr)
		}
		var v report
		if err := json.Unmarshal([]byte(stdout), &v); err != nil {
			t.Fatalf("%s: %v\n%s", c.name, err, stdout)
		}
		if testkit.ListTopics(t, addr)[dst] {
			t.Fatalf("%s: validate-restore created %s", c.name, dst)
		}
		if !v.Valid || len(v.Topics) != 1 || v.Topics[0].Target != dst || v.Topics[0].Check == nil || !v.Topics[0].Check.WillCreate ||
			v.Topics[0].TargetPartitions != c.partitions || v.Topics[0].Check.Needs != c.partitions || v.Records.Exact != c.exact {
			t.Fatalf("%s: validate-restore says %s", c.name, stdout)
		}
		if code, _, stderr := kpipe(t, "restore", "--config", config, "--state-dir", t.TempDir()); code != 0 {
			t.Fatalf("%s: restore: exit %d: %s", c.name, code, stderr)
		}
		got := testkit.ConsumeAll(t, addr, dst)
		n := int64(len(got))
		if len(got) != c.want {
			t.Fatalf("%s: the restore wrote %d records, want %d: the data is not what the test means", c.name, len(got), c.want)
		}
		if rc := v.Records; (rc.Exact && rc.AtMost != n) || rc.AtLeast > n || rc.AtMost < n || v.Topics[0].Records != rc {
			t.Errorf("%s: validate-restore counted %+v (topic %+v), the restore wrote %d", c.name, rc, v.Topics[0].Records, n)
		}
		if parts := len(testkit.EndOffsets(t, addr, dst)); int32(parts) != c.partitions {
			t.Errorf("%s: the target has %d partitions, validate-restore said %d", c.name, parts, c.partitions)
		}
		if c.name == "window on batch bounds" {
			w := v.Window
			if *w.StartMs != base+10_000 || *w.Start != time.UnixMilli(base+10_000).UTC().Format(time.RFC3339Nano) || w.Duration != "19.999s" || *w.DurationMs != 19_999 {
				t.Errorf("%s: the window is reported as %+v", c.name, w)
			}
		}
	}

	// Again, now that the targets hold the records: INVALID, exit 1,
	// naming the target; as text and as YAML too.
	code, stdout, stderr := kpipe(t, "validate-restore", "--config", configs[0])
	if code != 1 || !strings.Contains(stdout, ": INVALID\n") || !strings.Contains(stdout, "already holds 180 records; a restore writes only to partitions it alone fills") ||
		!strings.Contains(stdout, "records: 180 records (exact)") || errorText(stderr) != "kpipe: the restore of backup v is INVALID: 1 reason(s)" {
		t.Errorf("a full target: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, _ = kpipe(t, "validate-restore", "--config", configs[2], "--format", "yaml")
	var y map[string]any
	if err := yaml.Unmarshal([]byte(stdout), &y); code != 1 || err != nil || y["valid"] != false || len(y["reasons"].([]any)) != 1 {
		t.Errorf("--format yaml: exit %d, %v\n%s", code, err, stdout)
	}
}

// TestValidateRestoreOfAnUnreachableTarget: the backup is checked, the
// target's checks are said not to be made, and the restore is VALID as
// far as the backup goes; a window outside the backup is INVALID.
func TestValidateRestoreOfAnUnreachableTarget(t *testing.T) {
	addr := testkit.Kafka(t)
	src := testkit.Topic(t, "vrun")
	testkit.CreateTopic(t, addr, src, 1)
	ts := time.Now().Add(-time.Hour).UnixMilli()
	testkit.Produce(t, addr, []*kgo.Record{{Topic: src, Value: []byte("a"), Timestamp: time.UnixMilli(ts)}})
	path := t.TempDir()
	if code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", src, "--path", path, "--backup-id", "u"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	config := func(extra string) string {
		return writeYAMLFile(t, fmt.Sprintf("mode: restore\nbackup_id: u\nstorage: {backend: filesystem, path: %s}\ntarget: {bootstrap_servers: [127.0.0.1:1]}\nrestore:\n  topics: [%s]\n%s", path, src, extra))
	}
	code, stdout, stderr := kpipe(t, "validate-restore", "--config", config(""))
	if code != 0 || !strings.Contains(stdout, ": VALID\n") || !strings.Contains(stdout, "  ! the target cluster did not answer (cannot reach Kafka at 127.0.0.1:1 within 10s: ") {
		t.Errorf("unreachable target: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = kpipe(t, "validate-restore", "--config", config(fmt.Sprintf("  time_window_start: %d\n", ts+1)))
	if want := fmt.Sprintf(`  ✗ no record of backup "u" lies in the chosen topics, partitions and time window %s to the end; choose a window the backup holds (kpipe describe shows its range)`, record.Instant(ts+1)); code != 1 || !strings.Contains(stdout, want) {
		t.Errorf("a window after the backup: exit %d, want 1 and %q:\n%s%s", code, want, stdout, stderr)
	}
}
