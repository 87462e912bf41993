//go:build linux

package main

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/kpipe/kpipe/bench"
)

// Case kinds, the first part of a case name.
const (
	kindBackup     = "backup"
	kindRestore    = "restore"
	kindPITRWindow = "pitr-window"
	kindPITRFull   = "pitr-full"
	kindValidate   = "validate-deep"
	// Over the broker's SASL_SSL listener (SCRAM-SHA-512), on the
	// 8-partition topics.
	kindBackupTLS  = "backup-sasl-ssl"
	kindRestoreTLS = "restore-sasl-ssl"
	// kindRestoreMerge restores the 8-partition topics merging every
	// partition into one.
	kindRestoreMerge = "restore-merge"
	// kindRestoreRepartition restores the 8-partition topics spreading
	// their records over 6 partitions by key (murmur2).
	kindRestoreRepartition = "restore-repartition"
)

var kinds = []string{kindBackup, kindRestore, kindPITRWindow, kindPITRFull, kindValidate, kindBackupTLS, kindRestoreTLS, kindRestoreMerge, kindRestoreRepartition}

// caseName is how cases are named in the report and matched by --only,
// e.g. "backup/fresh/p8".
func caseName(kind string, shape bench.Shape, partitions int32) string {
	return fmt.Sprintf("%s/%s/p%d", kind, shape, partitions)
}

// run is the figures of one run of one tool.
type run struct {
	Tool        string           `json:"tool"`
	Round       int              `json:"round"`
	WallS       float64          `json:"wall_s"`
	CPUS        float64          `json:"cpu_s"` // user + sys from wait4
	UserS       float64          `json:"user_s"`
	SysS        float64          `json:"sys_s"`
	SampledCPUS float64          `json:"sampled_cpu_s"` // from /proc, the cross-check
	PeakRSSMiB  float64          `json:"peak_rss_mib"`  // whole tree
	MaxRSSMiB   float64          `json:"max_single_rss_mib"`
	Procs       int              `json:"procs"`
	Processes   []string         `json:"processes"` // command names, sorted
	Samples     int              `json:"samples"`
	IO          bench.IO         `json:"io"`      // whole tree
	RootIO      bench.IO         `json:"root_io"` // the started process alone
	Records     int64            `json:"records"` // checked: backed up, or found in the restored topic
	Segments    int64            `json:"segments"`
	OutBytes    int64            `json:"out_bytes,omitempty"` // backup size on disk
	Report      map[string]int64 `json:"report,omitempty"`    // the tool's own figures
}

func newRun(tool string, round int, u bench.Usage) run {
	const mib = 1 << 20
	return run{
		Tool: tool, Round: round,
		WallS: u.Wall.Seconds(), CPUS: u.CPU().Seconds(), UserS: u.User.Seconds(), SysS: u.Sys.Seconds(),
		SampledCPUS: u.SampledCPU.Seconds(),
		PeakRSSMiB:  float64(u.PeakRSS) / mib, MaxRSSMiB: float64(u.MaxRSS) / mib,
		Procs: u.Procs, Processes: commandNames(u.Commands), Samples: u.Samples, IO: u.IO, RootIO: u.RootIO, Segments: -1,
	}
}

func commandNames(byPID map[int]string) []string {
	out := make([]string, 0, len(byPID))
	for _, c := range byPID {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// caseResult holds every run of one case.
type caseResult struct {
	Name       string      `json:"name"`
	Kind       string      `json:"kind"`
	Shape      bench.Shape `json:"shape"`
	Partitions int32       `json:"partitions"`
	Expected   int64       `json:"expected_records"`
	// BackupSegments is the segment count of each tool's backup that the
	// case restores from.
	BackupSegments map[string]int64 `json:"backup_segments,omitempty"`
	Window         *bench.Window    `json:"window,omitempty"`
	Runs           []run            `json:"runs"`
	// Failures holds, by tool, why a tool that is not kpipe failed the
	// case: its runs stop there, and the report says why it has no
	// figures.
	Failures map[string]string `json:"failures,omitempty"`
}

// fail records that tool failed the case with err: the error line of its
// output, or the error's first line.
func (c *caseResult) fail(tool string, err error) {
	lines := strings.Split(err.Error(), "\n")
	msg := lines[0]
	for _, l := range lines {
		if strings.HasPrefix(l, "Error: ") {
			msg = l
			break
		}
	}
	if c.Failures == nil {
		c.Failures = map[string]string{}
	}
	c.Failures[tool] = msg
}

// series returns one figure of every run of tool, in round order (NaN for
// a round the tool did not run).
func (c *caseResult) series(tool string, figure func(run) float64) []float64 {
	rounds := 0
	for _, r := range c.Runs {
		rounds = max(rounds, r.Round)
	}
	out := make([]float64, rounds)
	for i := range out {
		out[i] = math.NaN()
	}
	for _, r := range c.Runs {
		if r.Tool == tool {
			out[r.Round-1] = figure(r)
		}
	}
	return out
}

func (c *caseResult) has(tool string) bool {
	for _, r := range c.Runs {
		if r.Tool == tool {
			return true
		}
	}
	return false
}

// median is the median of one figure of tool's runs.
func (c *caseResult) median(tool string, figure func(run) float64) float64 {
	return bench.Median(c.series(tool, figure))
}

// ratio is the median over rounds of tool a's figure divided by tool b's.
func (c *caseResult) ratio(a, b string, figure func(run) float64) float64 {
	return bench.MedianRatio(c.series(a, figure), c.series(b, figure))
}

// Figures of a run, for series.
func wall(r run) float64     { return r.WallS }
func cpu(r run) float64      { return r.CPUS }
func rss(r run) float64      { return r.PeakRSSMiB }
func readMiB(r run) float64  { return float64(r.IO.ReadBytes) / (1 << 20) }
func rcharMiB(r run) float64 { return float64(r.IO.RChar) / (1 << 20) }
func outMiB(r run) float64   { return float64(r.OutBytes) / (1 << 20) }
func hostIOMiB(r run) float64 {
	return float64(r.RootIO.RChar+r.RootIO.WChar) / (1 << 20)
}

// reported is a figure of the tool's own report, divided by unit (NaN when
// the report lacks it).
func reported(name string, unit float64) func(run) float64 {
	return func(r run) float64 {
		v, ok := r.Report[name]
		if !ok {
			return math.NaN()
		}
		return float64(v) / unit
	}
}

func segmentsRead(r run) float64 {
	if r.Segments < 0 {
		return math.NaN()
	}
	return float64(r.Segments)
}
