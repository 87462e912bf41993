package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
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

// partWriter is the open segment of one topic-partition.
type partWriter struct {
	dir  string
	next int64 // durable next offset; -1 when nothing is stored
	w    *segment.Writer
	seqs []uint64
}

// Sink writes batches into a backup. It is idempotent: a batch, or the part
// of one, below the durable position of its partition is acked and skipped.
type Sink struct {
	sdk.UnimplementedSink
	cfg    sinkConfig
	backup segment.Backup
	ack    sdk.Acker
	lock   *os.File

	mu    sync.Mutex
	parts map[string]*partWriter
	stop  chan struct{}
	done  chan struct{}
	err   error // a background commit failure, returned by the next call

	records, segments, bytes, skipped int64
}

// NewSink returns the fs sink.
func NewSink() sdk.Sink { return &Sink{} }

func (s *Sink) Spec() sdk.Spec {
	return sdk.Spec{Name: "fs", Version: sdk.Version, Summary: "backups as Arrow segments on a local file system", Config: &s.cfg}
}

func (s *Sink) Configure(context.Context) error {
	var errs param.Errors
	if _, err := segment.IPCOptions(s.cfg.Compression); err != nil {
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
	s.backup = segment.Backup{Root: s.cfg.Path, ID: s.cfg.BackupID}
	if err := os.MkdirAll(s.backup.Dir(), 0o755); err != nil {
		return fmt.Errorf("create backup folder: %w", err)
	}
	if err := s.acquireLock(ctx); err != nil {
		return err
	}
	if _, err := s.backup.ReadInfo(); err != nil {
		info := segment.Info{Format: "kpipe-backup", Version: segment.FormatVersion, BackupID: s.cfg.BackupID, CreatedAt: time.Now().UTC()}
		if err := writeJSON(filepath.Join(s.backup.Dir(), "backup.json"), info); err != nil {
			return err
		}
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
		pw := &partWriter{dir: dir, next: -1}
		if len(entries) > 0 {
			pw.next = entries[len(entries)-1].NextOffset
		}
		s.parts[key(p.Topic, p.Partition)] = pw
	}
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	go s.flushLoop()
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

func (s *Sink) Write(_ context.Context, b sdk.Batch) error {
	if b.Count == 0 {
		s.ack(b.Seq)
		return nil
	}
	rec, err := record.Decode(b.Arrow)
	if err != nil {
		return err
	}
	defer rec.Release()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	k := key(b.Topic, b.Partition)
	pw := s.parts[k]
	if pw == nil {
		pw = &partWriter{dir: s.backup.PartitionDir(b.Topic, b.Partition), next: -1}
		s.parts[k] = pw
	}
	if pw.next >= 0 && b.MinOffset < pw.next {
		// Already stored, wholly or in part: a replay after a resume.
		if rec, err = dropBelow(rec, pw.next); err != nil {
			return err
		}
		defer rec.Release()
		s.skipped += b.Count - rec.NumRows()
		if rec.NumRows() == 0 {
			s.ack(b.Seq)
			return nil
		}
	}
	// Fill segments up to segment_max_records exactly, splitting the batch
	// where needed. The batch is acked with the segment that gets its end.
	for start, n := int64(0), rec.NumRows(); start < n; {
		if pw.w == nil {
			if pw.w, err = segment.NewWriter(pw.dir, s.cfg.Compression); err != nil {
				return err
			}
		}
		end := n
		if s.cfg.SegmentMaxRecords > 0 {
			end = min(n, start+s.cfg.SegmentMaxRecords-pw.w.Records())
		}
		if err := s.writePart(pw, rec, start, end, b, end == n); err != nil {
			return err
		}
		start = end
		if pw.w.Size() >= s.cfg.SegmentMaxBytes || (s.cfg.SegmentMaxRecords > 0 && pw.w.Records() >= s.cfg.SegmentMaxRecords) {
			if err := s.commit(pw); err != nil {
				return err
			}
		}
	}
	return nil
}

// writePart writes rows [start, end) of rec, which belong to batch b, to the
// partition's open segment. last says the part ends the batch.
func (s *Sink) writePart(pw *partWriter, rec arrow.RecordBatch, start, end int64, b sdk.Batch, last bool) error {
	part := rec
	if start > 0 || end < rec.NumRows() {
		part = rec.NewSlice(start, end)
		defer part.Release()
	}
	v, err := record.NewView(part)
	if err != nil {
		return err
	}
	bounds := boundsOf(v)
	next := bounds.MaxOffset + 1
	if last {
		next = b.NextOffset
		pw.seqs = append(pw.seqs, b.Seq)
	}
	if err := pw.w.Write(part, bounds, next); err != nil {
		return err
	}
	s.records += bounds.Count
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

func boundsOf(v *record.View) record.Bounds {
	var b record.Bounds
	for i := 0; i < v.Len(); i++ {
		o, ts := v.Offset(i), v.Timestamp(i)
		if b.Count == 0 {
			b = record.Bounds{MinOffset: o, MaxOffset: o, MinTimestamp: ts, MaxTimestamp: ts}
		}
		b.Count++
		b.MinOffset, b.MaxOffset = min(b.MinOffset, o), max(b.MaxOffset, o)
		b.MinTimestamp, b.MaxTimestamp = min(b.MinTimestamp, ts), max(b.MaxTimestamp, ts)
	}
	return b
}

// commit makes the open segment of pw durable and acks its batches. The
// caller holds s.mu.
func (s *Sink) commit(pw *partWriter) error {
	if pw.w == nil {
		return nil
	}
	e, err := pw.w.Commit()
	pw.w = nil
	if err != nil {
		s.err = err
		return err
	}
	pw.next = e.NextOffset
	s.segments++
	s.bytes += e.Size
	s.ack(pw.seqs...)
	pw.seqs = nil
	return nil
}

// flushLoop commits segments older than flush_interval.
func (s *Sink) flushLoop() {
	defer close(s.done)
	t := time.NewTicker(max(s.cfg.FlushInterval/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.mu.Lock()
			for _, pw := range s.parts {
				if pw.w != nil && pw.w.Age() >= s.cfg.FlushInterval {
					if err := s.commit(pw); err != nil {
						sdk.Logger().Error("commit segment", "error", err)
					}
				}
			}
			s.mu.Unlock()
		}
	}
}

func (s *Sink) Flush(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	for _, pw := range s.parts {
		if err := s.commit(pw); err != nil {
			return err
		}
	}
	return nil
}

func (s *Sink) Metrics() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return map[string]int64{
		"records_written":                s.records,
		"segments_written":               s.segments,
		"bytes_written":                  s.bytes,
		"records_skipped_already_stored": s.skipped,
	}
}

func (s *Sink) Teardown(context.Context) error {
	if s.stop != nil {
		close(s.stop)
		<-s.done
		s.stop = nil
	}
	s.mu.Lock()
	for _, pw := range s.parts {
		if pw.w != nil {
			pw.w.Abort() // never acked: the next run reads these records again
			pw.w = nil
		}
	}
	s.mu.Unlock()
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
	return nil
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return segment.WriteFileAtomic(path, data)
}
