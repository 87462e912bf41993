package storage

import (
	"context"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/celexpr"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/record"
)

type sourceConfig struct {
	BackupID        string   `param:"backup_id" required:"true" help:"name of the backup to read"`
	Topics          []string `param:"topics" help:"topic names or globs to read; all topics of the backup when empty"`
	Partitions      []int32  `param:"partitions" help:"partition numbers to read; all when empty"`
	TimeWindowStart int64    `param:"time_window_start" default:"-1" help:"read only records with timestamp >= this, epoch milliseconds; record batches whose records all lie before it are not read (-1: no bound)"`
	TimeWindowEnd   int64    `param:"time_window_end" default:"-1" help:"read only records with timestamp <= this, epoch milliseconds; record batches whose records all lie after it are not read (-1: no bound)"`
	Filter          string   `param:"filter" help:"CEL expression over topic, partition, offset, timestamp, timestamp_type, key, value and headers (see package sdk/celexpr): only records for which it is true are read, such as !(key in [b\"user-17\", b\"user-42\"]); every batch of the window is then decoded to evaluate it (empty: every record of the window)"`
	// TopicIncarnations picks, by topic name, which incarnation of a topic
	// deleted and re-created during the backup to read.
	TopicIncarnations map[string]string `param:"topic_incarnations" help:"for a topic re-created during the backup, the topic ID of the incarnation to read, by topic name; the current (latest) one when not listed"`
	// Preflight checks what the run will read before sending anything.
	Preflight bool `param:"preflight" default:"true" help:"before sending anything, check that every segment of the chosen partitions is there with its size and every manifest continuous (the plain validation of them): a problem fails the run before it sends a batch; false lets a damaged partition fail alone while the others are read"`
	// Verify checks every segment the run will read before sending any.
	Verify bool `param:"verify" help:"before sending anything, read every segment of the chosen partitions and check each batch against its checksum (a deep validation of them); without it the run checks before sending that each segment is there with its size and each manifest continuous, and a checksum mismatch found while reading stops the partition"`
	// AllowEmpty lets a first run that would read no record succeed.
	AllowEmpty bool `param:"allow_empty" help:"let a run read no record at all: a time window outside the backup's records, or topics and partitions that match none, end without error (else they fail, naming the backup's range)"`
	// MetadataOnly sends the metadata of what the run would read, and no
	// record.
	MetadataOnly bool `param:"metadata_only" help:"send only the metadata of what the run would read (topics, partitions read, largest record, timestamps), after the same checks of the backup, then end: for a sink that only checks its target"`
	// MaxConcurrentPartitions is how many partitions are read from the
	// store at once.
	MaxConcurrentPartitions int `param:"max_concurrent_partitions" default:"1" help:"how many partitions are read from storage at once: above 1, the segments queued next, of the partition being sent and of the next ones up to this many partitions, are read into memory ahead (at most twice this many segments, within half the run's in-flight bytes); batches are still sent one partition after another, in the same order"`
}

// work is one entry of a partition to read: the batches of a segment that
// can hold wanted records, or a gap to move past.
type work struct {
	topic string
	part  int32
	entry Entry
	which []int // the segment's batches to read
	from  int64 // skip records below this offset (resume); -1 for none
	// ahead is the segment's reader once it is read ahead.
	ahead *BatchReader
}

// bytes is how many bytes of its segment the work reads.
func (w work) bytes() int64 {
	var n int64
	for _, i := range w.which {
		n += w.entry.Batches[i].Length
	}
	return n
}

// Source reads a backup back as batches, partition by partition, each in
// offset order. From each segment it reads only the record batches that a
// time window and a resume position leave (their byte ranges, adjacent ones
// at once), checking each against its CRC-32C, and passes their frames on
// as stored; it decodes only a batch that a window bound or the resume
// position cuts.
type Source struct {
	sdk.UnimplementedSource
	*service
	cfg   sourceConfig
	b     *Backup
	queue []work
	cur   *BatchReader
	curW  work
	meta  *sdk.Metadata // sent with the first Read
	next  int64         // position after the last batch of the current entry
	pool  *record.Pool  // frames handed to the SDK until sent
	// aheadBytes bounds the bytes of the segments read ahead.
	aheadBytes int64
	// empty, set when a first run could read records, says why none came
	// if none does (every record of the batches read fell outside the
	// window).
	empty error
	// chosen is the selection's window and partitions as a CEL program,
	// filter the user's filter (nil: none); they look at the records of
	// the batches not sent whole.
	chosen, filter *celexpr.Program

	segmentsRead, segmentsPruned, batchesPruned, batchesDecoded, recordsPruned, recordsFiltered, recordsRead, segmentsAhead atomic.Int64
}

// NewSource returns the source of a storage plugin.
func NewSource(p Plugin) *Source {
	return &Source{service: &service{plugin: p}}
}

func (s *Source) Spec() sdk.Spec { return s.spec(&s.cfg) }

func (s *Source) Configure(ctx context.Context) error {
	errs := s.configure(ctx)
	if err := CheckID(s.cfg.BackupID); err != nil {
		errs = append(errs, param.Errorf("backup_id", "%v", err))
	}
	errs = append(errs, param.CheckTimeWindow(s.cfg.TimeWindowStart, s.cfg.TimeWindowEnd)...)
	var err error
	if s.chosen, s.filter, err = s.selection().Programs(); err != nil {
		errs = append(errs, param.Errorf("filter", "%v", err))
	}
	if s.cfg.MaxConcurrentPartitions < 1 {
		errs = append(errs, param.Errorf("max_concurrent_partitions", "must be 1 or more, got %d", s.cfg.MaxConcurrentPartitions))
	}
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

// selection is what the source reads.
func (s *Source) selection() Selection {
	return Selection{Topics: s.cfg.Topics, Partitions: s.cfg.Partitions, Window: s.window(), Filter: s.cfg.Filter}
}

func (s *Source) window() record.Window {
	return record.Window{Start: s.cfg.TimeWindowStart, End: s.cfg.TimeWindowEnd}
}

// Open plans what to read: the wanted partitions' entries at or after the
// resume positions, and of each segment the batches that can hold records
// of the time window.
func (s *Source) Open(ctx context.Context, o sdk.SourceOptions) error {
	s.pool = record.NewPoolWithLimit(o.InFlightBytes / 4)
	s.aheadBytes = o.InFlightBytes / 2
	store, err := s.open(ctx)
	if err != nil {
		return err
	}
	if s.b, err = OpenBackup(ctx, store, s.cfg.BackupID); err != nil {
		return fmt.Errorf("%s: %w", s.plugin.Location(), err)
	}
	if err := s.b.UseKey(s.key); err != nil {
		return fmt.Errorf("%s: %w", s.plugin.Location(), err)
	}
	var manifests map[sdk.TopicPartition]Manifest // read by the check, if it ran
	if s.cfg.Preflight || s.cfg.Verify {
		if manifests, err = s.preflight(ctx); err != nil {
			return err
		}
	}
	meta, err := s.b.AllMetadata(ctx)
	if err != nil {
		return err
	}
	if s.meta, err = s.incarnations(meta); err != nil {
		return err
	}
	from := map[string]int64{}
	for _, p := range o.Resume {
		from[fmt.Sprintf("%s/%d", p.Topic, p.Partition)] = p.NextOffset
	}
	sel := s.selection()
	var partitions, batches int
	held := record.Window{Start: -1, End: -1} // the timestamps of the wanted partitions' records
	for ti, t := range s.meta.Topics {
		tm := &s.meta.Topics[ti]
		tm.ReadPartitions, tm.LargestRecord, tm.Timestamps = nil, nil, nil // this run's, not stored with the backup
		var chosen []int32
		for p := range t.Partitions {
			if !sel.Wants(t.Name, p) {
				continue
			}
			partitions++
			chosen = append(chosen, p)
			m, ok := manifests[sdk.TopicPartition{Topic: t.Name, Partition: p}]
			if !ok {
				if m, err = s.b.Manifest(ctx, t.Name, p); err != nil {
					return err
				}
			}
			m = m.Of(t.ID.String())
			start, resumed := from[fmt.Sprintf("%s/%d", t.Name, p)]
			if !resumed {
				start = -1
			}
			for _, e := range m.Entries {
				if e.NextOffset <= start {
					continue
				}
				w := work{topic: t.Name, part: p, entry: e, from: start}
				if e.Kind == KindSegment {
					for _, bi := range e.Batches {
						held = held.Widen(bi.MinTimestamp, bi.MaxTimestamp)
					}
					var pruned []int
					w.which, pruned = sel.Batches(e, start)
					batches += len(w.which)
					if len(w.which) > 0 && (len(tm.ReadPartitions) == 0 || tm.ReadPartitions[len(tm.ReadPartitions)-1] != p) {
						tm.ReadPartitions = append(tm.ReadPartitions, p)
					}
					for _, i := range w.which {
						// A batch a window bound, the filter or the resume
						// position cuts may lose its largest record: the
						// sink measures such a batch's records when it gets
						// them.
						bi := e.Batches[i]
						tm.Timestamps = tm.Timestamps.Widen(&sdk.TimestampRange{Min: max(bi.MinTimestamp, sel.Window.Start), Max: maxEnd(bi.MaxTimestamp, sel.Window.End)})
						if bi.MaxRecordBytes > 0 && sel.Whole(bi, start) {
							tm.LargestRecord = tm.LargestRecord.Larger(&sdk.LargestRecord{Topic: t.Name, Partition: p, MinOffset: bi.MinOffset, MaxOffset: bi.MaxOffset, Bytes: bi.MaxRecordBytes})
						}
					}
					for _, i := range pruned {
						s.batchesPruned.Add(1)
						s.recordsPruned.Add(e.Batches[i].Records)
					}
					if len(w.which) == 0 {
						s.segmentsPruned.Add(1)
					}
				}
				s.queue = append(s.queue, w)
			}
		}
		if tm.ReadPartitions == nil { // no record to read: the partitions chosen
			tm.ReadPartitions = chosen
		}
	}
	if len(o.Resume) > 0 || s.cfg.AllowEmpty || s.cfg.MetadataOnly {
		return nil
	}
	return s.checkSelection(meta, partitions, batches, held)
}

// checkSelection fails a first run that would read nothing: topics or
// partitions that match none of the backup's, or a time window in which
// no batch of the backup can hold a record. A window that overlaps
// batches whose records all lie outside it is found at the end (Read).
func (s *Source) checkSelection(meta Metadata, partitions, batches int, held record.Window) error {
	hint := "; or allow an empty run with --allow-empty (allow_empty = true)"
	if len(s.meta.Topics) == 0 {
		var names []string
		for _, t := range meta.Topics {
			names = append(names, t.Name)
		}
		return fmt.Errorf("no topic of backup %q matches topics %s: it holds %s%s", s.cfg.BackupID, strings.Join(s.cfg.Topics, ", "), orNone(names), hint)
	}
	if partitions == 0 {
		var have []string
		for _, t := range s.meta.Topics {
			have = append(have, fmt.Sprintf("%s has %d", t.Name, t.Partitions))
		}
		return fmt.Errorf("no partition of backup %q matches source_partitions %v: %s%s", s.cfg.BackupID, s.cfg.Partitions, strings.Join(have, ", "), hint)
	}
	range_ := "holds no records"
	if held.Start >= 0 {
		range_ = "holds records from " + held.String()
	}
	s.empty = fmt.Errorf("No records found in specified time window %s: backup %q (of the topics and partitions chosen) %s; choose a window in that range%s",
		s.window(), s.cfg.BackupID, range_, hint)
	if batches == 0 {
		return s.empty
	}
	return nil
}

// maxEnd is the latest of a batch's timestamps up to a window's end (-1:
// open).
func maxEnd(ts, end int64) int64 {
	if end >= 0 {
		return min(ts, end)
	}
	return ts
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "no topics"
	}
	return strings.Join(names, ", ")
}

// preflight validates the chosen partitions of the backup before anything
// is read: each segment there with its size and each manifest continuous,
// and with verify every batch against its checksum. A problem fails the
// run before it sends anything. It returns the partitions' manifests,
// read once for the check and the run.
func (s *Source) preflight(ctx context.Context) (map[sdk.TopicPartition]Manifest, error) {
	rep, manifests, err := ValidateSelected(ctx, s.b, s.cfg.Verify, s.selection())
	if err != nil {
		return nil, fmt.Errorf("%s: check the backup before reading it: %w", s.plugin.Location(), err)
	}
	// An object that is no part of a backup's format (a file someone put
	// in the folder) is not read: it is logged, not fatal. A segment no
	// entry names is: its records are lost to the restore.
	var problems []Problem
	for _, p := range rep.Problems {
		if p.Check == CheckUnknownObject && p.Segment == "" {
			sdk.Logger().Warn("the backup holds an object that is no part of it; the run does not read it", "object", p.Object)
			continue
		}
		problems = append(problems, p)
	}
	rep.Problems = problems
	if len(rep.Problems) == 0 {
		return manifests, nil
	}
	p := rep.Problems[0]
	where := p.Topic
	if p.Partition != nil {
		where += fmt.Sprintf("/%d", *p.Partition)
	}
	more := ""
	if n := len(rep.Problems) - 1; n > 0 {
		more = fmt.Sprintf(" (and %d more problems)", n)
	}
	return nil, fmt.Errorf("backup %q at %s is damaged where this run reads, so nothing was read: %s: %s%s; kpipe validate lists every problem",
		s.cfg.BackupID, s.plugin.Location(), where, p.Message, more)
}

// incarnations returns the metadata of the wanted topics, each in the
// incarnation topic_incarnations names, else its current one.
func (s *Source) incarnations(meta Metadata) (*sdk.Metadata, error) {
	out := &sdk.Metadata{ClusterID: meta.ClusterID}
	for topic, id := range s.cfg.TopicIncarnations {
		if _, ok := meta.Incarnation(topic, id); !ok {
			var ids []string
			for _, t := range append(meta.Earlier, meta.Topics...) {
				if t.Name == topic {
					ids = append(ids, t.ID.String())
				}
			}
			if len(ids) == 0 {
				return nil, param.Errorf("topic_incarnations", "the backup holds no topic %q", topic)
			}
			return nil, param.Errorf("topic_incarnations", "topic %q has no incarnation %q in the backup; it has %s", topic, id, strings.Join(ids, ", "))
		}
	}
	for _, cur := range meta.Topics {
		if !s.selection().WantsTopic(cur.Name) {
			continue
		}
		t, _ := meta.Incarnation(cur.Name, s.cfg.TopicIncarnations[cur.Name])
		if n := meta.Earlier; len(n) > 0 && s.cfg.TopicIncarnations[cur.Name] == "" {
			for _, e := range n {
				if e.Name == cur.Name {
					sdk.Logger().Info("the topic was re-created during the backup: reading its current incarnation (topic_incarnations picks another)",
						"topic", cur.Name, "topic_id", cur.ID.String(), "earlier", e.ID.String())
				}
			}
		}
		out.Topics = append(out.Topics, t)
	}
	out.Groups, out.GroupsTakenAt = groupsOn(meta, out.Topics), meta.GroupsTakenAt
	return out, nil
}

// groupsOn keeps the groups' offsets of the snapshot on topics read in
// their current incarnation: the snapshot was taken of that one.
func groupsOn(meta Metadata, topics []sdk.TopicMetadata) []sdk.GroupOffsets {
	current := map[string]bool{}
	for _, t := range topics {
		if cur, ok := meta.Topic(t.Name); ok && cur.ID == t.ID {
			current[t.Name] = true
		}
	}
	var out []sdk.GroupOffsets
	for _, g := range meta.Groups {
		kept := sdk.GroupOffsets{Group: g.Group}
		for _, o := range g.Offsets {
			if current[o.Topic] {
				kept.Offsets = append(kept.Offsets, o)
			}
		}
		if len(kept.Offsets) > 0 {
			out = append(out, kept)
		}
	}
	return out
}

// Read returns the next batch: one record batch of a segment as stored,
// or, at an entry's end, a batch that only moves the position past it.
func (s *Source) Read(ctx context.Context) (sdk.Batch, error) {
	if s.meta != nil {
		m := s.meta
		s.meta = nil
		return sdk.Batch{Metadata: m}, nil
	}
	if s.cfg.MetadataOnly {
		return sdk.Batch{}, io.EOF
	}
	for {
		if err := ctx.Err(); err != nil {
			return sdk.Batch{}, err
		}
		if s.cur == nil {
			if len(s.queue) == 0 {
				if s.empty != nil && s.recordsRead.Load() == 0 {
					if n := s.recordsFiltered.Load(); n > 0 {
						return sdk.Batch{}, fmt.Errorf("the filter %q kept none of the %d records of the chosen topics, partitions and time window of backup %q: check the expression; or allow an empty run with --allow-empty (allow_empty = true)",
							s.cfg.Filter, n, s.cfg.BackupID)
					}
					return sdk.Batch{}, s.empty
				}
				return sdk.Batch{}, io.EOF
			}
			s.curW, s.queue = s.queue[0], s.queue[1:]
			s.next = -1
			s.readAhead(ctx)
			if len(s.curW.which) == 0 {
				// A gap, or a segment with nothing wanted: move past it.
				return s.moveTo(s.curW.entry.NextOffset), nil
			}
			s.cur = s.curW.ahead
			if s.cur == nil {
				s.cur = s.b.Batches(ctx, s.curW.topic, s.curW.part, s.curW.entry, s.curW.which)
			}
			s.segmentsRead.Add(1)
		}
		frame, bi, err := s.cur.Next()
		if err == io.EOF {
			s.cur = nil
			if end := s.curW.entry.NextOffset; end > s.next {
				// The entry's position lies past its last record read
				// (transaction markers, batches out of the window): move
				// there.
				return s.moveTo(end), nil
			}
			continue
		}
		if err != nil {
			return sdk.Batch{}, s.partitionFailed(max(s.next, bi.MinOffset), err)
		}
		b, ok, err := s.batch(frame, bi)
		if err != nil {
			return sdk.Batch{}, s.partitionFailed(max(s.next, bi.MinOffset), fmt.Errorf("segment %s: %w", s.curW.entry.Segment, err))
		}
		if ok {
			s.recordsRead.Add(b.Count)
			return b, nil
		}
	}
}

// readAhead starts reading the segments queued next, of the partition
// being sent and of the next ones up to max_concurrent_partitions
// partitions, while it holds at most aheadBytes (one segment at least)
// and 2 × max_concurrent_partitions segments read ahead.
func (s *Source) readAhead(ctx context.Context) {
	n := s.cfg.MaxConcurrentPartitions
	if n <= 1 {
		return
	}
	seen := map[sdk.TopicPartition]bool{{Topic: s.curW.topic, Partition: s.curW.part}: true}
	var held int64
	var count int
	for i := range s.queue {
		w := &s.queue[i]
		if seen[sdk.TopicPartition{Topic: w.topic, Partition: w.part}] = true; len(seen) > n || count >= 2*n {
			return
		}
		if len(w.which) == 0 {
			continue // a gap: nothing to read
		}
		size := w.bytes()
		if w.ahead == nil {
			if held > 0 && held+size > s.aheadBytes {
				return
			}
			w.ahead = s.b.Batches(ctx, w.topic, w.part, w.entry, w.which)
			w.ahead.ReadAhead()
			s.segmentsAhead.Add(1)
		}
		held += size
		count++
	}
}

// moveTo is a batch that only moves the current partition's position.
func (s *Source) moveTo(next int64) sdk.Batch {
	return sdk.Batch{Envelope: sdk.Envelope{Topic: s.curW.topic, Partition: s.curW.part, NextOffset: next}}
}

// partitionFailed stops reading the current partition after err: its other
// entries are dropped from the queue, so that the other partitions go on
// (sdk.PartitionSource). offset is where the partition stopped.
func (s *Source) partitionFailed(offset int64, err error) error {
	topic, part := s.curW.topic, s.curW.part
	if s.cur != nil {
		s.cur.Close()
		s.cur = nil
	}
	s.queue = slices.DeleteFunc(s.queue, func(w work) bool { return w.topic == topic && w.part == part })
	return &sdk.PartitionError{Topic: topic, Partition: part, Offset: offset, Code: "BACKUP_DAMAGED", Err: err}
}

// ResumePartition implements sdk.PartitionSource. The source's failures are
// never retryable (a damaged backup stays damaged), so it has nothing to
// resume.
func (s *Source) ResumePartition(context.Context, string, int32) error { return nil }

// batch turns a frame into a batch; ok is false for a frame with nothing to
// send (below the resume position, outside the window, or none passing the
// filter). A frame passes as stored unless a window bound or the resume
// position falls inside it, or a user filter is set: then it is cut to the
// records that remain.
func (s *Source) batch(frame []byte, bi BatchIndex) (sdk.Batch, bool, error) {
	bounds, err := record.FrameBounds(frame)
	if err != nil {
		return sdk.Batch{}, false, err
	}
	if bounds != bi.Bounds() {
		return sdk.Batch{}, false, fmt.Errorf("batch at byte %d holds %+v, its index says %+v", bi.Start, bounds, bi.Bounds())
	}
	env := sdk.Envelope{Topic: s.curW.topic, Partition: s.curW.part, NextOffset: bounds.MaxOffset + 1}
	s.next = env.NextOffset
	from := s.curW.from
	if from >= 0 && bounds.MaxOffset < from {
		return sdk.Batch{}, false, nil
	}
	if !s.selection().Whole(bi, from) {
		return s.cut(frame, env, from)
	}
	env.SetBounds(bounds)
	env.MaxRecordBytes = bi.MaxRecordBytes
	buf := s.pool.Allocate(len(frame))
	copy(buf, frame)
	return sdk.Batch{Envelope: env, Arrow: buf}.WithRelease(func() { s.pool.Free(buf) }), true, nil
}

// cut returns the records of frame at or after offset from (all when from
// is negative) that the selection chooses: those outside the window count
// as pruned, those the user's filter drops as filtered. Timestamps need
// not grow with offsets, so every record is looked at.
func (s *Source) cut(frame []byte, env sdk.Envelope, from int64) (sdk.Batch, bool, error) {
	s.batchesDecoded.Add(1)
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
	kept, pruned, filtered := 0, int64(0), int64(0)
	for i := range v.Len() {
		if v.Offset(i) < from {
			continue
		}
		if ok, err := s.chosen.Match(env.Topic, env.Partition, v, i); err != nil {
			return sdk.Batch{}, false, err
		} else if !ok {
			pruned++
			continue
		}
		if s.filter != nil {
			if ok, err := s.filter.Match(env.Topic, env.Partition, v, i); err != nil {
				return sdk.Batch{}, false, fmt.Errorf("filter: %w", err)
			} else if !ok {
				filtered++
				continue
			}
		}
		r := v.Record(i)
		bld.Append(&r)
		kept++
	}
	s.recordsPruned.Add(pruned)
	s.recordsFiltered.Add(filtered)
	if kept == 0 {
		return sdk.Batch{}, false, nil
	}
	b, err := sdk.NewBatch(env.Topic, env.Partition, bld, env.NextOffset)
	return b, err == nil, err
}

func (s *Source) Metrics() map[string]int64 {
	var read int64
	if s.b != nil {
		read = s.b.BytesRead()
	}
	return s.withStoreMetrics(map[string]int64{
		"segments_read":       s.segmentsRead.Load(),
		"segments_read_ahead": s.segmentsAhead.Load(),
		"segments_pruned":     s.segmentsPruned.Load(),
		"batches_pruned":      s.batchesPruned.Load(),
		"batches_decoded":     s.batchesDecoded.Load(),
		"records_pruned":      s.recordsPruned.Load(),
		"records_filtered":    s.recordsFiltered.Load(),
		"records_read":        s.recordsRead.Load(),
		"bytes_read":          read,
	})
}

func (s *Source) Teardown(context.Context) error {
	if s.cur != nil {
		s.cur.Close()
		s.cur = nil
	}
	return nil
}
