package restore

import (
	"slices"
	"strconv"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
)

// Mapping renames topics and moves partitions. Partition moves apply to
// every topic; several source partitions may move to one target partition
// (a merge). What is not listed keeps its name and number. A target topic
// with a repartitioning gets its records by key instead (Repartition).
type Mapping struct {
	Topics     map[string]string
	Partitions map[int32]int32
	// Repartitions holds the repartitioning of target topics, by name.
	Repartitions map[string]Repartition
}

// WithRepartitioning checks the parameter repartitioning (target topic =
// STRATEGY:PARTITIONS) and adds it to m.
func (m Mapping) WithRepartitioning(rs map[string]string) (Mapping, param.Errors) {
	var errs param.Errors
	for topic, v := range rs {
		r, err := ParseRepartition(v)
		if err != nil {
			errs = append(errs, param.Errorf("repartitioning", "topic %q: %v", topic, err))
			continue
		}
		if m.Repartitions == nil {
			m.Repartitions = map[string]Repartition{}
		}
		m.Repartitions[topic] = r
	}
	return m, errs
}

// Repartitioned returns the repartitioning of a target topic, if it has
// one.
func (m Mapping) Repartitioned(target string) (Repartition, bool) {
	r, ok := m.Repartitions[target]
	return r, ok
}

// NewMapping checks the parameters topic_mapping and partition_mapping (a
// partition number as a string, for each source partition) and returns
// their mapping.
func NewMapping(topics map[string]string, partitions map[string]int32) (Mapping, param.Errors) {
	var errs param.Errors
	for from, to := range topics {
		if from == "" || to == "" {
			errs = append(errs, param.Errorf("topic_mapping", "%q = %q: topic names must not be empty", from, to))
		}
	}
	m := Mapping{Topics: topics, Partitions: map[int32]int32{}}
	for from, to := range partitions {
		n, err := strconv.ParseInt(from, 10, 32)
		if err != nil || n < 0 {
			errs = append(errs, param.Errorf("partition_mapping", "key %q is not a partition number", from))
			continue
		}
		if to < 0 {
			errs = append(errs, param.Errorf("partition_mapping", "%s = %d: target partition must not be negative", from, to))
			continue
		}
		m.Partitions[int32(n)] = to
	}
	return m, errs
}

// Topic returns the target name of a source topic.
func (m Mapping) Topic(topic string) string {
	if t, ok := m.Topics[topic]; ok {
		return t
	}
	return topic
}

// Partition returns the target number of a source partition.
func (m Mapping) Partition(p int32) int32 {
	if q, ok := m.Partitions[p]; ok {
		return q
	}
	return p
}

// Metadata renames the topics of m: a renamed topic loses its topic ID (a
// new topic, or another incarnation), a topic whose partitions move gets
// as many partitions as its records land in, a repartitioned one the
// partitions its repartitioning says (all of them may get records), and
// topics mapped onto one name merge.
func (m Mapping) Metadata(in sdk.Metadata) sdk.Metadata {
	var out sdk.Metadata
	index := map[string]int{}
	for _, t := range in.Topics {
		if name := m.Topic(t.Name); name != t.Name {
			t.Name = name
			t.ID = sdk.TopicID{}
		}
		n := int32(0)
		for p := range t.Partitions {
			n = max(n, m.Partition(p)+1)
		}
		t.Partitions = n
		if t.ReadPartitions != nil {
			t.ReadPartitions = m.partitions(t.ReadPartitions)
		}
		if i, ok := index[t.Name]; ok {
			o := &out.Topics[i]
			o.Partitions = max(o.Partitions, t.Partitions)
			o.LargestRecord = o.LargestRecord.Larger(t.LargestRecord)
			o.Timestamps = o.Timestamps.Widen(t.Timestamps)
			if o.ReadPartitions == nil || t.ReadPartitions == nil {
				o.ReadPartitions = nil // all of one of them
			} else {
				o.ReadPartitions = slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(o.ReadPartitions), t.ReadPartitions...))))
			}
			continue
		}
		index[t.Name] = len(out.Topics)
		out.Topics = append(out.Topics, t)
	}
	for i := range out.Topics {
		if r, ok := m.Repartitioned(out.Topics[i].Name); ok {
			out.Topics[i].Partitions, out.Topics[i].ReadPartitions = r.Partitions, nil
		}
	}
	return out
}

// partitions maps source partitions to target ones, sorted, each once.
func (m Mapping) partitions(ps []int32) []int32 {
	out := make([]int32, 0, len(ps))
	for _, p := range ps {
		out = append(out, m.Partition(p))
	}
	slices.Sort(out)
	return slices.Compact(out)
}
