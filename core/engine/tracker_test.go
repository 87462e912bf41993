package engine

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/kpipe/kpipe/sdk"
)

// positions renders a snapshot sorted by topic and partition, e.g.
// "a/0@10 b/1@5", so that tests compare it exactly.
func positions(ps []sdk.Position) string {
	ss := make([]string, len(ps))
	for i, p := range ps {
		ss[i] = p.String()
	}
	sort.Strings(ss)
	return strings.Join(ss, " ")
}

func snap(t *testing.T, tr *tracker, wantPos string, wantChanged bool) {
	t.Helper()
	ps, changed := tr.snapshot()
	if got := positions(ps); got != wantPos {
		t.Errorf("positions = %q, want %q", got, wantPos)
	}
	if changed != wantChanged {
		t.Errorf("changed = %v, want %v", changed, wantChanged)
	}
}

// mustAck releases one output of seq and acknowledges it, as a sink does.
func mustAck(t *testing.T, tr *tracker, seq uint64) {
	t.Helper()
	if _, err := tr.release(seq); err != nil {
		t.Fatalf("release(%d): %v", seq, err)
	}
	if err := tr.ack(seq); err != nil {
		t.Fatalf("ack(%d): %v", seq, err)
	}
}

// reg registers a source batch of 100 bytes.
func reg(t *testing.T, tr *tracker, seq uint64, topic string, partition int32, next int64) {
	t.Helper()
	if err := tr.register(sdk.Envelope{Seq: seq, Topic: topic, Partition: partition, NextOffset: next, Size: 100}); err != nil {
		t.Fatal(err)
	}
}

func expand(t *testing.T, tr *tracker, seq uint64, k int) freed {
	t.Helper()
	f, err := tr.expand(seq, k)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestTrackerResumeIsInitialSnapshot(t *testing.T) {
	tr := newTracker([]sdk.Position{
		{Topic: "orders", Partition: 0, NextOffset: 100},
		{Topic: "orders", Partition: 1, NextOffset: 7},
		{Topic: "pay", Partition: 0, NextOffset: 0},
	})
	snap(t, tr, "orders/0@100 orders/1@7 pay/0@0", false)
	if tr.pending() != 0 {
		t.Errorf("pending = %d, want 0", tr.pending())
	}

	empty := newTracker(nil)
	ps, changed := empty.snapshot()
	if len(ps) != 0 || changed {
		t.Errorf("snapshot of a fresh tracker = %v, %v; want none, false", ps, changed)
	}
}

func TestTrackerContiguousPrefix(t *testing.T) {
	tr := newTracker([]sdk.Position{{Topic: "t", Partition: 0, NextOffset: 0}})
	// Three source batches of t/0, one output each.
	reg(t, tr, 1, "t", 0, 10)
	reg(t, tr, 2, "t", 0, 20)
	reg(t, tr, 3, "t", 0, 30)
	for seq := uint64(1); seq <= 3; seq++ {
		expand(t, tr, seq, 1)
	}
	if tr.pending() != 3 {
		t.Errorf("pending = %d, want 3", tr.pending())
	}

	// Batch 2 is durable first: nothing moves, batch 1 is still in flight.
	mustAck(t, tr, 2)
	snap(t, tr, "t/0@0", false)
	// Batch 3 too: still nothing.
	mustAck(t, tr, 3)
	snap(t, tr, "t/0@0", false)
	if tr.pending() != 1 {
		t.Errorf("pending = %d, want 1", tr.pending())
	}
	// Batch 1: the position jumps over all three.
	mustAck(t, tr, 1)
	snap(t, tr, "t/0@30", true)
	snap(t, tr, "t/0@30", false) // changed is reset by the snapshot
	if tr.pending() != 0 {
		t.Errorf("pending = %d, want 0", tr.pending())
	}
}

func TestTrackerOutOfOrderAcksAcrossBatches(t *testing.T) {
	tr := newTracker(nil)
	reg(t, tr, 1, "t", 0, 10)
	reg(t, tr, 2, "t", 0, 20)
	reg(t, tr, 3, "t", 0, 30)
	reg(t, tr, 4, "t", 0, 40)
	expand(t, tr, 1, 2)
	expand(t, tr, 2, 1)
	expand(t, tr, 3, 2)
	expand(t, tr, 4, 1)

	mustAck(t, tr, 3)
	mustAck(t, tr, 1) // 1 has one of two outputs durable
	mustAck(t, tr, 2)
	snap(t, tr, "", false)
	mustAck(t, tr, 1) // 1 and 2 done; 3 half done
	snap(t, tr, "t/0@20", true)
	mustAck(t, tr, 4)
	snap(t, tr, "t/0@20", false)
	mustAck(t, tr, 3) // 3 and 4 done
	snap(t, tr, "t/0@40", true)
}

func TestTrackerPartitionsAreIndependent(t *testing.T) {
	tr := newTracker([]sdk.Position{{Topic: "t", Partition: 0, NextOffset: 5}})
	reg(t, tr, 1, "t", 0, 10)
	reg(t, tr, 2, "t", 1, 100)
	reg(t, tr, 3, "u", 0, 7)
	reg(t, tr, 4, "t", 0, 20)
	for seq := uint64(1); seq <= 4; seq++ {
		expand(t, tr, seq, 1)
	}
	// t/0's first batch blocks t/0 only.
	mustAck(t, tr, 4)
	mustAck(t, tr, 2)
	snap(t, tr, "t/0@5 t/1@100", true)
	mustAck(t, tr, 3)
	snap(t, tr, "t/0@5 t/1@100 u/0@7", true)
	mustAck(t, tr, 1)
	snap(t, tr, "t/0@20 t/1@100 u/0@7", true)
}

func TestTrackerZeroOutputsCompletesAtOnce(t *testing.T) {
	tr := newTracker(nil)
	reg(t, tr, 1, "t", 0, 10)
	expand(t, tr, 1, 0) // every record filtered out
	snap(t, tr, "t/0@10", true)
	if tr.pending() != 0 {
		t.Errorf("pending = %d, want 0", tr.pending())
	}
	if err := tr.ack(1); err == nil || err.Error() != "the sink acknowledged batch 1, which is not in flight" {
		t.Errorf("ack of a batch that had no outputs: %v", err)
	}

	// A zero-output batch behind an unfinished one waits for it.
	reg(t, tr, 2, "t", 0, 20)
	reg(t, tr, 3, "t", 0, 30)
	expand(t, tr, 2, 1)
	expand(t, tr, 3, 0)
	snap(t, tr, "t/0@10", false)
	mustAck(t, tr, 2)
	snap(t, tr, "t/0@30", true)
}

func TestTrackerThreeOutputs(t *testing.T) {
	tr := newTracker(nil)
	reg(t, tr, 9, "t", 2, 50)
	expand(t, tr, 9, 3)
	mustAck(t, tr, 9)
	snap(t, tr, "", false)
	mustAck(t, tr, 9)
	snap(t, tr, "", false)
	if tr.pending() != 1 {
		t.Errorf("pending after 2 of 3 acks = %d, want 1", tr.pending())
	}
	mustAck(t, tr, 9)
	snap(t, tr, "t/2@50", true)
	if tr.pending() != 0 {
		t.Errorf("pending = %d, want 0", tr.pending())
	}
	// A fourth ack is for a batch no longer in flight.
	if err := tr.ack(9); err == nil || err.Error() != "the sink acknowledged batch 9, which is not in flight" {
		t.Errorf("fourth ack = %v", err)
	}
}

func TestTrackerUnknownSeq(t *testing.T) {
	tr := newTracker(nil)
	err := tr.ack(42)
	if want := "the sink acknowledged batch 42, which is not in flight"; err == nil || err.Error() != want {
		t.Errorf("ack(42) = %v, want %q", err, want)
	}
	snap(t, tr, "", false)
}

func TestTrackerConcurrentAcks(t *testing.T) {
	tr := newTracker(nil)
	const parts, batches, outs = 4, 50, 3
	seq := uint64(0)
	for b := range batches {
		for p := range parts {
			seq++
			reg(t, tr, seq, "t", int32(p), int64((b+1)*10))
			expand(t, tr, seq, outs)
		}
	}
	if batches, bytes := tr.peaks(); batches != parts*50 || bytes != parts*50*100 {
		t.Fatalf("peaks %d batches, %d bytes; want %d, %d", batches, bytes, parts*50, parts*50*100)
	}
	var wg sync.WaitGroup
	errs := make(chan error, outs)
	for range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := seq; s >= 1; s-- { // newest first: worst order
				if _, err := tr.release(s); err != nil {
					errs <- err
					return
				}
				if err := tr.ack(s); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want := make([]string, parts)
	for p := range parts {
		want[p] = fmt.Sprintf("t/%d@%d", p, batches*10)
	}
	snap(t, tr, strings.Join(want, " "), true)
	if tr.pending() != 0 {
		t.Errorf("pending = %d, want 0", tr.pending())
	}
}

// TestTrackerCreditReturnsWhenEveryOutputIsReleased: a batch split in two
// holds its credit until both parts are released, whatever the order of
// acks; a release frees credit before durability.
func TestTrackerCreditReturnsWhenEveryOutputIsReleased(t *testing.T) {
	tr := newTracker(nil)
	reg(t, tr, 1, "t", 0, 10)
	reg(t, tr, 2, "t", 0, 20)
	if f := expand(t, tr, 1, 2); f.ok {
		t.Fatal("a split batch freed its credit before any part was released")
	}
	if f, err := tr.release(1); err != nil || f.ok {
		t.Fatalf("first part released: %v, %v; want credit still held", f, err)
	}
	if f, err := tr.release(1); err != nil || !f.ok || f.size != 100 {
		t.Fatalf("second part released: %+v, %v; want the batch's 100 bytes back", f, err)
	}
	if batches, bytes := tr.peaks(); batches != 2 || bytes != 200 {
		t.Errorf("peaks %d, %d; want 2 batches, 200 bytes", batches, bytes)
	}
	snap(t, tr, "", false) // released is not durable
	if err := tr.ack(1); err != nil {
		t.Fatal(err)
	}
	if err := tr.ack(1); err != nil {
		t.Fatal(err)
	}
	snap(t, tr, "t/0@10", true)
	// A dropped batch frees its credit and completes at once.
	if f := expand(t, tr, 2, 0); !f.ok || f.size != 100 {
		t.Fatalf("dropped batch: %+v, want its credit back", f)
	}
	snap(t, tr, "t/0@20", true)
}

func TestTrackerRefusesProtocolErrors(t *testing.T) {
	tr := newTracker(nil)
	reg(t, tr, 5, "t", 0, 10)
	if err := tr.register(sdk.Envelope{Seq: 5}); err == nil || err.Error() != "the source sent batch 5 after batch 5: seqs must increase" {
		t.Errorf("repeated seq: %v", err)
	}
	if err := tr.ack(5); err == nil || err.Error() != "the sink acknowledged batch 5 before releasing it" {
		t.Errorf("ack before release: %v", err)
	}
	if _, err := tr.release(6); err == nil || err.Error() != "the sink released batch 6, which it does not hold" {
		t.Errorf("release of an unknown batch: %v", err)
	}
	if _, err := tr.expand(7, 1); err == nil || err.Error() != "a transform answered batch 7, which is not in flight" {
		t.Errorf("answer for an unknown batch: %v", err)
	}
}
