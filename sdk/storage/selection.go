package storage

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/kpipe/kpipe/sdk/celexpr"
	"github.com/kpipe/kpipe/sdk/record"
)

// Selection is what a restore reads of a backup: topics (names or globs;
// all when empty), partition numbers (all when empty), a time window and a
// user's CEL filter over the records (none when empty). The source reads
// by it and a restore's plan counts by it: one rule.
//
// The choice of records is a CEL expression (Expression); segments and
// batches that the window rules out are not read, and a batch the window
// covers passes whole, undecoded, unless there is a user filter: only the
// records of the other batches are evaluated one by one.
type Selection struct {
	Topics     []string
	Partitions []int32
	Window     record.Window
	Filter     string
}

// Expression is the CEL expression of the records the window and the
// partitions choose ("true" for all of them).
func (s Selection) Expression() string {
	var and []string
	if s.Window.Start >= 0 {
		and = append(and, fmt.Sprintf("timestamp >= %d", s.Window.Start))
	}
	if s.Window.End >= 0 {
		and = append(and, fmt.Sprintf("timestamp <= %d", s.Window.End))
	}
	if len(s.Partitions) > 0 {
		ps := make([]string, len(s.Partitions))
		for i, p := range s.Partitions {
			ps[i] = fmt.Sprint(p)
		}
		and = append(and, "partition in ["+strings.Join(ps, ", ")+"]")
	}
	if len(and) == 0 {
		return "true"
	}
	return strings.Join(and, " && ")
}

// FullExpression is Expression and the user's filter.
func (s Selection) FullExpression() string {
	if s.Filter == "" {
		return s.Expression()
	}
	return s.Expression() + " && (" + s.Filter + ")"
}

// Programs compiles the selection: the window and partitions, and the
// user's filter (nil when there is none). An error is the filter's, naming
// its line and column.
func (s Selection) Programs() (chosen, filter *celexpr.Program, err error) {
	if s.Filter != "" {
		if filter, err = celexpr.Compile(s.Filter); err != nil {
			return nil, nil, err
		}
	}
	if chosen, err = celexpr.Compile(s.Expression()); err != nil {
		panic(fmt.Sprintf("storage: the selection's own expression %q: %v", s.Expression(), err))
	}
	return chosen, filter, nil
}

// Whole says whether a batch is sent as stored, undecoded: all its records
// are at or after offset from (-1: all), the window covers them, and no
// user filter must look at each.
func (s Selection) Whole(bi BatchIndex, from int64) bool {
	return s.Filter == "" && bi.MinOffset >= from && s.Window.Covers(bi.MinTimestamp, bi.MaxTimestamp)
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
