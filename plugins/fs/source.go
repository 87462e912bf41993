package main

import (
	"context"
	"fmt"
	"io"
	"path"
	"slices"
	"sync/atomic"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/record"
	"github.com/kpipe/kpipe/sdk/segment"
)

type sourceConfig struct {
	Path            string   `param:"path" required:"true" help:"folder that holds backups"`
	BackupID        string   `param:"backup_id" required:"true" help:"name of the backup to read"`
	Topics          []string `param:"topics" help:"topic names or globs to read; all topics of the backup when empty"`
	Partitions      []int32  `param:"partitions" help:"partition numbers to read; all when empty"`
	TimeWindowStart int64    `param:"time_window_start" default:"-1" help:"read only records with timestamp >= this, epoch milliseconds; segments whose records all lie before it are skipped unread (-1: no bound)"`
	TimeWindowEnd   int64    `param:"time_window_end" default:"-1" help:"read only records with timestamp <= this, epoch milliseconds; segments whose records all lie after it are skipped unread (-1: no bound)"`
	VerifyChecksums bool     `param:"verify_checksums" default:"true" help:"check each segment's size and CRC-32C against the manifest before reading it"`
}

// work is one segment to read.
type work struct {
	dir   string
	entry segment.Entry
	topic string
	part  int32
	from  int64 // skip records below this offset (resume)
}

// Source reads a backup back as batches, partition by partition, each in
// offset order. It reads every segment it needs once, from start to end,
// checking its checksum as it goes, and passes its frames on as they are
// stored; it decodes only a frame that a time window bound or a resume
// position cuts.
type Source struct {
	sdk.UnimplementedSource
	storage
	cfg    sourceConfig
	backup segment.Backup
	queue  []work
	cur    *segment.Reader
	curW   work
	meta   *sdk.Metadata // sent with the first Read
	next   int64         // position after the last batch of the current segment
	pool   *record.Pool  // frames handed to the SDK until sent

	segmentsRead, segmentsPruned, recordsPruned, recordsRead, bytesRead atomic.Int64
}

// NewSource returns the fs source.
func NewSource() sdk.Source {
	s := &Source{}
	s.storage = storage{root: &s.cfg.Path}
	return s
}

func (s *Source) Spec() sdk.Spec {
	return sdk.Spec{Name: "fs", Version: sdk.Version, Summary: "backups as Arrow segments on a local file system", Config: &s.cfg}
}

func (s *Source) Configure(context.Context) error {
	var errs param.Errors
	if err := checkBackupID(s.cfg.BackupID); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, param.CheckTimeWindow(s.cfg.TimeWindowStart, s.cfg.TimeWindowEnd)...)
	for _, g := range s.cfg.Topics {
		if _, err := path.Match(g, ""); err != nil {
			errs = append(errs, param.Errorf("topics", "bad glob %q: %v", g, err))
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

func (s *Source) wanted(topic string, partition int32) bool {
	if len(s.cfg.Partitions) > 0 && !slices.Contains(s.cfg.Partitions, partition) {
		return false
	}
	return s.wantedTopic(topic)
}

func (s *Source) wantedTopic(topic string) bool {
	if len(s.cfg.Topics) == 0 {
		return true
	}
	for _, g := range s.cfg.Topics {
		if ok, _ := path.Match(g, topic); ok {
			return true
		}
	}
	return false
}

// window is the source's time window.
func (s *Source) window() record.Window {
	return record.Window{Start: s.cfg.TimeWindowStart, End: s.cfg.TimeWindowEnd}
}

// Open plans the segments to read: wanted partitions, segments that can hold
// records of the time window, and only what lies at or after resume.
func (s *Source) Open(_ context.Context, o sdk.SourceOptions) error {
	s.pool = record.NewPoolWithLimit(o.InFlightBytes / 4)
	s.backup = segment.Backup{Root: s.cfg.Path, ID: s.cfg.BackupID}
	if _, err := s.backup.ReadInfo(); err != nil {
		return err
	}
	parts, err := s.backup.Partitions()
	if err != nil {
		return err
	}
	meta, err := readMetadata(s.backup, parts)
	if err != nil {
		return err
	}
	s.meta = &sdk.Metadata{}
	for _, t := range meta.Topics {
		if s.wantedTopic(t.Name) {
			s.meta.Topics = append(s.meta.Topics, t)
		}
	}
	from := map[string]int64{}
	for _, p := range o.Resume {
		from[key(p.Topic, p.Partition)] = p.NextOffset
	}
	win := s.window()
	for _, p := range parts {
		if !s.wanted(p.Topic, p.Partition) {
			continue
		}
		start, resumed := from[key(p.Topic, p.Partition)]
		dir := s.backup.PartitionDir(p.Topic, p.Partition)
		for _, e := range p.Entries {
			if resumed && e.NextOffset <= start {
				continue
			}
			if !win.Overlaps(e.MinTimestamp, e.MaxTimestamp) {
				s.segmentsPruned.Add(1)
				s.recordsPruned.Add(e.Records)
				continue
			}
			w := work{dir: dir, entry: e, topic: p.Topic, part: p.Partition, from: -1}
			if resumed {
				w.from = start
			}
			s.queue = append(s.queue, w)
		}
	}
	return nil
}

// Read returns the next batch: one frame of a segment as stored, or, at a
// segment's end, a batch that only moves the position past it. Batches
// wholly outside the time window are skipped.
func (s *Source) Read(ctx context.Context) (sdk.Batch, error) {
	if s.meta != nil {
		m := s.meta
		s.meta = nil
		return sdk.Batch{Metadata: m}, nil
	}
	for {
		if err := ctx.Err(); err != nil {
			return sdk.Batch{}, err
		}
		if s.cur == nil {
			if len(s.queue) == 0 {
				return sdk.Batch{}, io.EOF
			}
			s.curW, s.queue = s.queue[0], s.queue[1:]
			r, err := segment.OpenVerified(s.curW.dir, s.curW.entry, s.cfg.VerifyChecksums)
			if err != nil {
				return sdk.Batch{}, s.partitionFailed(s.curW.entry.MinOffset, err)
			}
			s.cur, s.next = r, -1
			s.segmentsRead.Add(1)
		}
		frame, err := s.cur.NextFrame()
		if err == io.EOF {
			s.closeSegment()
			if end := s.curW.entry.NextOffset; end > s.next {
				// The segment's position lies past its last record
				// (transaction markers, say): move there.
				return sdk.Batch{Envelope: sdk.Envelope{Topic: s.curW.topic, Partition: s.curW.part, NextOffset: end}}, nil
			}
			continue
		}
		if err != nil {
			return sdk.Batch{}, s.partitionFailed(max(s.next, s.curW.entry.MinOffset), err)
		}
		b, ok, err := s.batch(frame)
		if err != nil {
			return sdk.Batch{}, s.partitionFailed(max(s.next, s.curW.entry.MinOffset), fmt.Errorf("segment %s: %w", s.curW.entry.File, err))
		}
		if ok {
			s.recordsRead.Add(b.Count)
			return b, nil
		}
	}
}

// partitionFailed stops reading the current partition after err: its
// segment is closed and its other segments are dropped from the queue, so
// that the other partitions go on (sdk.PartitionSource). offset is where
// the partition stopped.
func (s *Source) partitionFailed(offset int64, err error) error {
	topic, part := s.curW.topic, s.curW.part
	if s.cur != nil {
		s.closeSegment()
	}
	s.queue = slices.DeleteFunc(s.queue, func(w work) bool { return w.topic == topic && w.part == part })
	return &sdk.PartitionError{Topic: topic, Partition: part, Offset: offset, Code: "BACKUP_DAMAGED", Err: err}
}

// ResumePartition implements sdk.PartitionSource. The source's failures are
// never retryable (a damaged backup stays damaged), so it has nothing to
// resume.
func (s *Source) ResumePartition(context.Context, string, int32) error { return nil }

func (s *Source) closeSegment() {
	s.bytesRead.Add(s.cur.BytesRead())
	s.cur.Close()
	s.cur = nil
}

// batch turns a frame into a batch; ok is false for a frame with nothing to
// send (outside the window, or below the resume position). A frame passes
// as stored unless a time window bound or the resume position falls inside
// it: then it is cut to the records that remain.
func (s *Source) batch(frame []byte) (sdk.Batch, bool, error) {
	bounds, err := record.FrameBounds(frame)
	if err != nil {
		return sdk.Batch{}, false, err
	}
	env := sdk.Envelope{Topic: s.curW.topic, Partition: s.curW.part, NextOffset: bounds.MaxOffset + 1}
	s.next = env.NextOffset
	from, win := s.curW.from, s.window()
	if from >= 0 && bounds.MaxOffset < from {
		return sdk.Batch{}, false, nil
	}
	if !win.Overlaps(bounds.MinTimestamp, bounds.MaxTimestamp) {
		s.recordsPruned.Add(bounds.Count)
		return sdk.Batch{}, false, nil
	}
	if (from >= 0 && bounds.MinOffset < from) || !win.Covers(bounds.MinTimestamp, bounds.MaxTimestamp) {
		return s.cut(frame, env, from, win)
	}
	env.SetBounds(bounds)
	buf := s.pool.Allocate(len(frame))
	copy(buf, frame)
	return sdk.Batch{Envelope: env, Arrow: buf}.WithRelease(func() { s.pool.Free(buf) }), true, nil
}

// cut returns the records of frame at or after offset from (all when from
// is negative) whose timestamps lie in win; those outside win count as
// pruned. Timestamps need not grow with offsets, so every record is looked
// at.
func (s *Source) cut(frame []byte, env sdk.Envelope, from int64, win record.Window) (sdk.Batch, bool, error) {
	rec, err := record.Decode(frame)
	if err != nil {
		return sdk.Batch{}, false, err
	}
	defer rec.Release()
	v, err := record.NewView(rec)
	if err != nil {
		return sdk.Batch{}, false, err
	}
	bld := record.NewBuilder(nil)
	defer bld.Release()
	kept, pruned := 0, int64(0)
	for i := range v.Len() {
		switch {
		case v.Offset(i) < from:
		case !win.Contains(v.Timestamp(i)):
			pruned++
		default:
			r := v.Record(i)
			bld.Append(&r)
			kept++
		}
	}
	s.recordsPruned.Add(pruned)
	if kept == 0 {
		return sdk.Batch{}, false, nil
	}
	b, err := sdk.NewBatch(env.Topic, env.Partition, bld, env.NextOffset)
	return b, err == nil, err
}

func (s *Source) Metrics() map[string]int64 {
	return map[string]int64{
		"segments_read":   s.segmentsRead.Load(),
		"segments_pruned": s.segmentsPruned.Load(),
		"records_pruned":  s.recordsPruned.Load(),
		"records_read":    s.recordsRead.Load(),
		"bytes_read":      s.bytesRead.Load(),
	}
}

func (s *Source) Teardown(context.Context) error {
	if s.cur != nil {
		s.closeSegment()
	}
	return nil
}
