package record

import (
	"math"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Bounds summarizes the records appended to a Builder.
type Bounds struct {
	Count        int64
	MinOffset    int64
	MaxOffset    int64
	MinTimestamp int64
	MaxTimestamp int64
}

func (b *Bounds) add(offset, ts int64) {
	if b.Count == 0 {
		b.MinOffset, b.MaxOffset = math.MaxInt64, math.MinInt64
		b.MinTimestamp, b.MaxTimestamp = math.MaxInt64, math.MinInt64
	}
	b.Count++
	b.MinOffset = min(b.MinOffset, offset)
	b.MaxOffset = max(b.MaxOffset, offset)
	b.MinTimestamp = min(b.MinTimestamp, ts)
	b.MaxTimestamp = max(b.MaxTimestamp, ts)
}

// Builder accumulates records into one Arrow record batch. It is not safe for
// concurrent use. The zero value is not usable; call NewBuilder.
type Builder struct {
	rb      *array.RecordBuilder
	offset  *array.Int64Builder
	ts      *array.TimestampBuilder
	tsType  *array.Int8Builder
	key     *array.BinaryBuilder
	value   *array.BinaryBuilder
	headers *array.ListBuilder
	hStruct *array.StructBuilder
	hKey    *array.StringBuilder
	hValue  *array.BinaryBuilder
	bounds  Bounds
	bytes   int64
	cur     int64 // size of the record being appended
	largest int64 // size of the largest record so far
}

// NewBuilder returns a Builder that allocates from mem (nil for the default).
func NewBuilder(mem memory.Allocator) *Builder {
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	rb := array.NewRecordBuilder(mem, Schema)
	hl := rb.Field(ColHeaders).(*array.ListBuilder)
	hs := hl.ValueBuilder().(*array.StructBuilder)
	return &Builder{
		rb:      rb,
		offset:  rb.Field(ColOffset).(*array.Int64Builder),
		ts:      rb.Field(ColTimestamp).(*array.TimestampBuilder),
		tsType:  rb.Field(ColTimestampType).(*array.Int8Builder),
		key:     rb.Field(ColKey).(*array.BinaryBuilder),
		value:   rb.Field(ColValue).(*array.BinaryBuilder),
		headers: hl,
		hStruct: hs,
		hKey:    hs.FieldBuilder(0).(*array.StringBuilder),
		hValue:  hs.FieldBuilder(1).(*array.BinaryBuilder),
	}
}

// Sizes announces what is about to be appended to a Builder, so that it can
// allocate once instead of growing its buffers step by step.
type Sizes struct {
	Records          int
	KeyBytes         int
	ValueBytes       int
	Headers          int
	HeaderKeyBytes   int
	HeaderValueBytes int
}

// Reserve makes room for the records that s describes, on top of those
// already appended.
func (b *Builder) Reserve(s Sizes) {
	b.offset.Reserve(s.Records)
	b.ts.Reserve(s.Records)
	b.tsType.Reserve(s.Records)
	b.key.Reserve(s.Records)
	b.key.ReserveData(s.KeyBytes)
	b.value.Reserve(s.Records)
	b.value.ReserveData(s.ValueBytes)
	b.headers.Reserve(s.Records)
	b.hStruct.Reserve(s.Headers)
	b.hKey.Reserve(s.Headers)
	b.hKey.ReserveData(s.HeaderKeyBytes)
	b.hValue.Reserve(s.Headers)
	b.hValue.ReserveData(s.HeaderValueBytes)
}

// Append adds one record.
func (b *Builder) Append(r *Record) {
	b.AppendFields(r.Offset, r.Timestamp, r.TimestampType, r.Key, r.Value)
	for _, h := range r.Headers {
		b.AppendHeader(h.Key, h.Value)
	}
}

// AppendFields adds one record without headers; call AppendHeader after it
// for each of the record's headers, in order.
func (b *Builder) AppendFields(offset, ts int64, tsType TimestampType, key, value []byte) {
	b.offset.Append(offset)
	b.ts.Append(arrow.Timestamp(ts))
	b.tsType.Append(int8(tsType))
	appendNullable(b.key, key)
	appendNullable(b.value, value)
	b.headers.Append(true)
	b.bounds.add(offset, ts)
	b.bytes += int64(len(key) + len(value) + 17)
	b.cur = int64(len(key) + len(value))
	b.largest = max(b.largest, b.cur)
}

// AppendHeader adds a header to the record appended last.
func (b *Builder) AppendHeader(key string, value []byte) {
	b.hStruct.Append(true)
	b.hKey.Append(key)
	appendNullable(b.hValue, value)
	b.bytes += int64(len(key) + len(value))
	b.cur += int64(len(key) + len(value))
	b.largest = max(b.largest, b.cur)
}

// LargestRecord is the size of the largest record appended since the last
// NewRecord, as View.RecordBytes counts it.
func (b *Builder) LargestRecord() int64 { return b.largest }

func appendNullable(b *array.BinaryBuilder, v []byte) {
	if v == nil {
		b.AppendNull()
		return
	}
	b.Append(v)
}

// Len is the number of records appended since the last NewRecord.
func (b *Builder) Len() int { return int(b.bounds.Count) }

// SizeBytes estimates the payload bytes appended since the last NewRecord.
func (b *Builder) SizeBytes() int64 { return b.bytes }

// Bounds returns the bounds of the records appended since the last NewRecord.
func (b *Builder) Bounds() Bounds { return b.bounds }

// NewRecord returns the appended records as an Arrow record batch and resets
// the Builder. The caller must Release the result.
func (b *Builder) NewRecord() arrow.RecordBatch {
	b.bounds = Bounds{}
	b.bytes, b.cur, b.largest = 0, 0, 0
	return b.rb.NewRecordBatch()
}

// Release frees the Builder's memory.
func (b *Builder) Release() { b.rb.Release() }
