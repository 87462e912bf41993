// Package sdk is what a kpipe plugin author imports: the Source, Transform and
// Sink interfaces, the Batch that flows between them, and Serve, which runs a
// plugin as its own process speaking protocol v2 (sdk/proto/kpipe/v2) through
// hashicorp/go-plugin.
//
// A plugin's main is one line:
//
//	func main() { sdk.Serve(myplugin.New) }
//
// where New returns a Source, a Transform or a Sink. Its parameters are a Go
// struct described with the tags of package sdk/param and returned by Spec;
// Serve fills it in before calling Configure.
//
// Batches travel as frames (see package record) directly from one plugin
// process to the next over data links the host sets up (package link); the
// host sees only their envelopes. The SDK does that plumbing: a source
// returns batches, a transform maps batches to batches, a sink writes them
// and acknowledges them once durable. Every interface has an Unimplemented
// struct to embed: it supplies the optional methods, so that methods added
// in later versions never break an existing plugin.
package sdk

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/kpipe/kpipe/sdk/link"
	"github.com/kpipe/kpipe/sdk/record"
)

// Version is the version of the SDK and of kpipe's built-in plugins.
const Version = "0.2.0"

// ProtocolVersion is the version of the plugin protocol this SDK speaks.
const ProtocolVersion = 2

// Spec describes a plugin.
type Spec struct {
	Name    string
	Version string
	Summary string
	// Config points to the plugin's parameter struct (see package param).
	// Serve fills it from the host's parameters before calling Configure.
	Config any
}

// TopicID is a Kafka topic ID: which incarnation of a topic name records
// come from. The zero TopicID is unknown.
type TopicID [16]byte

// String renders a TopicID as Kafka tools do (URL-safe base64, no padding);
// the empty string when unknown.
func (id TopicID) String() string {
	if id == (TopicID{}) {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(id[:])
}

// MarshalText renders the ID as String does.
func (id TopicID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText reads what MarshalText writes.
func (id *TopicID) UnmarshalText(text []byte) error {
	if len(text) == 0 {
		*id = TopicID{}
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(string(text))
	if err != nil || len(b) != len(id) {
		return fmt.Errorf("topic ID %q: want 22 characters of URL-safe base64", text)
	}
	copy(id[:], b)
	return nil
}

// BatchID names a batch on the data plane: its source's seq and, among the
// outputs a transform made of it, its part.
type BatchID = link.ID

// Envelope summarizes a batch: one topic-partition, its count and bounds.
type Envelope struct {
	// Seq is given by the SDK when a source's batch leaves it; transforms
	// and sinks see it unchanged. Part numbers a transform's outputs.
	Seq  uint64
	Part uint32

	Topic     string
	TopicID   TopicID
	Partition int32

	Count        int64
	MinOffset    int64
	MaxOffset    int64
	MinTimestamp int64
	MaxTimestamp int64
	// NextOffset is the source position after this batch.
	NextOffset int64

	// Size is the batch's size once decompressed, which credit counts;
	// FrameBytes the length of its frame. The SDK fills both.
	Size       int64
	FrameBytes int64

	// MaxRecordBytes is the size of the batch's largest record (key, value
	// and headers, as record.View.RecordBytes counts it); 0 when unknown.
	// NewBatch fills it.
	MaxRecordBytes int64

	// Traceparent and Tracestate are the batch's W3C trace context. A
	// transform's outputs inherit their input's unless they set their own.
	Traceparent string
	Tracestate  string

	// Gap, when set, makes the batch a gap: the offsets [MinOffset,
	// NextOffset) of the partition will never be read (the cluster deleted
	// them before the source got to them), and Gap says why. A gap has
	// Count 0 and no records; transforms pass it on as it is, and the sink
	// records it (see NewGap).
	Gap string
}

// NewGap returns a gap of the offsets [from, to) of a topic-partition.
func NewGap(topic string, id TopicID, partition int32, from, to int64, reason string) Batch {
	return Batch{Envelope: Envelope{Topic: topic, TopicID: id, Partition: partition,
		MinOffset: from, MaxOffset: to - 1, NextOffset: to, Gap: reason}}
}

// GapDeleted is the reason of a gap whose records the cluster deleted
// (retention, DeleteRecords) before the source read them.
const GapDeleted = "deleted before they were read (retention or DeleteRecords)"

// IsGap says the envelope is a gap rather than records.
func (e Envelope) IsGap() bool { return e.Gap != "" }

// ID is the batch's name on the data plane.
func (e Envelope) ID() BatchID { return BatchID{Seq: e.Seq, Part: e.Part} }

// Bounds returns the envelope's count and bounds.
func (e Envelope) Bounds() record.Bounds {
	return record.Bounds{Count: e.Count, MinOffset: e.MinOffset, MaxOffset: e.MaxOffset,
		MinTimestamp: e.MinTimestamp, MaxTimestamp: e.MaxTimestamp}
}

// SetBounds sets the envelope's count and bounds.
func (e *Envelope) SetBounds(b record.Bounds) {
	e.Count, e.MinOffset, e.MaxOffset = b.Count, b.MinOffset, b.MaxOffset
	e.MinTimestamp, e.MaxTimestamp = b.MinTimestamp, b.MaxTimestamp
}

// Batch is the unit of data: the records of one topic-partition with their
// Envelope.
type Batch struct {
	Envelope
	// Arrow holds the records as a frame: one Arrow IPC record batch
	// message in the schema of package record, its buffers compressed or
	// not. A sink or transform receives batches this way.
	Arrow []byte
	// Record holds the records decoded. A source or transform may set it
	// instead of Arrow; the SDK then encodes it in the codec the sink
	// stores (in parallel with the plugin's work) and releases it.
	Record arrow.RecordBatch
	// Metadata, set on a batch a source returns, is sent ahead of the
	// batch. A batch with Metadata and no Topic carries nothing else.
	Metadata *Metadata

	release *releaser
	free    *releaser
}

// releaser runs its function once.
type releaser struct {
	once sync.Once
	fn   func()
}

// Release says the plugin holds the batch's bytes no more (a sink that has
// written them out, say): their memory is reused and the host may let the
// source send more. A sink that never calls it releases each batch when it
// acknowledges it. Release is idempotent; Arrow must not be used after it.
func (b Batch) Release() {
	if b.release != nil {
		b.release.once.Do(b.release.fn)
	}
}

// WithRelease returns b with fn to run on its first Release (a source that
// lends the SDK its frame buffer gets it back this way).
func (b Batch) WithRelease(fn func()) Batch {
	b.release = &releaser{fn: fn}
	return b
}

// FreeFrame says the plugin needs b.Arrow no more (a sink that decoded a
// compressed frame into memory of its own): the frame's memory is reused at
// once, while the batch's credit stays taken until Release. Arrow must not
// be used after it.
func (b Batch) FreeFrame() {
	if b.free != nil {
		b.free.once.Do(b.free.fn)
	}
}

// NewBatch returns a Batch of the records appended to b (and resets b) for
// the topic-partition; the SDK encodes it. nextOffset is the source position
// after the batch; pass -1 to use the highest offset plus one.
func NewBatch(topic string, partition int32, b *record.Builder, nextOffset int64) (Batch, error) {
	bounds := b.Bounds()
	env := Envelope{Topic: topic, Partition: partition, NextOffset: nextOffset, MaxRecordBytes: b.LargestRecord()}
	env.SetBounds(bounds)
	if nextOffset < 0 {
		env.NextOffset = bounds.MaxOffset + 1
	}
	if bounds.Count == 0 {
		b.NewRecord().Release()
		return Batch{Envelope: env}, nil
	}
	return Batch{Envelope: env, Record: b.NewRecord()}, nil
}

// Position is the next offset to read of a topic-partition.
type Position struct {
	Topic      string
	Partition  int32
	NextOffset int64
	// TopicID is the topic incarnation the position belongs to; zero when
	// unknown. A position of another incarnation than the topic's current
	// one does not apply to it: a re-created topic starts over.
	TopicID TopicID
}

func (p Position) String() string {
	return fmt.Sprintf("%s/%d@%d", p.Topic, p.Partition, p.NextOffset)
}

// TopicMetadata is what a restore needs to recreate a topic.
type TopicMetadata struct {
	Name       string  `json:"name"`
	ID         TopicID `json:"id,omitzero"`
	Partitions int32   `json:"partitions"`
	// ReplicationFactor is 0 when unknown.
	ReplicationFactor int32 `json:"replication_factor,omitempty"`
	// Configs holds the topic configs that differ from the broker's
	// defaults.
	Configs map[string]string `json:"configs,omitempty"`
	// MinInsyncReplicas is the topic's min.insync.replicas in effect, its
	// own or the broker's; 0 when unknown.
	MinInsyncReplicas int32 `json:"min_insync_replicas,omitempty"`
	// LargestRecord is the largest record of the batches a run sends
	// whole (a batch a time window or a resume position cuts is left out),
	// so that a sink can refuse one it cannot write before it writes any;
	// nil when unknown.
	//
	// LargestRecord and ReadPartitions describe one run, not the topic:
	// they are not stored with it.
	LargestRecord *LargestRecord `json:"-"`
	// ReadPartitions are the partitions a run reads records of, in order
	// (those chosen when it reads none), so that a sink can tell the
	// partitions it will write before it writes; nil when unknown (all).
	ReadPartitions []int32 `json:"-"`
	// Timestamps bound the timestamps of the records a run reads (those of
	// its batches, within its time window); nil when unknown.
	Timestamps *TimestampRange `json:"-"`
}

// TimestampRange bounds timestamps, epoch milliseconds, both included.
type TimestampRange struct {
	Min, Max int64
}

// Widen returns the range that holds r and o (either may be nil).
func (r *TimestampRange) Widen(o *TimestampRange) *TimestampRange {
	switch {
	case r == nil:
		return o
	case o == nil:
		return r
	}
	return &TimestampRange{Min: min(r.Min, o.Min), Max: max(r.Max, o.Max)}
}

// Needs is how many partitions a topic must have to take the partitions a
// run reads of it.
func (t TopicMetadata) Needs() int32 {
	if len(t.ReadPartitions) == 0 {
		return t.Partitions
	}
	return slices.Max(t.ReadPartitions) + 1
}

// LargestRecord is a topic's largest record and the batch that holds it,
// in the topic as read: a sink that renames topics still names the source.
type LargestRecord struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// MinOffset and MaxOffset are the offsets of the batch that holds it.
	MinOffset int64 `json:"min_offset"`
	MaxOffset int64 `json:"max_offset"`
	// Bytes is its size: key, value and headers.
	Bytes int64 `json:"bytes"`
}

// Larger returns the larger of l and o (either may be nil).
func (l *LargestRecord) Larger(o *LargestRecord) *LargestRecord {
	if l == nil || (o != nil && o.Bytes > l.Bytes) {
		return o
	}
	return l
}

// Where names the record's place: its partition and offset, or the
// offsets of its batch.
func (l *LargestRecord) Where() string {
	if l.MinOffset == l.MaxOffset {
		return fmt.Sprintf("%s/%d at offset %d", l.Topic, l.Partition, l.MinOffset)
	}
	return fmt.Sprintf("%s/%d in the batch of offsets %d to %d", l.Topic, l.Partition, l.MinOffset, l.MaxOffset)
}

// Metadata describes the topics of a run. A source sends it before any data
// and again, whole, whenever it changes; transforms may rewrite it; the sink
// stores it.
type Metadata struct {
	// ClusterID is the id of the cluster the topics are on; empty when
	// unknown.
	ClusterID string          `json:"cluster_id,omitempty"`
	Topics    []TopicMetadata `json:"topics"`
	// Groups holds consumer groups' committed offsets on the topics, asked
	// of each group's coordinator at GroupsTakenAt (UTC), as close as can
	// be to a snapshot's end offsets; empty unless a source was asked to.
	Groups        []GroupOffsets `json:"groups,omitempty"`
	GroupsTakenAt time.Time      `json:"groups_taken_at,omitzero"`
}

// GroupOffsets is what one consumer group has committed.
type GroupOffsets struct {
	Group   string        `json:"group"`
	Offsets []GroupOffset `json:"offsets"`
}

// GroupOffset is a group's committed offset of one topic-partition.
type GroupOffset struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	// LeaderEpoch is -1 when the commit named none.
	LeaderEpoch int32  `json:"leader_epoch"`
	Metadata    string `json:"metadata,omitempty"`
}

// Topic returns the metadata of the topic name, if present.
func (m Metadata) Topic(name string) (TopicMetadata, bool) {
	for _, t := range m.Topics {
		if t.Name == name {
			return t, true
		}
	}
	return TopicMetadata{}, false
}

// PartitionError is a failure of one topic-partition. Plugins return it
// (wrapped or not) so that the host learns which partition failed, at which
// offset, and whether trying again may help.
type PartitionError struct {
	Topic     string
	Partition int32
	// Offset is the offset the failure concerns; -1 when none.
	Offset int64
	// Retryable says the failure may go away by itself (a leader moving, a
	// broker restarting).
	Retryable bool
	// Code is short and machine-readable, such as a Kafka error name.
	Code string
	Err  error
}

func (e *PartitionError) Error() string {
	where := fmt.Sprintf("%s/%d", e.Topic, e.Partition)
	if e.Offset >= 0 {
		where += fmt.Sprintf(" at offset %d", e.Offset)
	}
	kind := "fatal"
	if e.Retryable {
		kind = "retryable"
	}
	msg := "failed"
	if e.Err != nil {
		msg = e.Err.Error()
	}
	if e.Code != "" {
		return fmt.Sprintf("%s: %s (%s, %s)", where, msg, e.Code, kind)
	}
	return fmt.Sprintf("%s: %s (%s)", where, msg, kind)
}

func (e *PartitionError) Unwrap() error { return e.Err }

// SourceOptions is what a source learns when it opens.
type SourceOptions struct {
	// Resume holds the positions to continue from (empty for a first run).
	Resume []Position
	// InFlightBytes is the host's budget of decompressed bytes between the
	// source and the sink: a source sizes its reads from it, so that its
	// memory does not depend on how well the data compresses.
	InFlightBytes int64
}

// Source produces batches.
type Source interface {
	Spec() Spec
	// Configure checks the parameters Serve decoded into Spec().Config.
	// Return *param.Error or param.Errors to point at a parameter.
	Configure(ctx context.Context) error
	// Open prepares reading.
	Open(ctx context.Context, o SourceOptions) error
	// Read returns the next batch, or io.EOF when the source has no more
	// data. It is called from one goroutine, only while the host grants
	// credit; ctx ends when the host stops the source.
	Read(ctx context.Context) (Batch, error)
	// Ack tells the source that the host has persisted these positions. It
	// may run concurrently with Read.
	Ack(ctx context.Context, acked []Position) error
	// Metrics returns counters for the run report. It is called from any
	// goroutine while the source runs.
	Metrics() map[string]int64
	Teardown(ctx context.Context) error
	mustEmbedUnimplementedSource()
}

// UnimplementedSource supplies the optional methods of a Source.
type UnimplementedSource struct{}

func (UnimplementedSource) Configure(context.Context) error           { return nil }
func (UnimplementedSource) Ack(context.Context, []Position) error     { return nil }
func (UnimplementedSource) Metrics() map[string]int64                 { return nil }
func (UnimplementedSource) Teardown(context.Context) error            { return nil }
func (UnimplementedSource) mustEmbedUnimplementedSource()             {}
func (UnimplementedSource) Open(context.Context, SourceOptions) error { return nil }

// PartitionMetric is one figure of one topic-partition, such as a source's
// lag.
type PartitionMetric struct {
	Topic     string
	Partition int32
	Name      string
	Value     int64
}

// PartitionMetrics is implemented by plugins that report figures per
// partition. The SDK sends them with Metrics, from any goroutine.
type PartitionMetrics interface {
	PartitionMetrics() []PartitionMetric
}

// PartitionSource is implemented by sources whose partitions can fail one
// by one. Read returning a *PartitionError then concerns that partition
// alone and the runner reads on: after a fatal error the source reads that
// partition no more; after a retryable one it holds the partition back
// until the runner, after a backoff, calls ResumePartition (from another
// goroutine than Read). A partition that stays failing past the retries
// counts as failed for good. Read returns io.EOF once every partition it
// still reads is done, even while one is held back. A source that is not a
// PartitionSource ends the run at its first error.
type PartitionSource interface {
	ResumePartition(ctx context.Context, topic string, partition int32) error
}

// Transform turns each batch into zero or more batches.
type Transform interface {
	Spec() Spec
	Configure(ctx context.Context) error
	// Process returns the batches that replace b. Returning b itself
	// unchanged costs nothing: its frame travels on as it is. Outputs may
	// carry Record instead of Arrow. b's bytes are not valid after Process
	// returns.
	Process(ctx context.Context, b Batch) ([]Batch, error)
	// Metrics is called from any goroutine while the transform runs.
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

// EnvelopeTransform is a Transform that changes only envelopes (renaming
// topics, moving partitions). It never receives batch bytes: they flow past
// it, and Process is never called.
type EnvelopeTransform interface {
	Transform
	// ProcessEnvelope returns the envelope that replaces e, or keep false
	// to drop the batch.
	ProcessEnvelope(ctx context.Context, e Envelope) (out Envelope, keep bool, err error)
}

// MetadataTransform is a Transform that rewrites metadata on its way to the
// sink. Transforms that do not implement it pass metadata on unchanged.
type MetadataTransform interface {
	ProcessMetadata(ctx context.Context, m Metadata) (Metadata, error)
}

// Acker reports batches that a sink has made durable. It is safe for
// concurrent use and never blocks.
type Acker func(ids ...BatchID)

// Sink consumes batches and makes them durable.
type Sink interface {
	Spec() Spec
	Configure(ctx context.Context) error
	// Open prepares writing. The sink calls ack for every batch once it is
	// durable, in any order, from any goroutine.
	Open(ctx context.Context, ack Acker) error
	// Write takes one batch; the sink may hold it (and should Release it
	// once it holds its bytes no more).
	Write(ctx context.Context, b Batch) error
	// Flush makes every written batch durable and acks it.
	Flush(ctx context.Context) error
	// Metrics is called from any goroutine while the sink runs.
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
// A sink that tracks positions only in some configurations returns
// ErrPositionsNotTracked in the others: the host then keeps its own
// checkpoint.
type PositionTracker interface {
	DurablePositions(ctx context.Context) ([]Position, error)
}

// ErrPositionsNotTracked is what DurablePositions returns when the sink,
// as configured, does not track positions.
var ErrPositionsNotTracked = errors.New("this sink does not track positions as configured")

// FrameStore is implemented by sinks that store frames as they come (a
// backup store): Codec is the codec they store, which sources then encode
// in, so that no frame is compressed twice.
type FrameStore interface {
	Codec() record.Codec
}

// FailingSink is implemented by sinks that can fail between calls (a
// commit made in the background, a lease lost): Failed yields the error
// once, and the run ends with it at once instead of at the next Write.
type FailingSink interface {
	Failed() <-chan error
}

// Outcome is how a run that ended without error ended, as the host tells
// the plugins when it tears them down.
type Outcome string

const (
	// OutcomeComplete: the source reached its end (a snapshot read all).
	OutcomeComplete Outcome = "complete"
	// OutcomeStopped: the run was stopped (by a signal) before that.
	OutcomeStopped Outcome = "stopped"
	// OutcomeNotStarted: the sink opened, but the run failed before any
	// data could flow (the source could not open: a cluster refusing the
	// login, say). The sink undoes what opening it wrote.
	OutcomeNotStarted Outcome = "not_started"
	// OutcomeFailed: the run failed while data flowed. Only the sink hears
	// it (the other plugins are stopped): it records what is durable (a
	// restore's state) and lets go, as a crash would leave things.
	OutcomeFailed Outcome = "failed"
)

// Ender is implemented by plugins that record how a run ended (a backup
// store, in its lease, so that listing tells a complete backup from a
// stopped one). End is called just before Teardown, after a run without
// error, with OutcomeNotStarted, or, for the sink, with OutcomeFailed.
type Ender interface {
	End(ctx context.Context, o Outcome)
}

// MetadataSink is implemented by sinks that use or store metadata.
type MetadataSink interface {
	WriteMetadata(ctx context.Context, m Metadata) error
}
