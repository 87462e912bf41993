package pipelines

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/kpipe/kpipe/core/config"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/restore"
)

// OffsetOptions say how consumer group offsets follow a restore: by which
// strategy (package sdk/restore), for which groups, and whether kpipe
// restore applies them after the data (Reset).
type OffsetOptions struct {
	// Strategy is one of restore.Strategies; empty is skip.
	Strategy string
	// Groups are names or globs; empty: every group the snapshot (or the
	// source cluster, for cluster-scan) has offsets of on the restored
	// topics.
	Groups []string
	// Timestamp is the time of the timestamp strategy, epoch ms; -1 when
	// not given.
	Timestamp int64
	// Manual are the manual strategy's offsets, GROUP:TOPIC:PARTITION:OFFSET
	// on target topics.
	Manual []string
	// SourceCluster are the live source cluster's brokers, for
	// cluster-scan.
	SourceCluster []string
	// Reset makes kpipe restore apply the offsets after the data.
	Reset bool
}

// Planned says whether the options plan any offset.
func (o OffsetOptions) Planned() bool { return o.Strategy != "" && o.Strategy != restore.StrategySkip }

// Check says what the strategy lacks, naming the config key and the flag.
func (o OffsetOptions) Check() error {
	if !o.Planned() {
		return fmt.Errorf("consumer_group_strategy (--consumer-group-strategy) is skip, which sets no offset: pick one of %s", strings.Join(restore.Strategies[1:], ", "))
	}
	if err := restore.CheckStrategy(o.Strategy); err != nil {
		return fmt.Errorf("consumer_group_strategy (--consumer-group-strategy): %v", err)
	}
	if err := restore.CheckGroupPatterns(o.Groups); err != nil {
		return fmt.Errorf("consumer_groups (--consumer-groups): %v", err)
	}
	switch o.Strategy {
	case restore.StrategyTimestamp:
		if o.Timestamp < 0 {
			return fmt.Errorf("the timestamp strategy needs the time to put the groups at: set offset_reset_timestamp (--timestamp), epoch milliseconds or ISO-8601")
		}
	case restore.StrategyClusterScan:
		if len(o.SourceCluster) == 0 {
			return fmt.Errorf("the cluster-scan strategy reads the groups' offsets from the live source cluster: set source_cluster.bootstrap_servers (--source-cluster-bootstrap-servers)")
		}
	case restore.StrategyManual:
		if len(o.Manual) == 0 {
			return fmt.Errorf("the manual strategy takes the offsets listed: set manual_offsets (--manual-offset GROUP:TOPIC:PARTITION:OFFSET)")
		}
	}
	return nil
}

// Offset modes of the kafka sink.
const (
	OffsetsPlan     = "offsets_plan"
	OffsetsExecute  = "offsets_execute"
	OffsetsRollback = "offsets_rollback"
)

// Offsets returns the pipeline that plans (OffsetsPlan, writing the plan
// to file), executes or rolls back (the plan in file, writing the result
// to report) the offsets of the restore r, whose state is under stateDir.
// The storage source sends only the backup's metadata (the groups'
// snapshot among it); the kafka sink does the rest and writes no record.
func Offsets(r RestoreOptions, stateDir, mode, file, report string) config.Pipeline {
	p, stateFile := WithRestoreState(Restore("restore", r), stateDir)
	p.Name = "offset-reset"
	p.Source.Params["metadata_only"] = json.RawMessage("true")
	p.Source.Params["preflight"] = json.RawMessage("false")
	add := func(k string, v any) {
		p.Sink.Params[k], _ = json.Marshal(v)
	}
	add("restore_state", stateFile)
	add(mode, file)
	if mode != OffsetsPlan {
		add("offsets_report", report)
		return p
	}
	o := r.Offsets
	add("consumer_group_strategy", o.Strategy)
	add("offsets_backup_id", r.BackupID)
	if len(o.Groups) > 0 {
		add("consumer_groups", o.Groups)
	}
	if o.Timestamp >= 0 {
		add("offset_reset_timestamp", o.Timestamp)
	}
	if len(o.Manual) > 0 {
		add("manual_offsets", o.Manual)
	}
	if len(o.SourceCluster) > 0 {
		add("source_cluster_bootstrap_servers", o.SourceCluster)
	}
	return p
}

// PlanFile is where kpipe restore and three-phase-restore keep the offset
// plan of the restore whose state is stateFile.
func PlanFile(stateFile string) string {
	return strings.TrimSuffix(stateFile, ".restore.json") + ".offsets-plan.json"
}

// loadOffsetOptions reads consumer_group_strategy, consumer_groups,
// reset_consumer_offsets, offset_reset_timestamp, manual_offsets and
// source_cluster.bootstrap_servers (keys holds each option's key as
// given).
func loadOffsetOptions(d *doc, keys map[string]string, o *OffsetOptions) error {
	o.Timestamp = -1
	if k := keys["consumer_group_strategy"]; d.has(k) {
		o.Strategy = strings.ToLower(d.str(k))
		if err := restore.CheckStrategy(o.Strategy); err != nil {
			return d.errorf(d.values[k], k, "%v", err)
		}
	}
	if k := keys["consumer_groups"]; d.has(k) {
		o.Groups = d.strs(k)
		if err := restore.CheckGroupPatterns(o.Groups); err != nil {
			return d.errorf(d.values[k], k, "%v", err)
		}
	}
	var err error
	k := keys["reset_consumer_offsets"]
	if o.Reset, _, err = d.bool(k); err != nil {
		return err
	}
	if o.Reset && !o.Planned() {
		return d.errorf(d.values[k], k, "is true, but consumer_group_strategy is skip, which sets no offset: pick a strategy (%s)", strings.Join(restore.Strategies[1:], ", "))
	}
	if k := keys["offset_reset_timestamp"]; d.has(k) {
		v, perr := param.ParseTimeBound(d.str(k))
		if perr != nil {
			return d.errorf(d.values[k], k, "%v", perr)
		}
		if cerr := param.CheckEpochMillis("offset_reset_timestamp", v); cerr != nil {
			return d.errorf(d.values[k], k, "%s", cerr.Message)
		}
		o.Timestamp = v
	}
	k, err = oneOf(d, "restore.source_cluster.bootstrap_servers", "restore.options.source_cluster.bootstrap_servers")
	if err != nil {
		return err
	}
	o.SourceCluster = d.strs(k)
	return loadManualOffsets(d, keys["manual_offsets"], o)
}

// loadManualOffsets reads manual_offsets: a list of {group, topic,
// partition, offset}, each a target partition.
func loadManualOffsets(d *doc, key string, o *OffsetOptions) error {
	n := d.values[key]
	if n == nil {
		return nil
	}
	shape := "must be a list of {group: G, topic: T, partition: P, offset: O}, each a target topic's partition and the offset the group resumes at"
	if n.Kind != yaml.SequenceNode {
		return d.errorf(n, key, "%s", shape)
	}
	for _, e := range n.Content {
		if e.Kind != yaml.MappingNode {
			return d.errorf(e, key, "%s", shape)
		}
		got := map[string]string{}
		for j := 0; j+1 < len(e.Content); j += 2 {
			k, v := e.Content[j], e.Content[j+1]
			switch k.Value {
			case "group", "topic", "partition", "offset":
				got[k.Value] = v.Value
			default:
				return d.errorf(k, key+"."+k.Value, "unknown key%s", suggest(k.Value, []string{"group", "topic", "partition", "offset"}))
			}
		}
		for _, f := range []string{"group", "topic", "partition", "offset"} {
			if got[f] == "" {
				return d.errorf(e, key, "an entry lacks %s; %s", f, shape)
			}
		}
		for _, f := range []string{"partition", "offset"} {
			if v, err := strconv.ParseInt(got[f], 10, 64); err != nil || v < 0 {
				return d.errorf(e, key, "%s %q is not a number from 0 up", f, got[f])
			}
		}
		o.Manual = append(o.Manual, got["group"]+":"+got["topic"]+":"+got["partition"]+":"+got["offset"])
	}
	return nil
}
