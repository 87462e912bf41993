package record_test

import (
	"io"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/kpipe/kpipe/internal/testkit"
)

// BenchmarkZstdLevel compresses 2,000 JSON-event values of 1 KiB (what the
// backup benchmark moves) as one buffer at zstd's fastest and default
// levels: the choice behind the zstd codec.
func BenchmarkZstdLevel(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	var values []byte
	for range 2000 {
		values = testkit.AppendEvents(values, rng, 1024)
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
