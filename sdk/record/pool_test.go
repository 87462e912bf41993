package record

import (
	"fmt"
	"testing"
)

// TestPoolReuseAcrossBatches is a source's and a sink's life: one builder
// and one pool, batch after batch of different sizes, each encoded, decoded
// from the same pool, checked and released.
func TestPoolReuseAcrossBatches(t *testing.T) {
	pool := NewPool()
	bld := NewBuilder(pool)
	for round := range 50 {
		n := 100 + round*37
		var want []Record
		for i := range n {
			r := Record{Offset: int64(i), Timestamp: int64(round*1000 + i), Key: fmt.Appendf(nil, "k%d-%d", round, i), Value: fmt.Appendf(nil, "value-%d-%d-%s", round, i, make([]byte, i%50))}
			if i%7 == 0 {
				r.Headers = []Header{{Key: "h", Value: []byte("x")}}
			}
			want = append(want, r)
		}
		var sz Sizes
		for _, r := range want {
			sz.Records++
			sz.KeyBytes += len(r.Key)
			sz.ValueBytes += len(r.Value)
		}
		bld.Reserve(sz)
		for i := range want {
			bld.Append(&want[i])
		}
		rec := bld.NewRecord()
		data, err := Encode(rec)
		rec.Release()
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeWith(data, pool)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		v, _ := NewView(got)
		checkView(t, fmt.Sprintf("round %d", round), v, want)
		got.Release()
	}
}

// TestPoolKeepsNoMoreThanItsLimit: buffers freed beyond the limit go to the
// garbage collector, so a pool never holds more idle memory than allowed.
func TestPoolKeepsNoMoreThanItsLimit(t *testing.T) {
	p := NewPoolWithLimit(1 << 20)
	var bufs [][]byte
	for range 10 {
		bufs = append(bufs, p.Allocate(256<<10))
	}
	for _, b := range bufs {
		p.Free(b)
	}
	if got := p.Kept(); got != 1<<20 {
		t.Fatalf("pool keeps %d bytes after freeing 2.5 MiB with a 1 MiB limit, want exactly 1048576", got)
	}
	for range 4 {
		p.Allocate(256 << 10)
	}
	if got := p.Kept(); got != 0 {
		t.Fatalf("pool keeps %d bytes after handing its four buffers out again, want 0", got)
	}
}
