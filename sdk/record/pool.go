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
// costs more CPU than the copying itself). Buffers come in size classes of
// four steps per power of two, 64-byte aligned; a request is served by a
// free buffer of its class or of one up to twice as large. Buffers are not
// zeroed on reuse: Arrow's builders initialize every byte they hand out. A
// Pool keeps at most its limit of free bytes; what is freed beyond it goes
// back to the Go heap. Safe for concurrent use.
type Pool struct {
	mu    sync.Mutex
	free  [numClasses][][]byte
	kept  int64 // bytes in free
	limit int64
}

const (
	minShift   = 6  // 64 bytes, the smallest class
	maxShift   = 28 // 256 MiB; larger buffers are not recycled
	steps      = 4  // classes per power of two
	numClasses = (maxShift-minShift)*steps + 1
	align      = 64
	// DefaultPoolLimit is the most free bytes a Pool keeps unless told
	// otherwise.
	DefaultPoolLimit = 32 << 20
)

// class returns the index and size of the smallest class that holds size
// bytes; ok is false above the largest class.
func class(size int) (idx, classSize int, ok bool) {
	if size <= 1<<minShift {
		return 0, 1 << minShift, true
	}
	e := bits.Len(uint(size - 1)) // 2^(e-1) < size <= 2^e
	if e > maxShift {
		return 0, 0, false
	}
	step := 1 << (e - 1) / steps
	k := (size - 1<<(e-1) + step - 1) / step // 1..steps
	return (e-1-minShift)*steps + k, 1<<(e-1) + k*step, true
}

// NewPool returns an empty Pool that keeps up to DefaultPoolLimit free
// bytes.
func NewPool() *Pool { return &Pool{limit: DefaultPoolLimit} }

// NewPoolWithLimit returns an empty Pool that keeps up to limit free bytes.
func NewPoolWithLimit(limit int64) *Pool { return &Pool{limit: limit} }

var _ memory.Allocator = (*Pool)(nil)

func alignedMake(n int) []byte {
	buf := make([]byte, n+align)
	shift := (align - int(uintptr(unsafe.Pointer(unsafe.SliceData(buf))))%align) % align
	return buf[shift : shift+n : shift+n]
}

// Allocate returns a buffer of size bytes.
func (p *Pool) Allocate(size int) []byte {
	c, n, ok := class(size)
	if !ok {
		return alignedMake(size)
	}
	p.mu.Lock()
	// A free buffer up to twice the size serves too: batches vary in size,
	// and a pool that only matched exact classes would fill up with the
	// classes nobody asks for just now.
	for k := c; k < min(c+steps+1, numClasses); k++ {
		if l := p.free[k]; len(l) > 0 {
			b := l[len(l)-1]
			p.free[k] = l[:len(l)-1]
			p.kept -= int64(cap(b))
			p.mu.Unlock()
			return b[:size]
		}
	}
	p.mu.Unlock()
	return alignedMake(n)[:size]
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
	c, n, ok := class(cap(b))
	if !ok || n != cap(b) || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%align != 0 {
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

// SetLimit changes the most free bytes the pool keeps; what it holds beyond
// goes to the garbage collector.
func (p *Pool) SetLimit(limit int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.limit = limit
	for c := numClasses - 1; c >= 0 && p.kept > p.limit; c-- {
		for len(p.free[c]) > 0 && p.kept > p.limit {
			p.kept -= int64(cap(p.free[c][len(p.free[c])-1]))
			p.free[c] = p.free[c][:len(p.free[c])-1]
		}
	}
}

// Kept is the number of free bytes the pool holds.
func (p *Pool) Kept() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.kept
}
