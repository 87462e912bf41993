package restore

import (
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestMurmur2PicksWhatKafkasPartitionerPicks: for keys of every length
// mod 4, and partition counts 1 to 7, the partition is the one franz-go's
// default partitioner (Kafka's murmur2) picks.
func TestMurmur2PicksWhatKafkasPartitionerPicks(t *testing.T) {
	for n := int32(1); n <= 7; n++ {
		r := Repartition{Strategy: Murmur2, Partitions: n}
		p := kgo.StickyKeyPartitioner(nil).ForTopic("t")
		for i := range 500 {
			key := fmt.Appendf(nil, "key-%d-%s", i, make([]byte, i%5))
			want := int32(p.Partition(&kgo.Record{Key: key}, int(n)))
			if got := r.Partition(key, 0, 0); got != want {
				t.Fatalf("%d partitions, key %q: %d, want %d", n, key, got, want)
			}
		}
	}
}

// TestNullKeysGoRoundRobin: records without a key go round-robin, each
// source partition starting at its own number; an empty key is a key.
func TestNullKeysGoRoundRobin(t *testing.T) {
	r := Repartition{Strategy: Murmur2, Partitions: 3}
	var got []int32
	for src := range int32(2) {
		for i := range int64(4) {
			got = append(got, r.Partition(nil, src, i))
		}
	}
	if fmt.Sprint(got) != "[0 1 2 0 1 2 0 1]" {
		t.Fatalf("null keys went to %v, want [0 1 2 0 1 2 0 1]", got)
	}
	want := int32(kgo.StickyKeyPartitioner(nil).ForTopic("t").Partition(&kgo.Record{Key: []byte{}}, 3))
	if p := r.Partition([]byte{}, 1, 5); p != want {
		t.Fatalf("an empty key went to %d, want %d (hashed)", p, want)
	}
}

func TestParseRepartition(t *testing.T) {
	if r, err := ParseRepartition("murmur2:6"); err != nil || r != (Repartition{Strategy: Murmur2, Partitions: 6}) {
		t.Fatalf("murmur2:6: %+v, %v", r, err)
	}
	for in, want := range map[string]string{
		"murmur2":   `"murmur2" is not STRATEGY:PARTITIONS, such as murmur2:6`,
		"murmur2:0": `"murmur2:0" is not STRATEGY:PARTITIONS, such as murmur2:6`,
		"crc32:3":   `strategy "crc32" is not known; use murmur2 (Kafka's default partitioner)`,
	} {
		if _, err := ParseRepartition(in); err == nil || err.Error() != want {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
}
