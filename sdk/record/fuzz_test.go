package record

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"

	"github.com/kpipe/kpipe/internal/fuzzseed"
)

// decodeLimit keeps the fuzz targets from decoding frames that honestly
// claim more than this once decompressed: their bounds are what the
// regression tests check, and decoding them would only slow the search.
const decodeLimit = 16 << 20

// FuzzFrame feeds one frame, as a segment or a plugin hands it over, to
// every reader of frames. None may panic; what Inspect refuses no decoder
// takes; and a frame that decodes survives recompression to every codec
// with the same records.
func FuzzFrame(f *testing.F) {
	f.Fuzz(func(t *testing.T, frame []byte) {
		info, ierr := Inspect(frame)
		b, berr := FrameBounds(frame)
		if ierr != nil || info.Size > decodeLimit {
			return
		}
		v, err := DecodeView(frame)
		if err != nil {
			return
		}
		defer v.Batch.Release()
		recs := make([]Record, v.Len())
		for i := range recs {
			recs[i] = v.Record(i)
			v.RecordBytes(i)
		}
		if berr == nil && v.Len() > 0 && b != v.Bounds() {
			t.Fatalf("FrameBounds %+v, the decoded records' %+v", b, v.Bounds())
		}
		for _, c := range []Codec{None, Zstd, LZ4} {
			again, err := NewEncoder(c).Recompress(frame, nil)
			if err != nil {
				t.Fatalf("a frame that decodes does not recompress to %s: %v", c, err)
			}
			w, err := DecodeView(again)
			if err != nil {
				t.Fatalf("recompressed to %s, it no longer decodes: %v", c, err)
			}
			for i := range recs {
				if got := w.Record(i); !reflect.DeepEqual(got, recs[i]) {
					t.Fatalf("recompressed to %s, record %d is %+v, was %+v", c, i, got, recs[i])
				}
			}
			w.Batch.Release()
		}
	})
}

// FuzzStream reads a segment as a restore or validate --deep does: frame
// by frame, the schema first. No input may panic or read past its end.
func FuzzStream(f *testing.F) {
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := bytes.NewReader(stream)
		var buf []byte
		for i := 0; ; i++ {
			frame, err := ReadFrame(r, buf)
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrNoEndOfStream) && err != io.ErrUnexpectedEOF && err.Error() == "" {
					t.Fatal("an error without a message")
				}
				return
			}
			if len(frame) > len(stream) {
				t.Fatalf("frame %d is %d bytes, the stream only %d", i, len(frame), len(stream))
			}
			if i == 0 {
				_ = CheckSchemaFrame(frame)
				continue
			}
			if info, err := Inspect(frame); err == nil && info.Size <= decodeLimit {
				if v, err := DecodeView(frame); err == nil {
					v.Bounds()
					v.Batch.Release()
				}
			}
			buf = frame
		}
	})
}

// FuzzSchemaFrame checks the frame a segment starts with.
func FuzzSchemaFrame(f *testing.F) {
	f.Fuzz(func(t *testing.T, frame []byte) {
		if err := CheckSchemaFrame(frame); err == nil && !IsSchemaFrame(frame) {
			t.Fatal("CheckSchemaFrame takes a frame IsSchemaFrame refuses")
		}
	})
}

// FuzzParseCodec reads a compression setting.
func FuzzParseCodec(f *testing.F) {
	for _, s := range []string{"zstd", "zstd:9", "lz4:1", "none", "", "gzip", "zstd:99"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCodec(s)
		if err != nil {
			return
		}
		if again, err := ParseCodec(string(c)); err != nil || again != c {
			t.Fatalf("ParseCodec(%q) = %q, which reads back as %q, %v", s, c, again, err)
		}
	})
}

// TestWriteFuzzSeeds writes the seed corpora of the fuzz targets above
// from frames and segments the encoder really makes.
func TestWriteFuzzSeeds(t *testing.T) {
	fuzzseed.Writing(t)
	// A few records, small so that mutations of them are quick to try,
	// with every kind of field: headers, a null key, empty and null values.
	recs := []Record{
		{Offset: 10, Timestamp: 1_700_000_000_000, Key: []byte("k1"), Value: []byte(`{"n":1}`),
			Headers: []Header{{Key: "trace", Value: []byte("abc")}, {Key: "empty", Value: []byte{}}}},
		{Offset: 11, Timestamp: 1_700_000_000_005, Key: nil, Value: []byte("v")},
		{Offset: 13, Timestamp: 1_699_999_999_000, TimestampType: LogAppendTime, Key: []byte("k3"), Value: []byte{},
			Headers: []Header{{Key: "null", Value: nil}}},
		{Offset: 14, Timestamp: 1_700_000_000_010, Key: []byte("k4"), Value: nil},
	}
	rec, _ := build(t, nil, recs)
	defer rec.Release()
	segment := append([]byte(nil), SchemaFrame()...)
	for _, c := range []Codec{None, Zstd, LZ4} {
		frame, err := NewEncoder(c).Encode(rec, nil)
		if err != nil {
			t.Fatal(err)
		}
		fuzzseed.Write(t, "FuzzFrame", string(c), frame)
		segment = append(segment, frame...)
	}
	segment = append(segment, EndOfStream...)
	fuzzseed.Write(t, "FuzzStream", "segment", segment)
	fuzzseed.Write(t, "FuzzStream", "no-end-of-stream", segment[:len(segment)-len(EndOfStream)])
	fuzzseed.Write(t, "FuzzSchemaFrame", "schema", SchemaFrame())
}
