package zbench

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/klauspost/compress/zstd"
	"github.com/kpipe/kpipe/sdk/record"
)

var actions = []string{"view", "click", "add_to_cart", "remove_from_cart", "checkout", "login", "logout", "search"}

func events(rng *rand.Rand, size int) []byte {
	var buf []byte
	for len(buf) < size {
		buf = append(buf, `{"seq":`...)
		buf = strconv.AppendUint(buf, rng.Uint64N(1e9), 10)
		buf = append(buf, `,"user":"u-`...)
		buf = strconv.AppendUint(buf, 10000+rng.Uint64N(90000), 10)
		buf = append(buf, `","action":"`...)
		buf = append(buf, actions[rng.IntN(len(actions))]...)
		buf = append(buf, `","item":"sku-`...)
		buf = strconv.AppendUint(buf, rng.Uint64N(100000), 10)
		buf = append(buf, `","price":`...)
		buf = strconv.AppendFloat(buf, float64(rng.IntN(100000))/100, 'f', 2, 64)
		buf = append(buf, `,"session":"`...)
		var raw [8]byte
		for i := range raw { raw[i] = byte(rng.Uint32()) }
		buf = hex.AppendEncode(buf, raw[:])
		buf = append(buf, "\"}\n"...)
	}
	return buf[:size]
}

func batch(b *testing.B) ([]byte, *record.Builder) {
	rng := rand.New(rand.NewPCG(1, 2))
	bld := record.NewBuilder(nil)
	var all []byte
	for i := range 2000 {
		v := events(rng, 1024)
		all = append(all, v...)
		bld.AppendFields(int64(i), int64(i), 0, fmt.Appendf(nil, "key-%012d", i), v)
		bld.AppendHeader("trace", []byte("0123456789abcdef"))
	}
	return all, bld
}

func BenchmarkZstd(b *testing.B) {
	all, bld := batch(b)
	rec := bld.NewRecord()
	for _, lvl := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault} {
		b.Run("encodeall-"+lvl.String(), func(b *testing.B) {
			enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(lvl), zstd.WithEncoderConcurrency(1))
			b.SetBytes(int64(len(all)))
			var out []byte
			for b.Loop() {
				out = enc.EncodeAll(all, out[:0])
			}
			b.ReportMetric(float64(len(out))/float64(len(all)), "ratio")
		})
	}
	for name, opt := range map[string]ipc.Option{"arrow-zstd": ipc.WithZstd(), "arrow-lz4": ipc.WithLZ4()} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(all)))
			var buf bytes.Buffer
			for b.Loop() {
				buf.Reset()
				w, _ := ipc.NewFileWriter(&buf, ipc.WithSchema(rec.Schema()), opt)
				w.Write(rec)
				w.Close()
			}
			b.ReportMetric(float64(buf.Len())/float64(len(all)), "ratio")
		})
	}
}
