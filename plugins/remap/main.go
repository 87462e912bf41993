// Command kpipe-plugin-remap renames topics and moves partitions: it changes
// only a batch's envelope, so records pass through untouched.
package main

import (
	"context"
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

func (r *Remap) Process(_ context.Context, b sdk.Batch) ([]sdk.Batch, error) {
	if t, ok := r.cfg.TopicMapping[b.Topic]; ok {
		b.Topic = t
	}
	if p, ok := r.parts[b.Partition]; ok {
		b.Partition = p
	}
	return []sdk.Batch{b}, nil
}
