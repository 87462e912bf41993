//go:build linux

package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
)

// profileEnv names a file prefix: when set, a ceiling subcommand writes a
// CPU profile to PREFIX.cpu.pprof and a heap profile to PREFIX.heap.pprof,
// for `go tool pprof`.
const profileEnv = "KPIPE_BENCH_PROFILE"

// startProfile starts the CPU profile when profileEnv is set; the returned
// function stops it and writes the heap profile.
func startProfile() (stop func()) {
	prefix := os.Getenv(profileEnv)
	if prefix == "" {
		return func() {}
	}
	cpu, err := os.Create(prefix + ".cpu.pprof")
	if err == nil {
		err = pprof.StartCPUProfile(cpu)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kpipe-bench: profile:", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		cpu.Close()
		runtime.GC()
		if f, err := os.Create(prefix + ".heap.pprof"); err == nil {
			_ = pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
}
