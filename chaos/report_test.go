// The chaos report: with KPIPE_CHAOS_REPORT=FILE, the scenarios run are
// written to FILE as a Markdown table when the tests end (`make chaos`
// writes chaos/REPORT.md).

package chaos

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kpipe/kpipe/internal/testkit"
)

func TestMain(m *testing.M) {
	began := time.Now()
	code := m.Run()
	if file := os.Getenv("KPIPE_CHAOS_REPORT"); file != "" {
		if err := writeReport(file, began, code); err != nil {
			fmt.Fprintf(os.Stderr, "chaos report: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// writeReport writes the rows of the scenarios run to file; nothing when
// none ran.
func writeReport(file string, began time.Time, code int) error {
	report.mu.Lock()
	defer report.mu.Unlock()
	if len(report.rows) == 0 {
		return nil // no scenario ran (-short, or -run chose none)
	}
	var b strings.Builder
	mode := "short run (`make test`)"
	if long {
		mode = "long run (`make chaos`, KPIPE_CHAOS_LONG=1)"
	}
	result := "every scenario passed"
	if code != 0 {
		result = "SOME SCENARIOS FAILED"
	}
	fmt.Fprintf(&b, "# Chaos report\n\n")
	fmt.Fprintf(&b, "Written by `go test ./chaos/` with KPIPE_CHAOS_REPORT set, %s.\n\n", mode)
	fmt.Fprintf(&b, "- Date: %s (the run took %s; %s)\n", began.UTC().Format("2006-01-02 15:04 MST"), time.Since(began).Round(time.Second), result)
	fmt.Fprintf(&b, "- Seed: %d (`KPIPE_CHAOS_SEED=%d` replays the random choices)\n", seed, seed)
	fmt.Fprintf(&b, "- Machine: %s\n", machine())
	fmt.Fprintf(&b, "- kpipe: %s\n\n", kpipeVersion())
	b.WriteString("Each scenario produces a known data set (several partitions; null and empty keys, values and header\n" +
		"values, repeated header keys, timestamps out of order), injects its faults, then checks the backup with\n" +
		"`kpipe validate --deep` and restores it to a new topic that is compared with the source record by record\n" +
		"(key, value, headers, timestamp, order per partition). *Records lost* are source records the restored\n" +
		"topic lacks, *records duplicated* those it holds more than once. *Time to recover* is the longest time from\n" +
		"the end of a fault (the restart after a kill, the broker or S3 server up again, the network back, the\n" +
		"quota raised) until the run committed more than it held at that moment, or finished.\n\n")
	b.WriteString("| scenario | faults injected | outcome | records lost | records duplicated | time to recover |\n")
	b.WriteString("|---|---|---|---:|---:|---:|\n")
	for _, r := range report.rows {
		cells := []string{r.Scenario, r.Faults, r.Outcome, r.Lost, r.Dup, r.Recover}
		for i, c := range cells {
			cells[i] = strings.ReplaceAll(strings.ReplaceAll(c, "|", `\|`), "\n", " ")
		}
		fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | "))
	}
	return os.WriteFile(file, []byte(b.String()), 0o644)
}

// machine describes the machine: OS and architecture, CPUs, memory,
// kernel, Go.
func machine() string {
	model, mem := "", ""
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var kb int64
			if n, _ := fmt.Sscanf(sc.Text(), "MemTotal: %d kB", &kb); n == 1 {
				mem = fmt.Sprintf(", %.0f GiB memory", float64(kb)/(1<<20))
				break
			}
		}
		f.Close()
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	if model != "" {
		model = " (" + model + ")"
	}
	return fmt.Sprintf("%s/%s, %d CPUs%s%s, Linux %s, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), model, mem,
		strings.TrimSpace(string(kernel)), runtime.Version())
}

// kpipeVersion is the first line of `kpipe version`, when it runs.
func kpipeVersion() string {
	bin := filepath.Join(testkit.Root(), "bin", "kpipe")
	if d := os.Getenv("KPIPE_PLUGIN_DIR"); d != "" {
		bin = filepath.Join(filepath.Dir(d), "kpipe")
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}
