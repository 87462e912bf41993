// Package restore holds what makes a restore exactly once: its durable
// progress and offset map (State), kept in one small file that the kafka
// sink replaces atomically as the brokers acknowledge records, and the
// topic and partition mapping rule (Mapping).
//
// The mechanism: the restore is the only writer of its target partitions,
// and each target partition receives the records of its source partitions
// in one fixed order (each source partition in offset order; merged source
// partitions one after the other, lowest first). So the target partition's
// records are a prefix of a sequence the restore can compute again. The
// state says, for each target partition, up to which target offset the
// records are accounted for and from where in each source partition the
// sequence goes on. A run killed at any moment leaves the target partition
// at most some records past that; the next run reads those records back,
// checks that they are the sequence's next ones, counts them as restored
// and produces from the first one missing.
package restore

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/kpipe/kpipe/internal/atomicfile"
)

// Version is the version of the state file's format.
const Version = 1

// State is a restore's durable progress.
type State struct {
	Version   int       `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
	// Finished is when the restore completed; nil while it has not.
	Finished *time.Time `json:"finished,omitempty"`
	// Sources holds, per source partition, the position the sequence goes
	// on from: every record before it is in its target partition.
	Sources []*Source `json:"sources"`
	// Targets holds, per target partition, what the restore wrote to it.
	Targets []*Target `json:"targets"`
}

// Source is the position of a source partition.
type Source struct {
	Topic      string `json:"topic"`
	Partition  int32  `json:"partition"`
	NextOffset int64  `json:"next_offset"`
	// NullKeys counts the records without a key before NextOffset, for a
	// source partition repartitioned: they go round-robin.
	NullKeys int64 `json:"null_keys,omitempty"`
}

// Target is what the restore wrote to one target partition: its records
// from Base (the partition's end offset when the restore took it on) up
// to Next, each range of source offsets at its target offsets. Start is
// the partition's log start offset then: it held records before the
// restore when Base > Start.
type Target struct {
	Topic     string  `json:"topic"`
	Partition int32   `json:"partition"`
	Start     int64   `json:"start_offset"`
	Base      int64   `json:"base_offset"`
	Next      int64   `json:"next_offset"`
	Ranges    []Range `json:"ranges"`
}

// Range is a run of records whose source and target offsets both grow by
// one: source offsets SourceOffset … SourceOffset+Count-1 of the source
// partition landed at TargetOffset … TargetOffset+Count-1. In a target
// partition that a repartitioning fills, a range is sparse: its Count
// records are records of SourceOffset … SourceEnd in their order (the
// others went to other partitions), and which target offset each took is
// known only at its ends.
type Range struct {
	SourceTopic     string `json:"source_topic"`
	SourcePartition int32  `json:"source_partition"`
	SourceOffset    int64  `json:"source_offset"`
	TargetOffset    int64  `json:"target_offset"`
	Count           int64  `json:"count"`
	// SourceEnd is the last source offset of a sparse range; 0 for one
	// that is not.
	SourceEnd int64 `json:"source_end,omitempty"`
}

// Last is the range's last source offset.
func (r Range) Last() int64 {
	if r.SourceEnd > 0 {
		return r.SourceEnd
	}
	return r.SourceOffset + r.Count - 1
}

// Sparse says whether the range skips source offsets.
func (r Range) Sparse() bool { return r.Last() != r.SourceOffset+r.Count-1 }

// SourceNext is where, in a source partition, the records the restore
// accounts for in the target partition end: every record of it before
// that which goes to this partition is in it. -1 when it holds none.
func (t *Target) SourceNext(topic string, partition int32) int64 {
	for i := len(t.Ranges) - 1; i >= 0; i-- {
		if r := t.Ranges[i]; r.SourceTopic == topic && r.SourcePartition == partition {
			return r.Last() + 1
		}
	}
	return -1
}

// Records is how many records the restore accounts for in the target
// partition.
func (t *Target) Records() int64 { return t.Next - t.Base }

// HeldRecords says whether the partition held records before the restore
// took it on.
func (t *Target) HeldRecords() bool { return t.Base > t.Start }

// Add records that the record at sourceOffset of the source partition
// landed at targetOffset, the partition's next offset: it extends the last
// range when both offsets follow on, or, sparse, when the target offset
// does and the source offset comes later.
func (t *Target) Add(sourceTopic string, sourcePartition int32, sourceOffset, targetOffset int64, sparse bool) {
	if n := len(t.Ranges); n > 0 {
		r := &t.Ranges[n-1]
		if r.SourceTopic == sourceTopic && r.SourcePartition == sourcePartition && r.TargetOffset+r.Count == targetOffset &&
			(r.Last()+1 == sourceOffset || (sparse && sourceOffset > r.Last())) {
			r.Count++
			if r.SourceEnd > 0 || r.SourceOffset+r.Count-1 != sourceOffset {
				r.SourceEnd = sourceOffset
			}
			t.Next = targetOffset + 1
			return
		}
	}
	t.Ranges = append(t.Ranges, Range{SourceTopic: sourceTopic, SourcePartition: sourcePartition, SourceOffset: sourceOffset, TargetOffset: targetOffset, Count: 1})
	t.Next = targetOffset + 1
}

// Clone returns a deep copy of s, for saving while s changes.
func (s *State) Clone() *State {
	c := *s
	c.Sources = make([]*Source, len(s.Sources))
	for i, src := range s.Sources {
		sc := *src
		c.Sources[i] = &sc
	}
	c.Targets = make([]*Target, len(s.Targets))
	for i, t := range s.Targets {
		tc := *t
		tc.Ranges = slices.Clone(t.Ranges)
		c.Targets[i] = &tc
	}
	return &c
}

// Records is how many records the restore accounts for in all target
// partitions.
func (s *State) Records() int64 {
	var n int64
	for _, t := range s.Targets {
		n += t.Records()
	}
	return n
}

// Load reads the state file at path; a nil State when there is none yet.
func Load(path string) (*State, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read restore state: %w", err)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("restore state %s is not valid JSON (%v); move it aside to start the restore over", path, err)
	}
	if s.Version != Version {
		return nil, fmt.Errorf("restore state %s has format version %d, this kpipe reads version %d", path, s.Version, Version)
	}
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("restore state %s is damaged: %v; move it aside to start the restore over", path, err)
	}
	return &s, nil
}

// check refuses a state no restore writes: an empty place in its lists, or
// a range that is not one.
func (s *State) check() error {
	for i, src := range s.Sources {
		if src == nil {
			return fmt.Errorf("sources[%d] is null", i)
		}
	}
	for i, t := range s.Targets {
		if t == nil {
			return fmt.Errorf("targets[%d] is null", i)
		}
		for j, r := range t.Ranges {
			if r.Count <= 0 || r.SourceOffset < 0 || r.TargetOffset < 0 || (r.SourceEnd != 0 && r.SourceEnd < r.SourceOffset) {
				return fmt.Errorf("targets[%d].ranges[%d] (%d records from source offset %d to target offset %d) is not a range", i, j, r.Count, r.SourceOffset, r.TargetOffset)
			}
		}
	}
	return nil
}

// Save replaces the state file at path with s.
func Save(path string, s *State) error {
	s.Version = Version
	s.UpdatedAt = time.Now().UTC()
	data, err := json.MarshalIndent(s, "", " ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(data, '\n'))
}
