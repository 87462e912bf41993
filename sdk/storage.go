package sdk

import (
	"context"
	"errors"
	"io"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/kpipe/kpipe/sdk/proto/kpipe/v2"
)

// StorageReader is implemented by storage plugins (as a source, a sink or
// both) so that the host reads backups through them and never behind their
// back: the read-only Storage service of protocol v2. Its methods are called
// after Configure, from any goroutine.
type StorageReader interface {
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

type storageServer struct {
	pb.UnimplementedStorageServer
	st StorageReader
}

func storageError(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) {
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
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
