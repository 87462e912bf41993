package main

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
)

func TestRemapRenamesTopicsAndMovesPartitions(t *testing.T) {
	r := New().(*Remap)
	js, _ := json.Marshal(map[string]any{"topic_mapping": map[string]string{"orders": "orders-restored"}, "partition_mapping": map[string]int{"1": 0, "2": 1}})
	if err := param.Decode(r.Spec().Config, js); err != nil {
		t.Fatal(err)
	}
	if err := r.Configure(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		topic     string
		part      int32
		wantTopic string
		wantPart  int32
	}{{"orders", 0, "orders-restored", 0}, {"orders", 1, "orders-restored", 0}, {"orders", 2, "orders-restored", 1}, {"payments", 3, "payments", 3}} {
		in := sdk.Envelope{Seq: 9, Topic: c.topic, Partition: c.part, Count: 1, MinOffset: 4, MaxOffset: 4, NextOffset: 5}
		out, keep, err := r.ProcessEnvelope(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		want := in
		want.Topic, want.Partition = c.wantTopic, c.wantPart
		if !keep || out != want {
			t.Fatalf("%s/%d became %+v (keep %v), want %+v", c.topic, c.part, out, keep, want)
		}
	}
	// The topics' metadata follows: renamed, with as many partitions as
	// the moved ones land in.
	m, err := r.ProcessMetadata(context.Background(), sdk.Metadata{Topics: []sdk.TopicMetadata{
		{Name: "orders", ID: sdk.TopicID{1}, Partitions: 3, ReplicationFactor: 3},
		{Name: "payments", ID: sdk.TopicID{2}, Partitions: 4},
	}})
	if err != nil {
		t.Fatal(err)
	}
	// orders: partitions 0 and 1 land in 0, 2 in 1; a renamed topic is a
	// new incarnation, so its ID goes. payments keeps its name and ID; its
	// partition 3 stays 3.
	got := fmt.Sprintf("%+v", m.Topics)
	if exp := "[{Name:orders-restored ID: Partitions:2 ReplicationFactor:3 Configs:map[] MinInsyncReplicas:0 LargestRecord:<nil> ReadPartitions:[] Timestamps:<nil>} {Name:payments ID:AgAAAAAAAAAAAAAAAAAAAA Partitions:4 ReplicationFactor:0 Configs:map[] MinInsyncReplicas:0 LargestRecord:<nil> ReadPartitions:[] Timestamps:<nil>}]"; got != exp {
		t.Fatalf("metadata %s\nwant     %s", got, exp)
	}
}

// TestRemapIsEnvelopeOnly: remap never receives batch bytes.
func TestRemapIsEnvelopeOnly(t *testing.T) {
	var tf sdk.Transform = New()
	if _, ok := tf.(sdk.EnvelopeTransform); !ok {
		t.Fatal("remap does not implement sdk.EnvelopeTransform: batch bytes would pass through it")
	}
}

func TestRemapRejectsBadMappings(t *testing.T) {
	r := New().(*Remap)
	js, _ := json.Marshal(map[string]any{"partition_mapping": map[string]int{"x": 0}})
	if err := param.Decode(r.Spec().Config, js); err != nil {
		t.Fatal(err)
	}
	err := r.Configure(context.Background())
	if err == nil || err.Error() != `parameter "partition_mapping": key "x" is not a partition number` {
		t.Fatalf("got %v", err)
	}
}
