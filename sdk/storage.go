package sdk

import (
	"context"
	"errors"
	"io"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kpipe/kpipe/sdk/param"
	pb "github.com/kpipe/kpipe/sdk/proto/kpipe/v2"
)

// StorageReader is implemented by storage plugins (as a source, a sink or
// both) so that the host reads backups through them and never behind their
// back: the read-only Storage service of protocol v2. Its methods are called
// after Configure, from any goroutine.
type StorageReader interface {
	// ConfigureStorage checks and applies the store's parameters alone
	// (and the encryption key's), as a JSON object: for a host that only
	// reads backups, and so names none. Errors are as Configure's.
	ConfigureStorage(ctx context.Context, paramsJSON []byte) error
	// Describe returns a backup's description, as JSON.
	Describe(ctx context.Context, backupID string) ([]byte, error)
	// Validate checks a backup and returns its report, as JSON; progress,
	// when set, hears how far it got now and then. A backup with problems
	// is no error: the report lists them.
	Validate(ctx context.Context, backupID string, o ValidateOptions, progress func(ValidateProgress)) ([]byte, error)
	// ListBackups lists the backups in the configured storage.
	ListBackups(ctx context.Context) ([]BackupSummary, error)
	// ReadMetadata returns a backup's own description as stored and the
	// topic metadata it holds.
	ReadMetadata(ctx context.Context, backupID string) (info []byte, m Metadata, err error)
	// ListPartitions lists a backup's topic-partitions.
	ListPartitions(ctx context.Context, backupID string) ([]TopicPartition, error)
	// ReadManifest returns a partition's committed manifest entries, one
	// JSON object each.
	ReadManifest(ctx context.Context, backupID, topic string, partition int32) ([][]byte, error)
	// ReadRange reads length bytes (-1: to the end) of an object of a
	// backup from offset on.
	ReadRange(ctx context.Context, backupID, object string, offset, length int64) (io.ReadCloser, error)
}

// ValidateOptions say how deep a validation goes.
type ValidateOptions struct {
	// Deep reads every segment too.
	Deep bool
	// MaxAge fails a backup whose last commit is older; 0: no limit.
	MaxAge time.Duration
}

// ValidateProgress is how far a validation got.
type ValidateProgress struct {
	PartitionsDone, Partitions int64
	SegmentsChecked            int64
	BytesRead                  int64
	RecordsChecked             int64
}

// BackupSummary is one backup of a storage.
type BackupSummary struct {
	ID   string
	Info []byte
}

// TopicPartition names a partition of a topic.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// BadRequest marks err as the caller's mistake (a backup id the storage
// does not hold, a key that is not the backup's), which the host reports
// as bad input.
func BadRequest(err error) error { return badRequest{err} }

// IsBadRequest says whether err is marked by BadRequest.
func IsBadRequest(err error) bool {
	var b badRequest
	return errors.As(err, &b)
}

type badRequest struct{ error }

func (b badRequest) Unwrap() error { return b.error }

type storageServer struct {
	pb.UnimplementedStorageServer
	st StorageReader
}

func storageError(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) {
		return status.Error(codes.Canceled, err.Error())
	}
	if IsBadRequest(err) {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}

func (s *storageServer) Configure(ctx context.Context, req *pb.StorageConfigureRequest) (*pb.ConfigureResponse, error) {
	resp := &pb.ConfigureResponse{}
	for _, e := range param.AsErrors(s.st.ConfigureStorage(ctx, req.GetParamsJson())) {
		resp.Errors = append(resp.Errors, &pb.ParamError{Param: e.Param, Message: e.Message})
	}
	return resp, nil
}

func (s *storageServer) Describe(ctx context.Context, req *pb.DescribeRequest) (*pb.DescribeResponse, error) {
	js, err := s.st.Describe(ctx, req.GetBackupId())
	if err != nil {
		return nil, storageError(err)
	}
	return &pb.DescribeResponse{DescriptionJson: js}, nil
}

// validateProgressEvery is how often Validate streams its progress.
const validateProgressEvery = time.Second

func (s *storageServer) Validate(req *pb.ValidateRequest, stream pb.Storage_ValidateServer) error {
	var mu sync.Mutex
	last := time.Now()
	progress := func(p ValidateProgress) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(last) < validateProgressEvery {
			return
		}
		last = time.Now()
		stream.Send(&pb.ValidateEvent{Event: &pb.ValidateEvent_Progress{Progress: &pb.ValidateProgress{
			PartitionsDone: p.PartitionsDone, Partitions: p.Partitions, SegmentsChecked: p.SegmentsChecked,
			BytesRead: p.BytesRead, RecordsChecked: p.RecordsChecked}}})
	}
	o := ValidateOptions{Deep: req.GetDeep(), MaxAge: time.Duration(req.GetMaxAgeMs()) * time.Millisecond}
	js, err := s.st.Validate(stream.Context(), req.GetBackupId(), o, progress)
	if err != nil {
		return storageError(err)
	}
	mu.Lock()
	defer mu.Unlock()
	return stream.Send(&pb.ValidateEvent{Event: &pb.ValidateEvent_ReportJson{ReportJson: js}})
}

func (s *storageServer) ListBackups(ctx context.Context, req *pb.ListBackupsRequest) (*pb.ListBackupsResponse, error) {
	all, err := s.st.ListBackups(ctx)
	if err != nil {
		return nil, storageError(err)
	}
	start := 0
	if t := req.GetPageToken(); t != "" {
		if start, err = strconv.Atoi(t); err != nil || start < 0 || start > len(all) {
			return nil, status.Errorf(codes.InvalidArgument, "page token %q is not one this storage gave", t)
		}
	}
	end := len(all)
	if n := int(req.GetPageSize()); n > 0 && start+n < end {
		end = start + n
	}
	resp := &pb.ListBackupsResponse{}
	for _, b := range all[start:end] {
		resp.Backups = append(resp.Backups, &pb.BackupSummary{BackupId: b.ID, InfoJson: b.Info})
	}
	if end < len(all) {
		resp.NextPageToken = strconv.Itoa(end)
	}
	return resp, nil
}

func (s *storageServer) ReadMetadata(ctx context.Context, req *pb.ReadMetadataRequest) (*pb.ReadMetadataResponse, error) {
	info, m, err := s.st.ReadMetadata(ctx, req.GetBackupId())
	if err != nil {
		return nil, storageError(err)
	}
	return &pb.ReadMetadataResponse{InfoJson: info, Metadata: MetadataToProto(m)}, nil
}

func (s *storageServer) ListPartitions(ctx context.Context, req *pb.ListPartitionsRequest) (*pb.ListPartitionsResponse, error) {
	ps, err := s.st.ListPartitions(ctx, req.GetBackupId())
	if err != nil {
		return nil, storageError(err)
	}
	resp := &pb.ListPartitionsResponse{}
	for _, p := range ps {
		resp.Partitions = append(resp.Partitions, &pb.PartitionRef{Topic: p.Topic, Partition: p.Partition})
	}
	return resp, nil
}

func (s *storageServer) ReadManifest(ctx context.Context, req *pb.ReadManifestRequest) (*pb.ReadManifestResponse, error) {
	entries, err := s.st.ReadManifest(ctx, req.GetBackupId(), req.GetTopic(), req.GetPartition())
	if err != nil {
		return nil, storageError(err)
	}
	return &pb.ReadManifestResponse{EntriesJson: entries}, nil
}

// readChunk is the most bytes one ReadRange message carries.
const readChunk = 1 << 20

func (s *storageServer) ReadRange(req *pb.ReadRangeRequest, stream pb.Storage_ReadRangeServer) error {
	rc, err := s.st.ReadRange(stream.Context(), req.GetBackupId(), req.GetObject(), req.GetOffset(), req.GetLength())
	if err != nil {
		return storageError(err)
	}
	defer rc.Close()
	buf := make([]byte, readChunk)
	for {
		n, err := io.ReadFull(rc, buf)
		if n > 0 {
			if serr := stream.Send(&pb.ReadRangeResponse{Data: buf[:n]}); serr != nil {
				return serr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return storageError(err)
		}
	}
}
