package segment

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"

	"github.com/kpipe/kpipe/sdk/record"
)

// batchOf builds a record batch and its bounds.
func batchOf(t testing.TB, recs []record.Record) (arrow.RecordBatch, record.Bounds) {
	t.Helper()
	b := record.NewBuilder(nil)
	defer b.Release()
	for i := range recs {
		b.Append(&recs[i])
	}
	bounds := b.Bounds()
	return b.NewRecord(), bounds
}

// commitSegment writes each batch into a new segment in dir (next offset:
// the batch's max offset + 1) and commits it.
func commitSegment(t *testing.T, dir, compression string, batches ...[]record.Record) Entry {
	t.Helper()
	w, err := NewWriter(dir, compression)
	if err != nil {
		t.Fatal(err)
	}
	for _, recs := range batches {
		rec, b := batchOf(t, recs)
		err := w.Write(rec, b, b.MaxOffset+1)
		rec.Release()
		if err != nil {
			t.Fatal(err)
		}
	}
	e, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

var batch1 = []record.Record{
	{Offset: 10, Timestamp: 5000, Key: nil, Value: nil},
	{Offset: 11, Timestamp: 9000, TimestampType: record.LogAppendTime, Key: []byte{}, Value: []byte{},
		Headers: []record.Header{{Key: "a", Value: nil}, {Key: "a", Value: []byte{}}, {Key: "", Value: []byte("x")}}},
	{Offset: 12, Timestamp: 1000, Key: []byte("k"), Value: bytes.Repeat([]byte("compressible "), 200)},
}

var batch2 = []record.Record{
	{Offset: 15, Timestamp: 0, Key: []byte("k2"), Value: []byte("v2"), Headers: []record.Header{{Key: "z", Value: []byte("1")}}},
	{Offset: 17, Timestamp: 12000, Key: []byte("k3"), Value: nil},
}

// writeSegment writes batch1 then batch2 (next offset 20) into a segment.
func writeSegment(t *testing.T, dir, compression string) Entry {
	t.Helper()
	w, err := NewWriter(dir, compression)
	if err != nil {
		t.Fatalf("NewWriter(%q): %v", compression, err)
	}
	r1, b1 := batchOf(t, batch1)
	defer r1.Release()
	if err := w.Write(r1, b1, 13); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if w.Records() != 3 {
		t.Errorf("Records() after batch 1 = %d, want 3", w.Records())
	}
	r2, b2 := batchOf(t, batch2)
	defer r2.Release()
	if err := w.Write(r2, b2, 20); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if w.Records() != 5 {
		t.Errorf("Records() after batch 2 = %d, want 5", w.Records())
	}
	sizeBefore := w.Size()
	e, err := w.Commit()
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if e.Size < sizeBefore {
		t.Errorf("entry size %d < size before the footer %d", e.Size, sizeBefore)
	}
	return e
}

func crc32cOfFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("crc32c:%08x", crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)))
}

func sameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if (got == nil) != (want == nil) || !bytes.Equal(got, want) {
		t.Errorf("%s: got %q (nil %v), want %q (nil %v)", what, got, got == nil, want, want == nil)
	}
}

func sameRecord(t *testing.T, what string, got, want record.Record) {
	t.Helper()
	if got.Offset != want.Offset || got.Timestamp != want.Timestamp || got.TimestampType != want.TimestampType {
		t.Errorf("%s: offset/ts/type %d/%d/%d, want %d/%d/%d", what,
			got.Offset, got.Timestamp, got.TimestampType, want.Offset, want.Timestamp, want.TimestampType)
	}
	sameBytes(t, what+" key", got.Key, want.Key)
	sameBytes(t, what+" value", got.Value, want.Value)
	if len(got.Headers) != len(want.Headers) {
		t.Errorf("%s: headers %v, want %v", what, got.Headers, want.Headers)
		return
	}
	for j := range want.Headers {
		if got.Headers[j].Key != want.Headers[j].Key {
			t.Errorf("%s header %d: key %q, want %q", what, j, got.Headers[j].Key, want.Headers[j].Key)
		}
		sameBytes(t, fmt.Sprintf("%s header %d value", what, j), got.Headers[j].Value, want.Headers[j].Value)
	}
}

var checksumRE = regexp.MustCompile(`^crc32c:[0-9a-f]{8}$`)

func TestWriteReadEachCompression(t *testing.T) {
	for _, c := range []struct{ given, stored string }{
		{Zstd, "zstd"}, {LZ4, "lz4"}, {None, "none"}, {"", "none"},
	} {
		t.Run("compression="+c.given, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "topics", "orders", "0")
			before := time.Now().UTC().Add(-time.Second)
			e := writeSegment(t, dir, c.given)

			if e.File != "00000000000000000010.arrows" {
				t.Errorf("File = %q, want 00000000000000000010.arrows", e.File)
			}
			if e.Records != 5 || e.MinOffset != 10 || e.MaxOffset != 17 || e.NextOffset != 20 {
				t.Errorf("records/min/max/next = %d/%d/%d/%d, want 5/10/17/20", e.Records, e.MinOffset, e.MaxOffset, e.NextOffset)
			}
			if e.MinTimestamp != 0 || e.MaxTimestamp != 12000 {
				t.Errorf("min/max timestamp = %d/%d, want 0/12000", e.MinTimestamp, e.MaxTimestamp)
			}
			if e.Compression != c.stored {
				t.Errorf("Compression = %q, want %q", e.Compression, c.stored)
			}
			if e.CreatedAt.Before(before) || e.CreatedAt.After(time.Now().Add(time.Second)) || e.CreatedAt.Location() != time.UTC {
				t.Errorf("CreatedAt = %v, want now in UTC", e.CreatedAt)
			}
			path := filepath.Join(dir, e.File)
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if e.Size != st.Size() {
				t.Errorf("Size = %d, file has %d bytes", e.Size, st.Size())
			}
			if !checksumRE.MatchString(e.Checksum) {
				t.Errorf("Checksum %q does not match %s", e.Checksum, checksumRE)
			}
			if want := crc32cOfFile(t, path); e.Checksum != want {
				t.Errorf("Checksum = %q, recomputed CRC-32C is %q", e.Checksum, want)
			}

			// Only the segment and the manifest remain: no temporary file.
			names := dirNames(t, dir)
			if want := []string{"00000000000000000010.arrows", "manifest.jsonl"}; !reflect.DeepEqual(names, want) {
				t.Errorf("folder holds %v, want %v", names, want)
			}

			// The manifest holds exactly the returned entry.
			entries, good, err := ReadManifest(dir)
			if err != nil {
				t.Fatalf("ReadManifest: %v", err)
			}
			mst, _ := os.Stat(filepath.Join(dir, ManifestName))
			if good != mst.Size() {
				t.Errorf("good = %d, manifest has %d bytes", good, mst.Size())
			}
			if len(entries) != 1 || !sameEntry(entries[0], e) {
				t.Errorf("manifest entries %+v, want [%+v]", entries, e)
			}

			if err := Verify(dir, e); err != nil {
				t.Errorf("Verify: %v", err)
			}

			// Read back: two batches, the records exactly.
			r, err := Open(dir, e)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer r.Close()
			for bi, want := range [][]record.Record{batch1, batch2} {
				rec, err := r.Next()
				if err != nil {
					t.Fatalf("Next %d: %v", bi, err)
				}
				v, err := record.NewView(rec)
				if err != nil {
					t.Fatalf("NewView: %v", err)
				}
				if v.Len() != len(want) {
					t.Fatalf("batch %d has %d records, want %d", bi, v.Len(), len(want))
				}
				for i := range want {
					sameRecord(t, fmt.Sprintf("batch %d record %d", bi, i), v.Record(i), want[i])
				}
				rec.Release()
			}
			if rec, err := r.Next(); err != io.EOF {
				t.Errorf("third Next = %v, %v; want io.EOF", rec, err)
			}
			if err := r.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
}

// sameEntry compares entries; CreatedAt by instant.
func sameEntry(a, b Entry) bool {
	ca, cb := a.CreatedAt, b.CreatedAt
	a.CreatedAt, b.CreatedAt = time.Time{}, time.Time{}
	return a == b && ca.Equal(cb)
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range des {
		names = append(names, d.Name())
	}
	sort.Strings(names)
	return names
}

func TestCompressionShrinksSegment(t *testing.T) {
	root := t.TempDir()
	none := writeSegment(t, filepath.Join(root, "none"), None)
	zstd := writeSegment(t, filepath.Join(root, "zstd"), Zstd)
	lz4 := writeSegment(t, filepath.Join(root, "lz4"), LZ4)
	if zstd.Size >= none.Size || lz4.Size >= none.Size {
		t.Errorf("sizes none %d zstd %d lz4 %d: compressed segments should be smaller", none.Size, zstd.Size, lz4.Size)
	}
}

func TestVerifyDetectsCorruption(t *testing.T) {
	dir := t.TempDir()
	e := writeSegment(t, dir, None)
	path := filepath.Join(dir, e.File)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	// One flipped byte in the middle.
	bad := bytes.Clone(orig)
	bad[len(bad)/2] ^= 0x01
	if err := os.WriteFile(path, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	err = Verify(dir, e)
	if err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("Verify after a flipped byte: %v, want an error about the checksum", err)
	} else {
		want := fmt.Sprintf("segment %s: checksum %s, manifest says %s", path, crc32cOfFile(t, path), e.Checksum)
		if err.Error() != want {
			t.Errorf("Verify error = %q, want %q", err, want)
		}
	}

	// Truncated.
	if err := os.WriteFile(path, orig[:len(orig)-10], 0o644); err != nil {
		t.Fatal(err)
	}
	err = Verify(dir, e)
	if want := fmt.Sprintf("segment %s: size %d, manifest says %d", path, e.Size-10, e.Size); err == nil || err.Error() != want {
		t.Errorf("Verify after truncation: %v, want %q", err, want)
	}
	if err == nil || !strings.Contains(err.Error(), "size") {
		t.Errorf("Verify after truncation: %v, want it to mention the size", err)
	}

	// Missing.
	os.Remove(path)
	if err := Verify(dir, e); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Verify of a missing file: %v, want os.ErrNotExist", err)
	}

	// Restored: passes again.
	if err := os.WriteFile(path, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Verify(dir, e); err != nil {
		t.Errorf("Verify of the restored file: %v", err)
	}
}

func TestOpenRejectsNonSegment(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x.arrow"), []byte("not an arrow file at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Entry{File: "x.arrow"}); err == nil || !strings.HasPrefix(err.Error(), "open segment "+filepath.Join(dir, "x.arrow")+": ") {
		t.Errorf("Open of garbage: %v", err)
	}
	if _, err := Open(dir, Entry{File: "missing.arrow"}); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open of missing file: %v, want os.ErrNotExist", err)
	}
}

func TestUnknownCompression(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "p")
	_, err := NewWriter(dir, "gzip")
	if want := `unknown compression "gzip": use zstd, lz4 or none`; err == nil || err.Error() != want {
		t.Errorf("NewWriter(gzip): %v, want %q", err, want)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("NewWriter with a bad codec created the folder (stat: %v)", err)
	}
	if err := CheckCompression("ZSTD"); err == nil || err.Error() != `unknown compression "ZSTD": use zstd, lz4 or none` {
		t.Errorf("CheckCompression(ZSTD): %v", err)
	}
}

func TestCommitEmptyAndAbort(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(dir, Zstd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(); err == nil || err.Error() != "commit segment: segment is empty" {
		t.Errorf("Commit of an empty segment: %v", err)
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Errorf("after a failed Commit the folder holds %v, want nothing", names)
	}

	w, err = NewWriter(dir, Zstd)
	if err != nil {
		t.Fatal(err)
	}
	r, b := batchOf(t, batch1)
	defer r.Release()
	if err := w.Write(r, b, -1); err != nil {
		t.Fatal(err)
	}
	w.Abort()
	if names := dirNames(t, dir); len(names) != 0 {
		t.Errorf("after Abort the folder holds %v, want nothing", names)
	}
}

func TestNextOffsetAtLeastMaxPlusOne(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(dir, None)
	if err != nil {
		t.Fatal(err)
	}
	r, b := batchOf(t, batch1)
	defer r.Release()
	if err := w.Write(r, b, 5); err != nil { // a next offset behind the data
		t.Fatal(err)
	}
	e, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if e.NextOffset != 13 {
		t.Errorf("NextOffset = %d, want 13 (max offset 12 + 1)", e.NextOffset)
	}
}

// TestWriterEmptyBatchKeepsBounds: writing a batch of zero records (with the
// zero Bounds a Builder reports for it) after real records must not pull the
// segment's minimum offset and timestamp down to 0.
func TestWriterEmptyBatchKeepsBounds(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(dir, None)
	if err != nil {
		t.Fatal(err)
	}
	r, b := batchOf(t, batch1)
	defer r.Release()
	if err := w.Write(r, b, 13); err != nil {
		t.Fatal(err)
	}
	empty, eb := batchOf(t, nil)
	defer empty.Release()
	if eb != (record.Bounds{}) {
		t.Fatalf("bounds of no records = %+v, want zero", eb)
	}
	if err := w.Write(empty, eb, 14); err != nil {
		t.Fatal(err)
	}
	e, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if e.Records != 3 || e.MinOffset != 10 || e.MaxOffset != 12 || e.MinTimestamp != 1000 || e.MaxTimestamp != 9000 {
		t.Errorf("entry records/minoff/maxoff/mints/maxts = %d/%d/%d/%d/%d, want 3/10/12/1000/9000",
			e.Records, e.MinOffset, e.MaxOffset, e.MinTimestamp, e.MaxTimestamp)
	}
	if e.File != FileName(10) {
		t.Errorf("File = %q, want %q", e.File, FileName(10))
	}
	if e.NextOffset != 14 {
		t.Errorf("NextOffset = %d, want 14", e.NextOffset)
	}
}

func TestManifestTornLastLine(t *testing.T) {
	dir := t.TempDir()
	e1 := writeSegment(t, dir, None)
	// A second segment in the same partition.
	w, err := NewWriter(dir, None)
	if err != nil {
		t.Fatal(err)
	}
	r, b := batchOf(t, []record.Record{{Offset: 20, Timestamp: 20}, {Offset: 21, Timestamp: 21}})
	defer r.Release()
	if err := w.Write(r, b, 22); err != nil {
		t.Fatal(err)
	}
	e2, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}

	mp := filepath.Join(dir, ManifestName)
	good, err := os.ReadFile(mp)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(good, []byte("\n")); n != 2 || good[len(good)-1] != '\n' {
		t.Fatalf("manifest has %d lines (last byte %q), want 2 newline-terminated lines", n, good[len(good)-1])
	}
	// A crash while appending a third line: half a JSON line, no newline.
	line, _ := manifestLine(Entry{File: FileName(22), MinOffset: 22})
	torn := line[:len(line)/2]
	f, err := os.OpenFile(mp, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(torn)
	f.Close()
	// A leftover temporary segment of the crashed run.
	if err := os.WriteFile(filepath.Join(dir, ".segment.tmp-123"), []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}

	entries, n, err := ReadManifest(dir)
	if err != nil {
		t.Fatalf("ReadManifest: %v", err)
	}
	if n != int64(len(good)) {
		t.Errorf("good = %d, want %d", n, len(good))
	}
	if len(entries) != 2 || !sameEntry(entries[0], e1) || !sameEntry(entries[1], e2) {
		t.Errorf("entries = %+v, want [%+v %+v]", entries, e1, e2)
	}
	if got := (Partition{Entries: entries}).NextOffset(); got != 22 {
		t.Errorf("NextOffset = %d, want 22", got)
	}
	if got := (Partition{Entries: entries}).Records(); got != 7 {
		t.Errorf("Records = %d, want 7", got)
	}

	entries, err = RepairPartition(dir)
	if err != nil {
		t.Fatalf("RepairPartition: %v", err)
	}
	if len(entries) != 2 || !sameEntry(entries[0], e1) || !sameEntry(entries[1], e2) {
		t.Errorf("RepairPartition entries = %+v", entries)
	}
	after, _ := os.ReadFile(mp)
	if !bytes.Equal(after, good) {
		t.Errorf("manifest after repair is %d bytes, want the %d good bytes exactly", len(after), len(good))
	}
	if names := dirNames(t, dir); !reflect.DeepEqual(names, []string{e1.File, e2.File, ManifestName}) {
		t.Errorf("folder after repair holds %v", names)
	}

	// Appending after the repair gives a well-formed manifest of 3 lines.
	e3 := Entry{File: FileName(22), MinOffset: 22, MaxOffset: 22, NextOffset: 23, Records: 1}
	if err := AppendManifest(dir, e3); err != nil {
		t.Fatal(err)
	}
	entries, _, err = ReadManifest(dir)
	if err != nil || len(entries) != 3 || !sameEntry(entries[2], e3) {
		t.Errorf("after append: %+v, %v", entries, err)
	}

	// Repairing a healthy partition changes nothing.
	before, _ := os.ReadFile(mp)
	if _, err := RepairPartition(dir); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(mp); !bytes.Equal(before, after) {
		t.Errorf("repair of a healthy manifest changed it")
	}
}

func manifestLine(e Entry) ([]byte, error) {
	dir, err := os.MkdirTemp("", "kpipe-line")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := AppendManifest(dir, e); err != nil {
		return nil, err
	}
	return os.ReadFile(filepath.Join(dir, ManifestName))
}

func TestManifestTornOnlyLine(t *testing.T) {
	dir := t.TempDir()
	mp := filepath.Join(dir, ManifestName)
	if err := os.WriteFile(mp, []byte(`{"file":"0000`), 0o644); err != nil {
		t.Fatal(err)
	}
	entries, good, err := ReadManifest(dir)
	if err != nil || len(entries) != 0 || good != 0 {
		t.Errorf("ReadManifest = %v, %d, %v; want none, 0, nil", entries, good, err)
	}
	if _, err := RepairPartition(dir); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(mp); st.Size() != 0 {
		t.Errorf("manifest is %d bytes after repair, want 0", st.Size())
	}
}

// TestManifestCompleteLineWithoutNewline: a last line that is whole JSON but
// lacks its newline is still torn (the append did not finish); it is not an
// entry, and RepairPartition cuts it so that the next append starts a line.
func TestManifestCompleteLineWithoutNewline(t *testing.T) {
	dir := t.TempDir()
	e1 := Entry{File: FileName(0), MaxOffset: 1, NextOffset: 2, Records: 2, Checksum: "crc32c:00000001"}
	if err := AppendManifest(dir, e1); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(dir, ManifestName)
	good, _ := os.ReadFile(mp)
	line, err := manifestLine(Entry{File: FileName(2), MinOffset: 2, MaxOffset: 3, NextOffset: 4, Records: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mp, append(bytes.Clone(good), bytes.TrimSuffix(line, []byte("\n"))...), 0o644); err != nil {
		t.Fatal(err)
	}
	entries, n, err := ReadManifest(dir)
	if err != nil || len(entries) != 1 || !sameEntry(entries[0], e1) || n != int64(len(good)) {
		t.Errorf("ReadManifest = %+v, %d, %v; want [e1], %d, nil", entries, n, err, len(good))
	}
	if _, err := RepairPartition(dir); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(mp); !bytes.Equal(after, good) {
		t.Errorf("manifest after repair = %q, want %q", after, good)
	}
}

func TestManifestMissing(t *testing.T) {
	entries, good, err := ReadManifest(t.TempDir())
	if entries != nil || good != 0 || err != nil {
		t.Errorf("ReadManifest of an empty folder = %v, %d, %v", entries, good, err)
	}
	if (Partition{}).NextOffset() != -1 {
		t.Errorf("NextOffset of no entries = %d, want -1", (Partition{}).NextOffset())
	}
}

func TestManifestCorruptMiddleLine(t *testing.T) {
	dir := t.TempDir()
	e := Entry{File: FileName(0), MaxOffset: 1, NextOffset: 2, Records: 2}
	if err := AppendManifest(dir, e); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(dir, ManifestName)
	f, _ := os.OpenFile(mp, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("{\"file\": garbage}\n")
	f.Close()
	if err := AppendManifest(dir, Entry{File: FileName(4), MinOffset: 4}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(mp)

	wantPrefix := fmt.Sprintf("manifest %s: line 2 is corrupt: ", mp)
	_, _, err := ReadManifest(dir)
	if err == nil || !strings.HasPrefix(err.Error(), wantPrefix) {
		t.Errorf("ReadManifest: %v, want prefix %q", err, wantPrefix)
	}
	if _, err := RepairPartition(dir); err == nil || !strings.HasPrefix(err.Error(), wantPrefix) {
		t.Errorf("RepairPartition: %v, want prefix %q", err, wantPrefix)
	}
	if after, _ := os.ReadFile(mp); !bytes.Equal(before, after) {
		t.Errorf("RepairPartition changed a manifest it could not read")
	}
	// Backup.Partitions reports it too.
	root := t.TempDir()
	pd := Backup{Root: root, ID: "b"}.PartitionDir("t", 0)
	if err := os.MkdirAll(pd, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pd, ManifestName), before, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := (Backup{Root: root, ID: "b"}).Partitions(); err == nil || !strings.Contains(err.Error(), "line 2 is corrupt") {
		t.Errorf("Partitions: %v, want the corrupt line reported", err)
	}
}

func TestBackupPartitionsSorted(t *testing.T) {
	root := t.TempDir()
	b := Backup{Root: root, ID: "daily"}
	if ps, err := b.Partitions(); ps != nil || err != nil {
		t.Errorf("Partitions of a backup without topics = %v, %v; want nil, nil", ps, err)
	}
	type tp struct {
		topic string
		part  int32
	}
	for i, p := range []tp{{"orders", 10}, {"orders", 2}, {"b", 1}, {"orders", 0}, {"a.b", 3}, {"b", 0}} {
		dir := b.PartitionDir(p.topic, p.part)
		if err := AppendManifest(mkdir(t, dir), Entry{File: FileName(int64(i)), Records: int64(i + 1), NextOffset: int64(100 + i)}); err != nil {
			t.Fatal(err)
		}
	}
	// Not partitions: a non-numeric folder, a file, an empty partition.
	mkdir(t, filepath.Join(b.Dir(), "topics", "orders", "tmp"))
	os.WriteFile(filepath.Join(b.Dir(), "topics", "orders", "7"), nil, 0o644)
	os.WriteFile(filepath.Join(b.Dir(), "topics", "stray-file"), nil, 0o644)
	mkdir(t, b.PartitionDir("empty", 0))

	ps, err := b.Partitions()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, fmt.Sprintf("%s/%d:%d", p.Topic, p.Partition, p.Records()))
	}
	want := []string{"a.b/3:5", "b/0:6", "b/1:3", "empty/0:0", "orders/0:4", "orders/2:2", "orders/10:1"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Partitions = %v, want %v", got, want)
	}
	if n, err := b.Records(); n != 21 || err != nil { // 1+2+...+6
		t.Errorf("Records() = %d, %v; want 21", n, err)
	}
	if b.PartitionDir("orders", 10) != filepath.Join(root, "daily", "topics", "orders", "10") {
		t.Errorf("PartitionDir = %q", b.PartitionDir("orders", 10))
	}
}

func mkdir(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestReadInfo(t *testing.T) {
	root := t.TempDir()
	b := Backup{Root: root, ID: "nightly"}
	_, err := b.ReadInfo()
	if want := fmt.Sprintf(`backup not found: "nightly" not found under %s (no %s)`, root, filepath.Join("nightly", "backup.json")); err == nil || err.Error() != want || !errors.Is(err, ErrNotFound) {
		t.Errorf("ReadInfo of a missing backup: %v, want %q (ErrNotFound)", err, want)
	}
	write := func(text string) {
		t.Helper()
		if err := WriteFileAtomic(filepath.Join(b.Dir(), "backup.json"), []byte(text)); err != nil {
			t.Fatal(err)
		}
	}
	when := time.Date(2024, 11, 10, 11, 0, 0, 0, time.UTC)
	write(`{"format":"kpipe-backup","version":2,"backup_id":"nightly","created_at":"2024-11-10T11:00:00Z"}`)
	info, err := b.ReadInfo()
	if err != nil || info.Format != FormatName || info.Version != FormatVersion || info.BackupID != "nightly" || !info.CreatedAt.Equal(when) {
		t.Errorf("ReadInfo = %+v, %v", info, err)
	}
	write(`{"format":"kpipe-backup","version":1,"backup_id":"nightly","created_at":"2024-11-10T11:00:00Z"}`)
	_, err = b.ReadInfo()
	if want := `backup "nightly": backup.json says format "kpipe-backup" version 1; this kpipe reads "kpipe-backup" version 2: use the kpipe that wrote it, or back up into a new backup id`; err == nil || err.Error() != want {
		t.Errorf("ReadInfo of a version 1 backup: %v, want %q", err, want)
	}
	write(`{"format":`)
	if _, err = b.ReadInfo(); err == nil || !strings.HasPrefix(err.Error(), `backup "nightly": backup.json: `) {
		t.Errorf("ReadInfo of a torn backup.json: %v", err)
	}
}

func TestOverlaps(t *testing.T) {
	e := Entry{MinTimestamp: 100, MaxTimestamp: 200}
	cases := []struct {
		start, end int64
		want       bool
	}{
		{-1, -1, true},
		{0, 99, false},   // ends one before the first record
		{0, 100, true},   // end == min: inclusive
		{200, 300, true}, // start == max: inclusive
		{201, 300, false},
		{150, 160, true}, // inside
		{50, 250, true},  // covers
		{-1, 99, false},
		{-1, 100, true},
		{200, -1, true},
		{201, -1, false},
		{100, 100, true},
		{200, 200, true},
		{0, 0, false},
		{-5, -5, true}, // any negative bound is open
	}
	for _, c := range cases {
		if got := e.Overlaps(c.start, c.end); got != c.want {
			t.Errorf("[100,200].Overlaps(%d, %d) = %v, want %v", c.start, c.end, got, c.want)
		}
	}
	// A segment of records with timestamp 0.
	z := Entry{MinTimestamp: 0, MaxTimestamp: 0}
	if !z.Overlaps(0, 0) || !z.Overlaps(-1, 0) || z.Overlaps(1, -1) {
		t.Errorf("[0,0] overlaps wrong")
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "backup.json")
	if err := WriteFileAtomic(path, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(path, []byte("two, longer")); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(path, []byte("3")); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "3" {
		t.Errorf("content = %q, %v; want %q", got, err, "3")
	}
	if names := dirNames(t, dir); !reflect.DeepEqual(names, []string{"backup.json"}) {
		t.Errorf("folder holds %v, want only backup.json", names)
	}

	// A failed write (the target is a folder) leaves no temporary file.
	target := filepath.Join(dir, "sub")
	mkdir(t, filepath.Join(target, "x"))
	if err := WriteFileAtomic(target, []byte("x")); err == nil {
		t.Errorf("WriteFileAtomic over a non-empty folder succeeded")
	}
	if names := dirNames(t, dir); !reflect.DeepEqual(names, []string{"backup.json", "sub"}) {
		t.Errorf("folder after a failed write holds %v", names)
	}
}

func TestFormatHelpers(t *testing.T) {
	if got := FileName(42); got != "00000000000000000042.arrows" {
		t.Errorf("FileName(42) = %q", got)
	}
	if got := FormatChecksum(0xabc); got != "crc32c:00000abc" {
		t.Errorf("FormatChecksum = %q", got)
	}
	h := NewCRC()
	h.Write([]byte("123456789"))
	if h.Sum32() != 0xe3069283 { // the CRC-32C check value
		t.Errorf("NewCRC is not CRC-32C: %08x", h.Sum32())
	}
}

func TestReadManifestRejectsACompleteCorruptLastLine(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ManifestName), []byte("{\"file\":\"a.arrow\"}\n{not json}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := ReadManifest(dir)
	want := "manifest " + filepath.Join(dir, ManifestName) + ": line 2 is corrupt: invalid character 'n' looking for beginning of object key string"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
}

// TestZstdSegmentsMixCompressedAndStoredBuffers writes a batch whose value
// buffer cannot be compressed (random bytes, stored as is behind a -1
// length) next to buffers that can (offsets, timestamps, keys), and reads
// every record back unchanged with a plain Arrow IPC stream reader.
func TestZstdSegmentsMixCompressedAndStoredBuffers(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var recs []record.Record
	for i := range 300 {
		v := make([]byte, 4096)
		for j := range v {
			v[j] = byte(rng.Uint32())
		}
		recs = append(recs, record.Record{Offset: int64(i), Timestamp: int64(1_700_000_000_000 + i), Key: fmt.Appendf(nil, "key-%06d", i), Value: v,
			Headers: []record.Header{{Key: "h", Value: []byte("same header value")}}})
	}
	dir := t.TempDir()
	e := commitSegment(t, dir, Zstd, recs)
	raw := int64(300 * 4096)
	if e.Size < raw || e.Size > raw+raw/20 {
		t.Errorf("segment of %d random value bytes is %d bytes: want them stored as is, the rest compressed", raw, e.Size)
	}
	f, err := os.Open(filepath.Join(dir, e.File))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := ipc.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	if !r.Next() {
		t.Fatalf("no record batch: %v", r.Err())
	}
	v, err := record.NewView(r.RecordBatch())
	if err != nil {
		t.Fatal(err)
	}
	if v.Len() != len(recs) {
		t.Fatalf("read %d records, want %d", v.Len(), len(recs))
	}
	for i, want := range recs {
		got := v.Record(i)
		if got.Offset != want.Offset || got.Timestamp != want.Timestamp || !bytes.Equal(got.Key, want.Key) ||
			!bytes.Equal(got.Value, want.Value) || len(got.Headers) != 1 || string(got.Headers[0].Value) != "same header value" {
			t.Fatalf("record %d differs after the round trip", i)
		}
	}
	if r.Next() {
		t.Fatal("a second record batch in a segment written with one")
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestZstdSegmentsCompressEventData: JSON event values shrink to well under
// half their size.
func TestZstdSegmentsCompressEventData(t *testing.T) {
	var recs []record.Record
	for i := range 500 {
		recs = append(recs, record.Record{Offset: int64(i), Timestamp: int64(i),
			Value: fmt.Appendf(nil, `{"seq":%d,"user":"u-%d","action":"view","item":"sku-%d","price":%d.99}`, i*7919%100000, 10000+i%977, i*31%5000, i%300)})
	}
	sizes := map[string]int64{}
	for _, c := range []string{None, Zstd} {
		sizes[c] = commitSegment(t, t.TempDir(), c, recs).Size
	}
	if sizes[Zstd]*2 > sizes[None] {
		t.Errorf("zstd segment %d bytes, uncompressed %d: want less than half", sizes[Zstd], sizes[None])
	}
}

// TestReaderRefusesASegmentCutAtABatchBoundary: a stream that ends cleanly
// after its first batch, though the manifest lists two batches' records,
// is an error, not a short read.
func TestReaderRefusesASegmentCutAtABatchBoundary(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(dir, Zstd)
	if err != nil {
		t.Fatal(err)
	}
	r1, b1 := batchOf(t, batch1)
	defer r1.Release()
	if err := w.Write(r1, b1, 13); err != nil {
		t.Fatal(err)
	}
	cut := w.Size() // schema and first batch
	r2, b2 := batchOf(t, batch2)
	defer r2.Release()
	if err := w.Write(r2, b2, 20); err != nil {
		t.Fatal(err)
	}
	e, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, e.File)
	if err := os.Truncate(path, cut); err != nil {
		t.Fatal(err)
	}
	r, err := Open(dir, e)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	first, err := r.Next()
	if err != nil {
		t.Fatalf("first batch: %v", err)
	}
	first.Release()
	_, err = r.Next()
	want := fmt.Sprintf("read segment %s: it ends after 3 records, the manifest lists 5: the file is cut short", path)
	if err == nil || err.Error() != want {
		t.Fatalf("after the cut: %v, want %q", err, want)
	}
}
