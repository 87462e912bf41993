//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/kpipe/kpipe/bench"
)

// meta describes a benchmark run: when, where, on what.
type meta struct {
	Date       string                  `json:"date"`
	Machine    machine                 `json:"machine"`
	Kafka      string                  `json:"kafka"`
	Bootstrap  string                  `json:"bootstrap"`
	Records    int64                   `json:"records"`
	Runs       int                     `json:"runs"`
	Partitions []int32                 `json:"partitions"`
	ZstdRatio  map[bench.Shape]float64 `json:"zstd_ratio"`
	Kpipe      string                  `json:"kpipe"`
	Reference  string                  `json:"reference"`
	Go         string                  `json:"go"`
	Took       string                  `json:"took,omitempty"`
}

// machine is the hardware and kernel the benchmark ran on.
type machine struct {
	CPU       string  `json:"cpu"`
	Cores     int     `json:"cores"`
	MemoryGiB float64 `json:"memory_gib"`
	Kernel    string  `json:"kernel"`
}

func collectMeta(ctx context.Context, r *runner) meta {
	m := meta{
		Date:       r.started.Format("2006-01-02 15:04 MST"),
		Machine:    describeMachine(),
		Kafka:      r.cfg.kafkaVersion,
		Bootstrap:  r.cfg.bootstrap,
		Records:    r.cfg.records,
		Runs:       r.cfg.runs,
		Partitions: r.cfg.partitions,
		ZstdRatio:  map[bench.Shape]float64{},
		Kpipe:      describeKpipe(r.cfg.kpipe),
		Reference:  describePeer(ctx, r.cfg),
		Go:         runtime.Version(),
	}
	guess := r.b.versionGuess(ctx)
	switch {
	case m.Kafka == "":
		m.Kafka = guess + " (guessed from its API versions)"
	case guess != "unknown":
		m.Kafka += " (its API versions suggest " + guess + ")"
	}
	for _, s := range bench.Shapes {
		ratio, err := bench.CompressionRatio(bench.Gen{Shape: s, Partitions: 1, BaseMs: r.baseMs}, min(r.cfg.records, 20_000))
		if err != nil {
			r.logf("zstd ratio of %s values: %v", s, err)
			continue
		}
		m.ZstdRatio[s] = ratio
		r.logf("values of shape %-10s compress %.2fx with zstd at its fastest level", s, ratio)
	}
	return m
}

func describeMachine() machine {
	m := machine{CPU: "unknown", Cores: runtime.NumCPU(), Kernel: "unknown"}
	if v := procField("/proc/cpuinfo", "model name"); v != "" {
		m.CPU = v
	}
	if v := procField("/proc/meminfo", "MemTotal"); v != "" {
		var kb float64
		if _, err := fmt.Sscanf(v, "%f kB", &kb); err == nil {
			m.MemoryGiB = kb / (1 << 20)
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// procField returns the value of the first "name: value" line of file.
func procField(file, name string) string {
	f, err := os.Open(file)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// describeKpipe names the kpipe binary, when it was built and the commit
// it was built from.
func describeKpipe(bin string) string {
	name := bin
	if st, err := os.Stat(bin); err == nil {
		name = fmt.Sprintf("%s, built %s", bin, st.ModTime().UTC().Format("2006-01-02 15:04 MST"))
	}
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		return name
	}
	var rev, modified, when string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		case "vcs.time":
			when = s.Value
		}
	}
	if rev == "" {
		return fmt.Sprintf("%s with %s", name, info.GoVersion)
	}
	desc := fmt.Sprintf("%s with %s from commit %.12s (%s", name, info.GoVersion, rev, when)
	if modified == "true" {
		desc += ", with uncommitted changes"
	}
	return desc + ")"
}

func describePeer(ctx context.Context, cfg config) string {
	if cfg.peer == "" {
		return "skipped: " + cfg.peerNote
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, cfg.peer, "--version").Output()
	if err != nil {
		return cfg.peer
	}
	return fmt.Sprintf("%s (%s)", cfg.peer, string(bytes.TrimSpace(out)))
}
