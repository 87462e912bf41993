// Command kpipe-plugin-remap renames topics and moves partitions: it changes
// only a batch's envelope, so it never receives the records, which flow past
// it from the stage before to the stage after. It rewrites the topics'
// metadata the same way.
package main

import (
	"context"
	"errors"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/restore"
)

func main() { sdk.Serve(New) }

type config struct {
	TopicMapping     map[string]string `param:"topic_mapping" help:"source topic = target topic; unmapped topics keep their name"`
	PartitionMapping map[string]int32  `param:"partition_mapping" help:"source partition = target partition (several may map to one); unmapped partitions keep their number"`
}

// Remap is the remap transform.
type Remap struct {
	sdk.UnimplementedTransform
	cfg config
	m   restore.Mapping
}

// New returns the remap transform.
func New() sdk.Transform { return &Remap{} }

func (r *Remap) Spec() sdk.Spec {
	return sdk.Spec{Name: "remap", Version: sdk.Version, Summary: "renames topics and moves partitions", Config: &r.cfg}
}

func (r *Remap) Configure(context.Context) error {
	var errs param.Errors
	r.m, errs = restore.NewMapping(r.cfg.TopicMapping, r.cfg.PartitionMapping)
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
	e.Topic, e.Partition = r.m.Topic(e.Topic), r.m.Partition(e.Partition)
	return e, true, nil
}

// ProcessMetadata renames topics and moves partitions as restore.Mapping
// does.
func (r *Remap) ProcessMetadata(_ context.Context, m sdk.Metadata) (sdk.Metadata, error) {
	return r.m.Metadata(m), nil
}
