package main

import (
	"context"
	"fmt"
	"io"
	"path"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"

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
	TimeWindowStart int64    `param:"time_window_start" default:"-1" help:"epoch milliseconds; segments whose records all lie before it are skipped (-1: no bound)"`
	TimeWindowEnd   int64    `param:"time_window_end" default:"-1" help:"epoch milliseconds; segments whose records all lie after it are skipped (-1: no bound)"`
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
// offset order.
type Source struct {
	sdk.UnimplementedSource
	cfg    sourceConfig
	backup segment.Backup
	queue  []work
	cur    *segment.Reader
	curW   work
	next   arrow.RecordBatch // read ahead by one to know the segment's last batch

	segmentsRead, segmentsPruned, recordsPruned, recordsRead int64
}

// NewSource returns the fs source.
func NewSource() sdk.Source { return &Source{} }

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

// Open plans the segments to read: wanted partitions, segments that can hold
// records of the time window, and only what lies at or after resume.
func (s *Source) Open(_ context.Context, resume []sdk.Position) error {
	s.backup = segment.Backup{Root: s.cfg.Path, ID: s.cfg.BackupID}
	if _, err := s.backup.ReadInfo(); err != nil {
		return err
	}
	parts, err := s.backup.Partitions()
	if err != nil {
		return err
	}
	from := map[string]int64{}
	for _, p := range resume {
		from[key(p.Topic, p.Partition)] = p.NextOffset
	}
	for _, p := range parts {
		if !s.wanted(p.Topic, p.Partition) {
			continue
		}
		start, resumed := from[key(p.Topic, p.Partition)]
		dir := s.backup.PartitionDir(p.Topic, p.Partition)
		var planned []work
		for _, e := range p.Entries {
			if resumed && e.NextOffset <= start {
				continue
			}
			if !e.Overlaps(s.cfg.TimeWindowStart, s.cfg.TimeWindowEnd) {
				s.segmentsPruned++
				s.recordsPruned += e.Records
				continue
			}
			w := work{dir: dir, entry: e, topic: p.Topic, part: p.Partition, from: -1}
			if resumed {
				w.from = start
			}
			planned = append(planned, w)
		}
		s.queue = append(s.queue, planned...)
	}
	return nil
}

// Read returns the next batch: one record batch of a segment, with the
// records below a resume position cut off.
func (s *Source) Read(ctx context.Context) (sdk.Batch, error) {
	for {
		if err := ctx.Err(); err != nil {
			return sdk.Batch{}, err
		}
		if s.cur == nil {
			if len(s.queue) == 0 {
				return sdk.Batch{}, io.EOF
			}
			s.curW, s.queue = s.queue[0], s.queue[1:]
			if s.cfg.VerifyChecksums {
				if err := segment.Verify(s.curW.dir, s.curW.entry); err != nil {
					return sdk.Batch{}, err
				}
			}
			r, err := segment.Open(s.curW.dir, s.curW.entry)
			if err != nil {
				return sdk.Batch{}, err
			}
			s.cur = r
			s.segmentsRead++
			if s.next, err = r.Next(); err != nil {
				return sdk.Batch{}, fmt.Errorf("segment %s is empty: %w", s.curW.entry.File, err)
			}
		}
		rec := s.next
		var err error
		s.next, err = s.cur.Next()
		endOfSegment := err == io.EOF
		if err != nil && !endOfSegment {
			rec.Release()
			return sdk.Batch{}, err
		}
		if endOfSegment {
			s.cur.Close()
			s.cur = nil
		}
		b, err := s.batch(rec, endOfSegment)
		rec.Release()
		if err != nil {
			return sdk.Batch{}, err
		}
		if b.Count > 0 {
			s.recordsRead += b.Count
			return b, nil
		}
	}
}

func (s *Source) batch(rec arrow.RecordBatch, endOfSegment bool) (sdk.Batch, error) {
	v, err := record.NewView(rec)
	if err != nil {
		return sdk.Batch{}, err
	}
	if s.curW.from >= 0 {
		i := 0
		for i < v.Len() && v.Offset(i) < s.curW.from {
			i++
		}
		if i > 0 {
			rec = rec.NewSlice(int64(i), rec.NumRows())
			defer rec.Release()
			if v, err = record.NewView(rec); err != nil {
				return sdk.Batch{}, err
			}
		}
	}
	bounds := v.Bounds()
	next := bounds.MaxOffset + 1
	if endOfSegment {
		next = max(next, s.curW.entry.NextOffset)
	}
	env := sdk.Envelope{
		Topic: s.curW.topic, Partition: s.curW.part, Count: bounds.Count,
		MinOffset: bounds.MinOffset, MaxOffset: bounds.MaxOffset,
		MinTimestamp: bounds.MinTimestamp, MaxTimestamp: bounds.MaxTimestamp,
		NextOffset: next,
	}
	if bounds.Count == 0 {
		return sdk.Batch{Envelope: env}, nil
	}
	data, err := record.Encode(rec)
	if err != nil {
		return sdk.Batch{}, err
	}
	return sdk.Batch{Envelope: env, Arrow: data}, nil
}

func (s *Source) Metrics() map[string]int64 {
	return map[string]int64{
		"segments_read":   s.segmentsRead,
		"segments_pruned": s.segmentsPruned,
		"records_pruned":  s.recordsPruned,
		"records_read":    s.recordsRead,
	}
}

func (s *Source) Teardown(context.Context) error {
	if s.next != nil {
		s.next.Release()
		s.next = nil
	}
	if s.cur != nil {
		s.cur.Close()
		s.cur = nil
	}
	return nil
}
