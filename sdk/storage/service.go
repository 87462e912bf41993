package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
)

// registry holds an empty object per backup, so that listing the backups
// of a store costs a request per thousand backups, not one per object.
const registry = "_backups/"

// probes holds the objects that prove a store honours create-if-absent,
// each deleted after its proof.
const probes = "_probes/"

// service is the read-only storage service (sdk.StorageReader) over a
// plugin's store, which the sink and the source both serve; it opens the
// store once.
type service struct {
	plugin Plugin
	keySrc KeySource
	key    *Key // from keySrc, once configured
	mu     sync.Mutex
	store  BlobStore
}

// open returns the plugin's store, opening it the first time.
func (s *service) open(ctx context.Context) (BlobStore, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.store == nil {
		st, err := s.plugin.Open(ctx)
		if err != nil {
			return nil, err
		}
		s.store = st
	}
	return s.store, nil
}

// MeteredStore is a BlobStore that counts what it does (requests, bytes):
// the sink and the source report its counters beside their own.
type MeteredStore interface {
	Metrics() map[string]int64
}

// withStoreMetrics adds the store's counters, if it keeps any, to m.
func (s *service) withStoreMetrics(m map[string]int64) map[string]int64 {
	s.mu.Lock()
	ms, ok := s.store.(MeteredStore)
	s.mu.Unlock()
	if ok {
		for k, v := range ms.Metrics() {
			m[k] = v
		}
	}
	return m
}

// spec is the plugin's spec with the parameters of cfg (the sink's or the
// source's) and of encryption beside the store's.
func (s *service) spec(cfg any) sdk.Spec {
	spec := s.plugin.Spec()
	spec.Config = param.Multi{spec.Config, cfg, &s.keySrc}
	return spec
}

// configure checks the store's parameters and loads the key.
func (s *service) configure(ctx context.Context) param.Errors {
	errs := param.AsErrors(s.plugin.Configure(ctx))
	var err error
	if s.key, err = s.keySrc.Load(); err != nil {
		errs = append(errs, param.AsErrors(err)...)
	}
	return errs
}

func (s *service) backup(ctx context.Context, id string) (*Backup, error) {
	store, err := s.open(ctx)
	if err != nil {
		return nil, err
	}
	return OpenBackup(ctx, store, id)
}

// The storage service is served by the source and the sink alike.
var (
	_ sdk.StorageReader = (*Source)(nil)
	_ sdk.StorageReader = (*Sink)(nil)
)

// ConfigureStorage checks the store's parameters and the key's alone, for
// a host that only reads (list, describe, validate).
func (s *service) ConfigureStorage(ctx context.Context, paramsJSON []byte) error {
	if err := param.Decode(param.Multi{s.plugin.Spec().Config, &s.keySrc}, paramsJSON); err != nil {
		return err
	}
	if errs := s.configure(ctx); len(errs) > 0 {
		return errs
	}
	return nil
}

// Describe returns a backup's description (type Description) as JSON.
func (s *service) Describe(ctx context.Context, id string) ([]byte, error) {
	store, err := s.open(ctx)
	if err != nil {
		return nil, err
	}
	return describeJSON(ctx, store, id)
}

// Validate checks a backup and returns its report (type Report) as JSON.
func (s *service) Validate(ctx context.Context, id string, o sdk.ValidateOptions, progress func(sdk.ValidateProgress)) ([]byte, error) {
	store, err := s.open(ctx)
	if err != nil {
		return nil, err
	}
	return validateJSON(ctx, store, id, s.key, o, progress)
}

// ListBackups lists the backups of the store, with their backup.json.
func (s *service) ListBackups(ctx context.Context) ([]sdk.BackupSummary, error) {
	store, err := s.open(ctx)
	if err != nil {
		return nil, err
	}
	objs, err := ListAll(ctx, store, registry, "")
	if err != nil {
		return nil, fmt.Errorf("list backups in %s: %w", s.plugin.Location(), err)
	}
	var out []sdk.BackupSummary
	for _, o := range objs {
		id := strings.TrimPrefix(o.Key, registry)
		info, err := readObject(ctx, store, Keys{ID: id}.Info())
		if err != nil {
			continue // registered, never finished creating
		}
		out = append(out, sdk.BackupSummary{ID: id, Info: info})
	}
	return out, nil
}

// ReadMetadata returns backup.json and the topics' metadata.
func (s *service) ReadMetadata(ctx context.Context, id string) ([]byte, sdk.Metadata, error) {
	b, err := s.backup(ctx, id)
	if err != nil {
		return nil, sdk.Metadata{}, err
	}
	info, err := json.Marshal(b.Info)
	if err != nil {
		return nil, sdk.Metadata{}, err
	}
	m, err := b.Metadata(ctx)
	return info, m, err
}

// ListPartitions lists every partition of the backup's topics, those with
// nothing stored included.
func (s *service) ListPartitions(ctx context.Context, id string) ([]sdk.TopicPartition, error) {
	b, err := s.backup(ctx, id)
	if err != nil {
		return nil, err
	}
	m, err := b.Metadata(ctx)
	if err != nil {
		return nil, err
	}
	var out []sdk.TopicPartition
	for _, t := range m.Topics {
		for p := range t.Partitions {
			out = append(out, sdk.TopicPartition{Topic: t.Name, Partition: p})
		}
	}
	return out, nil
}

// ReadManifest returns a partition's committed entries, one JSON object
// each (type Entry).
func (s *service) ReadManifest(ctx context.Context, id, topic string, partition int32) ([][]byte, error) {
	b, err := s.backup(ctx, id)
	if err != nil {
		return nil, err
	}
	m, err := b.Manifest(ctx, topic, partition)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(m.Entries))
	for i, e := range m.Entries {
		if out[i], err = json.Marshal(e); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ReadRange reads part of an object of a backup, named by its key below the
// backup (such as topics/orders/0/segment-00000000000000000000-1).
func (s *service) ReadRange(ctx context.Context, id, object string, offset, length int64) (io.ReadCloser, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	if object == "" || path.Clean(object) != object || strings.HasPrefix(object, "/") || strings.HasPrefix(object, "..") {
		return nil, fmt.Errorf("object %q is not a path within backup %q", object, id)
	}
	if offset < 0 {
		return nil, fmt.Errorf("read %s: negative offset %d", object, offset)
	}
	store, err := s.open(ctx)
	if err != nil {
		return nil, err
	}
	return store.Get(ctx, id+"/"+object, offset, length)
}
