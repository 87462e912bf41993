package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/internal/testkit"
	"github.com/kpipe/kpipe/sdk/restore"
)

// groupData is a source topic whose records are "pP-I" (partition P, I-th
// record, timestamp ts + 10·I) and the consumer groups committed on it.
type groupData struct {
	addr, src, path string
	ts              int64
	per             int
}

func newGroupData(t *testing.T, partitions int32, per int) *groupData {
	t.Helper()
	d := &groupData{addr: testkit.Kafka(t), src: testkit.Topic(t, "grp"), path: t.TempDir(), ts: time.Now().Add(-time.Hour).UnixMilli(), per: per}
	testkit.CreateTopic(t, d.addr, d.src, partitions)
	var recs []*kgo.Record
	for p := range partitions {
		for i := range per {
			recs = append(recs, &kgo.Record{Topic: d.src, Partition: p, Key: fmt.Appendf(nil, "k%d-%d", p, i), Value: fmt.Appendf(nil, "p%d-%d", p, i), Timestamp: time.UnixMilli(d.ts + int64(i*10))})
		}
	}
	testkit.Produce(t, d.addr, recs)
	return d
}

// commit commits a group's offsets on topic, by partition, as a consumer
// that processed the records before them would.
func commit(t *testing.T, addr, group, topic string, offsets map[int32]int64) {
	t.Helper()
	var os kadm.Offsets
	for p, o := range offsets {
		os.Add(kadm.Offset{Topic: topic, Partition: p, At: o, LeaderEpoch: -1})
	}
	resp, err := kadm.NewClient(testkit.Client(t, addr)).CommitOffsets(context.Background(), group, os)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("commit offsets of %s: %v", group, err)
	}
}

// committedOffsets reads a group's committed offsets on topic.
func committedOffsets(t *testing.T, addr, group, topic string) map[int32]int64 {
	t.Helper()
	got, err := kadm.NewClient(testkit.Client(t, addr)).FetchOffsets(context.Background(), group)
	if err != nil {
		t.Fatalf("fetch offsets of %s: %v", group, err)
	}
	out := map[int32]int64{}
	got.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic && o.At >= 0 {
			out[o.Partition] = o.At
		}
	})
	return out
}

func (d *groupData) backup(t *testing.T, id string) {
	t.Helper()
	if code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", d.addr, "--topics", d.src, "--path", d.path, "--backup-id", id, "--consumer-group-snapshot"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
}

// values are the values "pP-I" of partition p for I in [from, to].
func values(p, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("p%d-%d", p, i))
	}
	return out
}

// consumeAsGroup reads topic as a member of group until it has want
// records, and a moment more to catch any beyond them; a partition the
// group has no offset on is read from its start. The values, by partition
// in the order read.
func consumeAsGroup(t *testing.T, addr, group, topic string, want int) map[int32][]string {
	t.Helper()
	cl := testkit.Client(t, addr, kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	defer cl.Close()
	got := map[int32][]string{}
	n := 0
	deadline := time.Now().Add(60 * time.Second)
	var extra time.Time
	for time.Now().Before(deadline) && (extra.IsZero() || time.Now().Before(extra)) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			got[r.Partition] = append(got[r.Partition], string(r.Value))
			n++
		})
		if n >= want && extra.IsZero() {
			extra = time.Now().Add(1500 * time.Millisecond)
		}
	}
	return got
}

func sameValues(t *testing.T, what string, got, want map[int32][]string) {
	t.Helper()
	for p := range want {
		if !slices.Equal(got[p], want[p]) {
			t.Errorf("%s: partition %d got %v\nwant %v", what, p, got[p], want[p])
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok && len(got[p]) > 0 {
			t.Errorf("%s: partition %d got %v, want nothing", what, p, got[p])
		}
	}
}

// TestResetAfterAPointInTimeRestore: a group that committed mid-stream on a
// 3-partition topic, a backup with the group snapshot, a point-in-time
// restore under a new name with reset_consumer_offsets: a consumer of the
// group on the target receives exactly the restored records it had not
// processed. Then the same with flags for a full restore after
// DeleteRecords moved the source's first offsets.
func TestResetAfterAPointInTimeRestore(t *testing.T) {
	d := newGroupData(t, 3, 30)
	group := "orders-app-" + d.src
	commit(t, d.addr, group, d.src, map[int32]int64{0: 10, 1: 25, 2: 3})
	commit(t, d.addr, "other-"+d.src, d.src, map[int32]int64{0: 1})
	d.backup(t, "g")
	dst := testkit.Topic(t, "grpdst")
	config := writeYAMLFile(t, fmt.Sprintf(`backup_id: g
storage: {backend: filesystem, path: %s}
target: {bootstrap_servers: [%s]}
restore:
  time_window_start: %d
  time_window_end: %d
  topic_mapping: {%s: %s}
  consumer_group_strategy: group-snapshot
  reset_consumer_offsets: true
  consumer_groups: [orders-app-*]
`, d.path, d.addr, d.ts+50, d.ts+250, d.src, dst))
	code, stdout, stderr := kpipe(t, "restore", "--config", config, "--state-dir", t.TempDir())
	if code != 0 {
		t.Fatalf("restore: exit %d: %s%s", code, stdout, stderr)
	}
	for _, want := range []string{
		fmt.Sprintf("phase 2, plan: 3 offset(s) of 1 group(s) by group-snapshot, computed in "),
		fmt.Sprintf("  group %s %s/0: none → 5 (the first record restored from %s/0 at or after its committed offset 10)\n", group, dst, d.src),
		fmt.Sprintf("  group %s %s/1: none → 20 (the first record restored from %s/1 at or after its committed offset 25)\n", group, dst, d.src),
		fmt.Sprintf("  group %s %s/2: none → 0 (the first record restored from %s/2 at or after its committed offset 3)\n", group, dst, d.src),
		"phase 3, execute: 3 offset(s) changed, 0 already as planned, read back and verified; the offsets replaced are in ",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the report lacks %q:\n%s", want, stdout)
		}
	}
	got := consumeAsGroup(t, d.addr, group, dst, 16+1+21)
	sameValues(t, "point-in-time restore", got, map[int32][]string{0: values(0, 10, 25), 1: values(1, 25, 25), 2: values(2, 5, 25)})
	if o := committedOffsets(t, d.addr, "other-"+d.src, dst); len(o) != 0 {
		t.Errorf("a group consumer_groups leaves out got offsets %v", o)
	}

	// A full restore after DeleteRecords: source offset 8 of partition 0
	// is the target's offset 0.
	d2 := newGroupData(t, 2, 20)
	adm := kadm.NewClient(testkit.Client(t, d2.addr))
	var del kadm.Offsets
	del.Add(kadm.Offset{Topic: d2.src, Partition: 0, At: 8})
	if resp, err := adm.DeleteRecords(context.Background(), del); err != nil || resp.Error() != nil {
		t.Fatalf("delete records: %v %v", err, resp.Error())
	}
	commit(t, d2.addr, group, d2.src, map[int32]int64{0: 12, 1: 20})
	d2.backup(t, "h")
	dst2 := testkit.Topic(t, "grpdst")
	code, stdout, stderr = kpipe(t, "restore", "--bootstrap-servers", d2.addr, "--path", d2.path, "--backup-id", "h", "--topic-mapping", d2.src+"="+dst2,
		"--state-dir", t.TempDir(), "--consumer-group-strategy", "group-snapshot", "--reset-consumer-offsets", "--consumer-groups", group)
	if code != 0 {
		t.Fatalf("restore with flags: exit %d: %s%s", code, stdout, stderr)
	}
	if want := fmt.Sprintf("  group %s %s/0: none → 4 (the first record restored from %s/0 at or after its committed offset 12)\n", group, dst2, d2.src); !strings.Contains(stdout, want) {
		t.Errorf("the report lacks %q:\n%s", want, stdout)
	}
	if want := fmt.Sprintf("  group %s %s/1: none → 20 (every record restored from %s/1 came before its committed offset 20: the end of what the restore wrote)\n", group, dst2, d2.src); !strings.Contains(stdout, want) {
		t.Errorf("the report lacks %q:\n%s", want, stdout)
	}
	got = consumeAsGroup(t, d2.addr, group, dst2, 8)
	sameValues(t, "full restore after DeleteRecords", got, map[int32][]string{0: values(0, 12, 19)})
}

// planOf reads a plan file.
func planOf(t *testing.T, file string) *restore.OffsetPlan {
	t.Helper()
	p, err := restore.LoadPlan(file)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAMergeLosesNothingAndCountsItsRepeats: two source partitions merged
// into one: the group resumes at the smallest of their positions, and
// what the plan says it reads again is what the consumer reads again.
func TestAMergeLosesNothingAndCountsItsRepeats(t *testing.T) {
	d := newGroupData(t, 2, 10)
	group := "merge-" + d.src
	commit(t, d.addr, group, d.src, map[int32]int64{0: 6, 1: 4})
	d.backup(t, "m")
	dst := testkit.Topic(t, "mergedst")
	config := writeYAMLFile(t, fmt.Sprintf(`backup_id: m
storage: {backend: filesystem, path: %s}
target: {bootstrap_servers: [%s]}
restore:
  topic_mapping: {%s: %s}
  partition_mapping: {1: 0}
  consumer_group_strategy: group-snapshot
`, d.path, d.addr, d.src, dst))
	state := t.TempDir()
	if code, _, stderr := kpipe(t, "restore", "--config", config, "--state-dir", state); code != 0 {
		t.Fatalf("restore: exit %d: %s", code, stderr)
	}
	if o := committedOffsets(t, d.addr, group, dst); len(o) != 0 {
		t.Fatalf("a restore without reset_consumer_offsets set offsets %v", o)
	}
	planFile := filepath.Join(t.TempDir(), "plan.json")
	code, stdout, stderr := kpipe(t, "offset-reset", "plan", "--config", config, "--state-dir", state, "--output", planFile)
	if code != 0 {
		t.Fatalf("plan: exit %d: %s", code, stderr)
	}
	plan := planOf(t, planFile)
	if len(plan.Partitions) != 1 {
		t.Fatalf("plan %+v, want one offset", plan.Partitions)
	}
	c := plan.Partitions[0]
	// Partition 0's records are at target offsets 0-9, partition 1's at
	// 10-19: 6 and 14; the group resumes at 6 and reads 1/0-3 again.
	if c.NewOffset != 6 || c.Repeats != 4 || !c.RepeatsExact || c.CurrentOffset != nil {
		t.Fatalf("plan %+v, want offset 6 with 4 repeats", c)
	}
	if want := fmt.Sprintf("  group %s %s/0: none → 6, 4 record(s) read again (2 source partitions write here (%s/0 at 6, %s/1 at 4): the smallest of their positions, which loses nothing; the group reads 4 record(s) again)\n", group, dst, d.src, d.src); !strings.Contains(stdout, want) {
		t.Errorf("plan printed\n%s\nwant the line %q", stdout, want)
	}
	if code, _, stderr := kpipe(t, "offset-reset", "execute", "--config", config, "--plan", planFile); code != 0 {
		t.Fatalf("execute: exit %d: %s", code, stderr)
	}
	got := consumeAsGroup(t, d.addr, group, dst, 4+10)
	want := append(values(0, 6, 9), values(1, 0, 9)...)
	sameValues(t, "merge", got, map[int32][]string{0: want})
	again := 0
	for _, v := range got[0] {
		if slices.Contains(values(1, 0, 3), v) {
			again++
		}
	}
	if int64(again) != c.Repeats {
		t.Errorf("the consumer read %d records again, the plan said %d", again, c.Repeats)
	}
}

// TestPlanExecuteRollback: plan then execute sets what three-phase-restore
// sets; execute refuses a group with an active member, naming it, and
// changes nothing; a second execute changes nothing; rollback puts back
// the offsets it replaced, none where there were none; the JSON plan has
// the documented fields.
func TestPlanExecuteRollback(t *testing.T) {
	d := newGroupData(t, 2, 10)
	group := "pe-" + d.src
	commit(t, d.addr, group, d.src, map[int32]int64{0: 3, 1: 7})
	d.backup(t, "p")
	dstA, dstB := testkit.Topic(t, "peA"), testkit.Topic(t, "peB")
	config := func(dst string) string {
		return writeYAMLFile(t, fmt.Sprintf(`backup_id: p
storage: {backend: filesystem, path: %s}
target: {bootstrap_servers: [%s]}
restore:
  topic_mapping: {%s: %s}
  consumer_group_strategy: group-snapshot
`, d.path, d.addr, d.src, dst))
	}
	// Three phases into A; run again, each phase says an earlier run did
	// it; with --fresh the restore appends a second copy (A allows it),
	// and the plan is made anew, for it.
	stateA := t.TempDir()
	cfgA := writeYAMLFile(t, fmt.Sprintf(`backup_id: p
storage: {backend: filesystem, path: %s}
target: {bootstrap_servers: [%s]}
restore:
  topic_mapping: {%s: %s}
  allow_nonempty_target: true
  consumer_group_strategy: group-snapshot
`, d.path, d.addr, d.src, dstA))
	if code, stdout, stderr := kpipe(t, "three-phase-restore", "--config", cfgA, "--state-dir", stateA); code != 0 {
		t.Fatalf("three-phase-restore: exit %d: %s%s", code, stdout, stderr)
	}
	three := committedOffsets(t, d.addr, group, dstA)
	code, stdout, stderr := kpipe(t, "three-phase-restore", "--config", cfgA, "--state-dir", stateA)
	if code != 0 || !strings.Contains(stdout, "already finished") || !strings.Contains(stdout, "by group-snapshot, taken from an earlier run in ") ||
		!strings.Contains(stdout, "phase 3, execute: 0 offset(s) changed, 2 already as planned, read back and verified") {
		t.Errorf("three-phase-restore again: exit %d:\n%s%s\nwant each phase done before", code, stdout, stderr)
	}
	code, stdout, stderr = kpipe(t, "three-phase-restore", "--config", cfgA, "--state-dir", stateA, "--fresh")
	if code != 0 || !strings.Contains(stdout, "by group-snapshot, computed in ") {
		t.Errorf("three-phase-restore --fresh: exit %d:\n%s%s\nwant a plan made anew", code, stdout, stderr)
	}
	if got := committedOffsets(t, d.addr, group, dstA); !maps.Equal(got, map[int32]int64{0: 13, 1: 17}) {
		t.Errorf("after --fresh the group has %v, want 0:13 1:17, in the second copy", got)
	}

	// Restore, plan and execute into B; the group already has an offset
	// on partition 0 there, and none on 1.
	stateB := t.TempDir()
	if code, _, stderr := kpipe(t, "restore", "--config", config(dstB), "--state-dir", stateB); code != 0 {
		t.Fatalf("restore: exit %d: %s", code, stderr)
	}
	commit(t, d.addr, group, dstB, map[int32]int64{0: 9})
	planFile := filepath.Join(t.TempDir(), "plan.json")
	code, stdout, stderr = kpipe(t, "offset-reset", "plan", "--config", config(dstB), "--state-dir", stateB, "--output", planFile, "--format", "json")
	if code != 0 {
		t.Fatalf("plan: exit %d: %s", code, stderr)
	}
	var doc struct {
		Partitions []map[string]any `json:"partitions"`
	}
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil || len(doc.Partitions) != 2 {
		t.Fatalf("plan JSON %v: %s", err, stdout)
	}
	for _, k := range []string{"group", "topic", "partition", "current_offset", "new_offset", "sources", "strategy", "reason", "repeats"} {
		if _, ok := doc.Partitions[0][k]; !ok {
			t.Errorf("the plan's partitions lack %q: %v", k, doc.Partitions[0])
		}
	}
	if doc.Partitions[0]["current_offset"] != 9.0 || doc.Partitions[1]["current_offset"] != nil {
		t.Errorf("current offsets %v and %v, want 9 and null", doc.Partitions[0]["current_offset"], doc.Partitions[1]["current_offset"])
	}

	// An active member stops the execution before anything changes.
	member := testkit.Client(t, d.addr, kgo.ConsumerGroup(group), kgo.ConsumeTopics(dstB), kgo.ClientID("busy-app"), kgo.DisableAutoCommit())
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		member.PollFetches(ctx)
		cancel()
		described, err := kadm.NewClient(testkit.Client(t, d.addr)).DescribeGroups(context.Background(), group)
		if err == nil && len(described[group].Members) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the consumer did not join %s", group)
		}
	}
	code, _, stderr = kpipe(t, "offset-reset", "execute", "--config", config(dstB), "--plan", planFile)
	if want := fmt.Sprintf("group %q has 1 active member(s): ", group); code != 1 || !strings.Contains(stderr, want) || !strings.Contains(stderr, "(client busy-app on ") || !strings.Contains(stderr, "stop its consumers first (nothing was changed)") {
		t.Errorf("execute with an active member: exit %d, stderr:\n%s\nwant exit 1 naming the member", code, stderr)
	}
	if _, err := os.Stat(restore.RollbackFile(planFile)); err == nil {
		t.Errorf("the refused execution kept a rollback file")
	}
	member.Close()

	if got := committedOffsets(t, d.addr, group, dstB); !maps.Equal(got, map[int32]int64{0: 9}) {
		t.Fatalf("after the refused execution the group has %v, want 0:9", got)
	}
	var res restore.OffsetResult
	for i := range 2 {
		code, stdout, stderr = kpipe(t, "offset-reset", "execute", "--config", config(dstB), "--plan", planFile, "--format", "json")
		if code != 0 {
			t.Fatalf("execute %d: exit %d: %s", i+1, code, stderr)
		}
		res = restore.OffsetResult{}
		if err := json.Unmarshal([]byte(stdout), &res); err != nil {
			t.Fatal(err)
		}
		if wantChanged := []int{2, 0}[i]; len(res.Changed) != wantChanged || res.Unchanged != 2-wantChanged || !res.Verified {
			t.Errorf("execute %d: %+v, want %d changed, verified", i+1, res, wantChanged)
		}
	}
	if got := committedOffsets(t, d.addr, group, dstB); !maps.Equal(got, three) || !maps.Equal(got, map[int32]int64{0: 3, 1: 7}) {
		t.Errorf("plan then execute set %v, three-phase-restore %v; want both 0:3 1:7", got, three)
	}
	code, stdout, stderr = kpipe(t, "offset-reset", "rollback", "--config", config(dstB), "--plan", planFile)
	if code != 0 {
		t.Fatalf("rollback: exit %d: %s", code, stderr)
	}
	if want := "offset-reset rollback: 2 offset(s) changed, 0 already as planned, read back and verified\n"; !strings.HasPrefix(stdout, want) {
		t.Errorf("rollback printed\n%s\nwant it to begin %q", stdout, want)
	}
	if got := committedOffsets(t, d.addr, group, dstB); !maps.Equal(got, map[int32]int64{0: 9}) {
		t.Errorf("after the rollback the group has %v, want 0:9 and nothing on 1", got)
	}
}

// TestEachStrategy: header-based gives what group-snapshot gives, from
// the target's records alone; timestamp equals Kafka's own
// offsets-for-times; cluster-scan takes the offsets the groups have now on
// the source cluster, not the snapshot's; manual takes the offsets listed,
// and refuses one outside its partition.
func TestEachStrategy(t *testing.T) {
	d := newGroupData(t, 2, 20)
	group := "app-" + d.src
	commit(t, d.addr, group, d.src, map[int32]int64{0: 5, 1: 12})
	d.backup(t, "s")
	commit(t, d.addr, group, d.src, map[int32]int64{0: 15, 1: 18}) // after the backup
	config := func(dst, extra string) string {
		return writeYAMLFile(t, fmt.Sprintf(`backup_id: s
storage: {backend: filesystem, path: %s}
target: {bootstrap_servers: [%s]}
restore:
  topic_mapping: {%s: %s}
%s`, d.path, d.addr, d.src, dst, extra))
	}
	plan := func(t *testing.T, cfg, state string, flags ...string) *restore.OffsetPlan {
		t.Helper()
		file := filepath.Join(t.TempDir(), "plan.json")
		if code, _, stderr := kpipe(t, append([]string{"offset-reset", "plan", "--config", cfg, "--state-dir", state, "--output", file}, flags...)...); code != 0 {
			t.Fatalf("plan %v: exit %d: %s", flags, code, stderr)
		}
		return planOf(t, file)
	}
	offsets := func(p *restore.OffsetPlan) string {
		var out []string
		for _, c := range p.Partitions {
			var srcs []string
			for _, s := range c.Sources {
				srcs = append(srcs, fmt.Sprintf("%d@%d", s.Partition, s.Offset))
			}
			out = append(out, fmt.Sprintf("%s %d→%d from %s by %s", c.Group, c.Partition, c.NewOffset, strings.Join(srcs, ","), c.Strategy))
		}
		return strings.Join(out, "; ")
	}

	t.Run("header-based", func(t *testing.T) {
		dst := testkit.Topic(t, "hdr")
		cfg := config(dst, fmt.Sprintf("  time_window_start: %d\n  time_window_end: %d\n  include_original_offset_header: true\n  consumer_group_strategy: header-based\n", d.ts+30, d.ts+150))
		state := t.TempDir()
		if code, _, stderr := kpipe(t, "restore", "--config", cfg, "--state-dir", state); code != 0 {
			t.Fatalf("restore: exit %d: %s", code, stderr)
		}
		// Records 3 to 15 of each partition are restored: 5 is at 2, 12 at 9.
		want := fmt.Sprintf("%s 0→2 from 0@5 by header-based; %s 1→9 from 1@12 by header-based", group, group)
		if got := offsets(plan(t, cfg, t.TempDir())); got != want { // no state: the headers alone
			t.Errorf("header-based: %s\nwant %s", got, want)
		}
		snapshot := plan(t, cfg, state, "--strategy", "group-snapshot")
		if got, want := offsets(snapshot), strings.ReplaceAll(want, "header-based", "group-snapshot"); got != want {
			t.Errorf("group-snapshot: %s\nwant %s", got, want)
		}
		// Without the headers, header-based says what it needs.
		plain := testkit.Topic(t, "nohdr")
		cfg = config(plain, "  consumer_group_strategy: header-based\n")
		if code, _, stderr := kpipe(t, "restore", "--config", cfg, "--state-dir", t.TempDir()); code != 0 {
			t.Fatalf("restore: exit %d: %s", code, stderr)
		}
		code, _, stderr := kpipe(t, "offset-reset", "plan", "--config", cfg, "--output", filepath.Join(t.TempDir(), "p.json"))
		if want := fmt.Sprintf("target record %s/0 offset 0 has no x-original-partition and x-original-offset headers: the header-based strategy needs a restore made with include_original_offset_header (--include-original-offset-header); use group-snapshot otherwise", plain); code != 1 || !strings.Contains(stderr, want) {
			t.Errorf("header-based without headers: exit %d, stderr:\n%s\nwant exit 1 and %q", code, stderr, want)
		}
	})

	dst := testkit.Topic(t, "full")
	state := t.TempDir()
	if code, _, stderr := kpipe(t, "restore", "--config", config(dst, ""), "--state-dir", state); code != 0 {
		t.Fatalf("restore: exit %d: %s", code, stderr)
	}

	t.Run("timestamp", func(t *testing.T) {
		at := d.ts + 75
		p := plan(t, config(dst, "  consumer_group_strategy: timestamp\n"), state, "--timestamp", fmt.Sprint(at), "--groups", "ts-app")
		listed, err := kadm.NewClient(testkit.Client(t, d.addr)).ListOffsetsAfterMilli(context.Background(), at, dst)
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		listed.Each(func(l kadm.ListedOffset) {
			want = append(want, fmt.Sprintf("ts-app %d→%d from  by timestamp", l.Partition, l.Offset))
		})
		slices.Sort(want)
		if got := offsets(p); got != strings.Join(want, "; ") || !strings.Contains(got, "0→8") {
			t.Errorf("timestamp: %s\nwant Kafka's %s (record 8 is the first at or after the time)", got, strings.Join(want, "; "))
		}
		if p.Timestamp == nil || *p.Timestamp != at {
			t.Errorf("the plan's timestamp is %v, want %d", p.Timestamp, at)
		}
	})

	t.Run("cluster-scan", func(t *testing.T) {
		cfg := config(dst, fmt.Sprintf("  consumer_group_strategy: cluster-scan\n  consumer_groups: [%s]\n  source_cluster: {bootstrap_servers: [%s]}\n", group, d.addr))
		want := fmt.Sprintf("%s 0→15 from 0@15 by cluster-scan; %s 1→18 from 1@18 by cluster-scan", group, group)
		if got := offsets(plan(t, cfg, state)); got != want {
			t.Errorf("cluster-scan: %s\nwant %s", got, want)
		}
	})

	t.Run("manual", func(t *testing.T) {
		cfg := config(dst, fmt.Sprintf("  consumer_group_strategy: manual\n  manual_offsets:\n    - {group: ops, topic: %s, partition: 1, offset: 7}\n", dst))
		if got, want := offsets(plan(t, cfg, state)), "ops 1→7 from  by manual"; got != want {
			t.Errorf("manual: %s\nwant %s", got, want)
		}
		cfg = config(dst, fmt.Sprintf("  consumer_group_strategy: manual\n  manual_offsets:\n    - {group: ops, topic: %s, partition: 1, offset: 21}\n", dst))
		code, _, stderr := kpipe(t, "offset-reset", "plan", "--config", cfg, "--state-dir", state, "--output", filepath.Join(t.TempDir(), "p.json"))
		if want := fmt.Sprintf(`parameter "manual_offsets": ops:%s:1:21: offset 21 is outside %s/1, which holds offsets 0 to 19 (the end, 20, resumes after its last record)`, dst, dst); code == 0 || !strings.Contains(stderr, want) {
			t.Errorf("a manual offset past the end: exit %d, stderr:\n%s\nwant %q", code, stderr, want)
		}
	})
}

// TestOffsetResetRefusals: what the offset commands refuse, each with the
// fix: a plan before the restore ran, a snapshot strategy on a backup
// without one, a strategy missing what it needs, skip, a missing flag.
func TestOffsetResetRefusals(t *testing.T) {
	d := newGroupData(t, 1, 5)
	if code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", d.addr, "--topics", d.src, "--path", d.path, "--backup-id", "n"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	dst := testkit.Topic(t, "refdst")
	cfg := writeYAMLFile(t, fmt.Sprintf(`backup_id: n
storage: {backend: filesystem, path: %s}
target: {bootstrap_servers: [%s]}
restore:
  topic_mapping: {%s: %s}
  consumer_group_strategy: group-snapshot
`, d.path, d.addr, d.src, dst))
	out := filepath.Join(t.TempDir(), "plan.json")
	state := t.TempDir()
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"offset-reset", "plan", "--config", cfg, "--state-dir", state, "--output", out}, 1, "no restore state at " + state},
		{[]string{"offset-reset", "plan", "--config", cfg, "--output", out, "--strategy", "skip"}, 2, "kpipe: consumer_group_strategy (--consumer-group-strategy) is skip, which sets no offset: pick one of group-snapshot, header-based, timestamp, cluster-scan, manual"},
		{[]string{"offset-reset", "plan", "--config", cfg, "--output", out, "--strategy", "timestamp"}, 2, "kpipe: the timestamp strategy needs the time to put the groups at: set offset_reset_timestamp (--timestamp), epoch milliseconds or ISO-8601"},
		{[]string{"offset-reset", "plan", "--config", cfg, "--output", out, "--strategy", "cluster-scan"}, 2, "kpipe: the cluster-scan strategy reads the groups' offsets from the live source cluster: set source_cluster.bootstrap_servers (--source-cluster-bootstrap-servers)"},
		{[]string{"offset-reset", "plan", "--config", cfg, "--output", out, "--strategy", "manual"}, 2, "kpipe: the manual strategy takes the offsets listed: set manual_offsets (--manual-offset GROUP:TOPIC:PARTITION:OFFSET)"},
		{[]string{"offset-reset", "plan", "--config", cfg, "--output", out, "--strategy", "latest"}, 2, `kpipe: consumer_group_strategy (--consumer-group-strategy): "latest" is not a strategy; use one of skip, group-snapshot, header-based, timestamp, cluster-scan, manual`},
		{[]string{"offset-reset", "plan", "--config", cfg}, 2, "kpipe: missing required flag(s) --output; see --help"},
		{[]string{"offset-reset", "execute", "--config", cfg, "--plan", out}, 2, "kpipe: --plan " + out + ": stat " + out + ": no such file or directory"},
		{[]string{"offset-reset", "rollback", "--plan", out}, 2, "kpipe: missing required flag(s) --config; see --help"},
		{[]string{"restore", "--bootstrap-servers", d.addr, "--path", d.path, "--backup-id", "n", "--reset-consumer-offsets"}, 2, "kpipe: consumer_group_strategy (--consumer-group-strategy) is skip, which sets no offset: pick one of group-snapshot, header-based, timestamp, cluster-scan, manual"},
		{[]string{"restore", "--bootstrap-servers", d.addr, "--path", d.path, "--backup-id", "n", "--consumer-group-strategy", "timestamp", "--offset-reset-timestamp", "1731236400"}, 2, "kpipe: --offset-reset-timestamp 1731236400 looks like epoch seconds, not milliseconds: read as milliseconds it is 1970-01-21T00:53:56.4Z, as seconds 2024-11-10T11:00:00Z; use 13-digit epoch milliseconds: 1731236400000"},
		{[]string{"three-phase-restore", "--config", writeYAMLFile(t, fmt.Sprintf("backup_id: n\nstorage: {backend: filesystem, path: %s}\ntarget: {bootstrap_servers: [%s]}\nrestore: {}\n", d.path, d.addr))}, 2, "kpipe: consumer_group_strategy (--consumer-group-strategy) is skip, which sets no offset: pick one of group-snapshot, header-based, timestamp, cluster-scan, manual"},
	} {
		code, _, stderr := kpipe(t, c.args...)
		got := errorText(stderr)
		if c.code == 1 {
			got = stderr
		}
		if code != c.code || (c.code == 2 && got != c.want) || (c.code == 1 && !strings.Contains(got, c.want)) {
			t.Errorf("%v: exit %d, %q\nwant exit %d, %q", c.args[:2], code, got, c.code, c.want)
		}
	}
	// A restore, then a plan: the backup holds no snapshot.
	if code, _, stderr := kpipe(t, "restore", "--config", cfg, "--state-dir", state); code != 0 {
		t.Fatalf("restore: exit %d: %s", code, stderr)
	}
	code, _, stderr := kpipe(t, "offset-reset", "plan", "--config", cfg, "--state-dir", state, "--output", out)
	if want := `backup "n" holds no consumer group snapshot, which the group-snapshot strategy reads: take backups with consumer_group_snapshot: true (--consumer-group-snapshot), or pick another strategy`; code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("no snapshot: exit %d, stderr:\n%s\nwant exit 1 and %q", code, stderr, want)
	}
	// A plan made for another cluster is not executed on this one.
	other := filepath.Join(t.TempDir(), "other.json")
	if err := restore.WriteJSON(other, restore.OffsetPlan{Version: restore.PlanVersion, BootstrapServers: []string{"elsewhere:9092"}, Groups: []string{"g"},
		Partitions: []restore.OffsetChange{{Group: "g", Topic: dst, Partition: 0, NewOffset: 1}}}); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = kpipe(t, "offset-reset", "execute", "--config", cfg, "--plan", other)
	if want := fmt.Sprintf("the plan %s is for the cluster at elsewhere:9092, not %s: make the plan with this config", other, d.addr); code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("a plan of another cluster: exit %d, stderr:\n%s\nwant exit 1 and %q", code, stderr, want)
	}
	if got := committedOffsets(t, d.addr, "g", dst); len(got) != 0 {
		t.Errorf("the plan of another cluster set %v", got)
	}
}

// TestThreePhaseRestoreSurvivesSIGKILLInEachPhase: a three-phase restore
// killed in its restore, its plan or its execution, then run again, ends
// with the records and the committed offsets of one never interrupted.
func TestThreePhaseRestoreSurvivesSIGKILLInEachPhase(t *testing.T) {
	d := newGroupData(t, 2, 2000)
	group := "tp-" + d.src
	commit(t, d.addr, group, d.src, map[int32]int64{0: 700, 1: 1500})
	d.backup(t, "k")
	config := func(dst string) string {
		return writeYAMLFile(t, fmt.Sprintf(`backup_id: k
storage: {backend: filesystem, path: %s}
target: {bootstrap_servers: [%s]}
restore:
  topic_mapping: {%s: %s}
  rate_limit_records_per_sec: 2500
  consumer_group_strategy: group-snapshot
  reset_consumer_offsets: true
`, d.path, d.addr, d.src, dst))
	}
	outcome := func(dst string) string {
		var parts []string
		byPart := map[int32][]string{}
		for _, r := range testkit.ConsumeAll(t, d.addr, dst) {
			byPart[r.Partition] = append(byPart[r.Partition], string(r.Value))
		}
		for p := int32(0); p < 2; p++ {
			parts = append(parts, fmt.Sprintf("p%d: %d records, first %s, last %s", p, len(byPart[p]), byPart[p][0], byPart[p][len(byPart[p])-1]))
			if !slices.Equal(byPart[p], values(int(p), 0, d.per-1)) {
				parts = append(parts, fmt.Sprintf("p%d is not the source's records in order", p))
			}
		}
		return fmt.Sprintf("%s; offsets %v", strings.Join(parts, "; "), committedOffsets(t, d.addr, group, dst))
	}
	base := testkit.Topic(t, "tpbase")
	if code, _, stderr := kpipe(t, "three-phase-restore", "--config", config(base), "--state-dir", t.TempDir()); code != 0 {
		t.Fatalf("three-phase-restore: exit %d: %s", code, stderr)
	}
	want := outcome(base)
	if !strings.HasSuffix(want, "offsets map[0:700 1:1500]") {
		t.Fatalf("the uninterrupted run ended with %s", want)
	}
	for _, phase := range []string{"restore", "plan", "execute"} {
		t.Run(phase, func(t *testing.T) {
			dst, state := testkit.Topic(t, "tpkill"), t.TempDir()
			cfg := config(dst)
			cmd := exec.Command(testkit.KpipeBinary(t), "--plugin-dir", testkit.PluginDir(t), "three-phase-restore", "--config", cfg, "--state-dir", state)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			restored := make(chan struct{})
			go func() {
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					if strings.HasPrefix(sc.Text(), "restore k: ") {
						close(restored)
					}
				}
			}()
			switch phase {
			case "restore":
				time.Sleep(time.Second) // 2,500 of 4,000 records a second
			case "plan":
				select {
				case <-restored: // the restore's summary: the plan comes next
				case <-time.After(time.Minute):
					t.Fatal("the restore did not end")
				}
			case "execute":
				deadline := time.Now().Add(time.Minute)
				for !exists(t, state, ".offsets-plan.json") && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
			}
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			err = cmd.Wait()
			if err == nil {
				t.Logf("the run ended before the kill in phase %s", phase)
			}
			t.Logf("killed in phase %s: %d records in the target, plan written %v, offsets %v", phase, len(testkit.ConsumeAll(t, d.addr, dst)),
				exists(t, state, ".offsets-plan.json"), committedOffsets(t, d.addr, group, dst))
			if code, out, errText := kpipe(t, "three-phase-restore", "--config", cfg, "--state-dir", state); code != 0 {
				t.Fatalf("the run after the kill: exit %d: %s%s", code, out, errText)
			}
			if got := outcome(dst); got != strings.ReplaceAll(want, base, dst) {
				t.Errorf("killed in phase %s, then run again: %s\nwant %s", phase, got, want)
			}
		})
	}
}

// exists says whether dir holds a file whose name ends with suffix.
func exists(t *testing.T, dir, suffix string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), suffix) {
			return true
		}
	}
	return false
}

// TestRestoreOffsetFlags: kpipe restore's offset flags, each used: the
// manual strategy's --manual-offset, the timestamp strategy's
// --offset-reset-timestamp as ISO-8601, cluster-scan's
// --source-cluster-bootstrap-servers; the JSON report of the phases.
func TestRestoreOffsetFlags(t *testing.T) {
	d := newGroupData(t, 2, 10)
	group := "flags-" + d.src
	commit(t, d.addr, group, d.src, map[int32]int64{0: 2, 1: 3})
	d.backup(t, "f")
	commit(t, d.addr, group, d.src, map[int32]int64{0: 6}) // after the backup
	restoreWith := func(dst string, flags ...string) map[string]any {
		t.Helper()
		args := append([]string{"restore", "--bootstrap-servers", d.addr, "--path", d.path, "--backup-id", "f", "--topic-mapping", d.src + "=" + dst,
			"--state-dir", t.TempDir(), "--reset-consumer-offsets", "--format", "json"}, flags...)
		code, stdout, stderr := kpipe(t, args...)
		if code != 0 {
			t.Fatalf("restore %v: exit %d: %s", flags, code, stderr)
		}
		var out map[string]any
		if err := json.Unmarshal([]byte(stdout), &out); err != nil {
			t.Fatalf("restore %v: %v\n%s", flags, err, stdout)
		}
		return out
	}
	dst := testkit.Topic(t, "manual")
	out := restoreWith(dst, "--consumer-group-strategy", "manual", "--manual-offset", "ops:"+dst+":1:4,ops:"+dst+":0:9")
	if got := committedOffsets(t, d.addr, "ops", dst); !maps.Equal(got, map[int32]int64{0: 9, 1: 4}) {
		t.Errorf("--manual-offset set %v, want 0:9 1:4", got)
	}
	var names []string
	for _, p := range out["phases"].([]any) {
		names = append(names, p.(map[string]any)["phase"].(string))
	}
	if !slices.Equal(names, []string{"restore", "plan", "execute"}) || out["offset_result"].(map[string]any)["verified"] != true || out["summary"].(map[string]any)["records_restored"] != 20.0 {
		t.Errorf("JSON report: phases %v, offset_result %v, summary %v", names, out["offset_result"], out["summary"])
	}
	if f, _ := out["offset_plan_file"].(string); !strings.HasSuffix(f, ".offsets-plan.json") || planOf(t, f).Strategy != "manual" {
		t.Errorf("offset_plan_file %q", f)
	}

	dst = testkit.Topic(t, "ts")
	restoreWith(dst, "--consumer-group-strategy", "timestamp", "--offset-reset-timestamp", time.UnixMilli(d.ts+45).UTC().Format(time.RFC3339Nano), "--consumer-groups", "ts-app")
	if got := committedOffsets(t, d.addr, "ts-app", dst); !maps.Equal(got, map[int32]int64{0: 5, 1: 5}) {
		t.Errorf("--offset-reset-timestamp set %v, want 0:5 1:5", got)
	}

	dst = testkit.Topic(t, "scan")
	restoreWith(dst, "--consumer-group-strategy", "cluster-scan", "--source-cluster-bootstrap-servers", d.addr, "--consumer-groups", "flags-*")
	if got := committedOffsets(t, d.addr, group, dst); !maps.Equal(got, map[int32]int64{0: 6, 1: 3}) {
		t.Errorf("cluster-scan set %v, want the source's 0:6 1:3", got)
	}
}
