//go:build !linux

package lean

// Release does nothing outside Linux.
func Release() {}
