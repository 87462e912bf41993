package pipelines

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/record"
	"github.com/kpipe/kpipe/sdk/restore"
	"github.com/kpipe/kpipe/sdk/storage"
)

// RestorePlan is what a restore will read and where it will write, from
// the backup's index alone: no segment is read, no cluster asked.
type RestorePlan struct {
	BackupID string        `json:"backup_id"`
	Window   record.Window `json:"-"`
	// WindowText is the window as the reports show it.
	WindowText string      `json:"time_window"`
	Topics     []TopicPlan `json:"topics"`
	// SegmentsMatching of SegmentsTotal (of the chosen partitions) hold
	// batches that can have records in the window.
	SegmentsMatching int `json:"segments_matching"`
	SegmentsTotal    int `json:"segments_total"`
	// Records and Bytes count the batches to read: with a window, the
	// batches a bound cuts count whole, so Records is at most that.
	// RecordsAtLeast counts the batches sent whole (the window covers
	// them, no filter): when it equals Records, the count is exact.
	Records        int64 `json:"records_at_most"`
	RecordsAtLeast int64 `json:"records_at_least"`
	Bytes          int64 `json:"bytes_to_read"`
	// Expression is the choice of records as CEL (the window, the
	// partitions and the filter).
	Expression string `json:"selection"`
}

// Exact says whether the plan's record counts are exact.
func (p *RestorePlan) Exact() bool { return p.Records == p.RecordsAtLeast }

// TopicPlan is one backed-up topic and its target.
type TopicPlan struct {
	Topic            string `json:"topic"`
	Target           string `json:"target"`
	Partitions       int32  `json:"partitions"`
	TargetPartitions int32  `json:"target_partitions"`
	// Repartitioning is how the target's records are spread by key, such
	// as murmur2:6; empty when they keep their partitions.
	Repartitioning string          `json:"repartitioning,omitempty"`
	Records        int64           `json:"records_at_most"`
	RecordsAtLeast int64           `json:"records_at_least"`
	Chosen         []PartitionPlan `json:"chosen_partitions"`
}

// PartitionPlan is one chosen partition of a topic.
type PartitionPlan struct {
	Partition int32 `json:"partition"`
	// Target is -1 when the records go to partitions by key.
	Target         int32 `json:"target_partition"`
	Segments       int   `json:"segments"`
	Records        int64 `json:"records_at_most"`
	RecordsAtLeast int64 `json:"records_at_least"`
	Bytes          int64 `json:"bytes"`
}

// PlanRestore plans the restore o from the backup's metadata and
// manifests, read through the storage service st.
func PlanRestore(ctx context.Context, st sdk.StorageReader, o RestoreOptions) (*RestorePlan, error) {
	_, meta, err := st.ReadMetadata(ctx, o.BackupID)
	if err != nil {
		return nil, err
	}
	sel := storage.Selection{Topics: o.Topics, Partitions: o.Partitions, Window: record.Window{Start: o.TimeWindowStart, End: o.TimeWindowEnd}, Filter: o.Filter}
	m, _ := restore.NewMapping(o.TopicMapping, o.PartitionMapping)
	m.Repartitions = o.Repartitioning
	plan := &RestorePlan{BackupID: o.BackupID, Window: sel.Window, WindowText: sel.Window.String(), Expression: sel.FullExpression()}
	for _, t := range meta.Topics {
		if !sel.WantsTopic(t.Name) {
			continue
		}
		target := m.Metadata(sdk.Metadata{Topics: []sdk.TopicMetadata{t}}).Topics[0]
		tp := TopicPlan{Topic: t.Name, Target: target.Name, Partitions: t.Partitions, TargetPartitions: target.Partitions}
		rp, byKey := m.Repartitioned(target.Name)
		if byKey {
			tp.Repartitioning = rp.String()
		}
		for p := range t.Partitions {
			if !sel.Wants(t.Name, p) {
				continue
			}
			raw, err := st.ReadManifest(ctx, o.BackupID, t.Name, p)
			if err != nil {
				return nil, err
			}
			pp := PartitionPlan{Partition: p, Target: m.Partition(p)}
			if byKey {
				pp.Target = -1
			}
			for _, js := range raw {
				var e storage.Entry
				if err := json.Unmarshal(js, &e); err != nil {
					return nil, fmt.Errorf("manifest of %s/%d: %w", t.Name, p, err)
				}
				if e.Kind != storage.KindSegment || (e.TopicID != "" && e.TopicID != incarnation(o, t)) {
					continue
				}
				plan.SegmentsTotal++
				read, _ := sel.Batches(e, -1)
				if len(read) == 0 {
					continue
				}
				plan.SegmentsMatching++
				pp.Segments++
				for _, i := range read {
					pp.Records += e.Batches[i].Records
					pp.Bytes += e.Batches[i].Length
					if sel.Whole(e.Batches[i], -1) {
						pp.RecordsAtLeast += e.Batches[i].Records
					}
				}
			}
			tp.Records += pp.Records
			tp.RecordsAtLeast += pp.RecordsAtLeast
			plan.Records += pp.Records
			plan.RecordsAtLeast += pp.RecordsAtLeast
			plan.Bytes += pp.Bytes
			tp.Chosen = append(tp.Chosen, pp)
		}
		plan.Topics = append(plan.Topics, tp)
	}
	return plan, nil
}

// incarnation is the topic ID a restore reads of topic t.
func incarnation(o RestoreOptions, t sdk.TopicMetadata) string {
	if id := o.TopicIncarnations[t.Name]; id != "" {
		return id
	}
	return t.ID.String()
}
