//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/bench"
)

// ceilingRestoreMain is the restore ceiling: it creates a topic and writes
// the benchmark records into it with an idempotent franz-go producer
// (acks=all), regenerating them one by one instead of reading a backup, and
// prints what it wrote as JSON.
func ceilingRestoreMain(args []string) error {
	fs := flag.NewFlagSet("ceiling-restore", flag.ContinueOnError)
	var o ceilingRestoreOpts
	var shape string
	fs.StringVar(&o.bootstrap, "bootstrap", "127.0.0.1:9092", "Kafka broker host:port")
	fs.StringVar(&o.topic, "topic", "", "topic to create and fill (required)")
	fs.Int64Var(&o.records, "records", 0, "records to write (required)")
	fs.StringVar(&shape, "shape", string(bench.Fresh), "record shape: repetitive or fresh")
	fs.Int64Var(&o.gen.BaseMs, "base-ms", 0, "timestamp of record 0, epoch ms (required)")
	partitions := fs.Int("partitions", 1, "partitions of the topic")
	fs.BoolVar(&o.merge, "merge", false, "write every record to partition 0 of a topic of one partition, as a restore merging all partitions does")
	fs.IntVar(&o.repartition, "repartition", 0, "above 0: write to a topic of this many partitions, each record where franz-go's default partitioner puts its key, as a restore repartitioning by murmur2 does")
	fs.StringVar(&o.compression, "compression", "none", "producer batch compression: none, lz4, snappy or zstd")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if o.gen.Shape, err = bench.ParseShape(shape); err != nil {
		return err
	}
	o.gen.Partitions = int32(*partitions)
	if o.topic == "" || o.records <= 0 || o.gen.BaseMs <= 0 || o.gen.Partitions <= 0 {
		return errors.New("ceiling-restore: --topic, --records, --base-ms and --partitions must be set")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer startProfile()()
	topicPartitions, partitionOf := o.gen.Partitions, func(i int64, _ []byte) int32 { return o.gen.Partition(i) }
	if o.merge {
		topicPartitions, partitionOf = 1, func(int64, []byte) int32 { return 0 }
	}
	if o.repartition > 0 {
		byKey := kgo.StickyKeyPartitioner(nil).ForTopic(o.topic)
		topicPartitions = int32(o.repartition)
		partitionOf = func(_ int64, key []byte) int32 { return int32(byKey.Partition(&kgo.Record{Key: key}, o.repartition)) }
	}
	if err := createTopic(ctx, o.bootstrap, o.topic, topicPartitions, nil); err != nil {
		return err
	}
	codec, err := codecByName(o.compression)
	if err != nil {
		return err
	}
	n, err := produceRecords(ctx, o.bootstrap, o.topic, o.gen, partitionOf, 0, o.records, producerOpts(codec)...)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(ceilingResult{Records: n, BytesIn: n * int64(bench.RecordSize)})
}

type ceilingRestoreOpts struct {
	bootstrap, topic, compression string
	records                       int64
	gen                           bench.Gen
	merge                         bool
	repartition                   int
}

// codecByName returns the producer compression named by --compression.
func codecByName(name string) (kgo.CompressionCodec, error) {
	switch name {
	case "none":
		return kgo.NoCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("--compression %q: want none, lz4, snappy or zstd", name)
}

// producerOpts are the producer settings of the restore ceiling: franz-go's
// idempotent producer (acks=all) with large batches. A broker may answer
// NOT_LEADER_FOR_PARTITION for a moment after creating a topic; the short
// metadata age retries after 100 ms instead of franz-go's default 5 s.
func producerOpts(codec kgo.CompressionCodec) []kgo.Opt {
	return []kgo.Opt{
		kgo.MetadataMinAge(100 * time.Millisecond),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(codec),
		kgo.ProducerBatchMaxBytes(1 << 20),
		kgo.ProducerLinger(2 * time.Millisecond),
		kgo.MaxBufferedBytes(64 << 20),
	}
}

// createTopic creates a topic with the broker's replication factor, and
// waits until the metadata shows a leader for each of its partitions (a
// broker just started answers produce requests for a new topic with
// UNKNOWN_TOPIC_OR_PARTITION until then).
func createTopic(ctx context.Context, bootstrap, topic string, partitions int32, configs map[string]*string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopic(ctx, partitions, -1, configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		td, err := adm.ListTopics(ctx, topic)
		if err != nil {
			return fmt.Errorf("create topic %s: %w", topic, err)
		}
		if d := td[topic]; d.Err == nil && len(d.Partitions) == int(partitions) && allLed(d.Partitions) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("create topic %s: its partitions have no leader a minute after it was created", topic)
		}
	}
}

func allLed(ps kadm.PartitionDetails) bool {
	for _, p := range ps {
		if p.Err != nil || p.Leader < 0 {
			return false
		}
	}
	return true
}

// pooledRecord is a record and the memory of its key, value and header,
// reused once the broker has acknowledged it.
type pooledRecord struct {
	rec kgo.Record
	hdr [1]kgo.RecordHeader
	buf []byte
}

// produceRecords writes records [from, to) of g to topic, each to its own
// partition with its own timestamp, and waits until all are acknowledged.
func produceRecords(ctx context.Context, bootstrap, topic string, g bench.Gen, partition func(i int64, key []byte) int32, from, to int64, opts ...kgo.Opt) (int64, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(bootstrap),
		kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	}, opts...)...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	pool := sync.Pool{New: func() any { return &pooledRecord{buf: bench.NewBuf()} }}
	var firstErr atomic.Pointer[error]
	var acked atomic.Int64
	for i := from; i < to && firstErr.Load() == nil; i++ {
		pr := pool.Get().(*pooledRecord)
		key, value, hv := g.Fill(i, pr.buf)
		pr.hdr[0] = kgo.RecordHeader{Key: bench.HeaderKey, Value: hv}
		pr.rec = kgo.Record{Key: key, Value: value, Headers: pr.hdr[:], Partition: partition(i, key),
			Timestamp: time.UnixMilli(g.Timestamp(i))}
		cl.Produce(ctx, &pr.rec, func(_ *kgo.Record, err error) {
			if err != nil {
				firstErr.CompareAndSwap(nil, &err)
			} else {
				acked.Add(1)
			}
			pool.Put(pr)
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return acked.Load(), fmt.Errorf("produce to %s: %w", topic, err)
	}
	if e := firstErr.Load(); e != nil {
		return acked.Load(), fmt.Errorf("produce to %s: %w", topic, *e)
	}
	return acked.Load(), nil
}
