// Package lean trims what a kpipe process holds of its own binary in
// memory. Go's runtime and package initialization touch code and data all
// over the binary, and the kernel maps 64 KiB around each page touched, so
// a process starts with most of its binary resident. Release drops those
// pages from the process (they stay in the page cache) and has the kernel
// bring back only the pages used from then on, one at a time: a few MiB
// less resident memory per process, for a few thousand minor page faults.
// (A binary the page cache holds in huge folios, as it holds a file just
// written with write(2), is mapped a folio at a time whatever is asked.)
package lean

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Release drops the resident pages of the executable's read-only mappings
// and makes later faults on them page-sized. A mapping holding pages the
// process changed (the relocated, then write-protected, data of a
// dynamically linked binary) is left alone: dropping those pages would
// bring back the file's unrelocated bytes.
func Release() {
	exe, err := os.Executable()
	if err != nil {
		return
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return
	}
	defer f.Close()
	var start, end uint64 // the executable's read-only mapping being read
	drop := func() {
		if end > start {
			for _, advice := range []int{syscall.MADV_RANDOM, syscall.MADV_DONTNEED} {
				syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), uintptr(end-start), uintptr(advice))
			}
		}
		start, end = 0, 0
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// A mapping's first line: start-end perms offset dev inode path.
		if lo, hi, ok := strings.Cut(fields[0], "-"); ok && len(fields) >= 5 {
			drop()
			if len(fields) < 6 || fields[5] != exe || strings.Contains(fields[1], "w") {
				continue
			}
			s, err1 := strconv.ParseUint(lo, 16, 64)
			e, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 == nil && err2 == nil {
				start, end = s, e
			}
			continue
		}
		// Then its figures, "Anonymous: N kB" among them.
		if fields[0] == "Anonymous:" && len(fields) > 1 && fields[1] != "0" {
			start, end = 0, 0
		}
	}
	drop()
}
