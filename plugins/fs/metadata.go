package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/segment"
)

// toSegment converts metadata to what a backup stores.
func toSegment(m sdk.Metadata) segment.Metadata {
	var out segment.Metadata
	for _, t := range m.Topics {
		out.Topics = append(out.Topics, segment.Topic{Name: t.Name, ID: t.ID.String(), Partitions: t.Partitions,
			ReplicationFactor: t.ReplicationFactor, Configs: t.Configs})
	}
	return out
}

// fromSegment converts what a backup stores to metadata.
func fromSegment(m segment.Metadata) sdk.Metadata {
	var out sdk.Metadata
	for _, t := range m.Topics {
		tm := sdk.TopicMetadata{Name: t.Name, Partitions: t.Partitions, ReplicationFactor: t.ReplicationFactor, Configs: t.Configs}
		if id, err := base64.RawURLEncoding.DecodeString(t.ID); err == nil && len(id) == len(tm.ID) {
			copy(tm.ID[:], id)
		}
		out.Topics = append(out.Topics, tm)
	}
	return out
}

// writeMetadata merges m into the backup's metadata.json.
func writeMetadata(b segment.Backup, m sdk.Metadata) error {
	return b.MergeMetadata(toSegment(m))
}

// readMetadata returns the backup's topic metadata: metadata.json, or for a
// backup written before kpipe stored it, what its partition folders show.
func readMetadata(b segment.Backup, parts []segment.Partition) (sdk.Metadata, error) {
	m, ok, err := b.ReadMetadata()
	if err != nil {
		return sdk.Metadata{}, err
	}
	if ok {
		return fromSegment(m), nil
	}
	var out sdk.Metadata
	for _, p := range parts {
		if n := len(out.Topics); n > 0 && out.Topics[n-1].Name == p.Topic {
			out.Topics[n-1].Partitions = max(out.Topics[n-1].Partitions, p.Partition+1)
			continue
		}
		out.Topics = append(out.Topics, sdk.TopicMetadata{Name: p.Topic, Partitions: p.Partition + 1})
	}
	return out, nil
}

// storage serves the read-only storage service over the folder that holds
// backups (the plugin's path parameter).
type storage struct{ root *string }

func (st storage) backup(id string) (segment.Backup, error) {
	if err := checkBackupID(id); err != nil {
		return segment.Backup{}, errors.New(err.Message)
	}
	return segment.Backup{Root: *st.root, ID: id}, nil
}

// ListBackups lists the folders under path that hold a backup.json.
func (st storage) ListBackups(context.Context) ([]sdk.BackupSummary, error) {
	entries, err := os.ReadDir(*st.root)
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	var out []sdk.BackupSummary
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		info, err := os.ReadFile(filepath.Join(*st.root, e.Name(), "backup.json"))
		if err != nil {
			continue
		}
		out = append(out, sdk.BackupSummary{ID: e.Name(), Info: info})
	}
	return out, nil
}

// ReadMetadata returns backup.json and the topics' metadata.
func (st storage) ReadMetadata(_ context.Context, id string) ([]byte, sdk.Metadata, error) {
	b, err := st.backup(id)
	if err != nil {
		return nil, sdk.Metadata{}, err
	}
	if _, err := b.ReadInfo(); err != nil {
		return nil, sdk.Metadata{}, err
	}
	info, err := os.ReadFile(filepath.Join(b.Dir(), "backup.json"))
	if err != nil {
		return nil, sdk.Metadata{}, err
	}
	parts, err := b.Partitions()
	if err != nil {
		return nil, sdk.Metadata{}, err
	}
	m, err := readMetadata(b, parts)
	return info, m, err
}

// ListPartitions lists the backup's topic-partitions.
func (st storage) ListPartitions(_ context.Context, id string) ([]sdk.TopicPartition, error) {
	b, err := st.backup(id)
	if err != nil {
		return nil, err
	}
	parts, err := b.Partitions()
	if err != nil {
		return nil, err
	}
	out := make([]sdk.TopicPartition, len(parts))
	for i, p := range parts {
		out[i] = sdk.TopicPartition{Topic: p.Topic, Partition: p.Partition}
	}
	return out, nil
}

// ReadManifest returns a partition's committed manifest entries.
func (st storage) ReadManifest(_ context.Context, id, topic string, partition int32) ([][]byte, error) {
	b, err := st.backup(id)
	if err != nil {
		return nil, err
	}
	entries, _, err := segment.ReadManifest(b.PartitionDir(topic, partition))
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(entries))
	for i, e := range entries {
		if out[i], err = json.Marshal(e); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ReadRange reads part of an object of a backup: a path under its folder.
func (st storage) ReadRange(_ context.Context, id, object string, offset, length int64) (io.ReadCloser, error) {
	b, err := st.backup(id)
	if err != nil {
		return nil, err
	}
	if !filepath.IsLocal(object) {
		return nil, fmt.Errorf("object %q is not a path within backup %q", object, id)
	}
	if offset < 0 {
		return nil, fmt.Errorf("read %s: negative offset %d", object, offset)
	}
	f, err := os.Open(filepath.Join(b.Dir(), object))
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	if length < 0 {
		return f, nil
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, length), f}, nil
}
