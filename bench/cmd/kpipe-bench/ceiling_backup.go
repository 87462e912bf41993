//go:build linux

package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ceilingBackupMain is the backup ceiling: a franz-go consumer that drains
// every partition of a topic up to the end offsets it finds at start, frames
// the records, compresses them with zstd at its fastest level in parallel
// and writes one file per partition, fsynced at the end. It prints what it
// wrote as JSON.
func ceilingBackupMain(args []string) error {
	fs := flag.NewFlagSet("ceiling-backup", flag.ContinueOnError)
	var o ceilingBackupOpts
	fs.StringVar(&o.bootstrap, "bootstrap", "127.0.0.1:9092", "Kafka broker host:port")
	fs.StringVar(&o.topic, "topic", "", "topic to back up (required)")
	fs.StringVar(&o.dir, "dir", "", "folder to write the partition files into (required)")
	fs.IntVar(&o.chunk, "chunk-bytes", 0, "uncompressed bytes per zstd frame (default: 1 MiB, less with many partitions)")
	fs.IntVar(&o.workers, "workers", runtime.GOMAXPROCS(0), "compression goroutines")
	fs.IntVar(&o.fetchBytes, "fetch-max-bytes", 0, "most bytes per fetch response (default: 64 KiB per partition, within 1 to 4 MiB; compressed bytes, which highly compressible data decodes to many times more)")
	fs.IntVar(&o.partBytes, "fetch-partition-bytes", 1<<20, "most bytes per partition per fetch response")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.topic == "" || o.dir == "" {
		return errors.New("ceiling-backup: --topic and --dir are required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer startProfile()()
	res, err := ceilingBackup(ctx, o)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

type ceilingBackupOpts struct {
	bootstrap, topic, dir string
	chunk, workers        int
	fetchBytes, partBytes int
}

// ceilingResult is what a ceiling run prints.
type ceilingResult struct {
	Records  int64 `json:"records"`
	BytesIn  int64 `json:"bytes_in"`  // framed, uncompressed
	BytesOut int64 `json:"bytes_out"` // written to disk
}

// partFile is one partition's output: compressed frames arrive from the
// workers in any order and are written in sequence.
type partFile struct {
	f       *os.File
	mu      sync.Mutex
	next    int
	pending map[int]*[]byte
	err     error
	written int64

	// Owned by the consuming goroutine.
	raw  *[]byte
	seq  int
	end  int64 // offset to stop before
	done bool
}

// job is one chunk of a partition for a worker to compress.
type job struct {
	p   *partFile
	seq int
	raw *[]byte
}

// bufPool recycles the chunk buffers of the consumer and the workers.
type bufPool struct{ p sync.Pool }

func newBufPool(size int) *bufPool {
	return &bufPool{p: sync.Pool{New: func() any { b := make([]byte, 0, size); return &b }}}
}

func (b *bufPool) get() *[]byte  { return b.p.Get().(*[]byte) }
func (b *bufPool) put(p *[]byte) { *p = (*p)[:0]; b.p.Put(p) }

func ceilingBackup(ctx context.Context, o ceilingBackupOpts) (ceilingResult, error) {
	var res ceilingResult
	ranges, err := partitionRanges(ctx, o.bootstrap, o.topic)
	if err != nil {
		return res, err
	}
	o.setDefaults(len(ranges))
	encs, err := newEncoders(o.workers)
	if err != nil {
		return res, err
	}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return res, err
	}
	raws, outs := newBufPool(o.chunk+64<<10), newBufPool(o.chunk/2)
	parts, offsets, err := openPartFiles(o.dir, ranges, raws)
	if err != nil {
		return res, err
	}
	jobs := make(chan job, 2*len(encs))
	var wg sync.WaitGroup
	for _, enc := range encs {
		wg.Go(func() { compressJobs(enc, jobs, raws, outs) })
	}
	d := &drainer{jobs: jobs, raws: raws, chunk: o.chunk}
	res.Records, res.BytesIn, err = d.drain(ctx, o, parts, offsets)
	close(jobs)
	wg.Wait()
	written, closeErr := closePartFiles(o.dir, parts)
	res.BytesOut = written
	return res, errors.Join(err, closeErr)
}

// setDefaults sizes the frames and fetches for a topic of that many
// partitions, unless flags did.
func (o *ceilingBackupOpts) setDefaults(partitions int) {
	if o.chunk <= 0 {
		o.chunk = chunkSize(partitions)
	}
	if o.fetchBytes <= 0 {
		o.fetchBytes = min(max(partitions*64<<10, 1<<20), 4<<20)
	}
	o.workers = max(o.workers, 1)
}

// newEncoders returns one zstd encoder per worker, at the fastest level and
// without a content checksum (the zstd format's default).
func newEncoders(n int) ([]*zstd.Encoder, error) {
	encs := make([]*zstd.Encoder, n)
	for i := range encs {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderCRC(false))
		if err != nil {
			return nil, err
		}
		encs[i] = enc
	}
	return encs, nil
}

// chunkSize is the default frame size: 1 MiB, or less when there are so
// many partitions that their open chunks would hold more than 32 MiB.
func chunkSize(partitions int) int {
	return min(max(32<<20/max(partitions, 1), 128<<10), 1<<20)
}

// partitionRanges returns the start and end offsets of every partition.
func partitionRanges(ctx context.Context, bootstrap, topic string) (map[int32][2]int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("start offsets of %s: %w", topic, err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	out := map[int32][2]int64{}
	ends.Each(func(e kadm.ListedOffset) {
		s, _ := starts.Lookup(topic, e.Partition)
		out[e.Partition] = [2]int64{s.Offset, e.Offset}
	})
	if len(out) == 0 {
		return nil, fmt.Errorf("topic %s not found", topic)
	}
	return out, nil
}

// openPartFiles creates the file of every partition and returns the offsets
// to consume from, for the partitions that hold records.
func openPartFiles(dir string, ranges map[int32][2]int64, raws *bufPool) (map[int32]*partFile, map[int32]kgo.Offset, error) {
	parts := map[int32]*partFile{}
	offsets := map[int32]kgo.Offset{}
	for p, r := range ranges {
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(int(p))+".zst"), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, nil, err
		}
		pf := &partFile{f: f, pending: map[int]*[]byte{}, raw: raws.get(), end: r[1], done: r[1] <= r[0]}
		parts[p] = pf
		if !pf.done {
			offsets[p] = kgo.NewOffset().At(r[0])
		}
	}
	return parts, offsets, nil
}

// drainer frames consumed records into chunks for the compression workers.
type drainer struct {
	jobs  chan<- job
	raws  *bufPool
	chunk int
}

// drain consumes every partition up to its end offset.
func (d *drainer) drain(ctx context.Context, o ceilingBackupOpts, parts map[int32]*partFile, offsets map[int32]kgo.Offset) (records, bytes int64, err error) {
	left := len(offsets)
	if left == 0 {
		return 0, 0, nil
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(o.bootstrap),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{o.topic: offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxBytes(int32(o.fetchBytes)),
		kgo.FetchMaxPartitionBytes(int32(o.partBytes)),
		kgo.FetchMaxWait(100*time.Millisecond),
		kgo.WithPools(&recordPools{}),
	)
	if err != nil {
		return 0, 0, err
	}
	defer cl.Close()
	for left > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return records, bytes, err
		}
		if err := fetchErr(fs); err != nil {
			return records, bytes, err
		}
		var reached []int32
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			p := parts[fp.Partition]
			n, b := d.frame(p, fp.Records)
			records, bytes = records+n, bytes+b
			if !p.done && len(fp.Records) > 0 && fp.Records[len(fp.Records)-1].Offset+1 >= p.end {
				p.done = true
				d.submit(p)
				reached = append(reached, fp.Partition)
				left--
			}
			for _, r := range fp.Records {
				r.Recycle()
			}
		})
		if len(reached) > 0 {
			cl.PauseFetchPartitions(map[string][]int32{o.topic: reached})
		}
	}
	return records, bytes, nil
}

// fetchErr returns the first error of a poll.
func fetchErr(fs kgo.Fetches) error {
	var err error
	fs.EachError(func(t string, p int32, e error) {
		if err == nil {
			err = fmt.Errorf("fetch %s/%d: %w", t, p, e)
		}
	})
	return err
}

// frame appends the records below the partition's end offset to its chunk,
// handing the chunk to a worker whenever it is full.
func (d *drainer) frame(p *partFile, recs []*kgo.Record) (n, bytes int64) {
	if p.done {
		return 0, 0
	}
	for _, r := range recs {
		if r.Offset >= p.end {
			break
		}
		before := len(*p.raw)
		*p.raw = appendRecord(*p.raw, r)
		n++
		bytes += int64(len(*p.raw) - before)
		if len(*p.raw) >= d.chunk {
			d.submit(p)
		}
	}
	return n, bytes
}

// submit hands the partition's chunk to a worker and starts a new one.
func (d *drainer) submit(p *partFile) {
	if len(*p.raw) == 0 {
		return
	}
	d.jobs <- job{p: p, seq: p.seq, raw: p.raw}
	p.seq++
	p.raw = d.raws.get()
}

// appendRecord frames one record: offset, timestamp (ms), key, value and
// headers, each byte string preceded by its length (-1 for null).
func appendRecord(b []byte, r *kgo.Record) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(r.Offset))
	b = binary.LittleEndian.AppendUint64(b, uint64(r.Timestamp.UnixMilli()))
	b = appendBytes(b, r.Key)
	b = appendBytes(b, r.Value)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(r.Headers)))
	for _, h := range r.Headers {
		b = appendBytes(b, []byte(h.Key))
		b = appendBytes(b, h.Value)
	}
	return b
}

func appendBytes(b, v []byte) []byte {
	if v == nil {
		return binary.LittleEndian.AppendUint32(b, ^uint32(0))
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

// compressJobs compresses chunks, one zstd frame each, and hands them to
// their partition's file.
func compressJobs(enc *zstd.Encoder, jobs <-chan job, raws, outs *bufPool) {
	defer enc.Close()
	for j := range jobs {
		out := outs.get()
		*out = enc.EncodeAll(*j.raw, *out)
		raws.put(j.raw)
		j.p.deliver(j.seq, out, outs)
	}
}

// deliver writes frame seq and every frame after it that has arrived.
func (p *partFile) deliver(seq int, frame *[]byte, outs *bufPool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pending[seq] = frame
	for {
		f, ok := p.pending[p.next]
		if !ok {
			return
		}
		delete(p.pending, p.next)
		p.next++
		if p.err == nil {
			_, p.err = p.f.Write(*f)
			p.written += int64(len(*f))
		}
		outs.put(f)
	}
}

// closePartFiles fsyncs and closes every file, then the folder.
func closePartFiles(dir string, parts map[int32]*partFile) (int64, error) {
	var total int64
	var errs []error
	for _, p := range parts {
		if len(p.pending) > 0 {
			errs = append(errs, fmt.Errorf("%s: %d frames never written", p.f.Name(), len(p.pending)))
		}
		errs = append(errs, p.err, p.f.Sync(), p.f.Close())
		total += p.written
	}
	d, err := os.Open(dir)
	if err == nil {
		errs = append(errs, d.Sync(), d.Close())
	} else {
		errs = append(errs, err)
	}
	return total, errors.Join(errs...)
}

// recordPools lets franz-go reuse the record slices and decompression
// buffers of fetches once every record of a batch is recycled.
type recordPools struct {
	recs, bufs sync.Pool
}

func (p *recordPools) GetRecords(n int) []kgo.Record {
	if s, ok := p.recs.Get().(*[]kgo.Record); ok && cap(*s) >= n {
		return (*s)[:n]
	}
	return make([]kgo.Record, n)
}

func (p *recordPools) PutRecords(s []kgo.Record) { p.recs.Put(&s) }

// decompressGuess is the size of a new decompression buffer: four times the
// compressed batch, at most 2 MiB (twice the producers' largest batch), so
// that buffers of one size serve batches of any compression ratio; franz-go
// grows a buffer that turns out too small.
func decompressGuess(compressed int) int { return max(min(4*compressed, 2<<20), compressed) }

func (p *recordPools) GetDecompressBytes(compressed []byte, _ kgo.CompressionCodecType) []byte {
	want := decompressGuess(len(compressed))
	if b, ok := p.bufs.Get().(*[]byte); ok && cap(*b) >= want {
		return (*b)[:0]
	}
	return make([]byte, 0, want)
}

func (p *recordPools) PutDecompressBytes(b []byte) { p.bufs.Put(&b) }
