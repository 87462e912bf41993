//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/kpipe/kpipe/bench"
)

// backupCase times a snapshot backup of the source topic to local disk, by
// every tool in turn, into a fresh folder per run.
func (r *runner) backupCase(ctx context.Context, src task) error {
	c := r.newCase(kindBackup, src, src.records)
	for round := 1; round <= r.cfg.runs; round++ {
		for _, t := range r.tools {
			x, err := r.backupRun(ctx, t, src, round)
			if err != nil {
				return err
			}
			c.Runs = append(c.Runs, x)
			r.progress(c, round, x, fmt.Sprintf(" %7.1f MiB on disk", outMiB(x)))
		}
	}
	return nil
}

// backupRun runs one timed backup into a new folder, removed afterwards.
func (r *runner) backupRun(ctx context.Context, t tool, src task, round int) (run, error) {
	job, err := r.backupTask(src, t.name(), 0)
	if err != nil {
		return run{}, err
	}
	defer os.RemoveAll(job.scratch)
	return r.backup(ctx, t, job, round)
}

// backupTask is a backup of src into a new folder.
func (r *runner) backupTask(src task, tool string, segmentRecords int64) (task, error) {
	dir, err := r.scratch(fmt.Sprintf("backup-%s-%s-p%d", tool, src.gen.Shape, src.gen.Partitions))
	if err != nil {
		return task{}, err
	}
	t := src
	t.scratch, t.dir, t.backupID, t.segmentRecords = dir, filepath.Join(dir, "backups"), "bench", segmentRecords
	return t, os.MkdirAll(t.dir, 0o755)
}

// backup runs one backup and checks that it holds every record.
func (r *runner) backup(ctx context.Context, t tool, job task, round int) (run, error) {
	what := fmt.Sprintf("%s backup of %s", t.name(), job.topic)
	p, err := t.backup(job)
	if err != nil {
		return run{}, err
	}
	m, err := r.execute(ctx, what, p)
	if err != nil {
		return run{}, err
	}
	if m.outcome.records != job.records {
		return run{}, r.failure(what, fmt.Errorf("backed up %d records, want %d", m.outcome.records, job.records), m)
	}
	x := newRun(t.name(), round, m.usage)
	x.Records, x.Segments, x.Report = m.outcome.records, m.outcome.segments, m.outcome.report
	if t.name() == toolKpipeS3 {
		x.OutBytes = x.Report["bytes_written"] // the objects are on the server
		return x, nil
	}
	x.OutBytes, err = diskUsage(job.dir)
	return x, err
}

// diskUsage sums the sizes of the regular files under dir.
func diskUsage(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		total += info.Size()
		return err
	})
	return total, err
}

// sourceBackups makes, untimed, one backup of src per tool that restores
// from a backup (all but the ceiling, which regenerates the records).
func (r *runner) sourceBackups(ctx context.Context, src task, segmentRecords int64) (map[string]task, map[string]int64, error) {
	jobs, segments := map[string]task{}, map[string]int64{}
	for _, t := range r.tools {
		if t.name() == toolCeiling || (t.name() == toolKpipeS3 && segmentRecords > 0) {
			continue
		}
		job, err := r.backupTask(src, t.name(), segmentRecords)
		if err != nil {
			return nil, nil, err
		}
		x, err := r.backup(ctx, t, job, 0)
		if err != nil {
			return nil, nil, err
		}
		jobs[t.name()] = job
		segments[t.name()] = x.Segments
		if x.Segments < 0 {
			segments[t.name()] = countSegmentFiles(job.dir)
		}
		r.logf("backup by %s to restore from: %d records in %d segments, %.1f MiB", t.name(), x.Records,
			segments[t.name()], outMiB(x))
	}
	return jobs, segments, nil
}

// countSegmentFiles counts the data files of a backup: kpipe's are its
// segment-* files; the reference tool's, all but its JSON manifests.
func countSegmentFiles(dir string) int64 {
	var segments, data int64
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if strings.HasPrefix(filepath.Base(path), "segment-") {
			segments++
		}
		if ext := filepath.Ext(path); ext != ".json" && ext != ".jsonl" {
			data++
		}
		return nil
	})
	if segments > 0 {
		return segments
	}
	return data
}

// restoreCase times a full restore into a new topic: kpipe and the
// reference tool from backups they made themselves, the ceiling from
// regenerated records.
func (r *runner) restoreCase(ctx context.Context, src task) error {
	backups, segments, err := r.sourceBackups(ctx, src, 0)
	if err != nil {
		return err
	}
	defer removeBackups(backups)
	if r.selected(kindRestore, src.gen) {
		c := r.newCase(kindRestore, src, src.records)
		c.BackupSegments = segments
		for round := 1; round <= r.cfg.runs; round++ {
			for _, t := range r.tools {
				if err := r.restoreRun(ctx, c, t, backups[t.name()], src, nil, round); err != nil {
					return err
				}
			}
		}
	}
	if r.selected(kindValidate, src.gen) {
		return r.validateCase(ctx, src, backups, segments)
	}
	return nil
}

// remapCase times a restore of src that moves its records to other
// partitions of a new topic as remap says: merged into partition 0
// (restore-merge) or spread by key (restore-repartition). kpipe and the
// reference tool restore from backups they made themselves, the ceiling
// produces the same records where the restore puts them.
func (r *runner) remapCase(ctx context.Context, kind string, src task, remap func(*task)) error {
	backups, segments, err := r.sourceBackups(ctx, src, 0)
	if err != nil {
		return err
	}
	defer removeBackups(backups)
	c := r.newCase(kind, src, src.records)
	c.BackupSegments = segments
	remap(&src)
	for round := 1; round <= r.cfg.runs; round++ {
		for _, t := range r.tools {
			job := backups[t.name()]
			remap(&job)
			if c.Failures[t.name()] != "" {
				continue
			}
			if err := r.restoreRun(ctx, c, t, job, src, nil, round); err != nil {
				if err := r.tolerate(c, t, err); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// validateCase times a deep validation of the backups the restores read,
// each tool its own; the ceiling has none.
func (r *runner) validateCase(ctx context.Context, src task, backups map[string]task, segments map[string]int64) error {
	c := r.newCase(kindValidate, src, src.records)
	c.BackupSegments = segments
	for round := 1; round <= r.cfg.runs; round++ {
		for _, t := range r.tools {
			job, ok := backups[t.name()]
			if !ok {
				continue
			}
			what := fmt.Sprintf("%s validate --deep of a backup of %s", t.name(), src.topic)
			p, err := t.validate(job)
			if errors.Is(err, errNoValidate) {
				continue
			}
			if err != nil {
				return err
			}
			if t.name() != toolKpipeS3 {
				if err := bench.EvictCache(job.dir); err != nil {
					return err
				}
			}
			m, err := r.execute(ctx, what, p)
			if err != nil {
				return err
			}
			if m.outcome.records != src.records {
				return r.failure(what, fmt.Errorf("checked %d records, want %d", m.outcome.records, src.records), m)
			}
			x := newRun(t.name(), round, m.usage)
			x.Records, x.Segments, x.Report = m.outcome.records, m.outcome.segments, m.outcome.report
			c.Runs = append(c.Runs, x)
			r.progress(c, round, x, fmt.Sprintf(" %4d segments checked", x.Segments))
		}
	}
	return nil
}

// pitrCases time restores from backups of many segments: of a window of
// 1% of the time range, and in full, tool after tool.
func (r *runner) pitrCases(ctx context.Context, src task) error {
	perSegment := max(src.records/r.cfg.pitrSegments, 1)
	backups, segments, err := r.sourceBackups(ctx, src, perSegment)
	if err != nil {
		return err
	}
	defer removeBackups(backups)
	w := bench.CentredWindow(src.gen, src.records, 0.01)
	var cases []*caseResult
	var windows []*bench.Window
	if r.selected(kindPITRWindow, src.gen) {
		c := r.newCase(kindPITRWindow, src, w.Records)
		c.BackupSegments, c.Window = segments, &w
		cases, windows = append(cases, c), append(windows, &w)
	}
	if r.selected(kindPITRFull, src.gen) {
		c := r.newCase(kindPITRFull, src, src.records)
		c.BackupSegments = segments
		cases, windows = append(cases, c), append(windows, nil)
	}
	for round := 1; round <= r.cfg.runs; round++ {
		for i, c := range cases {
			for _, t := range r.tools {
				if t.name() == toolCeiling || t.name() == toolKpipeS3 {
					continue
				}
				if err := r.restoreRun(ctx, c, t, backups[t.name()], src, windows[i], round); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// removeBackups deletes the folders of the backups restored from.
func removeBackups(backups map[string]task) {
	for _, b := range backups {
		os.RemoveAll(b.scratch)
	}
}

// restoreRun restores into a new topic, checks that it holds exactly the
// records expected, and deletes it before the next run starts.
func (r *runner) restoreRun(ctx context.Context, c *caseResult, t tool, backup, src task, w *bench.Window, round int) error {
	job := backup
	if t.name() == toolCeiling {
		job = src
	}
	job.window = w
	job.target = fmt.Sprintf("%s%s-%s-%s-p%d-r%d", r.prefix, c.Kind, t.name(), src.gen.Shape, src.gen.Partitions, round)
	scratch, err := r.scratch(c.Kind + "-" + t.name())
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	job.scratch = scratch
	if job.dir != "" && t.name() != toolKpipeS3 {
		if err := bench.EvictCache(job.dir); err != nil {
			return err
		}
	}
	x, err := r.restore(ctx, t, job, c.Expected, round)
	if err != nil {
		_ = r.b.deleteTopics(context.WithoutCancel(ctx), job.target)
		return err
	}
	if err := r.b.dropTopic(ctx, job.target, src.gen.Partitions); err != nil {
		return err
	}
	c.Runs = append(c.Runs, x)
	extra := ""
	if x.Segments >= 0 {
		extra = fmt.Sprintf(" %4d segments read", x.Segments)
	}
	r.progress(c, round, x, fmt.Sprintf("%s %7.1f MiB read from storage", extra, readMiB(x)))
	return nil
}

// restore runs one restore and checks the target topic.
func (r *runner) restore(ctx context.Context, t tool, job task, expected int64, round int) (run, error) {
	what := fmt.Sprintf("%s restore of %s into %s", t.name(), job.topic, job.target)
	if job.window != nil {
		what += fmt.Sprintf(" (time window %d..%d)", job.window.Start, job.window.End)
	}
	p, err := t.restore(job)
	if err != nil {
		return run{}, err
	}
	m, err := r.execute(ctx, what, p)
	if err != nil {
		return run{}, err
	}
	got, parts, err := r.b.count(ctx, job.target)
	if err != nil {
		return run{}, r.failure(what, fmt.Errorf("after the run: %w", err), m)
	}
	if got != expected {
		return run{}, r.failure(what, fmt.Errorf("topic %s holds %d records in %d partitions, want %d (the tool reported %d)",
			job.target, got, parts, expected, m.outcome.records), m)
	}
	x := newRun(t.name(), round, m.usage)
	x.Records, x.Segments, x.Report = got, m.outcome.segments, m.outcome.report
	return x, nil
}

// tlsCases time a backup and a restore over the broker's SASL_SSL
// listener (SCRAM-SHA-512): kpipe beside the reference tool (the ceiling
// speaks plaintext only). The restores read backups made over plaintext.
func (r *runner) tlsCases(ctx context.Context, src task) error {
	var tools []tool
	for _, t := range r.tools {
		if t.name() == toolKpipe || t.name() == toolRef {
			tools = append(tools, t)
		}
	}
	if r.selected(kindBackupTLS, src.gen) {
		c := r.newCase(kindBackupTLS, src, src.records)
		for round := 1; round <= r.cfg.runs; round++ {
			for _, t := range tools {
				if c.Failures[t.name()] != "" {
					continue
				}
				job, err := r.backupTask(src, t.name(), 0)
				if err != nil {
					return err
				}
				job.sec = r.cfg.sec
				x, err := r.backup(ctx, t, job, round)
				os.RemoveAll(job.scratch)
				if err != nil {
					if err := r.tolerate(c, t, err); err != nil {
						return err
					}
					continue
				}
				c.Runs = append(c.Runs, x)
				r.progress(c, round, x, "")
			}
		}
	}
	if !r.selected(kindRestoreTLS, src.gen) {
		return nil
	}
	backups := map[string]task{}
	defer removeBackups(backups)
	for _, t := range tools {
		job, err := r.backupTask(src, t.name(), 0)
		if err != nil {
			return err
		}
		if _, err := r.backup(ctx, t, job, 0); err != nil {
			return err
		}
		job.sec = r.cfg.sec
		backups[t.name()] = job
	}
	c := r.newCase(kindRestoreTLS, src, src.records)
	for round := 1; round <= r.cfg.runs; round++ {
		for _, t := range tools {
			if c.Failures[t.name()] != "" {
				continue
			}
			if err := r.restoreRun(ctx, c, t, backups[t.name()], src, nil, round); err != nil {
				if err := r.tolerate(c, t, err); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// tolerate records that a tool other than kpipe failed case c with err,
// which ends its runs there, and returns nil; kpipe's failure comes back
// as it is.
func (r *runner) tolerate(c *caseResult, t tool, err error) error {
	if t.name() == toolKpipe {
		return err
	}
	r.logf("%s failed %s (%v); no more runs of it there", t.name(), c.Name, err)
	c.fail(t.name(), err)
	return nil
}
