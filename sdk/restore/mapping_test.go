package restore

import (
	"fmt"
	"testing"

	"github.com/kpipe/kpipe/sdk"
)

// TestMappingMetadataMergesTopics: topics renamed onto one name merge into
// one target topic that needs the partitions both read (moved), keeps the
// larger of their largest records, named in its source topic, and reads
// all partitions if one of them does.
func TestMappingMetadataMergesTopics(t *testing.T) {
	m, errs := NewMapping(map[string]string{"a": "t", "b": "t", "c": "t2", "d": "t2"}, map[string]int32{"3": 0, "5": 1})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	big := &sdk.LargestRecord{Topic: "b", Partition: 5, MinOffset: 7, MaxOffset: 9, Bytes: 900}
	out := m.Metadata(sdk.Metadata{Topics: []sdk.TopicMetadata{
		{Name: "a", Partitions: 4, ReadPartitions: []int32{2, 3}, LargestRecord: &sdk.LargestRecord{Topic: "a", Partition: 2, MinOffset: 1, MaxOffset: 1, Bytes: 100}},
		{Name: "b", Partitions: 6, ReadPartitions: []int32{3, 5}, LargestRecord: big},
		{Name: "c", Partitions: 2, ReadPartitions: []int32{1}},
		{Name: "d", Partitions: 3},
	}})
	var got []string
	for _, tm := range out.Topics {
		got = append(got, fmt.Sprintf("%s partitions=%d read=%v needs=%d largest=%+v", tm.Name, tm.Partitions, tm.ReadPartitions, tm.Needs(), tm.LargestRecord))
	}
	want := []string{
		"t partitions=5 read=[0 1 2] needs=3 largest=&{Topic:b Partition:5 MinOffset:7 MaxOffset:9 Bytes:900}",
		"t2 partitions=3 read=[] needs=3 largest=<nil>",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("merged metadata\n%v\nwant\n%v", got, want)
	}
	if w := big.Where(); w != "b/5 in the batch of offsets 7 to 9" {
		t.Fatalf("Where() = %q", w)
	}
	if w := (&sdk.LargestRecord{Topic: "a", Partition: 2, MinOffset: 1, MaxOffset: 1}).Where(); w != "a/2 at offset 1" {
		t.Fatalf("Where() = %q", w)
	}
}
