package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/internal/testkit"
)

// restoreReport is the part of `kpipe restore --format json` the filter
// tests read.
type restoreReport struct {
	Summary struct {
		Restored int64 `json:"records_restored"`
		Skipped  int64 `json:"records_skipped"`
		Filtered int64 `json:"records_filtered"`
	}
	Report struct {
		Plugins []struct {
			Role    string
			Metrics map[string]int64
		}
	}
}

func (r restoreReport) source(t *testing.T) map[string]int64 {
	t.Helper()
	for _, p := range r.Report.Plugins {
		if p.Role == "source" {
			return p.Metrics
		}
	}
	t.Fatal("the report has no source plugin")
	return nil
}

// TestRestoreFilters: a window-only restore decodes exactly the batches
// that straddle a bound, none wholly inside; a CEL filter on a header
// (flag) and on a list of keys (YAML) restores exactly the records of the
// window it keeps, and reports those it dropped; a filter that keeps
// nothing fails; one that does not compile is refused with exit 2,
// naming where it is wrong, before anything is read.
func TestRestoreFilters(t *testing.T) {
	addr := testkit.Kafka(t)
	d := newPITRData(t, addr)
	path := t.TempDir()
	if code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", d.topic, "--path", path, "--backup-id", "f", "--segment-max-records", "10"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	window := d.within(d.start, d.end)
	restoreJSON := func(t *testing.T, args ...string) restoreReport {
		t.Helper()
		code, stdout, stderr := kpipe(t, append([]string{"restore", "--format", "json", "--state-dir", t.TempDir()}, args...)...)
		if code != 0 {
			t.Fatalf("restore %v: exit %d: %s", args, code, stderr)
		}
		var rep restoreReport
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("%v: %s", err, stdout)
		}
		return rep
	}
	flags := func(dst string) []string {
		return []string{"--bootstrap-servers", addr, "--path", path, "--backup-id", "f", "--topic-mapping", d.topic + "=" + dst,
			"--time-window-start", fmt.Sprint(d.start), "--time-window-end", fmt.Sprint(d.end)}
	}

	t.Run("window only", func(t *testing.T) {
		// 5 batches of 20 records per partition (segments of 20): one
		// before the window, one across its start, one inside, one across
		// its end, one after.
		topic := testkit.Topic(t, "fbatches")
		testkit.CreateTopic(t, addr, topic, 2)
		var all []*kgo.Record
		for b := range 5 {
			for p := range int32(2) {
				var batch []*kgo.Record
				for i := range 20 {
					ts := d.start + int64(b-2)*30_000 + int64(i)*1_000 // 30s apart, 1s between records
					batch = append(batch, &kgo.Record{Topic: topic, Partition: p, Key: fmt.Appendf(nil, "k%d-%d-%d", p, b, i), Value: []byte("v"), Timestamp: time.UnixMilli(ts)})
				}
				testkit.Produce(t, addr, batch)
				all = append(all, batch...)
			}
		}
		bpath := t.TempDir()
		if code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", topic, "--path", bpath, "--backup-id", "w", "--segment-max-records", "20"); code != 0 {
			t.Fatalf("backup: exit %d: %s", code, stderr)
		}
		start, end := d.start-30_000+10_500, d.start+30_000+10_500
		straddling, inside := 0, 0
		for _, m := range testkit.Manifests(t, bpath, "w") {
			for _, e := range m.Entries {
				for _, bi := range e.Batches {
					switch {
					case bi.MinTimestamp >= start && bi.MaxTimestamp <= end:
						inside++
					case bi.MaxTimestamp >= start && bi.MinTimestamp <= end:
						straddling++
					}
				}
			}
		}
		if straddling != 4 || inside != 2 {
			t.Fatalf("%d batches straddle a bound of the window and %d lie inside, want 4 and 2: the data is not what the test means", straddling, inside)
		}
		var want []*kgo.Record
		for _, p := range []int32{0, 1} {
			for _, r := range all {
				if ts := r.Timestamp.UnixMilli(); r.Partition == p && ts >= start && ts <= end {
					want = append(want, r)
				}
			}
		}
		dst := testkit.Topic(t, "fwin")
		m := restoreJSON(t, "--bootstrap-servers", addr, "--path", bpath, "--backup-id", "w", "--topic-mapping", topic+"="+dst,
			"--time-window-start", fmt.Sprint(start), "--time-window-end", fmt.Sprint(end)).source(t)
		if m["batches_decoded"] != int64(straddling) {
			t.Errorf("the source decoded %d batches, want the %d that straddle a bound (%d lie inside the window)", m["batches_decoded"], straddling, inside)
		}
		sameRecordsInOrder(t, "window only", testkit.ConsumeAll(t, addr, dst), want)
	})

	t.Run("header", func(t *testing.T) {
		var want []*kgo.Record
		for _, r := range window {
			if !slices.ContainsFunc(r.Headers, func(h kgo.RecordHeader) bool { return h.Key == "seven" }) {
				want = append(want, r)
			}
		}
		dst := testkit.Topic(t, "fhdr")
		rep := restoreJSON(t, append(flags(dst), "--filter", `!headers.exists(h, h.key == "seven")`)...)
		if n := int64(len(window) - len(want)); n == 0 || rep.Summary.Filtered != n || rep.Summary.Restored != int64(len(want)) {
			t.Errorf("summary %+v, want %d restored and %d filtered", rep.Summary, len(want), n)
		}
		if m := rep.source(t); m["records_filtered"] != int64(len(window)-len(want)) {
			t.Errorf("records_filtered = %d, want %d", m["records_filtered"], len(window)-len(want))
		}
		sameRecordsInOrder(t, "header filter", testkit.ConsumeAll(t, addr, dst), want)
	})

	t.Run("keys from a config file", func(t *testing.T) {
		suppressed := []string{"k0-35", "k1-36", "k1-62", "k0-99"} // k0-99 lies outside the window
		var want []*kgo.Record
		for _, r := range window {
			if !slices.Contains(suppressed, string(r.Key)) {
				want = append(want, r)
			}
		}
		if len(window)-len(want) != 3 {
			t.Fatalf("%d suppressed keys in the window, want 3: the data is not what the test means", len(window)-len(want))
		}
		var list []string
		for _, k := range suppressed {
			list = append(list, `b"`+k+`"`)
		}
		dst := testkit.Topic(t, "fkeys")
		config := writeYAMLFile(t, fmt.Sprintf(`mode: restore
backup_id: f
storage: {backend: filesystem, path: %s}
target: {bootstrap_servers: [%s]}
restore:
  time_window_start: %d
  time_window_end: %d
  topic_mapping: {%s: %s}
  filter: '!(key in [%s])'
`, path, addr, d.start, d.end, d.topic, dst, strings.Join(list, ", ")))
		code, stdout, stderr := kpipe(t, "restore", "--config", config, "--state-dir", t.TempDir())
		if code != 0 {
			t.Fatalf("restore: exit %d: %s", code, stderr)
		}
		if want := fmt.Sprintf("restore f: %d records restored, %d skipped outside the time window, 3 dropped by the filter, ", len(want), 240-len(window)); !strings.HasPrefix(summaryLine(stdout), want) {
			t.Errorf("the summary is %q, want it to begin %q", summaryLine(stdout), want)
		}
		sameRecordsInOrder(t, "key filter", testkit.ConsumeAll(t, addr, dst), want)
	})

	t.Run("keeps nothing", func(t *testing.T) {
		dst := testkit.Topic(t, "fnone")
		code, _, stderr := kpipe(t, append([]string{"restore", "--state-dir", t.TempDir(), "--filter", `key == b"nope"`}, flags(dst)...)...)
		want := fmt.Sprintf(`kpipe: run restore: the filter "key == b\"nope\"" kept none of the %d records of the chosen topics, partitions and time window of backup "f": check the expression; or allow an empty run with --allow-empty (allow_empty = true)`, len(window))
		if code != 1 || !strings.Contains(stderr, strings.TrimPrefix(want, "kpipe: run restore: ")) {
			t.Errorf("exit %d, stderr %s; want exit 1 and %q", code, stderr, want)
		}
		if testkit.ListTopics(t, addr)[dst] && len(testkit.ConsumeAll(t, addr, dst)) != 0 {
			t.Errorf("a restore whose filter keeps nothing wrote records to %s", dst)
		}
	})

	t.Run("does not compile", func(t *testing.T) {
		dst := testkit.Topic(t, "fbad")
		code, _, stderr := kpipe(t, append([]string{"restore", "--state-dir", t.TempDir(), "--filter", "key == b\"x\" &&\n  valu == null"}, flags(dst)...)...)
		want := "kpipe: --filter: invalid CEL expression at line 2, column 3: undeclared reference to 'valu' (did you mean 'value'?)"
		if code != exitBadInput || errorText(stderr) != want {
			t.Errorf("exit %d, %q; want exit %d, %q", code, errorText(stderr), exitBadInput, want)
		}
		if testkit.ListTopics(t, addr)[dst] {
			t.Errorf("a refused restore created %s", dst)
		}
	})
}

// TestOriginalOffsetHeaders: with --include-original-offset-header, each
// restored record carries its own headers, then x-original-offset,
// x-original-partition and x-original-timestamp as decimal text, also
// after DeleteRecords moved the source's first offsets and with two
// partitions merged into one; without it the records are restored as they
// were, no header added.
func TestOriginalOffsetHeaders(t *testing.T) {
	addr := testkit.Kafka(t)
	src := testkit.Topic(t, "orig")
	testkit.CreateTopic(t, addr, src, 2)
	ts := time.Now().Add(-time.Hour).UnixMilli()
	var recs []*kgo.Record
	for p := range int32(2) {
		for i := range 30 {
			r := &kgo.Record{Topic: src, Partition: p, Key: fmt.Appendf(nil, "k%d-%d", p, i), Value: fmt.Appendf(nil, "v%d-%d", p, i), Timestamp: time.UnixMilli(ts + int64(i*7))}
			if i%3 == 0 {
				r.Headers = []kgo.RecordHeader{{Key: "own", Value: []byte("h")}, {Key: "empty"}}
			}
			recs = append(recs, r)
		}
	}
	testkit.Produce(t, addr, recs)
	deleted := map[int32]int64{0: 10, 1: 4}
	adm := kadm.NewClient(testkit.Client(t, addr))
	var del kadm.Offsets
	for p, o := range deleted {
		del.Add(kadm.Offset{Topic: src, Partition: p, At: o})
	}
	if resp, err := adm.DeleteRecords(context.Background(), del); err != nil || resp.Error() != nil {
		t.Fatalf("delete records: %v %v", err, resp.Error())
	}
	var kept []*kgo.Record
	for _, r := range recs {
		if r.Offset >= deleted[r.Partition] {
			kept = append(kept, r)
		}
	}
	path := t.TempDir()
	if code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", src, "--path", path, "--backup-id", "o"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	restoreTo := func(extra ...string) []*kgo.Record {
		dst := testkit.Topic(t, "origdst")
		args := append([]string{"restore", "--bootstrap-servers", addr, "--path", path, "--backup-id", "o", "--topic-mapping", src + "=" + dst, "--state-dir", t.TempDir()}, extra...)
		if code, _, stderr := kpipe(t, args...); code != 0 {
			t.Fatalf("restore %v: exit %d: %s", extra, code, stderr)
		}
		return testkit.ConsumeAll(t, addr, dst)
	}

	var want []*kgo.Record
	for _, r := range kept {
		w := *r
		w.Partition = 0
		w.Headers = append(slices.Clone(r.Headers),
			kgo.RecordHeader{Key: "x-original-offset", Value: fmt.Append(nil, r.Offset)},
			kgo.RecordHeader{Key: "x-original-partition", Value: fmt.Append(nil, r.Partition)},
			kgo.RecordHeader{Key: "x-original-timestamp", Value: fmt.Append(nil, r.Timestamp.UnixMilli())})
		want = append(want, &w)
	}
	sameRecordsInOrder(t, "with original-offset headers, partition 1 merged into 0", restoreTo("--include-original-offset-header", "--partition-mapping", "1=0"), want)
	if got := string(want[0].Headers[len(want[0].Headers)-3].Value); got != "10" {
		t.Fatalf("the first record's x-original-offset is %q, want 10: the data is not what the test means", got)
	}
	sameRecordsInOrder(t, "without", restoreTo(), kept)
}

// TestRateLimits: a restore of M records limited to N records per second
// takes at least M/N seconds, and one of B bytes of records limited to R
// bytes per second at least B/R (lower bounds only: the machine may be
// slower, never faster); a negative rate is refused.
func TestRateLimits(t *testing.T) {
	addr := testkit.Kafka(t)
	src := testkit.Topic(t, "rate")
	testkit.CreateTopic(t, addr, src, 2)
	ts := time.Now().Add(-time.Hour).UnixMilli()
	var recs []*kgo.Record
	for i := range 1000 {
		recs = append(recs, &kgo.Record{Topic: src, Partition: int32(i % 2), Key: fmt.Appendf(nil, "k%04d", i), Value: make([]byte, 495), Timestamp: time.UnixMilli(ts)})
	}
	testkit.Produce(t, addr, recs)
	path := t.TempDir()
	if code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", src, "--path", path, "--backup-id", "r"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	for _, c := range []struct {
		flag, value string
		least       time.Duration
	}{
		{"--rate-limit-records-per-sec", "500", 2 * time.Second},  // 1000 records
		{"--rate-limit-bytes-per-sec", "250000", 2 * time.Second}, // 1000 × 500 bytes
	} {
		dst := testkit.Topic(t, "ratedst")
		start := time.Now()
		code, _, stderr := kpipe(t, "restore", "--bootstrap-servers", addr, "--path", path, "--backup-id", "r", "--topic-mapping", src+"="+dst, "--state-dir", t.TempDir(), c.flag, c.value)
		took := time.Since(start)
		if code != 0 {
			t.Fatalf("%s %s: exit %d: %s", c.flag, c.value, code, stderr)
		}
		if took < c.least {
			t.Errorf("%s %s: the restore took %s, want at least %s", c.flag, c.value, took, c.least)
		}
		if n := len(testkit.ConsumeAll(t, addr, dst)); n != 1000 {
			t.Errorf("%s %s: %d records restored, want 1000", c.flag, c.value, n)
		}
	}
	code, _, stderr := kpipe(t, "restore", "--bootstrap-servers", addr, "--path", path, "--backup-id", "r", "--rate-limit-records-per-sec", "-5")
	if want := "kpipe: --rate-limit-records-per-sec -5: use a number above 0, or 0 for no limit"; code != exitBadInput || errorText(stderr) != want {
		t.Errorf("a negative rate: exit %d, %q; want exit %d, %q", code, errorText(stderr), exitBadInput, want)
	}
}

// TestTargetWarnings: before it writes, a restore warns, with the fix, of
// a target topic with message.timestamp.type=LogAppendTime, of one whose
// retention.ms is shorter than the restored records' age, and of a
// compacted one when the backup is of a topic that was not compacted (the
// brokers refuse its record without a key: the restore then stops, after
// the warning).
func TestTargetWarnings(t *testing.T) {
	addr := testkit.Kafka(t)
	src := testkit.Topic(t, "warn")
	testkit.CreateTopic(t, addr, src, 1)
	ts := time.Now().Add(-2 * time.Hour).UnixMilli()
	recs := []*kgo.Record{{Topic: src, Key: []byte("a"), Value: []byte("1"), Timestamp: time.UnixMilli(ts)}, {Topic: src, Value: []byte("no key"), Timestamp: time.UnixMilli(ts + 1)}}
	testkit.Produce(t, addr, recs)
	path := t.TempDir()
	if code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", src, "--path", path, "--backup-id", "w"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	str := func(s string) *string { return &s }
	for _, c := range []struct {
		config map[string]*string
		code   int
		want   string
	}{
		{map[string]*string{"message.timestamp.type": str("LogAppendTime")}, 0,
			`has message.timestamp.type=LogAppendTime: the brokers give the restored records the time they are written, not their own timestamps; set message.timestamp.type=CreateTime on it before restoring to keep them`},
		{map[string]*string{"retention.ms": str("3600000")}, 0,
			fmt.Sprintf(`has retention.ms=3600000, and the records restored to it have timestamps from %s on, older than that: the brokers delete them soon after they are written; raise retention.ms to at least 172800000 (or -1: no limit) before restoring`, time.UnixMilli(ts).UTC().Format(time.RFC3339))},
		{map[string]*string{"cleanup.policy": str("compact")}, 1,
			`has cleanup.policy=compact, but the backup is of a topic that was not compacted, which may hold records without keys: the brokers refuse those on a compacted topic, and the restore would stop part-way; set cleanup.policy=delete on the target, or restore into another topic`},
	} {
		dst := testkit.Topic(t, "warndst")
		testkit.CreateTopicWithConfigs(t, addr, dst, 1, c.config)
		code, _, stderr := kpipe(t, "restore", "--bootstrap-servers", addr, "--path", path, "--backup-id", "w", "--topic-mapping", src+"="+dst, "--state-dir", t.TempDir())
		want := fmt.Sprintf("target topic %q %s", dst, c.want)
		stderr = strings.ReplaceAll(stderr, `\"`, `"`) // as the log quotes them
		at := strings.Index(stderr, want)
		if code != c.code || at < 0 {
			t.Errorf("%v: exit %d, stderr:\n%s\nwant exit %d and the warning %q", c.config, code, stderr, c.code, want)
			continue
		}
		if c.code != 0 {
			refused := fmt.Sprintf("kpipe: pipeline \"restore\": sink \"kafka\": write: flush: produce to %s/0: INVALID_RECORD: This record has failed the validation on the broker and hence been rejected. (a compacted topic refuses records without a key)", dst)
			if failed := strings.Index(stderr, refused); failed < at {
				t.Errorf("%v: the restore did not fail with %q after it warned:\n%s", c.config, refused, stderr)
			}
		}
	}
}

// TestRepartitioning: a topic of 4 partitions restored into 3 with
// murmur2 repartitioning puts each record with a key in the partition
// franz-go's default partitioner picks for it over 3, each key's records
// in their order; records without a key are all there, round-robin. The
// same from a config file; an existing target with more partitions than
// the repartitioning says is refused before anything is written.
func TestRepartitioning(t *testing.T) {
	addr := testkit.Kafka(t)
	src := testkit.Topic(t, "repart")
	testkit.CreateTopic(t, addr, src, 4)
	ts := time.Now().Add(-time.Hour).UnixMilli()
	// Keyed records where a Kafka producer put them over 4 partitions,
	// so that each key's records are in one source partition, in order.
	var recs []*kgo.Record
	over4 := kgo.StickyKeyPartitioner(nil).ForTopic(src)
	for i := range 2000 {
		r := &kgo.Record{Topic: src, Partition: int32(i % 4), Value: fmt.Appendf(nil, "%d", i), Timestamp: time.UnixMilli(ts + int64(i))}
		if i%10 != 0 {
			r.Key = fmt.Appendf(nil, "user-%d", i%97)
			r.Partition = int32(over4.Partition(r, 4))
		}
		recs = append(recs, r)
	}
	testkit.Produce(t, addr, recs)
	path := t.TempDir()
	if code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", src, "--path", path, "--backup-id", "r"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	// check compares the target with what a Kafka producer would do.
	check := func(t *testing.T, dst string) {
		t.Helper()
		got := testkit.ConsumeAll(t, addr, dst)
		if len(got) != len(recs) {
			t.Fatalf("%d records restored, want %d", len(got), len(recs))
		}
		partitioner := kgo.StickyKeyPartitioner(nil).ForTopic(dst)
		// Each key's values in the order they were produced.
		want, have := map[string][]string{}, map[string][]string{}
		for _, r := range recs {
			want[string(r.Key)] = append(want[string(r.Key)], string(r.Value))
		}
		nulls := map[int32]int{}
		for _, r := range got {
			if r.Key == nil {
				nulls[r.Partition]++
				have[""] = append(have[""], string(r.Value))
				continue
			}
			if p := int32(partitioner.Partition(r, 3)); r.Partition != p {
				t.Fatalf("key %s is in partition %d, a Kafka producer puts it in %d", r.Key, r.Partition, p)
			}
			have[string(r.Key)] = append(have[string(r.Key)], string(r.Value))
		}
		for k, w := range want {
			if k == "" {
				if g := have[""]; len(g) != len(w) || !sameSet(g, w) {
					t.Fatalf("records without a key: %d restored, want %d, the same", len(g), len(w))
				}
				continue
			}
			if strings.Join(have[k], ",") != strings.Join(w, ",") {
				t.Fatalf("key %s: values %v, want %v in this order", k, have[k], w)
			}
		}
		// 200 without a key, 100 in source partitions 0 and 2 each,
		// round-robin over 3 from their own numbers: 34+33, 33+33, 33+34.
		if nulls[0] != 67 || nulls[1] != 66 || nulls[2] != 67 {
			t.Fatalf("records without a key per partition: %v, want 67, 66, 67", nulls)
		}
	}
	t.Run("flag", func(t *testing.T) {
		dst := testkit.Topic(t, "repartdst")
		code, stdout, stderr := kpipe(t, "restore", "--bootstrap-servers", addr, "--path", path, "--backup-id", "r", "--topic-mapping", src+"="+dst,
			"--repartitioning", dst+"=murmur2:3", "--state-dir", t.TempDir())
		if code != 0 {
			t.Fatalf("restore: exit %d: %s", code, stderr)
		}
		if want := fmt.Sprintf("restore r: %d records restored, ", len(recs)); !strings.HasPrefix(summaryLine(stdout), want) {
			t.Errorf("the summary is %q, want it to begin %q", summaryLine(stdout), want)
		}
		if want := fmt.Sprintf("  topic %s → %s: 3 partitions (4 in the backup), records spread over them by key (murmur2:3), at most 2,000 records\n    partition 0 → by key: ", src, dst); !strings.Contains(stdout, want) {
			t.Errorf("the plan does not say %q:\n%s", want, stdout)
		}
		check(t, dst)
		// The offset map: each target partition's records of a source
		// partition are a sparse range, its first and last offsets exact.
		_, file, _ := strings.Cut(stdout, "state and offset map: ")
		file, _, _ = strings.Cut(file, " ")
		_, desc, stderr := kpipe(t, "describe", "--restore-state", file)
		if want := fmt.Sprintf("    %s/0 offsets ", src); !strings.Contains(desc, want) || !strings.Contains(desc, "of them, by key) → offsets 0 to ") {
			t.Errorf("describe --restore-state does not show sparse ranges:\n%s%s", desc, stderr)
		}
	})
	t.Run("config", func(t *testing.T) {
		dst := testkit.Topic(t, "repartcfg")
		config := writeYAMLFile(t, fmt.Sprintf(`mode: restore
backup_id: r
storage: {backend: filesystem, path: %s}
target: {bootstrap_servers: [%s]}
restore:
  topic_mapping: {%s: %s}
  repartitioning:
    %s: {strategy: murmur2, target_partitions: 3}
`, path, addr, src, dst, dst))
		if code, _, stderr := kpipe(t, "restore", "--config", config, "--state-dir", t.TempDir()); code != 0 {
			t.Fatalf("restore: exit %d: %s", code, stderr)
		}
		check(t, dst)
	})
	t.Run("more partitions than it says", func(t *testing.T) {
		dst := testkit.Topic(t, "repartbig")
		testkit.CreateTopic(t, addr, dst, 5)
		code, _, stderr := kpipe(t, "restore", "--bootstrap-servers", addr, "--path", path, "--backup-id", "r", "--topic-mapping", src+"="+dst,
			"--repartitioning", dst+"=murmur2:3", "--state-dir", t.TempDir())
		want := fmt.Sprintf("target topic %q has 5 partitions, but repartitioning spreads its records over 3: a Kafka producer would pick partitions for their keys over all 5; nothing was written. Set target_partitions to 5, or restore into another topic", dst)
		if code != 1 || !strings.Contains(stderr, want) {
			t.Errorf("exit %d, stderr %s; want exit 1 and %q", code, stderr, want)
		}
		if n := len(testkit.ConsumeAll(t, addr, dst)); n != 0 {
			t.Errorf("the refused restore wrote %d records", n)
		}
	})
	code, _, stderr := kpipe(t, "restore", "--bootstrap-servers", addr, "--path", path, "--backup-id", "r", "--repartitioning", "x=murmur3:3")
	if want := `kpipe: --repartitioning x=murmur3:3: strategy "murmur3" is not known; use murmur2 (Kafka's default partitioner)`; code != exitBadInput || errorText(stderr) != want {
		t.Errorf("a bad repartitioning: exit %d, %q; want exit %d, %q", code, errorText(stderr), exitBadInput, want)
	}
}

// sameSet says whether a and b hold the same strings, in any order.
func sameSet(a, b []string) bool {
	return strings.Join(slices.Sorted(slices.Values(a)), ",") == strings.Join(slices.Sorted(slices.Values(b)), ",")
}
