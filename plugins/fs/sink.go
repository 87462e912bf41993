package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/record"
	"github.com/kpipe/kpipe/sdk/segment"
)

type sinkConfig struct {
	Path              string        `param:"path" required:"true" help:"folder that holds backups"`
	BackupID          string        `param:"backup_id" required:"true" help:"name of the backup under path; a run resumes a backup of the same id"`
	Compression       string        `param:"compression" default:"zstd" help:"segment compression: zstd, lz4 or none"`
	SegmentMaxBytes   int64         `param:"segment_max_bytes" default:"67108864" help:"a segment is committed once it reaches this size"`
	SegmentMaxRecords int64         `param:"segment_max_records" default:"0" help:"a segment is committed once it holds this many records; 0 for no limit"`
	FlushInterval     time.Duration `param:"flush_interval" default:"5s" help:"a segment is committed at the latest this long after its first record, bounding how much a crash makes the next run read again"`
	LockTimeout       time.Duration `param:"lock_timeout" default:"30s" help:"how long to wait for another writer of the same backup to finish"`
}

// Sink writes batches into a backup. Each partition has its own writer
// goroutine, so that segments of different partitions are encoded and
// compressed in parallel and one slow partition does not hold up the others.
// It is idempotent: a batch, or the part of one, below the durable position
// of its partition is acked and skipped.
type Sink struct {
	sdk.UnimplementedSink
	storage
	cfg    sinkConfig
	backup segment.Backup
	codec  record.Codec
	ack    sdk.Acker
	lock   *os.File
	pool   *record.Pool // batches decoded to be cut live only until written
	metaMu sync.Mutex   // metadata.json

	mu    sync.Mutex
	parts map[string]*partWriter
	err   error // the first write or commit failure; later calls return it
	wg    sync.WaitGroup

	records, segments, bytes, skipped atomic.Int64
}

// NewSink returns the fs sink.
func NewSink() sdk.Sink {
	s := &Sink{}
	s.storage = storage{root: &s.cfg.Path}
	return s
}

func (s *Sink) Spec() sdk.Spec {
	return sdk.Spec{Name: "fs", Version: sdk.Version, Summary: "backups as Arrow segments on a local file system", Config: &s.cfg}
}

func (s *Sink) Configure(context.Context) error {
	var errs param.Errors
	var err error
	if s.codec, err = record.ParseCodec(s.cfg.Compression); err != nil {
		errs = append(errs, param.Errorf("compression", "%v", err))
	}
	if err := checkBackupID(s.cfg.BackupID); err != nil {
		errs = append(errs, err)
	}
	if s.cfg.SegmentMaxBytes <= 0 {
		errs = append(errs, param.Errorf("segment_max_bytes", "must be positive, got %d", s.cfg.SegmentMaxBytes))
	}
	if s.cfg.FlushInterval <= 0 {
		errs = append(errs, param.Errorf("flush_interval", "must be positive, got %s", s.cfg.FlushInterval))
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

func checkBackupID(id string) *param.Error {
	if id == "" || id == "." || id == ".." || filepath.Base(id) != id {
		return param.Errorf("backup_id", "%q is not a valid backup id: use a name without slashes, such as \"daily-2024-11-10\"", id)
	}
	return nil
}

// Open locks the backup against other writers, writes backup.json on the
// first run, and repairs what a crash may have left.
func (s *Sink) Open(ctx context.Context, ack sdk.Acker) error {
	s.ack = ack
	s.pool = record.NewPoolWithLimit(sdk.InFlightBytes() / 8)
	s.backup = segment.Backup{Root: s.cfg.Path, ID: s.cfg.BackupID}
	if err := os.MkdirAll(s.backup.Dir(), 0o755); err != nil {
		return fmt.Errorf("create backup folder: %w", err)
	}
	if err := s.acquireLock(ctx); err != nil {
		return err
	}
	if _, err := s.backup.ReadInfo(); errors.Is(err, segment.ErrNotFound) {
		info := segment.Info{Format: segment.FormatName, Version: segment.FormatVersion, BackupID: s.cfg.BackupID, CreatedAt: time.Now().UTC()}
		if err := writeJSON(filepath.Join(s.backup.Dir(), "backup.json"), info); err != nil {
			return err
		}
	} else if err != nil {
		return err // never overwrite what is there but cannot be read
	}
	s.parts = map[string]*partWriter{}
	parts, err := s.backup.Partitions()
	if err != nil {
		return err
	}
	for _, p := range parts {
		dir := s.backup.PartitionDir(p.Topic, p.Partition)
		entries, err := segment.RepairPartition(dir)
		if err != nil {
			return err
		}
		next := int64(-1)
		if len(entries) > 0 {
			next = entries[len(entries)-1].NextOffset
		}
		s.start(key(p.Topic, p.Partition), dir, next)
	}
	return nil
}

// acquireLock takes an exclusive flock on the backup, so that two writers
// can never interleave segments of one backup id.
func (s *Sink) acquireLock(ctx context.Context) error {
	f, err := os.OpenFile(filepath.Join(s.backup.Dir(), ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("lock backup: %w", err)
	}
	deadline := time.Now().Add(s.cfg.LockTimeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			s.lock = f
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return fmt.Errorf("lock backup: %w", err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return fmt.Errorf("backup %q under %s is being written by another process; wait for it to finish (lock_timeout is %s)", s.cfg.BackupID, s.cfg.Path, s.cfg.LockTimeout)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func key(topic string, partition int32) string { return fmt.Sprintf("%s/%d", topic, partition) }

// Codec is the codec segments store: sources encode batches in it, so the
// sink writes their frames as they come.
func (s *Sink) Codec() record.Codec { return s.codec }

// WriteMetadata stores the topics' metadata in the backup (metadata.json),
// merged with what earlier runs stored.
func (s *Sink) WriteMetadata(_ context.Context, m sdk.Metadata) error {
	s.metaMu.Lock()
	defer s.metaMu.Unlock()
	return writeMetadata(s.backup, m)
}

// DurablePositions returns the position after the last committed segment of
// every partition in the backup.
func (s *Sink) DurablePositions(context.Context) ([]sdk.Position, error) {
	parts, err := s.backup.Partitions()
	if err != nil {
		return nil, err
	}
	var ps []sdk.Position
	for _, p := range parts {
		if n := p.NextOffset(); n >= 0 {
			ps = append(ps, sdk.Position{Topic: p.Topic, Partition: p.Partition, NextOffset: n})
		}
	}
	return ps, nil
}

func (s *Sink) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

func (s *Sink) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// start runs the writer goroutine of a partition. The caller holds s.mu or
// is the only goroutine (Open).
func (s *Sink) start(k, dir string, next int64) *partWriter {
	pw := &partWriter{sink: s, dir: dir, next: next, ops: make(chan op, 4)}
	s.parts[k] = pw
	s.wg.Add(1)
	go pw.run()
	return pw
}

// Write hands the batch to its partition's writer; it blocks while that
// writer is busy with earlier batches (backpressure).
func (s *Sink) Write(ctx context.Context, b sdk.Batch) error {
	if err := s.failed(); err != nil {
		return err
	}
	k := key(b.Topic, b.Partition)
	s.mu.Lock()
	pw := s.parts[k]
	if pw == nil {
		pw = s.start(k, s.backup.PartitionDir(b.Topic, b.Partition), -1)
	}
	s.mu.Unlock()
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
	return map[string]int64{
		"records_written":                s.records.Load(),
		"segments_written":               s.segments.Load(),
		"bytes_written":                  s.bytes.Load(),
		"records_skipped_already_stored": s.skipped.Load(),
	}
}

// Teardown stops the writers; a segment still open was never acked and is
// dropped (the next run reads those records again).
func (s *Sink) Teardown(context.Context) error {
	s.mu.Lock()
	for _, pw := range s.parts {
		close(pw.ops)
	}
	s.parts = nil
	s.mu.Unlock()
	s.wg.Wait()
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
	return nil
}

// op is a batch to write or, with flushed set, a request to commit.
type op struct {
	batch   sdk.Batch
	flushed chan error
}

// partWriter owns the open segment of one topic-partition; only its own
// goroutine touches its fields.
type partWriter struct {
	sink *Sink
	dir  string
	next int64 // durable next offset; -1 when nothing is stored
	w    *segment.Writer
	ids  []sdk.BatchID // batches whose end is in the open segment
	ops  chan op
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
				if pw.w != nil {
					pw.w.Abort()
				}
				return
			}
			if o.flushed != nil {
				o.flushed <- pw.do(pw.commit)
				continue
			}
			pw.do(func() error { return pw.write(o.batch) })
		case <-tick.C:
			if pw.w != nil && pw.w.Age() >= s.cfg.FlushInterval {
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
	stored := pw.next >= 0 && b.MinOffset < pw.next
	room := s.cfg.SegmentMaxRecords <= 0 || b.Count <= s.cfg.SegmentMaxRecords-pw.records()
	if stored || !room {
		return pw.cut(b)
	}
	if err := pw.open(); err != nil {
		return err
	}
	if err := pw.w.WriteFrame(b.Arrow, b.Bounds(), b.NextOffset); err != nil {
		return err
	}
	pw.ids = append(pw.ids, b.ID())
	s.records.Add(b.Count)
	return pw.maybeCommit()
}

// records is the number of records in the open segment.
func (pw *partWriter) records() int64 {
	if pw.w == nil {
		return 0
	}
	return pw.w.Records()
}

// open starts a segment unless one is open.
func (pw *partWriter) open() error {
	if pw.w != nil {
		return nil
	}
	var err error
	pw.w, err = segment.NewWriter(pw.dir, pw.sink.cfg.Compression)
	return err
}

// maybeCommit commits the open segment once it is full.
func (pw *partWriter) maybeCommit() error {
	s := pw.sink
	if pw.w.Size() >= s.cfg.SegmentMaxBytes || (s.cfg.SegmentMaxRecords > 0 && pw.w.Records() >= s.cfg.SegmentMaxRecords) {
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
	if pw.next >= 0 && b.MinOffset < pw.next {
		// Already stored, wholly or in part: a replay after a resume.
		if rec, err = dropBelow(rec, pw.next); err != nil {
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
		if err := pw.open(); err != nil {
			return err
		}
		end := n
		if s.cfg.SegmentMaxRecords > 0 {
			end = min(n, start+s.cfg.SegmentMaxRecords-pw.w.Records())
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
	if err := pw.w.Write(part, bounds, next); err != nil {
		return err
	}
	pw.sink.records.Add(bounds.Count)
	return nil
}

// commit makes the open segment durable and acks its batches.
func (pw *partWriter) commit() error {
	if pw.w == nil {
		return nil
	}
	e, err := pw.w.Commit()
	pw.w = nil
	if err != nil {
		return err
	}
	pw.next = e.NextOffset
	pw.sink.segments.Add(1)
	pw.sink.bytes.Add(e.Size)
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

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return segment.WriteFileAtomic(path, data)
}
