//go:build linux

package bench

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// EvictCache writes back and drops from the page cache every regular file
// under dir, so that the next reader of them reads from storage (and
// /proc/PID/io read_bytes counts it). It touches only those files, not the
// whole cache of a shared machine.
func EvictCache(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		return EvictFile(path)
	})
}

// EvictFile writes back and drops one file from the page cache.
func EvictFile(path string) error {
	const fadvDontNeed = 4 // POSIX_FADV_DONTNEED
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err // dirty pages are not dropped: write them back first
	}
	_, _, errno := syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), 0, 0, fadvDontNeed, 0, 0)
	if errno != 0 {
		return &os.PathError{Op: "fadvise", Path: path, Err: errno}
	}
	return nil
}
