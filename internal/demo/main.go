// Command demo seeds and checks the data of `make demo` (scripts/demo.sh).
//
//	demo seed  --bootstrap ADDR --topic T --partitions N --records N
//	    creates T and produces keyed records with headers and timestamps
//	    spread over the last hour (some out of order), then prints a JSON
//	    object with a window in the middle and how many records fall in it.
//	demo count --bootstrap ADDR --topic T
//	    prints how many records T holds.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: demo seed|count [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	bootstrap := fs.String("bootstrap", "127.0.0.1:9092", "broker")
	topic := fs.String("topic", "demo-orders", "topic")
	partitions := fs.Int("partitions", 4, "partitions of the seeded topic")
	records := fs.Int("records", 5000, "records to produce")
	fs.Parse(os.Args[2:])
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(*bootstrap), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		fail(err)
	}
	defer cl.Close()
	switch os.Args[1] {
	case "seed":
		seed(ctx, cl, *topic, *partitions, *records)
	case "count":
		count(ctx, cl, *topic)
	default:
		fail(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}

func fail(err error) {
	slog.Error("demo", "error", err)
	os.Exit(1)
}

func seed(ctx context.Context, cl *kgo.Client, topic string, partitions, n int) {
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopic(ctx, int32(partitions), 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		fail(fmt.Errorf("create topic %s: %w", topic, err))
	}
	// Timestamps spread over the last hour in steps, every 13th record 90 s
	// earlier than its neighbours (producers' clocks and retries disorder
	// CreateTime).
	now := time.Now().UnixMilli()
	base := now - time.Hour.Milliseconds()
	step := time.Hour.Milliseconds() / int64(n)
	recs := make([]*kgo.Record, n)
	for i := range recs {
		ts := base + int64(i)*step
		if i%13 == 0 {
			ts -= 90_000
		}
		recs[i] = &kgo.Record{
			Topic:     topic,
			Partition: int32(i % partitions),
			Key:       []byte(fmt.Sprintf("customer-%d", i%97)),
			Value:     []byte(fmt.Sprintf(`{"order":%d,"amount":%d}`, i, 10+i%500)),
			Headers:   []kgo.RecordHeader{{Key: "source", Value: []byte("demo")}, {Key: "seq", Value: []byte(fmt.Sprint(i))}},
			Timestamp: time.UnixMilli(ts),
		}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		fail(err)
	}
	// The window: the middle 20 minutes.
	start, end := base+20*60_000, base+40*60_000
	in := 0
	for _, r := range recs {
		if ts := r.Timestamp.UnixMilli(); ts >= start && ts <= end {
			in++
		}
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"topic": topic, "records": n, "partitions": partitions,
		"window_start": start, "window_end": end, "records_in_window": in,
	})
}

func count(ctx context.Context, cl *kgo.Client, topic string) {
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		fail(err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		fail(err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) {
		s, _ := starts.Lookup(o.Topic, o.Partition)
		total += o.Offset - s.Offset
	})
	fmt.Println(total)
}
