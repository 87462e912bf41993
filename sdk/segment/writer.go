package segment

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/kpipe/kpipe/sdk/record"
)

// Writer streams the frames of one topic-partition into a new segment: the
// schema message, the frames as they come, and at Commit the end-of-stream
// marker. Memory stays bounded by one frame: the file is written as it goes.
type Writer struct {
	dir   string
	codec record.Codec
	enc   *record.Encoder // recompresses frames of another codec
	f     *os.File
	out   io.Writer // the file, the checksum and the size
	crc   interface {
		Write([]byte) (int, error)
		Sum32() uint32
	}
	size    int64
	scratch []byte
	entry   Entry
	started time.Time
}

// CheckCompression says whether compression names a segment codec.
func CheckCompression(compression string) error {
	_, err := record.ParseCodec(compression)
	return err
}

// NewWriter starts a segment in the partition folder dir.
func NewWriter(dir, compression string) (*Writer, error) {
	codec, err := record.ParseCodec(compression)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create segment: %w", err)
	}
	f, err := os.CreateTemp(dir, ".segment.tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create segment: %w", err)
	}
	w := &Writer{dir: dir, codec: codec, enc: record.NewEncoder(codec), f: f, crc: NewCRC(), started: time.Now()}
	w.out = io.MultiWriter(f, w.crc, (*counter)(&w.size))
	if _, err := w.out.Write(record.SchemaFrame()); err != nil {
		w.Abort()
		return nil, fmt.Errorf("create segment: %w", err)
	}
	return w, nil
}

type counter int64

func (c *counter) Write(p []byte) (int, error) { *c += counter(len(p)); return len(p), nil }

// Codec is the compression of the segment's frames.
func (w *Writer) Codec() record.Codec { return w.codec }

// WriteFrame appends a frame with the bounds of its records. nextOffset is
// the source position after it. A frame of another codec is recompressed
// first (without decoding its records). An empty batch is not written; it
// only advances the position.
func (w *Writer) WriteFrame(frame []byte, b record.Bounds, nextOffset int64) error {
	if b.Count == 0 {
		w.entry.NextOffset = max(w.entry.NextOffset, nextOffset)
		return nil
	}
	info, err := record.Inspect(frame)
	if err != nil {
		return fmt.Errorf("write segment: %w", err)
	}
	if info.Rows != b.Count {
		return fmt.Errorf("write segment: the frame holds %d records, its bounds count %d", info.Rows, b.Count)
	}
	if info.Codec != w.codec {
		if w.scratch, err = w.enc.Recompress(frame, w.scratch[:0]); err != nil {
			return fmt.Errorf("write segment: %w", err)
		}
		frame = w.scratch
	}
	if _, err := w.out.Write(frame); err != nil {
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

// Write encodes a record batch in the segment's codec and appends it, as
// WriteFrame does.
func (w *Writer) Write(rec arrow.RecordBatch, b record.Bounds, nextOffset int64) error {
	if b.Count == 0 {
		return w.WriteFrame(nil, b, nextOffset)
	}
	frame, err := w.enc.Encode(rec, w.scratch[:0])
	if err != nil {
		return fmt.Errorf("write segment: %w", err)
	}
	w.scratch = frame
	return w.WriteFrame(frame, b, nextOffset)
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
	if _, err := w.out.Write(record.EndOfStream); err != nil {
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
	e.Compression = string(w.codec)
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
