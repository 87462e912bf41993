package record

import (
	"bytes"
	"encoding/binary"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/kpipe/kpipe/internal/heap"

	flatbuffers "github.com/google/flatbuffers/go"
)

// Each bound on what a damaged or hostile frame may make kpipe allocate:
// the frame is refused with an exact error, and refusing it allocates
// under 64 MiB.

const refusalBudget = 64 << 20

// refused runs read, which must fail with want and allocate under the
// budget.
func refused(t *testing.T, what, want string, read func() error) {
	t.Helper()
	var err error
	if n := heap.Allocated(func() { err = read() }); n >= refusalBudget {
		t.Errorf("%s: refusing it allocated %d MiB, want under %d", what, n>>20, refusalBudget>>20)
	}
	if err == nil || err.Error() != want {
		t.Errorf("%s:\n got %v\nwant %s", what, err, want)
	}
}

// smallFrame is an encoded frame of a few records in codec c, and where
// its body starts.
func smallFrame(t *testing.T, c Codec) ([]byte, batchMessage) {
	t.Helper()
	recs := []Record{
		{Offset: 10, Timestamp: 1000, Key: []byte("k"), Value: bytes.Repeat([]byte("value "), 100), Headers: []Header{{Key: "h", Value: []byte("1")}}},
		{Offset: 11, Timestamp: 1001, Key: []byte("k2"), Value: []byte("v")},
	}
	rec, _ := build(t, nil, recs)
	defer rec.Release()
	frame, err := NewEncoder(c).Encode(rec, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseBatch(frame)
	if err != nil {
		t.Fatal(err)
	}
	return frame, m
}

// bodyAt is where the body of frame m starts.
func bodyAt(frame []byte, m batchMessage) int { return len(frame) - len(m.body) }

// TestDecompressionBombIsRefusedBeforeAllocating: a 1 KiB zstd buffer that
// claims 512 MiB once decompressed, more than zstd can expand it to.
func TestDecompressionBombIsRefusedBeforeAllocating(t *testing.T) {
	frame, m := smallFrame(t, Zstd)
	value := m.spans[11] // the value column's bytes
	binary.LittleEndian.PutUint64(frame[bodyAt(frame, m)+int(value.off):], 512<<20)
	most := (value.len - 8) * 32768
	msg := "buffer 11 claims 536870912 bytes once decompressed from " + itoa(value.len-8) + ", more than zstd can expand to (" + itoa(most) + "): a decompression bomb or damage"
	refused(t, "Decode", "decode record batch: "+msg, func() error { _, err := Decode(frame); return err })
	refused(t, "Inspect", msg, func() error { _, err := Inspect(frame); return err })
	refused(t, "Recompress", msg, func() error { _, err := NewEncoder(None).Recompress(frame, nil); return err })
	// The offsets: what FrameBounds decompresses.
	offs := m.spans[bufOffsetData]
	binary.LittleEndian.PutUint64(frame[bodyAt(frame, m)+int(offs.off):], 1<<30)
	refused(t, "FrameBounds", "buffer 1 claims 1073741824 bytes once decompressed from "+itoa(offs.len-8)+", more than zstd can expand to ("+itoa((offs.len-8)*32768)+"): a decompression bomb or damage",
		func() error { _, err := FrameBounds(frame); return err })
}

// TestLZ4BombIsRefusedBeforeAllocating: the same for LZ4, which expands
// at most 255 to 1.
func TestLZ4BombIsRefusedBeforeAllocating(t *testing.T) {
	frame, m := smallFrame(t, LZ4)
	value := m.spans[11]
	binary.LittleEndian.PutUint64(frame[bodyAt(frame, m)+int(value.off):], 1<<20)
	refused(t, "Decode", "decode record batch: buffer 11 claims 1048576 bytes once decompressed from "+itoa(value.len-8)+", more than lz4 can expand to ("+itoa((value.len-8)*255+64)+"): a decompression bomb or damage",
		func() error { _, err := Decode(frame); return err })
}

// TestRowCountBeyondItsBytesIsRefused: a record batch that claims 2^61
// rows, whose offsets would take 2^64 bytes (the count once overflowed the
// check and crashed FrameBounds).
func TestRowCountBeyondItsBytesIsRefused(t *testing.T) {
	for _, c := range []Codec{None, Zstd} {
		frame, m := smallFrame(t, c)
		meta := buildBatchMeta(m.version, 1<<61, m.nodes, m.spans, m.codec, int64(len(m.body)))
		bad := append(appendFrameHeader(nil, meta), m.body...)
		refused(t, "FrameBounds "+string(c), "record batch of 2305843009213693952 rows has a column of 2 values",
			func() error { _, err := FrameBounds(bad); return err })
		refused(t, "Decode "+string(c), "decode record batch: record batch of 2305843009213693952 rows has a column of 2 values",
			func() error { _, err := Decode(bad); return err })
		// Its columns say so too: only the bytes tell.
		nodes := bytes.Clone(m.nodes)
		for i := range numColumns {
			binary.LittleEndian.PutUint64(nodes[i*fieldNodeSize:], 1<<61)
		}
		meta = buildBatchMeta(m.version, 1<<61, nodes, m.spans, m.codec, int64(len(m.body)))
		bad = append(appendFrameHeader(nil, meta), m.body...)
		refused(t, "FrameBounds, every column "+string(c), "record batch of 2305843009213693952 rows holds 16 bytes of column offset, too few for them",
			func() error { _, err := FrameBounds(bad); return err })
		refused(t, "Decode, every column "+string(c), "decode record batch: record batch of 2305843009213693952 rows holds 16 bytes of column offset, too few for them",
			func() error { _, err := Decode(bad); return err })
		_ = frame
	}
}

// TestHeadersOffsetsBeyondTheirValuesAreRefused: the headers' list offsets
// of an uncompressed frame say the last record has two billion headers
// (reading them once ran the process out of memory).
func TestHeadersOffsetsBeyondTheirValuesAreRefused(t *testing.T) {
	frame, m := smallFrame(t, None)
	lists := m.spans[13] // the headers' list offsets
	binary.LittleEndian.PutUint32(frame[bodyAt(frame, m)+int(lists.off)+8:], math.MaxInt32)
	refused(t, "DecodeView", "decode record batch: column headers: offset 2147483647 of value 2 lies outside 0..1 or before the one it follows",
		func() error { _, err := DecodeView(frame); return err })
}

// TestLengthPrefixesNearTheIntegerLimitsAreRefused: the lengths a stream
// of frames gives, at and near the limits of their integers.
func TestLengthPrefixesNearTheIntegerLimitsAreRefused(t *testing.T) {
	frame, m := smallFrame(t, None)
	stream := func(f []byte) io.Reader { return bytes.NewReader(f) }

	meta := binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, ipcContinuation), math.MaxUint32)
	refused(t, "metadata length 2^32-1", "Arrow IPC message metadata length 4294967295 is out of bounds",
		func() error { _, err := ReadFrame(stream(meta), nil); return err })
	refused(t, "frame metadata length 2^32-1", "frame metadata length 4294967295 does not fit its 8 bytes",
		func() error { _, err := Inspect(meta); return err })

	for _, n := range []int64{math.MaxInt64, -1, MaxFrameBytes + 1} {
		meta := buildBatchMeta(m.version, m.length, m.nodes, m.spans, None, n)
		refused(t, "body length "+itoa(n), "Arrow IPC message body length "+itoa(n)+" is out of bounds",
			func() error { _, err := ReadFrame(stream(appendFrameHeader(nil, meta)), nil); return err })
	}
	// A body of 1 GiB, the most a frame may have, declared by a stream
	// that holds 100 bytes of it: read as it comes, not allocated ahead.
	big := buildBatchMeta(m.version, m.length, m.nodes, m.spans, None, MaxFrameBytes)
	refused(t, "body length 1 GiB, 100 bytes there", io.ErrUnexpectedEOF.Error(),
		func() error {
			_, err := ReadFrame(stream(append(appendFrameHeader(nil, big), make([]byte, 100)...)), nil)
			return err
		})

	// A buffer whose offset and length add up past 2^63.
	spans := append([]span(nil), m.spans...)
	spans[11] = span{off: 8, len: math.MaxInt64 - 4}
	bad := append(appendFrameHeader(nil, buildBatchMeta(m.version, m.length, m.nodes, spans, None, int64(len(m.body)))), m.body...)
	refused(t, "buffer past 2^63", "decode record batch: buffer 11 (9223372036854775803 bytes at 8) lies outside the "+itoa(int64(len(m.body)))+"-byte body",
		func() error { _, err := Decode(bad); return err })
	// A compressed buffer whose uncompressed length is the largest int64.
	zf, zm := smallFrame(t, Zstd)
	binary.LittleEndian.PutUint64(zf[bodyAt(zf, zm)+int(zm.spans[11].off):], math.MaxInt64)
	refused(t, "uncompressed length 2^63-1", "decode record batch: buffer 11 claims 9223372036854775807 bytes once decompressed",
		func() error { _, err := Decode(zf); return err })
	_ = frame
}

// TestSchemaFramesThatLieAreRefused: schema frames found by fuzzing whose
// lengths once made the Arrow reader allocate gigabytes.
func TestSchemaFramesThatLieAreRefused(t *testing.T) {
	for name, c := range map[string]struct {
		frame []byte
		want  string
	}{
		"metadata claims 2 GiB":            {[]byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}, "frame metadata length 2147483647 does not fit its 8 bytes"},
		"root offset outside its metadata": {[]byte("\xff\xff\xff\xff\b\x00\x00\x0000000000"), "the stream starts with an Arrow message of type 0, not a schema"},
		"schema of 4 billion fields":       {fieldsClaim(t), "its 624-byte schema message is not the 624 bytes of the kpipe record schema v" + SchemaVersion},
	} {
		refused(t, name, c.want, func() error { return CheckSchemaFrame(c.frame) })
	}
}

// fieldsClaim is the schema frame with its fields vector's length set to
// 2^32-1.
func fieldsClaim(t *testing.T) []byte {
	f := bytes.Clone(SchemaFrame())
	meta, _, _ := frameParts(f)
	msg := table(meta)
	var schema flatbuffers.Table
	o := msg.Offset(slot(msgHeader))
	msg.Union(&schema, flatbuffers.UOffsetT(o))
	fields := schema.Offset(slot(1))
	if fields == 0 {
		t.Fatal("the schema has no fields vector")
	}
	at := schema.Vector(flatbuffers.UOffsetT(fields)) - 4 // its length
	binary.LittleEndian.PutUint32(meta[at:], math.MaxUint32)
	return f
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestZstdThatDecompressesPastItsClaimStopsAtIt: a zstd buffer whose
// frame holds 16 MiB but whose prefix claims 1 KiB fails at the claim,
// without growing the buffer to what the frame holds.
func TestZstdThatDecompressesPastItsClaimStopsAtIt(t *testing.T) {
	rec, _ := build(t, nil, []Record{{Offset: 1, Timestamp: 1, Key: []byte("k"), Value: make([]byte, 16<<20)}})
	frame, err := NewEncoder(Zstd).Encode(rec, nil)
	rec.Release()
	if err != nil {
		t.Fatal(err)
	}
	m, _ := parseBatch(frame)
	binary.LittleEndian.PutUint64(frame[bodyAt(frame, m)+int(m.spans[11].off):], 1024)
	var derr error
	if n := heap.Allocated(func() { _, derr = Decode(frame) }); n >= 4<<20 {
		t.Errorf("Decode allocated %d MiB for a buffer that claims 1 KiB", n>>20)
	}
	if want := "decode record batch: buffer 11: zstd: "; derr == nil || !strings.HasPrefix(derr.Error(), want) {
		t.Errorf("got %v, want an error beginning %q", derr, want)
	}
}
