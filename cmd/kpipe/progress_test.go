package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kpipe/kpipe/internal/testkit"
)

// TestProgressOfASnapshot: a snapshot's progress counts what is durable,
// its partitions done, and the time left at the rate records become
// durable.
func TestProgressOfASnapshot(t *testing.T) {
	var out bytes.Buffer
	p := &progress{mode: progressJSON, w: &out, start: time.Now(), lastAt: time.Now().Add(-time.Second)}
	p.observe("source", "kafka", map[string]int64{"records_read": 1500, "lag_records": 1000, "partitions": 4, "partitions_done": 1})
	p.observe("sink", "fs", map[string]int64{"records_durable": 500, "bytes_written": 4096})
	s := p.take(false)
	if s.RecordsDurable != 500 || s.BytesDurable != 4096 || s.Partitions != 4 || s.PartitionsDone != 1 || s.Lag != 1000 || s.ETA == nil {
		t.Fatalf("progress %+v", s)
	}
	if s.Rate < 450 || s.Rate > 550 || *s.ETA < 1.8 || *s.ETA > 2.2 {
		t.Fatalf("rate %.0f/s, ETA %.1fs; want about 500/s and 2s", s.Rate, *s.ETA)
	}
	// Continuous: no partitions done, no ETA.
	p.observe("source", "kafka", map[string]int64{"records_read": 1500, "lag_records": 10, "partitions": 4})
	if s := p.take(false); s.ETA != nil || s.Partitions != 0 {
		t.Fatalf("continuous progress %+v: want no ETA and no partitions done", s)
	}
}

// TestProgressModes runs a backup with each --progress mode: json lines,
// a terminal line redrawn in place, nothing; each ends with the last
// report, which counts every record durable.
func TestProgressModes(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "progress")
	seedPartitions(t, addr, topic, 3, 100, time.Now().UnixMilli())
	for _, mode := range []string{"json", "auto", "tty", "off"} {
		t.Run(mode, func(t *testing.T) {
			code, _, stderr := kpipeWithin(t, time.Minute, "backup", "--bootstrap-servers", addr, "--topics", topic, "--path", t.TempDir(),
				"--backup-id", "p", "--progress", mode)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			switch mode {
			case "json", "auto": // auto: stderr is no terminal here
				i := strings.LastIndex(stderr, `{"progress":`)
				if i < 0 {
					t.Fatalf("no JSON progress: %s", stderr)
				}
				var last struct{ Progress snapshot }
				if err := json.Unmarshal([]byte(strings.SplitN(stderr[i:], "\n", 2)[0]), &last); err != nil {
					t.Fatal(err)
				}
				if s := last.Progress; !s.Done || s.RecordsDurable != 300 || s.RecordsRead != 300 || s.Partitions != 3 || s.PartitionsDone != 3 || s.Lag != 0 {
					t.Fatalf("last progress %+v: want 300 records durable, 3 of 3 partitions done", s)
				}
			case "tty":
				if !strings.Contains(stderr, "\r300 records durable (") || !strings.Contains(stderr, "3/3 partitions done") {
					t.Fatalf("no last progress line: %q", stderr)
				}
			case "off":
				if strings.Contains(stderr, "progress") || strings.Contains(stderr, "records durable") {
					t.Fatalf("progress with --progress off: %s", stderr)
				}
			}
		})
	}
	if code, _, stderr := kpipe(t, "backup", "--progress", "loud", "--bootstrap-servers", addr, "--topics", topic, "--path", t.TempDir(), "--backup-id", "p"); code != exitBadInput ||
		errorText(stderr) != `kpipe: --progress "loud": use auto, tty, json or off` {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}
