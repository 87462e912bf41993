package sdk

import (
	"bytes"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/kpipe/kpipe/internal/fuzzseed"
	pb "github.com/kpipe/kpipe/sdk/proto/kpipe/v2"
)

// FuzzHostMessages decodes the messages a plugin receives from the host
// on its Run stream (a sink's or transform's batch envelope or metadata, a
// source's credit and acks) and converts them as the SDK does: what
// converts back is what came in.
func FuzzHostMessages(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var sink pb.SinkRequest
		if proto.Unmarshal(data, &sink) == nil {
			in := inputFromProto(sink.GetBatch(), sink.GetMetadata())
			if b := sink.GetBatch(); b != nil && (len(b.GetTopicId()) == 0 || len(b.GetTopicId()) == 16) {
				// What the SDK does not read: fields it does not know, and
				// a topic id of zeros, which is no id.
				b.ProtoReflect().SetUnknown(nil)
				if bytes.Equal(b.GetTopicId(), make([]byte, 16)) {
					b.TopicId = nil
				}
				if back := EnvelopeToProto(*in.Batch); !proto.Equal(back, b) {
					t.Fatalf("envelope %v converts back to %v", b, back)
				}
			}
		}
		var tf pb.TransformRequest
		if proto.Unmarshal(data, &tf) == nil {
			inputFromProto(tf.GetBatch(), tf.GetMetadata())
		}
		var src pb.SourceRequest
		if proto.Unmarshal(data, &src) == nil {
			PositionsFromProto(src.GetAcked().GetPositions())
		}
	})
}

// TestWriteFuzzSeeds writes the host's messages as InputToProto and
// SourceControlToProto make them.
func TestWriteFuzzSeeds(t *testing.T) {
	fuzzseed.Writing(t)
	e := Envelope{Seq: 7, Part: 1, Topic: "orders", TopicID: TopicID{1, 2, 3}, Partition: 2, Count: 10, MinOffset: 100, MaxOffset: 109,
		MinTimestamp: 1_700_000_000_000, MaxTimestamp: 1_700_000_000_009, NextOffset: 110, Size: 4096, FrameBytes: 1024, MaxRecordBytes: 300}
	_, batch := InputToProto(Input{Batch: &e})
	m := Metadata{ClusterID: "c1", GroupsTakenAt: time.UnixMilli(1_700_000_000_000).UTC(),
		Groups: []GroupOffsets{{Group: "app", Offsets: []GroupOffset{{Topic: "orders", Partition: 0, Offset: 42, LeaderEpoch: 3, Metadata: "m"}}}},
		Topics: []TopicMetadata{{Name: "orders", Partitions: 3, ReplicationFactor: 1, Configs: map[string]string{"cleanup.policy": "delete"}, ReadPartitions: []int32{0, 2},
			LargestRecord: &LargestRecord{Topic: "orders", Partition: 1, MinOffset: 5, MaxOffset: 5, Bytes: 900}, Timestamps: &TimestampRange{Min: 1, Max: 2}}}}
	_, meta := InputToProto(Input{Metadata: &m})
	for name, msg := range map[string]proto.Message{"sink-batch": batch, "sink-metadata": meta} {
		data, err := proto.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		fuzzseed.Write(t, "FuzzHostMessages", name, data)
	}
	for i, msg := range SourceControlToProto(SourceControl{Acked: []Position{{Topic: "orders", Partition: 1, NextOffset: 50}}}) {
		data, err := proto.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		fuzzseed.Write(t, "FuzzHostMessages", "source-control-"+string(rune('a'+i)), data)
	}
}
