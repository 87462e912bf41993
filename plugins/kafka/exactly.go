package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/restore"
)

// exactly makes a restore exactly once, as package restore describes: it
// keeps the restore's state (positions and offset map) up to date with the
// brokers' acknowledgements, saves it every saveEvery and at the end, and
// on a resumed run checks the records the last run wrote after its last
// save against the records it is handed again, instead of producing them
// twice. Its fields are guarded by the sink's mutex.
type exactly struct {
	path          string
	allowNonempty bool
	st            *restore.State
	sources       map[sdk.TopicPartition]*sourceTrack
	targets       map[sdk.TopicPartition]*targetTrack
	dirty         bool
	saving        sync.Mutex // one save at a time
	seed          maphash.Seed
}

// sourceTrack is a source partition: its entry in the state and its
// batches not yet all acknowledged, in the order they came.
type sourceTrack struct {
	pos     *restore.Source
	pending []*inFlight
}

// targetTrack is a target partition: its entry in the state and, on a
// resumed run, the hashes of the records already in it past the state's
// Next, which the next records handed for it must match. used says this
// run handed it records. from caches, per source partition, where the
// records the state accounts for in it end (Target.SourceNext).
type targetTrack struct {
	t     *restore.Target
	ahead []uint64
	used  bool
	from  map[sdk.TopicPartition]int64
}

// sourceNext is where, in source partition src, the records accounted for
// in the target partition end: a record before it that goes here is here.
func (tt *targetTrack) sourceNext(src sdk.TopicPartition) int64 {
	n, ok := tt.from[src]
	if !ok {
		if tt.from == nil {
			tt.from = map[sdk.TopicPartition]int64{}
		}
		n = tt.t.SourceNext(src.Topic, src.Partition)
		tt.from[src] = n
	}
	return n
}

const saveEvery = 500 * time.Millisecond

// loadExactly reads the state at path (none yet: a new restore).
func loadExactly(path string, allowNonempty bool) (*exactly, error) {
	st, err := restore.Load(path)
	if err != nil {
		return nil, err
	}
	if st == nil {
		st = &restore.State{}
	}
	e := &exactly{path: path, allowNonempty: allowNonempty, st: st, seed: maphash.MakeSeed(),
		sources: map[sdk.TopicPartition]*sourceTrack{}, targets: map[sdk.TopicPartition]*targetTrack{}}
	for _, s := range st.Sources {
		e.sources[sdk.TopicPartition{Topic: s.Topic, Partition: s.Partition}] = &sourceTrack{pos: s}
	}
	for _, t := range st.Targets {
		e.targets[sdk.TopicPartition{Topic: t.Topic, Partition: t.Partition}] = &targetTrack{t: t}
	}
	return e, nil
}

// positions are the source positions to resume from.
func (e *exactly) positions() []sdk.Position {
	out := make([]sdk.Position, 0, len(e.st.Sources))
	for _, s := range e.st.Sources {
		if s.NextOffset >= 0 {
			out = append(out, sdk.Position{Topic: s.Topic, Partition: s.Partition, NextOffset: s.NextOffset})
		}
	}
	return out
}

// catchUp looks at the target partitions a former run wrote to: each must
// still hold what the state accounts for, and the records past it (written
// after the last save) are read back, to be matched.
func (e *exactly) catchUp(ctx context.Context, adm *kadm.Client, sec *securityConfig, servers []string, timeout time.Duration) error {
	if len(e.targets) == 0 {
		return nil
	}
	topics := map[string]bool{}
	for tp := range e.targets {
		topics[tp.Topic] = true
	}
	names := make([]string, 0, len(topics))
	for t := range topics {
		names = append(names, t)
	}
	ends, err := adm.ListEndOffsets(ctx, names...)
	if err != nil {
		return fmt.Errorf("list end offsets of the target topics: %w", err)
	}
	read := map[string]map[int32]kgo.Offset{}
	until := map[sdk.TopicPartition]int64{}
	for tp, tt := range e.targets {
		end, ok := ends.Lookup(tp.Topic, tp.Partition)
		if !ok || end.Err != nil {
			return fmt.Errorf("target partition %s/%d, which this restore wrote %d records to, cannot be read (%v): it was deleted; restore again from the start with --fresh",
				tp.Topic, tp.Partition, tt.t.Records(), errOr(end.Err, "not in the cluster's metadata"))
		}
		switch {
		case end.Offset < tt.t.Next:
			return fmt.Errorf("target partition %s/%d ends at offset %d, but this restore wrote up to offset %d: it was truncated or re-created; restore again from the start with --fresh",
				tp.Topic, tp.Partition, end.Offset, tt.t.Next)
		case end.Offset > tt.t.Next:
			if read[tp.Topic] == nil {
				read[tp.Topic] = map[int32]kgo.Offset{}
			}
			read[tp.Topic][tp.Partition] = kgo.NewOffset().At(tt.t.Next)
			until[tp] = end.Offset
		}
	}
	if len(read) == 0 {
		return nil
	}
	// Transaction markers are kept: the restore never writes one, so one
	// past its records is another producer's (and, left out, the read
	// would wait for a last record that never comes).
	rd, _, err := connect(ctx, servers, timeout, sec, func(error) {}, kgo.ConsumePartitions(read), kgo.KeepControlRecords())
	if err != nil {
		return err
	}
	defer rd.Close()
	left := len(until)
	var foreign error
	for left > 0 && foreign == nil {
		fs := rd.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read back the target partitions' last records: %w", err)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("read back %s/%d: %w", t, p, err) })
		if ferr != nil {
			return ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			tp := sdk.TopicPartition{Topic: r.Topic, Partition: r.Partition}
			end, ok := until[tp]
			if !ok || r.Offset >= end {
				return
			}
			if r.Attrs.IsControl() && foreign == nil {
				foreign = fmt.Errorf("target partition %s/%d: offset %d holds a transaction marker, which this restore never writes: another producer wrote to the partition; a restore must be the only writer of its target partitions. Restore into another topic, or from the start with --fresh",
					tp.Topic, tp.Partition, r.Offset)
			}
			tt := e.targets[tp]
			tt.ahead = append(tt.ahead, e.hash(r.Key, r.Value, r.Timestamp.UnixMilli(), kgoHeaders(r.Headers)))
			if r.Offset == end-1 {
				delete(until, tp)
				left--
			}
		})
	}
	if foreign != nil {
		return foreign
	}
	for tp, tt := range e.targets {
		if n := len(tt.ahead); n > 0 {
			sdk.Logger().Info("resuming the restore: records written after the last save are matched, not produced again",
				"topic", tp.Topic, "partition", tp.Partition, "from_offset", tt.t.Next, "records", n)
		}
	}
	return nil
}

func errOr(err error, s string) any {
	if err != nil {
		return err
	}
	return s
}

func kgoHeaders(hs []kgo.RecordHeader) func(yield func(k string, v []byte) bool) {
	return func(yield func(string, []byte) bool) {
		for _, h := range hs {
			if !yield(h.Key, h.Value) {
				return
			}
		}
	}
}

// hash is a digest of a record's key, value, timestamp and headers, to
// tell whether the record in the target is the one the restore would
// write.
func (e *exactly) hash(key, value []byte, ts int64, headers func(yield func(string, []byte) bool)) uint64 {
	var h maphash.Hash
	h.SetSeed(e.seed)
	var n [8]byte
	field := func(b []byte) {
		binary.LittleEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	field(key)
	field(value)
	binary.LittleEndian.PutUint64(n[:], uint64(ts))
	h.Write(n[:])
	headers(func(k string, v []byte) bool {
		field([]byte(k))
		field(v)
		return true
	})
	return h.Sum64()
}

// source returns the track of a source partition.
func (e *exactly) source(tp sdk.TopicPartition) *sourceTrack {
	s, ok := e.sources[tp]
	if !ok {
		s = &sourceTrack{pos: &restore.Source{Topic: tp.Topic, Partition: tp.Partition, NextOffset: -1}}
		e.st.Sources = append(e.st.Sources, s.pos)
		e.sources[tp] = s
	}
	return s
}

// landed records that record i of batch f is in its target partition o
// at offset: in the offset map, and as its source partition's position,
// so that a run resumed from the state starts right after it (within the
// batch, if need be). With fanout the position waits for the whole batch
// (settle): a later record may land in one partition before an earlier
// one in another.
func (e *exactly) landed(f *inFlight, o *out, i int, offset int64) {
	from := f.view.Offset(i)
	o.tgt.t.Add(f.src.Topic, f.src.Partition, from, offset, f.fanout)
	o.tgt.sourceNext(f.src)
	o.tgt.from[f.src] = from + 1
	if pos := f.srcT.pos; !f.fanout && from+1 > pos.NextOffset {
		pos.NextOffset = from + 1
	}
	e.dirty = true
}

// settle moves a source partition's position past its batches that are
// all acknowledged, in the order they came.
func (s *sourceTrack) settle() bool {
	moved := false
	for len(s.pending) > 0 && s.pending[0].left == 0 {
		if s.pending[0].fanout {
			s.pos.NullKeys = s.pending[0].nulls
		}
		s.pos.NextOffset = s.pending[0].next
		s.pending[0] = nil
		s.pending = s.pending[1:]
		moved = true
	}
	return moved
}

// errNonEmpty is the refusal of a target partition that held records
// before the restore first wrote to it.
func errNonEmpty(tp sdk.TopicPartition, start, end int64) error {
	return fmt.Errorf("target partition %s/%d already holds records (offsets %d to %d); a restore writes only to partitions it alone fills, so that a rerun can tell its own records: restore into another topic (topic_mapping), or append after them with --allow-nonempty-target (allow_nonempty_target = true)",
		tp.Topic, tp.Partition, start, end-1)
}

// errForeign is what a target partition moved past the restore's own
// records tells.
func errForeign(tp sdk.TopicPartition, got, want int64) error {
	return fmt.Errorf("target partition %s/%d: a record of this restore landed at offset %d, the restore expected %d: another producer writes to the partition; a restore must be the only writer of its target partitions, so it stopped. Stop the other producer and run the restore again: it continues where it stopped",
		tp.Topic, tp.Partition, got, want)
}

// errMismatch is what a resumed run tells when the record past the state
// is not the one it would write.
func errMismatch(tp sdk.TopicPartition, offset int64) error {
	return fmt.Errorf("target partition %s/%d: offset %d holds a record this restore did not write there: another producer wrote to the partition; a restore must be the only writer of its target partitions. Restore into another topic, or from the start with --fresh",
		tp.Topic, tp.Partition, offset)
}

// register takes on every partition of topics that it has not yet: it
// notes each one's start and end offsets, in one request of each for all,
// so that the caller saves them all at once before anything is produced.
// Partitions of topics missing from the cluster are left for later.
func (e *exactly) register(ctx context.Context, adm *kadm.Client, topics ...string) error {
	if len(topics) == 0 {
		return nil
	}
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return fmt.Errorf("list start offsets of the target topics: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return fmt.Errorf("list end offsets of the target topics: %w", err)
	}
	ends.Each(func(end kadm.ListedOffset) {
		tp := sdk.TopicPartition{Topic: end.Topic, Partition: end.Partition}
		start, ok := starts.Lookup(end.Topic, end.Partition)
		if _, known := e.targets[tp]; known || !ok || start.Err != nil || end.Err != nil {
			return
		}
		t := &restore.Target{Topic: tp.Topic, Partition: tp.Partition, Start: start.Offset, Base: end.Offset, Next: end.Offset}
		e.st.Targets = append(e.st.Targets, t)
		e.targets[tp] = &targetTrack{t: t}
		e.dirty = true
	})
	return nil
}

// registerEmpty takes on the partitions of a topic the sink just created
// with n partitions, all empty.
func (e *exactly) registerEmpty(topic string, n int) {
	for p := range int32(n) {
		tp := sdk.TopicPartition{Topic: topic, Partition: p}
		if _, known := e.targets[tp]; known {
			continue
		}
		t := &restore.Target{Topic: topic, Partition: p}
		e.st.Targets = append(e.st.Targets, t)
		e.targets[tp] = &targetTrack{t: t}
		e.dirty = true
	}
}

// open returns the track of a target partition the restore writes to,
// taking it on first if need be (then started is set: the caller saves
// the state before anything is produced to it). A partition that held
// records before the restore took it on is refused unless allowNonempty.
func (e *exactly) open(ctx context.Context, adm *kadm.Client, tp sdk.TopicPartition) (tt *targetTrack, started bool, err error) {
	tt, ok := e.targets[tp]
	if !ok {
		if err := e.register(ctx, adm, tp.Topic); err != nil {
			return nil, false, err
		}
		if tt, ok = e.targets[tp]; !ok {
			return nil, false, fmt.Errorf("target partition %s/%d: its offsets are unknown to the cluster", tp.Topic, tp.Partition)
		}
		started = true
	}
	if !tt.used && tt.t.Records() == 0 && tt.t.HeldRecords() && !e.allowNonempty {
		return nil, false, errNonEmpty(tp, tt.t.Start, tt.t.Base)
	}
	tt.used = true
	return tt, started, nil
}

// snapshot is a copy of the state to save, or nil when nothing changed.
func (e *exactly) snapshot(finished bool) *restore.State {
	if !e.dirty && !finished {
		return nil
	}
	e.dirty = false
	c := e.st.Clone()
	if finished {
		now := time.Now().UTC()
		c.Finished = &now
	}
	return c
}

// save writes a snapshot; the caller holds e.saving.
func (e *exactly) save(c *restore.State) error {
	if c == nil {
		return nil
	}
	if err := restore.Save(e.path, c); err != nil {
		return fmt.Errorf("save the restore's state: %w", err)
	}
	return nil
}

// leftAhead names a target partition that still holds records past what
// the restore wrote once the restore handed all its records: another
// producer's.
func (e *exactly) leftAhead() error {
	for tp, tt := range e.targets {
		// A partition the restore never wrote to is not its business.
		if n := len(tt.ahead); n > 0 && (tt.used || tt.t.Records() > 0) {
			return fmt.Errorf("target partition %s/%d holds %d records after offset %d that this restore did not write: another producer wrote to the partition; a restore must be the only writer of its target partitions",
				tp.Topic, tp.Partition, n, tt.t.Next-1)
		}
	}
	return nil
}
