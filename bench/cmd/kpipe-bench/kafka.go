//go:build linux

package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/bench"
)

// broker is the harness's own connection to the benchmark broker.
type broker struct {
	addr string
	cl   *kgo.Client
	adm  *kadm.Client
}

func dialBroker(ctx context.Context, addr string) (*broker, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return nil, err
	}
	b := &broker{addr: addr, cl: cl, adm: kadm.NewClient(cl)}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := cl.Ping(ctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("broker %s does not answer: %w (start one with `KAFKA_PORT=... scripts/kafka.sh up`)", addr, err)
	}
	return b, nil
}

func (b *broker) close() { b.cl.Close() }

// versionGuess is franz-go's guess of the broker's Kafka version from the
// API versions it supports.
func (b *broker) versionGuess(ctx context.Context) string {
	vs, err := b.adm.ApiVersions(ctx)
	if err != nil {
		return "unknown"
	}
	for _, v := range vs {
		if v.Err == nil {
			return v.VersionGuess()
		}
	}
	return "unknown"
}

// seed creates topic and fills it with n records of g as fast as a franz-go
// producer can (lz4-compressed batches, as producers commonly send them).
func (b *broker) seed(ctx context.Context, topic string, g bench.Gen, n int64) error {
	never := "-1"
	if err := createTopic(ctx, b.addr, topic, g.Partitions, map[string]*string{"retention.ms": &never}); err != nil {
		return err
	}
	got, err := produceRecords(ctx, b.addr, topic, g, func(i int64, _ []byte) int32 { return g.Partition(i) }, 0, n,
		kgo.MetadataMinAge(100*time.Millisecond), // see producerOpts
		kgo.ProducerBatchCompression(kgo.Lz4Compression()),
		kgo.ProducerBatchMaxBytes(1<<20),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.MaxBufferedBytes(128<<20))
	if err != nil {
		return err
	}
	return b.expectCount(ctx, topic, got, n)
}

// count returns how many records topic holds: the sum over its partitions
// of end minus start offsets.
func (b *broker) count(ctx context.Context, topic string) (int64, int, error) {
	starts, err := b.adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return 0, 0, fmt.Errorf("start offsets of %s: %w", topic, err)
	}
	ends, err := b.adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, 0, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	var total int64
	parts := 0
	ends.Each(func(e kadm.ListedOffset) {
		s, _ := starts.Lookup(topic, e.Partition)
		total += e.Offset - s.Offset
		parts++
	})
	return total, parts, nil
}

// expectCount fails unless topic holds exactly want records.
func (b *broker) expectCount(ctx context.Context, topic string, acked, want int64) error {
	got, parts, err := b.count(ctx, topic)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("topic %s holds %d records in %d partitions (%d acknowledged), want %d", topic, got, parts, acked, want)
	}
	return nil
}

// drain reads topic from start to end once with a plain consumer: the
// untimed warm-up of the broker's read path.
func (b *broker) drain(ctx context.Context, topic string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	ranges, err := partitionRanges(ctx, b.addr, topic)
	if err != nil {
		return 0, err
	}
	offsets := map[int32]kgo.Offset{}
	ends := map[int32]int64{}
	for p, r := range ranges {
		if r[1] > r[0] {
			offsets[p], ends[p] = kgo.NewOffset().At(r[0]), r[1]
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.addr),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(16<<20))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	var n int64
	for len(ends) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return n, fmt.Errorf("warm-up read of %s: %w", topic, err)
		}
		if err := fetchErr(fs); err != nil {
			return n, err
		}
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			n += int64(len(fp.Records))
			if k := len(fp.Records); k > 0 && fp.Records[k-1].Offset+1 >= ends[fp.Partition] {
				delete(ends, fp.Partition)
			}
		})
	}
	return n, nil
}

// deleteTopics deletes the named topics that exist.
func (b *broker) deleteTopics(ctx context.Context, topics ...string) error {
	if len(topics) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	resp, err := b.adm.DeleteTopics(ctx, topics...)
	if err != nil {
		return err
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil && !strings.Contains(r.Err.Error(), "UNKNOWN_TOPIC") {
			return fmt.Errorf("delete topic %s: %w", r.Topic, r.Err)
		}
	}
	return nil
}

// dropTopic deletes topic and waits until the broker no longer lists it,
// then a moment more (longer for more partitions) for the broker to close
// its logs: deleting a topic is work for the broker, which would otherwise
// slow down whichever run comes next.
func (b *broker) dropTopic(ctx context.Context, topic string, partitions int32) error {
	if err := b.deleteTopics(ctx, topic); err != nil {
		return err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		td, err := b.adm.ListTopics(ctx, topic)
		if err != nil {
			return err
		}
		if d, ok := td[topic]; !ok || d.Err != nil { // UNKNOWN_TOPIC_OR_PARTITION: gone
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topic %s still listed a minute after its deletion", topic)
		}
		time.Sleep(100 * time.Millisecond)
	}
	settle := 500*time.Millisecond + time.Duration(partitions)*10*time.Millisecond
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(settle):
		return nil
	}
}

// topicsWithPrefix lists the topics whose names start with prefix.
func (b *broker) topicsWithPrefix(ctx context.Context, prefix string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	td, err := b.adm.ListTopics(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, name := range td.Names() {
		if strings.HasPrefix(name, prefix) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out, nil
}
