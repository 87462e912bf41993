package record

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// View reads records out of an Arrow record batch in the kpipe schema without
// copying. Slices it returns alias the batch's memory: copy them to keep them
// past the batch's Release.
type View struct {
	Batch   arrow.RecordBatch
	offset  *array.Int64
	ts      *array.Timestamp
	tsType  *array.Int8
	key     *array.Binary
	value   *array.Binary
	headers *array.List
	hKey    *array.String
	hValue  *array.Binary
}

// NewView checks that rec has the kpipe schema and returns a View of it.
func NewView(rec arrow.RecordBatch) (*View, error) {
	if err := CheckSchema(rec.Schema()); err != nil {
		return nil, err
	}
	hl := rec.Column(ColHeaders).(*array.List)
	hs := hl.ListValues().(*array.Struct)
	return &View{
		Batch:   rec,
		offset:  rec.Column(ColOffset).(*array.Int64),
		ts:      rec.Column(ColTimestamp).(*array.Timestamp),
		tsType:  rec.Column(ColTimestampType).(*array.Int8),
		key:     rec.Column(ColKey).(*array.Binary),
		value:   rec.Column(ColValue).(*array.Binary),
		headers: hl,
		hKey:    hs.Field(0).(*array.String),
		hValue:  hs.Field(1).(*array.Binary),
	}, nil
}

// Len is the number of records.
func (v *View) Len() int { return int(v.Batch.NumRows()) }

// Offset of record i.
func (v *View) Offset(i int) int64 { return v.offset.Value(i) }

// Timestamp of record i in epoch milliseconds.
func (v *View) Timestamp(i int) int64 { return int64(v.ts.Value(i)) }

// TimestampType of record i.
func (v *View) TimestampType(i int) TimestampType { return TimestampType(v.tsType.Value(i)) }

// Key of record i; nil when null.
func (v *View) Key(i int) []byte { return nullable(v.key, i) }

// Value of record i; nil when null.
func (v *View) Value(i int) []byte { return nullable(v.value, i) }

// NumHeaders of record i.
func (v *View) NumHeaders(i int) int {
	start, end := v.headers.ValueOffsets(i)
	return int(end - start)
}

// Header j of record i.
func (v *View) Header(i, j int) Header {
	start, _ := v.headers.ValueOffsets(i)
	k := int(start) + j
	return Header{Key: v.hKey.Value(k), Value: nullable(v.hValue, k)}
}

// Headers of record i, in order.
func (v *View) Headers(i int) []Header {
	start, end := v.headers.ValueOffsets(i)
	if start == end {
		return nil
	}
	hs := make([]Header, 0, end-start)
	for k := int(start); k < int(end); k++ {
		hs = append(hs, Header{Key: v.hKey.Value(k), Value: nullable(v.hValue, k)})
	}
	return hs
}

// RecordBytes is the size of record i as Kafka counts it against a
// record limit, near enough: key, value, and each header's key and value.
func (v *View) RecordBytes(i int) int64 {
	n := int64(len(v.Key(i)) + len(v.Value(i)))
	start, end := v.headers.ValueOffsets(i)
	for k := int(start); k < int(end); k++ {
		n += int64(len(v.hKey.Value(k)) + len(nullable(v.hValue, k)))
	}
	return n
}

// Bounds returns the count and the min/max offset and timestamp of the
// records in the view.
func (v *View) Bounds() Bounds {
	var b Bounds
	for i := range v.Len() {
		b.add(v.Offset(i), v.Timestamp(i))
	}
	return b
}

// Record returns record i. Its slices alias the batch.
func (v *View) Record(i int) Record {
	return Record{
		Offset:        v.Offset(i),
		Timestamp:     v.Timestamp(i),
		TimestampType: v.TimestampType(i),
		Key:           v.Key(i),
		Value:         v.Value(i),
		Headers:       v.Headers(i),
	}
}

var empty = []byte{}

func nullable(a *array.Binary, i int) []byte {
	if a.IsNull(i) {
		return nil
	}
	b := a.Value(i)
	if b == nil {
		return empty
	}
	return b
}

// CheckSchema reports whether s is the kpipe record schema of this version:
// the same fields and the same kpipe.schema_version metadata.
func CheckSchema(s *arrow.Schema) error {
	v, _ := s.Metadata().GetValue("kpipe.schema_version")
	if !s.Equal(Schema) || v != SchemaVersion {
		return fmt.Errorf("record batch schema is not the kpipe record schema v%s: %s", SchemaVersion, s)
	}
	return nil
}
