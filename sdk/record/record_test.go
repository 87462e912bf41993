package record

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"testing"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// sameBytes fails unless got and want are both nil, or both non-nil with the
// same bytes: a null must stay null and an empty slice must stay empty.
func sameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	switch {
	case want == nil && got != nil:
		t.Errorf("%s: got %q (non-nil, len %d), want nil (null)", what, got, len(got))
	case want != nil && got == nil:
		t.Errorf("%s: got nil (null), want %q (non-nil, len %d)", what, want, len(want))
	case !bytes.Equal(got, want):
		t.Errorf("%s: got %q, want %q", what, got, want)
	}
}

// sameRecord compares every field of two records, nil-ness included.
func sameRecord(t *testing.T, what string, got, want Record) {
	t.Helper()
	if got.Offset != want.Offset {
		t.Errorf("%s: offset %d, want %d", what, got.Offset, want.Offset)
	}
	if got.Timestamp != want.Timestamp {
		t.Errorf("%s: timestamp %d, want %d", what, got.Timestamp, want.Timestamp)
	}
	if got.TimestampType != want.TimestampType {
		t.Errorf("%s: timestamp type %d, want %d", what, got.TimestampType, want.TimestampType)
	}
	sameBytes(t, what+": key", got.Key, want.Key)
	sameBytes(t, what+": value", got.Value, want.Value)
	if len(got.Headers) != len(want.Headers) {
		t.Errorf("%s: %d headers %v, want %d %v", what, len(got.Headers), got.Headers, len(want.Headers), want.Headers)
		return
	}
	for j := range want.Headers {
		if got.Headers[j].Key != want.Headers[j].Key {
			t.Errorf("%s: header %d key %q, want %q", what, j, got.Headers[j].Key, want.Headers[j].Key)
		}
		sameBytes(t, fmt.Sprintf("%s: header %d (%q) value", what, j, want.Headers[j].Key), got.Headers[j].Value, want.Headers[j].Value)
	}
}

// fidelityRecords covers every distinction the package promises to keep.
func fidelityRecords() []Record {
	return []Record{
		{ // tombstone with a null key, no headers
			Offset: 100, Timestamp: 1731236400000, TimestampType: CreateTime,
			Key: nil, Value: nil,
		},
		{ // empty key and empty value; header order, duplicates, nulls, empties
			Offset: 101, Timestamp: 0, TimestampType: LogAppendTime,
			Key: []byte{}, Value: []byte{},
			Headers: []Header{
				{Key: "b", Value: []byte("1")},
				{Key: "a", Value: []byte("2")},
				{Key: "b", Value: []byte("3")}, // duplicate key, kept in place
				{Key: "n", Value: nil},         // null header value
				{Key: "e", Value: []byte{}},    // empty header value
				{Key: "", Value: []byte("x")},  // empty header key
				{Key: "", Value: nil},          // empty key and null value
			},
		},
		{ // out-of-order timestamp (earlier than the first record), binary bytes
			Offset: 102, Timestamp: 1731236399000, TimestampType: CreateTime,
			Key: []byte("k"), Value: []byte{0x00, 0xff, 0x00, '\n'},
			Headers: []Header{{Key: "z", Value: []byte{0x00}}},
		},
		{ // null key with a non-null value; empty value with a null key elsewhere
			Offset: 103, Timestamp: 1731236401000, TimestampType: LogAppendTime,
			Key: nil, Value: []byte("v"),
			Headers: []Header{{Key: "n", Value: nil}, {Key: "n", Value: []byte{}}},
		},
		{ // non-null key with a null value
			Offset: 104, Timestamp: 1731236400500, TimestampType: CreateTime,
			Key: []byte("k2"), Value: nil,
		},
	}
}

func build(t *testing.T, mem memory.Allocator, recs []Record) (arrow.RecordBatch, Bounds) {
	t.Helper()
	b := NewBuilder(mem)
	defer b.Release()
	for i := range recs {
		b.Append(&recs[i])
	}
	if b.Len() != len(recs) {
		t.Fatalf("Builder.Len() = %d, want %d", b.Len(), len(recs))
	}
	bounds := b.Bounds()
	rec := b.NewRecord()
	if b.Len() != 0 || b.SizeBytes() != 0 || b.Bounds() != (Bounds{}) {
		t.Fatalf("after NewRecord: Len %d SizeBytes %d Bounds %+v, want all zero", b.Len(), b.SizeBytes(), b.Bounds())
	}
	return rec, bounds
}

func checkView(t *testing.T, what string, v *View, want []Record) {
	t.Helper()
	if v.Len() != len(want) {
		t.Fatalf("%s: Len() = %d, want %d", what, v.Len(), len(want))
	}
	for i, w := range want {
		name := fmt.Sprintf("%s: record %d", what, i)
		sameRecord(t, name, v.Record(i), w)
		// The per-field accessors must agree with Record.
		sameBytes(t, name+": Key()", v.Key(i), w.Key)
		sameBytes(t, name+": Value()", v.Value(i), w.Value)
		if v.Offset(i) != w.Offset || v.Timestamp(i) != w.Timestamp || v.TimestampType(i) != w.TimestampType {
			t.Errorf("%s: accessors give offset %d ts %d type %d, want %d %d %d", name,
				v.Offset(i), v.Timestamp(i), v.TimestampType(i), w.Offset, w.Timestamp, w.TimestampType)
		}
		if v.NumHeaders(i) != len(w.Headers) {
			t.Errorf("%s: NumHeaders() = %d, want %d", name, v.NumHeaders(i), len(w.Headers))
			continue
		}
		for j, h := range w.Headers {
			got := v.Header(i, j)
			if got.Key != h.Key {
				t.Errorf("%s: Header(%d).Key = %q, want %q", name, j, got.Key, h.Key)
			}
			sameBytes(t, fmt.Sprintf("%s: Header(%d).Value", name, j), got.Value, h.Value)
		}
		if len(w.Headers) == 0 && v.Headers(i) != nil {
			t.Errorf("%s: Headers() = %#v, want nil for a record without headers", name, v.Headers(i))
		}
	}
}

func TestRoundTripFidelity(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	want := fidelityRecords()
	rec, _ := build(t, mem, want)

	// The View of the freshly built batch, before any encoding.
	v, err := NewView(rec)
	if err != nil {
		t.Fatalf("NewView: %v", err)
	}
	checkView(t, "built", v, want)

	data, err := Encode(rec)
	rec.Release()
	mem.AssertSize(t, 0)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}

	dv, err := DecodeView(data)
	if err != nil {
		t.Fatalf("DecodeView: %v", err)
	}
	defer dv.Batch.Release()
	checkView(t, "decoded", dv, want)

	// Encoding the decoded batch again gives the same bytes.
	again, err := Encode(dv.Batch)
	if err != nil {
		t.Fatalf("Encode of decoded batch: %v", err)
	}
	if !bytes.Equal(again, data) {
		t.Errorf("re-encoding a decoded batch changed its bytes (%d vs %d bytes)", len(again), len(data))
	}
}

// TestRoundTripOnlyEmptyValues checks the case where every binary value of a
// column is empty, so Arrow may have no data buffer at all: empty must still
// come back as a non-nil empty slice, and null as nil.
func TestRoundTripOnlyEmptyValues(t *testing.T) {
	want := []Record{
		{Offset: 0, Key: []byte{}, Value: []byte{}, Headers: []Header{{Key: "", Value: []byte{}}}},
		{Offset: 1, Key: nil, Value: []byte{}, Headers: []Header{{Key: "", Value: nil}}},
		{Offset: 2, Key: []byte{}, Value: nil},
	}
	rec, _ := build(t, nil, want)
	data, err := Encode(rec)
	rec.Release()
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	v, err := DecodeView(data)
	if err != nil {
		t.Fatalf("DecodeView: %v", err)
	}
	defer v.Batch.Release()
	checkView(t, "decoded", v, want)
}

func TestTimestampTypes(t *testing.T) {
	want := []Record{
		{Offset: 5, Timestamp: 10, TimestampType: LogAppendTime},
		{Offset: 6, Timestamp: 11, TimestampType: CreateTime},
	}
	rec, _ := build(t, nil, want)
	data, err := Encode(rec)
	rec.Release()
	if err != nil {
		t.Fatal(err)
	}
	v, err := DecodeView(data)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Batch.Release()
	if got := v.TimestampType(0); got != LogAppendTime {
		t.Errorf("TimestampType(0) = %d, want LogAppendTime (1)", got)
	}
	if got := v.TimestampType(1); got != CreateTime {
		t.Errorf("TimestampType(1) = %d, want CreateTime (0)", got)
	}
}

func TestBounds(t *testing.T) {
	b := NewBuilder(nil)
	defer b.Release()
	if got := b.Bounds(); got != (Bounds{}) {
		t.Fatalf("empty Builder Bounds = %+v, want zero", got)
	}
	// Timestamps out of order: min is the 3rd record, max the 2nd; neither is
	// the first or the last record.
	recs := []Record{
		{Offset: 10, Timestamp: 5000},
		{Offset: 11, Timestamp: 9000},
		{Offset: 12, Timestamp: 1000},
		{Offset: 13, Timestamp: 4000},
	}
	for i := range recs {
		b.Append(&recs[i])
	}
	want := Bounds{Count: 4, MinOffset: 10, MaxOffset: 13, MinTimestamp: 1000, MaxTimestamp: 9000}
	if got := b.Bounds(); got != want {
		t.Errorf("Bounds = %+v, want %+v", got, want)
	}
	r := b.NewRecord()
	r.Release()

	// A timestamp of 0 is a real minimum, not "unset".
	b.AppendFields(7, 0, CreateTime, nil, nil)
	b.AppendFields(8, 3, CreateTime, nil, nil)
	want = Bounds{Count: 2, MinOffset: 7, MaxOffset: 8, MinTimestamp: 0, MaxTimestamp: 3}
	if got := b.Bounds(); got != want {
		t.Errorf("Bounds with ts 0 = %+v, want %+v", got, want)
	}
	r = b.NewRecord()
	r.Release()

	// One record: min == max.
	b.AppendFields(42, 1731236400000, LogAppendTime, []byte("k"), nil)
	want = Bounds{Count: 1, MinOffset: 42, MaxOffset: 42, MinTimestamp: 1731236400000, MaxTimestamp: 1731236400000}
	if got := b.Bounds(); got != want {
		t.Errorf("Bounds of one record = %+v, want %+v", got, want)
	}
	r = b.NewRecord()
	r.Release()

	// Extreme values survive the sentinel initialisation.
	b.AppendFields(math.MaxInt64, math.MinInt64, CreateTime, nil, nil)
	want = Bounds{Count: 1, MinOffset: math.MaxInt64, MaxOffset: math.MaxInt64, MinTimestamp: math.MinInt64, MaxTimestamp: math.MinInt64}
	if got := b.Bounds(); got != want {
		t.Errorf("Bounds of extreme record = %+v, want %+v", got, want)
	}
	r = b.NewRecord()
	r.Release()
}

func TestBoundsOfFidelityRecords(t *testing.T) {
	rec, bounds := build(t, nil, fidelityRecords())
	rec.Release()
	want := Bounds{Count: 5, MinOffset: 100, MaxOffset: 104, MinTimestamp: 0, MaxTimestamp: 1731236401000}
	if bounds != want {
		t.Errorf("Bounds = %+v, want %+v", bounds, want)
	}
}

func TestSizeBytes(t *testing.T) {
	b := NewBuilder(nil)
	defer b.Release()
	b.AppendFields(1, 1, CreateTime, []byte("ab"), []byte("cde"))
	b.AppendHeader("hk", []byte("hvv"))
	// 2 + 3 + 17 for the record, 2 + 3 for the header.
	if got := b.SizeBytes(); got != 27 {
		t.Errorf("SizeBytes = %d, want 27", got)
	}
	r := b.NewRecord()
	r.Release()
}

const otherSchemaPrefix = "record batch schema is not the kpipe record schema v1: "

func TestNewViewRejectsOtherSchema(t *testing.T) {
	other := arrow.NewSchema([]arrow.Field{{Name: "offset", Type: arrow.PrimitiveTypes.Int64}}, nil)
	rb := array.NewRecordBuilder(memory.DefaultAllocator, other)
	defer rb.Release()
	rb.Field(0).(*array.Int64Builder).Append(1)
	rec := rb.NewRecordBatch()
	defer rec.Release()

	v, err := NewView(rec)
	if err == nil {
		t.Fatalf("NewView accepted a batch of another schema: %v", v)
	}
	if v != nil {
		t.Errorf("NewView returned a View along with its error")
	}
	if !strings.HasPrefix(err.Error(), otherSchemaPrefix) {
		t.Errorf("error = %q, want prefix %q", err, otherSchemaPrefix)
	}

	// A frame carries no schema: its shape tells it apart.
	data, err := Encode(rec)
	if err != nil {
		t.Fatal(err)
	}
	const want = "decode record batch: record batch has 2 buffers and 1 fields, the kpipe record schema v1 has 21 and 9"
	if _, err := DecodeView(data); err == nil || err.Error() != want {
		t.Errorf("DecodeView error = %v, want %q", err, want)
	}
}

// TestNewViewRejectsOtherSchemaVersion: a batch whose columns match but whose
// schema metadata says kpipe.schema_version "2" is not a v1 batch.
func TestNewViewRejectsOtherSchemaVersion(t *testing.T) {
	md := arrow.NewMetadata([]string{"kpipe.schema_version"}, []string{"2"})
	v2 := arrow.NewSchema(Schema.Fields(), &md)
	rb := array.NewRecordBuilder(memory.DefaultAllocator, v2)
	defer rb.Release()
	rec := rb.NewRecordBatch()
	defer rec.Release()
	if _, err := NewView(rec); err == nil || !strings.HasPrefix(err.Error(), otherSchemaPrefix) {
		t.Errorf("NewView of a schema_version 2 batch: error = %v, want prefix %q", err, otherSchemaPrefix)
	}
}

func TestDecodeErrors(t *testing.T) {
	if _, err := Decode([]byte("not arrow")); err == nil || !strings.HasPrefix(err.Error(), "decode record batch: ") {
		t.Errorf("Decode(garbage) error = %v, want prefix %q", err, "decode record batch: ")
	}
	// A schema message is not a record batch.
	const want = "decode record batch: frame holds an Arrow message of type 1, not a record batch"
	if _, err := Decode(SchemaFrame()); err == nil || err.Error() != want {
		t.Errorf("Decode(schema) error = %v, want %q", err, want)
	}
	if _, err := DecodeView(nil); err == nil {
		t.Errorf("DecodeView(nil) gave no error")
	}
}

func TestViewBoundsAreMinMaxNotFirstLast(t *testing.T) {
	b := NewBuilder(nil)
	defer b.Release()
	for _, r := range []Record{{Offset: 5, Timestamp: 300}, {Offset: 6, Timestamp: 100}, {Offset: 9, Timestamp: 200}} {
		b.Append(&r)
	}
	rec := b.NewRecord()
	defer rec.Release()
	v, err := NewView(rec)
	if err != nil {
		t.Fatal(err)
	}
	want := Bounds{Count: 3, MinOffset: 5, MaxOffset: 9, MinTimestamp: 100, MaxTimestamp: 300}
	if got := v.Bounds(); got != want {
		t.Fatalf("bounds %+v, want %+v", got, want)
	}
}

// dirtyPool returns a Pool whose every buffer size class up to 1 MiB already
// holds buffers full of 0xFF, the way recycled memory looks.
func dirtyPool() *Pool {
	p := NewPool()
	var bufs [][]byte
	for c := minShift; c <= 20; c++ {
		for range 16 {
			b := p.Allocate(1 << c)
			for i := range b {
				b[i] = 0xFF
			}
			bufs = append(bufs, b)
		}
	}
	for _, b := range bufs {
		p.Free(b)
	}
	return p
}

// TestPoolRecyclesWithoutLeakingOldBytes builds, encodes and decodes the
// fidelity records with recycled dirty buffers: the records and their IPC
// bytes must come out as with fresh zeroed memory.
func TestPoolRecyclesWithoutLeakingOldBytes(t *testing.T) {
	want := fidelityRecords()
	fresh, _ := build(t, memory.NewGoAllocator(), want)
	wantData, err := Encode(fresh)
	fresh.Release()
	if err != nil {
		t.Fatal(err)
	}
	pool := dirtyPool()
	for round := range 3 { // later rounds reuse the buffers of earlier ones
		rec, _ := build(t, pool, want)
		v, err := NewView(rec)
		if err != nil {
			t.Fatal(err)
		}
		checkView(t, fmt.Sprintf("round %d: built from a dirty pool", round), v, want)
		data, err := Encode(rec)
		rec.Release()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, wantData) {
			t.Fatalf("round %d: IPC bytes of a batch built from recycled memory differ from a fresh build", round)
		}
	}
}

func TestPoolSizes(t *testing.T) {
	p := NewPool()
	// Buffers the pool did not hand out are ignored, not kept.
	p.Free(nil)
	p.Free(make([]byte, 0))
	p.Free(make([]byte, 100))
	// A slice of the right size but off 64-byte alignment is not kept
	// either: nothing unaligned may come back out.
	odd := make([]byte, 129)[1:]
	p.Free(odd)
	if b := p.Allocate(128); uintptr(unsafe.Pointer(unsafe.SliceData(b)))%64 != 0 {
		t.Errorf("Allocate(128) after freeing an unaligned slice is at %p, not 64-byte aligned", unsafe.SliceData(b))
	}
	for _, size := range []int{0, 1, 63, 64, 65, 1000, 1 << 20, 1<<20 + 1} {
		b := p.Allocate(size)
		if len(b) != size {
			t.Errorf("Allocate(%d) has length %d", size, len(b))
		}
		if addr := uintptr(unsafe.Pointer(unsafe.SliceData(b[:cap(b)]))); cap(b) > 0 && addr%64 != 0 {
			t.Errorf("Allocate(%d) is at %#x, not 64-byte aligned", size, addr)
		}
		if _, n, _ := class(size); cap(b) < n || cap(b) > 2*n {
			t.Errorf("Allocate(%d) has capacity %d, want its class's (%d), at most twice that", size, cap(b), n)
		}
		b = p.Reallocate(2*size+1, b)
		if len(b) != 2*size+1 {
			t.Errorf("Reallocate(%d) has length %d", 2*size+1, len(b))
		}
		p.Free(b)
	}
}

// TestPoolReusesLarger checks that a free buffer up to twice the size asked
// for is handed out again, and a larger one is not.
func TestPoolReusesLarger(t *testing.T) {
	p := NewPool()
	big := p.Allocate(1 << 20)
	p.Free(big)
	if b := p.Allocate(448 << 10); cap(b) != 448<<10 {
		t.Errorf("Allocate(448 KiB) with only a 1 MiB buffer free has capacity %d, want a fresh 448 KiB", cap(b))
	}
	if b := p.Allocate(1<<19 + 1); unsafe.SliceData(b) != unsafe.SliceData(big) {
		t.Errorf("Allocate(512 KiB + 1) did not reuse the free 1 MiB buffer")
	}
	if p.Kept() != 0 {
		t.Errorf("pool keeps %d bytes after its only buffer was handed out", p.Kept())
	}
}

// TestPoolClasses pins down the size classes: four per power of two, each
// buffer's capacity its class's, and a freed buffer found again by its
// capacity.
func TestPoolClasses(t *testing.T) {
	for size, want := range map[int]int{
		0: 64, 1: 64, 64: 64, 65: 80, 80: 80, 81: 96, 128: 128, 129: 160,
		1 << 20: 1 << 20, 1<<20 + 1: 1<<20 + 1<<18, 3 << 19: 3 << 19, 1 << 28: 1 << 28,
	} {
		if _, n, ok := class(size); !ok || n != want {
			t.Errorf("class(%d) = %d, %v; want %d", size, n, ok, want)
		}
	}
	if _, _, ok := class(1<<28 + 1); ok {
		t.Errorf("a buffer over 256 MiB has a class")
	}
	p := NewPool()
	b := p.Allocate(1000)
	p.Free(b)
	if got := p.Allocate(990); &got[:cap(got)][0] != &b[:cap(b)][0] {
		t.Errorf("a buffer of the same class was not reused")
	}
}
