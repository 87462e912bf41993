package record

import (
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Encode returns the uncompressed frame of rec (see Encoder for frames in
// other codecs).
func Encode(rec arrow.RecordBatch) ([]byte, error) { return EncodeRecord(rec) }

// Decode reads the records of a frame, whatever its codec. The caller must
// Release the result; for an uncompressed frame it aliases frame.
func Decode(frame []byte) (arrow.RecordBatch, error) {
	return DecodeWith(frame, memory.DefaultAllocator)
}

// DecodeWith is Decode with decompressed buffers allocated from mem (a Pool,
// say, when batch after batch is decoded, used and released).
func DecodeWith(frame []byte, mem memory.Allocator) (arrow.RecordBatch, error) {
	d := NewDecoder(mem)
	defer d.Close()
	return d.Decode(frame)
}

// DecodeView decodes a frame and returns a View of it. Release the View's
// Batch.
func DecodeView(frame []byte) (*View, error) {
	rec, err := Decode(frame)
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

// Size is the bytes of rec's buffers: what it holds in memory, and about
// the size of its uncompressed frame.
func Size(rec arrow.RecordBatch) int64 {
	var n int64
	var add func(d arrow.ArrayData)
	add = func(d arrow.ArrayData) {
		for _, b := range d.Buffers() {
			if b != nil {
				n += int64(b.Len())
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
