package pipelines

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/kpipe/kpipe/core/config"
	"github.com/kpipe/kpipe/sdk/restore"
)

// CheckRestore returns the pipeline that checks a restore without writing:
// the storage source sends only the metadata of what the restore would
// read (after its checks of the backup), and the kafka sink writes what it
// finds on the target cluster to reportFile (restore.TargetCheck).
func CheckRestore(o RestoreOptions, reportFile string) config.Pipeline {
	p := Restore("validate-restore", o)
	p.Source.Params["metadata_only"] = json.RawMessage("true")
	p.Sink.Params["check_report"], _ = json.Marshal(reportFile)
	p.Sink.Params["connect_timeout"] = json.RawMessage(`"10s"`)
	return p
}

// RestoreValidation is what `kpipe validate-restore` reports: whether the
// restore can run (Valid; Reasons when not), what it would read, where it
// would write, and what the target cluster holds.
type RestoreValidation struct {
	Valid    bool     `json:"valid"`
	Reasons  []string `json:"reasons"`
	Warnings []string `json:"warnings"`
	BackupID string   `json:"backup_id"`
	Window   Window   `json:"time_window"`
	// Selection is the choice of records as a CEL expression.
	Selection        string            `json:"selection"`
	SegmentsMatching int               `json:"segments_matching"`
	SegmentsTotal    int               `json:"segments_total"`
	Records          RecordCount       `json:"records"`
	Bytes            int64             `json:"bytes_to_read"`
	Topics           []TopicValidation `json:"topics"`
	// Target is what the target cluster answered; nil when it was not
	// asked (the backup failed its checks first).
	Target *TargetReach `json:"target,omitempty"`
}

// Window is a time window as a report shows it: each bound as ISO-8601
// and epoch milliseconds (null when open), and its duration when closed.
type Window struct {
	Start      *string `json:"start"`
	StartMs    *int64  `json:"start_ms"`
	End        *string `json:"end"`
	EndMs      *int64  `json:"end_ms"`
	Duration   string  `json:"duration,omitempty"`
	DurationMs *int64  `json:"duration_ms,omitempty"`
}

// RecordCount is how many records a restore would write: exactly, when
// every batch it reads is sent whole, else between AtLeast and AtMost.
type RecordCount struct {
	AtMost  int64 `json:"at_most"`
	AtLeast int64 `json:"at_least"`
	Exact   bool  `json:"exact"`
}

func countOf(atMost, atLeast int64) RecordCount {
	return RecordCount{AtMost: atMost, AtLeast: atLeast, Exact: atMost == atLeast}
}

// TopicValidation is one backed-up topic, its target and the target's
// check.
type TopicValidation struct {
	Topic            string              `json:"topic"`
	Target           string              `json:"target"`
	Records          RecordCount         `json:"records"`
	Partitions       int32               `json:"partitions"`
	TargetPartitions int32               `json:"target_partitions"`
	Repartitioning   string              `json:"repartitioning,omitempty"`
	Chosen           []PartitionPlan     `json:"chosen_partitions"`
	Check            *restore.TopicCheck `json:"target_check,omitempty"`
}

// TargetReach is whether the target cluster answered.
type TargetReach struct {
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	Brokers   int    `json:"brokers,omitempty"`
}

// ValidateRestore puts together the plan of restore o and the check of its
// target (nil when it was not made); backupErr is what the backup's checks
// found (nil: nothing).
func ValidateRestore(o RestoreOptions, plan *RestorePlan, check *restore.TargetCheck, backupErr error) *RestoreValidation {
	v := &RestoreValidation{BackupID: o.BackupID, Window: windowOf(o.TimeWindowStart, o.TimeWindowEnd), Selection: plan.Expression,
		SegmentsMatching: plan.SegmentsMatching, SegmentsTotal: plan.SegmentsTotal, Records: countOf(plan.Records, plan.RecordsAtLeast),
		Bytes: plan.Bytes, Reasons: []string{}, Warnings: []string{}, Topics: []TopicValidation{}}
	if backupErr != nil {
		v.Reasons = append(v.Reasons, backupErr.Error())
	}
	switch {
	case len(plan.Topics) == 0 && !o.AllowEmpty:
		v.Reasons = append(v.Reasons, fmt.Sprintf("no topic of backup %q matches the topics chosen", o.BackupID))
	case plan.Records == 0 && !o.AllowEmpty:
		v.Reasons = append(v.Reasons, fmt.Sprintf("no record of backup %q lies in the chosen topics, partitions and time window %s; choose a window the backup holds (kpipe describe shows its range)", o.BackupID, plan.Window))
	case plan.Records == 0:
		v.Warnings = append(v.Warnings, "the restore selects no record (allowed by allow_empty)")
	}
	checks := map[string]*restore.TopicCheck{}
	if check != nil {
		v.Target = &TargetReach{Reachable: check.Reachable, Error: check.Error, Brokers: check.Brokers}
		if !check.Reachable {
			v.Warnings = append(v.Warnings, fmt.Sprintf("the target cluster did not answer (%s): it was not checked", check.Error))
		}
		for i := range check.Topics {
			c := &check.Topics[i]
			checks[c.Topic] = c
			v.Reasons = append(v.Reasons, c.Problems...)
			v.Warnings = append(v.Warnings, c.Warnings...)
		}
	}
	for _, t := range plan.Topics {
		v.Topics = append(v.Topics, TopicValidation{Topic: t.Topic, Target: t.Target, Records: countOf(t.Records, t.RecordsAtLeast),
			Partitions: t.Partitions, TargetPartitions: t.TargetPartitions, Repartitioning: t.Repartitioning, Chosen: t.Chosen, Check: checks[t.Target]})
	}
	v.Valid = len(v.Reasons) == 0
	return v
}

// windowOf reports a window of inclusive epoch-millisecond bounds (-1:
// open).
func windowOf(start, end int64) Window {
	var w Window
	iso := func(ms int64) *string {
		s := time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
		return &s
	}
	if start >= 0 {
		w.Start, w.StartMs = iso(start), &start
	}
	if end >= 0 {
		w.End, w.EndMs = iso(end), &end
	}
	if start >= 0 && end >= 0 {
		d := end - start
		w.DurationMs = &d
		w.Duration = (time.Duration(d) * time.Millisecond).String()
	}
	return w
}
