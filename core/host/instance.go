package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kplugin "github.com/kpipe/kpipe/core/plugin"
	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/link"
	"github.com/kpipe/kpipe/sdk/param"
	pb "github.com/kpipe/kpipe/sdk/proto/kpipe/v2"
	"github.com/kpipe/kpipe/sdk/record"
)

// Instance is one running plugin process.
type Instance struct {
	name, path string
	pid        int
	info       kplugin.Info
	client     *plugin.Client
	ctl        *net.UnixConn

	plugin pb.PluginClient
	src    pb.SourceClient
	tf     pb.TransformClient
	sink   pb.SinkClient
	store  pb.StorageClient
}

var _ kplugin.Instance = (*Instance)(nil)

// Info describes the plugin as its spec says.
func (i *Instance) Info() kplugin.Info { return i.info }

// Path is the plugin's binary.
func (i *Instance) Path() string { return i.path }

// Pid is the process id the host started, as the operating system reports
// it (Info().Pid is what the plugin reports of itself).
func (i *Instance) Pid() int { return i.pid }

// rpcErr turns a gRPC error from the plugin into a plain error that keeps
// the plugin's message.
func rpcErr(err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unknown:
		return errors.New(st.Message())
	case codes.Canceled:
		return fmt.Errorf("%s: %w", st.Message(), context.Canceled)
	case codes.InvalidArgument:
		return sdk.BadRequest(errors.New(st.Message()))
	}
	return err
}

// Configure sends the parameters to the plugin. A non-nil param.Errors names
// each wrong parameter; other errors are about the link.
func (i *Instance) Configure(ctx context.Context, params map[string]json.RawMessage) error {
	js, err := json.Marshal(params)
	if err != nil {
		return fmt.Errorf("plugin %q: encode parameters: %w", i.name, err)
	}
	resp, err := i.plugin.Configure(ctx, &pb.ConfigureRequest{ParamsJson: js})
	if err != nil {
		return fmt.Errorf("plugin %q: configure: %w", i.name, rpcErr(err))
	}
	return paramErrors(resp)
}

// paramErrors are the parameter errors of a configure response; nil for
// none.
func paramErrors(resp *pb.ConfigureResponse) error {
	if len(resp.GetErrors()) == 0 {
		return nil
	}
	var errs param.Errors
	for _, e := range resp.GetErrors() {
		errs = append(errs, &param.Error{Param: e.GetParam(), Message: e.GetMessage()})
	}
	return errs
}

// Attach hands the plugin one end of a data link over its link socket.
func (i *Instance) Attach(role link.Role, f *os.File) error {
	defer f.Close()
	if err := link.SendFile(i.ctl, role, f); err != nil {
		return fmt.Errorf("plugin %q: %w", i.name, err)
	}
	return nil
}

// Teardown asks the plugin to release its resources and returns its metrics.
func (i *Instance) Teardown(ctx context.Context, o sdk.Outcome) (map[string]int64, error) {
	resp, err := i.plugin.Teardown(ctx, &pb.TeardownRequest{Outcome: string(o)})
	if err != nil {
		return nil, fmt.Errorf("plugin %q: teardown: %w", i.name, rpcErr(err))
	}
	return resp.GetMetrics(), nil
}

// Kill ends the plugin process (gracefully first) and waits for it.
func (i *Instance) Kill() {
	if i == nil || i.client == nil {
		return
	}
	i.client.Kill()
	i.ctl.Close()
}

// Exited reports whether the plugin process has ended.
func (i *Instance) Exited() bool { return i.client.Exited() }

// Source returns the source side, if the instance serves it.
func (i *Instance) Source() kplugin.Source {
	if i.info.Kind != kplugin.KindSource {
		return nil
	}
	return grpcSource{i}
}

// Transform returns the transform side, if the instance serves it.
func (i *Instance) Transform() kplugin.Transform {
	if i.info.Kind != kplugin.KindTransform {
		return nil
	}
	return grpcTransform{i}
}

// Sink returns the sink side, if the instance serves it.
func (i *Instance) Sink() kplugin.Sink {
	if i.info.Kind != kplugin.KindSink {
		return nil
	}
	return grpcSink{i}
}

type grpcSource struct{ i *Instance }

func (s grpcSource) Open(ctx context.Context, o sdk.SourceOpen) error {
	_, err := s.i.src.Open(ctx, &pb.SourceOpenRequest{
		Resume: sdk.PositionsToProto(o.Resume), Codec: string(o.Codec), InFlightBytes: o.InFlightBytes,
		MetricsIntervalMs: sdk.Millis(o.MetricsInterval), OutPeerCert: o.OutPeerCert,
		Traceparent: o.Traceparent, Tracestate: o.Tracestate,
	})
	return rpcErr(err)
}

func (s grpcSource) Run(ctx context.Context) (kplugin.SourceStream, error) {
	st, err := s.i.src.Run(ctx)
	if err != nil {
		return nil, rpcErr(err)
	}
	return sourceStream{st}, nil
}

type sourceStream struct{ st pb.Source_RunClient }

func (s sourceStream) Send(c sdk.SourceControl) error {
	for _, req := range sdk.SourceControlToProto(c) {
		if err := s.st.Send(req); err != nil {
			return rpcErr(err)
		}
	}
	return nil
}

func (s sourceStream) CloseSend() error { return s.st.CloseSend() }

func (s sourceStream) Recv() (sdk.Event, error) {
	ev, err := s.st.Recv()
	if err != nil {
		return sdk.Event{}, rpcErr(err)
	}
	return sdk.SourceEventFromProto(ev), nil
}

type grpcTransform struct{ i *Instance }

func (t grpcTransform) Open(ctx context.Context, o sdk.TransformOpen) error {
	_, err := t.i.tf.Open(ctx, &pb.TransformOpenRequest{
		Codec: string(o.Codec), InFlightBytes: o.InFlightBytes, MetricsIntervalMs: sdk.Millis(o.MetricsInterval),
		InPeerCert: o.InPeerCert, OutPeerCert: o.OutPeerCert, Traceparent: o.Traceparent, Tracestate: o.Tracestate,
	})
	return rpcErr(err)
}

func (t grpcTransform) Run(ctx context.Context) (kplugin.InputStream, error) {
	st, err := t.i.tf.Run(ctx)
	if err != nil {
		return nil, rpcErr(err)
	}
	return transformStream{st}, nil
}

type transformStream struct{ st pb.Transform_RunClient }

func (s transformStream) Send(in sdk.Input) error {
	req, _ := sdk.InputToProto(in)
	return rpcErr(s.st.Send(req))
}

func (s transformStream) CloseSend() error { return s.st.CloseSend() }

func (s transformStream) Recv() (sdk.Event, error) {
	ev, err := s.st.Recv()
	if err != nil {
		return sdk.Event{}, rpcErr(err)
	}
	return sdk.TransformEventFromProto(ev), nil
}

type grpcSink struct{ i *Instance }

func (s grpcSink) Open(ctx context.Context, o sdk.SinkOpen) (sdk.SinkOpened, error) {
	resp, err := s.i.sink.Open(ctx, &pb.SinkOpenRequest{InFlightBytes: o.InFlightBytes, MetricsIntervalMs: sdk.Millis(o.MetricsInterval),
		InPeerCert: o.InPeerCert, Traceparent: o.Traceparent, Tracestate: o.Tracestate})
	if err != nil {
		return sdk.SinkOpened{}, rpcErr(err)
	}
	codec, err := parseCodec(resp.GetCodec())
	if err != nil {
		return sdk.SinkOpened{}, err
	}
	return sdk.SinkOpened{TracksPositions: resp.GetTracksPositions(), Resume: sdk.PositionsFromProto(resp.GetResume()), Codec: codec}, nil
}

func (s grpcSink) Run(ctx context.Context) (kplugin.InputStream, error) {
	st, err := s.i.sink.Run(ctx)
	if err != nil {
		return nil, rpcErr(err)
	}
	return sinkStream{st}, nil
}

type sinkStream struct{ st pb.Sink_RunClient }

func (s sinkStream) Send(in sdk.Input) error {
	_, req := sdk.InputToProto(in)
	return rpcErr(s.st.Send(req))
}

func (s sinkStream) CloseSend() error { return s.st.CloseSend() }

func (s sinkStream) Recv() (sdk.Event, error) {
	ev, err := s.st.Recv()
	if err != nil {
		return sdk.Event{}, rpcErr(err)
	}
	return sdk.SinkEventFromProto(ev), nil
}

func paramFromProto(p *pb.Param) param.Param {
	return param.Param{Name: p.GetName(), Type: p.GetType(), Required: p.GetRequired(), Default: p.GetDefault(), Description: p.GetDescription()}
}

func parseCodec(s string) (record.Codec, error) {
	c, err := record.ParseCodec(s)
	if err != nil {
		return "", fmt.Errorf("the sink stores frames in an unknown codec: %w", err)
	}
	return c, nil
}

// Storage returns the storage service of a storage plugin (nil for other
// plugins): the host reads backups through it, in the same Go terms the
// plugin serves them.
func (i *Instance) Storage() sdk.StorageReader {
	if !i.info.Storage {
		return nil
	}
	return grpcStorage{i.store}
}

type grpcStorage struct{ c pb.StorageClient }

func (s grpcStorage) ListBackups(ctx context.Context) ([]sdk.BackupSummary, error) {
	var out []sdk.BackupSummary
	token := ""
	for {
		resp, err := s.c.ListBackups(ctx, &pb.ListBackupsRequest{PageToken: token})
		if err != nil {
			return nil, rpcErr(err)
		}
		for _, b := range resp.GetBackups() {
			out = append(out, sdk.BackupSummary{ID: b.GetBackupId(), Info: b.GetInfoJson()})
		}
		if token = resp.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
}

func (s grpcStorage) ConfigureStorage(ctx context.Context, paramsJSON []byte) error {
	resp, err := s.c.Configure(ctx, &pb.StorageConfigureRequest{ParamsJson: paramsJSON})
	if err != nil {
		return fmt.Errorf("configure storage: %w", rpcErr(err))
	}
	return paramErrors(resp)
}

func (s grpcStorage) Describe(ctx context.Context, id string) ([]byte, error) {
	resp, err := s.c.Describe(ctx, &pb.DescribeRequest{BackupId: id})
	if err != nil {
		return nil, rpcErr(err)
	}
	return resp.GetDescriptionJson(), nil
}

func (s grpcStorage) Validate(ctx context.Context, id string, o sdk.ValidateOptions, progress func(sdk.ValidateProgress)) ([]byte, error) {
	st, err := s.c.Validate(ctx, &pb.ValidateRequest{BackupId: id, Deep: o.Deep, MaxAgeMs: o.MaxAge.Milliseconds()})
	if err != nil {
		return nil, rpcErr(err)
	}
	for {
		ev, err := st.Recv()
		if err == io.EOF {
			return nil, fmt.Errorf("validate %s: the plugin ended without a report", id)
		}
		if err != nil {
			return nil, rpcErr(err)
		}
		if js := ev.GetReportJson(); js != nil {
			return js, nil
		}
		if p := ev.GetProgress(); p != nil && progress != nil {
			progress(sdk.ValidateProgress{PartitionsDone: p.GetPartitionsDone(), Partitions: p.GetPartitions(),
				SegmentsChecked: p.GetSegmentsChecked(), BytesRead: p.GetBytesRead(), RecordsChecked: p.GetRecordsChecked()})
		}
	}
}

func (s grpcStorage) ReadMetadata(ctx context.Context, id string) ([]byte, sdk.Metadata, error) {
	resp, err := s.c.ReadMetadata(ctx, &pb.ReadMetadataRequest{BackupId: id})
	if err != nil {
		return nil, sdk.Metadata{}, rpcErr(err)
	}
	return resp.GetInfoJson(), sdk.MetadataFromProto(resp.GetMetadata()), nil
}

func (s grpcStorage) ListPartitions(ctx context.Context, id string) ([]sdk.TopicPartition, error) {
	resp, err := s.c.ListPartitions(ctx, &pb.ListPartitionsRequest{BackupId: id})
	if err != nil {
		return nil, rpcErr(err)
	}
	out := make([]sdk.TopicPartition, len(resp.GetPartitions()))
	for i, p := range resp.GetPartitions() {
		out[i] = sdk.TopicPartition{Topic: p.GetTopic(), Partition: p.GetPartition()}
	}
	return out, nil
}

func (s grpcStorage) ReadManifest(ctx context.Context, id, topic string, partition int32) ([][]byte, error) {
	resp, err := s.c.ReadManifest(ctx, &pb.ReadManifestRequest{BackupId: id, Topic: topic, Partition: partition})
	if err != nil {
		return nil, rpcErr(err)
	}
	return resp.GetEntriesJson(), nil
}

func (s grpcStorage) ReadRange(ctx context.Context, id, object string, offset, length int64) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(ctx)
	st, err := s.c.ReadRange(ctx, &pb.ReadRangeRequest{BackupId: id, Object: object, Offset: offset, Length: length})
	if err != nil {
		cancel()
		return nil, rpcErr(err)
	}
	// The first message carries the plugin's refusal, if any.
	first, err := st.Recv()
	if err != nil && err != io.EOF {
		cancel()
		return nil, rpcErr(err)
	}
	return &rangeReader{st: st, cancel: cancel, buf: first.GetData(), done: err == io.EOF}, nil
}

// rangeReader reads a storage object's range as the plugin streams it.
type rangeReader struct {
	st     pb.Storage_ReadRangeClient
	cancel context.CancelFunc
	buf    []byte
	done   bool
}

func (r *rangeReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.done {
			return 0, io.EOF
		}
		resp, err := r.st.Recv()
		if err != nil {
			return 0, rpcErr(err)
		}
		r.buf = resp.GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *rangeReader) Close() error {
	r.cancel()
	return nil
}
