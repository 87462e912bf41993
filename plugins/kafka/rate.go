package main

import (
	"context"
	"time"
)

// pacer holds a rate: what it lets through in any span of time from its
// first use is at most rate per second times that span, with no burst
// (rate_limit_records_per_sec, rate_limit_bytes_per_sec). A nil pacer
// does not limit.
type pacer struct {
	rate float64 // per second
	now  func() time.Time
	// at is when what was let through so far is paid for.
	at time.Time
}

func newPacer(perSecond int64) *pacer {
	if perSecond <= 0 {
		return nil
	}
	return &pacer{rate: float64(perSecond), now: time.Now}
}

// wait lets n through once what came before it and n itself are paid
// for: the n-th unit since the first use goes no sooner than n/rate
// seconds after it.
func (p *pacer) wait(ctx context.Context, n int64) error {
	if p == nil || n <= 0 {
		return nil
	}
	now := p.now()
	if p.at.Before(now) {
		p.at = now // an idle spell earns nothing
	}
	p.at = p.at.Add(time.Duration(float64(n) / p.rate * float64(time.Second)))
	d := p.at.Sub(now)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
