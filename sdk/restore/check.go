package restore

// TargetCheck is what the kafka sink, asked only to check (its parameter
// check_report), finds of a restore's target cluster before anything is
// written: for each target topic, what it is, what the restore would do to
// it, what would stop the restore (Problems) and what the restore would
// not want (Warnings). It writes it as JSON to the file check_report
// names, where `kpipe validate-restore` reads it.
type TargetCheck struct {
	// Reachable is false when the cluster did not answer; Error says why.
	Reachable bool         `json:"reachable"`
	Error     string       `json:"error,omitempty"`
	Brokers   int          `json:"brokers,omitempty"`
	Topics    []TopicCheck `json:"topics"`
}

// TopicCheck is one target topic.
type TopicCheck struct {
	Topic  string `json:"topic"`
	Exists bool   `json:"exists"`
	// Partitions is how many it has (0 when it does not exist), Needs how
	// many the restore needs, WillCreate and GrowTo what the restore would
	// do (GrowTo 0: nothing).
	Partitions int32 `json:"partitions"`
	Needs      int32 `json:"partitions_needed"`
	WillCreate bool  `json:"will_create,omitempty"`
	GrowTo     int32 `json:"grow_to,omitempty"`
	// Records it holds now, over its partitions (end offset - start).
	Records int64 `json:"records_held"`
	// ReplicationFactor it has, or would be created with (0: the broker
	// default, unknown).
	ReplicationFactor int `json:"replication_factor"`
	// The configs in effect, or those it would be created with ("" or 0
	// when unknown).
	MinInsyncReplicas int      `json:"min_insync_replicas,omitempty"`
	MaxMessageBytes   int64    `json:"max_message_bytes,omitempty"`
	TimestampType     string   `json:"message_timestamp_type,omitempty"`
	RetentionMs       *int64   `json:"retention_ms,omitempty"`
	CleanupPolicy     string   `json:"cleanup_policy,omitempty"`
	Problems          []string `json:"problems,omitempty"`
	Warnings          []string `json:"warnings,omitempty"`
}
