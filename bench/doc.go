// Package bench measures backup throughput: the out-of-process kpipe backup
// pipeline (kafka source plugin → fs sink plugin, run by engine.Run) against
// a plain franz-go consumer that drains the same topic from the same broker.
//
// It holds benchmarks only; `make bench` runs them against the test broker:
//
//	go test -run '^$' -bench . -benchtime 1x -count 3 ./bench/
//
// Each test process seeds one topic once (4 partitions, KPIPE_BENCH_RECORDS
// records, default 200000, of a 16-byte key, a 1 KiB value of JSON-lines
// events and one header; about 210 MB of payload) and deletes it at the end. Both sides are charged
// the same payload bytes (key + value + header key and value), so their MB/s
// (10^6 bytes per second, as `go test` reports them) compare like for like.
// BenchmarkBackupVsConsumer puts both figures and their ratio on one line.
package bench
