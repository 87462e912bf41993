package storage

import (
	"testing"
	"time"
)

// TestRunStateSkipsARunThatDidNotStart: a run that fenced the one before
// it and then failed to start leaves its lease released as not started;
// the backup's state is that of the run before, its runs count both.
func TestRunStateSkipsARunThatDidNotStart(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	leases := map[int64]Lease{
		1: {Epoch: 1, Since: t0, Renewed: t0.Add(time.Minute), Released: true, Outcome: OutcomeComplete},
		2: {Epoch: 2, Since: t0.Add(time.Hour), Renewed: t0.Add(time.Hour), Released: true, Outcome: OutcomeNotStarted},
	}
	rs := runState(leases, func(int) bool { return false })
	if rs.State != StateComplete || rs.Runs != 2 || !rs.Started.Equal(t0) {
		t.Fatalf("state %+v, want complete, 2 runs, started %v", rs, t0)
	}
}
