package main

import (
	"context"
	"encoding/json"
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
		in := sdk.Batch{Envelope: sdk.Envelope{Topic: c.topic, Partition: c.part, Count: 1}, Arrow: []byte{1, 2, 3}, Seq: 9}
		out, err := r.Process(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != 1 || out[0].Topic != c.wantTopic || out[0].Partition != c.wantPart || out[0].Seq != 9 || &out[0].Arrow[0] != &in.Arrow[0] {
			t.Fatalf("%s/%d became %+v, want %s/%d with the same bytes", c.topic, c.part, out, c.wantTopic, c.wantPart)
		}
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
