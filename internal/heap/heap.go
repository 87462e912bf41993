// Package heap measures what a call allocates, for the tests that bound
// what a damaged or hostile input may cost.
package heap

import "runtime"

// Allocated is how many bytes f allocates on the heap: an upper bound of
// how much it adds to the process's peak.
func Allocated(f func()) uint64 {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
