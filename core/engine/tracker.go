package engine

import (
	"fmt"
	"sync"

	"github.com/kpipe/kpipe/sdk"
)

type topicPartition struct {
	topic     string
	partition int32
}

// entry is one source batch on its way to durability.
type entry struct {
	tp   topicPartition
	next int64
	size int64
	// unacked counts the batch's outputs not yet durable, unreleased those
	// whose bytes a sink still holds. Both start at 1 (the batch itself);
	// a transform that turns one of them into k outputs adds k-1.
	unacked    int
	unreleased int
	done       bool
	// records counts the records of its outputs handed to the sink.
	records int64
}

// tracker follows source batches through transforms to the sink. Credit
// returns when every output of a batch is released; a partition's position
// moves past a batch only when it and every earlier batch of the partition
// are durable.
type tracker struct {
	mu        sync.Mutex
	bySeq     map[uint64]*entry
	queues    map[topicPartition][]*entry
	positions map[topicPartition]int64
	dirty     bool
	lastSeq   uint64

	inFlight, inFlightBytes       int64
	maxInFlight, maxInFlightBytes int64
	// durable counts the records of the batches the sink made durable
	// whole.
	durable int64
}

func newTracker(resume []sdk.Position) *tracker {
	t := &tracker{
		bySeq:     map[uint64]*entry{},
		queues:    map[topicPartition][]*entry{},
		positions: map[topicPartition]int64{},
	}
	for _, p := range resume {
		t.positions[topicPartition{p.Topic, p.Partition}] = p.NextOffset
	}
	return t
}

// register records a source batch before it enters the pipeline.
func (t *tracker) register(e sdk.Envelope) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.Seq <= t.lastSeq {
		return fmt.Errorf("the source sent batch %d after batch %d: seqs must increase", e.Seq, t.lastSeq)
	}
	t.lastSeq = e.Seq
	en := &entry{tp: topicPartition{e.Topic, e.Partition}, next: e.NextOffset, size: e.Size, unacked: 1, unreleased: 1}
	t.bySeq[e.Seq] = en
	t.queues[en.tp] = append(t.queues[en.tp], en)
	t.inFlight++
	t.inFlightBytes += e.Size
	t.maxInFlight = max(t.maxInFlight, t.inFlight)
	t.maxInFlightBytes = max(t.maxInFlightBytes, t.inFlightBytes)
	return nil
}

// freed is a source batch whose bytes no stage holds any more: its credit
// goes back to the source.
type freed struct {
	ok   bool
	size int64
}

// expand records that a transform made k outputs of one output of batch
// seq (0: it dropped it).
func (t *tracker) expand(seq uint64, k int) (freed, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.bySeq[seq]
	if !ok || e.unreleased <= 0 {
		return freed{}, fmt.Errorf("a transform answered batch %d, which is not in flight", seq)
	}
	e.unacked += k - 1
	e.unreleased += k - 1
	return t.settle(seq, e), nil
}

// release records that the sink holds the bytes of one output of seq no
// more.
func (t *tracker) release(seq uint64) (freed, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.bySeq[seq]
	if !ok || e.unreleased <= 0 {
		return freed{}, fmt.Errorf("the sink released batch %d, which it does not hold", seq)
	}
	e.unreleased--
	return t.settle(seq, e), nil
}

// ack records that the sink made one output of seq durable.
func (t *tracker) ack(seq uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.bySeq[seq]
	if !ok || e.unacked <= 0 {
		return fmt.Errorf("the sink acknowledged batch %d, which is not in flight", seq)
	}
	if e.unacked <= e.unreleased {
		return fmt.Errorf("the sink acknowledged batch %d before releasing it", seq)
	}
	e.unacked--
	t.settle(seq, e)
	return nil
}

// settle frees a batch's credit once nothing holds it, and completes it
// once durable. The caller holds t.mu.
func (t *tracker) settle(seq uint64, e *entry) freed {
	var f freed
	if e.unreleased == 0 && !e.done {
		// done marks the credit as returned; the entry stays until acked.
		e.done = true
		t.inFlight--
		t.inFlightBytes -= e.size
		f = freed{ok: true, size: e.size}
	}
	if e.unacked == 0 {
		t.durable += e.records
		delete(t.bySeq, seq)
		q := t.queues[e.tp]
		e.unacked = -1 // durable
		for len(q) > 0 && q[0].unacked == -1 {
			t.positions[e.tp] = q[0].next
			t.dirty = true
			q = q[1:]
		}
		t.queues[e.tp] = q
	}
	return f
}

// handed records that n records of an output of seq go to the sink.
func (t *tracker) handed(seq uint64, n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.bySeq[seq]; ok {
		e.records += n
	}
}

// durableRecords is how many records the sink has made durable.
func (t *tracker) durableRecords() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.durable
}

// pending is the number of source batches not yet durable.
func (t *tracker) pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.bySeq)
}

// current returns the batches and decompressed bytes in flight now.
func (t *tracker) current() (batches, bytes int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.inFlight, t.inFlightBytes
}

// peaks returns the most batches and decompressed bytes there were in
// flight at once.
func (t *tracker) peaks() (batches, bytes int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.maxInFlight, t.maxInFlightBytes
}

// snapshot returns the durable positions and whether they changed since the
// last snapshot.
func (t *tracker) snapshot() ([]sdk.Position, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ps := make([]sdk.Position, 0, len(t.positions))
	for tp, next := range t.positions {
		ps = append(ps, sdk.Position{Topic: tp.topic, Partition: tp.partition, NextOffset: next})
	}
	changed := t.dirty
	t.dirty = false
	return ps, changed
}
