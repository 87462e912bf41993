package record

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Encode returns the Arrow IPC stream bytes of rec: the form in which batches
// cross plugin boundaries. The bytes are not compressed; segments compress.
func Encode(rec arrow.RecordBatch) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(encodedSize(rec))
	w := ipc.NewWriter(&buf, ipc.WithSchema(rec.Schema()))
	if err := w.Write(rec); err != nil {
		return nil, fmt.Errorf("encode record batch: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("encode record batch: %w", err)
	}
	return buf.Bytes(), nil
}

// Decode reads the one record batch held by Arrow IPC stream bytes. The
// caller must Release the result.
func Decode(data []byte) (arrow.RecordBatch, error) {
	return DecodeWith(data, memory.DefaultAllocator)
}

// DecodeWith is Decode with the batch's buffers allocated from mem (a Pool,
// say, when batch after batch is decoded, written and released).
func DecodeWith(data []byte, mem memory.Allocator) (arrow.RecordBatch, error) {
	r, err := ipc.NewReader(bytes.NewReader(data), ipc.WithAllocator(mem))
	if err != nil {
		return nil, fmt.Errorf("decode record batch: %w", err)
	}
	defer r.Release()
	if !r.Next() {
		if err := r.Err(); err != nil {
			return nil, fmt.Errorf("decode record batch: %w", err)
		}
		return nil, errors.New("decode record batch: stream holds no batch")
	}
	rec := r.RecordBatch()
	rec.Retain()
	return rec, nil
}

// DecodeView decodes data and returns a View of it. Release the View's Batch.
func DecodeView(data []byte) (*View, error) {
	rec, err := Decode(data)
	if err != nil {
		return nil, err
	}
	v, err := NewView(rec)
	if err != nil {
		rec.Release()
		return nil, err
	}
	return v, nil
}

// encodedSize estimates the IPC stream size of rec: its buffers plus room
// for the schema and message headers, so that Encode allocates once.
func encodedSize(rec arrow.RecordBatch) int {
	n := 4096
	var add func(d arrow.ArrayData)
	add = func(d arrow.ArrayData) {
		for _, b := range d.Buffers() {
			if b != nil {
				n += b.Len() + 8
			}
		}
		for _, c := range d.Children() {
			add(c)
		}
	}
	for _, c := range rec.Columns() {
		add(c.Data())
	}
	return n
}
