package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kpipe/kpipe/sdk/param"
	pb "github.com/kpipe/kpipe/sdk/proto/kpipe/v1"
)

var logger = hclog.New(&hclog.LoggerOptions{
	Level:      hclog.Info,
	Output:     os.Stderr,
	JSONFormat: true,
})

// Logger is the plugin's logger. The host forwards what it logs into its own
// log, tagged with the plugin's name.
func Logger() hclog.Logger { return logger }

// KindEnv is the environment variable through which the host tells a plugin
// binary that serves several kinds which one to serve: source, transform or
// sink. Without it, a binary serves the first kind given to Serve.
const KindEnv = "KPIPE_PLUGIN_KIND"

// Serve runs a plugin process. Each argument is a func() Source, func()
// Transform or func() Sink; a binary may serve one of each kind (a storage
// plugin is often both a source and a sink). Serve returns when the host ends
// the process.
func Serve(constructors ...any) {
	byKind := map[pb.Kind]func(*grpc.Server, []pb.Kind){}
	var kinds []pb.Kind
	for _, c := range constructors {
		var kind pb.Kind
		switch f := c.(type) {
		case func() Source:
			kind = pb.Kind_KIND_SOURCE
			byKind[kind] = func(s *grpc.Server, ks []pb.Kind) { registerSource(s, f(), ks) }
		case func() Transform:
			kind = pb.Kind_KIND_TRANSFORM
			byKind[kind] = func(s *grpc.Server, ks []pb.Kind) { registerTransform(s, f(), ks) }
		case func() Sink:
			kind = pb.Kind_KIND_SINK
			byKind[kind] = func(s *grpc.Server, ks []pb.Kind) { registerSink(s, f(), ks) }
		default:
			fmt.Fprintf(os.Stderr, "sdk.Serve: want func() sdk.Source, func() sdk.Transform or func() sdk.Sink, got %T\n", c)
			os.Exit(2)
		}
		kinds = append(kinds, kind)
	}
	if len(kinds) == 0 {
		fmt.Fprintln(os.Stderr, "sdk.Serve: no plugin given")
		os.Exit(2)
	}
	chosen := kinds[0]
	if want := os.Getenv(KindEnv); want != "" {
		k, ok := pb.Kind_value["KIND_"+strings.ToUpper(want)]
		if _, served := byKind[pb.Kind(k)]; !ok || !served {
			fmt.Fprintf(os.Stderr, "this plugin does not serve kind %q (%s=%s)\n", want, KindEnv, want)
			os.Exit(2)
		}
		chosen = pb.Kind(k)
	}
	register := func(s *grpc.Server) { byKind[chosen](s, kinds) }
	go exitWithParent()
	startProfile(chosen)
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         plugin.PluginSet{PluginKey: &ClientPlugin{register: register}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, GRPCOptions()...)...)
		},
		Logger: logger,
	})
}

// pluginServer serves the Plugin service for any kind of plugin.
type pluginServer struct {
	pb.UnimplementedPluginServer
	kind      pb.Kind
	kinds     []pb.Kind
	spec      func() Spec
	configure func(context.Context) error
	metrics   func() map[string]int64
	teardown  func(context.Context) error
}

func (s *pluginServer) Spec(context.Context, *pb.SpecRequest) (*pb.SpecResponse, error) {
	spec := s.spec()
	resp := &pb.SpecResponse{
		Name: spec.Name, Version: spec.Version, Summary: spec.Summary,
		Kind: s.kind, Kinds: s.kinds, Pid: int64(os.Getpid()), ProtocolVersion: ProtocolVersion,
	}
	if spec.Config != nil {
		params, err := param.Describe(spec.Config)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		for _, p := range params {
			resp.Params = append(resp.Params, &pb.Param{
				Name: p.Name, Type: p.Type, Required: p.Required,
				Default: p.Default, Description: p.Description,
			})
		}
	}
	return resp, nil
}

func (s *pluginServer) Configure(ctx context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	var err error
	if cfg := s.spec().Config; cfg != nil {
		err = param.Decode(cfg, req.GetParamsJson())
	}
	if err == nil {
		err = s.configure(ctx)
	}
	resp := &pb.ConfigureResponse{}
	for _, e := range param.AsErrors(err) {
		resp.Errors = append(resp.Errors, &pb.ParamError{Param: e.Param, Message: e.Message})
	}
	return resp, nil
}

func (s *pluginServer) Teardown(ctx context.Context, _ *pb.TeardownRequest) (*pb.TeardownResponse, error) {
	defer stopProfile()
	m := s.metrics()
	if err := s.teardown(ctx); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &pb.TeardownResponse{Metrics: m}, nil
}

// rpcError turns a plugin error into a gRPC status that keeps its message.
func rpcError(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return status.Error(codes.Canceled, op+": "+err.Error())
	}
	return status.Error(codes.Unknown, op+": "+err.Error())
}

func registerSource(s *grpc.Server, src Source, kinds []pb.Kind) {
	pb.RegisterPluginServer(s, &pluginServer{
		kind: pb.Kind_KIND_SOURCE, kinds: kinds, spec: src.Spec, configure: src.Configure,
		metrics: src.Metrics, teardown: src.Teardown,
	})
	pb.RegisterSourceServer(s, &sourceServer{src: src})
}

type sourceServer struct {
	pb.UnimplementedSourceServer
	src Source
}

func (s *sourceServer) Open(ctx context.Context, req *pb.SourceOpenRequest) (*pb.SourceOpenResponse, error) {
	if err := s.src.Open(ctx, PositionsFromProto(req.GetResume())); err != nil {
		return nil, rpcError("open", err)
	}
	return &pb.SourceOpenResponse{}, nil
}

// Read sends batches while the host grants credit. The host ends reading by
// closing its side of the stream.
func (s *sourceServer) Read(stream pb.Source_ReadServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	credits := make(chan int64, 64)
	recvErr := make(chan error, 1)
	go func() {
		defer cancel()
		for {
			req, err := stream.Recv()
			if err != nil {
				if err != io.EOF {
					recvErr <- err
				}
				return
			}
			if acked := req.GetAcked(); len(acked) > 0 {
				if err := s.src.Ack(ctx, PositionsFromProto(acked)); err != nil {
					logger.Warn("ack failed", "error", err)
				}
			}
			if c := req.GetCredit(); c > 0 {
				select {
				case credits <- c:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	var avail int64
	for {
		for avail == 0 {
			select {
			case c := <-credits:
				avail += c
			case <-ctx.Done():
				return stoppedErr(recvErr)
			}
		}
		b, err := s.src.Read(ctx)
		if err == io.EOF {
			return stream.Send(&pb.SourceResponse{End: true})
		}
		if err != nil {
			if ctx.Err() != nil {
				return stoppedErr(recvErr)
			}
			return rpcError("read", err)
		}
		if err := stream.Send(&pb.SourceResponse{Batch: BatchToProto(b)}); err != nil {
			return err
		}
		avail--
	}
}

// stoppedErr is the result of a Read stream that the host ended: nil when it
// closed its side, its error otherwise.
func stoppedErr(recvErr chan error) error {
	select {
	case err := <-recvErr:
		return err
	default:
		return nil
	}
}

func registerTransform(s *grpc.Server, t Transform, kinds []pb.Kind) {
	pb.RegisterPluginServer(s, &pluginServer{
		kind: pb.Kind_KIND_TRANSFORM, kinds: kinds, spec: t.Spec, configure: t.Configure,
		metrics: t.Metrics, teardown: t.Teardown,
	})
	pb.RegisterTransformServer(s, &transformServer{t: t})
}

type transformServer struct {
	pb.UnimplementedTransformServer
	t Transform
}

func (s *transformServer) Process(stream pb.Transform_ProcessServer) error {
	for {
		in, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		b := BatchFromProto(in)
		outs, err := s.t.Process(stream.Context(), b)
		if err != nil {
			return rpcError(fmt.Sprintf("process %s/%d", b.Topic, b.Partition), err)
		}
		resp := &pb.TransformResponse{Seq: b.Seq, Batches: make([]*pb.Batch, len(outs))}
		for i, o := range outs {
			o.Seq = b.Seq
			resp.Batches[i] = BatchToProto(o)
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

func registerSink(s *grpc.Server, sink Sink, kinds []pb.Kind) {
	pb.RegisterPluginServer(s, &pluginServer{
		kind: pb.Kind_KIND_SINK, kinds: kinds, spec: sink.Spec, configure: sink.Configure,
		metrics: sink.Metrics, teardown: sink.Teardown,
	})
	pb.RegisterSinkServer(s, &sinkServer{sink: sink, acks: newAckQueue()})
}

type sinkServer struct {
	pb.UnimplementedSinkServer
	sink Sink
	acks *ackQueue
}

func (s *sinkServer) Open(ctx context.Context, _ *pb.SinkOpenRequest) (*pb.SinkOpenResponse, error) {
	if err := s.sink.Open(ctx, s.acks.add); err != nil {
		return nil, rpcError("open", err)
	}
	resp := &pb.SinkOpenResponse{}
	if pt, ok := s.sink.(PositionTracker); ok {
		ps, err := pt.DurablePositions(ctx)
		if err != nil {
			return nil, rpcError("durable positions", err)
		}
		resp.TracksPositions = true
		resp.Resume = PositionsToProto(ps)
	}
	return resp, nil
}

// Write feeds batches to the sink and streams its acks back. When the host
// closes its side, the sink flushes, and the stream ends after the last ack.
func (s *sinkServer) Write(stream pb.Sink_WriteServer) error {
	ctx := stream.Context()
	done := make(chan error, 1)
	go func() {
		for {
			in, err := stream.Recv()
			if err == io.EOF {
				done <- rpcError("flush", s.sink.Flush(ctx))
				return
			}
			if err != nil {
				done <- err
				return
			}
			b := BatchFromProto(in)
			if err := s.sink.Write(ctx, b); err != nil {
				done <- rpcError(fmt.Sprintf("write %s/%d", b.Topic, b.Partition), err)
				return
			}
		}
	}()
	var result error
	finished := false
	for {
		seqs, more := s.acks.take(ctx, finished)
		if len(seqs) > 0 {
			if err := stream.Send(&pb.SinkAck{Seqs: seqs}); err != nil {
				return err
			}
		}
		if finished && !more {
			return result
		}
		if !finished {
			select {
			case result = <-done:
				finished = true
			default:
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// ackQueue collects acks from a sink without ever blocking it.
type ackQueue struct {
	mu     sync.Mutex
	seqs   []uint64
	notify chan struct{}
}

func newAckQueue() *ackQueue { return &ackQueue{notify: make(chan struct{}, 1)} }

func (q *ackQueue) add(seqs ...uint64) {
	q.mu.Lock()
	q.seqs = append(q.seqs, seqs...)
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// take returns the queued acks. Unless drain is set it waits (briefly) for
// some to arrive. more says whether acks were returned.
func (q *ackQueue) take(ctx context.Context, drain bool) ([]uint64, bool) {
	if !drain {
		select {
		case <-q.notify:
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	seqs := q.seqs
	q.seqs = nil
	return seqs, len(seqs) > 0
}

// exitWithParent ends the plugin when the host process is gone (killed with
// SIGKILL, say), so that no orphan keeps reading or writing.
func exitWithParent() {
	parent := os.Getppid()
	for range time.Tick(200 * time.Millisecond) {
		if os.Getppid() != parent {
			logger.Warn("host process is gone; exiting")
			os.Exit(3)
		}
	}
}
