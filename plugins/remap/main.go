// Command kpipe-plugin-remap renames topics and moves partitions: it changes
// only a batch's envelope, so it never receives the records, which flow past
// it from the stage before to the stage after. It rewrites the topics'
// metadata the same way.
package main

import (
	"context"
	"errors"
	"strconv"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
)

func main() { sdk.Serve(New) }

type config struct {
	TopicMapping     map[string]string `param:"topic_mapping" help:"source topic = target topic; unmapped topics keep their name"`
	PartitionMapping map[string]int32  `param:"partition_mapping" help:"source partition = target partition (several may map to one); unmapped partitions keep their number"`
}

// Remap is the remap transform.
type Remap struct {
	sdk.UnimplementedTransform
	cfg   config
	parts map[int32]int32
}

// New returns the remap transform.
func New() sdk.Transform { return &Remap{} }

func (r *Remap) Spec() sdk.Spec {
	return sdk.Spec{Name: "remap", Version: sdk.Version, Summary: "renames topics and moves partitions", Config: &r.cfg}
}

func (r *Remap) Configure(context.Context) error {
	var errs param.Errors
	for from, to := range r.cfg.TopicMapping {
		if from == "" || to == "" {
			errs = append(errs, param.Errorf("topic_mapping", "%q = %q: topic names must not be empty", from, to))
		}
	}
	r.parts = map[int32]int32{}
	for from, to := range r.cfg.PartitionMapping {
		n, err := strconv.ParseInt(from, 10, 32)
		if err != nil || n < 0 {
			errs = append(errs, param.Errorf("partition_mapping", "key %q is not a partition number", from))
			continue
		}
		if to < 0 {
			errs = append(errs, param.Errorf("partition_mapping", "%s = %d: target partition must not be negative", from, to))
			continue
		}
		r.parts[int32(n)] = to
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// Process is never called: Remap is an sdk.EnvelopeTransform.
func (r *Remap) Process(context.Context, sdk.Batch) ([]sdk.Batch, error) {
	return nil, errors.New("remap works on envelopes only")
}

// ProcessEnvelope renames the batch's topic and moves its partition.
func (r *Remap) ProcessEnvelope(_ context.Context, e sdk.Envelope) (sdk.Envelope, bool, error) {
	if t, ok := r.cfg.TopicMapping[e.Topic]; ok {
		e.Topic = t
	}
	if p, ok := r.parts[e.Partition]; ok {
		e.Partition = p
	}
	return e, true, nil
}

// ProcessMetadata renames topics; a topic whose partitions move gets as
// many partitions as its records land in. Topics mapped onto one name
// merge.
func (r *Remap) ProcessMetadata(_ context.Context, m sdk.Metadata) (sdk.Metadata, error) {
	var out sdk.Metadata
	index := map[string]int{}
	for _, t := range m.Topics {
		if name, ok := r.cfg.TopicMapping[t.Name]; ok {
			t.Name = name
			t.ID = sdk.TopicID{} // a new topic, or another incarnation
		}
		n := int32(0)
		for p := range t.Partitions {
			if q, ok := r.parts[p]; ok {
				p = q
			}
			n = max(n, p+1)
		}
		t.Partitions = n
		if i, ok := index[t.Name]; ok {
			out.Topics[i].Partitions = max(out.Topics[i].Partitions, t.Partitions)
			continue
		}
		index[t.Name] = len(out.Topics)
		out.Topics = append(out.Topics, t)
	}
	return out, nil
}
