//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kpipe/kpipe/bench"
)

// benchMain runs the whole benchmark.
func benchMain(args []string) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := newRunner(ctx, cfg)
	if err != nil {
		return err
	}
	err = r.runAll(ctx)
	r.cleanup()
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted; the topics and files of this run are deleted (%v)", err)
	}
	if err != nil {
		return err
	}
	return r.report()
}

// runner runs the cases and keeps their results.
type runner struct {
	cfg     config
	b       *broker
	tools   []tool
	work    string // scratch root, removed at the end
	ownWork bool
	prefix  string // of every topic the benchmark creates
	baseMs  int64  // timestamp of record 0 of every topic
	meta    meta
	results []*caseResult
	seq     int
	started time.Time
}

func newRunner(ctx context.Context, cfg config) (*runner, error) {
	b, err := dialBroker(ctx, cfg.bootstrap)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	r := &runner{
		cfg: cfg, b: b, started: now,
		prefix: fmt.Sprintf("kpipe-bench-%x-", now.UnixMilli()%0xffffff),
		// The last record is stamped a few minutes before the start: every
		// timestamp lies in the past and within any retention period.
		baseMs: now.Add(-10*time.Minute).UnixMilli() - cfg.records,
	}
	if err := r.makeWork(); err != nil {
		b.close()
		return nil, err
	}
	r.meta = collectMeta(ctx, r)
	if err := r.setupTools(); err != nil {
		r.cleanup()
		return nil, err
	}
	return r, nil
}

// setupTools lists the tools in the order each round runs them: kpipe, the
// reference tool (when there is one), the ceiling.
func (r *runner) setupTools() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	bin := filepath.Join(r.work, "bin")
	kpipe, plugins, err := snapshotKpipe(r.cfg.kpipe, r.cfg.pluginDir, bin)
	if err != nil {
		return err
	}
	ceiling := filepath.Join(bin, "kpipe-bench")
	if err := copyFile(self, ceiling); err != nil {
		return err
	}
	// Every tool's binaries start out of the page cache, as after a reboot.
	// A file just written sits in the cache in huge folios, which the kernel
	// maps whole (2 MiB at a time) into every process that runs it, adding
	// several MiB of shared, reclaimable cache to each process's resident
	// memory; read back from storage, a binary is cached in small folios.
	if err := bench.EvictCache(bin); err != nil {
		return err
	}
	r.tools = append(r.tools, kpipeTool{bin: kpipe, pluginDir: plugins})
	if r.cfg.s3 != "" {
		for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": "kpipe", "AWS_SECRET_ACCESS_KEY": "kpipe-secret", "AWS_REGION": "us-east-1"} {
			os.Setenv(k, v)
		}
		r.tools = append(r.tools, kpipeS3Tool{kpipeTool: kpipeTool{bin: kpipe, pluginDir: plugins}, endpoint: r.cfg.s3, bucket: "kpipe", run: r.prefix})
	}
	if r.cfg.peer != "" {
		if err := bench.EvictFile(r.cfg.peer); err != nil {
			return err
		}
		r.tools = append(r.tools, refTool{bin: r.cfg.peer})
	} else {
		r.logf("reference tool skipped: %s", r.cfg.peerNote)
	}
	r.tools = append(r.tools, ceilingTool{self: ceiling})
	return nil
}

// snapshotKpipe copies the kpipe binary and its plugins into dir, so that a
// rebuild while the benchmark runs cannot mix two builds in one report (the
// ceiling's binary, this one, is copied there too).
func snapshotKpipe(bin, pluginDir, dir string) (string, string, error) {
	plugins := filepath.Join(dir, "plugins")
	if err := os.MkdirAll(plugins, 0o755); err != nil {
		return "", "", err
	}
	files, err := filepath.Glob(filepath.Join(pluginDir, "kpipe-plugin-*"))
	if err != nil {
		return "", "", err
	}
	for _, f := range files {
		if err := copyFile(f, filepath.Join(plugins, filepath.Base(f))); err != nil {
			return "", "", err
		}
	}
	kpipe := filepath.Join(dir, "kpipe")
	return kpipe, plugins, copyFile(bin, kpipe)
}

func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, data, 0o755)
}

// makeWork creates the folder of backups and scratch files.
func (r *runner) makeWork() error {
	if r.cfg.work != "" {
		r.work = filepath.Join(r.cfg.work, strings.TrimSuffix(r.prefix, "-"))
		return os.MkdirAll(r.work, 0o755)
	}
	dir, err := os.MkdirTemp("", "kpipe-bench-")
	r.work, r.ownWork = dir, true
	return err
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kpipe-bench: "+format+"\n", args...)
}

// cleanup deletes every topic the benchmark (or a tool it ran) created and
// the scratch folder, whatever happened before.
func (r *runner) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topics, err := r.b.topicsWithPrefix(ctx, r.prefix)
	if err == nil {
		err = r.b.deleteTopics(ctx, topics...)
	}
	if err != nil {
		r.logf("cleanup: topics %s*: %v", r.prefix, err)
	}
	r.b.close()
	if err := os.RemoveAll(r.work); err != nil {
		r.logf("cleanup: %v", err)
	}
	if !r.ownWork {
		_ = os.Remove(r.cfg.work) // only when empty
	}
}

// scratch returns a new empty folder under the work folder.
func (r *runner) scratch(name string) (string, error) {
	r.seq++
	dir := filepath.Join(r.work, fmt.Sprintf("%03d-%s", r.seq, name))
	return dir, os.MkdirAll(dir, 0o755)
}

// runAll runs every selected case, topic by topic.
func (r *runner) runAll(ctx context.Context) error {
	for _, shape := range bench.Shapes {
		for _, p := range r.cfg.partitions {
			g := bench.Gen{Shape: shape, Partitions: p, BaseMs: r.baseMs}
			if !r.anySelected(g) {
				continue
			}
			if err := r.runTopic(ctx, g); err != nil {
				return err
			}
		}
	}
	if len(r.results) == 0 {
		return fmt.Errorf("--only %q matches no case (names look like %s)", r.cfg.only, caseName(kindBackup, bench.Fresh, 8))
	}
	return nil
}

// selected tells whether --only selects the case of kind on g's topic.
func (r *runner) selected(kind string, g bench.Gen) bool {
	return r.cfg.only.MatchString(caseName(kind, g.Shape, g.Partitions))
}

// anySelected tells whether --only selects a case on g's topic.
func (r *runner) anySelected(g bench.Gen) bool {
	for _, k := range kinds {
		if r.selected(k, g) {
			return true
		}
	}
	return false
}

// runTopic seeds the topic of g, warms the broker up on it, runs its cases
// and deletes it.
func (r *runner) runTopic(ctx context.Context, g bench.Gen) error {
	topic := fmt.Sprintf("%ssrc-%s-p%d", r.prefix, g.Shape, g.Partitions)
	start := time.Now()
	if err := r.b.seed(ctx, topic, g, r.cfg.records); err != nil {
		return fmt.Errorf("seed %s: %w", topic, err)
	}
	r.logf("seeded %s: %d records in %s", topic, r.cfg.records, time.Since(start).Round(time.Millisecond))
	defer func() { _ = r.b.deleteTopics(context.WithoutCancel(ctx), topic) }()
	for i := range r.cfg.warmups {
		start := time.Now()
		n, err := r.b.drain(ctx, topic)
		if err != nil {
			return err
		}
		r.logf("warm-up read %d of %s: %d records in %s", i+1, topic, n, time.Since(start).Round(time.Millisecond))
	}
	r.warmBinaries()
	src := task{bootstrap: r.cfg.bootstrap, topic: topic, gen: g, records: r.cfg.records}
	steps := []struct {
		on  bool
		run func(context.Context, task) error
	}{
		{r.selected(kindBackup, g), r.backupCase},
		{r.selected(kindRestore, g) || r.selected(kindValidate, g), r.restoreCase},
		{r.selected(kindPITRWindow, g) || r.selected(kindPITRFull, g), r.pitrCases},
		{r.cfg.sec != nil && g.Partitions == 8 && (r.selected(kindBackupTLS, g) || r.selected(kindRestoreTLS, g)), r.tlsCases},
		{g.Partitions == 8 && r.selected(kindRestoreMerge, g), func(ctx context.Context, src task) error {
			return r.remapCase(ctx, kindRestoreMerge, src, func(t *task) { t.merge = true })
		}},
		{g.Partitions == 8 && r.selected(kindRestoreRepartition, g), func(ctx context.Context, src task) error {
			return r.remapCase(ctx, kindRestoreRepartition, src, func(t *task) { t.repartition = 6 })
		}},
	}
	for _, s := range steps {
		if s.on {
			if err := s.run(ctx, src); err != nil {
				return err
			}
		}
	}
	return nil
}

// warmBinaries reads the programs the runs start, so that no run pays for
// loading them from storage.
func (r *runner) warmBinaries() {
	files := []string{r.cfg.peer}
	for _, t := range r.tools {
		switch t := t.(type) {
		case kpipeTool:
			files = append(files, t.bin)
			plugins, _ := filepath.Glob(filepath.Join(t.pluginDir, "kpipe-plugin-*"))
			files = append(files, plugins...)
		case ceilingTool:
			files = append(files, t.self)
		}
	}
	for _, f := range files {
		if f != "" {
			_, _ = os.ReadFile(f)
		}
	}
}

// newCase starts the results of a case.
func (r *runner) newCase(kind string, src task, expected int64) *caseResult {
	c := &caseResult{Name: caseName(kind, src.gen.Shape, src.gen.Partitions), Kind: kind,
		Shape: src.gen.Shape, Partitions: src.gen.Partitions, Expected: expected}
	r.results = append(r.results, c)
	return c
}

// measured is a finished run: its figures and output.
type measured struct {
	usage          bench.Usage
	outcome        outcome
	stdout, stderr []byte
}

// logTail is the end of what the run logged: its stderr, or its stdout
// when it logged nothing there (the reference tool logs to stdout).
func (m measured) logTail() string {
	if len(bytes.TrimSpace(m.stderr)) > 0 {
		return "--- last lines of its stderr ---\n" + tail(m.stderr, 30)
	}
	return "--- last lines of its stdout ---\n" + tail(m.stdout, 30)
}

// execute runs a prepared command, measuring its process tree, and reads its
// outcome. A failed run is an error that ends with the tail of its stderr.
func (r *runner) execute(ctx context.Context, what string, p prepared) (measured, error) {
	var stdout, stderr bytes.Buffer
	p.cmd.Stdout = &capped{buf: &stdout, max: 32 << 20}
	p.cmd.Stderr = &capped{buf: &stderr, max: 32 << 20}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.timeout)
	defer cancel()
	u, err := bench.Measure(ctx, p.cmd, r.cfg.interval)
	m := measured{usage: u, stdout: stdout.Bytes(), stderr: stderr.Bytes()}
	if err != nil {
		return m, r.failure(what, err, m)
	}
	if m.outcome, err = p.read(m.stdout, m.stderr); err != nil {
		return m, r.failure(what, err, m)
	}
	if c, s := u.CPU().Seconds(), u.SampledCPU.Seconds(); s > c*1.15+0.05 || s < c*0.7-0.05 {
		r.logf("note: %s: CPU %.2fs from wait4, %.2fs sampled from /proc", what, c, s)
	}
	return m, nil
}

// failure is the error of a failed run: what ran, why it failed, and the
// end of its log.
func (r *runner) failure(what string, err error, m measured) error {
	return fmt.Errorf("%s: %w\n%s", what, err, m.logTail())
}

// tail returns the last n lines of out, without colour codes.
func tail(out []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(stripANSI(out)), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// capped is a writer that keeps the first max bytes written to it (tools
// log far less; the cap only guards against a runaway).
type capped struct {
	buf *bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// progress prints one line per run.
func (r *runner) progress(c *caseResult, round int, x run, extra string) {
	r.logf("%-28s round %d/%d %-9s %6.2fs wall %6.2f CPU-s %7.1f MiB%s",
		c.Name, round, r.cfg.runs, x.Tool, x.WallS, x.CPUS, x.PeakRSSMiB, extra)
}
