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

func mustAck(t *testing.T, tr *tracker, seq uint64) {
	t.Helper()
	if err := tr.ack(seq); err != nil {
		t.Fatalf("ack(%d): %v", seq, err)
	}
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
	tr.register(1, "t", 0, 10)
	tr.register(2, "t", 0, 20)
	tr.register(3, "t", 0, 30)
	for seq := uint64(1); seq <= 3; seq++ {
		tr.expect(seq, 1)
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
	tr.register(1, "t", 0, 10)
	tr.register(2, "t", 0, 20)
	tr.register(3, "t", 0, 30)
	tr.register(4, "t", 0, 40)
	tr.expect(1, 2)
	tr.expect(2, 1)
	tr.expect(3, 2)
	tr.expect(4, 1)

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
	tr.register(1, "t", 0, 10)
	tr.register(2, "t", 1, 100)
	tr.register(3, "u", 0, 7)
	tr.register(4, "t", 0, 20)
	for seq := uint64(1); seq <= 4; seq++ {
		tr.expect(seq, 1)
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
	tr.register(1, "t", 0, 10)
	tr.expect(1, 0) // every record filtered out
	snap(t, tr, "t/0@10", true)
	if tr.pending() != 0 {
		t.Errorf("pending = %d, want 0", tr.pending())
	}
	if err := tr.ack(1); err == nil {
		t.Errorf("ack of a batch that had no outputs succeeded")
	}

	// A zero-output batch behind an unfinished one waits for it.
	tr.register(2, "t", 0, 20)
	tr.register(3, "t", 0, 30)
	tr.expect(2, 1)
	tr.expect(3, 0)
	snap(t, tr, "t/0@10", false)
	mustAck(t, tr, 2)
	snap(t, tr, "t/0@30", true)
}

func TestTrackerThreeOutputs(t *testing.T) {
	tr := newTracker(nil)
	tr.register(9, "t", 2, 50)
	tr.expect(9, 3)
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
	if err := tr.ack(9); err == nil || err.Error() != "sink acknowledged batch 9, which is not in flight" {
		t.Errorf("fourth ack = %v", err)
	}
}

func TestTrackerUnknownSeq(t *testing.T) {
	tr := newTracker(nil)
	err := tr.ack(42)
	if want := "sink acknowledged batch 42, which is not in flight"; err == nil || err.Error() != want {
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
			tr.register(seq, "t", int32(p), int64((b+1)*10))
			tr.expect(seq, outs)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, outs)
	for range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := seq; s >= 1; s-- { // newest first: worst order
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
