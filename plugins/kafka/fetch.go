package main

import (
	"math"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/sdk/record"
)

// Fetches are sized in decompressed bytes. Brokers limit a fetch in the
// bytes they send, compressed; a fetch of very compressible data can swell
// tens of times when decompressed. So the source watches how much each
// fetched batch grew, and asks for no more compressed bytes than fit its
// budget at the largest growth seen lately.
const (
	minFetchWire = 16 << 10
	maxFetchWire = 64 << 20
	// startRatio is the growth assumed before any batch is seen: cautious,
	// so that the first fetch stays small even for repetitive data.
	startRatio = 32
)

// partitionShare is the most one partition may bring to a fetch: a quarter
// of it, so that batches stay small and the work spreads over partitions.
func partitionShare(wire int32) int32 { return max(wire/4, minFetchWire) }

// fetchSizer is a franz-go hook that tracks the growth of fetched batches
// and the fetch size that follows from it.
type fetchSizer struct {
	// budget is the decompressed bytes one fetch may bring: an eighth of
	// the in-flight budget. The client holds about two fetches at once (one
	// being read, one buffered), and the records copied out of them travel
	// on under the in-flight budget.
	budget int64
	ratio  float64 // used by resize only
	// seen is the largest growth since the last resize (float64 bits).
	seen    atomic.Uint64
	current atomic.Int32  // the wire limit in effect
	expect  atomic.Uint64 // growth to expect of the next batch (float64 bits)
}

func newFetchSizer(inFlight int64) *fetchSizer {
	f := &fetchSizer{budget: max(inFlight/4, 1<<20), ratio: startRatio}
	f.current.Store(f.limit())
	f.expect.Store(math.Float64bits(2))
	return f
}

// limit is the wire limit for the current ratio.
func (f *fetchSizer) limit() int32 {
	return int32(min(max(float64(f.budget)/f.ratio, minFetchWire), maxFetchWire))
}

// growth is the decompressed/compressed ratio to expect of a batch.
func (f *fetchSizer) growth() float64 { return math.Float64frombits(f.expect.Load()) }

// wire is the wire limit in effect.
func (f *fetchSizer) wire() int32 { return f.current.Load() }

// OnFetchBatchRead implements kgo.HookFetchBatchRead.
func (f *fetchSizer) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	if m.CompressedBytes <= 0 {
		return
	}
	r := float64(m.UncompressedBytes) / float64(m.CompressedBytes)
	f.expect.Store(math.Float64bits(r))
	for {
		old := f.seen.Load()
		if r <= math.Float64frombits(old) || f.seen.CompareAndSwap(old, math.Float64bits(r)) {
			return
		}
	}
}

// resize takes the growth seen since the last call: the ratio rises at once
// to a larger growth and halves towards a smaller one. It returns the new
// wire limit and whether it changed enough to apply.
func (f *fetchSizer) resize() (int32, bool) {
	seen := math.Float64frombits(f.seen.Swap(0))
	if seen == 0 {
		return f.wire(), false
	}
	f.ratio = max(seen, f.ratio/2, 1)
	next := f.limit()
	cur := f.wire()
	if math.Abs(float64(next-cur)) < 0.1*float64(cur) {
		return cur, false
	}
	f.current.Store(next)
	return next, true
}

// fetchPools lends franz-go the memory it decompresses fetched batches into
// and the records it decodes them into; the source recycles both once it has
// copied the records into an Arrow batch.
type fetchPools struct {
	mem   *record.Pool
	sizer *fetchSizer
	recs  sync.Pool
}

func newFetchPools(mem *record.Pool, sizer *fetchSizer) *fetchPools {
	return &fetchPools{mem: mem, sizer: sizer}
}

// GetDecompressBytes implements kgo.PoolDecompressBytes: a buffer the size
// the batch will likely have, from the growth seen lately.
func (p *fetchPools) GetDecompressBytes(compressed []byte, _ kgo.CompressionCodecType) []byte {
	return p.mem.Allocate(int(float64(len(compressed)) * p.sizer.growth() * 1.25))[:0]
}

// PutDecompressBytes implements kgo.PoolDecompressBytes.
func (p *fetchPools) PutDecompressBytes(b []byte) { p.mem.Free(b) }

// GetRecords implements kgo.PoolRecords.
func (p *fetchPools) GetRecords(n int) []kgo.Record {
	if v, ok := p.recs.Get().(*[]kgo.Record); ok && cap(*v) >= n {
		return (*v)[:n]
	}
	return make([]kgo.Record, n)
}

// PutRecords implements kgo.PoolRecords.
func (p *fetchPools) PutRecords(rs []kgo.Record) { p.recs.Put(&rs) }
