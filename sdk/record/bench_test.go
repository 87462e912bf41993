package record

import (
	"fmt"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// BenchmarkBuildEncode measures what a source does per batch: append 2,000
// records of a 16-byte key, a 1 KiB value and one header, then encode the
// batch as IPC bytes.
func BenchmarkBuildEncode(b *testing.B) {
	b.Run("go", func(b *testing.B) { benchBuildEncode(b, nil) })
	b.Run("pool", func(b *testing.B) { benchBuildEncode(b, NewPool()) })
}

func benchBuildEncode(b *testing.B, mem memory.Allocator) {
	const n = 2000
	keys := make([][]byte, n)
	value := make([]byte, 1024)
	for i := range value {
		value[i] = byte(i * 7)
	}
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key-%012d", i)
	}
	hv := []byte("0123456789abcdef")
	bld := NewBuilder(mem)
	defer bld.Release()
	b.SetBytes(int64(n * (16 + 1024 + 5 + 16)))
	b.ReportAllocs()
	for b.Loop() {
		bld.Reserve(Sizes{Records: n, KeyBytes: n * 16, ValueBytes: n * 1024, Headers: n, HeaderKeyBytes: n * 5, HeaderValueBytes: n * 16})
		for i := range n {
			bld.AppendFields(int64(i), int64(i), CreateTime, keys[i], value)
			bld.AppendHeader("trace", hv)
		}
		rec := bld.NewRecord()
		if _, err := Encode(rec); err != nil {
			b.Fatal(err)
		}
		rec.Release()
	}
}
