// Package sdk is what a kpipe plugin author imports: the Source, Transform and
// Sink interfaces, the Batch that flows between them, and Serve, which runs a
// plugin as its own process speaking the versioned gRPC protocol of
// sdk/proto/kpipe/v1 through hashicorp/go-plugin.
//
// A plugin's main is one line:
//
//	func main() { sdk.Serve(myplugin.New) }
//
// where New returns a Source, a Transform or a Sink. Its parameters are a Go
// struct described with the tags of package sdk/param and returned by Spec;
// Serve fills it in before calling Configure.
//
// Every interface has an Unimplemented struct to embed: it supplies the
// optional methods, so that methods added in later versions never break an
// existing plugin.
package sdk

import (
	"context"
	"fmt"

	"github.com/kpipe/kpipe/sdk/record"
)

// Version is the version of the SDK and of kpipe's built-in plugins.
const Version = "0.1.0"

// ProtocolVersion is the version of the plugin protocol this SDK speaks.
const ProtocolVersion = 1

// Spec describes a plugin.
type Spec struct {
	Name    string
	Version string
	Summary string
	// Config points to the plugin's parameter struct (see package param).
	// Serve fills it from the host's parameters before calling Configure.
	Config any
}

// Envelope summarizes a batch: one topic-partition, its count and bounds.
type Envelope struct {
	Topic        string
	Partition    int32
	Count        int64
	MinOffset    int64
	MaxOffset    int64
	MinTimestamp int64
	MaxTimestamp int64
	// NextOffset is the source position after this batch.
	NextOffset int64
}

// Batch is the unit of data: the records of one topic-partition as Arrow IPC
// stream bytes in the schema of package record, with their Envelope.
type Batch struct {
	Envelope
	// Arrow holds the encoded records; empty when Count is 0.
	Arrow []byte
	// Seq is assigned by the host. Transforms keep it; sinks ack it.
	Seq uint64
}

// Position is the next offset to read of a topic-partition.
type Position struct {
	Topic      string
	Partition  int32
	NextOffset int64
}

func (p Position) String() string {
	return fmt.Sprintf("%s/%d@%d", p.Topic, p.Partition, p.NextOffset)
}

// NewBatch encodes the records in b (and resets b) into a Batch for the
// topic-partition. nextOffset is the source position after the batch; pass
// -1 to use the highest offset plus one.
func NewBatch(topic string, partition int32, b *record.Builder, nextOffset int64) (Batch, error) {
	bounds := b.Bounds()
	rec := b.NewRecord()
	defer rec.Release()
	env := Envelope{
		Topic: topic, Partition: partition, Count: bounds.Count,
		MinOffset: bounds.MinOffset, MaxOffset: bounds.MaxOffset,
		MinTimestamp: bounds.MinTimestamp, MaxTimestamp: bounds.MaxTimestamp,
		NextOffset: nextOffset,
	}
	if nextOffset < 0 {
		env.NextOffset = bounds.MaxOffset + 1
	}
	if bounds.Count == 0 {
		return Batch{Envelope: env}, nil
	}
	data, err := record.Encode(rec)
	if err != nil {
		return Batch{}, err
	}
	return Batch{Envelope: env, Arrow: data}, nil
}

// Source produces batches.
type Source interface {
	Spec() Spec
	// Configure checks the parameters Serve decoded into Spec().Config.
	// Return *param.Error or param.Errors to point at a parameter.
	Configure(ctx context.Context) error
	// Open prepares reading; resume holds the positions to continue from
	// (empty for a first run).
	Open(ctx context.Context, resume []Position) error
	// Read returns the next batch, or io.EOF when the source has no more
	// data. It is called from one goroutine; ctx ends when the host stops.
	Read(ctx context.Context) (Batch, error)
	// Ack tells the source that the host has persisted these positions. It
	// may run concurrently with Read.
	Ack(ctx context.Context, acked []Position) error
	// Metrics returns counters for the run report.
	Metrics() map[string]int64
	Teardown(ctx context.Context) error
	mustEmbedUnimplementedSource()
}

// UnimplementedSource supplies the optional methods of a Source.
type UnimplementedSource struct{}

func (UnimplementedSource) Configure(context.Context) error        { return nil }
func (UnimplementedSource) Ack(context.Context, []Position) error  { return nil }
func (UnimplementedSource) Metrics() map[string]int64              { return nil }
func (UnimplementedSource) Teardown(context.Context) error         { return nil }
func (UnimplementedSource) mustEmbedUnimplementedSource()          {}
func (UnimplementedSource) Open(context.Context, []Position) error { return nil }

// Transform turns each batch into zero or more batches.
type Transform interface {
	Spec() Spec
	Configure(ctx context.Context) error
	// Process returns the batches that replace b; each must keep b.Seq.
	// Returning b itself unchanged costs nothing: it is never re-encoded.
	Process(ctx context.Context, b Batch) ([]Batch, error)
	Metrics() map[string]int64
	Teardown(ctx context.Context) error
	mustEmbedUnimplementedTransform()
}

// UnimplementedTransform supplies the optional methods of a Transform.
type UnimplementedTransform struct{}

func (UnimplementedTransform) Configure(context.Context) error  { return nil }
func (UnimplementedTransform) Metrics() map[string]int64        { return nil }
func (UnimplementedTransform) Teardown(context.Context) error   { return nil }
func (UnimplementedTransform) mustEmbedUnimplementedTransform() {}

// Acker reports batches (by Seq) that a sink has made durable. It is safe for
// concurrent use and never blocks.
type Acker func(seqs ...uint64)

// Sink consumes batches and makes them durable.
type Sink interface {
	Spec() Spec
	Configure(ctx context.Context) error
	// Open prepares writing. The sink calls ack for every batch once it is
	// durable, in any order, from any goroutine.
	Open(ctx context.Context, ack Acker) error
	// Write takes one batch; the sink may buffer it.
	Write(ctx context.Context, b Batch) error
	// Flush makes every written batch durable and acks it.
	Flush(ctx context.Context) error
	Metrics() map[string]int64
	Teardown(ctx context.Context) error
	mustEmbedUnimplementedSink()
}

// UnimplementedSink supplies the optional methods of a Sink.
type UnimplementedSink struct{}

func (UnimplementedSink) Configure(context.Context) error { return nil }
func (UnimplementedSink) Metrics() map[string]int64       { return nil }
func (UnimplementedSink) Teardown(context.Context) error  { return nil }
func (UnimplementedSink) mustEmbedUnimplementedSink()     {}

// PositionTracker is implemented by sinks that record what they hold durably,
// such as backup stores. After Open, DurablePositions returns the positions
// to resume from; the host prefers them to its own checkpoint, so a crash
// between a sink's write and the host's checkpoint never duplicates data.
type PositionTracker interface {
	DurablePositions(ctx context.Context) ([]Position, error)
}
