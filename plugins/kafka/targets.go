package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kpipe/kpipe/sdk"
)

// What a target topic is checked for before a restore writes to it: its
// partitions, its replicas against min.insync.replicas (acks=all writes
// to a topic that can never have enough in-sync replicas would be retried
// for ever), and its max.message.bytes against the largest record the
// restore reads.

// targetTopic is what the sink knows of a target topic.
type targetTopic struct {
	exists     bool
	partitions int
	replicas   int   // of its first partition
	minISR     int   // min.insync.replicas in effect; 0 when unknown
	maxMessage int64 // max.message.bytes in effect; 0 when unknown
	// timestampType, cleanup and retention are message.timestamp.type,
	// cleanup.policy and retention.ms in effect ("" when unknown;
	// retention nil when unknown).
	timestampType string
	cleanup       string
	retention     *int64
}

// describeTopics looks at topics: two requests for all of them.
func describeTopics(ctx context.Context, adm *kadm.Client, names []string) (map[string]targetTopic, error) {
	out := make(map[string]targetTopic, len(names))
	if len(names) == 0 {
		return out, nil
	}
	details, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("describe the target topics: %w", err)
	}
	var existing []string
	for _, name := range names {
		d, ok := details[name]
		if !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
			out[name] = targetTopic{}
			continue
		}
		if d.Err != nil {
			return nil, fmt.Errorf("describe target topic %q: %w", name, d.Err)
		}
		t := targetTopic{exists: true, partitions: len(d.Partitions)}
		if p, ok := d.Partitions[0]; ok {
			t.replicas = len(p.Replicas)
		}
		out[name] = t
		existing = append(existing, name)
	}
	if len(existing) == 0 {
		return out, nil
	}
	configs, err := adm.DescribeTopicConfigs(ctx, existing...)
	if err != nil {
		return nil, fmt.Errorf("describe the target topics' configs: %w", err)
	}
	for _, name := range existing {
		rc, err := configs.On(name, nil)
		if err == nil {
			err = rc.Err
		}
		if err != nil {
			return nil, fmt.Errorf("describe the configs of target topic %q: %w", name, err)
		}
		t := out[name]
		for _, c := range rc.Configs {
			switch c.Key {
			case "min.insync.replicas":
				t.minISR, _ = strconv.Atoi(c.MaybeValue())
			case "max.message.bytes":
				t.maxMessage, _ = strconv.ParseInt(c.MaybeValue(), 10, 64)
			case "message.timestamp.type":
				t.timestampType = c.MaybeValue()
			case "cleanup.policy":
				t.cleanup = c.MaybeValue()
			case "retention.ms":
				if n, err := strconv.ParseInt(c.MaybeValue(), 10, 64); err == nil {
					t.retention = &n
				}
			}
		}
		out[name] = t
	}
	return out, nil
}

// checkTopics refuses, before anything is written, existing target topics
// the restore cannot write all of its records to: too few partitions when
// it may not add them, a min.insync.replicas their replicas can never
// meet, a record larger than they take.
func (s *Sink) checkTopics(topics []sdk.TopicMetadata, have map[string]targetTopic) error {
	for _, t := range topics {
		if err := s.checkTopic(t, have[t.Name]); err != nil {
			return err
		}
	}
	return nil
}

// checkTopic is checkTopics for one topic.
func (s *Sink) checkTopic(t sdk.TopicMetadata, tt targetTopic) error {
	if r, ok := s.m.Repartitioned(t.Name); ok && tt.partitions > int(r.Partitions) {
		return fmt.Errorf("target topic %q has %d partitions, but repartitioning spreads its records over %d: a Kafka producer would pick partitions for their keys over all %d; nothing was written. Set target_partitions to %d, or restore into another topic",
			t.Name, tt.partitions, r.Partitions, tt.partitions, tt.partitions)
	}
	if need := int(t.Needs()); tt.partitions < need && !s.cfg.CreateTopics {
		return fmt.Errorf("target topic %q has %d partitions, the restore writes to partitions up to %d: nothing was written; add partitions to it (to %d), let the restore add them (create_topics = true, --create-topics), or move partitions with partition_mapping",
			t.Name, tt.partitions, need-1, need)
	}
	if tt.minISR > tt.replicas && tt.replicas > 0 {
		return fmt.Errorf("target topic %q: its min.insync.replicas %d is more than its %d replicas, so no write to it can ever be acknowledged (acks=all): nothing was written; lower min.insync.replicas to %d or less, or add replicas",
			t.Name, tt.minISR, tt.replicas, tt.replicas)
	}
	if l := t.LargestRecord; l != nil && tt.maxMessage > 0 && minBatchBytes(l.Bytes) > batchLimit(tt.maxMessage) {
		return fmt.Errorf("the largest record the restore reads, %s, is %d bytes (key, value and headers), more than target topic %q takes (%s): nothing was written; %s",
			l.Where(), l.Bytes, t.Name, limitText(tt.maxMessage, ""), raiseText(tt.maxMessage, l.Bytes, "raise the topic's max.message.bytes to at least %d (its size and room for its batch's fields), then run the restore again"))
	}
	return nil
}

// targetWarnings are what a target topic does to the records restored to
// it that the user would not want, each with its fix: it does not stop the
// restore, which writes them before its first record.
func targetWarnings(t sdk.TopicMetadata, tt targetTopic, now time.Time) []string {
	var out []string
	if tt.timestampType == "LogAppendTime" {
		out = append(out, fmt.Sprintf("target topic %q has message.timestamp.type=LogAppendTime: the brokers give the restored records the time they are written, not their own timestamps; set message.timestamp.type=CreateTime on it before restoring to keep them", t.Name))
	}
	if r := tt.retention; r != nil && *r >= 0 && t.Timestamps != nil && t.Timestamps.Min < now.UnixMilli()-*r {
		age := now.UnixMilli() - t.Timestamps.Min
		need := (age/day + 2) * day // a day to spare
		out = append(out, fmt.Sprintf("target topic %q has retention.ms=%d, and the records restored to it have timestamps from %s on, older than that: the brokers delete them soon after they are written; raise retention.ms to at least %d (or -1: no limit) before restoring",
			t.Name, *r, time.UnixMilli(t.Timestamps.Min).UTC().Format(time.RFC3339), need))
	}
	if strings.Contains(tt.cleanup, "compact") && !strings.Contains(t.Configs["cleanup.policy"], "compact") {
		out = append(out, fmt.Sprintf("target topic %q has cleanup.policy=%s, but the backup is of a topic that was not compacted, which may hold records without keys: the brokers refuse those on a compacted topic, and the restore would stop part-way; set cleanup.policy=delete on the target, or restore into another topic", t.Name, tt.cleanup))
	}
	return out
}

const day = 24 * 60 * 60 * 1000 // in milliseconds

// limitText names the limit a topic whose max.message.bytes is maxMessage
// puts on a batch, and whose setting it is (empty: the topic's own).
func limitText(maxMessage int64, whose string) string {
	switch {
	case batchLimit(maxMessage) < maxMessage:
		return fmt.Sprintf("%d bytes, the most kpipe sends in one request", batchLimit(maxMessage))
	case whose == "":
		return fmt.Sprintf("max.message.bytes %d", maxMessage)
	}
	return fmt.Sprintf("max.message.bytes %d, %s", maxMessage, whose)
}

// raiseText is the fix for a record of n bytes that does not fit: fix,
// with %d for the max.message.bytes to set, or, when no setting can take
// it, the way around it.
func raiseText(maxMessage, n int64, fix string) string {
	if roomyBatchBytes(n) > wireLimit {
		return "kpipe cannot restore a record that large; leave it out with source_partitions or a time window"
	}
	return fmt.Sprintf(fix, roomyBatchBytes(n))
}

// replication is the replication factor of a topic the sink creates:
// replication_factor when set, else the backup's, else (-1) the broker
// default.
func (s *Sink) replication(t sdk.TopicMetadata) int {
	if rf := s.cfg.ReplicationFactor; rf != 0 {
		return rf
	}
	if t.ReplicationFactor > 0 {
		return int(t.ReplicationFactor)
	}
	return -1
}

// cluster is what the sink knows of the target cluster before it creates
// a topic: its brokers, and the defaults a new topic gets (0 when
// unknown: the broker configs may not be readable).
type cluster struct {
	brokers    int
	defaultRF  int
	minISR     int
	maxMessage int64
}

// describeCluster reads the target cluster's brokers and one broker's
// configs in effect.
func describeCluster(ctx context.Context, adm *kadm.Client) (cluster, error) {
	md, err := adm.BrokerMetadata(ctx)
	if err != nil {
		return cluster{}, fmt.Errorf("describe the target cluster: %w", err)
	}
	c := cluster{brokers: len(md.Brokers)}
	if len(md.Brokers) == 0 {
		return c, nil
	}
	rcs, err := adm.DescribeBrokerConfigs(ctx, md.Brokers[0].NodeID)
	if err != nil {
		sdk.Logger().Warn("cannot read the target cluster's broker configs; topics to create are checked once created", "error", err)
		return c, nil
	}
	for _, rc := range rcs {
		for _, cf := range rc.Configs {
			switch cf.Key {
			case "default.replication.factor":
				c.defaultRF, _ = strconv.Atoi(cf.MaybeValue())
			case "min.insync.replicas":
				c.minISR, _ = strconv.Atoi(cf.MaybeValue())
			case "message.max.bytes":
				c.maxMessage, _ = strconv.ParseInt(cf.MaybeValue(), 10, 64)
			}
		}
	}
	return c, nil
}

// checkCreate refuses to create a topic the restore could not write all
// of its records to: a replication factor the cluster has too few brokers
// for, a min.insync.replicas (the backup's, or the cluster's default) its
// replicas can never meet, a max.message.bytes (the same) its largest
// record does not fit.
func (s *Sink) checkCreate(t sdk.TopicMetadata, c cluster) error {
	rf := s.replication(t)
	whose := "the backup's"
	if s.cfg.ReplicationFactor != 0 {
		whose = "replication_factor"
	}
	if rf > c.brokers {
		return fmt.Errorf("create target topic %q: replication factor %d (%s) needs %d brokers, the target cluster has %d: nothing was written; set replication_factor (--replication-factor) to %d or less, or -1 for the broker default",
			t.Name, rf, whose, rf, c.brokers, c.brokers)
	}
	if rf < 0 {
		rf, whose = c.defaultRF, "the cluster's default"
	}
	minISR, from := c.minISR, "the cluster's default"
	if v, ok := t.Configs["min.insync.replicas"]; ok {
		minISR, from = atoi(v), "the backup's"
	}
	if rf > 0 && minISR > rf {
		return fmt.Errorf("create target topic %q: %s min.insync.replicas %d is more than its replication factor %d (%s), so no write to it could ever be acknowledged: nothing was written; restore with a replication factor of at least %d (--replication-factor), or create the topic yourself with the configs you want and restore into it",
			t.Name, from, minISR, rf, whose, minISR)
	}
	maxMessage, from := c.maxMessage, "the cluster's default"
	if v, ok := t.Configs["max.message.bytes"]; ok {
		maxMessage, from = int64(atoi(v)), "the backup's"
	}
	if l := t.LargestRecord; l != nil && maxMessage > 0 && minBatchBytes(l.Bytes) > batchLimit(maxMessage) {
		return fmt.Errorf("create target topic %q: the largest record the restore reads, %s, is %d bytes (key, value and headers), more than the topic would take (%s): nothing was written; %s",
			t.Name, l.Where(), l.Bytes, limitText(maxMessage, from), raiseText(maxMessage, l.Bytes, "create the topic yourself with max.message.bytes of at least %d and restore into it"))
	}
	return nil
}

// atoi is a config's number; 0 when it is none.
func atoi(v string) int {
	n, _ := strconv.Atoi(v)
	return n
}

// Producer batch limits. The producer counts a batch as its record batch
// header and records (recordBatchOverhead), a little more than the broker
// counts against max.message.bytes; a batch it may send is one the broker
// takes.
const (
	recordBatchOverhead = 65
	// defaultBatchBytes is the batch limit of a topic whose
	// max.message.bytes is unknown: the brokers' default.
	defaultBatchBytes = 1048588
	// wireLimit is the most a batch may hold: the producer's largest
	// request, less room for the request's own fields.
	wireLimit = 100<<20 - 1024
)

// batchLimit is the largest batch the producer sends to a topic whose
// max.message.bytes is maxMessage.
func batchLimit(maxMessage int64) int64 {
	return min(max(maxMessage, 512), wireLimit)
}

// minBatchBytes is the least a batch holding one record of n bytes (key,
// value and headers) takes: every record field's length at its shortest.
func minBatchBytes(n int64) int64 { return recordBatchOverhead + 7 + n }

// roomyBatchBytes is a batch limit that takes a record of n bytes (key,
// value and headers) with up to a hundred headers: the limit to advise
// when only n is known.
func roomyBatchBytes(n int64) int64 { return recordBatchOverhead + 1024 + n }

// batchBytes is what a batch holding only the record takes, as the
// producer counts it.
func batchBytes(key, value []byte, headers func(yield func(string, []byte) bool)) int64 {
	l := 1 + 1 + 1 + // attributes, timestamp delta, offset delta: 0 in a batch of one
		varintLen(int64(len(key))) + int64(len(key)) +
		varintLen(int64(len(value))) + int64(len(value))
	nh := int64(0)
	headers(func(k string, v []byte) bool {
		nh++
		l += varintLen(int64(len(k))) + int64(len(k)) + varintLen(int64(len(v))) + int64(len(v))
		return true
	})
	l += varintLen(nh)
	return recordBatchOverhead + varintLen(l) + l
}

// varintLen is the length of v as a zigzag varint.
func varintLen(v int64) int64 {
	u := uint64(v<<1) ^ uint64(v>>63)
	n := int64(1)
	for ; u >= 0x80; u >>= 7 {
		n++
	}
	return n
}

// batchLimits holds each target topic's batch limit, which the producer
// asks for (from its own goroutines) when it first writes to a topic.
type batchLimits struct {
	mu sync.Mutex
	m  map[string]int64
}

func (l *batchLimits) set(topic string, maxMessage int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]int64{}
	}
	l.m[topic] = batchLimit(maxMessage)
}

// of returns topic's batch limit, and whether it is known.
func (l *batchLimits) of(topic string) (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, ok := l.m[topic]
	if !ok {
		return defaultBatchBytes, false
	}
	return n, true
}

// producerLimit is of as the producer takes it.
func (l *batchLimits) producerLimit(topic string) int32 {
	n, _ := l.of(topic)
	return int32(n)
}

// errTooLarge names a record no batch the target topic takes can hold.
func errTooLarge(src sdk.TopicPartition, offset, size, need int64, topic string, limit int64) error {
	return fmt.Errorf("record %s/%d at offset %d is %d bytes (key, value and headers), %d as a batch of its own, more than target topic %q takes (%d bytes, its max.message.bytes): its batch was not written; raise the topic's max.message.bytes to at least %d, then run the restore again",
		src.Topic, src.Partition, offset, size, need, topic, limit, need)
}
