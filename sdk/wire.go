package sdk

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pb "github.com/kpipe/kpipe/sdk/proto/kpipe/v2"
	"github.com/kpipe/kpipe/sdk/record"
)

// Handshake is the go-plugin handshake shared by the host and every plugin.
// A binary started without the magic cookie says it is a plugin and exits.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "KPIPE_PLUGIN",
	MagicCookieValue: "7d5bf0a4-kpipe-plugin-protocol",
}

// PluginKey is the name under which a plugin process serves its services.
const PluginKey = "kpipe"

// The environment through which the host sets up a plugin process.
const (
	// KindEnv tells a binary that serves several kinds which one to serve:
	// source, transform or sink. Without it, a binary serves the first
	// kind given to Serve.
	KindEnv = "KPIPE_PLUGIN_KIND"
	// LinkFDEnv names the file descriptor of the plugin's link socket, a
	// Unix socket over which the host hands it the ends of its data links.
	LinkFDEnv = "KPIPE_LINK_FD"
	// LinkTLSEnv, set to 1, makes the plugin secure its data links with
	// mutual TLS (a certificate per process, each peer pinned by the host).
	LinkTLSEnv = "KPIPE_LINK_TLS"
)

// MaxMessageBytes caps one gRPC message on both sides of a plugin link. The
// control plane carries envelopes, not batches, but a storage read may send
// large chunks.
const MaxMessageBytes = 64 << 20

// GRPCOptions are the gRPC server options every plugin process uses.
func GRPCOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(MaxMessageBytes), grpc.MaxSendMsgSize(MaxMessageBytes)}
}

// DialOptions are the gRPC dial options the host uses towards plugins.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithDefaultCallOptions(
		grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes))}
}

// ClientPlugin is the host's side of the go-plugin link: dispensing it yields
// the *grpc.ClientConn to the plugin process.
type ClientPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	register func(*grpc.Server)
}

// GRPCServer registers the plugin's services (plugin side).
func (p *ClientPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	p.register(s)
	return nil
}

// GRPCClient returns the connection itself (host side).
func (p *ClientPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return c, nil
}

// EnvelopeToProto converts an Envelope to its wire form.
func EnvelopeToProto(e Envelope) *pb.Envelope {
	p := &pb.Envelope{
		Seq: e.Seq, Part: e.Part, Topic: e.Topic, Partition: e.Partition,
		Count: e.Count, MinOffset: e.MinOffset, MaxOffset: e.MaxOffset,
		MinTimestamp: e.MinTimestamp, MaxTimestamp: e.MaxTimestamp, NextOffset: e.NextOffset,
		Size: e.Size, FrameBytes: e.FrameBytes, Traceparent: e.Traceparent, Tracestate: e.Tracestate,
		MaxRecordBytes: e.MaxRecordBytes, Gap: e.Gap,
	}
	if e.TopicID != (TopicID{}) {
		p.TopicId = append([]byte(nil), e.TopicID[:]...)
	}
	return p
}

// EnvelopeFromProto converts a wire envelope.
func EnvelopeFromProto(p *pb.Envelope) Envelope {
	e := Envelope{
		Seq: p.GetSeq(), Part: p.GetPart(), Topic: p.GetTopic(), Partition: p.GetPartition(),
		Count: p.GetCount(), MinOffset: p.GetMinOffset(), MaxOffset: p.GetMaxOffset(),
		MinTimestamp: p.GetMinTimestamp(), MaxTimestamp: p.GetMaxTimestamp(), NextOffset: p.GetNextOffset(),
		Size: p.GetSize(), FrameBytes: p.GetFrameBytes(), Traceparent: p.GetTraceparent(), Tracestate: p.GetTracestate(),
		MaxRecordBytes: p.GetMaxRecordBytes(), Gap: p.GetGap(),
	}
	copy(e.TopicID[:], p.GetTopicId())
	return e
}

// PositionsToProto converts positions to their wire form.
func PositionsToProto(ps []Position) []*pb.Position {
	out := make([]*pb.Position, len(ps))
	for i, p := range ps {
		out[i] = &pb.Position{Topic: p.Topic, Partition: p.Partition, NextOffset: p.NextOffset}
		if p.TopicID != (TopicID{}) {
			out[i].TopicId = append([]byte(nil), p.TopicID[:]...)
		}
	}
	return out
}

// PositionsFromProto converts wire positions to Positions.
func PositionsFromProto(ps []*pb.Position) []Position {
	out := make([]Position, len(ps))
	for i, p := range ps {
		out[i] = Position{Topic: p.GetTopic(), Partition: p.GetPartition(), NextOffset: p.GetNextOffset()}
		copy(out[i].TopicID[:], p.GetTopicId())
	}
	return out
}

// MetadataToProto converts metadata to its wire form.
func MetadataToProto(m Metadata) *pb.Metadata {
	out := &pb.Metadata{ClusterId: m.ClusterID}
	if !m.GroupsTakenAt.IsZero() {
		out.GroupsTakenAtMs = m.GroupsTakenAt.UnixMilli()
	}
	for _, g := range m.Groups {
		pg := &pb.GroupOffsets{Group: g.Group}
		for _, o := range g.Offsets {
			pg.Offsets = append(pg.Offsets, &pb.GroupOffset{Topic: o.Topic, Partition: o.Partition, Offset: o.Offset, LeaderEpoch: o.LeaderEpoch, Metadata: o.Metadata})
		}
		out.Groups = append(out.Groups, pg)
	}
	for _, t := range m.Topics {
		pt := &pb.TopicMetadata{Name: t.Name, Partitions: t.Partitions, ReplicationFactor: t.ReplicationFactor, Configs: t.Configs,
			MinInsyncReplicas: t.MinInsyncReplicas}
		if t.ID != (TopicID{}) {
			pt.TopicId = append([]byte(nil), t.ID[:]...)
		}
		pt.ReadPartitions = t.ReadPartitions
		if l := t.LargestRecord; l != nil {
			pt.LargestRecord = &pb.LargestRecord{Topic: l.Topic, Partition: l.Partition, MinOffset: l.MinOffset, MaxOffset: l.MaxOffset, Bytes: l.Bytes}
		}
		if r := t.Timestamps; r != nil {
			pt.Timestamps = &pb.TimestampRange{Min: r.Min, Max: r.Max}
		}
		out.Topics = append(out.Topics, pt)
	}
	return out
}

// MetadataFromProto converts wire metadata.
func MetadataFromProto(p *pb.Metadata) Metadata {
	m := Metadata{ClusterID: p.GetClusterId()}
	if ms := p.GetGroupsTakenAtMs(); ms != 0 {
		m.GroupsTakenAt = time.UnixMilli(ms).UTC()
	}
	for _, g := range p.GetGroups() {
		og := GroupOffsets{Group: g.GetGroup()}
		for _, o := range g.GetOffsets() {
			og.Offsets = append(og.Offsets, GroupOffset{Topic: o.GetTopic(), Partition: o.GetPartition(), Offset: o.GetOffset(),
				LeaderEpoch: o.GetLeaderEpoch(), Metadata: o.GetMetadata()})
		}
		m.Groups = append(m.Groups, og)
	}
	for _, t := range p.GetTopics() {
		tm := TopicMetadata{Name: t.GetName(), Partitions: t.GetPartitions(), ReplicationFactor: t.GetReplicationFactor(), Configs: t.GetConfigs(),
			MinInsyncReplicas: t.GetMinInsyncReplicas()}
		copy(tm.ID[:], t.GetTopicId())
		tm.ReadPartitions = t.GetReadPartitions()
		if l := t.GetLargestRecord(); l != nil {
			tm.LargestRecord = &LargestRecord{Topic: l.GetTopic(), Partition: l.GetPartition(), MinOffset: l.GetMinOffset(), MaxOffset: l.GetMaxOffset(), Bytes: l.GetBytes()}
		}
		if r := t.GetTimestamps(); r != nil {
			tm.Timestamps = &TimestampRange{Min: r.GetMin(), Max: r.GetMax()}
		}
		m.Topics = append(m.Topics, tm)
	}
	return m
}

// PartitionErrorToProto converts a partition error to its wire form.
func PartitionErrorToProto(e *PartitionError) *pb.PartitionError {
	msg := ""
	if e.Err != nil {
		msg = e.Err.Error()
	}
	return &pb.PartitionError{Topic: e.Topic, Partition: e.Partition, Offset: e.Offset,
		Retryable: e.Retryable, Code: e.Code, Message: msg}
}

// PartitionErrorFromProto converts a wire partition error.
func PartitionErrorFromProto(p *pb.PartitionError) *PartitionError {
	return &PartitionError{Topic: p.GetTopic(), Partition: p.GetPartition(), Offset: p.GetOffset(),
		Retryable: p.GetRetryable(), Code: p.GetCode(), Err: errors.New(p.GetMessage())}
}

// EventToProto converts the events of sources, transforms and sinks.
func EventToProto(ev Event) (src *pb.SourceEvent, tf *pb.TransformEvent, sink *pb.SinkEvent) {
	var metrics *pb.Metrics
	if ev.Metrics != nil {
		metrics = &pb.Metrics{Counters: ev.Metrics}
		for _, m := range ev.PartitionMetrics {
			metrics.Partitions = append(metrics.Partitions, &pb.PartitionMetric{Topic: m.Topic, Partition: m.Partition, Name: m.Name, Value: m.Value})
		}
	}
	var meta *pb.Metadata
	if ev.Metadata != nil {
		meta = MetadataToProto(*ev.Metadata)
	}
	var perr *pb.PartitionError
	if ev.Error != nil {
		perr = PartitionErrorToProto(ev.Error)
	}
	switch {
	case ev.Spans != nil:
		sp := &pb.Spans{TracesData: ev.Spans}
		return &pb.SourceEvent{Event: &pb.SourceEvent_Spans{Spans: sp}},
			&pb.TransformEvent{Event: &pb.TransformEvent_Spans{Spans: sp}},
			&pb.SinkEvent{Event: &pb.SinkEvent_Spans{Spans: sp}}
	case ev.Batch != nil:
		return &pb.SourceEvent{Event: &pb.SourceEvent_Batch{Batch: EnvelopeToProto(*ev.Batch)}}, nil, nil
	case ev.End:
		return &pb.SourceEvent{Event: &pb.SourceEvent_End{End: &pb.End{}}}, nil, nil
	case ev.Result != nil:
		r := &pb.TransformResult{Seq: ev.Result.Seq, Part: ev.Result.Part}
		for _, o := range ev.Result.Outputs {
			r.Outputs = append(r.Outputs, EnvelopeToProto(o))
		}
		return nil, &pb.TransformEvent{Event: &pb.TransformEvent_Result{Result: r}}, nil
	case ev.Released != nil:
		return nil, nil, &pb.SinkEvent{Event: &pb.SinkEvent_Released{Released: &pb.BatchRefs{Seqs: ev.Released}}}
	case ev.Acked != nil:
		return nil, nil, &pb.SinkEvent{Event: &pb.SinkEvent_Acked{Acked: &pb.BatchRefs{Seqs: ev.Acked}}}
	case meta != nil:
		return &pb.SourceEvent{Event: &pb.SourceEvent_Metadata{Metadata: meta}},
			&pb.TransformEvent{Event: &pb.TransformEvent_Metadata{Metadata: meta}}, nil
	case perr != nil:
		return &pb.SourceEvent{Event: &pb.SourceEvent_Error{Error: perr}},
			&pb.TransformEvent{Event: &pb.TransformEvent_Error{Error: perr}},
			&pb.SinkEvent{Event: &pb.SinkEvent_Error{Error: perr}}
	case metrics != nil:
		return &pb.SourceEvent{Event: &pb.SourceEvent_Metrics{Metrics: metrics}},
			&pb.TransformEvent{Event: &pb.TransformEvent_Metrics{Metrics: metrics}},
			&pb.SinkEvent{Event: &pb.SinkEvent_Metrics{Metrics: metrics}}
	}
	return nil, nil, nil
}

// SourceEventFromProto converts a wire source event.
func SourceEventFromProto(p *pb.SourceEvent) Event {
	switch e := p.GetEvent().(type) {
	case *pb.SourceEvent_Batch:
		env := EnvelopeFromProto(e.Batch)
		return Event{Batch: &env}
	case *pb.SourceEvent_End:
		return Event{End: true}
	case *pb.SourceEvent_Spans:
		return Event{Spans: e.Spans.GetTracesData()}
	}
	return commonEvent(p.GetMetadata(), p.GetError(), p.GetMetrics())
}

// TransformEventFromProto converts a wire transform event.
func TransformEventFromProto(p *pb.TransformEvent) Event {
	if r := p.GetResult(); r != nil {
		res := &Result{Seq: r.GetSeq(), Part: r.GetPart()}
		for _, o := range r.GetOutputs() {
			res.Outputs = append(res.Outputs, EnvelopeFromProto(o))
		}
		return Event{Result: res}
	}
	if sp := p.GetSpans(); sp != nil {
		return Event{Spans: sp.GetTracesData()}
	}
	return commonEvent(p.GetMetadata(), p.GetError(), p.GetMetrics())
}

// SinkEventFromProto converts a wire sink event.
func SinkEventFromProto(p *pb.SinkEvent) Event {
	switch e := p.GetEvent().(type) {
	case *pb.SinkEvent_Released:
		return Event{Released: e.Released.GetSeqs()}
	case *pb.SinkEvent_Acked:
		return Event{Acked: e.Acked.GetSeqs()}
	case *pb.SinkEvent_Spans:
		return Event{Spans: e.Spans.GetTracesData()}
	}
	return commonEvent(nil, p.GetError(), p.GetMetrics())
}

func commonEvent(meta *pb.Metadata, perr *pb.PartitionError, metrics *pb.Metrics) Event {
	switch {
	case meta != nil:
		m := MetadataFromProto(meta)
		return Event{Metadata: &m}
	case perr != nil:
		return Event{Error: PartitionErrorFromProto(perr)}
	case metrics != nil:
		m := metrics.GetCounters()
		if m == nil {
			m = map[string]int64{}
		}
		ev := Event{Metrics: m}
		for _, p := range metrics.GetPartitions() {
			ev.PartitionMetrics = append(ev.PartitionMetrics, PartitionMetric{Topic: p.GetTopic(), Partition: p.GetPartition(), Name: p.GetName(), Value: p.GetValue()})
		}
		return ev
	}
	return Event{}
}

// InputToProto converts a transform's or sink's input.
func InputToProto(in Input) (*pb.TransformRequest, *pb.SinkRequest) {
	if in.Batch != nil {
		e := EnvelopeToProto(*in.Batch)
		return &pb.TransformRequest{Msg: &pb.TransformRequest_Batch{Batch: e}},
			&pb.SinkRequest{Msg: &pb.SinkRequest_Batch{Batch: e}}
	}
	m := MetadataToProto(*in.Metadata)
	return &pb.TransformRequest{Msg: &pb.TransformRequest_Metadata{Metadata: m}},
		&pb.SinkRequest{Msg: &pb.SinkRequest_Metadata{Metadata: m}}
}

// inputFromProto converts a wire input (a batch's envelope or metadata).
func inputFromProto(batch *pb.Envelope, meta *pb.Metadata) Input {
	if batch != nil {
		e := EnvelopeFromProto(batch)
		return Input{Batch: &e}
	}
	m := MetadataFromProto(meta)
	return Input{Metadata: &m}
}

// SourceControlToProto converts a message to a running source.
func SourceControlToProto(c SourceControl) []*pb.SourceRequest {
	var out []*pb.SourceRequest
	if len(c.Acked) > 0 {
		out = append(out, &pb.SourceRequest{Msg: &pb.SourceRequest_Acked{Acked: &pb.PositionList{Positions: PositionsToProto(c.Acked)}}})
	}
	if c.Credit.Batches > 0 || c.Credit.Bytes > 0 {
		out = append(out, &pb.SourceRequest{Msg: &pb.SourceRequest_Credit{Credit: &pb.Credit{Batches: c.Credit.Batches, Bytes: c.Credit.Bytes}}})
	}
	return out
}

func millis(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }

// Millis renders a duration as the protocol's milliseconds.
func Millis(d time.Duration) int64 { return d.Milliseconds() }

func codecOf(s string) record.Codec {
	c, err := record.ParseCodec(s)
	if err != nil {
		return record.None
	}
	return c
}
