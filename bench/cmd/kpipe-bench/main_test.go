//go:build linux

package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestDeliverWritesInOrder(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "0.zst"))
	if err != nil {
		t.Fatal(err)
	}
	p := &partFile{f: f, pending: map[int]*[]byte{}}
	outs := newBufPool(16)
	frame := func(s string) *[]byte { b := []byte(s); return &b }
	for _, seq := range []int{2, 0, 3, 1} {
		p.deliver(seq, frame(string(rune('a'+seq))), outs)
	}
	if _, err := closePartFiles(filepath.Dir(f.Name()), map[int32]*partFile{0: p}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(f.Name())
	if string(got) != "abcd" || p.written != 4 {
		t.Errorf("file holds %q (%d bytes counted), want frames in sequence: abcd", got, p.written)
	}
}

func TestAppendRecord(t *testing.T) {
	r := &kgo.Record{Offset: 7, Timestamp: time.UnixMilli(1000), Key: nil, Value: []byte("v"),
		Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("xy")}}}
	b := appendRecord(nil, r)
	// offset, timestamp, null key, value, header count, header key, header value
	if want := 8 + 8 + 4 + (4 + 1) + 4 + (4 + 1) + (4 + 2); len(b) != want {
		t.Fatalf("framed record is %d bytes, want %d", len(b), want)
	}
	if !bytes.Equal(b[16:20], []byte{0xff, 0xff, 0xff, 0xff}) {
		t.Errorf("a null key is framed as % x, want length -1", b[16:20])
	}
}

func TestChunkSize(t *testing.T) {
	for _, c := range []struct{ parts, want int }{{1, 1 << 20}, {8, 1 << 20}, {100, 32 << 20 / 100}, {10_000, 128 << 10}} {
		if got := chunkSize(c.parts); got != c.want {
			t.Errorf("chunkSize(%d) = %d, want %d", c.parts, got, c.want)
		}
	}
}

func TestReadRefRestore(t *testing.T) {
	log := "\x1b[2m2026-12-01T00:44:53Z\x1b[0m \x1b[32m INFO\x1b[0m x: Restored t:1 -> t2:1 (2180 records, 12 segments)\n" +
		"noise\n\x1b[32m INFO\x1b[0m x: Restored t:0 -> t2:0 (2820 records, 15 segments)\n"
	o, err := readRefRestore([]byte(log), nil)
	if err != nil || o.records != 5000 || o.segments != 27 {
		t.Errorf("readRefRestore = %+v, %v; want 5000 records in 27 segments", o, err)
	}
	if o, _ := readRefRestore([]byte("nothing restored"), nil); o.records != -1 || o.segments != -1 {
		t.Errorf("without log lines: %+v, want -1 (not said)", o)
	}
}

func TestReadKpipeRestore(t *testing.T) {
	out := `{"summary":{"records_restored":2000,"records_skipped":198000},
	  "report":{"records_out":2000,"plugins":[{"role":"source","metrics":{"segments_read":8,"segments_pruned":248}}]}}`
	o, err := readKpipeRestore([]byte(out), nil)
	if err != nil || o.records != 2000 || o.segments != 8 || o.report["segments_pruned"] != 248 {
		t.Errorf("readKpipeRestore = %+v, %v", o, err)
	}
}

func TestCaseRatiosPerRound(t *testing.T) {
	c := &caseResult{Runs: []run{
		{Tool: toolKpipe, Round: 1, WallS: 2}, {Tool: toolRef, Round: 1, WallS: 1},
		{Tool: toolKpipe, Round: 2, WallS: 30}, {Tool: toolRef, Round: 2, WallS: 10},
		{Tool: toolKpipe, Round: 3, WallS: 4},
	}}
	if got := c.median(toolKpipe, wall); got != 4 {
		t.Errorf("median kpipe wall = %v, want 4", got)
	}
	// Round 3 has no reference run: its ratio is left out.
	if got := c.ratio(toolKpipe, toolRef, wall); got != 2.5 {
		t.Errorf("median kpipe/ref ratio = %v, want 2.5 (of 2 and 3)", got)
	}
	if got := c.median(toolCeiling, wall); !math.IsNaN(got) {
		t.Errorf("median of a tool that never ran = %v, want NaN", got)
	}
	if got := triple(c, wall, "%.1f"); got != "4.0 / 5.5 / –" {
		t.Errorf("triple = %q", got)
	}
}

func TestTablePadsColumns(t *testing.T) {
	tb := table{head: []string{"case", "kpipe÷ref"}}
	tb.add("backup/fresh/p100", "1.5")
	lines := strings.Split(strings.TrimSpace(tb.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("table has %d lines:\n%s", len(lines), tb.String())
	}
	for _, l := range lines {
		if n := len([]rune(l)); n != len([]rune(lines[0])) {
			t.Errorf("line %q is %d characters wide, want %d", l, n, len([]rune(lines[0])))
		}
	}
}

func TestParseConfig(t *testing.T) {
	plugins := t.TempDir()
	if err := os.WriteFile(filepath.Join(plugins, "kpipe-plugin-fs"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	base := []string{"--kpipe", os.Args[0], "--plugin-dir", plugins}
	c, err := parseConfig(append(base, "--peer", "/nonexistent/kafka-backup", "--only", "backup/fresh", "--partitions", "1, 8"))
	if err != nil {
		t.Fatal(err)
	}
	if c.peer != "" || !strings.Contains(c.peerNote, "/nonexistent/kafka-backup") {
		t.Errorf("a missing --peer: peer %q, note %q; want it skipped with a note", c.peer, c.peerNote)
	}
	if len(c.partitions) != 2 || c.partitions[1] != 8 || !c.only.MatchString("backup/fresh/p8") || c.records != 200_000 {
		t.Errorf("parsed %+v", c)
	}
	for _, bad := range [][]string{
		{"--records", "10"}, {"--runs", "0"}, {"--format", "yaml"}, {"--only", "("}, {"--partitions", "1,x"},
		{"--pitr-segments", "0"}, {"stray"},
	} {
		if _, err := parseConfig(append(base, bad...)); err == nil {
			t.Errorf("parseConfig accepted %q", bad)
		}
	}
	if _, err := parseConfig([]string{"--kpipe", "/nonexistent/kpipe", "--plugin-dir", plugins}); err == nil ||
		!strings.Contains(err.Error(), "make build") {
		t.Errorf("a missing kpipe binary: %v, want an error saying to build it", err)
	}
}
