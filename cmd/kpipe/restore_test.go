package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/internal/testkit"
	"github.com/kpipe/kpipe/sdk/record"
	"github.com/kpipe/kpipe/sdk/restore"
)

// aStore is where a test's backups go: a folder, or a prefix of the test
// S3 server with the flags that reach it.
type aStore struct {
	name  string
	path  string
	flags []string
}

// eachStore runs fn for a folder and for the S3 server.
func eachStore(t *testing.T, fn func(t *testing.T, st aStore)) {
	t.Run("fs", func(t *testing.T) { fn(t, aStore{name: "fs", path: t.TempDir()}) })
	t.Run("s3", func(t *testing.T) {
		srv := testkit.S3(t)
		fn(t, aStore{name: "s3", path: srv.Path(t), flags: []string{"--s3-endpoint", srv.Endpoint, "--s3-force-path-style", "--s3-region", srv.Region}})
	})
}

// pitrData is a topic of 2 partitions whose timestamps are not monotonic:
// in every run of 10 records the first lies an hour before the window and
// the last an hour after it, the others inside; and 30 records of each
// partition lie well before the window, 30 well after. Segments of 10
// records make each segment's first and last record lie outside the
// window while the ones between lie inside.
type pitrData struct {
	topic      string
	start, end int64 // the window
	records    []*kgo.Record
}

func newPITRData(t *testing.T, addr string) *pitrData {
	t.Helper()
	d := &pitrData{topic: testkit.Topic(t, "pitr")}
	d.start = time.Now().Add(-2*time.Hour).Truncate(time.Second).UnixMilli() + 123
	d.end = d.start + 60_000
	testkit.CreateTopic(t, addr, d.topic, 2)
	for p := range int32(2) {
		for i := range 120 {
			var ts int64
			switch {
			case i < 30:
				ts = d.start - 600_000 + int64(i)
			case i >= 90:
				ts = d.end + 600_000 + int64(i)
			case i%10 == 0:
				ts = d.start - 3_600_000
			case i%10 == 9:
				ts = d.end + 3_600_000
			default:
				ts = d.end - int64(i)*100 // inside, and going down
			}
			r := &kgo.Record{Topic: d.topic, Partition: p, Key: fmt.Appendf(nil, "k%d-%d", p, i), Value: fmt.Appendf(nil, "v%d-%d", p, i),
				Timestamp: time.UnixMilli(ts), Headers: []kgo.RecordHeader{{Key: "i", Value: []byte(strconv.Itoa(i))}}}
			if i%7 == 0 {
				r.Headers = append(r.Headers, kgo.RecordHeader{Key: "seven"})
			}
			d.records = append(d.records, r)
		}
	}
	testkit.Produce(t, addr, d.records)
	return d
}

// within returns the records of d with start <= timestamp <= end (-1: open)
// in partition and offset order.
func (d *pitrData) within(start, end int64) []*kgo.Record {
	var out []*kgo.Record
	for _, r := range d.records {
		ts := r.Timestamp.UnixMilli()
		if (start < 0 || ts >= start) && (end < 0 || ts <= end) {
			out = append(out, r)
		}
	}
	return out
}

// sameRecordsInOrder checks got against want record by record: partition,
// key, value, headers and timestamp.
func sameRecordsInOrder(t *testing.T, what string, got, want []*kgo.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d records, want %d", what, len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Partition != w.Partition || string(g.Key) != string(w.Key) || string(g.Value) != string(w.Value) ||
			g.Timestamp.UnixMilli() != w.Timestamp.UnixMilli() || fmt.Sprint(g.Headers) != fmt.Sprint(w.Headers) {
			t.Fatalf("%s: record %d is %d/%s=%s at %d %v, want %d/%s=%s at %d %v", what, i, g.Partition, g.Key, g.Value, g.Timestamp.UnixMilli(), g.Headers,
				w.Partition, w.Key, w.Value, w.Timestamp.UnixMilli(), w.Headers)
		}
	}
}

// TestPointInTimeRestores: on fs and on s3, a window whose segments begin
// and end with records outside it gives back exactly its records; so do a
// window open at its start, one open at its end, and "just before the
// incident" given as an ISO-8601 time.
func TestPointInTimeRestores(t *testing.T) {
	addr := testkit.Kafka(t)
	d := newPITRData(t, addr)
	eachStore(t, func(t *testing.T, st aStore) {
		code, _, stderr := kpipe(t, append([]string{"backup", "--bootstrap-servers", addr, "--topics", d.topic, "--path", st.path, "--backup-id", "p",
			"--segment-max-records", "10"}, st.flags...)...)
		if code != 0 {
			t.Fatalf("backup: exit %d: %s", code, stderr)
		}
		incident := d.end + 60_000
		for _, c := range []struct {
			name       string
			start, end string
			want       []*kgo.Record
			skipped    int
		}{
			{"window", fmt.Sprint(d.start), fmt.Sprint(d.end), d.within(d.start, d.end), 240 - 2*48},
			{"start only", fmt.Sprint(d.start), "", d.within(d.start, -1), 240 - len(d.within(d.start, -1))},
			{"end only", "", fmt.Sprint(d.end), d.within(-1, d.end), 240 - len(d.within(-1, d.end))},
			{"just before the incident", "", time.UnixMilli(incident - 60_000).UTC().Format("2006-01-02T15:04:05.000Z07:00"), d.within(-1, d.end), 240 - len(d.within(-1, d.end))},
		} {
			dst := testkit.Topic(t, "pitrdst")
			args := append([]string{"restore", "--bootstrap-servers", addr, "--path", st.path, "--backup-id", "p", "--topic-mapping", d.topic + "=" + dst,
				"--state-dir", t.TempDir()}, st.flags...)
			if c.start != "" {
				args = append(args, "--time-window-start", c.start)
			}
			if c.end != "" {
				args = append(args, "--time-window-end", c.end)
			}
			code, stdout, stderr := kpipe(t, args...)
			if code != 0 {
				t.Fatalf("%s: restore: exit %d: %s", c.name, code, stderr)
			}
			if want := fmt.Sprintf("restore p: %d records restored, %d skipped outside the time window, ", len(c.want), c.skipped); !strings.HasPrefix(summaryLine(stdout), want) {
				t.Errorf("%s: the summary is %q, want it to begin %q", c.name, summaryLine(stdout), want)
			}
			got := testkit.ConsumeAll(t, addr, dst)
			sameRecordsInOrder(t, c.name, got, c.want)
		}
		if n := len(d.within(d.start, d.end)); n != 2*48 {
			t.Fatalf("the window holds %d records, want 96: the data is not what the test means", n)
		}
	})
}

// summaryLine is the line of a restore's report that sums it up.
func summaryLine(stdout string) string {
	for _, l := range strings.Split(stdout, "\n") {
		if strings.HasPrefix(l, "restore ") {
			return l
		}
	}
	return ""
}

// TestEmptySelectionsFail: a window outside the backup's records, one that
// falls between the records of the batches it overlaps, topics or
// partitions that match none: exit 1 naming what the backup holds, nothing
// created; --allow-empty makes each exit 0.
func TestEmptySelectionsFail(t *testing.T) {
	addr := testkit.Kafka(t)
	d := newPITRData(t, addr)
	path := t.TempDir()
	if code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", d.topic, "--path", path, "--backup-id", "e", "--segment-max-records", "10"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	first, last := d.start-3_600_000, d.end+3_600_000
	held := fmt.Sprintf("holds records from %s to %s", record.Instant(first), record.Instant(last))
	hint := "; or allow an empty run with --allow-empty (allow_empty = true)"
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"window before the backup", []string{"--time-window-end", fmt.Sprint(first - 1)},
			fmt.Sprintf("No records found in specified time window the start to %s: backup \"e\" (of the topics and partitions chosen) %s; choose a window in that range%s", record.Instant(first-1), held, hint)},
		{"window after the backup", []string{"--time-window-start", fmt.Sprint(last + 1)},
			fmt.Sprintf("No records found in specified time window %s to the end: backup \"e\" (of the topics and partitions chosen) %s; choose a window in that range%s", record.Instant(last+1), held, hint)},
		{"window between the records of its batches", []string{"--time-window-start", fmt.Sprint(d.end + 1), "--time-window-end", fmt.Sprint(d.end + 1000)},
			fmt.Sprintf("No records found in specified time window %s to %s: backup \"e\" (of the topics and partitions chosen) %s; choose a window in that range%s", record.Instant(d.end+1), record.Instant(d.end+1000), held, hint)},
		{"topics", []string{"--topics", "nope-*"},
			fmt.Sprintf("no topic of backup \"e\" matches topics nope-*: it holds %s%s", d.topic, hint)},
		{"source partitions", []string{"--source-partitions", "7"},
			fmt.Sprintf("no partition of backup \"e\" matches source_partitions [7]: %s has 2%s", d.topic, hint)},
	} {
		dst := testkit.Topic(t, "emptydst")
		args := append([]string{"restore", "--bootstrap-servers", addr, "--path", path, "--backup-id", "e", "--topic-mapping", d.topic + "=" + dst,
			"--state-dir", t.TempDir()}, c.args...)
		code, _, stderr := kpipe(t, args...)
		if code != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("%s: exit %d, stderr:\n%s\nwant exit 1 and %q", c.name, code, stderr, c.want)
		}
		code, stdout, stderr := kpipe(t, append(args, "--allow-empty", "--fresh")...)
		if code != 0 || !strings.HasPrefix(summaryLine(stdout), "restore e: 0 records restored") {
			t.Errorf("%s with --allow-empty: exit %d, stdout %q, stderr:\n%s\nwant exit 0 and 0 records restored", c.name, code, stdout, stderr)
		}
	}
}

// TestAMergeWritesPartitionsOneAfterTheOther: partition_mapping 1=0, 2=0
// merges three partitions into one, source partition 0's records first,
// then 1's, then 2's, each in its order, also when the partitions' segments
// are read ahead (--max-concurrent-partitions 3); --source-partitions 0,2
// with the same mapping writes only those two.
func TestAMergeWritesPartitionsOneAfterTheOther(t *testing.T) {
	addr := testkit.Kafka(t)
	src := testkit.Topic(t, "merge")
	ts := time.Now().Add(-time.Hour).UnixMilli()
	seedPartitions(t, addr, src, 3, 50, ts)
	path := t.TempDir()
	if code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", src, "--path", path, "--backup-id", "m", "--segment-max-records", "20"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	for _, c := range []struct {
		parts string
		from  []int
	}{{"", []int{0, 1, 2}}, {"0,2", []int{0, 2}}} {
		dst := testkit.Topic(t, "mergedst")
		args := []string{"restore", "--bootstrap-servers", addr, "--path", path, "--backup-id", "m", "--topic-mapping", src + "=" + dst,
			"--partition-mapping", "1=0,2=0", "--state-dir", t.TempDir()}
		if c.parts != "" {
			args = append(args, "--source-partitions", c.parts)
		} else {
			args = append(args, "--max-concurrent-partitions", "3", "--format", "json")
		}
		code, stdout, stderr := kpipe(t, args...)
		if code != 0 {
			t.Fatalf("restore: exit %d: %s", code, stderr)
		}
		if c.parts == "" {
			var rep struct {
				Report struct {
					Plugins []struct {
						Role    string
						Metrics map[string]int64
					}
				}
			}
			if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
				t.Fatal(err)
			}
			// 3 segments of each partition: all but the first read ahead.
			if m := rep.Report.Plugins[0]; m.Role != "source" || m.Metrics["segments_read_ahead"] != 8 {
				t.Fatalf("--max-concurrent-partitions 3: the source's metrics are %+v, want 8 segments read ahead", m)
			}
		}
		var want, got []string
		for _, p := range c.from {
			for i := range 50 {
				want = append(want, fmt.Sprintf("0:p%d-%d@%d", p, i, ts+int64(i)))
			}
		}
		for _, r := range testkit.ConsumeAll(t, addr, dst) {
			got = append(got, fmt.Sprintf("%d:%s@%d", r.Partition, r.Value, r.Timestamp.UnixMilli()))
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("source partitions %q merged into partition 0: got\n%v\nwant\n%v", c.parts, got, want)
		}
	}
}

// TestRestoreConfigFile: kpipe restore --config with the second shape
// (restore.source, restore.target, restore.options with topic_mapping as
// a list) restores what it says; dry_run writes nothing and prints the
// plan; create_topics: false refuses a missing target before writing.
func TestRestoreConfigFile(t *testing.T) {
	addr := testkit.Kafka(t)
	src := testkit.Topic(t, "cfg")
	ts := time.Now().Add(-time.Hour).UnixMilli()
	seedPartitions(t, addr, src, 3, 20, ts)
	path := t.TempDir()
	if code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", src, "--path", path, "--backup-id", "c"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	dst := testkit.Topic(t, "cfgdst")
	config := func(extra string) string {
		return writeYAMLFile(t, fmt.Sprintf(`restore:
  source:
    path: %s
    backup_id: c
  target:
    bootstrap_servers: [%s]
  options:
    time_window_start: %d
    time_window_end: %s
    source_partitions: [0, 2]
    topic_mapping:
      - source: %s
        target: %s
%s`, path, addr, ts+5, time.UnixMilli(ts+14).UTC().Format(time.RFC3339Nano), src, dst, extra))
	}
	code, stdout, stderr := kpipe(t, "restore", "--config", config("    dry_run: true\n"), "--state-dir", t.TempDir())
	if code != 0 {
		t.Fatalf("dry run: exit %d: %s", code, stderr)
	}
	wantPlan := fmt.Sprintf("Restore of backup c from %s\n  time window: %s to %s\n  to read: 2 of 2 segments, at most 40 records, ", path, record.Instant(ts+5), record.Instant(ts+14))
	if !strings.HasPrefix(stdout, wantPlan) || !strings.Contains(stdout, fmt.Sprintf("\n  topic %s → %s: 3 partitions (3 in the backup), at most 40 records\n    partition 0 → 0: at most 20 records in 1 segments\n    partition 2 → 2: at most 20 records in 1 segments\n", src, dst)) {
		t.Errorf("dry run printed:\n%s\nwant it to begin %q and list the topic and its partitions 0 and 2", stdout, wantPlan)
	}
	if testkit.ListTopics(t, addr)[dst] {
		t.Fatalf("the dry run created the target topic %s", dst)
	}
	// The same restore in flags: --dry-run plans, --create-topics=false
	// refuses the missing target.
	flags := []string{"restore", "--path", path, "--backup-id", "c", "--bootstrap-servers", addr, "--time-window-start", fmt.Sprint(ts + 5),
		"--time-window-end", fmt.Sprint(ts + 14), "--source-partitions", "0,2", "--topic-mapping", src + "=" + dst, "--state-dir", t.TempDir()}
	if code, out, stderr := kpipe(t, append(flags, "--dry-run")...); code != 0 || out != stdout {
		t.Errorf("--dry-run: exit %d, printed\n%s%s\nwant what dry_run printed:\n%s", code, out, stderr, stdout)
	}
	code, _, stderr = kpipe(t, append(flags, "--create-topics=false")...)
	if want := fmt.Sprintf("target topic %q does not exist; create it, or let the restore create it (create_topics = true, --create-topics)", dst); code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("--create-topics=false onto a missing topic: exit %d, stderr:\n%s\nwant exit 1 and %q", code, stderr, want)
	}
	if testkit.ListTopics(t, addr)[dst] {
		t.Fatalf("--dry-run or --create-topics=false created the target topic %s", dst)
	}
	code, _, stderr = kpipe(t, "restore", "--config", config("    create_topics: false\n"), "--state-dir", t.TempDir())
	if want := fmt.Sprintf("target topic %q does not exist; create it, or let the restore create it (create_topics = true, --create-topics)", dst); code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("create_topics: false onto a missing topic: exit %d, stderr:\n%s\nwant exit 1 and %q", code, stderr, want)
	}
	if testkit.ListTopics(t, addr)[dst] {
		t.Fatalf("create_topics: false created the target topic %s", dst)
	}
	state := t.TempDir()
	if code, _, stderr := kpipe(t, "restore", "--config", config(""), "--state-dir", state); code != 0 {
		t.Fatalf("restore: exit %d: %s", code, stderr)
	}
	got := map[int32][]string{}
	for _, r := range testkit.ConsumeAll(t, addr, dst) {
		got[r.Partition] = append(got[r.Partition], string(r.Value))
	}
	for _, p := range []int32{0, 2} {
		var want []string
		for i := 5; i <= 14; i++ {
			want = append(want, fmt.Sprintf("p%d-%d", p, i))
		}
		if fmt.Sprint(got[p]) != fmt.Sprint(want) {
			t.Errorf("partition %d holds %v, want %v", p, got[p], want)
		}
	}
	if len(got) != 2 {
		t.Errorf("restored partitions %v, want 0 and 2", got)
	}
	// Flags that the file replaces are refused beside it.
	code, _, stderr = kpipe(t, "restore", "--config", config(""), "--topics", src)
	if want := "kpipe: --topics with --config: the config file says what to restore; give one or the other"; code != 2 || errorText(stderr) != want {
		t.Errorf("--topics with --config: exit %d, %q; want exit 2 and %q", code, errorText(stderr), want)
	}
}

func writeYAMLFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "restore.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTheOffsetMapIsWhatAConsumerSees: after a restore with a window and a
// merge, the offset map that describe --restore-state prints maps each
// restored record's source offset to the offset a consumer of the target
// reads it at, and holds nothing else.
func TestTheOffsetMapIsWhatAConsumerSees(t *testing.T) {
	addr := testkit.Kafka(t)
	src := testkit.Topic(t, "omap")
	ts := time.Now().Add(-time.Hour).UnixMilli()
	seedPartitions(t, addr, src, 3, 40, ts)
	path := t.TempDir()
	if code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", src, "--path", path, "--backup-id", "o", "--segment-max-records", "7"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	dst := testkit.Topic(t, "omapdst")
	code, stdout, stderr := kpipe(t, "restore", "--bootstrap-servers", addr, "--path", path, "--backup-id", "o", "--topic-mapping", src+"="+dst,
		"--partition-mapping", "2=1", "--time-window-start", fmt.Sprint(ts+3), "--time-window-end", fmt.Sprint(ts+30), "--state-dir", t.TempDir())
	if code != 0 {
		t.Fatalf("restore: exit %d: %s", code, stderr)
	}
	_, file, ok := strings.Cut(stdout, "state and offset map: ")
	if !ok {
		t.Fatalf("the report names no state file:\n%s", stdout)
	}
	file, _, _ = strings.Cut(file, " ")
	code, js, stderr := kpipe(t, "describe", "--restore-state", file, "--format", "json")
	if code != 0 {
		t.Fatalf("describe --restore-state: exit %d: %s", code, stderr)
	}
	var st restore.State
	if err := json.Unmarshal([]byte(js), &st); err != nil {
		t.Fatal(err)
	}
	mapped := map[string]string{} // source "p/offset" → target "p/offset"
	for _, tg := range st.Targets {
		for _, r := range tg.Ranges {
			for i := range r.Count {
				mapped[fmt.Sprintf("%s/%d/%d", r.SourceTopic, r.SourcePartition, r.SourceOffset+i)] = fmt.Sprintf("%s/%d/%d", tg.Topic, tg.Partition, r.TargetOffset+i)
			}
		}
	}
	seen := map[string]string{}
	for _, r := range testkit.ConsumeAll(t, addr, dst) {
		var p, i int
		if _, err := fmt.Sscanf(string(r.Value), "p%d-%d", &p, &i); err != nil {
			t.Fatal(err)
		}
		seen[fmt.Sprintf("%s/%d/%d", src, p, i)] = fmt.Sprintf("%s/%d/%d", dst, r.Partition, r.Offset)
	}
	if len(seen) != 3*28 || fmt.Sprint(seen) != fmt.Sprint(mapped) {
		t.Fatalf("the offset map holds %d records, a consumer reads %d (want 84):\nmap      %v\nconsumer %v", len(mapped), len(seen), mapped, seen)
	}
	code, text, stderr := kpipe(t, "describe", "--restore-state", file)
	want := fmt.Sprintf("  records restored: 84\n  %[1]s/0: 28 records at offsets 0 to 27\n    %[2]s/0 offsets 3 to 30 → offsets 0 to 27\n"+
		"  %[1]s/1: 56 records at offsets 0 to 55\n    %[2]s/1 offsets 3 to 30 → offsets 0 to 27\n    %[2]s/2 offsets 3 to 30 → offsets 28 to 55\n", dst, src)
	if code != 0 || !strings.HasPrefix(text, "Restore state: "+file+"\n  finished at ") || !strings.HasSuffix(text, want) {
		t.Fatalf("describe --restore-state: exit %d, printed\n%s%s\nwant it to end\n%s", code, text, stderr, want)
	}
}

// TestAForeignTransactionStopsAResumedRestoreAtOnce: a restore that did
// not finish, whose target partition another producer has since written
// to in a transaction, stops when run again, at once, naming the
// transaction marker, instead of waiting for a last record that never
// comes.
func TestAForeignTransactionStopsAResumedRestoreAtOnce(t *testing.T) {
	addr := testkit.Kafka(t)
	src := testkit.Topic(t, "txnsrc")
	seedPartitions(t, addr, src, 1, 10, time.Now().Add(-time.Hour).UnixMilli())
	path, state := t.TempDir(), t.TempDir()
	if code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", src, "--path", path, "--backup-id", "x"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	dst := testkit.Topic(t, "txndst")
	args := []string{"restore", "--bootstrap-servers", addr, "--path", path, "--backup-id", "x", "--topic-mapping", src + "=" + dst, "--state-dir", state}
	if code, _, stderr := kpipe(t, args...); code != 0 {
		t.Fatalf("restore: exit %d: %s", code, stderr)
	}
	// As if the run had been killed before it saved that it finished.
	files, _ := filepath.Glob(filepath.Join(state, "*.restore.json"))
	if len(files) != 1 {
		t.Fatalf("state files %v, want one", files)
	}
	st, err := restore.Load(files[0])
	if err != nil {
		t.Fatal(err)
	}
	st.Finished = nil
	if err := restore.Save(files[0], st); err != nil {
		t.Fatal(err)
	}
	cl := testkit.Client(t, addr, kgo.TransactionalID("foreign-"+dst), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: dst, Partition: 0, Value: []byte("foreign")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	code, _, stderr := kpipeWithin(t, time.Minute, args...)
	want := fmt.Sprintf("target partition %s/0: offset 11 holds a transaction marker, which this restore never writes: another producer wrote to the partition; a restore must be the only writer of its target partitions. Restore into another topic, or from the start with --fresh", dst)
	if code != exitFailed || !strings.HasSuffix(errorText(stderr), want) {
		t.Fatalf("rerun after a foreign transaction: exit %d, error %q\nwant exit 1 and an error ending in %q", code, errorText(stderr), want)
	}
	if d := time.Since(began); d > 20*time.Second {
		t.Fatalf("the rerun took %s to stop: it waited for the read back to time out", d)
	}
}
