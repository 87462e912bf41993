package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/record"
)

func configure(t *testing.T, p interface {
	Spec() sdk.Spec
	Configure(context.Context) error
}, params map[string]any) error {
	t.Helper()
	js, _ := json.Marshal(params)
	if err := param.Decode(p.Spec().Config, js); err != nil {
		return err
	}
	return p.Configure(context.Background())
}

func batch(t *testing.T, topic string, partition int32, from, n int64) sdk.Batch {
	t.Helper()
	b := record.NewBuilder(nil)
	defer b.Release()
	for i := from; i < from+n; i++ {
		b.Append(&record.Record{Offset: i, Timestamp: 1_731_236_400_000 + i, Value: []byte("v")})
	}
	out, err := sdk.NewBatch(topic, partition, b, -1)
	if err != nil {
		t.Fatal(err)
	}
	// A frame as a source sends it to this sink: in its codec (zstd).
	out.Arrow, err = record.NewEncoder(record.Zstd).Encode(out.Record, nil)
	out.Record.Release()
	out.Record = nil
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// openSink configures and opens a sink; acks returns the seqs acked so far.
func openSink(t *testing.T, params map[string]any) (s *Sink, acks func() []uint64, err error) {
	t.Helper()
	s = NewSink().(*Sink)
	if err := configure(t, s, params); err != nil {
		t.Fatal(err)
	}
	var acked []uint64
	var mu sync.Mutex // acks come from the partitions' writer goroutines
	err = s.Open(context.Background(), func(ids ...sdk.BatchID) {
		mu.Lock()
		for _, id := range ids {
			acked = append(acked, id.Seq)
		}
		mu.Unlock()
	})
	acks = func() []uint64 { mu.Lock(); defer mu.Unlock(); return append([]uint64(nil), acked...) }
	return s, acks, err
}

func TestSecondWriterOfABackupWaitsThenFails(t *testing.T) {
	params := map[string]any{"path": t.TempDir(), "backup_id": "b", "lock_timeout": "200ms"}
	first, _, err := openSink(t, params)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = openSink(t, params)
	want := `backup "b" under ` + params["path"].(string) + ` is being written by another process; wait for it to finish (lock_timeout is 200ms)`
	if err == nil || err.Error() != want {
		t.Fatalf("second writer: %v, want %q", err, want)
	}
	first.Teardown(context.Background())
	second, _, err := openSink(t, params)
	if err != nil {
		t.Fatalf("after the first writer ended: %v", err)
	}
	second.Teardown(context.Background())
}

func TestSinkSkipsWhatIsAlreadyStoredAndSplitsAtSegmentMaxRecords(t *testing.T) {
	params := map[string]any{"path": t.TempDir(), "backup_id": "b", "segment_max_records": 30}
	ctx := context.Background()
	s, acked, err := openSink(t, params)
	if err != nil {
		t.Fatal(err)
	}
	b := batch(t, "t", 0, 0, 50)
	b.Seq = 1
	if err := s.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	if got := acked(); len(got) != 0 {
		t.Fatalf("acked %v before the batch's last segment was committed", got)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s.Teardown(ctx)
	s, acked, err = openSink(t, params)
	if err != nil {
		t.Fatal(err)
	}
	pos, _ := s.DurablePositions(ctx)
	if len(pos) != 1 || pos[0] != (sdk.Position{Topic: "t", Partition: 0, NextOffset: 50}) {
		t.Fatalf("positions %v, want t/0@50", pos)
	}
	b = batch(t, "t", 0, 40, 20) // 40..49 stored already, 50..59 new
	b.Seq = 7
	if err := s.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	m := s.Metrics()
	if got := acked(); m["records_written"] != 10 || m["records_skipped_already_stored"] != 10 || len(got) != 1 || got[0] != 7 {
		t.Fatalf("metrics %v acks %v; want 10 written, 10 skipped, seq 7 acked", m, got)
	}
	s.Teardown(ctx)
	parts, _ := s.backup.Partitions()
	var sizes []int64
	for _, e := range parts[0].Entries {
		sizes = append(sizes, e.Records)
	}
	if len(sizes) != 3 || sizes[0] != 30 || sizes[1] != 20 || sizes[2] != 10 {
		t.Fatalf("segments of %v records, want [30 20 10]", sizes)
	}
}

func TestSourceRefusesACorruptSegmentUnlessChecksumsAreOff(t *testing.T) {
	path := t.TempDir()
	ctx := context.Background()
	s, _, err := openSink(t, map[string]any{"path": path, "backup_id": "b"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, batch(t, "t", 0, 0, 100)); err != nil {
		t.Fatal(err)
	}
	s.Flush(ctx)
	s.Teardown(ctx)
	files, _ := filepath.Glob(filepath.Join(path, "b", "topics", "t", "0", "*.arrows"))
	data, _ := os.ReadFile(files[0])
	data[len(data)/2] ^= 0xff
	os.WriteFile(files[0], data, 0o644)

	read := func(verify bool) error {
		src := NewSource().(*Source)
		if err := configure(t, src, map[string]any{"path": path, "backup_id": "b", "verify_checksums": verify}); err != nil {
			t.Fatal(err)
		}
		if err := src.Open(ctx, sdk.SourceOptions{}); err != nil {
			return err
		}
		defer src.Teardown(ctx)
		for {
			if _, err := src.Read(ctx); err != nil {
				if err == io.EOF {
					return nil
				}
				return err
			}
		}
	}
	err = read(true)
	if err == nil || !strings.Contains(err.Error(), "checksum crc32c:") || !strings.Contains(err.Error(), "manifest says crc32c:") {
		t.Fatalf("with verify_checksums: %v, want a checksum mismatch", err)
	}
	// Without the check the flipped byte goes unnoticed or fails decoding;
	// either way it is not the checksum error.
	if err := read(false); err != nil && strings.Contains(err.Error(), "manifest says") {
		t.Fatalf("without verify_checksums the checksum was still checked: %v", err)
	}
}

// readAll reads src to its end.
func readAll(t *testing.T, src *Source) []sdk.Batch {
	t.Helper()
	var out []sdk.Batch
	for {
		b, err := src.Read(context.Background())
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
}

func TestSourceSkipsSegmentsOutsideTheWindowAndResumes(t *testing.T) {
	path := t.TempDir()
	ctx := context.Background()
	s, _, _ := openSink(t, map[string]any{"path": path, "backup_id": "b", "segment_max_records": 10})
	for p := int32(0); p < 2; p++ {
		if err := s.Write(ctx, batch(t, "t", p, 0, 100)); err != nil {
			t.Fatal(err)
		}
	}
	s.Write(ctx, batch(t, "other", 0, 0, 5))
	s.Flush(ctx)
	s.Teardown(ctx)
	base := int64(1_731_236_400_000)
	src := NewSource().(*Source)
	err := configure(t, src, map[string]any{"path": path, "backup_id": "b", "topics": []string{"t*"}, "partitions": []int{1},
		"time_window_start": base + 25, "time_window_end": base + 54})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Open(ctx, sdk.SourceOptions{Resume: []sdk.Position{{Topic: "t", Partition: 1, NextOffset: 33}}}); err != nil {
		t.Fatal(err)
	}
	var offsets []int64
	for _, b := range readAll(t, src) {
		if b.Metadata != nil {
			if len(b.Metadata.Topics) != 1 || b.Metadata.Topics[0].Name != "t" || b.Metadata.Topics[0].Partitions != 2 {
				t.Fatalf("metadata %+v, want topic t with 2 partitions (other is not wanted)", b.Metadata)
			}
			continue
		}
		offsets = append(offsets, b.MinOffset, b.MaxOffset)
	}
	// Segments of partition 1: [0-9] ... [90-99]. Window 25..54 needs
	// segments 20-29 .. 50-59; resume at 33 cuts 20-29 and 30-32, the
	// window's end cuts 55-59.
	want := []int64{33, 39, 40, 49, 50, 54}
	if len(offsets) != len(want) {
		t.Fatalf("read batches %v, want %v", offsets, want)
	}
	for i := range want {
		if offsets[i] != want[i] {
			t.Fatalf("read batches %v, want %v", offsets, want)
		}
	}
	m := src.Metrics()
	// Segments 0-29 lie before the resume position (not pruned, just done);
	// 60-99 lie after the window: 4 segments pruned, and 55-59 cut.
	if m["segments_pruned"] != 4 || m["records_pruned"] != 45 || m["segments_read"] != 3 || m["records_read"] != 22 {
		t.Fatalf("metrics %v, want 4 segments and 5 more records (45) pruned, 3 read (22 records)", m)
	}
}

// TestSourceCutsFramesToTheWindow stores one frame whose timestamps do not
// grow with offsets and restores a window from inside it: exactly the
// records whose timestamps lie in the window come out, and the position
// moves past the whole frame.
func TestSourceCutsFramesToTheWindow(t *testing.T) {
	path := t.TempDir()
	ctx := context.Background()
	s, _, _ := openSink(t, map[string]any{"path": path, "backup_id": "b"})
	base := int64(1_731_236_400_000)
	bld := record.NewBuilder(nil)
	for i, d := range []int64{5, 1, 7, 3, 9, 0, 8, 2, 6, 4} {
		bld.Append(&record.Record{Offset: int64(i), Timestamp: base + d, Key: []byte{byte(i)}, Value: []byte("v")})
	}
	in, err := sdk.NewBatch("t", 0, bld, -1)
	bld.Release()
	if err != nil {
		t.Fatal(err)
	}
	in.Arrow, err = record.NewEncoder(record.Zstd).Encode(in.Record, nil)
	in.Record.Release()
	in.Record = nil
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, in); err != nil {
		t.Fatal(err)
	}
	s.Flush(ctx)
	s.Teardown(ctx)

	src := NewSource().(*Source)
	if err := configure(t, src, map[string]any{"path": path, "backup_id": "b", "time_window_start": base + 3, "time_window_end": base + 6}); err != nil {
		t.Fatal(err)
	}
	if err := src.Open(ctx, sdk.SourceOptions{}); err != nil {
		t.Fatal(err)
	}
	var got []string
	var next int64
	for _, b := range readAll(t, src) {
		if b.Metadata != nil {
			continue
		}
		next = b.NextOffset
		if b.Count == 0 {
			continue
		}
		if b.Record == nil {
			t.Fatalf("the straddling frame was passed on whole (%d records)", b.Count)
		}
		v, err := record.NewView(b.Record)
		if err != nil {
			t.Fatal(err)
		}
		for i := range v.Len() {
			got = append(got, fmt.Sprintf("%d@%d/%x", v.Offset(i), v.Timestamp(i)-base, v.Key(i)))
		}
		b.Record.Release()
	}
	want := []string{"0@5/00", "3@3/03", "8@6/08", "9@4/09"}
	if !slices.Equal(got, want) || next != 10 {
		t.Fatalf("read %v up to position %d, want %v up to 10", got, next, want)
	}
	if m := src.Metrics(); m["records_read"] != 4 || m["records_pruned"] != 6 {
		t.Fatalf("metrics %v, want 4 records read, 6 pruned", m)
	}
}

func TestSinkCommitsASegmentOnceItReachesSegmentMaxBytes(t *testing.T) {
	params := map[string]any{"path": t.TempDir(), "backup_id": "b", "segment_max_bytes": 1, "compression": "none"}
	ctx := context.Background()
	s, acked, err := openSink(t, params)
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < 3; i++ {
		b := batch(t, "t", 0, i*10, 10)
		b.Seq = uint64(i + 1)
		if err := s.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	// Every batch fills a segment past 1 byte, so each is committed and
	// acked without a Flush.
	deadline := time.Now().Add(5 * time.Second)
	for len(acked()) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := acked(); len(got) != 3 {
		t.Fatalf("acked %v without a flush, want seqs 1, 2, 3", got)
	}
	s.Teardown(ctx)
	parts, _ := s.backup.Partitions()
	if len(parts) != 1 || len(parts[0].Entries) != 3 || parts[0].Entries[2].MinOffset != 20 {
		t.Fatalf("segments %+v, want 3 of 10 records each", parts)
	}
}

// TestSinkNeverOverwritesABackupItCannotRead opens a sink on a backup whose
// backup.json is torn, then on one of another format version: both fail
// with the reason, and backup.json is left as it was.
func TestSinkNeverOverwritesABackupItCannotRead(t *testing.T) {
	for _, c := range []struct{ name, info, want string }{
		{"torn", `{"format":`, `backup "b": backup.json: unexpected end of JSON input`},
		{"version 1", `{"format":"kpipe-backup","version":1,"backup_id":"b"}`,
			`backup "b": backup.json says format "kpipe-backup" version 1; this kpipe reads "kpipe-backup" version 2: use the kpipe that wrote it, or back up into a new backup id`},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := t.TempDir()
			file := filepath.Join(path, "b", "backup.json")
			if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, []byte(c.info), 0o644); err != nil {
				t.Fatal(err)
			}
			s, _, err := openSink(t, map[string]any{"path": path, "backup_id": "b"})
			if err == nil || err.Error() != c.want {
				t.Fatalf("Open: %v, want %q", err, c.want)
			}
			s.Teardown(context.Background())
			if data, _ := os.ReadFile(file); string(data) != c.info {
				t.Fatalf("backup.json is now %q, want it untouched", data)
			}
		})
	}
}
