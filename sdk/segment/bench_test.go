package segment

import (
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/kpipe/kpipe/internal/testkit"
	"github.com/kpipe/kpipe/sdk/record"
)

// eventBatch is what the backup benchmark moves: 2,000 records of a 16-byte
// key, a 1 KiB JSON-events value and one header.
func eventBatch(b *testing.B) ([]record.Record, int64) {
	rng := rand.New(rand.NewPCG(1, 2))
	recs := make([]record.Record, 2000)
	var payload int64
	for i := range recs {
		recs[i] = record.Record{Offset: int64(i), Timestamp: int64(i), Key: fmt.Appendf(nil, "key-%012d", i),
			Value:   testkit.AppendEvents(nil, rng, 1024),
			Headers: []record.Header{{Key: "trace", Value: testkit.AppendHex(nil, rng, 16)}}}
		payload += 16 + 1024 + 5 + 16
	}
	return recs, payload
}

// BenchmarkWrite writes the event batch into segments with each codec (the
// fs sink's work per batch, fsync aside) and reports size/payload.
func BenchmarkWrite(b *testing.B) {
	recs, payload := eventBatch(b)
	for _, c := range []string{Zstd, LZ4, None} {
		b.Run(c, func(b *testing.B) {
			rec, bounds := batchOf(b, recs)
			defer rec.Release()
			dir := b.TempDir()
			b.SetBytes(payload)
			var size int64
			for b.Loop() {
				w, err := NewWriter(dir, c)
				if err != nil {
					b.Fatal(err)
				}
				if err := w.Write(rec, bounds, int64(len(recs))); err != nil {
					b.Fatal(err)
				}
				size = w.Size()
				w.Abort()
			}
			b.ReportMetric(float64(size)/float64(payload), "size/payload")
		})
	}
}

// BenchmarkZstdLevel compresses the event values as one buffer at zstd's
// fastest and default levels: the choice behind the segment codec.
func BenchmarkZstdLevel(b *testing.B) {
	recs, _ := eventBatch(b)
	var values []byte
	for _, r := range recs {
		values = append(values, r.Value...)
	}
	for _, lvl := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault} {
		b.Run(lvl.String(), func(b *testing.B) {
			enc, err := zstd.NewWriter(io.Discard, zstd.WithEncoderLevel(lvl))
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(values)))
			var out []byte
			for b.Loop() {
				out = enc.EncodeAll(values, out[:0])
			}
			b.ReportMetric(float64(len(out))/float64(len(values)), "size/input")
		})
	}
}
