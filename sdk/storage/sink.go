package storage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/record"
)

type sinkConfig struct {
	BackupID          string        `param:"backup_id" required:"true" help:"name of the backup in the storage; a run resumes a backup of the same id"`
	Compression       string        `param:"compression" default:"zstd" help:"segment compression: zstd, lz4 or none"`
	CompressionLevel  int           `param:"compression_level" default:"0" help:"level of the compression: zstd 1 to 22 (1-2 fastest, 3-6 default, 7-10 better, 11 and up best), lz4 1 to 9; 0 for the fastest, which kpipe uses by default"`
	SegmentMaxBytes   int64         `param:"segment_max_bytes" default:"67108864" help:"a segment is committed once it reaches this size"`
	SegmentMaxRecords int64         `param:"segment_max_records" default:"0" help:"a segment is committed once it holds this many records; 0 for no limit"`
	FlushInterval     time.Duration `param:"flush_interval" default:"5s" help:"a segment is committed at the latest this long after its first record, bounding how much a crash makes the next run read again"`
	LeaseTTL          time.Duration `param:"lease_ttl" default:"30s" help:"how long the backup stays locked to this writer after it last renewed its lease (every third of it); a writer that stops renewing loses the backup to the next one"`
}

// Sink writes batches into a backup. Each partition has its own writer
// goroutine, so that segments of different partitions are made in parallel
// and one slow partition does not hold up the others. It is idempotent: a
// batch, or the part of one, below the durable position of its partition is
// acked and skipped.
type Sink struct {
	sdk.UnimplementedSink
	*service
	cfg    sinkConfig
	codec  record.Codec
	w      *Writer
	ctx    context.Context // the segments' Puts live as long as the sink
	cancel context.CancelFunc
	ack    sdk.Acker
	pool   *record.Pool // batches decoded to be cut live only until written
	// outcome is how the run ended, as the host said (End).
	outcome sdk.Outcome

	mu       sync.Mutex
	parts    map[string]*partWriter
	err      error      // the first write or commit failure; later calls return it
	failedCh chan error // yields err once
	wg       sync.WaitGroup

	records, segments, bytes, skipped, orphans, gaps atomic.Int64
	durable                                          atomic.Int64 // records in committed segments
}

// NewSink returns the sink of a storage plugin.
func NewSink(p Plugin) *Sink {
	return &Sink{service: &service{plugin: p}, failedCh: make(chan error, 1)}
}

func (s *Sink) Spec() sdk.Spec { return s.spec(&s.cfg) }

func (s *Sink) Configure(ctx context.Context) error {
	errs := s.configure(ctx)
	var err error
	if s.codec, err = record.ParseCodec(s.cfg.Compression); err != nil {
		errs = append(errs, param.Errorf("compression", "%v", err))
	} else if s.codec, err = s.codec.WithLevel(s.cfg.CompressionLevel); err != nil {
		errs = append(errs, param.Errorf("compression_level", "%v", err))
	}
	if err := CheckID(s.cfg.BackupID); err != nil {
		errs = append(errs, param.Errorf("backup_id", "%v", err))
	}
	if s.cfg.SegmentMaxBytes <= 0 {
		errs = append(errs, param.Errorf("segment_max_bytes", "must be positive, got %d", s.cfg.SegmentMaxBytes))
	}
	if s.cfg.FlushInterval <= 0 {
		errs = append(errs, param.Errorf("flush_interval", "must be positive, got %s", s.cfg.FlushInterval))
	}
	if s.cfg.LeaseTTL < time.Second {
		errs = append(errs, param.Errorf("lease_ttl", "must be at least 1s, got %s", s.cfg.LeaseTTL))
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// Open takes the backup's lease (a second writer is refused at once, naming
// the holder) and reads what each partition holds.
func (s *Sink) Open(ctx context.Context, ack sdk.Acker) error {
	s.ack = ack
	s.pool = record.NewPoolWithLimit(sdk.InFlightBytes() / 8)
	store, err := s.open(ctx)
	if err != nil {
		return err
	}
	opts := WriterOptions{Lease: LeaseOptions{TTL: s.cfg.LeaseTTL}, Key: s.key, Orphans: func(topic string, partition int32, keys []string) {
		s.orphans.Add(int64(len(keys)))
		sdk.Logger().Warn("segments no entry names: a crash or a writer that lost its lease left them; they are not part of the backup",
			"topic", topic, "partition", partition, "segments", len(keys), "first", keys[0])
	}}
	if s.w, err = OpenWriter(ctx, store, s.cfg.BackupID, opts); err != nil {
		return fmt.Errorf("%s: %w", s.plugin.Location(), err)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.parts = map[string]*partWriter{}
	go func() { // a lease lost between commits ends the run at once
		select {
		case <-s.w.Lost():
			s.fail(s.w.Err())
		case <-s.ctx.Done():
		}
	}()
	return nil
}

// Failed yields the sink's first failure, which may come between writes
// (a commit in the background, the lease lost): sdk.FailingSink.
func (s *Sink) Failed() <-chan error { return s.failedCh }

// Codec is the codec segments store: sources encode batches in it, so the
// sink writes their frames as they come.
func (s *Sink) Codec() record.Codec { return s.codec }

// WriteMetadata stores the topics' metadata in the backup, merged with
// what earlier runs stored.
func (s *Sink) WriteMetadata(ctx context.Context, m sdk.Metadata) error {
	return s.w.WriteMetadata(ctx, m)
}

// DurablePositions returns the position after the last commit of every
// partition of the backup.
func (s *Sink) DurablePositions(context.Context) ([]sdk.Position, error) {
	return s.w.Positions(), nil
}

func (s *Sink) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
		s.failedCh <- err
	}
}

func (s *Sink) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Write hands the batch to its partition's writer; it blocks while that
// writer is busy with earlier batches (backpressure).
func (s *Sink) Write(ctx context.Context, b sdk.Batch) error {
	if err := s.failed(); err != nil {
		return err
	}
	k := fmt.Sprintf("%s/%d", b.Topic, b.Partition)
	s.mu.Lock()
	pw := s.parts[k]
	s.mu.Unlock()
	if pw == nil {
		if err := s.w.AddPartition(ctx, b.Topic, b.Partition); err != nil {
			return err
		}
		p, err := s.w.Partition(ctx, b.Topic, b.Partition)
		if err != nil {
			return err
		}
		pw = &partWriter{sink: s, p: p, ops: make(chan op, 4)}
		s.mu.Lock()
		s.parts[k] = pw
		s.wg.Add(1)
		s.mu.Unlock()
		go pw.run()
	}
	select {
	case pw.ops <- op{batch: b}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Flush commits every partition's open segment, after the batches before it.
func (s *Sink) Flush(ctx context.Context) error {
	s.mu.Lock()
	pws := make([]*partWriter, 0, len(s.parts))
	for _, pw := range s.parts {
		pws = append(pws, pw)
	}
	s.mu.Unlock()
	done := make(chan error, len(pws))
	for _, pw := range pws {
		select {
		case pw.ops <- op{flushed: done}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for range pws {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.failed()
}

func (s *Sink) Metrics() map[string]int64 {
	return s.withStoreMetrics(map[string]int64{
		"records_written":                s.records.Load(),
		"records_durable":                s.durable.Load(),
		"segments_written":               s.segments.Load(),
		"bytes_written":                  s.bytes.Load(),
		"records_skipped_already_stored": s.skipped.Load(),
		"orphan_segments":                s.orphans.Load(),
		"gaps_recorded":                  s.gaps.Load(),
	})
}

// Teardown stops the writers (a segment still open was never acked and is
// dropped: the next run reads those records again) and lets the lease go.
func (s *Sink) Teardown(ctx context.Context) error {
	s.mu.Lock()
	for _, pw := range s.parts {
		close(pw.ops)
	}
	s.parts = nil
	s.mu.Unlock()
	s.wg.Wait()
	if s.cancel != nil {
		s.cancel()
	}
	if s.w != nil {
		return s.w.Close(ctx, string(s.outcome))
	}
	return nil
}

// End hears how the run ended, which Teardown records in the lease.
func (s *Sink) End(_ context.Context, o sdk.Outcome) { s.outcome = o }

// op is a batch to write or, with flushed set, a request to commit.
type op struct {
	batch   sdk.Batch
	flushed chan error
}

// partWriter owns the open segment of one topic-partition; only its own
// goroutine touches its fields.
type partWriter struct {
	sink    *Sink
	p       *PartitionWriter
	seg     *Segment
	topicID string
	ids     []sdk.BatchID // batches whose end is in the open segment
	ops     chan op
}

func (pw *partWriter) run() {
	defer pw.sink.wg.Done()
	s := pw.sink
	tick := time.NewTicker(max(s.cfg.FlushInterval/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case o, ok := <-pw.ops:
			if !ok {
				if pw.seg != nil {
					pw.seg.Abort()
				}
				return
			}
			if o.flushed != nil {
				o.flushed <- pw.do(pw.commit)
				continue
			}
			pw.do(func() error { return pw.write(o.batch) })
		case <-tick.C:
			if pw.seg != nil && pw.seg.Age() >= s.cfg.FlushInterval {
				pw.do(pw.commit)
			}
		}
	}
}

// do runs fn unless the sink has failed, and records its failure.
func (pw *partWriter) do(fn func() error) error {
	if err := pw.sink.failed(); err != nil {
		return err
	}
	if err := fn(); err != nil {
		if !errors.As(err, new(*sdk.PartitionError)) {
			// Named after this partition: the run may end on another
			// partition's write, which finds the sink failed.
			err = &sdk.PartitionError{Topic: pw.p.topic, Partition: pw.p.partition, Offset: pw.p.NextOffset(), Err: err}
		}
		pw.sink.fail(err)
		return err
	}
	return nil
}

// write appends a batch to the open segment. Its frame goes to the segment as
// it is; only a batch that must be cut (records already stored, or a segment
// that fills up at segment_max_records) is decoded.
func (pw *partWriter) write(b sdk.Batch) error {
	defer b.Release()
	s := pw.sink
	if id := b.TopicID.String(); id != "" && id != pw.topicID {
		if err := pw.incarnation(id); err != nil {
			return err
		}
	}
	if b.IsGap() {
		return pw.gap(b)
	}
	next := pw.p.NextOffset()
	stored := next >= 0 && b.MinOffset < next
	room := s.cfg.SegmentMaxRecords <= 0 || b.Count <= s.cfg.SegmentMaxRecords-pw.records()
	if stored || !room {
		return pw.cut(b)
	}
	pw.open()
	if err := pw.seg.WriteFrame(b.Arrow, b.Bounds(), b.NextOffset, b.MaxRecordBytes); err != nil {
		return err
	}
	pw.ids = append(pw.ids, b.ID())
	s.records.Add(b.Count)
	return pw.maybeCommit()
}

// incarnation follows the batches' topic ID. The first one the partition
// sees continues what the backup holds of that ID; another one is a topic
// re-created under the same name: the open segment (of the incarnation
// before) is committed, and the partition starts over.
func (pw *partWriter) incarnation(id string) error {
	prev := pw.topicID
	pw.topicID = id
	if prev == "" && (pw.p.Incarnation() == "" || pw.p.Incarnation() == id) {
		return nil
	}
	if prev != "" {
		// The open segment holds the incarnation before's records.
		pw.topicID = prev
		if err := pw.commit(); err != nil {
			return err
		}
		pw.topicID = id
	}
	sdk.Logger().Warn("topic re-created under the same name: backing up its new incarnation apart from the one before",
		"topic", pw.p.topic, "partition", pw.p.partition, "topic_id", id, "topic_id_before", cmp.Or(prev, pw.p.Incarnation()))
	pw.p.NewIncarnation(id)
	return nil
}

// gap commits the open segment, then records the gap's offsets that the
// backup does not hold yet, and acks it.
func (pw *partWriter) gap(b sdk.Batch) error {
	if err := pw.commit(); err != nil {
		return err
	}
	from := b.MinOffset
	if next := pw.p.NextOffset(); next > from {
		from = next
	}
	if from < b.NextOffset {
		if _, err := pw.p.Gap(pw.sink.ctx, from, b.NextOffset, b.Gap, pw.topicID); err != nil {
			return err
		}
		sdk.Logger().Warn("offsets deleted by the cluster before they were read: recorded as a gap",
			"topic", b.Topic, "partition", b.Partition, "from", from, "to", b.NextOffset-1, "reason", b.Gap)
		pw.sink.gaps.Add(1)
	}
	pw.sink.ack(b.ID())
	return nil
}

// records is the number of records in the open segment.
func (pw *partWriter) records() int64 {
	if pw.seg == nil {
		return 0
	}
	return pw.seg.Records()
}

// open starts a segment unless one is open.
func (pw *partWriter) open() {
	if pw.seg == nil {
		pw.seg = pw.p.NewSegment(pw.sink.ctx, pw.sink.codec)
	}
}

// maybeCommit commits the open segment once it is full.
func (pw *partWriter) maybeCommit() error {
	s := pw.sink
	if pw.seg.Size() >= s.cfg.SegmentMaxBytes || (s.cfg.SegmentMaxRecords > 0 && pw.seg.Records() >= s.cfg.SegmentMaxRecords) {
		return pw.commit()
	}
	return nil
}

// cut writes the part of b not yet stored, splitting it where segments fill
// up at segment_max_records.
func (pw *partWriter) cut(b sdk.Batch) error {
	s := pw.sink
	rec, err := record.DecodeWith(b.Arrow, s.pool)
	if err != nil {
		return err
	}
	defer rec.Release()
	if next := pw.p.NextOffset(); next >= 0 && b.MinOffset < next {
		// Already stored, wholly or in part: a replay after a resume.
		if rec, err = dropBelow(rec, next); err != nil {
			return err
		}
		defer rec.Release()
		s.skipped.Add(b.Count - rec.NumRows())
		if rec.NumRows() == 0 {
			s.ack(b.ID())
			return nil
		}
	}
	// Fill segments up to segment_max_records exactly. The batch is acked
	// with the segment that gets its end.
	for start, n := int64(0), rec.NumRows(); start < n; {
		pw.open()
		end := n
		if s.cfg.SegmentMaxRecords > 0 {
			end = min(n, start+s.cfg.SegmentMaxRecords-pw.seg.Records())
		}
		if err := pw.writePart(rec, start, end, b, end == n); err != nil {
			return err
		}
		start = end
		if err := pw.maybeCommit(); err != nil {
			return err
		}
	}
	return nil
}

// writePart writes rows [start, end) of rec, which belong to batch b, to the
// open segment. last says the part ends the batch.
func (pw *partWriter) writePart(rec arrow.RecordBatch, start, end int64, b sdk.Batch, last bool) error {
	part := rec
	if start > 0 || end < rec.NumRows() {
		part = rec.NewSlice(start, end)
		defer part.Release()
	}
	v, err := record.NewView(part)
	if err != nil {
		return err
	}
	bounds := v.Bounds()
	next := bounds.MaxOffset + 1
	if last {
		next = b.NextOffset
		pw.ids = append(pw.ids, b.ID())
	}
	if err := pw.seg.Write(part, bounds, next); err != nil {
		return err
	}
	pw.sink.records.Add(bounds.Count)
	return nil
}

// commit makes the open segment durable and acks its batches.
func (pw *partWriter) commit() error {
	if pw.seg == nil {
		return nil
	}
	seg := pw.seg
	pw.seg = nil
	if seg.Records() == 0 {
		seg.Abort()
		return nil
	}
	e, err := seg.Commit(pw.topicID)
	if err != nil {
		return err
	}
	pw.sink.segments.Add(1)
	pw.sink.bytes.Add(e.Size)
	pw.sink.durable.Add(e.Records)
	if len(pw.ids) > 0 {
		pw.sink.ack(pw.ids...)
		pw.ids = nil
	}
	return nil
}

// dropBelow returns the records of rec with offsets at or above next.
// Offsets within a batch ascend, so they form a suffix.
func dropBelow(rec arrow.RecordBatch, next int64) (arrow.RecordBatch, error) {
	v, err := record.NewView(rec)
	if err != nil {
		return nil, err
	}
	i := 0
	for i < v.Len() && v.Offset(i) < next {
		i++
	}
	return rec.NewSlice(int64(i), rec.NumRows()), nil
}
