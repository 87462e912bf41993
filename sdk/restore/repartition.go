package restore

import (
	"fmt"
	"strconv"
	"strings"
)

// Repartition spreads a target topic's records over Partitions partitions
// by key, as Kafka's default partitioner does (Strategy murmur2): a record
// with a key goes to the partition a Kafka producer would put it in, so
// each key's records stay in one partition, in order; records without a
// key go round-robin in source order, each source partition starting at
// its own number.
type Repartition struct {
	Strategy   string
	Partitions int32
}

// Murmur2 is the strategy of Kafka's default partitioner.
const Murmur2 = "murmur2"

// ParseRepartition reads a repartitioning as the kafka sink's parameter
// gives it: STRATEGY:PARTITIONS, such as murmur2:6.
func ParseRepartition(s string) (Repartition, error) {
	strategy, n, ok := strings.Cut(s, ":")
	p, err := strconv.ParseInt(n, 10, 32)
	if !ok || err != nil || p < 1 {
		return Repartition{}, fmt.Errorf("%q is not STRATEGY:PARTITIONS, such as murmur2:6", s)
	}
	r := Repartition{Strategy: strategy, Partitions: int32(p)}
	return r, r.Check()
}

// Check says what is wrong with r, if anything.
func (r Repartition) Check() error {
	if r.Strategy != Murmur2 {
		return fmt.Errorf("strategy %q is not known; use murmur2 (Kafka's default partitioner)", r.Strategy)
	}
	if r.Partitions < 1 {
		return fmt.Errorf("target_partitions %d: use 1 or more", r.Partitions)
	}
	return nil
}

func (r Repartition) String() string { return fmt.Sprintf("%s:%d", r.Strategy, r.Partitions) }

// Partition is the target partition of a record of source partition
// source with key key; for a record without a key, nulls is how many
// records without a key that source partition sent before it.
func (r Repartition) Partition(key []byte, source int32, nulls int64) int32 {
	if key == nil {
		return int32((int64(source) + nulls) % int64(r.Partitions))
	}
	return int32(murmur2(key)&0x7fffffff) % r.Partitions
}

// murmur2 is the 32-bit MurmurHash2 with Kafka's seed, over b.
func murmur2(b []byte) uint32 {
	const (
		seed = 0x9747b28c
		m    = 0x5bd1e995
		r    = 24
	)
	h := uint32(seed) ^ uint32(len(b))
	for len(b) >= 4 {
		k := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
		b = b[4:]
	}
	switch len(b) {
	case 3:
		h ^= uint32(b[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(b[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(b[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}
