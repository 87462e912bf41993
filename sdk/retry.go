package sdk

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Retries of a partition's retryable errors: at most partitionRetries in a
// row, the first after retryBackoff, each next one after twice as long, up
// to maxRetryBackoff.
const (
	partitionRetries = 5
	retryBackoff     = 100 * time.Millisecond
	maxRetryBackoff  = 5 * time.Second
)

// retrier handles the partition errors of a PartitionSource: it reports
// each to the host, resumes a partition held back after its backoff, and
// turns a partition that keeps failing into a fatal error.
type retrier struct {
	ctx context.Context
	src PartitionSource // nil: the source cannot go on after an error
	em  *emitter

	mu      sync.Mutex
	tries   map[string]int // partition → retryable errors in a row
	pending int            // resumes scheduled, not yet done
	done    int            // resumes done that Read has not been told of
	wake    chan struct{}  // a resume is done
}

func newRetrier(ctx context.Context, src Source, em *emitter) *retrier {
	ps, _ := src.(PartitionSource)
	return &retrier{ctx: ctx, src: ps, em: em, tries: map[string]int{}, wake: make(chan struct{}, 1)}
}

// handle takes a Read error; it returns true when the source reads on. It
// logs the partition's error through Log(ctx).
func (rt *retrier) handle(ctx context.Context, err error) bool {
	pe := asPartitionError(err)
	if rt.src == nil || pe == nil {
		return false
	}
	k := fmt.Sprintf("%s/%d", pe.Topic, pe.Partition)
	rt.mu.Lock()
	rt.tries[k]++
	n := rt.tries[k]
	retry := pe.Retryable && n <= partitionRetries
	if retry {
		rt.pending++
	}
	rt.mu.Unlock()
	if !retry && pe.Retryable {
		failed := *pe
		failed.Retryable = false
		failed.Err = fmt.Errorf("%w (still failing after %d retries)", pe.Err, partitionRetries)
		pe = &failed
	}
	if err := rt.em.send(Event{Error: pe}); err != nil {
		return false
	}
	log := Log(ctx).With("offset", pe.Offset, "code", pe.Code, "error", pe.Err)
	if retry {
		log.Info("partition error; retrying it", "retry", n, "of", partitionRetries, "in", backoff(n).String())
		go rt.resume(pe.Topic, pe.Partition, backoff(n))
	} else {
		log.Warn("partition failed; reading the others on")
	}
	return true
}

// backoff is the wait before the nth retry in a row (from 1).
func backoff(n int) time.Duration {
	d := retryBackoff << (n - 1)
	if d <= 0 || d > maxRetryBackoff {
		return maxRetryBackoff
	}
	return d
}

func (rt *retrier) resume(topic string, partition int32, after time.Duration) {
	t := time.NewTimer(after)
	defer t.Stop()
	select {
	case <-t.C:
		if err := rt.src.ResumePartition(rt.ctx, topic, partition); err != nil && rt.ctx.Err() == nil {
			rt.em.send(Event{Error: &PartitionError{Topic: topic, Partition: partition, Offset: -1,
				Err: fmt.Errorf("resume after a retryable error: %w", err)}})
		}
	case <-rt.ctx.Done():
	}
	rt.mu.Lock()
	rt.pending--
	rt.done++
	rt.mu.Unlock()
	select {
	case rt.wake <- struct{}{}:
	default:
	}
}

// waitResume is called when Read reports the end: it returns true once a
// held-back partition has been resumed (then Read may serve it), and false
// when none is held back.
func (rt *retrier) waitResume() bool {
	for {
		rt.mu.Lock()
		done, pending := rt.done, rt.pending
		rt.done = 0
		rt.mu.Unlock()
		if done > 0 {
			return true
		}
		if pending == 0 {
			return false
		}
		select {
		case <-rt.wake:
		case <-rt.ctx.Done():
			return false
		}
	}
}

// succeeded notes a batch of a partition: its errors in a row are over.
func (rt *retrier) succeeded(topic string, partition int32) {
	if rt.src == nil {
		return
	}
	rt.mu.Lock()
	if len(rt.tries) > 0 {
		delete(rt.tries, fmt.Sprintf("%s/%d", topic, partition))
	}
	rt.mu.Unlock()
}
