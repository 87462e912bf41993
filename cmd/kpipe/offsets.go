package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kpipe/kpipe/pipelines"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/restore"
)

// offsetFlags are kpipe restore's flags of consumer offset recovery.
type offsetFlags struct {
	strategy  string
	groups    []string
	reset     bool
	timestamp string
	manual    []string
	source    []string
}

const strategyHelp = "skip (leave offsets alone), group-snapshot (the offsets the backup's snapshot holds, mapped by the restore's offset map), header-based (the same, mapped by the x-original-* headers of the target's records), timestamp (the first record at or after a time), cluster-scan (the offsets the groups have now on the live source cluster, mapped by the offset map) or manual (the offsets listed)"

func (f *offsetFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.strategy, "consumer-group-strategy", restore.StrategySkip, "how consumer group offsets follow the restore: "+strategyHelp)
	fs.StringSliceVar(&f.groups, "consumer-groups", nil, "groups whose offsets to set, names or globs, comma separated; empty: every group the backup's snapshot (for cluster-scan: the source cluster) has offsets of on the restored topics")
	fs.BoolVar(&f.reset, "reset-consumer-offsets", false, "after the data, plan the groups' offsets by --consumer-group-strategy, set them and read them back, as three-phase-restore does")
	fs.StringVar(&f.timestamp, "offset-reset-timestamp", "", "with the timestamp strategy: the time to put the groups at, epoch milliseconds or ISO-8601")
	fs.StringSliceVar(&f.manual, "manual-offset", nil, "with the manual strategy: GROUP:TOPIC:PARTITION:OFFSET, a target topic's partition and the offset the group resumes at; repeat or comma separate")
	fs.StringSliceVar(&f.source, "source-cluster-bootstrap-servers", nil, "with the cluster-scan strategy: brokers of the live source cluster, reached with the target's security settings")
}

// offsetFlagNames are the flags a --config file replaces.
var offsetFlagNames = []string{"consumer-group-strategy", "consumer-groups", "reset-consumer-offsets", "offset-reset-timestamp", "manual-offset", "source-cluster-bootstrap-servers"}

// options reads the flags as OffsetOptions.
func (f *offsetFlags) options() (pipelines.OffsetOptions, error) {
	o := pipelines.OffsetOptions{Strategy: strings.ToLower(f.strategy), Groups: f.groups, Reset: f.reset, Manual: f.manual, SourceCluster: f.source, Timestamp: -1}
	if err := restore.CheckStrategy(o.Strategy); err != nil {
		return o, badInput("--consumer-group-strategy %v", err)
	}
	if f.timestamp != "" {
		ts, err := parseTime("--offset-reset-timestamp", f.timestamp)
		if err != nil {
			return o, err
		}
		o.Timestamp = ts
	}
	if o.Reset || o.Planned() {
		if err := o.Check(); err != nil {
			return o, badInput("%v", err)
		}
	}
	return o, nil
}

// parseTime reads a time given as epoch milliseconds or ISO-8601.
func parseTime(flag, v string) (int64, error) {
	ts, err := param.ParseTimeBound(v)
	if err != nil {
		return 0, badInput("%s %v", flag, err)
	}
	if cerr := param.CheckEpochMillis(flag, ts); cerr != nil {
		return 0, badInput("%s %s", flag, cerr.Message)
	}
	return ts, nil
}

func newOffsetResetCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "offset-reset",
		Short: "Plan, execute or roll back a reset of consumer group offsets after a restore",
		Long: `Move consumer groups to where they should resume on the restored topics,
in two steps: plan (writes a plan file and changes nothing), then execute
(applies it). The rule: a group's committed offset O on a source partition
means "the next record to process is O"; on the target partition the group
resumes at the first restored record whose source offset is O or more (the
restore's offset map says where each landed), or after the last restored
record when every one came before O. A target partition that several source
partitions write to (a merge, a repartitioning) takes the smallest of their
positions, which loses nothing; the plan says how many records the group
will read again.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newOffsetPlanCmd(g), newOffsetExecuteCmd(g, false), newOffsetExecuteCmd(g, true))
	return cmd
}

func newOffsetPlanCmd(g *globals) *cobra.Command {
	var configFile, output, stateDir, strategy, timestamp string
	var groups []string
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Compute the consumer group offsets after a restore, writing a plan and changing nothing",
		Long: `Compute where each consumer group resumes on the restored topics, by the
strategy of the restore config (consumer_group_strategy) or --strategy, and
write the plan as JSON to --output: per group, target topic and partition the
offset committed now (null: none), the new offset, the source offsets it
comes from, the strategy, the reason, and how many records the group will
read again. Nothing is changed on any cluster. The strategies that read the
restore's offset map (group-snapshot, cluster-scan) need the restore
finished, its state under --state-dir.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := required(map[string]bool{"--config": configFile != "", "--output": output != ""}); err != nil {
				return err
			}
			c, err := pipelines.LoadRestore(configFile)
			if err != nil {
				return usageError{err}
			}
			r := c.Restore
			if cmd.Flags().Changed("strategy") {
				r.Offsets.Strategy = strings.ToLower(strategy)
			}
			if cmd.Flags().Changed("groups") {
				r.Offsets.Groups = groups
			}
			if timestamp != "" {
				if r.Offsets.Timestamp, err = parseTime("--timestamp", timestamp); err != nil {
					return err
				}
			}
			if err := r.Offsets.Check(); err != nil {
				return badInput("%v", err)
			}
			if stateDir == "" {
				stateDir = ".kpipe/state"
			}
			plan, err := planOffsets(cmd, g, r, stateDir, output)
			if err != nil {
				return err
			}
			return printOffsetPlan(cmd.OutOrStdout(), g.format, plan, output)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "the restore's YAML config, as kpipe restore --config reads it (required)")
	f.StringVar(&output, "output", "", "file to write the plan to, as JSON (required)")
	f.StringVar(&stateDir, "state-dir", "", "folder of the restore's state, as kpipe restore used it (default .kpipe/state)")
	f.StringVar(&strategy, "strategy", "", "the strategy, instead of the config's consumer_group_strategy: "+strategyHelp)
	f.StringVar(&timestamp, "timestamp", "", "with the timestamp strategy: the time to put the groups at, epoch milliseconds or ISO-8601 (instead of offset_reset_timestamp)")
	f.StringSliceVar(&groups, "groups", nil, "groups to move, names or globs, comma separated (instead of the config's consumer_groups)")
	return cmd
}

func newOffsetExecuteCmd(g *globals, rollback bool) *cobra.Command {
	var configFile, planFile string
	use, short, long := "execute", "Apply an offset plan: commit its offsets and read them back",
		`Commit the offsets of the plan file to the target cluster of the restore
config, then read them back. A group with active members is refused, naming
them, before anything changes. The offsets replaced are kept beside the plan
(PLAN.rollback.json, written by the first execution only), so that kpipe
offset-reset rollback puts them back. An offset already at its planned value
is left alone: executing a plan twice changes nothing the second time.`
	mode := pipelines.OffsetsExecute
	if rollback {
		use, short, long = "rollback", "Put back the offsets an execution of a plan replaced",
			`Put back the offsets that kpipe offset-reset execute replaced (kept in
PLAN.rollback.json): each group's offset as it was, or none where none was
committed. A group with active members is refused, naming them, before
anything changes.`
		mode = pipelines.OffsetsRollback
	}
	cmd := &cobra.Command{
		Use: use, Short: short, Long: long, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := required(map[string]bool{"--config": configFile != "", "--plan": planFile != ""}); err != nil {
				return err
			}
			c, err := pipelines.LoadRestore(configFile)
			if err != nil {
				return usageError{err}
			}
			if _, err := os.Stat(planFile); err != nil {
				return badInput("--plan %s: %v", planFile, err)
			}
			res, err := runOffsets(cmd, g, c.Restore, "", mode, planFile)
			if err != nil {
				return err
			}
			return printOffsetResult(cmd.OutOrStdout(), g.format, use, res)
		},
	}
	cmd.Flags().StringVar(&configFile, "config", "", "the restore's YAML config, naming the target cluster (required)")
	cmd.Flags().StringVar(&planFile, "plan", "", "the plan file kpipe offset-reset plan wrote (required)")
	return cmd
}

// planOffsets runs the plan pipeline of r and reads the plan it wrote.
func planOffsets(cmd *cobra.Command, g *globals, r pipelines.RestoreOptions, stateDir, file string) (*restore.OffsetPlan, error) {
	if _, err := runOffsets(cmd, g, r, stateDir, pipelines.OffsetsPlan, file); err != nil {
		return nil, err
	}
	return restore.LoadPlan(file)
}

// runOffsets runs an offsets pipeline of r (its engine state in a
// folder of its own: these runs keep no checkpoint) and, for an execution
// or a rollback, reads what it did.
func runOffsets(cmd *cobra.Command, g *globals, r pipelines.RestoreOptions, stateDir, mode, file string) (*restore.OffsetResult, error) {
	dir, err := os.MkdirTemp("", "kpipe-offsets-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	h := g.host("")
	defer h.Close()
	o := runOpts{window: 4, inFlightBytes: "8MiB", progressMode: "off", stateDir: dir, fresh: true}
	opts, err := o.engine(h, g, "")
	if err != nil {
		return nil, err
	}
	defer o.close()
	report := filepath.Join(dir, "offsets-report.json")
	if _, err := runPipeline(cmd.Context(), pipelines.Offsets(r, stateDir, mode, file, report), opts); err != nil {
		return nil, err
	}
	if mode == pipelines.OffsetsPlan {
		return nil, nil
	}
	data, err := os.ReadFile(report)
	if err != nil {
		return nil, fmt.Errorf("the %s wrote no report: %w", mode, err)
	}
	var res restore.OffsetResult
	if err := json.Unmarshal(data, &res); err != nil {
		return nil, fmt.Errorf("the report of %s: %w", mode, err)
	}
	return &res, nil
}

// printOffsetPlan prints the plan: a line per offset, then its notes; as
// JSON, the plan itself.
func printOffsetPlan(w io.Writer, format string, p *restore.OffsetPlan, file string) error {
	if format == "json" {
		return writeJSON(w, p)
	}
	fmt.Fprintf(w, "offset plan of backup %s by %s: %d offset(s) of %d group(s), written to %s; nothing was changed\n", p.BackupID, p.Strategy, len(p.Partitions), len(p.Groups), file)
	for _, c := range p.Partitions {
		fmt.Fprintf(w, "  %s\n", changeText(c))
	}
	for _, n := range p.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	return nil
}

// changeText is one offset of a plan or a result on a line.
func changeText(c restore.OffsetChange) string {
	cur := "none"
	if c.CurrentOffset != nil {
		cur = fmt.Sprint(*c.CurrentOffset)
	}
	to := fmt.Sprint(c.NewOffset)
	if c.NewOffset < 0 {
		to = "none"
	}
	again := ""
	if c.Repeats > 0 {
		again = fmt.Sprintf(", %d record(s) read again", c.Repeats)
		if !c.RepeatsExact {
			again = fmt.Sprintf(", at most %d record(s) read again", c.Repeats)
		}
	}
	return fmt.Sprintf("group %s %s/%d: %s → %s%s (%s)", c.Group, c.Topic, c.Partition, cur, to, again, c.Reason)
}

// printOffsetResult prints what an execution or a rollback did.
func printOffsetResult(w io.Writer, format, what string, res *restore.OffsetResult) error {
	if format == "json" {
		return writeJSON(w, res)
	}
	fmt.Fprintln(w, resultLine(what, res))
	for _, c := range res.Changed {
		fmt.Fprintf(w, "  %s\n", changeText(c))
	}
	return nil
}

func resultLine(what string, res *restore.OffsetResult) string {
	verified := ""
	if res.Verified {
		verified = ", read back and verified"
	}
	rb := ""
	if what == "execute" {
		rb = fmt.Sprintf("; the offsets replaced are in %s (kpipe offset-reset rollback puts them back)", res.RollbackFile)
	}
	return fmt.Sprintf("offset-reset %s: %d offset(s) changed, %d already as planned%s%s", what, len(res.Changed), res.Unchanged, verified, rb)
}

// phase is one phase of a three-phase restore as the report shows it.
type phase struct {
	Name       string `json:"phase"`
	DurationMS int64  `json:"duration_ms"`
	// Skipped says why the phase had nothing to do (done by an earlier
	// run).
	Skipped string `json:"skipped,omitempty"`
}

// resetOffsets runs phases 2 and 3 of a restore whose state is stateFile:
// the offset plan, kept beside the state (an earlier run's plan is used
// again: the offsets it read as current may have been changed since by
// its own execution), then its execution.
func resetOffsets(cmd *cobra.Command, g *globals, r pipelines.RestoreOptions, stateDir, stateFile string) ([]phase, *restore.OffsetPlan, *restore.OffsetResult, error) {
	planFile := pipelines.PlanFile(stateFile)
	start := time.Now()
	plan, err := restore.LoadPlan(planFile)
	p2 := phase{Name: "plan"}
	switch {
	case err == nil:
		p2.Skipped = "the plan of an earlier run, " + planFile
	case errors.Is(err, os.ErrNotExist):
		if plan, err = planOffsets(cmd, g, r, stateDir, planFile); err != nil {
			return nil, nil, nil, err
		}
	default:
		return nil, nil, nil, err
	}
	p2.DurationMS = time.Since(start).Milliseconds()
	start = time.Now()
	res, err := runOffsets(cmd, g, r, stateDir, pipelines.OffsetsExecute, planFile)
	if err != nil {
		return []phase{p2}, plan, nil, err
	}
	return []phase{p2, {Name: "execute", DurationMS: time.Since(start).Milliseconds()}}, plan, res, nil
}

// printOffsetPhases prints phases 2 and 3 after the restore's report.
func printOffsetPhases(w io.Writer, phases []phase, plan *restore.OffsetPlan, res *restore.OffsetResult, planFile string) {
	for _, p := range phases {
		d := (time.Duration(p.DurationMS) * time.Millisecond).String()
		switch p.Name {
		case "plan":
			how := "computed"
			if p.Skipped != "" {
				how = "taken from an earlier run"
			}
			fmt.Fprintf(w, "phase 2, plan: %d offset(s) of %d group(s) by %s, %s in %s: %s\n", len(plan.Partitions), len(plan.Groups), plan.Strategy, how, d, planFile)
			for _, c := range plan.Partitions {
				fmt.Fprintf(w, "  %s\n", changeText(c))
			}
			for _, n := range plan.Notes {
				fmt.Fprintf(w, "  note: %s\n", n)
			}
		case "execute":
			fmt.Fprintf(w, "phase 3, execute: %s, in %s\n", strings.TrimPrefix(resultLine("execute", res), "offset-reset execute: "), d)
		}
	}
}

func newThreePhaseRestoreCmd(g *globals) *cobra.Command {
	var o runOpts
	var configFile string
	cmd := &cobra.Command{
		Use:   "three-phase-restore",
		Short: "Restore a backup, then plan and set the consumer group offsets on the target",
		Long: `Run a restore config (the YAML of kpipe restore --config) in three phases:
  1. restore the data, exactly once, as kpipe restore does;
  2. plan the consumer group offsets by its consumer_group_strategy (which
     must not be skip), as kpipe offset-reset plan does, and keep the plan
     beside the restore's state (STATE.offsets-plan.json);
  3. execute the plan, as kpipe offset-reset execute does (groups with active
     members are refused; the offsets replaced are kept for kpipe
     offset-reset rollback), and read the committed offsets back.
A run stopped or killed in any phase, run again, continues at that phase:
the restore where it stopped, then the plan kept (or made, if it was not
written yet), then the execution, which changes only offsets not yet set.
One report gives the three phases, their durations and the offsets set.
reset_consumer_offsets: true in a config makes kpipe restore do the same.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadRestoreConfig(configFile)
			if err != nil {
				return err
			}
			if c.DryRun {
				return badInput("dry_run is true in %s: three-phase-restore writes; use kpipe validate-restore or kpipe restore --dry-run to plan only", configFile)
			}
			if err := c.Restore.Offsets.Check(); err != nil {
				return badInput("%v", err)
			}
			c.Restore.Offsets.Reset = true
			return runRestore(cmd, g, &o, c.Restore, false)
		},
	}
	cmd.Flags().StringVar(&configFile, "config", "", "YAML file of mode: restore, as kpipe restore --config reads it, with a consumer_group_strategy (required)")
	o.flags(cmd)
	return cmd
}

// loadRestoreConfig reads the restore config of --config, which the
// command requires.
func loadRestoreConfig(file string) (pipelines.RestoreConfig, error) {
	if file == "" {
		return pipelines.RestoreConfig{}, badInput("missing required flag --config; see --help")
	}
	c, err := pipelines.LoadRestore(file)
	if err != nil {
		return c, usageError{err}
	}
	return c, nil
}
