package sdk

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pb "github.com/kpipe/kpipe/sdk/proto/kpipe/v1"
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

// MaxMessageBytes caps one gRPC message on both sides of a plugin link. It
// bounds a batch; the default gRPC limit of 4 MiB is too small for batches.
const MaxMessageBytes = 256 << 20

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

// BatchToProto converts a Batch to its wire form.
func BatchToProto(b Batch) *pb.Batch {
	e := b.Envelope
	return &pb.Batch{
		Envelope: &pb.Envelope{
			Topic: e.Topic, Partition: e.Partition, Count: e.Count,
			MinOffset: e.MinOffset, MaxOffset: e.MaxOffset,
			MinTimestamp: e.MinTimestamp, MaxTimestamp: e.MaxTimestamp,
			NextOffset: e.NextOffset,
		},
		Arrow: b.Arrow,
		Seq:   b.Seq,
	}
}

// BatchFromProto converts a wire batch to a Batch.
func BatchFromProto(p *pb.Batch) Batch {
	e := p.GetEnvelope()
	return Batch{
		Envelope: Envelope{
			Topic: e.GetTopic(), Partition: e.GetPartition(), Count: e.GetCount(),
			MinOffset: e.GetMinOffset(), MaxOffset: e.GetMaxOffset(),
			MinTimestamp: e.GetMinTimestamp(), MaxTimestamp: e.GetMaxTimestamp(),
			NextOffset: e.GetNextOffset(),
		},
		Arrow: p.GetArrow(),
		Seq:   p.GetSeq(),
	}
}

// PositionsToProto converts positions to their wire form.
func PositionsToProto(ps []Position) []*pb.Position {
	out := make([]*pb.Position, len(ps))
	for i, p := range ps {
		out[i] = &pb.Position{Topic: p.Topic, Partition: p.Partition, NextOffset: p.NextOffset}
	}
	return out
}

// PositionsFromProto converts wire positions to Positions.
func PositionsFromProto(ps []*pb.Position) []Position {
	out := make([]Position, len(ps))
	for i, p := range ps {
		out[i] = Position{Topic: p.GetTopic(), Partition: p.GetPartition(), NextOffset: p.GetNextOffset()}
	}
	return out
}
