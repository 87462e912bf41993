package segment

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/kpipe/kpipe/sdk/record"
)

// Verify checks a committed segment's size and checksum against its entry.
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
	if n != e.Size {
		return fmt.Errorf("segment %s: size %d, manifest says %d", path, n, e.Size)
	}
	if got := FormatChecksum(crc.Sum32()); got != e.Checksum {
		return fmt.Errorf("segment %s: checksum %s, manifest says %s", path, got, e.Checksum)
	}
	return nil
}

// Reader reads the record batches of a segment one at a time, holding only
// the current one in memory.
type Reader struct {
	f    *os.File
	r    *ipc.Reader
	i    int
	want int64 // records the manifest lists; 0 when unknown
	rows int64
}

// Open opens a committed segment.
func Open(dir string, e Entry) (*Reader, error) {
	path := filepath.Join(dir, e.File)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open segment: %w", err)
	}
	r, err := ipc.NewReader(bufio.NewReaderSize(f, 1<<20), ipc.WithAllocator(memory.DefaultAllocator))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open segment %s: %w", path, err)
	}
	if err := record.CheckSchema(r.Schema()); err != nil {
		r.Release()
		f.Close()
		return nil, fmt.Errorf("open segment %s: %w", path, err)
	}
	return &Reader{f: f, r: r, want: e.Records}, nil
}

// Next returns the next record batch, or io.EOF after the last. The caller
// must Release it.
func (r *Reader) Next() (arrow.RecordBatch, error) {
	if !r.r.Next() {
		if err := r.r.Err(); err != nil {
			return nil, fmt.Errorf("read segment %s batch %d: %w", r.f.Name(), r.i, err)
		}
		// A stream cut at a message boundary reads like a clean end.
		if r.want > 0 && r.rows != r.want {
			return nil, fmt.Errorf("read segment %s: it ends after %d records, the manifest lists %d: the file is cut short", r.f.Name(), r.rows, r.want)
		}
		return nil, io.EOF
	}
	r.i++
	rec := r.r.RecordBatch()
	r.rows += rec.NumRows()
	rec.Retain()
	return rec, nil
}

// Close closes the segment.
func (r *Reader) Close() error {
	r.r.Release()
	return r.f.Close()
}
