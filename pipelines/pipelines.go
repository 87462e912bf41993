// Package pipelines turns the Kafka backup and restore verbs of the CLI into
// pipeline graphs for the engine: a backup is kafka → fs, a restore is
// fs → [filter] → [remap] → kafka.
package pipelines

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/kpipe/kpipe/core/config"
	"github.com/kpipe/kpipe/core/engine"
	"github.com/kpipe/kpipe/sdk/segment"
)

// BackupOptions describe a backup.
type BackupOptions struct {
	BootstrapServers []string
	Topics           []string
	Path             string
	BackupID         string
	Compression      string // empty: the fs sink's default (zstd)
	Continuous       bool
}

// RestoreOptions describe a restore, whole or for a time window.
type RestoreOptions struct {
	Path             string
	BackupID         string
	BootstrapServers []string
	Topics           []string // backup topics to restore; all when empty
	Partitions       []int32  // source partitions to restore; all when empty
	// TimeWindowStart and TimeWindowEnd are inclusive epoch milliseconds;
	// -1 leaves that side open.
	TimeWindowStart  int64
	TimeWindowEnd    int64
	TopicMapping     map[string]string
	PartitionMapping map[string]int32
	// TopicPartitions gives the partitions of target topics the restore
	// creates; see PlanTopics.
	TopicPartitions map[string]int32
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
	sink := map[string]any{"path": o.Path, "backup_id": o.BackupID}
	if o.Compression != "" {
		sink["compression"] = o.Compression
	}
	return config.Pipeline{Name: name, Source: stage("kafka", src), Sink: stage("fs", sink)}
}

// Restore returns the pipeline of a restore. The fs source skips segments
// outside the time window; the filter drops the records outside it in the
// segments that straddle a bound.
func Restore(name string, o RestoreOptions) config.Pipeline {
	src := map[string]any{
		"path": o.Path, "backup_id": o.BackupID,
		"time_window_start": o.TimeWindowStart, "time_window_end": o.TimeWindowEnd,
	}
	if len(o.Topics) > 0 {
		src["topics"] = o.Topics
	}
	if len(o.Partitions) > 0 {
		src["partitions"] = o.Partitions
	}
	p := config.Pipeline{Name: name, Source: stage("fs", src)}
	if o.TimeWindowStart >= 0 || o.TimeWindowEnd >= 0 {
		p.Transforms = append(p.Transforms, stage("filter", map[string]any{
			"time_window_start": o.TimeWindowStart, "time_window_end": o.TimeWindowEnd,
		}))
	}
	if len(o.TopicMapping) > 0 || len(o.PartitionMapping) > 0 {
		remap := map[string]any{}
		if len(o.TopicMapping) > 0 {
			remap["topic_mapping"] = o.TopicMapping
		}
		if len(o.PartitionMapping) > 0 {
			remap["partition_mapping"] = o.PartitionMapping
		}
		p.Transforms = append(p.Transforms, stage("remap", remap))
	}
	sink := map[string]any{"bootstrap_servers": o.BootstrapServers}
	if len(o.TopicPartitions) > 0 {
		sink["topic_partitions"] = o.TopicPartitions
	}
	p.Sink = stage("kafka", sink)
	return p
}

// PlanTopics fills o.TopicPartitions from the backup: each target topic gets
// enough partitions for the source partitions that will land in it, so that
// the sink creates it whole instead of growing it.
func PlanTopics(o *RestoreOptions) error {
	parts, err := segment.Backup{Root: o.Path, ID: o.BackupID}.Partitions()
	if err != nil {
		return err
	}
	o.TopicPartitions = map[string]int32{}
	for _, p := range parts {
		topic, part := p.Topic, p.Partition
		if t, ok := o.TopicMapping[topic]; ok {
			topic = t
		}
		if m, ok := o.PartitionMapping[strconv.Itoa(int(part))]; ok {
			part = m
		}
		o.TopicPartitions[topic] = max(o.TopicPartitions[topic], part+1)
	}
	return nil
}

// RestoreSummary is what a restore did, in the terms of a PITR report.
type RestoreSummary struct {
	Restored int64 `json:"records_restored"`
	// Skipped counts records outside the window or the chosen partitions:
	// those in segments the source skipped unread plus those the filter dropped.
	Skipped int64 `json:"records_skipped"`
}

// Summarize reads a restore's summary from its run report.
func Summarize(rep *engine.Report) RestoreSummary {
	s := RestoreSummary{Restored: rep.RecordsOut}
	for _, p := range rep.Plugins {
		s.Skipped += p.Metrics["records_pruned"] + p.Metrics["records_dropped"]
	}
	return s
}
