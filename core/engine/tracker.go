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
	// outstanding counts the output batches the sink has not acked yet; -1
	// until the transforms have said how many there are.
	outstanding int
	done        bool
}

// tracker turns sink acks (per output batch) into source positions that are
// safe to persist: a partition's position moves past a source batch only
// when that batch and every earlier batch of the partition are durable.
type tracker struct {
	mu        sync.Mutex
	bySeq     map[uint64]*entry
	queues    map[topicPartition][]*entry
	positions map[topicPartition]int64
	dirty     bool
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
func (t *tracker) register(seq uint64, topic string, partition int32, next int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := &entry{tp: topicPartition{topic, partition}, next: next, outstanding: -1}
	t.bySeq[seq] = e
	t.queues[e.tp] = append(t.queues[e.tp], e)
}

// expect says how many output batches the source batch seq became. It is
// called before any of them reaches the sink, so no ack can precede it.
func (t *tracker) expect(seq uint64, n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.bySeq[seq]
	e.outstanding = n
	if n == 0 {
		t.complete(seq, e)
	}
}

// ack records that the sink made one output batch of seq durable.
func (t *tracker) ack(seq uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.bySeq[seq]
	if !ok {
		return fmt.Errorf("sink acknowledged batch %d, which is not in flight", seq)
	}
	e.outstanding--
	if e.outstanding == 0 {
		t.complete(seq, e)
	}
	return nil
}

func (t *tracker) complete(seq uint64, e *entry) {
	delete(t.bySeq, seq)
	e.done = true
	q := t.queues[e.tp]
	for len(q) > 0 && q[0].done {
		t.positions[e.tp] = q[0].next
		t.dirty = true
		q = q[1:]
	}
	t.queues[e.tp] = q
}

// pending is the number of source batches not yet durable.
func (t *tracker) pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.bySeq)
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
