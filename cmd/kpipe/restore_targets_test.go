package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/internal/testkit"
)

// alterTopic sets topic configs.
func alterTopic(t *testing.T, addr, topic string, configs map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var alter []kadm.AlterConfig
	for k, v := range configs {
		alter = append(alter, kadm.AlterConfig{Op: kadm.SetConfig, Name: k, Value: &v})
	}
	resp, err := kadm.NewClient(testkit.Client(t, addr)).AlterTopicConfigs(ctx, alter, topic)
	if err == nil {
		_, err = resp.On(topic, nil)
	}
	if err != nil {
		t.Fatalf("alter topic %s: %v", topic, err)
	}
}

// TestBigRecordsRestoreAndOneTooBigFailsBeforeWriting: on fs and on s3,
// records of 5 MiB restore byte for byte into a topic the restore creates
// with the backup's max.message.bytes. Into a topic that takes 1 MiB the
// restore fails before it writes anything (a small record comes first),
// naming the largest record, its size and the limit; raised as the error
// says, the same restore then writes every record.
func TestBigRecordsRestoreAndOneTooBigFailsBeforeWriting(t *testing.T) {
	addr := testkit.Kafka(t)
	src := testkit.Topic(t, "bigrestore")
	testkit.CreateTopicWithConfigs(t, addr, src, 1, map[string]*string{"max.message.bytes": ptr(fmt.Sprint(8 << 20))})
	cl := testkit.Client(t, addr, kgo.ProducerBatchMaxBytes(8<<20), kgo.MaxBufferedBytes(64<<20))
	ts := time.Now().Add(-time.Hour).UnixMilli()
	var want []*kgo.Record
	add := func(key string, value []byte, headers ...kgo.RecordHeader) {
		want = append(want, &kgo.Record{Topic: src, Key: []byte(key), Value: value, Timestamp: time.UnixMilli(ts + int64(len(want))), Headers: headers})
	}
	add("small-first", []byte("a"), kgo.RecordHeader{Key: "h", Value: []byte("1")})
	for i := range 3 {
		add(fmt.Sprint("big", i), bytes.Repeat([]byte{byte('x' + i)}, 5<<20+i), kgo.RecordHeader{Key: "n", Value: []byte(fmt.Sprint(i))})
	}
	add("small-last", nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, r := range want { // a batch each
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	const largest = 4 + 5<<20 + 2 + 1 + 1 // big2: key, value, header
	eachStore(t, func(t *testing.T, st aStore) {
		if code, _, stderr := kpipe(t, append([]string{"backup", "--bootstrap-servers", addr, "--topics", src, "--path", st.path, "--backup-id", "b"}, st.flags...)...); code != 0 {
			t.Fatalf("backup: exit %d: %s", code, stderr)
		}
		restore := func(dst, state string) (int, string, string) {
			return kpipeWithin(t, 2*time.Minute, append([]string{"restore", "--bootstrap-servers", addr, "--path", st.path, "--backup-id", "b",
				"--topic-mapping", src + "=" + dst, "--state-dir", state}, st.flags...)...)
		}
		created := testkit.Topic(t, "bigcreated")
		code, stdout, stderr := restore(created, t.TempDir())
		if code != 0 {
			t.Fatalf("restore into a created topic: exit %d: %s", code, stderr)
		}
		if !strings.HasPrefix(summaryLine(stdout), "restore b: 5 records restored") {
			t.Fatalf("summary %q, want 5 records restored", summaryLine(stdout))
		}
		sameRecordsInOrder(t, "5 MiB records", testkit.ConsumeAll(t, addr, created), want)

		small := testkit.Topic(t, "bigsmall")
		testkit.CreateTopic(t, addr, small, 1)
		var where string
		for _, m := range testkit.ManifestsIn(t, testkit.Store(t, st.path), "b") {
			for _, e := range m.Entries {
				for _, bi := range e.Batches {
					if bi.MaxRecordBytes == largest {
						where = fmt.Sprintf("%s/0 at offset %d", src, bi.MinOffset)
						if bi.MaxOffset != bi.MinOffset {
							where = fmt.Sprintf("%s/0 in the batch of offsets %d to %d", src, bi.MinOffset, bi.MaxOffset)
						}
					}
				}
			}
		}
		need := 65 + 1024 + largest
		state := t.TempDir()
		code, stdout, stderr = restore(small, state)
		msg := fmt.Sprintf("the largest record the restore reads, %s, is %d bytes (key, value and headers), more than target topic %q takes (max.message.bytes 1048588): nothing was written; raise the topic's max.message.bytes to at least %d (its size and room for its batch's fields), then run the restore again",
			where, largest, small, need)
		if code != exitFailed || !strings.HasSuffix(errorText(stderr), msg) {
			t.Fatalf("restore into a topic of 1 MiB batches: exit %d, error %q\nwant exit 1 and an error ending in %q", code, errorText(stderr), msg)
		}
		if ends := testkit.EndOffsets(t, addr, small); fmt.Sprint(ends) != "[0]" {
			t.Fatalf("the failed restore left end offsets %v in the target, want [0]", ends)
		}
		if !strings.HasPrefix(summaryLine(stdout), "restore b: 0 records restored") {
			t.Fatalf("summary of the failed restore %q, want 0 records restored", summaryLine(stdout))
		}
		alterTopic(t, addr, small, map[string]string{"max.message.bytes": fmt.Sprint(need)})
		if code, _, stderr := restore(small, state); code != 0 {
			t.Fatalf("restore after raising max.message.bytes to %d: exit %d: %s", need, code, stderr)
		}
		sameRecordsInOrder(t, "after raising max.message.bytes", testkit.ConsumeAll(t, addr, small), want)
	})
}

// TestTargetTopicsAreCheckedBeforeWriting: a target with fewer partitions
// than the restore writes to is refused before anything is written
// without --create-topics, and grown with it; a restore of fewer source
// partitions into it needs only those. A target whose
// min.insync.replicas its replicas can never meet, a backup whose
// min.insync.replicas the created topic's replication factor cannot meet,
// and a replication factor the cluster has too few brokers for are each
// refused before anything is written.
func TestTargetTopicsAreCheckedBeforeWriting(t *testing.T) {
	addr := testkit.Kafka(t)
	src := testkit.Topic(t, "targets")
	ts := time.Now().Add(-time.Hour).UnixMilli()
	seedPartitions(t, addr, src, 3, 20, ts)
	path := t.TempDir()
	if code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", src, "--path", path, "--backup-id", "t"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	restore := func(dst string, extra ...string) (int, string) {
		t.Helper()
		code, _, stderr := kpipeWithin(t, time.Minute, append([]string{"restore", "--bootstrap-servers", addr, "--path", path, "--backup-id", "t",
			"--topic-mapping", src + "=" + dst, "--state-dir", t.TempDir()}, extra...)...)
		return code, errorText(stderr)
	}
	values := func(topic string) string {
		var out []string
		for _, r := range testkit.ConsumeAll(t, addr, topic) {
			out = append(out, fmt.Sprintf("%d:%s", r.Partition, r.Value))
		}
		return strings.Join(out, " ")
	}
	wantValues := func(parts ...int32) string {
		var out []string
		for _, p := range parts {
			for i := range 20 {
				out = append(out, fmt.Sprintf("%d:p%d-%d", p, p, i))
			}
		}
		return strings.Join(out, " ")
	}

	two := testkit.Topic(t, "twoparts")
	testkit.CreateTopic(t, addr, two, 2)
	code, msg := restore(two, "--create-topics=false")
	want := fmt.Sprintf("target topic %q has 2 partitions, the restore writes to partitions up to 2: nothing was written; add partitions to it (to 3), let the restore add them (create_topics = true, --create-topics), or move partitions with partition_mapping", two)
	if code != exitFailed || !strings.HasSuffix(msg, want) {
		t.Fatalf("too few partitions: exit %d, error %q\nwant exit 1 and an error ending in %q", code, msg, want)
	}
	if ends := testkit.EndOffsets(t, addr, two); fmt.Sprint(ends) != "[0 0]" {
		t.Fatalf("the refused restore left end offsets %v, want [0 0]", ends)
	}
	if code, msg := restore(two, "--create-topics=false", "--source-partitions", "0,1"); code != 0 {
		t.Fatalf("source partitions 0,1 into 2 partitions: exit %d: %s", code, msg)
	}
	if got := values(two); got != wantValues(0, 1) {
		t.Fatalf("source partitions 0,1 restored as\n%s\nwant\n%s", got, wantValues(0, 1))
	}

	grown := testkit.Topic(t, "grown")
	testkit.CreateTopic(t, addr, grown, 2)
	if code, msg := restore(grown); code != 0 {
		t.Fatalf("restore into 2 partitions with --create-topics: exit %d: %s", code, msg)
	}
	if got := values(grown); got != wantValues(0, 1, 2) {
		t.Fatalf("restored into a grown topic as\n%s\nwant\n%s", got, wantValues(0, 1, 2))
	}

	strict := testkit.Topic(t, "minisr")
	testkit.CreateTopicWithConfigs(t, addr, strict, 3, map[string]*string{"min.insync.replicas": ptr("2")})
	code, msg = restore(strict)
	want = fmt.Sprintf("target topic %q: its min.insync.replicas 2 is more than its 1 replicas, so no write to it can ever be acknowledged (acks=all): nothing was written; lower min.insync.replicas to 1 or less, or add replicas", strict)
	if code != exitFailed || !strings.HasSuffix(msg, want) {
		t.Fatalf("min.insync.replicas 2 on 1 replica: exit %d, error %q\nwant exit 1 and an error ending in %q", code, msg, want)
	}
	if ends := testkit.EndOffsets(t, addr, strict); fmt.Sprint(ends) != "[0 0 0]" {
		t.Fatalf("the refused restore left end offsets %v, want [0 0 0]", ends)
	}

	rf2 := testkit.Topic(t, "rf2")
	code, msg = restore(rf2, "--replication-factor", "2")
	want = fmt.Sprintf("create target topic %q: replication factor 2 (replication_factor) needs 2 brokers, the target cluster has 1: nothing was written; set replication_factor (--replication-factor) to 1 or less, or -1 for the broker default", rf2)
	if code != exitFailed || !strings.HasSuffix(msg, want) {
		t.Fatalf("--replication-factor 2 on one broker: exit %d, error %q\nwant exit 1 and an error ending in %q", code, msg, want)
	}
	if testkit.ListTopics(t, addr)[rf2] {
		t.Fatalf("the refused restore created %s", rf2)
	}

	// The backup of a topic with min.insync.replicas 2 (written with
	// acks=1), restored with its replication factor of 1.
	strictSrc := testkit.Topic(t, "minisrsrc")
	testkit.CreateTopicWithConfigs(t, addr, strictSrc, 1, map[string]*string{"min.insync.replicas": ptr("2")})
	cl := testkit.Client(t, addr, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: strictSrc, Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	strictPath := t.TempDir()
	if code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", strictSrc, "--path", strictPath, "--backup-id", "s"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	dst := testkit.Topic(t, "minisrdst")
	code, _, stderr := kpipeWithin(t, time.Minute, "restore", "--bootstrap-servers", addr, "--path", strictPath, "--backup-id", "s",
		"--topic-mapping", strictSrc+"="+dst, "--state-dir", t.TempDir())
	want = fmt.Sprintf("create target topic %q: the backup's min.insync.replicas 2 is more than its replication factor 1 (the backup's), so no write to it could ever be acknowledged: nothing was written; restore with a replication factor of at least 2 (--replication-factor), or create the topic yourself with the configs you want and restore into it", dst)
	if code != exitFailed || !strings.HasSuffix(errorText(stderr), want) {
		t.Fatalf("the backup's min.insync.replicas 2 on 1 replica: exit %d, error %q\nwant exit 1 and an error ending in %q", code, errorText(stderr), want)
	}
	if testkit.ListTopics(t, addr)[dst] {
		t.Fatalf("the refused restore created %s", dst)
	}
}
