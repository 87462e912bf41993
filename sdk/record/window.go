package record

import (
	"fmt"
	"time"
)

// Window is a time window over record timestamps: Start <= t <= End, both
// bounds inclusive, in epoch milliseconds; a negative bound leaves its side
// open. It is the one place where that rule is written.
type Window struct {
	Start, End int64
}

// Bounded reports whether the window has a bound at all.
func (w Window) Bounded() bool { return w.Start >= 0 || w.End >= 0 }

// Contains reports whether a record with timestamp ts lies in the window.
func (w Window) Contains(ts int64) bool {
	return (w.Start < 0 || ts >= w.Start) && (w.End < 0 || ts <= w.End)
}

// Overlaps reports whether records with timestamps from min to max may lie
// in the window (some of them, at least).
func (w Window) Overlaps(min, max int64) bool {
	return (w.Start < 0 || max >= w.Start) && (w.End < 0 || min <= w.End)
}

// Covers reports whether every record with a timestamp from min to max lies
// in the window.
func (w Window) Covers(min, max int64) bool { return w.Contains(min) && w.Contains(max) }

// String describes the window as its bounds in UTC with their epoch
// milliseconds, such as "2024-11-10T10:00:00Z (1731236400000) to the end".
func (w Window) String() string {
	bound := func(ms int64, open string) string {
		if ms < 0 {
			return open
		}
		return Instant(ms)
	}
	return bound(w.Start, "the start") + " to " + bound(w.End, "the end")
}

// Widen returns the window grown to hold timestamps min to max; an open
// side of w counts as empty, so that Window{-1, -1} grows from nothing.
func (w Window) Widen(min, max int64) Window {
	if w.Start < 0 || min < w.Start {
		w.Start = min
	}
	if w.End < 0 || max > w.End {
		w.End = max
	}
	return w
}

// Instant shows a timestamp as its time in UTC and its epoch milliseconds,
// such as "2024-11-10T10:00:00Z (1731236400000)".
func Instant(ms int64) string {
	return fmt.Sprintf("%s (%d)", time.UnixMilli(ms).UTC().Format(time.RFC3339Nano), ms)
}
