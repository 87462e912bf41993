package segment

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/kpipe/kpipe/sdk/record"
)

// Verify checks a committed segment's size and checksum against its entry
// by reading it whole. Readers verify both as they go; Verify is for
// checking without reading records.
func Verify(dir string, e Entry) error {
	path := filepath.Join(dir, e.File)
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("segment %s: %w", path, err)
	}
	defer f.Close()
	crc := NewCRC()
	n, err := io.Copy(crc, f)
	if err != nil {
		return fmt.Errorf("segment %s: %w", path, err)
	}
	return checkSum(path, e, n, crc.Sum32())
}

func checkSum(path string, e Entry, size int64, sum uint32) error {
	if size != e.Size {
		return fmt.Errorf("segment %s: size %d, manifest says %d", path, size, e.Size)
	}
	if got := FormatChecksum(sum); got != e.Checksum {
		return fmt.Errorf("segment %s: checksum %s, manifest says %s", path, got, e.Checksum)
	}
	return nil
}

// Reader reads a segment once, frame by frame, holding one frame at a time.
// It checks the segment's size and checksum against its manifest entry as
// it goes: the end of the segment is reported (io.EOF) only once both match
// and every record the entry lists was read.
type Reader struct {
	f      *os.File
	path   string
	in     *bufio.Reader
	crc    interface{ Sum32() uint32 }
	n      int64 // bytes read
	entry  Entry
	verify bool
	i      int
	rows   int64
	frame  []byte
	dec    *record.Decoder
	done   bool
}

// readCounter counts and checksums what the segment reader takes from the
// file.
type readCounter struct {
	r   io.Reader
	crc interface {
		Write([]byte) (int, error)
	}
	n *int64
}

func (c readCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.crc.Write(p[:n])
	*c.n += int64(n)
	return n, err
}

// Open opens a committed segment and checks its schema. With verify set, its
// size and checksum are checked against e as it is read.
func Open(dir string, e Entry) (*Reader, error) { return OpenVerified(dir, e, true) }

// OpenVerified is Open with the checksum check made optional.
func OpenVerified(dir string, e Entry, verify bool) (*Reader, error) {
	path := filepath.Join(dir, e.File)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open segment: %w", err)
	}
	crc := NewCRC()
	r := &Reader{f: f, path: path, crc: crc, entry: e, verify: verify}
	r.in = bufio.NewReaderSize(readCounter{r: f, crc: crc, n: &r.n}, 256<<10)
	schema, err := record.ReadFrame(r.in, nil)
	if err == nil && !record.IsSchemaFrame(schema) {
		err = fmt.Errorf("the stream does not start with a schema")
	}
	if err == nil {
		err = record.CheckSchemaFrame(schema)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open segment %s: %w", path, err)
	}
	return r, nil
}

// BytesRead is the number of bytes read from the segment's file so far.
func (r *Reader) BytesRead() int64 { return r.n }

// NextFrame returns the next record batch frame, or io.EOF after the last.
// The frame is valid until the next call.
func (r *Reader) NextFrame() ([]byte, error) {
	if r.done {
		return nil, io.EOF
	}
	frame, err := record.ReadFrame(r.in, r.frame)
	if err == io.EOF {
		return nil, r.end()
	}
	if errors.Is(err, record.ErrNoEndOfStream) {
		if err := r.end(); err != io.EOF {
			return nil, err
		}
		return nil, fmt.Errorf("read segment %s: %w", r.path, record.ErrNoEndOfStream)
	}
	if err != nil {
		return nil, r.damaged(fmt.Errorf("read segment %s batch %d: %w", r.path, r.i, err))
	}
	r.frame = frame
	info, err := record.Inspect(frame)
	if err != nil {
		return nil, r.damaged(fmt.Errorf("read segment %s batch %d: %w", r.path, r.i, err))
	}
	r.i++
	r.rows += info.Rows
	return frame, nil
}

// damaged explains a segment that cannot be parsed: when its checksum is
// checked and does not match (the usual cause), by the checksum, which the
// rest of the file is read for; otherwise by err.
func (r *Reader) damaged(err error) error {
	r.done = true
	if !r.verify {
		return err
	}
	if _, cerr := io.Copy(io.Discard, r.in); cerr != nil {
		return err
	}
	if cerr := checkSum(r.path, r.entry, r.n, r.crc.Sum32()); cerr != nil {
		return cerr
	}
	return err
}

// end checks what was read against the manifest entry at the end-of-stream
// marker.
func (r *Reader) end() error {
	r.done = true
	if extra, _ := r.in.Peek(1); len(extra) > 0 {
		return fmt.Errorf("read segment %s: bytes follow the end-of-stream marker", r.path)
	}
	// A stream cut at a message boundary reads like a clean end.
	if r.entry.Records > 0 && r.rows != r.entry.Records {
		return fmt.Errorf("read segment %s: it ends after %d records, the manifest lists %d: the file is cut short", r.path, r.rows, r.entry.Records)
	}
	if r.verify {
		if err := checkSum(r.path, r.entry, r.n, r.crc.Sum32()); err != nil {
			return err
		}
	}
	return io.EOF
}

// Next returns the next record batch, decoded, or io.EOF after the last.
// The caller must Release it.
func (r *Reader) Next() (arrow.RecordBatch, error) {
	frame, err := r.NextFrame()
	if err != nil {
		return nil, err
	}
	if r.dec == nil {
		r.dec = record.NewDecoder(memory.DefaultAllocator)
	}
	// The frame buffer is reused by the next call: decode a copy when the
	// batch would alias it.
	rec, err := r.dec.Decode(append([]byte(nil), frame...))
	if err != nil {
		return nil, fmt.Errorf("read segment %s batch %d: %w", r.path, r.i-1, err)
	}
	return rec, nil
}

// Close closes the segment.
func (r *Reader) Close() error {
	if r.dec != nil {
		r.dec.Close()
	}
	return r.f.Close()
}
