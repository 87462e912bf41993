package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Progress modes.
const (
	progressAuto = "auto"
	progressTTY  = "tty"
	progressJSON = "json"
	progressOff  = "off"
)

// How often progress is shown: a terminal line is redrawn every second, a
// JSON line goes out every jsonEvery.
const (
	ttyEvery  = time.Second
	jsonEvery = 5 * time.Second
)

// progress shows how a run goes on stderr, from the counters its plugins
// report: a line redrawn in place on a terminal, JSON lines otherwise, and
// a last one when the run ends. Records count as done once the sink made
// them durable.
type progress struct {
	mode  string
	w     io.Writer
	start time.Time

	mu         sync.Mutex
	src, sink  map[string]int64
	lastAt     time.Time
	lastDone   int64
	rate       float64 // records made durable per second, smoothed
	lineLength int     // of the terminal line drawn last

	stopOnce sync.Once
	stopCh   chan struct{}
	stopped  chan struct{}
}

// startProgress starts showing progress on w in mode (auto: tty when w is
// a terminal, else json); nil for off.
func startProgress(mode string, w *os.File) (*progress, error) {
	mode, err := progressMode(mode, w)
	if mode == progressOff || err != nil {
		return nil, err
	}
	now := time.Now()
	p := &progress{mode: mode, w: w, start: now, lastAt: now, stopCh: make(chan struct{}), stopped: make(chan struct{})}
	go p.loop()
	return p, nil
}

// progressMode resolves a --progress value for w: auto becomes tty on a
// terminal, else json.
func progressMode(mode string, w *os.File) (string, error) {
	switch mode {
	case progressAuto:
		if isTerminal(w) {
			return progressTTY, nil
		}
		return progressJSON, nil
	case progressTTY, progressJSON, progressOff:
		return mode, nil
	}
	return "", badInput("--progress %q: use auto, tty, json or off", mode)
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// observe takes a plugin's counters (engine.Options.OnMetrics).
func (p *progress) observe(role, _ string, m map[string]int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch role {
	case "source":
		p.src = m
	case "sink":
		p.sink = m
	}
}

func (p *progress) loop() {
	defer close(p.stopped)
	every := ttyEvery
	if p.mode == progressJSON {
		every = jsonEvery
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			p.show(false)
		case <-p.stopCh:
			p.show(true)
			return
		}
	}
}

// stop shows the last progress and ends the reporting.
func (p *progress) stop() {
	if p == nil {
		return
	}
	p.stopOnce.Do(func() { close(p.stopCh) })
	<-p.stopped
}

// snapshot is one progress report.
type snapshot struct {
	Elapsed        float64 `json:"elapsed_seconds"`
	RecordsRead    int64   `json:"records_read"`
	RecordsDurable int64   `json:"records_durable"`
	BytesDurable   int64   `json:"bytes_durable"`
	Rate           float64 `json:"records_per_second"`
	Partitions     int64   `json:"partitions,omitempty"`
	PartitionsDone int64   `json:"partitions_done,omitempty"`
	Lag            int64   `json:"lag_records"`
	// ETA is set for a run that ends by itself (a snapshot) while it lags.
	ETA  *float64 `json:"eta_seconds,omitempty"`
	Done bool     `json:"done,omitempty"`
}

func (p *progress) take(final bool) snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	s := snapshot{Elapsed: now.Sub(p.start).Seconds(), RecordsRead: p.src["records_read"], Lag: p.src["lag_records"], Done: final}
	s.RecordsDurable = p.sink["records_durable"]
	s.BytesDurable = p.sink["bytes_written"]
	if dt := now.Sub(p.lastAt).Seconds(); dt > 0.2 {
		r := float64(s.RecordsDurable-p.lastDone) / dt
		if p.rate == 0 {
			p.rate = r
		} else {
			p.rate = 0.7*p.rate + 0.3*r
		}
		p.lastAt, p.lastDone = now, s.RecordsDurable
	}
	s.Rate = p.rate
	if final && s.Elapsed > 0 {
		s.Rate = float64(s.RecordsDurable) / s.Elapsed
	}
	// A snapshot reports its partitions done; its lag is what is left.
	if p.snapshotMode() {
		s.Partitions, s.PartitionsDone = p.src["partitions"], p.src["partitions_done"]
		if !final && s.Lag > 0 && p.rate > 0 {
			eta := float64(s.Lag) / p.rate
			s.ETA = &eta
		}
	}
	return s
}

// snapshotMode says the source reports partitions done: a snapshot,
// which ends by itself. The caller holds p.mu.
func (p *progress) snapshotMode() bool {
	_, ok := p.src["partitions_done"]
	return ok
}

func (p *progress) show(final bool) {
	s := p.take(final)
	if p.mode == progressJSON {
		line, _ := json.Marshal(map[string]snapshot{"progress": s})
		fmt.Fprintf(p.w, "%s\n", line)
		return
	}
	line := fmt.Sprintf("%s records durable (%s), %s records/s, %s lag", group(s.RecordsDurable), humanBytes(s.BytesDurable), group(int64(s.Rate)), group(s.Lag))
	if s.Partitions > 0 {
		line += fmt.Sprintf(", %d/%d partitions done", s.PartitionsDone, s.Partitions)
	}
	if s.ETA != nil {
		line += ", ETA " + (time.Duration(*s.ETA) * time.Second).Round(time.Second).String()
	}
	p.mu.Lock()
	pad := max(0, p.lineLength-len(line))
	p.lineLength = len(line)
	p.mu.Unlock()
	end := ""
	if final {
		end = "\n"
	}
	fmt.Fprintf(p.w, "\r%s%s%s", line, strings.Repeat(" ", pad), end)
}

// group writes a count with thousands separators.
func group(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return s
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
