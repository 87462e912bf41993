package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kpipe/kpipe/core/plugin"
	"github.com/kpipe/kpipe/pipelines"
	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/restore"
	"github.com/kpipe/kpipe/sdk/storage"
)

// The commands that read backups without running a pipeline: list,
// describe and validate. Each starts the storage plugin of --path and asks
// its storage service, so that the reading (and, for validate --deep,
// every segment byte) stays in the plugin's process.

// storeArgs are the flags that name a storage.
type storeArgs struct {
	path  string
	store pipelines.StoreOptions
}

func (a *storeArgs) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&a.path, "path", "", "where backups are kept: a folder, or s3://BUCKET/PREFIX (required)")
	storeFlags(cmd.Flags(), &a.store)
}

// open starts the storage plugin and configures its storage service.
func (a *storeArgs) open(ctx context.Context, cmd *cobra.Command, g *globals) (sdk.StorageReader, func(), error) {
	if a.path == "" {
		return nil, nil, badInput("missing required flag(s) --path; see --help")
	}
	if err := checkStore(cmd, a.path); err != nil {
		return nil, nil, err
	}
	stage := pipelines.Storage(a.path, a.store)
	h := g.host("")
	inst, err := h.Launch(ctx, stage.Plugin, plugin.KindSource)
	if err != nil {
		h.Close()
		return nil, nil, usageError{err}
	}
	closeAll := func() { inst.Kill(); h.Close() }
	sr, ok := inst.(interface{ Storage() sdk.StorageReader })
	var st sdk.StorageReader
	if ok {
		st = sr.Storage()
	}
	if st == nil {
		closeAll()
		return nil, nil, badInput("plugin %q serves no storage service: it cannot read backups", stage.Plugin)
	}
	js, _ := json.Marshal(stage.Params)
	if err := st.ConfigureStorage(ctx, js); err != nil {
		closeAll()
		var perrs param.Errors
		if errors.As(err, &perrs) {
			return nil, nil, badInput("storage %s: %v", a.path, err)
		}
		return nil, nil, err
	}
	return st, closeAll, nil
}

// storageErr turns a storage service's refusal into bad input.
func storageErr(err error) error {
	if sdk.IsBadRequest(err) {
		return usageError{err}
	}
	return err
}

func newListCmd(g *globals) *cobra.Command {
	var a storeArgs
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the backups in a storage: id, state, time range, size",
		Long: `List the backups kept at --path, each with its state, the time range of its
records, its records and stored bytes, and its last commit.

States: complete (its last run read its source to the end), stopped (its last
run was stopped by a signal, as a continuous backup ends; what it committed is
whole), in_progress (a backup run holds it now), failed (its last run ended
without letting go: it failed or was killed; run the backup again to continue
it).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, done, err := a.open(cmd.Context(), cmd, g)
			if err != nil {
				return err
			}
			defer done()
			list, err := st.ListBackups(cmd.Context())
			if err != nil {
				return storageErr(err)
			}
			rows := make([]listRow, len(list))
			var wg sync.WaitGroup
			sem := make(chan struct{}, 4)
			for i, b := range list {
				wg.Add(1)
				go func() {
					defer wg.Done()
					sem <- struct{}{}
					defer func() { <-sem }()
					rows[i] = describeRow(cmd.Context(), st, b.ID)
				}()
			}
			wg.Wait()
			return printList(cmd.OutOrStdout(), g.format, rows)
		},
	}
	a.flags(cmd)
	return cmd
}

// listRow is one backup as `list --format json` prints it.
type listRow struct {
	BackupID       string           `json:"backup_id"`
	State          string           `json:"state"`
	CreatedAt      time.Time        `json:"created_at"`
	EarliestRecord *storage.Instant `json:"earliest_record,omitempty"`
	LatestRecord   *storage.Instant `json:"latest_record,omitempty"`
	LastCommit     *time.Time       `json:"last_commit,omitempty"`
	Topics         int              `json:"topics"`
	storage.Totals
	// Error says why the backup could not be described.
	Error string `json:"error,omitempty"`
}

func describeRow(ctx context.Context, st sdk.StorageReader, id string) listRow {
	d, err := describe(ctx, st, id)
	if err != nil {
		return listRow{BackupID: id, State: "unreadable", Error: err.Error()}
	}
	return listRow{BackupID: id, State: d.LastRun.State, CreatedAt: d.CreatedAt, EarliestRecord: d.EarliestRecord,
		LatestRecord: d.LatestRecord, LastCommit: d.LastCommit, Topics: len(d.Topics), Totals: d.Totals}
}

func describe(ctx context.Context, st sdk.StorageReader, id string) (storage.Description, error) {
	var d storage.Description
	js, err := st.Describe(ctx, id)
	if err != nil {
		return d, storageErr(err)
	}
	if err := json.Unmarshal(js, &d); err != nil {
		return d, fmt.Errorf("describe %s: the storage plugin answered %d bytes that are not a description: %v", id, len(js), err)
	}
	return d, nil
}

func printList(w io.Writer, format string, rows []listRow) error {
	if format == "json" {
		if rows == nil {
			rows = []listRow{}
		}
		return writeJSON(w, map[string]any{"backups": rows})
	}
	if len(rows) == 0 {
		fmt.Fprintln(w, "no backups")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKUP ID\tSTATE\tEARLIEST RECORD\tLATEST RECORD\tRECORDS\tSTORED\tLAST COMMIT")
	for _, r := range rows {
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", r.BackupID, r.State, r.Error)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.BackupID, stateText(r.State), isoOr(r.EarliestRecord), isoOr(r.LatestRecord),
			thousands(r.Records), humanBytes(r.StoredBytes), timeOr(r.LastCommit))
	}
	return tw.Flush()
}

func stateText(s string) string { return strings.ReplaceAll(s, "_", " ") }

func isoOr(i *storage.Instant) string {
	if i == nil {
		return "-"
	}
	return i.ISO
}

func timeOr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// thousands writes n with commas between groups of three digits.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func newDescribeCmd(g *globals) *cobra.Command {
	var a storeArgs
	var id, stateFile string
	cmd := &cobra.Command{
		Use:   "describe",
		Short: "Describe a backup: time range, topics, partitions, records, gaps, state",
		Long: `Describe one backup without reading its segments: the time range of its
records (ISO-8601 and epoch milliseconds, the unit of --time-window-start and
--time-window-end), its topics with their incarnations (a topic deleted and
re-created during the backup is a new incarnation, restored with
--topic-incarnation) and partitions, records, segments, bytes stored and
uncompressed, the gaps the cluster's retention left (offsets, reason, when),
the last commit of each partition, the consumer group snapshot, and the state
of its last run (see kpipe list --help). --format json prints the
description as documented in the README.

With --restore-state FILE it describes a restore instead, from the state
file the restore keeps (its report names it): whether it finished, and per
target partition its records and offset map, the ranges of source offsets
and the target offsets they landed at.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if stateFile != "" {
				return describeRestore(cmd.OutOrStdout(), g.format, stateFile)
			}
			if id == "" {
				return badInput("missing required flag(s) --backup-id; see --help")
			}
			st, done, err := a.open(cmd.Context(), cmd, g)
			if err != nil {
				return err
			}
			defer done()
			d, err := describe(cmd.Context(), st, id)
			if err != nil {
				return err
			}
			if g.format == "json" {
				return writeJSON(cmd.OutOrStdout(), d)
			}
			printDescription(cmd.OutOrStdout(), d)
			return nil
		},
	}
	a.flags(cmd)
	cmd.Flags().StringVar(&id, "backup-id", "", "backup to describe (required, unless --restore-state)")
	cmd.Flags().StringVar(&stateFile, "restore-state", "", "describe a restore from its state file (kpipe restore prints where it is) instead of a backup")
	return cmd
}

// describeRestore prints a restore's state: per target partition, its
// records and the offset map.
func describeRestore(w io.Writer, format, file string) error {
	st, err := restore.Load(file)
	if err != nil {
		return err
	}
	if st == nil {
		return badInput("--restore-state %s: no such file; kpipe restore prints where its state file is", file)
	}
	if format == "json" {
		return writeJSON(w, st)
	}
	fmt.Fprintf(w, "Restore state: %s\n", file)
	if st.Finished != nil {
		fmt.Fprintf(w, "  finished at %s\n", st.Finished.Format(time.RFC3339))
	} else {
		fmt.Fprintf(w, "  not finished; last saved at %s (running it again continues it)\n", st.UpdatedAt.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "  records restored: %s\n", thousands(st.Records()))
	printTargets(w, st, true)
	return nil
}

func printDescription(w io.Writer, d storage.Description) {
	fmt.Fprintf(w, "Backup: %s\n", d.BackupID)
	fmt.Fprintln(w, strings.Repeat("═", 39))
	run := d.LastRun
	fmt.Fprintf(w, "State: %s (%d run(s); the last started %s", stateText(run.State), run.Runs, run.Started.UTC().Format(time.RFC3339))
	if run.Ended != nil {
		fmt.Fprintf(w, ", ended %s", run.Ended.UTC().Format(time.RFC3339))
	}
	fmt.Fprintln(w, ")")
	fmt.Fprintf(w, "Created: %s\n", d.CreatedAt.UTC().Format(time.RFC3339))
	if d.ClusterID != "" {
		fmt.Fprintf(w, "Cluster: %s\n", d.ClusterID)
	}
	if d.Encryption != nil {
		fmt.Fprintf(w, "Encryption: %s, key %s\n", d.Encryption.Cipher, d.Encryption.KeyID)
	}
	fmt.Fprintln(w, "Time Range:")
	fmt.Fprintf(w, "Earliest Message: %s\n", instantText(d.EarliestRecord))
	fmt.Fprintf(w, "Latest Message: %s\n", instantText(d.LatestRecord))
	fmt.Fprintf(w, "Last commit: %s\n", timeOr(d.LastCommit))
	fmt.Fprintf(w, "Size: %s records in %d segments, %s stored (%s uncompressed)\n", thousands(d.Records), d.Segments,
		humanBytes(d.StoredBytes), humanBytes(d.UncompressedBytes))
	fmt.Fprintln(w, "Topics:")
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	for _, t := range d.Topics {
		fmt.Fprintf(tw, "%s\t%d partitions\t%s records\n", t.Name, t.Partitions, thousands(t.Records))
	}
	tw.Flush()
	fmt.Fprintln(w, "Partitions:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  TOPIC\tPARTITION\tINCARNATION\tRECORDS\tOFFSETS\tEARLIEST\tLATEST\tSEGMENTS\tSTORED\tGAPS\tLAST COMMIT")
	var gaps []string
	for _, t := range d.Topics {
		for _, inc := range t.Incarnations {
			incName := "-"
			if inc.TopicID != "" {
				incName = inc.TopicID
				if !inc.Current {
					incName += " (earlier)"
				}
			}
			for _, p := range inc.PartitionDetails {
				offsets := "-"
				if p.EarliestOffset != nil {
					offsets = fmt.Sprintf("%d-%d", *p.EarliestOffset, *p.LatestOffset)
				}
				fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\n", t.Name, p.Partition, incName, thousands(p.Records), offsets,
					isoOr(p.EarliestRecord), isoOr(p.LatestRecord), p.Segments, humanBytes(p.StoredBytes), p.Gaps, timeOr(p.LastCommit))
				for _, g := range p.GapList {
					gaps = append(gaps, fmt.Sprintf("  %s/%d offsets %d-%d: %s (recorded %s)", t.Name, p.Partition, g.FromOffset, g.ToOffset, g.Reason, g.RecordedAt.UTC().Format(time.RFC3339)))
				}
				if p.Error != "" {
					gaps = append(gaps, fmt.Sprintf("  %s/%d: manifest unreadable: %s (run kpipe validate)", t.Name, p.Partition, p.Error))
				}
			}
		}
	}
	tw.Flush()
	if len(gaps) > 0 {
		fmt.Fprintln(w, "Gaps (offsets the cluster deleted before they were read):")
		for _, g := range gaps {
			fmt.Fprintln(w, g)
		}
	}
	if c := d.ConsumerGroups; c != nil {
		fmt.Fprintf(w, "Consumer groups: %d group(s), %d committed offsets, taken at %s\n", len(c.Groups), c.Offsets, instantText(c.TakenAt))
	}
}

func instantText(i *storage.Instant) string {
	if i == nil {
		return "- (no records)"
	}
	return fmt.Sprintf("%s (%d)", i.ISO, i.EpochMS)
}

func newValidateCmd(g *globals) *cobra.Command {
	var a storeArgs
	var id, maxAge, progressMode string
	var deep bool
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check that a backup is whole and restorable; exit 0 only when it is",
		Long: `Check a backup, from its manifests and a listing of its objects:
  - every topic and partition of its metadata, and no stored partition it omits;
  - every manifest entry present, each starting at the offset the one before
    ended unless a recorded gap covers the difference (a lost entry is caught);
  - every segment present with the size its entry recorded, every batch index
    consistent, and no object that no entry accounts for (a segment that a
    killed run wrote but never committed is a note, not a problem);
  - per partition the earliest and latest record and the last commit.
With --deep it also reads every segment once: each checksum, decryption and
decompression, every record decoded, and counts, offsets and min/max
timestamps compared with the index and the manifest.

The report lists each problem with its check, topic, partition, segment and
offsets. Exit 0 when the backup is valid, 1 when it is not, 2 for bad input.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" {
				return badInput("missing required flag(s) --backup-id; see --help")
			}
			var o sdk.ValidateOptions
			o.Deep = deep
			if maxAge != "" {
				d, err := parseAge(maxAge)
				if err != nil {
					return badInput("--max-age %q: %v; write a duration such as 90m, 26h or 7d", maxAge, err)
				}
				o.MaxAge = d
			}
			show, err := newValidationProgress(progressMode, os.Stderr)
			if err != nil {
				return err
			}
			var observe func(sdk.ValidateProgress)
			if show != nil {
				observe = show.observe
			}
			st, done, err := a.open(cmd.Context(), cmd, g)
			if err != nil {
				return err
			}
			defer done()
			js, err := st.Validate(cmd.Context(), id, o, observe)
			if err != nil {
				return storageErr(err)
			}
			var r storage.Report
			if err := json.Unmarshal(js, &r); err != nil {
				return fmt.Errorf("validate %s: the storage plugin answered %d bytes that are not a report: %v", id, len(js), err)
			}
			if show != nil {
				show.finish(r.Checked)
			}
			if g.format == "json" {
				writeJSON(cmd.OutOrStdout(), r)
			} else {
				printValidation(cmd.OutOrStdout(), r)
			}
			if !r.Valid {
				return fmt.Errorf("backup %s is INVALID: %d problem(s)", id, len(r.Problems))
			}
			return nil
		},
	}
	a.flags(cmd)
	f := cmd.Flags()
	f.StringVar(&id, "backup-id", "", "backup to validate (required)")
	f.BoolVar(&deep, "deep", false, "also read every segment: checksums, decryption (give the key), decompression, every record against the index")
	f.StringVar(&maxAge, "max-age", "", "fail when the backup's last commit is older than this, such as 26h or 7d (default: no limit)")
	f.StringVar(&progressMode, "progress", progressAuto, "progress on stderr while validating: tty (a line redrawn every second), json (a JSON line {\"validating\":{...}} every 5s), auto (tty on a terminal, else json) or off; both end with a last line (\"done\":true)")
	return cmd
}

// parseAge reads a duration, with d for days beside Go's units.
func parseAge(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(days, 64)
		if err != nil || n <= 0 {
			return 0, errors.New("not a positive number of days")
		}
		return time.Duration(n * float64(24*time.Hour)), nil
	}
	d, err := time.ParseDuration(s)
	if err == nil && d <= 0 {
		err = errors.New("not positive")
	}
	return d, err
}

// validationProgress shows a validation's progress on stderr: a line
// redrawn on a terminal, else a JSON line every jsonEvery; both end with a
// last one ("done": true) from the report's counts.
type validationProgress struct {
	mode string
	w    io.Writer
	mu   sync.Mutex
	last time.Time
}

func newValidationProgress(mode string, w *os.File) (*validationProgress, error) {
	mode, err := progressMode(mode, w)
	if mode == progressOff || err != nil {
		return nil, err
	}
	return &validationProgress{mode: mode, w: w, last: time.Now()}, nil
}

// observe is the storage service's progress callback.
func (v *validationProgress) observe(p sdk.ValidateProgress) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.mode == progressJSON && time.Since(v.last) < jsonEvery {
		return
	}
	v.last = time.Now()
	v.show(p, false)
}

func (v *validationProgress) show(p sdk.ValidateProgress, done bool) {
	if v.mode == progressTTY {
		fmt.Fprintf(v.w, "\rvalidating: %d/%d partitions, %d segments, %s records, %s read   ", p.PartitionsDone, p.Partitions,
			p.SegmentsChecked, thousands(p.RecordsChecked), humanBytes(p.BytesRead))
		if done {
			fmt.Fprintln(v.w)
		}
		return
	}
	line := map[string]any{"partitions_done": p.PartitionsDone, "partitions": p.Partitions, "segments": p.SegmentsChecked,
		"records": p.RecordsChecked, "bytes_read": p.BytesRead}
	if done {
		line["done"] = true
	}
	js, _ := json.Marshal(map[string]any{"validating": line})
	fmt.Fprintf(v.w, "%s\n", js)
}

// finish shows the last line, from the report.
func (v *validationProgress) finish(c storage.Checked) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.show(sdk.ValidateProgress{PartitionsDone: c.Partitions, Partitions: c.Partitions, SegmentsChecked: c.Segments,
		RecordsChecked: c.Records, BytesRead: c.BytesRead}, true)
}

func printValidation(w io.Writer, r storage.Report) {
	verdict := "VALID"
	if !r.Valid {
		verdict = fmt.Sprintf("INVALID: %d problem(s)", len(r.Problems))
	}
	kind := "plain"
	if r.Deep {
		kind = "deep"
	}
	fmt.Fprintf(w, "Backup %s: %s (%s validation at %s)\n", r.BackupID, verdict, kind, r.CheckedAt.UTC().Format(time.RFC3339))
	c := r.Checked
	fmt.Fprintf(w, "Checked: %d partitions, %d manifest entries, %d segments", c.Partitions, c.Entries, c.Segments)
	if r.Deep {
		fmt.Fprintf(w, ", %s records decoded, %s read", thousands(c.Records), humanBytes(c.BytesRead))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Last run: %s (%d run(s))\n", stateText(r.LastRun.State), r.LastRun.Runs)
	fmt.Fprintf(w, "Time range: %s to %s\n", instantText(r.EarliestRecord), instantText(r.LatestRecord))
	fmt.Fprintf(w, "Last commit: %s", timeOr(r.LastCommit))
	if r.MaxAge != "" {
		fmt.Fprintf(w, " (maximum age %s)", r.MaxAge)
	}
	fmt.Fprintln(w)
	incarnations := map[string]map[string]bool{} // topic IDs by topic
	for _, p := range r.Partitions {
		if incarnations[p.Topic] == nil {
			incarnations[p.Topic] = map[string]bool{}
		}
		incarnations[p.Topic][p.TopicID] = true
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  TOPIC\tPARTITION\tRECORDS\tOFFSETS\tEARLIEST\tLATEST\tGAPS\tLAST COMMIT")
	for _, p := range r.Partitions {
		offsets := "-"
		if p.EarliestOffset != nil {
			offsets = fmt.Sprintf("%d-%d", *p.EarliestOffset, *p.LatestOffset)
		}
		name := p.Topic
		if len(incarnations[p.Topic]) > 1 {
			name += " (" + p.TopicID + ")"
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%s\t%d\t%s\n", name, p.Partition, thousands(p.Records), offsets,
			isoOr(p.EarliestRecord), isoOr(p.LatestRecord), p.Gaps, timeOr(p.LastCommit))
	}
	tw.Flush()
	for _, sec := range []struct {
		title string
		list  []storage.Problem
	}{{"Problems", r.Problems}, {"Notes", r.Notes}} {
		if len(sec.list) == 0 {
			continue
		}
		fmt.Fprintf(w, "%s:\n", sec.title)
		for _, p := range sec.list {
			fmt.Fprintf(w, "  [%s] %s\n", p.Check, problemText(p))
		}
	}
}

// problemText is a problem's place and message on one line.
func problemText(p storage.Problem) string {
	var where []string
	if p.Topic != "" {
		tp := p.Topic
		if p.Partition != nil {
			tp += "/" + strconv.Itoa(int(*p.Partition))
		}
		where = append(where, tp)
	}
	if p.FromOffset != nil && p.ToOffset != nil {
		where = append(where, fmt.Sprintf("offsets %d-%d", *p.FromOffset, *p.ToOffset))
	} else if p.FromOffset != nil {
		where = append(where, fmt.Sprintf("offsets %d-", *p.FromOffset))
	}
	if len(where) == 0 {
		return p.Message
	}
	return strings.Join(where, " ") + ": " + p.Message
}
