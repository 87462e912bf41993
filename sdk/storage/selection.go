package storage

import (
	"path"
	"slices"

	"github.com/kpipe/kpipe/sdk/record"
)

// Selection is what a restore reads of a backup: topics (names or globs;
// all when empty), partition numbers (all when empty) and a time window.
// The source reads by it and a restore's plan counts by it: one rule.
type Selection struct {
	Topics     []string
	Partitions []int32
	Window     record.Window
}

// WantsTopic says whether the topic is selected.
func (s Selection) WantsTopic(topic string) bool {
	if len(s.Topics) == 0 {
		return true
	}
	for _, g := range s.Topics {
		if ok, _ := path.Match(g, topic); ok {
			return true
		}
	}
	return false
}

// Wants says whether a partition of a topic is selected.
func (s Selection) Wants(topic string, partition int32) bool {
	if len(s.Partitions) > 0 && !slices.Contains(s.Partitions, partition) {
		return false
	}
	return s.WantsTopic(topic)
}

// Batches returns the indexes of a segment entry's batches to read: those
// with records at or after offset from (-1: all) that can hold records of
// the window. The others at or after from are out of the window: pruned.
func (s Selection) Batches(e Entry, from int64) (read, pruned []int) {
	for i, bi := range e.Batches {
		switch {
		case bi.MaxOffset < from:
		case !s.Window.Overlaps(bi.MinTimestamp, bi.MaxTimestamp):
			pruned = append(pruned, i)
		default:
			read = append(read, i)
		}
	}
	return read, pruned
}
