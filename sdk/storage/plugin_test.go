package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kpipe/kpipe/internal/testkit"
	"github.com/kpipe/kpipe/plugins/fs/blob"
	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/record"
	"github.com/kpipe/kpipe/sdk/storage"
)

// folder is a storage plugin over a folder, as the fs plugin is.
type folder struct {
	cfg struct {
		Path string `param:"path" required:"true" help:"folder"`
	}
}

func (f *folder) Spec() sdk.Spec {
	return sdk.Spec{Name: "folder", Version: sdk.Version, Summary: "test", Config: &f.cfg}
}
func (f *folder) Configure(context.Context) error                 { return nil }
func (f *folder) Open(context.Context) (storage.BlobStore, error) { return blob.New(f.cfg.Path), nil }
func (f *folder) Location() string                                { return f.cfg.Path }

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
func openSink(t *testing.T, params map[string]any) (s *storage.Sink, acks func() []uint64, err error) {
	t.Helper()
	s = storage.NewSink(&folder{})
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

// openSource configures and opens a source.
func openSource(t *testing.T, params map[string]any, resume ...sdk.Position) *storage.Source {
	t.Helper()
	src := storage.NewSource(&folder{})
	if err := configure(t, src, params); err != nil {
		t.Fatal(err)
	}
	if err := src.Open(context.Background(), sdk.SourceOptions{Resume: resume}); err != nil {
		t.Fatal(err)
	}
	return src
}

// readAll reads src to its end.
func readAll(t *testing.T, src *storage.Source) []sdk.Batch {
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

func TestSinkSkipsWhatIsAlreadyStoredAndSplitsAtSegmentMaxRecords(t *testing.T) {
	path := t.TempDir()
	params := map[string]any{"path": path, "backup_id": "b", "segment_max_records": 30}
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
	// A partition nobody announced is in the metadata all the same.
	parts := testkit.Manifests(t, path, "b")
	if len(parts) != 1 || parts[0].Topic != "t" {
		t.Fatalf("partitions %+v, want t/0", parts)
	}
	var sizes []int64
	for _, e := range parts[0].Entries {
		sizes = append(sizes, e.Records)
	}
	if !slices.Equal(sizes, []int64{30, 20, 10}) {
		t.Fatalf("segments of %v records, want [30 20 10]", sizes)
	}
}

// TestSourceRefusesACorruptBatch flips a byte of a segment: reading it
// fails for that partition, naming the segment and both checksums.
func TestSourceRefusesACorruptBatch(t *testing.T) {
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
	e := testkit.Manifests(t, path, "b")[0].Entries[0]
	file := testkit.SegmentFile(path, "b", "t", 0, e)
	data, _ := os.ReadFile(file)
	data[e.Batches[0].Start+e.Batches[0].Length/2] ^= 0xff
	os.WriteFile(file, data, 0o644)

	src := openSource(t, map[string]any{"path": path, "backup_id": "b"})
	src.Read(ctx) // metadata
	_, err = src.Read(ctx)
	var pe *sdk.PartitionError
	want := fmt.Sprintf("segment b/topics/t/0/%s: batch at byte %d: checksum crc32c:", e.Segment, e.Batches[0].Start)
	if !errors.As(err, &pe) || pe.Partition != 0 || pe.Offset != 0 || pe.Code != "BACKUP_DAMAGED" ||
		!strings.HasPrefix(pe.Err.Error(), want) || !strings.HasSuffix(pe.Err.Error(), ", the index says "+storage.FormatChecksum(e.Batches[0].CRC)) {
		t.Fatalf("reading a corrupt batch: %v, want a BACKUP_DAMAGED error starting %q", err, want)
	}
}

func TestSourceReadsOnlyWhatTheWindowAndTheResumePositionNeed(t *testing.T) {
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
	src := openSource(t, map[string]any{"path": path, "backup_id": "b", "topics": []string{"t*"}, "partitions": []int{1},
		"time_window_start": base + 25, "time_window_end": base + 54}, sdk.Position{Topic: "t", Partition: 1, NextOffset: 33})
	var offsets []int64
	var next int64
	for _, b := range readAll(t, src) {
		if b.Metadata != nil {
			if len(b.Metadata.Topics) != 1 || b.Metadata.Topics[0].Name != "t" || b.Metadata.Topics[0].Partitions != 2 {
				t.Fatalf("metadata %+v, want topic t with 2 partitions (other is not wanted)", b.Metadata)
			}
			// Partition 1 alone is read; of its batches only 40-49 is sent
			// whole (the resume position cuts 30-39, the window 50-59).
			if tm := b.Metadata.Topics[0]; fmt.Sprint(tm.ReadPartitions) != "[1]" || fmt.Sprint(tm.LargestRecord) != "&{t 1 40 49 1}" {
				t.Fatalf("read partitions %v, largest record %+v; want [1] and the 1-byte records of batch 40-49", tm.ReadPartitions, tm.LargestRecord)
			}
			continue
		}
		next = b.NextOffset
		if b.Count > 0 {
			offsets = append(offsets, b.MinOffset, b.MaxOffset)
		}
	}
	// Segments of partition 1: [0-9] ... [90-99]. Window 25..54 needs
	// segments 20-29 .. 50-59; resume at 33 cuts 20-29 and 30-32, the
	// window's end cuts 55-59; the position still moves to the end.
	if want := []int64{33, 39, 40, 49, 50, 54}; !slices.Equal(offsets, want) || next != 100 {
		t.Fatalf("read batches %v up to %d, want %v up to 100", offsets, next, want)
	}
	m := src.Metrics()
	// Segments 0-29 lie before the resume position (not pruned, just done);
	// 60-99 lie after the window: 4 segments pruned, and 55-59 cut.
	if m["segments_pruned"] != 4 || m["batches_pruned"] != 4 || m["records_pruned"] != 45 || m["segments_read"] != 3 || m["records_read"] != 22 {
		t.Fatalf("metrics %v, want 4 segments (4 batches) and 5 more records (45) pruned, 3 read (22 records)", m)
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

	src := openSource(t, map[string]any{"path": path, "backup_id": "b", "time_window_start": base + 3, "time_window_end": base + 6})
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
	path := t.TempDir()
	params := map[string]any{"path": path, "backup_id": "b", "segment_max_bytes": 1, "compression": "none"}
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
	parts := testkit.Manifests(t, path, "b")
	if len(parts) != 1 || len(parts[0].Entries) != 3 || parts[0].Entries[2].MinOffset != 20 {
		t.Fatalf("segments %+v, want 3 of 10 records each", parts)
	}
}

// TestSinkNeverOverwritesABackupItCannotRead opens a sink on a backup whose
// backup.json is torn, then on one of format version 2: both fail with the
// reason, and backup.json is left as it was.
func TestSinkNeverOverwritesABackupItCannotRead(t *testing.T) {
	for _, c := range []struct{ name, info, want string }{
		{"torn", `{"format":`, `backup "b": b/backup.json is corrupt: unexpected end of JSON input`},
		{"version 2", `{"format":"kpipe-backup","version":2,"backup_id":"b"}`,
			`backup "b" is of format version 2, which this kpipe does not read (it reads version 3): back it up again into a new backup id`},
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
			if want := path + ": " + c.want; err == nil || err.Error() != want {
				t.Fatalf("Open: %v, want %q", err, want)
			}
			s.Teardown(context.Background())
			if data, _ := os.ReadFile(file); string(data) != c.info {
				t.Fatalf("backup.json is now %q, want it untouched", data)
			}
		})
	}
}

// TestASegmentWithoutEntryIsIgnoredAndReported: a segment no entry names
// (its entry lost): the next writer reports it, the source's check before
// reading fails on it, and without the check the source never reads it.
func TestASegmentWithoutEntryIsIgnoredAndReported(t *testing.T) {
	path := t.TempDir()
	ctx := context.Background()
	s, _, err := openSink(t, map[string]any{"path": path, "backup_id": "b"})
	if err != nil {
		t.Fatal(err)
	}
	s.Write(ctx, batch(t, "t", 0, 0, 10))
	s.Flush(ctx)
	s.Teardown(ctx)
	// The crash: a whole segment of offsets 10-19, and no entry.
	orphan := batch(t, "t", 0, 10, 10)
	key := storage.SegmentKey(storage.Keys{ID: "b"}.Partition("t", 0), 10, 1, "")
	if err := blob.New(path).Put(ctx, key, strings.NewReader(string(orphan.Arrow)), int64(len(orphan.Arrow)), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	s, _, err = openSink(t, map[string]any{"path": path, "backup_id": "b"})
	if err != nil {
		t.Fatal(err)
	}
	if pos, _ := s.DurablePositions(ctx); len(pos) != 1 || pos[0].NextOffset != 10 {
		t.Fatalf("positions %v, want t/0@10: the orphan does not count", pos)
	}
	if m := s.Metrics(); m["orphan_segments"] != 1 {
		t.Fatalf("metrics %v, want 1 orphan segment reported", m)
	}
	s.Teardown(ctx)
	// The run that wrote the orphan ended cleanly: its entry was lost, and
	// the source's check before reading says so instead of restoring less.
	src := storage.NewSource(&folder{})
	if err := configure(t, src, map[string]any{"path": path, "backup_id": "b"}); err != nil {
		t.Fatal(err)
	}
	want := "segment segment-00000000000000000010-1 is named by no manifest entry, and the run that wrote it (1) ended cleanly: its entry was lost (records from offset 10 on are not restorable)"
	if err := src.Open(ctx, sdk.SourceOptions{InFlightBytes: 1 << 20}); err == nil || !strings.Contains(err.Error(), "is damaged where this run reads, so nothing was read: t/0: "+want) {
		t.Fatalf("source open: %v, want the orphan named", err)
	}
	var read int64
	for _, b := range readAll(t, openSource(t, map[string]any{"path": path, "backup_id": "b", "preflight": false})) {
		read += b.Count
	}
	if read != 10 {
		t.Fatalf("without the check the source read %d records, want the 10 committed", read)
	}
}

// TestAnEncryptedSegmentIsRefused: an entry that says its batches are
// encrypted in a way this kpipe does not know is not read as plain data.
func TestAnEncryptedSegmentIsRefused(t *testing.T) {
	ctx := context.Background()
	store := blob.New(t.TempDir())
	w, err := storage.OpenWriter(ctx, store, "b", storage.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writeSegments(t, w, "t", 1, 1, 1, 10, 0)
	w.Close(ctx, storage.OutcomeComplete)
	b, _ := storage.OpenBackup(ctx, store, "b")
	m, _ := b.Manifest(ctx, "t", 0)
	e := m.Entries[0]
	e.Encryption = "chacha20-poly1305"
	_, _, err = b.Batches(ctx, "t", 0, e, nil).Next()
	want := fmt.Sprintf(`segment b/topics/t/0/%s is encrypted with "chacha20-poly1305", which this kpipe cannot decrypt`, e.Segment)
	if err == nil || err.Error() != want {
		t.Fatalf("reading an encrypted segment: %v, want %q", err, want)
	}
}

// counted is the folder plugin over a counting store.
type counted struct {
	folder
	store *counting
}

func (c *counted) Open(context.Context) (storage.BlobStore, error) { return c.store, nil }

// TestANarrowWindowReadsOnlyItsBatches: a PITR restore of 1% of the time of
// a backup of 8 partitions × 25 segments whose timestamps interleave (every
// partition spans the whole time, so at least 8 segments overlap any
// window) reads at most 3% of the backup's bytes, counted by the store, and
// restores exactly the records of the window.
func TestANarrowWindowReadsOnlyItsBatches(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir()
	const partitions, segments, batches, per = 8, 25, 10, 200
	const perPartition = segments * batches * per
	base := int64(1_700_000_000_000)
	ts := func(p int32, off int64) int64 { return base + off*partitions + int64(p) } // partitions interleave
	rng := rand.New(rand.NewPCG(7, 8))
	w, err := storage.OpenWriter(ctx, blob.New(path), "b", storage.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.WriteMetadata(ctx, meta("t", partitions))
	for p := range int32(partitions) {
		pw, _ := w.Partition(ctx, "t", p)
		for s := range int64(segments) {
			seg := pw.NewSegment(ctx, record.Zstd)
			for b := range int64(batches) {
				bld := record.NewBuilder(nil)
				for i := range int64(per) {
					off := (s*batches+b)*per + i
					v := make([]byte, 64)
					for j := range v {
						v[j] = byte(rng.Uint32())
					}
					bld.AppendFields(off, ts(p, off), record.CreateTime, nil, v)
				}
				bounds := bld.Bounds()
				rec := bld.NewRecord()
				if err := seg.Write(rec, bounds, bounds.MaxOffset+1); err != nil {
					t.Fatal(err)
				}
				rec.Release()
				bld.Release()
			}
			if _, err := seg.Commit(""); err != nil {
				t.Fatal(err)
			}
		}
	}
	w.Close(ctx, storage.OutcomeComplete)
	var total int64
	all, _ := storage.ListAll(ctx, blob.New(path), "", "")
	for _, o := range all {
		total += o.Size
	}

	span := ts(partitions-1, perPartition-1) - base
	start := base + span/2 + 3
	end := start + (span+1)/100 - 1
	store := &counting{BlobStore: blob.New(path)}
	src := storage.NewSource(&counted{store: store})
	if err := configure(t, src, map[string]any{"path": path, "backup_id": "b", "time_window_start": start, "time_window_end": end}); err != nil {
		t.Fatal(err)
	}
	if err := src.Open(ctx, sdk.SourceOptions{}); err != nil {
		t.Fatal(err)
	}
	got := map[int32][]int64{}
	for _, b := range readAll(t, src) {
		if b.Count == 0 {
			continue
		}
		var v *record.View
		var err error
		if b.Record != nil {
			v, err = record.NewView(b.Record)
		} else {
			v, err = record.DecodeView(b.Arrow)
		}
		if err != nil {
			t.Fatal(err)
		}
		for i := range v.Len() {
			got[b.Partition] = append(got[b.Partition], v.Offset(i))
		}
	}
	var n int
	for p := range int32(partitions) {
		var want []int64
		for off := range int64(perPartition) {
			if x := ts(p, off); x >= start && x <= end {
				want = append(want, off)
			}
		}
		if !slices.Equal(got[p], want) {
			t.Fatalf("partition %d: restored %d records (%v...), want the %d of the window (%v...)", p, len(got[p]), head(got[p]), len(want), head(want))
		}
		n += len(want)
	}
	read := store.bytes.Load()
	t.Logf("window of %d of %d records: read %d of %d bytes (%.2f%%) in %d requests", n, partitions*perPartition, read, total, 100*float64(read)/float64(total), store.reads())
	if n != partitions*perPartition/100 {
		t.Fatalf("the window holds %d records, want 1%% (%d)", n, partitions*perPartition/100)
	}
	if read*100 > total*3 {
		t.Fatalf("a 1%% window read %d of the backup's %d bytes (%.2f%%), want at most 3%%", read, total, 100*float64(read)/float64(total))
	}
}

func head(xs []int64) []int64 { return xs[:min(len(xs), 5)] }

// fullFor is a store that fails every segment Put of one partition, as a
// disk that is full when that partition's writer gets to it.
type fullFor struct {
	storage.BlobStore
	partition string // "TOPIC/PARTITION/" as keys hold it
}

func (f *fullFor) Put(ctx context.Context, key string, r io.Reader, size int64, o storage.PutOptions) error {
	if strings.Contains(key, "/topics/"+f.partition+"segment-") {
		io.Copy(io.Discard, r)
		return errors.New("no space left on device")
	}
	return f.BlobStore.Put(ctx, key, r, size, o)
}

// TestASinkFailureNamesThePartitionThatFailed: once partition 1's write
// fails, a write to partition 0 fails too, with partition 1's error, named
// after partition 1 (it used to reach the host unnamed, which then named
// the partition of the write that found the sink failed).
func TestASinkFailureNamesThePartitionThatFailed(t *testing.T) {
	dir := t.TempDir()
	s := storage.NewSink(&counted{store: &counting{BlobStore: &fullFor{BlobStore: blob.New(dir), partition: "t/1/"}}})
	if err := configure(t, s, map[string]any{"path": dir, "backup_id": "b", "segment_max_records": 5}); err != nil {
		t.Fatal(err)
	}
	if err := s.Open(context.Background(), func(...sdk.BatchID) {}); err != nil {
		t.Fatal(err)
	}
	defer s.Teardown(context.Background())
	ctx := context.Background()
	if err := s.Write(ctx, batch(t, "t", 1, 0, 10)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err == nil {
		t.Fatal("flush after a failed commit: no error")
	}
	err := s.Write(ctx, batch(t, "t", 0, 0, 3))
	var pe *sdk.PartitionError
	if !errors.As(err, &pe) || pe.Topic != "t" || pe.Partition != 1 || pe.Offset != -1 || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("write to t/0 after t/1 failed: %v, want a partition error of t/1 at offset -1 (nothing stored) saying no space left", err)
	}
}

// TestReadingPartitionsAheadSendsTheSameBatches: with
// max_concurrent_partitions 3 the source reads ahead the segments queued
// next, of up to 3 partitions (here every segment but the first), and
// sends exactly the batches, in exactly the order, it sends reading one at
// a time; a segment missing from the store fails its partition with the
// same error either way.
func TestReadingPartitionsAheadSendsTheSameBatches(t *testing.T) {
	path := t.TempDir()
	ctx := context.Background()
	s, _, _ := openSink(t, map[string]any{"path": path, "backup_id": "b", "segment_max_records": 10})
	for p := int32(0); p < 4; p++ {
		for from := int64(0); from < 30; from += 10 {
			if err := s.Write(ctx, batch(t, "t", p, from, 10)); err != nil {
				t.Fatal(err)
			}
		}
	}
	s.Flush(ctx)
	s.Teardown(ctx)
	read := func(concurrent int) (sent []string, errs []string, ahead int64) {
		t.Helper()
		src := storage.NewSource(&folder{})
		if err := configure(t, src, map[string]any{"path": path, "backup_id": "b", "max_concurrent_partitions": concurrent, "preflight": false}); err != nil {
			t.Fatal(err)
		}
		if err := src.Open(ctx, sdk.SourceOptions{InFlightBytes: 64 << 20}); err != nil {
			t.Fatal(err)
		}
		defer src.Teardown(ctx)
		for {
			b, err := src.Read(ctx)
			if err == io.EOF {
				return sent, errs, src.Metrics()["segments_read_ahead"]
			}
			if err != nil {
				errs = append(errs, err.Error())
				continue
			}
			if b.Metadata == nil {
				sent = append(sent, fmt.Sprintf("%s/%d:%d-%d>%d", b.Topic, b.Partition, b.MinOffset, b.MaxOffset, b.NextOffset))
				b.Release()
			}
		}
	}
	one, _, ahead := read(1)
	if len(one) != 12 || ahead != 0 {
		t.Fatalf("one partition at a time: %d batches, %d segments read ahead; want 12 and 0", len(one), ahead)
	}
	three, _, ahead := read(3)
	if !slices.Equal(three, one) || ahead != 11 {
		t.Fatalf("three partitions at a time sent\n%v\n(%d segments read ahead), want\n%v\nand 11 (all but the first)", three, ahead, one)
	}
	seg := testkit.ManifestsIn(t, blob.New(path), "b")[2].Entries[0]
	if err := os.Remove(testkit.SegmentFile(path, "b", "t", 2, seg)); err != nil {
		t.Fatal(err)
	}
	oneSent, oneErrs := func() ([]string, []string) { s, e, _ := read(1); return s, e }()
	threeSent, threeErrs, _ := read(3)
	if len(oneErrs) != 1 || !slices.Equal(threeErrs, oneErrs) || !slices.Equal(threeSent, oneSent) || len(oneSent) != 9 {
		t.Fatalf("a missing segment of partition 2: one at a time sent %d batches and failed %v; three at a time sent %d and failed %v",
			len(oneSent), oneErrs, len(threeSent), threeErrs)
	}
}
