package restore

import (
	"fmt"
	"slices"
	"strings"

	"github.com/kpipe/kpipe/sdk"
)

// The rule that moves a consumer group's position from the source topics
// to the restored ones. A committed offset O on a source partition means
// "the next record to process is O". On the target partition the group
// resumes at the target offset of the first restored record whose source
// offset is at least O, or at the end of what the restore wrote there when
// every restored record came before O. Records a time window or a filter
// left out are not on the target, so the rule neither skips nor repeats
// them.
//
// A target partition fed by several source partitions (a merge, or a
// repartitioning) can hold one position only: the group resumes at the
// smallest of the positions its source partitions give, which loses
// nothing, and reads again the records before the others' positions
// (Placement.Repeats). A source partition the group committed nothing on
// counts as wholly unprocessed.

// SourceOffset is a committed offset of a source partition.
type SourceOffset struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Offset is the committed offset; -1 when the group committed none
	// there.
	Offset int64 `json:"offset"`
}

// Placement is where a group resumes on one target partition.
type Placement struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	// Sources are the committed offsets of the source partitions whose
	// records the target partition holds.
	Sources []SourceOffset `json:"sources"`
	// Repeats counts the records at or after Offset that the group had
	// processed already and will read again; at most that many when
	// RepeatsExact is false (a repartitioned range around a committed
	// offset, whose records' exact target offsets the state does not keep).
	Repeats      int64  `json:"repeats"`
	RepeatsExact bool   `json:"repeats_exact"`
	Reason       string `json:"reason"`
}

// Place applies the rule to a group's committed offsets on the source
// partitions: one placement for each target partition that holds records
// of a source partition the group committed on, by topic and partition.
// It reads the state of a finished restore (or one rebuilt from the
// target's records).
func (s *State) Place(committed map[sdk.TopicPartition]int64) []Placement {
	var out []Placement
	for _, t := range s.Targets {
		if p, ok := t.place(committed); ok {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b Placement) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		return int(a.Partition - b.Partition)
	})
	return out
}

// feed is what one source partition put into a target partition, and
// where the group's committed offset on it places the group.
type feed struct {
	src       SourceOffset
	at        int64 // the target offset its committed offset gives
	straddled *Range
}

// place applies the rule on t; false when the group committed nothing on
// any of t's source partitions.
func (t *Target) place(committed map[sdk.TopicPartition]int64) (Placement, bool) {
	var feeds []*feed
	index := map[sdk.TopicPartition]*feed{}
	any := false
	for i := range t.Ranges {
		r := &t.Ranges[i]
		tp := sdk.TopicPartition{Topic: r.SourceTopic, Partition: r.SourcePartition}
		f, ok := index[tp]
		if !ok {
			o, has := committed[tp]
			if !has {
				o = -1
			} else {
				any = true
			}
			f = &feed{src: SourceOffset{Topic: tp.Topic, Partition: tp.Partition, Offset: o}, at: -1}
			index[tp] = f
			feeds = append(feeds, f)
		}
		if f.at >= 0 {
			continue // placed by an earlier range
		}
		switch o := max(f.src.Offset, 0); {
		case r.Last() < o:
		case o <= r.SourceOffset:
			f.at = r.TargetOffset
		case !r.Sparse():
			f.at = r.TargetOffset + o - r.SourceOffset
		default: // somewhere inside a repartitioned range: its start loses nothing
			f.at, f.straddled = r.TargetOffset, r
		}
	}
	if !any {
		return Placement{}, false
	}
	p := Placement{Topic: t.Topic, Partition: t.Partition, Offset: t.Next, RepeatsExact: true}
	for _, f := range feeds {
		if f.at < 0 {
			f.at = t.Next // every restored record of it came before its offset
		}
		p.Offset = min(p.Offset, f.at)
		p.Sources = append(p.Sources, f.src)
	}
	for _, f := range feeds {
		// Its records in [p.Offset, f.at) were processed already.
		p.Repeats += t.count(f.src.Topic, f.src.Partition, p.Offset, f.at)
		if f.straddled != nil {
			p.RepeatsExact = false
			p.Repeats += f.straddled.Count
		}
	}
	p.Reason = t.reason(p, feeds)
	return p, true
}

// count counts the records of a source partition at target offsets from
// up to (not including) to.
func (t *Target) count(topic string, partition int32, from, to int64) int64 {
	var n int64
	for _, r := range t.Ranges {
		if r.SourceTopic != topic || r.SourcePartition != partition {
			continue
		}
		lo, hi := max(from, r.TargetOffset), min(to, r.TargetOffset+r.Count)
		if hi > lo {
			n += hi - lo
		}
	}
	return n
}

// reason says in a sentence why the group resumes at p.Offset.
func (t *Target) reason(p Placement, feeds []*feed) string {
	if len(feeds) == 1 {
		f := feeds[0]
		if f.at == t.Next {
			return fmt.Sprintf("every record restored from %s/%d came before its committed offset %d: the end of what the restore wrote", f.src.Topic, f.src.Partition, f.src.Offset)
		}
		if f.straddled != nil {
			return fmt.Sprintf("committed offset %d of %s/%d lies within a range of records repartitioned by key: the range's first record, which loses nothing", f.src.Offset, f.src.Topic, f.src.Partition)
		}
		return fmt.Sprintf("the first record restored from %s/%d at or after its committed offset %d", f.src.Topic, f.src.Partition, f.src.Offset)
	}
	var parts []string
	for _, f := range feeds {
		if f.src.Offset < 0 {
			parts = append(parts, fmt.Sprintf("%s/%d (nothing committed: all its records count as unprocessed)", f.src.Topic, f.src.Partition))
		} else {
			parts = append(parts, fmt.Sprintf("%s/%d at %d", f.src.Topic, f.src.Partition, f.src.Offset))
		}
	}
	again := fmt.Sprintf("%d record(s)", p.Repeats)
	if !p.RepeatsExact {
		again = fmt.Sprintf("at most %d record(s)", p.Repeats)
	}
	return fmt.Sprintf("%d source partitions write here (%s): the smallest of their positions, which loses nothing; the group reads %s again", len(feeds), strings.Join(parts, ", "), again)
}
