package bench

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/core/engine"
	"github.com/kpipe/kpipe/core/host"
	"github.com/kpipe/kpipe/internal/testkit"
	"github.com/kpipe/kpipe/pipelines"
)

const (
	partitions     = 4
	keyLen         = 16
	valueLen       = 1024
	headerKey      = "trace"
	headerValueLen = 16
	defaultRecords = 200_000
)

// seed is the topic every benchmark of this process reads.
type seed struct {
	addr    string
	topic   string
	records int64
	bytes   int64           // payload: key + value + header key and value
	ends    map[int32]int64 // end offset of each partition after seeding
	took    time.Duration
}

var (
	seedOnce sync.Once
	seeded   *seed
	seedErr  error
)

// seedTopic creates and fills the benchmark topic the first time it is
// called in this process; later calls return the same topic.
func seedTopic(b *testing.B) *seed {
	b.Helper()
	addr := testkit.Kafka(b)
	testkit.PluginDir(b) // fail early when the plugins are missing
	seedOnce.Do(func() { seeded, seedErr = fill(addr) })
	if seedErr != nil {
		b.Fatalf("seed: %v", seedErr)
	}
	return seeded
}

func recordCount() (int64, error) {
	s := os.Getenv("KPIPE_BENCH_RECORDS")
	if s == "" {
		return defaultRecords, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("KPIPE_BENCH_RECORDS=%q is not a positive number", s)
	}
	return n, nil
}

// fill creates a topic and produces records into it as fast as a franz-go
// producer can: values are JSON-lines events (see testkit.AppendEvents) so that the
// segment codecs have realistic work, spread evenly over the partitions.
func fill(addr string) (*seed, error) {
	n, err := recordCount()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	s := &seed{addr: addr, topic: fmt.Sprintf("bench-backup-%d", time.Now().UnixNano()%1_000_000_000), records: n}

	adm, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return nil, err
	}
	defer adm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	resp, err := kadm.NewClient(adm).CreateTopic(ctx, partitions, 1, nil, s.topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return nil, fmt.Errorf("create topic %s: %w", s.topic, err)
	}
	created.Store(&seed{addr: addr, topic: s.topic})

	cl, err := kgo.NewClient(
		kgo.SeedBrokers(addr),
		kgo.DefaultProduceTopic(s.topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(kgo.Lz4Compression()),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.ProducerBatchMaxBytes(1<<20),
		kgo.MaxBufferedRecords(50_000),
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()

	rng := rand.New(rand.NewPCG(1, 2))
	var firstErr atomic.Pointer[error]
	done := func(_ *kgo.Record, err error) {
		if err != nil {
			firstErr.CompareAndSwap(nil, &err)
		}
	}
	for i := range n {
		buf := make([]byte, 0, valueLen+headerValueLen)
		buf = testkit.AppendEvents(buf, rng, valueLen)
		buf = testkit.AppendHex(buf, rng, headerValueLen)
		key := fmt.Appendf(make([]byte, 0, keyLen), "key-%012d", i)
		r := &kgo.Record{
			Key:       key,
			Value:     buf[:valueLen:valueLen],
			Headers:   []kgo.RecordHeader{{Key: headerKey, Value: buf[valueLen:]}},
			Partition: int32(i % partitions),
		}
		s.bytes += int64(len(r.Key) + len(r.Value) + len(headerKey) + headerValueLen)
		cl.Produce(ctx, r, done)
		if e := firstErr.Load(); e != nil {
			break
		}
	}
	if err := cl.Flush(ctx); err != nil {
		return nil, fmt.Errorf("produce: %w", err)
	}
	if e := firstErr.Load(); e != nil {
		return nil, fmt.Errorf("produce: %w", *e)
	}

	ends, err := kadm.NewClient(adm).ListEndOffsets(ctx, s.topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	s.ends = map[int32]int64{}
	var total int64
	ends.Each(func(o kadm.ListedOffset) {
		s.ends[o.Partition] = o.Offset
		total += o.Offset
	})
	if total != n {
		return nil, fmt.Errorf("topic %s holds %d records after seeding, want %d", s.topic, total, n)
	}
	s.took = time.Since(start)
	fmt.Fprintf(os.Stderr, "bench: seeded %s: %d records, %.1f MB payload, %d partitions, in %s\n",
		s.topic, n, float64(s.bytes)/1e6, partitions, s.took.Round(time.Millisecond))
	// Untimed reads warm the broker (its JIT above all: `make bench` starts
	// a fresh one) so that the first measured run, whichever benchmark it
	// belongs to, is not an outlier.
	warm := ""
	for range 3 {
		_, bytes, took, err := drain(s)
		if err != nil {
			return nil, fmt.Errorf("warm-up read: %w", err)
		}
		warm += fmt.Sprintf(" %.0f", mbps(bytes, took))
	}
	fmt.Fprintf(os.Stderr, "bench: warm-up reads, MB/s:%s\n", warm)
	return s, nil
}

// created is the topic fill created, deleted when the process ends (even
// when seeding failed half way) so that repeated runs do not fill the
// broker's disk.
var created atomic.Pointer[seed]

func TestMain(m *testing.M) {
	code := m.Run()
	if c := created.Load(); c != nil {
		if cl, err := kgo.NewClient(kgo.SeedBrokers(c.addr)); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if _, err := kadm.NewClient(cl).DeleteTopic(ctx, c.topic); err != nil {
				fmt.Fprintf(os.Stderr, "bench: delete topic %s: %v\n", c.topic, err)
			}
			cancel()
			cl.Close()
		}
	}
	os.Exit(code)
}

// drain reads the whole seeded topic with a plain franz-go consumer, as a
// hand-written backup tool would, and returns the records and payload bytes
// seen and the time it took.
func drain(s *seed) (records, bytes int64, took time.Duration, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	offsets := map[int32]kgo.Offset{}
	for p := range s.ends {
		offsets[p] = kgo.NewOffset().AtStart()
	}
	start := time.Now()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(s.addr),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{s.topic: offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	if err != nil {
		return 0, 0, 0, err
	}
	defer cl.Close()
	next := map[int32]int64{}
	left := 0
	for _, end := range s.ends {
		if end > 0 {
			left++
		}
	}
	for left > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return records, bytes, 0, fmt.Errorf("drain: %w after %d records", err, records)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if ferr == nil {
				ferr = fmt.Errorf("fetch %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return records, bytes, 0, ferr
		}
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			end := s.ends[fp.Partition]
			before := next[fp.Partition]
			if before >= end {
				return
			}
			for _, r := range fp.Records {
				if r.Offset >= end {
					break
				}
				records++
				bytes += int64(len(r.Key) + len(r.Value))
				for _, h := range r.Headers {
					bytes += int64(len(h.Key) + len(h.Value))
				}
				next[fp.Partition] = r.Offset + 1
			}
			if next[fp.Partition] >= end {
				left--
			}
		})
	}
	return records, bytes, time.Since(start), nil
}

// run is what one backup run measured.
type run struct {
	rep    *engine.Report
	took   time.Duration // all of engine.Run
	launch time.Duration // from the call until the sink plugin was started
	// CPU time of the source and sink plugin processes, sampled from /proc
	// while they run (so the last few milliseconds may be missing).
	sourceCPU, sinkCPU time.Duration
}

// backup runs the kpipe backup pipeline over the seeded topic into a fresh
// folder.
func backup(b *testing.B, s *seed, compression string) run {
	b.Helper()
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts := engine.Options{
		Host:     &host.Host{Dir: testkit.PluginDir(b), Logger: quiet},
		StateDir: b.TempDir(),
		Logger:   quiet,
	}
	p := pipelines.Backup("bench", pipelines.BackupOptions{
		BootstrapServers: []string{s.addr},
		Topics:           []string{s.topic},
		Path:             b.TempDir(),
		BackupID:         "bench",
		Compression:      compression,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	var (
		mu   sync.Mutex
		r    run
		pids = map[string]int{}
		cpu  = map[string]time.Duration{}
	)
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() { // sample the plugins' CPU time until Run returns
		defer close(sampled)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			mu.Lock()
			for role, pid := range pids {
				if d, ok := procCPU(pid); ok && d > cpu[role] {
					cpu[role] = d
				}
			}
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	start := time.Now()
	opts.OnLaunch = func(role string, inst *host.Instance) {
		mu.Lock()
		defer mu.Unlock()
		pids[role] = inst.Pid
		if role == "sink" {
			r.launch = time.Since(start)
		}
	}
	rep, err := engine.Run(ctx, p, opts)
	r.took = time.Since(start)
	close(stop)
	<-sampled
	if err != nil {
		b.Fatalf("backup (%s): %v", compression, err)
	}
	if rep.RecordsOut != s.records {
		b.Fatalf("backup (%s) wrote %d records, want %d", compression, rep.RecordsOut, s.records)
	}
	r.rep, r.sourceCPU, r.sinkCPU = rep, cpu["source"], cpu["sink"]
	return r
}

// procCPU returns the user+system CPU time of a running process, from
// /proc/PID/stat (fields 14 and 15, in USER_HZ = 100 ticks per second).
func procCPU(pid int) (time.Duration, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(data[i+1:])) // f[0] is field 3, the state
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, true
}

func mbps(bytes int64, d time.Duration) float64 { return float64(bytes) / 1e6 / d.Seconds() }

// cpuTime returns the user+system CPU time used so far by this process
// (self) and by its waited-for children: the plugin processes, which
// engine.Run reaps before it returns. Unlike wall time, it is barely moved
// by other load on the machine.
func cpuTime() (self, children time.Duration) {
	get := func(who int) time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(who, &ru); err != nil {
			return 0
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return get(syscall.RUSAGE_SELF), get(syscall.RUSAGE_CHILDREN)
}

func sinkMetric(rep *engine.Report, name string) int64 {
	for _, p := range rep.Plugins {
		if p.Role == "sink" {
			return p.Metrics[name]
		}
	}
	return 0
}

// BenchmarkPlainConsumer drains the seeded topic with a plain franz-go
// consumer: the ceiling a backup tool could reach on this broker.
func BenchmarkPlainConsumer(b *testing.B) {
	s := seedTopic(b)
	b.SetBytes(s.bytes)
	b.ResetTimer()
	b.StopTimer()
	var total, cpu time.Duration
	for range b.N {
		self0, _ := cpuTime()
		b.StartTimer()
		n, bytes, took, err := drain(s)
		b.StopTimer()
		self1, _ := cpuTime()
		cpu += self1 - self0
		if err != nil {
			b.Fatal(err)
		}
		if n != s.records || bytes != s.bytes {
			b.Fatalf("drained %d records, %d bytes; want %d, %d", n, bytes, s.records, s.bytes)
		}
		total += took
	}
	b.ReportMetric(mbps(s.bytes*int64(b.N), total), "MB/s")
	b.ReportMetric(float64(s.records*int64(b.N))/total.Seconds(), "records/s")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s")
}

// BenchmarkBackupPipeline backs up the seeded topic with the kpipe pipeline
// (kafka source plugin → fs sink plugin, each its own process) for each
// segment codec. The time is all of engine.Run: plugin launch, reading,
// encoding, compressing, fsyncing and the final checkpoint.
func BenchmarkBackupPipeline(b *testing.B) {
	for _, c := range []string{"zstd", "lz4", "none"} {
		b.Run(c, func(b *testing.B) {
			s := seedTopic(b)
			compression := c
			if c == "zstd" {
				compression = "" // the fs sink's default
			}
			b.SetBytes(s.bytes)
			b.ResetTimer()
			b.StopTimer()
			var total, launch, hostCPU, pluginCPU, sourceCPU, sinkCPU time.Duration
			var disk, wire, batches int64
			for range b.N {
				self0, child0 := cpuTime()
				b.StartTimer()
				r := backup(b, s, compression)
				b.StopTimer()
				self1, child1 := cpuTime()
				hostCPU += self1 - self0
				pluginCPU += child1 - child0
				sourceCPU += r.sourceCPU
				sinkCPU += r.sinkCPU
				batches += r.rep.BatchesOut
				total += r.took
				launch += r.launch
				disk += sinkMetric(r.rep, "bytes_written")
				wire += r.rep.BytesOut
			}
			n := int64(b.N)
			b.ReportMetric(mbps(s.bytes*n, total), "MB/s")
			b.ReportMetric(float64(s.records*n)/total.Seconds(), "records/s")
			b.ReportMetric(float64(launch.Milliseconds())/float64(n), "launch-ms")
			b.ReportMetric(float64(disk)/float64(s.bytes*n), "disk/payload")
			b.ReportMetric(float64(wire)/float64(s.bytes*n), "arrow/payload")
			b.ReportMetric(float64(wire)/1e3/float64(batches), "KB/batch")
			b.ReportMetric(hostCPU.Seconds()/float64(n), "host-cpu-s")
			b.ReportMetric(pluginCPU.Seconds()/float64(n), "plugin-cpu-s")
			b.ReportMetric(sourceCPU.Seconds()/float64(n), "source-cpu-s")
			b.ReportMetric(sinkCPU.Seconds()/float64(n), "sink-cpu-s")
		})
	}
}

// BenchmarkBackupVsConsumer runs the plain consumer and the default (zstd)
// pipeline back to back on the same data, so that one line carries both
// throughputs and ratio = pipeline MB/s / consumer MB/s.
func BenchmarkBackupVsConsumer(b *testing.B) {
	s := seedTopic(b)
	b.ResetTimer()
	var cons, pipe, consCPU, pipeCPU time.Duration
	for range b.N {
		self0, _ := cpuTime()
		n, bytes, took, err := drain(s)
		self1, child1 := cpuTime()
		if err != nil {
			b.Fatal(err)
		}
		if n != s.records || bytes != s.bytes {
			b.Fatalf("drained %d records, %d bytes; want %d, %d", n, bytes, s.records, s.bytes)
		}
		cons += took
		consCPU += self1 - self0
		pipe += backup(b, s, "").took
		self2, child2 := cpuTime()
		pipeCPU += self2 - self1 + child2 - child1
	}
	total := s.bytes * int64(b.N)
	c, p := mbps(total, cons), mbps(total, pipe)
	b.ReportMetric(c, "consumer-MB/s")
	b.ReportMetric(p, "pipeline-MB/s")
	b.ReportMetric(p/c, "ratio")
	// CPU seconds the pipeline (host and plugins) spends per CPU second of
	// the consumer for the same bytes: the cost side of the ratio.
	b.ReportMetric(pipeCPU.Seconds()/consCPU.Seconds(), "cpu-ratio")
}
