package record

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
