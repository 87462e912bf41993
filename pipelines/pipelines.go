// Package pipelines turns the Kafka backup and restore verbs of the CLI into
// pipeline graphs for the engine: a backup is kafka → storage, a restore is
// storage → kafka, where the storage is the fs plugin for a folder
// and the s3 plugin for an s3:// URL.
package pipelines

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kpipe/kpipe/core/config"
	"github.com/kpipe/kpipe/core/engine"
	"github.com/kpipe/kpipe/sdk/restore"
)

// StoreOptions are settings of the storage beside its path.
type StoreOptions struct {
	// S3 settings, for an s3:// path (see the s3 plugin's parameters).
	S3Endpoint       string
	S3Region         string
	S3ForcePathStyle bool
	S3Profile        string
	// The key of encryption at rest: a file, or an environment variable
	// (see the storage plugins' encryption_key_file and encryption_key_env).
	EncryptionKeyFile string
	EncryptionKeyEnv  string
}

// IsS3 says whether path names a bucket rather than a folder.
func IsS3(path string) bool { return strings.HasPrefix(path, "s3://") }

// Storage is the storage plugin for path with the store's parameters
// alone: what reads backups (list, describe, validate) configure.
func Storage(path string, o StoreOptions) config.Stage { return storageStage(path, o, nil) }

// storageStage is the storage plugin for path, with its parameters and
// those of extra.
func storageStage(path string, o StoreOptions, extra map[string]any) config.Stage {
	params := map[string]any{"path": path}
	name := "fs"
	if IsS3(path) {
		name = "s3"
		for k, v := range map[string]string{"endpoint": o.S3Endpoint, "region": o.S3Region, "profile": o.S3Profile} {
			if v != "" {
				params[k] = v
			}
		}
		if o.S3ForcePathStyle {
			params["force_path_style"] = true
		}
	}
	for k, v := range map[string]string{"encryption_key_file": o.EncryptionKeyFile, "encryption_key_env": o.EncryptionKeyEnv} {
		if v != "" {
			params[k] = v
		}
	}
	for k, v := range extra {
		params[k] = v
	}
	return stage(name, params)
}

// BackupOptions describe a backup.
type BackupOptions struct {
	BootstrapServers []string
	Security         Security // how to reach the cluster
	Topics           []string
	Path             string // a folder, or s3://BUCKET/PREFIX
	Store            StoreOptions
	BackupID         string
	Compression      string // empty: the fs sink's default (zstd)
	Continuous       bool
	// SegmentMaxBytes, SegmentMaxRecords and SegmentMaxInterval rotate
	// segments by size, records and age; 0 leaves the sink's default.
	SegmentMaxBytes    int64
	SegmentMaxRecords  int64
	SegmentMaxInterval time.Duration
	// MaxBrokerOutage is how long the brokers may stay unreachable mid-run;
	// 0 leaves the source's default (5m for a snapshot, unbounded when
	// continuous), negative is unbounded.
	MaxBrokerOutage time.Duration
	// ExcludeTopics are globs of topics to leave out; IncludeInternalTopics
	// lets globs match internal topics.
	ExcludeTopics         []string
	IncludeInternalTopics bool
	// IsolationLevel is read_committed or read_uncommitted; empty leaves
	// the source's default (read_committed).
	IsolationLevel string
	// CompressionLevel is the level of Compression; 0 is its default.
	CompressionLevel int
	// ConsumerGroupSnapshot stores the groups' committed offsets on the
	// topics with the backup's metadata.
	ConsumerGroupSnapshot bool
}

// RestoreOptions describe a restore, whole or for a time window.
type RestoreOptions struct {
	Path             string // a folder, or s3://BUCKET/PREFIX
	Store            StoreOptions
	BackupID         string
	BootstrapServers []string
	Security         Security // how to reach the target cluster
	Topics           []string // backup topics to restore; all when empty
	Partitions       []int32  // source partitions to restore; all when empty
	// TimeWindowStart and TimeWindowEnd are inclusive epoch milliseconds;
	// -1 leaves that side open.
	TimeWindowStart int64
	TimeWindowEnd   int64
	// Filter is a CEL expression over the records (package sdk/celexpr):
	// only those for which it is true are restored; empty for all.
	Filter           string
	TopicMapping     map[string]string
	PartitionMapping map[string]int32
	// TopicIncarnations picks, by topic name, the incarnation (topic ID)
	// of a topic re-created during the backup; the latest when not listed.
	TopicIncarnations map[string]string
	// AllowNonemptyTarget lets the restore start on target partitions that
	// hold records already, appending after them.
	AllowNonemptyTarget bool
	// AllowEmpty lets a restore that selects no record succeed.
	AllowEmpty bool
	// Verify checks every segment of the chosen partitions against its
	// checksums before anything is written.
	Verify bool
	// NoCreateTopics fails the restore on a missing target topic (or one
	// with too few partitions) instead of creating (or growing) it.
	NoCreateTopics bool
	// ReplicationFactor of the topics the restore creates: 0 for the
	// backup's, -1 for the broker default.
	ReplicationFactor int
	// MaxConcurrentPartitions is how many partitions are read from
	// storage at once (0 or 1: one).
	MaxConcurrentPartitions int
	// IncludeOriginalOffsetHeader appends x-original-offset,
	// x-original-partition and x-original-timestamp to each record's
	// headers.
	IncludeOriginalOffsetHeader bool
	// RateLimitRecordsPerSec and RateLimitBytesPerSec bound what the
	// restore produces per second, over the whole run (0: no limit).
	RateLimitRecordsPerSec int64
	RateLimitBytesPerSec   int64
	// Repartitioning spreads target topics' records over partitions by
	// key, by target topic name.
	Repartitioning map[string]restore.Repartition
	// Offsets say how consumer group offsets follow the restore; the
	// restore pipeline itself leaves them alone (Offsets builds those
	// that plan and set them).
	Offsets OffsetOptions
}

func stage(plugin string, params map[string]any) config.Stage {
	st := config.Stage{Plugin: plugin, Params: map[string]json.RawMessage{}}
	for k, v := range params {
		js, err := json.Marshal(v)
		if err != nil {
			panic(fmt.Sprintf("pipelines: parameter %s: %v", k, err)) // only plain values are passed
		}
		st.Params[k] = js
	}
	return st
}

// Backup returns the pipeline of a backup.
func Backup(name string, o BackupOptions) config.Pipeline {
	src := map[string]any{"bootstrap_servers": o.BootstrapServers, "topics": o.Topics, "continuous": o.Continuous}
	if o.MaxBrokerOutage != 0 {
		src["max_broker_outage"] = o.MaxBrokerOutage.String()
	}
	if len(o.ExcludeTopics) > 0 {
		src["exclude_topics"] = o.ExcludeTopics
	}
	if o.IncludeInternalTopics {
		src["include_internal_topics"] = true
	}
	if o.ConsumerGroupSnapshot {
		src["consumer_group_snapshot"] = true
	}
	if o.IsolationLevel != "" {
		src["isolation_level"] = o.IsolationLevel
	}
	o.Security.addTo(src)
	sink := map[string]any{"backup_id": o.BackupID}
	if o.Compression != "" {
		sink["compression"] = o.Compression
	}
	if o.CompressionLevel != 0 {
		sink["compression_level"] = o.CompressionLevel
	}
	if o.SegmentMaxBytes != 0 {
		sink["segment_max_bytes"] = o.SegmentMaxBytes
	}
	if o.SegmentMaxRecords != 0 {
		sink["segment_max_records"] = o.SegmentMaxRecords
	}
	if o.SegmentMaxInterval != 0 {
		sink["flush_interval"] = o.SegmentMaxInterval.String()
	}
	return config.Pipeline{Name: name, Source: stage("kafka", src), Sink: storageStage(o.Path, o.Store, sink)}
}

// Restore returns the pipeline of a restore: storage → kafka. The storage
// source reads only the chosen topics and partitions and the records of
// the time window: it skips segments and batches outside the window unread
// and cuts those that straddle a bound. The kafka sink maps topics and
// partitions and creates each missing target topic with the partitions and
// configs of the backup's metadata. Run it through WithRestoreState, which
// makes it exactly once.
func Restore(name string, o RestoreOptions) config.Pipeline {
	src := map[string]any{
		"backup_id":         o.BackupID,
		"time_window_start": o.TimeWindowStart, "time_window_end": o.TimeWindowEnd,
	}
	if len(o.Topics) > 0 {
		src["topics"] = o.Topics
	}
	if len(o.Partitions) > 0 {
		src["partitions"] = o.Partitions
	}
	if len(o.TopicIncarnations) > 0 {
		src["topic_incarnations"] = o.TopicIncarnations
	}
	if o.Filter != "" {
		src["filter"] = o.Filter
	}
	if o.AllowEmpty {
		src["allow_empty"] = true
	}
	if o.Verify {
		src["verify"] = true
	}
	if o.MaxConcurrentPartitions > 1 {
		src["max_concurrent_partitions"] = o.MaxConcurrentPartitions
	}
	sink := map[string]any{"bootstrap_servers": o.BootstrapServers}
	if len(o.TopicMapping) > 0 {
		sink["topic_mapping"] = o.TopicMapping
	}
	if len(o.PartitionMapping) > 0 {
		sink["partition_mapping"] = o.PartitionMapping
	}
	if o.AllowNonemptyTarget {
		sink["allow_nonempty_target"] = true
	}
	if o.NoCreateTopics {
		sink["create_topics"] = false
	}
	if o.ReplicationFactor != 0 {
		sink["replication_factor"] = o.ReplicationFactor
	}
	if o.IncludeOriginalOffsetHeader {
		sink["include_original_offset_header"] = true
	}
	if len(o.Repartitioning) > 0 {
		rs := map[string]string{}
		for topic, r := range o.Repartitioning {
			rs[topic] = r.String()
		}
		sink["repartitioning"] = rs
	}
	if o.RateLimitRecordsPerSec > 0 {
		sink["rate_limit_records_per_sec"] = o.RateLimitRecordsPerSec
	}
	if o.RateLimitBytesPerSec > 0 {
		sink["rate_limit_bytes_per_sec"] = o.RateLimitBytesPerSec
	}
	o.Security.addTo(sink)
	return config.Pipeline{Name: name, Source: storageStage(o.Path, o.Store, src), Sink: stage("kafka", sink)}
}

// WithRestoreState gives a restore pipeline its state file under stateDir,
// named by the pipeline's identity: the kafka sink keeps the restore's
// progress and offset map there and writes exactly once (package
// sdk/restore). It returns the pipeline and the file.
func WithRestoreState(p config.Pipeline, stateDir string) (config.Pipeline, string) {
	file := filepath.Join(stateDir, p.Name+"-"+p.Identity()+".restore.json")
	params := maps.Clone(p.Sink.Params)
	params["restore_state"], _ = json.Marshal(file)
	p.Sink.Params = params
	return p, file
}

// RestoreSummary is what a restore did, in the terms of a PITR report.
type RestoreSummary struct {
	Restored int64 `json:"records_restored"`
	// Skipped counts records outside the window: those the source skipped
	// or cut (records_pruned) plus any a transform dropped (records_dropped).
	Skipped int64 `json:"records_skipped"`
	// Filtered counts records of the window the filter dropped.
	Filtered  int64 `json:"records_filtered"`
	BytesRead int64 `json:"bytes_read"`
}

// Summarize reads a restore's summary from its run report.
func Summarize(rep *engine.Report) RestoreSummary {
	s := RestoreSummary{Restored: rep.RecordsDurable}
	for _, p := range rep.Plugins {
		s.Skipped += p.Metrics["records_pruned"] + p.Metrics["records_dropped"]
		s.Filtered += p.Metrics["records_filtered"]
		s.BytesRead += p.Metrics["bytes_read"]
	}
	return s
}

// TargetSummary is what a restore wrote to one target partition.
type TargetSummary struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Records   int64  `json:"records"`
	// FirstOffset and LastOffset bound the restore's records; both are
	// the partition's end offset before the restore when it holds none.
	FirstOffset int64 `json:"first_offset"`
	LastOffset  int64 `json:"last_offset"`
}

// TargetsOf lists what a restore's state says it wrote, by target topic
// and partition.
func TargetsOf(st *restore.State) []TargetSummary {
	out := make([]TargetSummary, 0, len(st.Targets))
	for _, t := range st.Targets {
		out = append(out, TargetSummary{Topic: t.Topic, Partition: t.Partition, Records: t.Records(), FirstOffset: t.Base, LastOffset: max(t.Base, t.Next-1)})
	}
	slices.SortFunc(out, func(a, b TargetSummary) int {
		return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	return out
}
