package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kpipe/kpipe/internal/lean"
	"github.com/kpipe/kpipe/sdk/link"
	"github.com/kpipe/kpipe/sdk/param"
	pb "github.com/kpipe/kpipe/sdk/proto/kpipe/v2"
	"github.com/kpipe/kpipe/sdk/record"
)

var logger = hclog.New(&hclog.LoggerOptions{
	Level:      hclog.Info,
	Output:     os.Stderr,
	JSONFormat: true,
})

// Logger is the plugin's logger. The host forwards what it logs into its own
// log, tagged with the plugin's name.
func Logger() hclog.Logger { return logger }

// Serve runs a plugin process. Each argument is a func() Source, func()
// Transform or func() Sink; a binary may serve one of each kind (a storage
// plugin is often both a source and a sink). Serve returns when the host ends
// the process.
func Serve(constructors ...any) {
	byKind := map[pb.Kind]func() any{}
	var kinds []pb.Kind
	for _, c := range constructors {
		var kind pb.Kind
		switch f := c.(type) {
		case func() Source:
			kind = pb.Kind_KIND_SOURCE
			byKind[kind] = func() any { return f() }
		case func() Transform:
			kind = pb.Kind_KIND_TRANSFORM
			byKind[kind] = func() any { return f() }
		case func() Sink:
			kind = pb.Kind_KIND_SINK
			byKind[kind] = func() any { return f() }
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
	links, err := linkSocket()
	if err != nil {
		fmt.Fprintf(os.Stderr, "kpipe plugin: %v\n", err)
		os.Exit(2)
	}
	var id *link.Identity
	if os.Getenv(LinkTLSEnv) == "1" {
		if id, err = link.NewIdentity(); err != nil {
			fmt.Fprintf(os.Stderr, "kpipe plugin: %v\n", err)
			os.Exit(2)
		}
	}
	impl := byKind[chosen]()
	register := func(s *grpc.Server) { Register(s, impl, kinds, links, id) }
	go exitWithParent()
	ignoreStopSignals()
	lean.Release()
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

// Register serves impl (a Source, Transform or Sink) on s: the Plugin
// service, its kind's service and, for a StorageReader, the Storage service.
// kinds lists every kind the binary serves. Serve calls it; tests may too.
func Register(s *grpc.Server, impl any, kinds []pb.Kind, links Links, id *link.Identity) {
	ps := &pluginServer{kinds: kinds}
	if id != nil {
		ps.cert = id.DER
	}
	switch p := impl.(type) {
	case Source:
		ps.kind, ps.spec, ps.configure, ps.metrics, ps.teardown = pb.Kind_KIND_SOURCE, p.Spec, p.Configure, p.Metrics, p.Teardown
		pb.RegisterSourceServer(s, &sourceServer{r: NewSourceRunner(p, links, id)})
	case Transform:
		ps.kind, ps.spec, ps.configure, ps.metrics, ps.teardown = pb.Kind_KIND_TRANSFORM, p.Spec, p.Configure, p.Metrics, p.Teardown
		r := NewTransformRunner(p, links, id)
		ps.envelopeOnly = r.EnvelopeOnly()
		pb.RegisterTransformServer(s, &transformServer{r: r})
	case Sink:
		ps.kind, ps.spec, ps.configure, ps.metrics, ps.teardown = pb.Kind_KIND_SINK, p.Spec, p.Configure, p.Metrics, p.Teardown
		pb.RegisterSinkServer(s, &sinkServer{r: NewSinkRunner(p, links, id)})
	}
	if e, ok := impl.(Ender); ok {
		ps.end = e.End
	}
	if st, ok := impl.(StorageReader); ok {
		ps.storage = true
		pb.RegisterStorageServer(s, &storageServer{st: st})
	}
	pb.RegisterPluginServer(s, ps)
}

// pluginServer serves the Plugin service for any kind of plugin.
type pluginServer struct {
	pb.UnimplementedPluginServer
	kind         pb.Kind
	kinds        []pb.Kind
	cert         []byte
	envelopeOnly bool
	storage      bool
	spec         func() Spec
	configure    func(context.Context) error
	metrics      func() map[string]int64
	teardown     func(context.Context) error
	end          func(context.Context, Outcome) // nil unless an Ender
}

func (s *pluginServer) Spec(context.Context, *pb.SpecRequest) (*pb.SpecResponse, error) {
	spec := s.spec()
	resp := &pb.SpecResponse{
		Name: spec.Name, Version: spec.Version, Summary: spec.Summary,
		Kind: s.kind, Kinds: s.kinds, Pid: int64(os.Getpid()), ProtocolVersion: ProtocolVersion,
		EnvelopeOnly: s.envelopeOnly, LinkCert: s.cert, Storage: s.storage,
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
	err := param.Decode(s.spec().Config, req.GetParamsJson())
	if err == nil {
		err = s.configure(ctx)
	}
	resp := &pb.ConfigureResponse{}
	for _, e := range param.AsErrors(err) {
		resp.Errors = append(resp.Errors, &pb.ParamError{Param: e.Param, Message: e.Message})
	}
	return resp, nil
}

func (s *pluginServer) Teardown(ctx context.Context, req *pb.TeardownRequest) (*pb.TeardownResponse, error) {
	defer stopProfile()
	if o := req.GetOutcome(); o != "" && s.end != nil {
		s.end(ctx, Outcome(o))
	}
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

func parseCodec(s string) (record.Codec, error) {
	c, err := record.ParseCodec(s)
	if err != nil {
		return "", status.Error(codes.InvalidArgument, "open: "+err.Error())
	}
	return c, nil
}

type sourceServer struct {
	pb.UnimplementedSourceServer
	r *SourceRunner
}

func (s *sourceServer) Open(ctx context.Context, req *pb.SourceOpenRequest) (*pb.SourceOpenResponse, error) {
	codec, err := parseCodec(req.GetCodec())
	if err != nil {
		return nil, err
	}
	err = s.r.Open(ctx, SourceOpen{
		Resume: PositionsFromProto(req.GetResume()), Codec: codec, InFlightBytes: req.GetInFlightBytes(),
		MetricsInterval: millis(req.GetMetricsIntervalMs()), OutPeerCert: req.GetOutPeerCert(),
		Traceparent: req.GetTraceparent(), Tracestate: req.GetTracestate(),
	})
	if err != nil {
		return nil, rpcError("open", err)
	}
	return &pb.SourceOpenResponse{}, nil
}

// Run carries credit and acks in, envelopes and the rest out. The host ends
// reading by closing its side of the stream.
func (s *sourceServer) Run(stream pb.Source_RunServer) error {
	ctl := make(chan SourceControl, 16)
	recvErr := make(chan error, 1)
	go func() {
		defer close(ctl)
		for {
			req, err := stream.Recv()
			if err != nil {
				if err != io.EOF {
					recvErr <- err
				}
				return
			}
			var c SourceControl
			if cr := req.GetCredit(); cr != nil {
				c.Credit = Credit{Batches: cr.GetBatches(), Bytes: cr.GetBytes()}
			}
			if a := req.GetAcked(); a != nil {
				c.Acked = PositionsFromProto(a.GetPositions())
			}
			select {
			case ctl <- c:
			case <-stream.Context().Done():
				return
			}
		}
	}()
	err := s.r.Run(stream.Context(), ctl, func(ev Event) error {
		src, _, _ := EventToProto(ev)
		return stream.Send(src)
	})
	if err != nil {
		return rpcError("read", err)
	}
	select {
	case err := <-recvErr:
		return err
	default:
		return nil
	}
}

type transformServer struct {
	pb.UnimplementedTransformServer
	r *TransformRunner
}

func (s *transformServer) Open(ctx context.Context, req *pb.TransformOpenRequest) (*pb.TransformOpenResponse, error) {
	codec, err := parseCodec(req.GetCodec())
	if err != nil {
		return nil, err
	}
	err = s.r.Open(ctx, TransformOpen{Codec: codec, InFlightBytes: req.GetInFlightBytes(), MetricsInterval: millis(req.GetMetricsIntervalMs()),
		InPeerCert: req.GetInPeerCert(), OutPeerCert: req.GetOutPeerCert(), Traceparent: req.GetTraceparent(), Tracestate: req.GetTracestate()})
	if err != nil {
		return nil, rpcError("open", err)
	}
	return &pb.TransformOpenResponse{}, nil
}

func (s *transformServer) Run(stream pb.Transform_RunServer) error {
	in := make(chan Input, 16)
	errc := recvInputs(stream.Context(), in, func() (*pb.Envelope, *pb.Metadata, error) {
		req, err := stream.Recv()
		return req.GetBatch(), req.GetMetadata(), err
	})
	err := s.r.Run(stream.Context(), in, func(ev Event) error {
		_, tf, _ := EventToProto(ev)
		return stream.Send(tf)
	})
	if err != nil {
		return rpcError("process", err)
	}
	return recvResult(errc)
}

// recvInputs feeds a transform's or sink's inputs from its stream into in,
// closing in when the host closes its side.
func recvInputs(ctx context.Context, in chan<- Input, recv func() (*pb.Envelope, *pb.Metadata, error)) <-chan error {
	errc := make(chan error, 1)
	go func() {
		defer close(in)
		for {
			batch, meta, err := recv()
			if err != nil {
				if err != io.EOF {
					errc <- err
				}
				return
			}
			if batch == nil && meta == nil {
				continue
			}
			select {
			case in <- inputFromProto(batch, meta):
			case <-ctx.Done():
				return
			}
		}
	}()
	return errc
}

func recvResult(errc <-chan error) error {
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

type sinkServer struct {
	pb.UnimplementedSinkServer
	r *SinkRunner
}

func (s *sinkServer) Open(ctx context.Context, req *pb.SinkOpenRequest) (*pb.SinkOpenResponse, error) {
	opened, err := s.r.Open(ctx, SinkOpen{InFlightBytes: req.GetInFlightBytes(), MetricsInterval: millis(req.GetMetricsIntervalMs()),
		InPeerCert: req.GetInPeerCert(), Traceparent: req.GetTraceparent(), Tracestate: req.GetTracestate()})
	if err != nil {
		return nil, rpcError("open", err)
	}
	return &pb.SinkOpenResponse{TracksPositions: opened.TracksPositions, Resume: PositionsToProto(opened.Resume), Codec: string(opened.Codec)}, nil
}

// Run feeds envelopes to the sink and streams its acknowledgements back.
// When the host closes its side, the sink flushes, and the stream ends after
// the last acknowledgement.
func (s *sinkServer) Run(stream pb.Sink_RunServer) error {
	in := make(chan Input, 16)
	errc := recvInputs(stream.Context(), in, func() (*pb.Envelope, *pb.Metadata, error) {
		req, err := stream.Recv()
		return req.GetBatch(), req.GetMetadata(), err
	})
	err := s.r.Run(stream.Context(), in, func(ev Event) error {
		_, _, sink := EventToProto(ev)
		return stream.Send(sink)
	})
	if err != nil {
		return rpcError("write", err)
	}
	return recvResult(errc)
}

// socketLinks receives the ends of a plugin's data links over its link
// socket.
type socketLinks struct {
	mu  sync.Mutex
	ctl *net.UnixConn
	got map[link.Role]*os.File
}

// linkSocket opens the link socket the host handed this process, if any.
func linkSocket() (Links, error) {
	v := os.Getenv(LinkFDEnv)
	if v == "" {
		return LinkEnds{}, nil
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%s=%q is not a file descriptor", LinkFDEnv, v)
	}
	c, err := net.FileConn(os.NewFile(uintptr(fd), "kpipe-link-socket"))
	if err != nil {
		return nil, fmt.Errorf("link socket: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, errors.New("link socket: not a Unix socket")
	}
	return &socketLinks{ctl: uc, got: map[link.Role]*os.File{}}, nil
}

// Link waits for the host to hand over the end of role.
func (l *socketLinks) Link(ctx context.Context, role link.Role) (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	deadline := time.Now().Add(time.Minute)
	if d, ok := ctx.Deadline(); ok {
		deadline = d
	}
	l.ctl.SetReadDeadline(deadline)
	for l.got[role] == nil {
		r, f, err := link.ReceiveFile(l.ctl)
		if err != nil {
			return nil, fmt.Errorf("waiting for the %s data link: %w", role, err)
		}
		if old := l.got[r]; old != nil {
			old.Close()
		}
		l.got[r] = f
	}
	f := l.got[role]
	delete(l.got, role)
	return link.Conn(f)
}

// ignoreStopSignals keeps the plugin running on SIGINT and SIGTERM. Those
// reach the whole process group at once (a terminal's Ctrl-C, systemd,
// timeout(1)); the host stops on them gracefully, and needs its plugins
// alive to make what was read durable. The host ends them when it is
// done, and exitWithParent when the host is gone.
func ignoreStopSignals() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		for sig := range ch {
			logger.Debug("stop signal left to the host", "signal", sig)
		}
	}()
}

// exitWithParent ends the plugin when the host process is gone (killed with
// SIGKILL, say), so that no orphan keeps reading or writing; it removes the
// run's socket folder, which the dead host cannot.
func exitWithParent() {
	parent := os.Getppid()
	for range time.Tick(200 * time.Millisecond) {
		if os.Getppid() != parent {
			logger.Warn("host process is gone; exiting")
			if dir := os.Getenv(plugin.EnvUnixSocketDir); dir != "" {
				os.RemoveAll(dir)
			}
			os.Exit(3)
		}
	}
}
