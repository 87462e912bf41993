package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/internal/testkit"
	"github.com/kpipe/kpipe/sdk"
)

// TestBatchBytesIsWhatTheProducerCounts: a producer whose batch limit is
// batchBytes of a record sends it; one byte less, it refuses it as too
// large. So the sink's check before producing fails exactly the records
// the producer would.
func TestBatchBytesIsWhatTheProducerCounts(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "batchbytes")
	max := "33554432" // the broker takes every batch here: only the producer's limit is tested
	testkit.CreateTopicWithConfigs(t, addr, topic, 1, map[string]*string{"max.message.bytes": &max})
	hs := func(kv ...string) []kgo.RecordHeader {
		var out []kgo.RecordHeader
		for i := 0; i < len(kv); i += 2 {
			out = append(out, kgo.RecordHeader{Key: kv[i], Value: []byte(kv[i+1])})
		}
		return out
	}
	for _, r := range []*kgo.Record{
		{Key: nil, Value: bytes.Repeat([]byte("v"), 600)},
		{Key: []byte("key"), Value: bytes.Repeat([]byte("v"), 70_000), Headers: hs("a", "1", "bb", "")},
		{Key: bytes.Repeat([]byte("k"), 200), Value: bytes.Repeat([]byte("v"), 20_000_000), Headers: hs("h", string(bytes.Repeat([]byte("x"), 300)))},
	} {
		n := batchBytes(r.Key, r.Value, kgoHeaders(r.Headers))
		for _, limit := range []int64{n, n - 1} {
			cl := testkit.Client(t, addr, kgo.ProducerBatchMaxBytes(int32(limit)), kgo.RecordPartitioner(kgo.ManualPartitioner()),
				kgo.ProducerBatchCompression(kgo.NoCompression()))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			rec := &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
			err := cl.ProduceSync(ctx, rec).FirstErr()
			cancel()
			cl.Close()
			if limit == n && err != nil && !errors.Is(err, kerr.MessageTooLarge) {
				t.Fatal(err)
			}
			tooLarge := errors.Is(err, kerr.MessageTooLarge)
			if tooLarge != (limit < n) {
				t.Fatalf("record of %d key, %d value bytes: batchBytes %d, a producer limited to %d: error %v", len(r.Key), len(r.Value), n, limit, err)
			}
		}
	}
}

// TestCreateIsRefusedWhatTheClusterCannotHonour: the replication factor
// of a created topic is the backup's unless replication_factor says
// another; one larger than the cluster's brokers, one smaller than the
// backup's (or the cluster's default) min.insync.replicas, and a
// max.message.bytes (the backup's or the cluster's default) smaller than
// the largest record are refused, naming the setting.
func TestCreateIsRefusedWhatTheClusterCannotHonour(t *testing.T) {
	two := cluster{brokers: 2, defaultRF: 1, minISR: 1, maxMessage: 1048588}
	big := &sdk.LargestRecord{Topic: "src", Partition: 3, MinOffset: 7, MaxOffset: 7, Bytes: 2 << 20}
	for _, c := range []struct {
		rf   int
		meta sdk.TopicMetadata
		c    cluster
		want string
	}{
		{0, sdk.TopicMetadata{Name: "t", ReplicationFactor: 3}, two,
			`create target topic "t": replication factor 3 (the backup's) needs 3 brokers, the target cluster has 2: nothing was written; set replication_factor (--replication-factor) to 2 or less, or -1 for the broker default`},
		{0, sdk.TopicMetadata{Name: "t", ReplicationFactor: 2}, two, ""},
		{-1, sdk.TopicMetadata{Name: "t", ReplicationFactor: 3}, two, ""},
		{0, sdk.TopicMetadata{Name: "t"}, two, ""},
		{1, sdk.TopicMetadata{Name: "t", ReplicationFactor: 2, Configs: map[string]string{"min.insync.replicas": "2"}}, two,
			`create target topic "t": the backup's min.insync.replicas 2 is more than its replication factor 1 (replication_factor), so no write to it could ever be acknowledged: nothing was written; restore with a replication factor of at least 2 (--replication-factor), or create the topic yourself with the configs you want and restore into it`},
		{0, sdk.TopicMetadata{Name: "t", ReplicationFactor: 2, Configs: map[string]string{"min.insync.replicas": "2"}}, two, ""},
		{-1, sdk.TopicMetadata{Name: "t"}, cluster{brokers: 2, defaultRF: 1, minISR: 2},
			`create target topic "t": the cluster's default min.insync.replicas 2 is more than its replication factor 1 (the cluster's default), so no write to it could ever be acknowledged: nothing was written; restore with a replication factor of at least 2 (--replication-factor), or create the topic yourself with the configs you want and restore into it`},
		{0, sdk.TopicMetadata{Name: "t", LargestRecord: big}, two,
			`create target topic "t": the largest record the restore reads, src/3 at offset 7, is 2097152 bytes (key, value and headers), more than the topic would take (max.message.bytes 1048588, the cluster's default): nothing was written; create the topic yourself with max.message.bytes of at least 2098241 and restore into it`},
		{0, sdk.TopicMetadata{Name: "t", LargestRecord: big, Configs: map[string]string{"max.message.bytes": "3000000"}}, two, ""},
		{0, sdk.TopicMetadata{Name: "t", LargestRecord: big, Configs: map[string]string{"max.message.bytes": "2000000"}}, two,
			`create target topic "t": the largest record the restore reads, src/3 at offset 7, is 2097152 bytes (key, value and headers), more than the topic would take (max.message.bytes 2000000, the backup's): nothing was written; create the topic yourself with max.message.bytes of at least 2098241 and restore into it`},
		{0, sdk.TopicMetadata{Name: "t", LargestRecord: &sdk.LargestRecord{Topic: "src", Bytes: 200 << 20}, Configs: map[string]string{"max.message.bytes": "300000000"}}, two,
			`create target topic "t": the largest record the restore reads, src/0 at offset 0, is 209715200 bytes (key, value and headers), more than the topic would take (104856576 bytes, the most kpipe sends in one request): nothing was written; kpipe cannot restore a record that large; leave it out with source_partitions or a time window`},
		{0, sdk.TopicMetadata{Name: "t", LargestRecord: big}, cluster{brokers: 1}, ""}, // defaults unknown: checked once created
	} {
		s := &Sink{}
		s.cfg.ReplicationFactor = c.rf
		err := s.checkCreate(c.meta, c.c)
		if got := fmt.Sprint(err); (c.want == "" && err != nil) || (c.want != "" && got != c.want) {
			t.Errorf("replication_factor %d, %+v on %+v: %v\nwant %q", c.rf, c.meta, c.c, err, c.want)
		}
	}
}

// TestRetryBackoff: 10 ms after the first failure (or none), doubling to
// at most 1 s, each within a fifth.
func TestRetryBackoff(t *testing.T) {
	for tries, want := range map[int]time.Duration{-1: 10 * time.Millisecond, 0: 10 * time.Millisecond, 1: 10 * time.Millisecond, 2: 20 * time.Millisecond,
		5: 160 * time.Millisecond, 8: time.Second, 100: time.Second} {
		for range 50 {
			if got := retryBackoff(tries); got < want-want/5 || got > want+want/5 {
				t.Fatalf("retryBackoff(%d) = %s, want %s give or take a fifth", tries, got, want)
			}
		}
	}
}
