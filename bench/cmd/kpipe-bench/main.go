//go:build linux

// Command kpipe-bench measures kpipe side by side with the reference Kafka
// backup tool (OSO kafka-backup, when a path to it is given) and with bare
// franz-go programs that do the same work with no framework around it (the
// ceilings), all against one broker in one run.
//
// It seeds topics of 1, 8 and 100 partitions with two shapes of records
// (highly compressible and about 2x compressible values), then times, run by
// run and tool after tool: a snapshot backup to local disk, a restore into a
// new topic, and a point-in-time restore of a 1% time window against a full
// restore of a backup of many segments. Every run is a separate process
// tree whose wall time, CPU time, peak resident memory (summed over the
// whole tree: kpipe runs one process per plugin) and I/O are measured, and
// every backup and restore is checked for its record count. The medians and
// the run-by-run ratios go to a markdown report (bench/RESULTS.md) and to
// stdout.
//
// Usage:
//
//	kpipe-bench [--bootstrap H:P] [--peer PATH] [--records N] [--runs N]
//	            [--only REGEX] [--out FILE] [--format text|json]
//	kpipe-bench ceiling-backup  --bootstrap H:P --topic T --dir DIR
//	kpipe-bench ceiling-restore --bootstrap H:P --topic T --partitions P
//	            --records N --shape S --base-ms MS
//
// The two ceiling subcommands are the bare franz-go programs; the benchmark
// runs them as child processes so that they are measured exactly like the
// tools. With KPIPE_BENCH_PROFILE=PREFIX set they write CPU and heap
// profiles (PREFIX.cpu.pprof, PREFIX.heap.pprof).
//
// Every topic the benchmark creates is named kpipe-bench-<run>-..., and all
// of them are deleted at the end, also after a failure or an interrupt. The
// kpipe binaries are copied before the first run, so a rebuild while the
// benchmark runs does not mix two builds. `make bench` builds and runs it
// against a local broker; the report's legend explains every figure.
package main

import (
	"fmt"
	"os"
)

func main() {
	var err error
	switch {
	case len(os.Args) > 1 && os.Args[1] == "ceiling-backup":
		err = ceilingBackupMain(os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "ceiling-restore":
		err = ceilingRestoreMain(os.Args[2:])
	default:
		err = benchMain(os.Args[1:])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kpipe-bench:", err)
		os.Exit(1)
	}
}
