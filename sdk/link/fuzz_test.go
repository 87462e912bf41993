package link

import (
	"bytes"
	"io"
	"testing"

	"github.com/kpipe/kpipe/internal/fuzzseed"
)

// fuzzHeap allocates what a frame header asks for up to 1 MiB and skips
// the input past that: a frame up to MaxFrameBytes is allocated as
// declared, by design, and exploring such sizes would only slow the search.
type fuzzHeap struct{ t *testing.T }

func (h fuzzHeap) Allocate(n int) []byte {
	if n > 1<<20 {
		h.t.Skip("a frame over 1 MiB")
	}
	return make([]byte, n)
}
func (fuzzHeap) Free([]byte) {}

// FuzzReader reads the frames a plugin receives from the host over a data
// link: whatever the bytes, frames come out whole, in the bounds their
// headers give, or an error.
func FuzzReader(f *testing.F) {
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := NewReader(bytes.NewReader(stream), fuzzHeap{t})
		var total int64
		for {
			fr, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return
			}
			total += HeaderLen + int64(len(fr.Data))
			r.Free(fr)
		}
		if total != int64(len(stream)) || r.Bytes != total {
			t.Fatalf("read %d bytes of frames (counted %d) from a stream of %d", total, r.Bytes, len(stream))
		}
	})
}

// TestWriteFuzzSeeds writes a stream of frames as a Writer sends them.
func TestWriteFuzzSeeds(t *testing.T) {
	fuzzseed.Writing(t)
	var b bytes.Buffer
	w := NewWriter(&b)
	for i, data := range [][]byte{[]byte("first frame"), {}, bytes.Repeat([]byte{7}, 300)} {
		if err := w.Write(ID{Seq: uint64(i + 1), Part: uint32(i % 2)}, data); err != nil {
			t.Fatal(err)
		}
	}
	fuzzseed.Write(t, "FuzzReader", "three-frames", b.Bytes())
}
