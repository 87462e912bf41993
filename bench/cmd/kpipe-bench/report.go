//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kpipe/kpipe/bench"
)

// report writes the markdown report to --out and prints it, or the raw
// figures as JSON, to stdout.
func (r *runner) report() error {
	r.meta.Took = time.Since(r.started).Round(time.Second).String()
	r.sortResults()
	md := r.markdown()
	if r.cfg.out != "" {
		if err := os.MkdirAll(filepath.Dir(r.cfg.out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(r.cfg.out, []byte(md), 0o644); err != nil {
			return err
		}
		r.logf("wrote %s", r.cfg.out)
	}
	if r.cfg.format == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"meta": r.meta, "cases": r.results})
	}
	_, err := os.Stdout.WriteString(md)
	return err
}

// sortResults orders cases by kind, then shape, then partitions.
func (r *runner) sortResults() {
	rank := func(c *caseResult) []int {
		return []int{slices.Index(kinds, c.Kind), slices.Index(bench.Shapes, c.Shape), int(c.Partitions)}
	}
	slices.SortStableFunc(r.results, func(a, b *caseResult) int { return slices.Compare(rank(a), rank(b)) })
}

func (r *runner) markdown() string {
	var b strings.Builder
	m := r.meta
	fmt.Fprintf(&b, "# kpipe benchmark: kpipe, the reference tool and bare franz-go\n\n")
	fmt.Fprintf(&b, "Written by `make bench` (`bench/cmd/kpipe-bench`) on %s; the run took %s.\n\n", m.Date, m.Took)
	fmt.Fprintf(&b, "- Machine: %s, %d cores, %.1f GiB memory, Linux %s\n", m.Machine.CPU, m.Machine.Cores, m.Machine.MemoryGiB, m.Machine.Kernel)
	fmt.Fprintf(&b, "- Kafka: %s, one local broker (%s)\n", m.Kafka, m.Bootstrap)
	fmt.Fprintf(&b, "- Records: %d per topic, spread evenly over %s partitions; each a %d-byte key, a %d-byte JSON value and one header (`%s`, %d bytes): %.1f MiB of payload; timestamps 1 ms apart\n",
		m.Records, joinInts(m.Partitions), bench.KeySize, bench.ValueSize, bench.HeaderKey, bench.HeaderValueSize,
		float64(m.Records*int64(bench.RecordSize))/(1<<20))
	fmt.Fprintf(&b, "- Values: %s (the values' compression ratio with zstd at its fastest level)\n", ratios(m.ZstdRatio))
	fmt.Fprintf(&b, "- Runs: %d rounds per case; a round runs each tool once, in turn\n", m.Runs)
	fmt.Fprintf(&b, "- kpipe: %s\n- Reference: %s\n- Ceiling: `kpipe-bench ceiling-backup` / `ceiling-restore` (%s)\n\n", m.Kpipe, m.Reference, m.Go)
	b.WriteString("## Time, CPU and memory (medians)\n\n")
	b.WriteString(r.mainTable().String())
	for _, c := range r.results {
		for tool, msg := range c.Failures {
			fmt.Fprintf(&b, "\n%s: %s failed, so the row has no figures of it: `%s`\n", c.Name, tool, msg)
		}
	}
	if r.cfg.s3 != "" {
		fmt.Fprintf(&b, "\n## kpipe with its backups on S3 (medians)\n\nThe same backups and restores by kpipe into a bucket of the local S3 server (`scripts/s3.sh`, the MinIO server, at %s) beside kpipe on the local disk and the ceiling, which writes to the local disk.\n\n", r.cfg.s3)
		b.WriteString(r.s3Table().String())
	}
	if t := r.pitrTable(); len(t.rows) > 0 {
		b.WriteString("\n## Point-in-time restores: what was read (medians)\n\n")
		b.WriteString(t.String())
	}
	if t := r.diskTable(); len(t.rows) > 0 {
		b.WriteString("\n## Backups on disk (median MiB)\n\n")
		b.WriteString(t.String())
	}
	b.WriteString("\n" + legend)
	return b.String()
}

func joinInts(xs []int32) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}

func ratios(m map[bench.Shape]float64) string {
	var s []string
	for _, sh := range bench.Shapes {
		if v, ok := m[sh]; ok {
			s = append(s, fmt.Sprintf("%s %.2fx", sh, v))
		}
	}
	return strings.Join(s, ", ")
}

var allTools = []string{toolKpipe, toolRef, toolCeiling}

// triple formats one figure's medians for kpipe, the reference and the
// ceiling.
func triple(c *caseResult, figure func(run) float64, format string) string {
	s := make([]string, len(allTools))
	for i, t := range allTools {
		s[i] = num(c.median(t, figure), format)
	}
	return strings.Join(s, " / ")
}

// pair formats the median ratios of kpipe to another tool, wall and CPU.
func pair(c *caseResult, other string) string {
	return num(c.ratio(toolKpipe, other, wall), "%.2f") + " / " + num(c.ratio(toolKpipe, other, cpu), "%.2f")
}

func num(v float64, format string) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf(format, v)
}

func (r *runner) mainTable() table {
	t := table{head: []string{"case", "wall s: kpipe / ref / ceiling", "CPU-s: kpipe / ref / ceiling",
		"peak RSS MiB: kpipe / ref / ceiling", "kpipe÷ref: wall / CPU", "kpipe÷ceiling: wall / CPU", "kpipe host I/O MiB"}}
	for _, c := range r.results {
		t.add(c.Name, triple(c, wall, "%.2f"), triple(c, cpu, "%.2f"), triple(c, rss, "%.0f"),
			pair(c, toolRef), pair(c, toolCeiling), num(c.median(toolKpipe, hostIOMiB), "%.1f"))
	}
	return t
}

// s3Table sets kpipe with its backups on the S3 server beside kpipe on the
// local disk and the ceiling, case by case.
func (r *runner) s3Table() table {
	t := table{head: []string{"case", "wall s: fs / s3", "CPU-s: fs / s3", "peak RSS MiB: fs / s3", "s3÷fs: wall / CPU", "s3÷ceiling: wall / CPU"}}
	two := func(c *caseResult, figure func(run) float64, format string) string {
		return num(c.median(toolKpipe, figure), format) + " / " + num(c.median(toolKpipeS3, figure), format)
	}
	for _, c := range r.results {
		if c.Kind != kindBackup && c.Kind != kindRestore && c.Kind != kindValidate {
			continue
		}
		t.add(c.Name, two(c, wall, "%.2f"), two(c, cpu, "%.2f"), two(c, rss, "%.0f"),
			num(c.ratio(toolKpipeS3, toolKpipe, wall), "%.2f")+" / "+num(c.ratio(toolKpipeS3, toolKpipe, cpu), "%.2f"),
			num(c.ratio(toolKpipeS3, toolCeiling, wall), "%.2f")+" / "+num(c.ratio(toolKpipeS3, toolCeiling, cpu), "%.2f"))
	}
	return t
}

func (r *runner) pitrTable() table {
	t := table{head: []string{"case", "records restored", "backup segments: kpipe / ref", "segments read: kpipe / ref",
		"kpipe segments skipped", "read from storage MiB: kpipe / ref", "rchar MiB: kpipe / ref", "kpipe's own bytes read MiB"}}
	kr := func(c *caseResult, figure func(run) float64, format string) string {
		return num(c.median(toolKpipe, figure), format) + " / " + num(c.median(toolRef, figure), format)
	}
	for _, c := range r.results {
		if c.Kind != kindPITRWindow && c.Kind != kindPITRFull {
			continue
		}
		segs := func(tool string) string {
			if n, ok := c.BackupSegments[tool]; ok && n >= 0 {
				return fmt.Sprint(n)
			}
			return "–"
		}
		t.add(c.Name, fmt.Sprint(c.Expected), segs(toolKpipe)+" / "+segs(toolRef), kr(c, segmentsRead, "%.0f"),
			num(c.median(toolKpipe, reported("segments_pruned", 1)), "%.0f"),
			kr(c, readMiB, "%.1f"), kr(c, rcharMiB, "%.1f"),
			num(c.median(toolKpipe, reported("bytes_read", 1<<20)), "%.1f"))
	}
	return t
}

func (r *runner) diskTable() table {
	t := table{head: []string{"case", "kpipe", "ref", "ceiling"}}
	for _, c := range r.results {
		if c.Kind != kindBackup {
			continue
		}
		t.add(c.Name, num(c.median(toolKpipe, outMiB), "%.1f"), num(c.median(toolRef, outMiB), "%.1f"),
			num(c.median(toolCeiling, outMiB), "%.1f"))
	}
	return t
}

// table is a markdown table with padded columns, readable as text too.
type table struct {
	head []string
	rows [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t table) String() string {
	width := make([]int, len(t.head))
	for _, row := range append([][]string{t.head}, t.rows...) {
		for i, c := range row {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("|")
		for i, c := range cells {
			fmt.Fprintf(&b, " %s%s |", c, strings.Repeat(" ", width[i]-len([]rune(c))))
		}
		b.WriteString("\n")
	}
	line(t.head)
	sep := make([]string, len(t.head))
	for i := range sep {
		sep[i] = strings.Repeat("-", width[i])
	}
	line(sep)
	for _, row := range t.rows {
		line(row)
	}
	return b.String()
}

const legend = `## Legend

- **case**: what ran, on which topic: ` + "`kind/shape/pPARTITIONS`" + `.
  ` + "`backup`" + `: a snapshot backup of the topic to local disk, zstd, into a fresh folder.
  ` + "`restore`" + `: a restore into a new topic (created by the tool) from a backup the tool made itself;
  the ceiling writes regenerated records instead. Each restored topic is deleted, and the broker
  given a moment to close it, before the next run. ` + "`pitr-window`" + `: a restore of the records whose
  timestamps lie in a window of 1% of the time range, from a backup of many small segments;
  ` + "`pitr-full`" + `: a full restore of that same backup. ` + "`validate-deep`" + `: a deep validation
  (every segment read, every record decoded and checked) of the backup the restores read, each tool its
  own; the ceiling has none. Every backup, restore and validation is checked for its record count
  (restores by counting the target topic); a wrong count, or a backup found invalid, fails the benchmark.
- **kpipe / ref / ceiling**: kpipe (` + "`bin/kpipe`" + `), the reference tool (OSO kafka-backup, zstd level 1,
  no offset headers, metrics off) and the ceiling: a bare franz-go program doing the same work with no
  framework (` + "`kpipe-bench ceiling-backup`" + `: consume to the end offsets, frame, zstd-compress at the
  fastest level in parallel, one fsynced file per partition; ` + "`ceiling-restore`" + `: an idempotent
  producer, acks=all, no compression). "–": the tool did not run in that case.
- **wall s**: elapsed time from starting the process to its exit.
- **CPU-s**: user + system CPU seconds of the whole process tree, from wait4 (which includes the
  children the process waited for: kpipe's plugins). Cross-checked against /proc sampling.
- **peak RSS MiB**: the largest sum, at one sample (every 10 ms), of the resident memory (VmRSS) of
  every process in the tree; kpipe runs a host process and one process per plugin.
- **kpipe÷ref, kpipe÷ceiling**: the median over rounds of kpipe's figure divided by the other tool's in
  the same round (below 1: kpipe is faster or cheaper). Per-round ratios cancel the slow phases of a
  shared machine, so they can differ from the ratio of the medians.
- **kpipe host I/O MiB**: rchar + wchar of kpipe's host process alone (its plugins' taken out),
  sampled from /proc/PID/io: the bytes it moves between its plugins and the files it touches.
- **records restored**: records in the window (pitr-window) or in the topic (pitr-full); each run's
  target topic held exactly that many.
- **backup segments**: segments (files) of each tool's backup restored from; **segments read**: as the
  tool reports it (kpipe's ` + "`--format json`" + ` report; the reference tool's log lines); **kpipe segments
  skipped**: segments kpipe's fs source skipped unread (its ` + "`segments_pruned`" + `); **kpipe's own bytes
  read**: its fs source's ` + "`bytes_read`" + ` figure, when its report has one.
- **read from storage MiB**: read_bytes of the whole process tree (/proc/PID/io): bytes fetched from
  the storage layer. The backup's files are dropped from the page cache before every restore run, so
  this is what the restore had to read. **rchar MiB**: bytes returned by read-like system calls,
  sockets and pipes included (kpipe's plugins talk over local sockets, so its figure counts its
  batches more than once).
- **backup-sasl-ssl, restore-sasl-ssl**: the same backup and restore over the broker's SASL_SSL
  listener, logging in with SCRAM-SHA-512 (the restores read backups made over plaintext); the
  ceiling speaks plaintext only. The broker's share of the TLS work is not counted.
- **restore-repartition**: a restore of the 8-partition topics into a topic of 6 partitions, each record
  where Kafka's default partitioner (murmur2) puts its key; the ceiling produces them with franz-go's.
- **restore-merge**: a restore of the 8-partition topics that merges every partition into partition 0
  of the new topic (kpipe: ` + "`--partition-mapping 1=0,...,7=0`" + `; the reference tool: its ` + "`partition_mapping`" + `);
  the ceiling produces the same records to a topic of one partition.
- **Backups on disk**: the size of the files a backup run wrote.
- **kpipe with its backups on S3**: ` + "`kpipe backup|restore --path s3://kpipe/bench/...`" + ` against the
  local S3 server; its CPU-s and RSS are kpipe's alone (the server is another process, not counted),
  and the server's own page cache is not dropped before a restore.
`
