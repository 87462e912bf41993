package record

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// mixedRecords holds fidelity records and records whose values either
// compress well or not at all, so frames carry both compressed buffers and
// buffers stored as is.
func mixedRecords() []Record {
	recs := fidelityRecords()
	rng := rand.New(rand.NewPCG(7, 9))
	for i := range 300 {
		v := bytes.Repeat([]byte(fmt.Sprintf(`{"n":%d}`, i%7)), 40)
		if i%3 == 0 {
			v = make([]byte, 200)
			for j := range v {
				v[j] = byte(rng.Uint32())
			}
		}
		recs = append(recs, Record{Offset: int64(1000 + i), Timestamp: int64(5_000 - i), Key: []byte(fmt.Sprint(i)), Value: v,
			Headers: []Header{{Key: "h", Value: []byte{byte(i)}}}})
	}
	return recs
}

func TestFramesRoundTripInEveryCodec(t *testing.T) {
	want := mixedRecords()
	for _, codec := range []Codec{None, Zstd, LZ4} {
		t.Run(string(codec), func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			rec, bounds := build(t, mem, want)
			frame, err := NewEncoder(codec).Encode(rec, nil)
			rec.Release()
			if err != nil {
				t.Fatal(err)
			}
			info, err := Inspect(frame)
			if err != nil {
				t.Fatal(err)
			}
			if info.Rows != int64(len(want)) || info.Codec != codec {
				t.Fatalf("Inspect = %+v, want %d rows in %s", info, len(want), codec)
			}
			plain, err := NewEncoder(None).Recompress(frame, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, body, _ := frameParts(plain); int64(len(body)) != info.Size {
				t.Errorf("Inspect says %d bytes decompressed, the uncompressed frame's body has %d", info.Size, len(body))
			}
			if codec != None && len(frame) >= len(plain) {
				t.Errorf("%s frame is %d bytes, uncompressed %d: nothing was compressed", codec, len(frame), len(plain))
			}
			got, err := FrameBounds(frame)
			if err != nil {
				t.Fatal(err)
			}
			if got != bounds {
				t.Errorf("FrameBounds = %+v, want %+v", got, bounds)
			}

			pool := dirtyPool()
			d := NewDecoder(pool)
			defer d.Close()
			for range 3 { // the same Decoder, batch after batch
				dec, err := d.Decode(frame)
				if err != nil {
					t.Fatal(err)
				}
				v, err := NewView(dec)
				if err != nil {
					t.Fatal(err)
				}
				checkView(t, "decoded", v, want)
				dec.Release()
			}

			// Every other codec, through Recompress, decodes the same.
			for _, to := range []Codec{None, Zstd, LZ4} {
				other, err := NewEncoder(to).Recompress(frame, nil)
				if err != nil {
					t.Fatalf("recompress %s → %s: %v", codec, to, err)
				}
				if to == codec && !bytes.Equal(other, frame) {
					t.Errorf("recompressing into the same codec changed the frame")
				}
				v, err := DecodeView(other)
				if err != nil {
					t.Fatalf("decode %s → %s: %v", codec, to, err)
				}
				checkView(t, string(codec)+"→"+string(to), v, want)
				v.Batch.Release()
			}
			mem.AssertSize(t, 0)
		})
	}
}

// TestEncodeIsTheArrowEncoding pins down that an uncompressed frame is the
// record batch message arrow-go itself writes.
func TestEncodeIsTheArrowEncoding(t *testing.T) {
	rec, _ := build(t, nil, fidelityRecords())
	defer rec.Release()
	frame, err := EncodeRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	var stream bytes.Buffer
	if err := writeArrowStream(&stream, rec); err != nil {
		t.Fatal(err)
	}
	want := stream.Bytes()[len(SchemaFrame()) : stream.Len()-len(EndOfStream)]
	if !bytes.Equal(frame, want) {
		t.Fatalf("frame (%d bytes) differs from arrow-go's record batch message (%d bytes)", len(frame), len(want))
	}
}

func TestDamagedFramesAreErrorsNotPanics(t *testing.T) {
	rec, _ := build(t, nil, mixedRecords())
	frame, err := NewEncoder(Zstd).Encode(rec, nil)
	rec.Release()
	if err != nil {
		t.Fatal(err)
	}
	meta, body, _ := frameParts(frame)
	m, _ := parseBatch(frame)
	valueData := m.spans[11] // compressed value bytes
	cases := map[string]func([]byte) []byte{
		"empty":           func([]byte) []byte { return nil },
		"cut in the body": func(f []byte) []byte { return f[:len(f)-len(body)/2] },
		"cut in the meta": func(f []byte) []byte { return f[:8+len(meta)/2] },
		"bad continuation": func(f []byte) []byte {
			f[0] = 0
			return f
		},
		"meta length beyond the frame": func(f []byte) []byte {
			binary.LittleEndian.PutUint32(f[4:], uint32(len(f)))
			return f
		},
		"decompressed size far beyond": func(f []byte) []byte {
			binary.LittleEndian.PutUint64(f[len(f)-len(body)+int(valueData.off):], 1<<40)
			return f
		},
		"flipped compressed byte": func(f []byte) []byte {
			f[len(f)-len(body)+int(valueData.off+valueData.len/2)] ^= 0xFF
			return f
		},
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			bad := damage(bytes.Clone(frame))
			if _, err := Decode(bad); err == nil || !strings.HasPrefix(err.Error(), "decode record batch: ") {
				t.Errorf("Decode: %v, want an error", err)
			}
		})
	}
}

func TestParseCodec(t *testing.T) {
	for in, want := range map[string]Codec{"": None, "none": None, "zstd": Zstd, "lz4": LZ4} {
		if got, err := ParseCodec(in); err != nil || got != want {
			t.Errorf("ParseCodec(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseCodec("gzip"); err == nil || err.Error() != `unknown compression "gzip": use zstd, lz4 or none` {
		t.Errorf("ParseCodec(gzip) = %v", err)
	}
}

// writeArrowStream writes rec as an uncompressed Arrow IPC stream with
// arrow-go's own writer.
func writeArrowStream(w *bytes.Buffer, rec arrow.RecordBatch) error {
	iw := ipc.NewWriter(w, ipc.WithSchema(Schema))
	if err := iw.Write(rec); err != nil {
		return err
	}
	return iw.Close()
}
