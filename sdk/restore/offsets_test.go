package restore

import (
	"reflect"
	"testing"

	"github.com/kpipe/kpipe/sdk"
)

// stateOf builds a restore's state from the source offsets each target
// offset got, per target partition of topic "t".
func stateOf(parts map[int32][]struct {
	src    int32
	offset int64
}, sparse bool) *State {
	st := &State{}
	for p := int32(0); p < int32(len(parts)); p++ {
		tg := &Target{Topic: "t", Partition: p}
		for i, r := range parts[p] {
			tg.Add("s", r.src, r.offset, int64(i), sparse)
		}
		st.Targets = append(st.Targets, tg)
	}
	return st
}

type rec = struct {
	src    int32
	offset int64
}

func committed(kv ...int64) map[sdk.TopicPartition]int64 {
	m := map[sdk.TopicPartition]int64{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[sdk.TopicPartition{Topic: "s", Partition: int32(kv[i])}] = kv[i+1]
	}
	return m
}

// TestPlaceOnePartition: the group resumes at the first restored record at
// or after its committed offset, skipping the records a window left out,
// or at the end when it had processed all of them.
func TestPlaceOnePartition(t *testing.T) {
	// Source offsets 10..14 and 20..24 restored (15..19 outside the window).
	var recs []rec
	for o := int64(10); o < 25; o++ {
		if o < 15 || o >= 20 {
			recs = append(recs, rec{0, o})
		}
	}
	st := stateOf(map[int32][]rec{0: recs}, false)
	for _, c := range []struct {
		committed, want int64
	}{{0, 0}, {10, 0}, {12, 2}, {15, 5}, {17, 5}, {20, 5}, {23, 8}, {25, 10}, {99, 10}} {
		got := st.Place(committed(0, c.committed))
		if len(got) != 1 || got[0].Offset != c.want || got[0].Repeats != 0 || !got[0].RepeatsExact {
			t.Errorf("committed %d: %+v, want offset %d, no repeats", c.committed, got, c.want)
		}
	}
	if got := st.Place(committed(1, 5)); len(got) != 0 {
		t.Errorf("a commit on another partition placed %+v", got)
	}
}

// TestPlaceMerge: two source partitions written one after the other into
// one target partition: the smaller of their positions, and the records of
// the other before its own position count as repeats.
func TestPlaceMerge(t *testing.T) {
	var recs []rec
	for src := int32(0); src < 2; src++ {
		for o := int64(0); o < 10; o++ {
			recs = append(recs, rec{src, o})
		}
	}
	st := stateOf(map[int32][]rec{0: recs}, false)
	for _, c := range []struct {
		name            string
		committed       map[sdk.TopicPartition]int64
		offset, repeats int64
	}{
		{"both mid-way", committed(0, 5, 1, 3), 5, 3},
		{"first done", committed(0, 10, 1, 3), 13, 0},
		{"second done", committed(0, 4, 1, 10), 4, 10},
		{"both done", committed(0, 10, 1, 10), 20, 0},
		{"nothing committed on the second", committed(0, 7), 7, 0},
		{"nothing committed on the first", committed(1, 7), 0, 7},
	} {
		got := st.Place(c.committed)
		if len(got) != 1 || got[0].Offset != c.offset || got[0].Repeats != c.repeats || !got[0].RepeatsExact {
			t.Errorf("%s: %+v, want offset %d with %d repeats", c.name, got, c.offset, c.repeats)
		}
	}
	got := st.Place(committed(0, 5, 1, 3))[0]
	want := []SourceOffset{{"s", 0, 5}, {"s", 1, 3}}
	if !reflect.DeepEqual(got.Sources, want) {
		t.Errorf("sources %+v, want %+v", got.Sources, want)
	}
	if r := "2 source partitions write here (s/0 at 5, s/1 at 3): the smallest of their positions, which loses nothing; the group reads 3 record(s) again"; got.Reason != r {
		t.Errorf("reason %q\nwant %q", got.Reason, r)
	}
}

// TestPlaceRepartitioned: in a range that skips source offsets the exact
// target offset of a committed offset is unknown: the range's start, with
// its records as the most repeats.
func TestPlaceRepartitioned(t *testing.T) {
	st := stateOf(map[int32][]rec{0: {{0, 1}, {0, 4}, {0, 6}, {0, 9}}}, true)
	for _, c := range []struct {
		committed, offset int64
		exact             bool
	}{{0, 0, true}, {1, 0, true}, {5, 0, false}, {10, 4, true}} {
		got := st.Place(committed(0, c.committed))
		if len(got) != 1 || got[0].Offset != c.offset || got[0].RepeatsExact != c.exact {
			t.Errorf("committed %d: %+v, want offset %d, exact %v", c.committed, got, c.offset, c.exact)
		}
	}
}
