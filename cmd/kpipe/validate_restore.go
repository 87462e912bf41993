package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/kpipe/kpipe/pipelines"
	"github.com/kpipe/kpipe/sdk/restore"
)

func newValidateRestoreCmd(g *globals) *cobra.Command {
	var configFile string
	cmd := &cobra.Command{
		Use:   "validate-restore",
		Short: "Check a restore config against the backup and the target cluster, writing nothing",
		Long: `Check the restore a config file describes (the YAML of kpipe restore
--config) and print what it would do, writing nothing anywhere:
  - the time window, as ISO-8601 and epoch milliseconds, with its duration,
    and the choice of records as a CEL expression (window, partitions, filter);
  - segments matching N of M, the records to restore (exact when every batch
    read lies wholly inside the window and no filter is set, else a range
    marked as an estimate) and the bytes to read;
  - each topic → target topic with its count, the partition mappings and the
    repartitioning;
  - the backup's chosen partitions checked as a restore checks them (every
    segment there with its size, every manifest continuous; with verify:
    true every batch against its checksum);
  - the target cluster, when it answers: each target topic exists or will be
    created, its partitions (and those the restore needs), whether it holds
    records, its replication factor, min.insync.replicas, max.message.bytes,
    message.timestamp.type and retention, with what would stop the restore
    and what it would warn of.

The report says VALID or INVALID with the reasons; --format text, json or
yaml. Exit 0 when VALID, 1 when INVALID, 2 for bad input.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadRestoreConfig(configFile)
			if err != nil {
				return err
			}
			r := c.Restore
			if err := checkStore(cmd, r.Path); err != nil {
				return err
			}
			plan, err := planRestore(cmd, g, r)
			if err != nil {
				return err
			}
			check, backupErr, err := checkRestore(cmd, g, r)
			if err != nil {
				return err
			}
			v := pipelines.ValidateRestore(r, plan, check, backupErr)
			if err := printValidateRestore(cmd.OutOrStdout(), g.format, r, v); err != nil {
				return err
			}
			if !v.Valid {
				return fmt.Errorf("the restore of backup %s is INVALID: %d reason(s)", r.BackupID, len(v.Reasons))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&configFile, "config", "", "YAML file of mode: restore describing the restore, as kpipe restore --config reads it (required)")
	return cmd
}

// checkRestore runs the check pipeline of r: the backup's checks, then the
// target's. It returns the target's check (nil when the backup's checks
// stopped it first, with backupErr saying why).
func checkRestore(cmd *cobra.Command, g *globals, r pipelines.RestoreOptions) (*restore.TargetCheck, error, error) {
	dir, err := os.MkdirTemp("", "kpipe-validate-restore-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	h := g.host("")
	defer h.Close()
	o := runOpts{window: 4, inFlightBytes: "8MiB", progressMode: "off", stateDir: dir, fresh: true}
	opts, err := o.engine(h, g, "")
	if err != nil {
		return nil, nil, err
	}
	defer o.close()
	file := filepath.Join(dir, "target-check.json")
	_, runErr := runPipeline(cmd.Context(), pipelines.CheckRestore(r, file), opts)
	var ue usageError
	if errors.As(runErr, &ue) || errors.Is(runErr, errInterrupted) {
		return nil, nil, runErr
	}
	js, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		if runErr == nil {
			runErr = errors.New("the target was not checked")
		}
		return nil, runErr, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var check restore.TargetCheck
	if err := json.Unmarshal(js, &check); err != nil {
		return nil, nil, fmt.Errorf("the target check %s: %v", file, err)
	}
	return &check, runErr, nil
}

// printValidateRestore prints v as text, JSON or YAML.
func printValidateRestore(w io.Writer, format string, r pipelines.RestoreOptions, v *pipelines.RestoreValidation) error {
	switch format {
	case "json":
		return writeJSON(w, v)
	case "yaml":
		// As JSON names the keys.
		js, err := json.Marshal(v)
		if err != nil {
			return err
		}
		var doc any
		if err := json.Unmarshal(js, &doc); err != nil {
			return err
		}
		out, err := yaml.Marshal(doc)
		if err != nil {
			return err
		}
		_, err = w.Write(out)
		return err
	}
	verdict := "VALID"
	if !v.Valid {
		verdict = "INVALID"
	}
	fmt.Fprintf(w, "Restore of backup %s from %s: %s\n", r.BackupID, r.Path, verdict)
	for _, why := range v.Reasons {
		fmt.Fprintf(w, "  ✗ %s\n", why)
	}
	for _, warn := range v.Warnings {
		fmt.Fprintf(w, "  ! %s\n", warn)
	}
	bound := func(iso *string, ms *int64, open string) string {
		if iso == nil {
			return open
		}
		return fmt.Sprintf("%s (%d)", *iso, *ms)
	}
	win := bound(v.Window.Start, v.Window.StartMs, "the start") + " to " + bound(v.Window.End, v.Window.EndMs, "the end")
	if v.Window.Duration != "" {
		win += ", " + v.Window.Duration
	}
	fmt.Fprintf(w, "  time window: %s\n", win)
	fmt.Fprintf(w, "  selection: %s\n", v.Selection)
	fmt.Fprintf(w, "  segments matching: %d of %d\n", v.SegmentsMatching, v.SegmentsTotal)
	fmt.Fprintf(w, "  records: %s; %s to read\n", countText(v.Records), humanBytes(v.Bytes))
	for _, t := range v.Topics {
		byKey := ""
		if t.Repartitioning != "" {
			byKey = ", spread by key (" + t.Repartitioning + ")"
		}
		fmt.Fprintf(w, "  topic %s → %s: %s; %d partitions in the backup, %d in the target%s\n", t.Topic, t.Target, countText(t.Records), t.Partitions, t.TargetPartitions, byKey)
		var moves []string
		for _, p := range t.Chosen {
			to := fmt.Sprint(p.Target)
			if p.Target < 0 {
				to = "by key"
			}
			moves = append(moves, fmt.Sprintf("%d→%s", p.Partition, to))
		}
		fmt.Fprintf(w, "    partitions: %s\n", strings.Join(moves, " "))
		if c := t.Check; c != nil {
			fmt.Fprintf(w, "    target: %s\n", targetText(c))
		}
	}
	if v.Target != nil && !v.Target.Reachable {
		fmt.Fprintf(w, "  target cluster: not reachable (%s)\n", v.Target.Error)
	}
	return nil
}

// countText says how many records, exactly or as an estimate.
func countText(c pipelines.RecordCount) string {
	if c.Exact {
		return thousands(c.AtMost) + " records (exact)"
	}
	return fmt.Sprintf("%s to %s records (estimate: batches a bound cuts or a filter looks into)", thousands(c.AtLeast), thousands(c.AtMost))
}

// targetText sums up a target topic's check on one line.
func targetText(c *restore.TopicCheck) string {
	var parts []string
	switch {
	case c.WillCreate:
		parts = append(parts, fmt.Sprintf("will be created with %d partitions", c.Needs))
	case !c.Exists:
		parts = append(parts, "does not exist")
	case c.GrowTo > 0:
		parts = append(parts, fmt.Sprintf("exists with %d partitions, will grow to %d", c.Partitions, c.GrowTo))
	default:
		parts = append(parts, fmt.Sprintf("exists with %d partitions (%d needed)", c.Partitions, c.Needs))
	}
	if c.Exists {
		if c.Records > 0 {
			parts = append(parts, fmt.Sprintf("holds %s records", thousands(c.Records)))
		} else {
			parts = append(parts, "empty")
		}
	}
	parts = append(parts, fmt.Sprintf("replication factor %d", c.ReplicationFactor))
	if c.MinInsyncReplicas > 0 {
		parts = append(parts, fmt.Sprintf("min.insync.replicas %d", c.MinInsyncReplicas))
	}
	if c.MaxMessageBytes > 0 {
		parts = append(parts, fmt.Sprintf("max.message.bytes %d", c.MaxMessageBytes))
	}
	if c.TimestampType != "" {
		parts = append(parts, "message.timestamp.type "+c.TimestampType)
	}
	if c.RetentionMs != nil {
		parts = append(parts, fmt.Sprintf("retention.ms %d", *c.RetentionMs))
	}
	return strings.Join(parts, ", ")
}
