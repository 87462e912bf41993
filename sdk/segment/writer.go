package segment

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"

	"github.com/kpipe/kpipe/sdk/record"
)

// Writer streams record batches of one topic-partition into a new segment.
// Memory stays bounded by one batch: the file is written as it goes.
type Writer struct {
	dir         string
	compression string
	f           *os.File
	ipc         *ipc.Writer
	crc         interface {
		Write([]byte) (int, error)
		Sum32() uint32
	}
	size    int64
	entry   Entry
	started time.Time
}

// CheckCompression says whether compression names a segment codec.
func CheckCompression(compression string) error {
	switch compression {
	case Zstd, LZ4, None, "":
		return nil
	}
	return fmt.Errorf("unknown compression %q: use zstd, lz4 or none", compression)
}

// NewWriter starts a segment in the partition folder dir.
func NewWriter(dir, compression string) (*Writer, error) {
	if err := CheckCompression(compression); err != nil {
		return nil, err
	}
	opts := []ipc.Option{ipc.WithSchema(record.Schema)}
	if compression == LZ4 {
		opts = append(opts, ipc.WithLZ4())
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create segment: %w", err)
	}
	f, err := os.CreateTemp(dir, ".segment.tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create segment: %w", err)
	}
	w := &Writer{dir: dir, compression: compression, f: f, crc: NewCRC(), started: time.Now()}
	sw, err := newStreamWriter(io.MultiWriter(f, w.crc, (*counter)(&w.size)), compression)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("create segment: %w", err)
	}
	w.ipc = ipc.NewWriterWithPayloadWriter(sw, opts...)
	if compression == "" {
		w.compression = None
	}
	return w, nil
}

type counter int64

func (c *counter) Write(p []byte) (int, error) { *c += counter(len(p)); return len(p), nil }

// Write appends a record batch with its bounds. nextOffset is the source
// position after it. An empty batch is not written; it only advances the
// position.
func (w *Writer) Write(rec arrow.RecordBatch, b record.Bounds, nextOffset int64) error {
	if b.Count == 0 {
		w.entry.NextOffset = max(w.entry.NextOffset, nextOffset)
		return nil
	}
	if err := w.ipc.Write(rec); err != nil {
		return fmt.Errorf("write segment: %w", err)
	}
	e := &w.entry
	if e.Records == 0 {
		e.MinOffset, e.MaxOffset = b.MinOffset, b.MaxOffset
		e.MinTimestamp, e.MaxTimestamp = b.MinTimestamp, b.MaxTimestamp
	}
	e.Records += b.Count
	e.MinOffset = min(e.MinOffset, b.MinOffset)
	e.MaxOffset = max(e.MaxOffset, b.MaxOffset)
	e.MinTimestamp = min(e.MinTimestamp, b.MinTimestamp)
	e.MaxTimestamp = max(e.MaxTimestamp, b.MaxTimestamp)
	e.NextOffset = max(e.NextOffset, nextOffset, e.MaxOffset+1)
	return nil
}

// Records is the number of records written so far.
func (w *Writer) Records() int64 { return w.entry.Records }

// Size is the number of bytes written so far.
func (w *Writer) Size() int64 { return w.size }

// Age is how long ago the segment was started.
func (w *Writer) Age() time.Duration { return time.Since(w.started) }

// Commit finishes the segment: end-of-stream marker, fsync, rename into place, fsync of
// the folder, then the manifest line. Only after Commit returns are the
// segment's records durable.
func (w *Writer) Commit() (Entry, error) {
	tmp := w.f.Name()
	fail := func(err error) (Entry, error) {
		w.f.Close()
		os.Remove(tmp)
		return Entry{}, fmt.Errorf("commit segment: %w", err)
	}
	if w.entry.Records == 0 {
		return fail(fmt.Errorf("segment is empty"))
	}
	if err := w.ipc.Close(); err != nil {
		return fail(err)
	}
	if err := w.f.Sync(); err != nil {
		return fail(err)
	}
	if err := w.f.Close(); err != nil {
		return fail(err)
	}
	e := w.entry
	e.File = FileName(e.MinOffset)
	e.Size = w.size
	e.Checksum = FormatChecksum(w.crc.Sum32())
	e.Compression = w.compression
	e.CreatedAt = time.Now().UTC()
	if err := os.Rename(tmp, filepath.Join(w.dir, e.File)); err != nil {
		return fail(err)
	}
	if err := syncDir(w.dir); err != nil {
		return Entry{}, err
	}
	if err := AppendManifest(w.dir, e); err != nil {
		return Entry{}, err
	}
	return e, nil
}

// Abort drops the segment.
func (w *Writer) Abort() {
	w.f.Close()
	os.Remove(w.f.Name())
}
