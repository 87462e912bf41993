package record

import (
	"math/bits"
	"sync"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Pool is an Arrow allocator that recycles buffers: a source building batch
// after batch, or a sink decoding them, reuses the same few megabytes
// instead of asking the Go heap for fresh zeroed memory each time (which
// costs more CPU than the copying itself). Buffers come in power-of-two
// sizes, 64-byte aligned, and are not zeroed on reuse: Arrow's builders
// initialize every byte they hand out. A Pool keeps at most its limit of
// free bytes; what is freed beyond it goes back to the Go heap. Safe for
// concurrent use.
type Pool struct {
	mu    sync.Mutex
	free  [maxClass + 1][][]byte
	kept  int64 // bytes in free
	limit int64
}

const (
	minClass = 6  // 64 bytes
	maxClass = 28 // 256 MiB; larger buffers are not recycled
	align    = 64
	// DefaultPoolLimit is the most free bytes a Pool keeps unless told
	// otherwise.
	DefaultPoolLimit = 32 << 20
)

// NewPool returns an empty Pool that keeps up to DefaultPoolLimit free
// bytes.
func NewPool() *Pool { return &Pool{limit: DefaultPoolLimit} }

// NewPoolWithLimit returns an empty Pool that keeps up to limit free bytes.
func NewPoolWithLimit(limit int64) *Pool { return &Pool{limit: limit} }

var _ memory.Allocator = (*Pool)(nil)

func class(size int) int {
	c := bits.Len(uint(size - 1))
	if size <= 1 || c < minClass {
		return minClass
	}
	return c
}

func alignedMake(n int) []byte {
	buf := make([]byte, n+align)
	shift := (align - int(uintptr(unsafe.Pointer(unsafe.SliceData(buf))))%align) % align
	return buf[shift : shift+n : shift+n]
}

// Allocate returns a buffer of size bytes.
func (p *Pool) Allocate(size int) []byte {
	c := class(size)
	if c > maxClass {
		return alignedMake(size)
	}
	p.mu.Lock()
	if l := p.free[c]; len(l) > 0 {
		b := l[len(l)-1]
		p.free[c] = l[:len(l)-1]
		p.kept -= int64(cap(b))
		p.mu.Unlock()
		return b[:size]
	}
	p.mu.Unlock()
	return alignedMake(1 << c)[:size]
}

// Reallocate grows b to size bytes, keeping its contents.
func (p *Pool) Reallocate(size int, b []byte) []byte {
	if cap(b) >= size {
		return b[:size]
	}
	nb := p.Allocate(size)
	copy(nb, b)
	p.Free(b)
	return nb
}

// Free returns b to the pool. b must not be used afterwards.
func (p *Pool) Free(b []byte) {
	if cap(b) < 1<<minClass {
		return // not one of ours
	}
	c := bits.Len(uint(cap(b))) - 1
	if cap(b) != 1<<c || c > maxClass || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%align != 0 {
		return // not one of ours (or too large to keep)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kept+int64(cap(b)) > p.limit {
		return // beyond the limit: the garbage collector takes it
	}
	p.kept += int64(cap(b))
	p.free[c] = append(p.free[c], b[:cap(b)])
}

// Kept is the number of free bytes the pool holds.
func (p *Pool) Kept() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.kept
}
