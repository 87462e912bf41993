// Package bench holds what kpipe's side-by-side benchmark
// (bench/cmd/kpipe-bench, run by `make bench`) is built from, each part
// tested on its own without a broker (`go test -short ./bench/...`):
//
//   - Gen generates the benchmark records deterministically (a 16-byte key,
//     a 1 KiB JSON value of a given Shape, one header, timestamps 1 ms apart),
//     so that a program can regenerate any record instead of storing them;
//     CentredWindow picks a time window holding a known number of them.
//   - Measure runs a program and measures its whole process tree: wall time,
//     CPU time from wait4, the peak of the summed resident memory of every
//     process (sampled from /proc by a Sampler), and I/O from /proc/PID/io.
//   - EvictCache drops a folder's files from the page cache, so that the next
//     reader reads them from storage.
//   - Median and MedianRatio summarize runs: ratios are taken run by run,
//     within a round, before their median.
//
// The process measurements read Linux's /proc and are Linux-only.
package bench
