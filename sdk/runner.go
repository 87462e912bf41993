package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/kpipe/kpipe/sdk/link"
	"github.com/kpipe/kpipe/sdk/record"
	"github.com/kpipe/kpipe/sdk/spans"
)

// The runners carry out protocol v2 for one plugin: credit, envelopes, data
// links, acknowledgements, metadata, metrics. They speak in the SDK's own
// terms, so that Serve drives them over gRPC and kpipe's host can drive them
// in its own process (its engine tests do). Plugin authors do not need them.

// Credit lets a source send more batches and decompressed bytes.
type Credit struct {
	Batches int64
	Bytes   int64
}

// SourceControl is one message from the host to a running source.
type SourceControl struct {
	Credit Credit
	// Acked holds positions the host has persisted.
	Acked []Position
}

// Result answers one input batch of a transform: the batches it became, in
// order (none when dropped).
type Result struct {
	Seq     uint64
	Part    uint32
	Outputs []Envelope
}

// Event is what a running plugin tells the host; one field is set.
type Event struct {
	// Batch is a source's batch, whose frame is on the data link.
	Batch *Envelope
	// Result is a transform's answer to one input.
	Result   *Result
	Metadata *Metadata
	// Released and Acked name sink batches by seq, once per batch.
	Released []uint64
	Acked    []uint64
	Error    *PartitionError
	Metrics  map[string]int64
	// PartitionMetrics come with Metrics, from plugins that have them.
	PartitionMetrics []PartitionMetric
	// Spans are spans the plugin ended, as OTLP TracesData (package spans).
	Spans []byte
	// End says the source has no more data.
	End bool
}

// Input is one message from the host to a transform or a sink.
type Input struct {
	Batch    *Envelope
	Metadata *Metadata
}

// SourceOpen is how the host opens a source.
type SourceOpen struct {
	Resume        []Position
	Codec         record.Codec
	InFlightBytes int64
	// MetricsInterval is how often to report metrics; 0 for never.
	MetricsInterval time.Duration
	// OutPeerCert is the data receiver's certificate when the link uses TLS.
	OutPeerCert []byte
	// Traceparent and Tracestate are the run's W3C trace context: the
	// runner makes a span per batch under it. Empty when the host does not
	// trace.
	Traceparent, Tracestate string
}

// TransformOpen is how the host opens a transform.
type TransformOpen struct {
	Codec                   record.Codec
	InFlightBytes           int64
	MetricsInterval         time.Duration
	InPeerCert, OutPeerCert []byte
	Traceparent, Tracestate string
}

// SinkOpen is how the host opens a sink.
type SinkOpen struct {
	InFlightBytes   int64
	MetricsInterval time.Duration
	InPeerCert      []byte
	Traceparent     string
	Tracestate      string
}

// SinkOpened is what a sink tells the host when it opens.
type SinkOpened struct {
	TracksPositions bool
	Resume          []Position
	Codec           record.Codec
}

// Links hands a runner the ends of its data links.
type Links interface {
	Link(ctx context.Context, role link.Role) (net.Conn, error)
}

// LinkEnds are links at hand (an in-process plugin's).
type LinkEnds struct{ In, Out net.Conn }

// Link returns the end of role.
func (l LinkEnds) Link(_ context.Context, role link.Role) (net.Conn, error) {
	c := l.In
	if role == link.Out {
		c = l.Out
	}
	if c == nil {
		return nil, fmt.Errorf("no %s link was handed to this plugin", role)
	}
	return c, nil
}

// openLink gets the end of role and secures it when the host asked for TLS.
func openLink(ctx context.Context, links Links, role link.Role, id *link.Identity, peer []byte) (net.Conn, error) {
	c, err := links.Link(ctx, role)
	if err != nil {
		return nil, err
	}
	if len(peer) == 0 {
		return c, nil
	}
	if id == nil {
		c.Close()
		return nil, errors.New("the host asked for TLS on the data link, but this plugin was started without a link certificate")
	}
	return link.Secure(c, role, id, peer)
}

// emitter serializes events towards the host.
type emitter struct {
	mu   sync.Mutex
	emit func(Event) error
}

func (e *emitter) send(ev Event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.emit(ev)
}

// next takes the next input; ok is false once in is closed or ctx ends
// (then err says which).
func next(ctx context.Context, in <-chan Input) (inp Input, ok bool, err error) {
	select {
	case inp, ok = <-in:
		return inp, ok, nil
	case <-ctx.Done():
		return Input{}, false, ctx.Err()
	}
}

// asPartitionError returns the typed partition error err carries, if any.
func asPartitionError(err error) *PartitionError {
	var pe *PartitionError
	if errors.As(err, &pe) {
		return pe
	}
	return nil
}

// framePool holds the frame buffers of a plugin process.
var framePool = record.NewPool()

var inFlightBytes atomic.Int64

// InFlightBytes is the host's budget of decompressed bytes in flight
// between source and sink, known once the plugin is opened (the SDK sets it
// before calling Open): a plugin sizes its buffers and pools from it.
// DefaultInFlightBytes before.
func InFlightBytes() int64 {
	if n := inFlightBytes.Load(); n > 0 {
		return n
	}
	return DefaultInFlightBytes
}

// DefaultInFlightBytes is the host's default in-flight budget.
const DefaultInFlightBytes = 8 << 20

// budget sizes the process's memory from the host's in-flight budget:
// frames are compressed and short-lived, so a quarter of it is kept free
// for reuse; and the Go heap gets a soft limit of three times the budget plus a
// base, so that garbage does not pile up far beyond what the process holds
// (GOMEMLIMIT, when set, comes first).
func budget(inFlight int64) {
	if inFlight <= 0 {
		return
	}
	inFlightBytes.Store(inFlight)
	framePool.SetLimit(inFlight / 4)
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(3*inFlight + 24<<20)
	}
}

// SourceRunner runs a Source.
type SourceRunner struct {
	src   Source
	links Links
	id    *link.Identity
	open  SourceOpen
	out   net.Conn
	tr    *tracing
}

// NewSourceRunner returns a runner of src; id is the process's link
// identity (nil without TLS).
func NewSourceRunner(src Source, links Links, id *link.Identity) *SourceRunner {
	return &SourceRunner{src: src, links: links, id: id}
}

// Open opens the data link and the source.
func (r *SourceRunner) Open(ctx context.Context, o SourceOpen) error {
	r.open = o
	r.tr = newTracing("source", r.src.Spec(), o.Traceparent, o.Tracestate)
	budget(o.InFlightBytes)
	out, err := openLink(ctx, r.links, link.Out, r.id, o.OutPeerCert)
	if err != nil {
		return err
	}
	r.out = out
	if err := r.src.Open(ctx, SourceOptions{Resume: o.Resume, InFlightBytes: o.InFlightBytes}); err != nil {
		out.Close()
		return err
	}
	return nil
}

// credit is what a source may still send.
type credit struct {
	mu      sync.Mutex
	cond    *sync.Cond
	c       Credit
	stopped bool
}

func newCredit() *credit {
	c := &credit{}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *credit) add(n Credit) {
	c.mu.Lock()
	c.c.Batches += n.Batches
	c.c.Bytes += n.Bytes
	c.mu.Unlock()
	c.cond.Broadcast()
}

func (c *credit) stop() {
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
	c.cond.Broadcast()
}

// wait blocks until a batch may be read; false once stopped.
func (c *credit) wait() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.stopped && (c.c.Batches <= 0 || c.c.Bytes <= 0) {
		c.cond.Wait()
	}
	return !c.stopped
}

func (c *credit) take(bytes int64) {
	c.mu.Lock()
	c.c.Batches--
	c.c.Bytes -= bytes
	c.mu.Unlock()
}

// Run reads batches while the host grants credit, until the source ends or
// ctl is closed (the host stopping it). Batches already read still go out;
// the last event is End.
func (r *SourceRunner) Run(ctx context.Context, ctl <-chan SourceControl, emit func(Event) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	em := &emitter{emit: emit}
	p := newPipeline(ctx, r.open.Codec, link.NewWriter(r.out), em, r.tr)
	defer r.out.Close()
	// A failed pipeline stops reading too.
	readCtx, stopReading := context.WithCancel(p.ctx)
	defer stopReading()
	cr := newCredit()
	ctlDone := make(chan struct{})
	var readErr error
	// Acks may still come while the last batches go out: Run returns only
	// once the host has closed ctl (or ctx ended), so that no Ack runs
	// after it. A failed source returns at once: its error ends the run.
	defer func() {
		if readErr != nil {
			return
		}
		select {
		case <-ctlDone:
		case <-ctx.Done():
		}
	}()
	go func() {
		defer close(ctlDone)
		for c := range ctl {
			if len(c.Acked) > 0 {
				if err := r.src.Ack(ctx, c.Acked); err != nil {
					logger.Warn("ack failed", "error", err)
				}
			}
			if c.Credit.Batches > 0 || c.Credit.Bytes > 0 {
				cr.add(c.Credit)
			}
		}
		stopReading()
		cr.stop()
	}()
	go func() {
		<-readCtx.Done()
		cr.stop()
	}()
	report(ctx, r.open.MetricsInterval, em, r.src, r.tr)

	var seq uint64
	rt := newRetrier(readCtx, r.src, em)
	for cr.wait() {
		var began time.Time
		if r.tr.on() {
			began = time.Now()
		}
		b, err := r.src.Read(readCtx)
		if err == io.EOF {
			if rt.waitResume() {
				continue // a partition was held back: read it again
			}
			break
		}
		if err != nil {
			if readCtx.Err() != nil && ctx.Err() == nil {
				break // the host stopped the source
			}
			errCtx, span := r.tr.start(readCtx, "kpipe.source.read", "", "", trace.WithTimestamp(began))
			if pe := asPartitionError(err); pe != nil {
				span.SetAttributes(spans.Topic.String(pe.Topic), spans.Partition.Int(int(pe.Partition)))
				errCtx = withPartition(errCtx, pe.Topic, pe.Partition)
			}
			failed(span, err)
			span.End()
			if rt.handle(errCtx, err) {
				continue
			}
			readErr = err
			break
		}
		rt.succeeded(b.Topic, b.Partition)
		if b.Metadata != nil {
			p.push(&job{meta: b.Metadata})
		}
		if b.Topic == "" && b.Record == nil && b.Arrow == nil && !b.IsGap() {
			continue // metadata only
		}
		seq++
		b.Seq, b.Part = seq, 0
		size, err := sizeOf(&b)
		if err != nil {
			readErr = fmt.Errorf("source batch %s/%d: %w", b.Topic, b.Partition, err)
			break
		}
		b.Size = size
		cr.take(size)
		j := &job{batch: b}
		if r.tr.on() {
			_, j.span = r.tr.start(readCtx, "kpipe.source.read", "", "", trace.WithTimestamp(began), batchAttrs(b.Envelope))
			if b.Traceparent == "" {
				j.batch.Traceparent, j.batch.Tracestate = inject(j.span)
			}
		}
		if !p.push(j) {
			break
		}
	}
	if readErr != nil {
		p.abort()
		if pe := asPartitionError(readErr); pe != nil {
			_ = em.send(Event{Error: pe})
		}
		_ = r.tr.flush(em)
		return readErr
	}
	return p.finish()
}

// sizeOf returns the decompressed size of a batch and checks that its
// records agree with its count.
func sizeOf(b *Batch) (int64, error) {
	switch {
	case b.Record != nil:
		if b.Record.NumRows() != b.Count {
			return 0, fmt.Errorf("the batch holds %d records, its envelope counts %d", b.Record.NumRows(), b.Count)
		}
		return recordSize(b.Record), nil
	case len(b.Arrow) > 0:
		info, err := record.Inspect(b.Arrow)
		if err != nil {
			return 0, err
		}
		if info.Rows != b.Count {
			return 0, fmt.Errorf("the frame holds %d records, its envelope counts %d", info.Rows, b.Count)
		}
		return info.Size, nil
	case b.Count != 0:
		return 0, fmt.Errorf("the envelope counts %d records, but the batch holds none", b.Count)
	case b.IsGap() && b.NextOffset <= b.MinOffset:
		return 0, fmt.Errorf("a gap from offset %d to %d is empty", b.MinOffset, b.NextOffset)
	}
	return 0, nil
}

// recordSize is the bytes of a record batch's buffers.
func recordSize(rec arrow.RecordBatch) int64 { return record.Size(rec) }

// job is one batch (or metadata, or the end) on its way out of a source, in
// order.
type job struct {
	batch Batch
	meta  *Metadata
	end   bool
	frame []byte
	own   bool // frame is from framePool
	err   error
	done  chan struct{}
	span  trace.Span // the batch's, ended once sent; nil when not tracing
}

// pipeline encodes batches in parallel and sends them in order: each
// envelope to the host, each frame on the link.
type pipeline struct {
	ctx     context.Context
	cancel  context.CancelFunc
	codec   record.Codec
	out     *link.Writer
	em      *emitter
	tr      *tracing
	order   chan *job
	work    chan *job
	written chan struct{}
	err     error
}

func newPipeline(ctx context.Context, codec record.Codec, out *link.Writer, em *emitter, tr *tracing) *pipeline {
	ctx, cancel := context.WithCancel(ctx)
	workers := runtime.GOMAXPROCS(0)
	p := &pipeline{
		ctx: ctx, cancel: cancel, codec: codec, out: out, em: em, tr: tr,
		order:   make(chan *job, workers+1),
		work:    make(chan *job, workers),
		written: make(chan struct{}),
	}
	for range workers {
		go p.encode()
	}
	go p.write()
	return p
}

// push queues a job; false once the pipeline has failed.
func (p *pipeline) push(j *job) bool {
	j.done = make(chan struct{})
	select {
	case p.order <- j:
	case <-p.ctx.Done():
		return false
	}
	if j.batch.Record == nil {
		close(j.done)
		return true
	}
	select {
	case p.work <- j:
		return true
	case <-p.ctx.Done():
		return false
	}
}

func (p *pipeline) encode() {
	enc := record.NewEncoder(p.codec)
	ratio := 1.0 // frame size / record size of the last batch
	for {
		select {
		case <-p.ctx.Done():
			return
		case j := <-p.work:
			rec := j.batch.Record
			// A buffer of the size the frame will likely have: the last
			// batch's compression ratio, and some slack.
			buf := framePool.Allocate(int(float64(j.batch.Size)*ratio*1.1) + 16<<10)
			j.frame, j.err = enc.Encode(rec, buf[:0])
			if j.batch.Size > 0 {
				ratio = min(float64(len(j.frame))/float64(j.batch.Size), 1.1)
			}
			j.own = len(j.frame) > 0 && &j.frame[0] == &buf[0]
			if !j.own {
				framePool.Free(buf)
			}
			rec.Release()
			j.batch.Record = nil
			close(j.done)
		}
	}
}

func (p *pipeline) write() {
	defer close(p.written)
	for {
		var j *job
		select {
		case <-p.ctx.Done():
			if p.err == nil {
				p.err = p.ctx.Err()
			}
			return
		case j = <-p.order:
		}
		select {
		case <-j.done:
		case <-p.ctx.Done():
			continue
		}
		if err := p.send(j); err != nil {
			p.err = err
			p.cancel()
			return
		}
		if j.end {
			return
		}
	}
}

// send hands one job to the host and the link.
func (p *pipeline) send(j *job) error {
	switch {
	case j.end:
		if err := p.tr.flush(p.em); err != nil {
			return err
		}
		return p.em.send(Event{End: true})
	case j.meta != nil:
		return p.em.send(Event{Metadata: j.meta})
	case j.err != nil:
		return fmt.Errorf("encode batch %s/%d: %w", j.batch.Topic, j.batch.Partition, j.err)
	}
	b := j.batch
	frame := j.frame
	if frame == nil {
		frame = b.Arrow
	}
	env := b.Envelope
	env.FrameBytes = int64(len(frame))
	if err := p.em.send(Event{Batch: &env}); err != nil {
		return err
	}
	if b.Count > 0 {
		if err := p.out.Write(env.ID(), frame); err != nil {
			return err
		}
	}
	if j.own {
		framePool.Free(j.frame)
	}
	b.Release()
	if j.span != nil {
		j.span.SetAttributes(spans.Bytes.Int64(env.FrameBytes))
		j.span.End()
	}
	return nil
}

// finish sends what is queued, then End, and waits.
func (p *pipeline) finish() error {
	if p.push(&job{end: true}) {
		<-p.written
	}
	p.cancel()
	<-p.written
	if p.err != nil && !errors.Is(p.err, context.Canceled) {
		return p.err
	}
	return nil
}

// abort stops the pipeline at once.
func (p *pipeline) abort() {
	p.cancel()
	<-p.written
}

// frameQueue reads frames from a data link ahead of their envelopes.
type frameQueue struct {
	ch  chan link.Frame
	err error // set before ch is closed
	r   *link.Reader
}

func newFrameQueue(ctx context.Context, c net.Conn) *frameQueue {
	q := &frameQueue{ch: make(chan link.Frame, 4), r: link.NewReader(c, framePool)}
	go func() {
		defer close(q.ch)
		for {
			f, err := q.r.Next()
			if err != nil {
				q.err = err
				return
			}
			select {
			case q.ch <- f:
			case <-ctx.Done():
				framePool.Free(f.Data)
				q.err = ctx.Err()
				return
			}
		}
	}()
	return q
}

// take returns the frame of batch id. Frames before it belong to batches an
// envelope-only transform dropped on the way, and are skipped.
func (q *frameQueue) take(ctx context.Context, id BatchID) (link.Frame, error) {
	for {
		select {
		case <-ctx.Done():
			return link.Frame{}, ctx.Err()
		case f, ok := <-q.ch:
			if !ok {
				err := q.err
				if err == io.EOF {
					err = errors.New("the link closed")
				}
				return link.Frame{}, fmt.Errorf("waiting for the frame of batch %s: %w", id, err)
			}
			if f.ID == id {
				return f, nil
			}
			framePool.Free(f.Data)
			if !f.ID.Less(id) {
				return link.Frame{}, fmt.Errorf("the frame of batch %s arrived where batch %s was due", f.ID, id)
			}
		}
	}
}

// drain frees frames left on the queue.
func (q *frameQueue) drain() {
	go func() {
		for f := range q.ch {
			framePool.Free(f.Data)
		}
	}()
}

// TransformRunner runs a Transform.
type TransformRunner struct {
	t       Transform
	links   Links
	id      *link.Identity
	open    TransformOpen
	in, out net.Conn
	tr      *tracing
}

// NewTransformRunner returns a runner of t.
func NewTransformRunner(t Transform, links Links, id *link.Identity) *TransformRunner {
	return &TransformRunner{t: t, links: links, id: id}
}

// EnvelopeOnly reports whether the transform works on envelopes alone.
func (r *TransformRunner) EnvelopeOnly() bool {
	_, ok := r.t.(EnvelopeTransform)
	return ok
}

// Open opens the transform's data links (none for an envelope-only one).
func (r *TransformRunner) Open(ctx context.Context, o TransformOpen) error {
	r.open = o
	r.tr = newTracing("transform", r.t.Spec(), o.Traceparent, o.Tracestate)
	budget(o.InFlightBytes)
	if r.EnvelopeOnly() {
		return nil
	}
	var err error
	if r.in, err = openLink(ctx, r.links, link.In, r.id, o.InPeerCert); err != nil {
		return err
	}
	if r.out, err = openLink(ctx, r.links, link.Out, r.id, o.OutPeerCert); err != nil {
		r.in.Close()
		return err
	}
	return nil
}

// Run processes inputs in order until in is closed.
func (r *TransformRunner) Run(ctx context.Context, in <-chan Input, emit func(Event) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	em := &emitter{emit: emit}
	report(ctx, r.open.MetricsInterval, em, r.t, r.tr)
	defer r.tr.flush(em)
	if et, ok := r.t.(EnvelopeTransform); ok {
		return r.runEnvelopes(ctx, et, in, em)
	}
	defer r.in.Close()
	defer r.out.Close()
	frames := newFrameQueue(ctx, r.in)
	defer frames.drain()
	w := link.NewWriter(r.out)
	enc := record.NewEncoder(r.open.Codec)
	var scratch []byte
	var lastSeq uint64
	var part uint32
	for {
		inp, ok, err := next(ctx, in)
		if !ok {
			return err
		}
		if inp.Metadata != nil {
			if err := r.metadata(ctx, *inp.Metadata, em); err != nil {
				return err
			}
			continue
		}
		env := *inp.Batch
		if env.IsGap() {
			// A gap has no frame and no records to transform: it goes on
			// as it is, so that the sink records it.
			if err := em.send(Event{Result: &Result{Seq: env.Seq, Part: env.Part, Outputs: []Envelope{env}}}); err != nil {
				return err
			}
			continue
		}
		f, err := frames.take(ctx, env.ID())
		if err != nil {
			return err
		}
		bctx, span := r.tr.start(withPartition(ctx, env.Topic, env.Partition), "kpipe.transform.process", env.Traceparent, env.Tracestate, batchAttrs(env))
		outs, err := r.t.Process(bctx, Batch{Envelope: env, Arrow: f.Data})
		if err != nil {
			framePool.Free(f.Data)
			return r.fail(span, fmt.Errorf("process %s/%d: %w", env.Topic, env.Partition, err), em)
		}
		if env.Seq != lastSeq {
			lastSeq, part = env.Seq, 0
		}
		res := Result{Seq: env.Seq, Part: env.Part}
		var records int64
		for _, o := range outs {
			frame, size, err := r.output(&o, f.Data, env, enc, &scratch)
			if err != nil {
				framePool.Free(f.Data)
				return r.fail(span, fmt.Errorf("process %s/%d: %w", env.Topic, env.Partition, err), em)
			}
			if o.Count == 0 {
				continue
			}
			o.Seq, o.Part = env.Seq, part
			part++
			o.Size, o.FrameBytes = size, int64(len(frame))
			r.carryTrace(&o.Envelope, env, span)
			if err := w.Write(o.ID(), frame); err != nil {
				framePool.Free(f.Data)
				span.End()
				return err
			}
			res.Outputs = append(res.Outputs, o.Envelope)
			records += o.Count
		}
		framePool.Free(f.Data)
		span.SetAttributes(spans.Outputs.Int(len(res.Outputs)), spans.OutputRecords.Int64(records))
		span.End()
		if err := em.send(Event{Result: &res}); err != nil {
			return err
		}
	}
}

// carryTrace gives an output the trace context of the transform's span
// over its input, unless the transform gave it one of its own.
func (r *TransformRunner) carryTrace(out *Envelope, in Envelope, span trace.Span) {
	switch {
	case r.tr.on() && (out.Traceparent == "" || out.Traceparent == in.Traceparent):
		out.Traceparent, out.Tracestate = inject(span)
	case out.Traceparent == "":
		out.Traceparent, out.Tracestate = in.Traceparent, in.Tracestate
	}
}

// output returns the frame and decompressed size of one output batch.
func (r *TransformRunner) output(o *Batch, in []byte, env Envelope, enc *record.Encoder, scratch *[]byte) ([]byte, int64, error) {
	switch {
	case o.Record != nil:
		defer o.Record.Release()
		if o.Record.NumRows() != o.Count {
			return nil, 0, fmt.Errorf("an output holds %d records, its envelope counts %d", o.Record.NumRows(), o.Count)
		}
		size := recordSize(o.Record)
		frame, err := enc.Encode(o.Record, (*scratch)[:0])
		*scratch = frame
		return frame, size, err
	case len(o.Arrow) > 0 && len(in) > 0 && &o.Arrow[0] == &in[0] && len(o.Arrow) == len(in):
		if o.Count != env.Count {
			return nil, 0, fmt.Errorf("an output passes the input's frame on with a count of %d, not %d", o.Count, env.Count)
		}
		return in, env.Size, nil
	}
	size, err := sizeOf(o)
	return o.Arrow, size, err
}

func (r *TransformRunner) runEnvelopes(ctx context.Context, et EnvelopeTransform, in <-chan Input, em *emitter) error {
	for {
		inp, ok, err := next(ctx, in)
		if !ok {
			return err
		}
		if inp.Metadata != nil {
			if err := r.metadata(ctx, *inp.Metadata, em); err != nil {
				return err
			}
			continue
		}
		env := *inp.Batch
		bctx, span := r.tr.start(withPartition(ctx, env.Topic, env.Partition), "kpipe.transform.process", env.Traceparent, env.Tracestate, batchAttrs(env))
		out, keep, err := et.ProcessEnvelope(bctx, env)
		if err != nil {
			return r.fail(span, fmt.Errorf("process %s/%d: %w", env.Topic, env.Partition, err), em)
		}
		res := Result{Seq: env.Seq, Part: env.Part}
		if keep {
			// The frame travels on as it is: it keeps its name and size.
			out.Seq, out.Part, out.Size, out.FrameBytes = env.Seq, env.Part, env.Size, env.FrameBytes
			out.Count = env.Count
			r.carryTrace(&out, env, span)
			res.Outputs = []Envelope{out}
			span.SetAttributes(spans.Outputs.Int(1), spans.OutputRecords.Int64(out.Count))
		} else {
			span.SetAttributes(spans.Outputs.Int(0), spans.OutputRecords.Int64(0))
		}
		span.End()
		if err := em.send(Event{Result: &res}); err != nil {
			return err
		}
	}
}

func (r *TransformRunner) metadata(ctx context.Context, m Metadata, em *emitter) error {
	if mt, ok := r.t.(MetadataTransform); ok {
		var err error
		if m, err = mt.ProcessMetadata(ctx, m); err != nil {
			return fmt.Errorf("process metadata: %w", err)
		}
	}
	return em.send(Event{Metadata: &m})
}

func (r *TransformRunner) fail(span trace.Span, err error, em *emitter) error {
	failed(span, err)
	span.End()
	if pe := asPartitionError(err); pe != nil {
		_ = em.send(Event{Error: pe})
	}
	return err
}

// SinkRunner runs a Sink.
type SinkRunner struct {
	sink  Sink
	links Links
	id    *link.Identity
	open  SinkOpen
	in    net.Conn

	mu       sync.Mutex
	held     map[BatchID]link.Frame
	released []uint64
	acked    []uint64
	notify   chan struct{}
	flushMu  sync.Mutex // one flushAcks at a time
	tr       *tracing
	spans    map[BatchID]trace.Span // written, not yet durable (when tracing)
}

// NewSinkRunner returns a runner of sink.
func NewSinkRunner(sink Sink, links Links, id *link.Identity) *SinkRunner {
	return &SinkRunner{sink: sink, links: links, id: id, held: map[BatchID]link.Frame{}, notify: make(chan struct{}, 1)}
}

// Open opens the data link and the sink, and reports where to resume from
// and the codec the sink stores.
func (r *SinkRunner) Open(ctx context.Context, o SinkOpen) (SinkOpened, error) {
	r.open = o
	r.tr = newTracing("sink", r.sink.Spec(), o.Traceparent, o.Tracestate)
	if r.tr.on() {
		r.spans = map[BatchID]trace.Span{}
	}
	budget(o.InFlightBytes)
	in, err := openLink(ctx, r.links, link.In, r.id, o.InPeerCert)
	if err != nil {
		return SinkOpened{}, err
	}
	r.in = in
	if err := r.sink.Open(ctx, r.ack); err != nil {
		in.Close()
		return SinkOpened{}, err
	}
	opened := SinkOpened{Codec: record.None}
	if fs, ok := r.sink.(FrameStore); ok {
		opened.Codec = fs.Codec()
	}
	if pt, ok := r.sink.(PositionTracker); ok {
		switch ps, err := pt.DurablePositions(ctx); {
		case errors.Is(err, ErrPositionsNotTracked):
		case err != nil:
			in.Close()
			return SinkOpened{}, fmt.Errorf("durable positions: %w", err)
		default:
			opened.TracksPositions = true
			opened.Resume = ps
		}
	}
	return opened, nil
}

// release returns the credit of a batch the sink holds no more, and frees
// its frame unless FreeFrame did.
func (r *SinkRunner) release(id BatchID) {
	r.mu.Lock()
	f, ok := r.held[id]
	if ok {
		delete(r.held, id)
		r.released = append(r.released, id.Seq)
	}
	r.mu.Unlock()
	if ok {
		framePool.Free(f.Data)
		r.wake()
	}
}

// freeFrame frees the frame of a batch the sink still holds otherwise.
func (r *SinkRunner) freeFrame(id BatchID) {
	r.mu.Lock()
	f, ok := r.held[id]
	if ok {
		r.held[id] = link.Frame{ID: id}
	}
	r.mu.Unlock()
	framePool.Free(f.Data)
}

// ack is the sink's Acker.
func (r *SinkRunner) ack(ids ...BatchID) {
	for _, id := range ids {
		r.release(id)
	}
	r.mu.Lock()
	for _, id := range ids {
		r.acked = append(r.acked, id.Seq)
		if span, ok := r.spans[id]; ok {
			delete(r.spans, id)
			span.End()
		}
	}
	r.mu.Unlock()
	r.wake()
}

func (r *SinkRunner) wake() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// flushAcks sends the releases and acks queued so far. Flushes go one at
// a time, so that one that returns has sent every ack queued before it.
func (r *SinkRunner) flushAcks(em *emitter) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	r.mu.Lock()
	rel, ack := r.released, r.acked
	r.released, r.acked = nil, nil
	r.mu.Unlock()
	if len(rel) > 0 {
		if err := em.send(Event{Released: rel}); err != nil {
			return err
		}
	}
	if len(ack) > 0 {
		return em.send(Event{Acked: ack})
	}
	return nil
}

// Run writes batches in order until in is closed, then flushes the sink and
// reports its last acknowledgements.
func (r *SinkRunner) Run(ctx context.Context, in <-chan Input, emit func(Event) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	em := &emitter{emit: emit}
	report(ctx, r.open.MetricsInterval, em, r.sink, r.tr)
	defer r.in.Close()
	frames := newFrameQueue(ctx, r.in)
	defer frames.drain()

	sent := make(chan error, 1)
	stopAcks := make(chan struct{})
	go func() { // acknowledgements as they come
		for {
			select {
			case <-r.notify:
				if err := r.flushAcks(em); err != nil {
					sent <- err
					cancel()
					return
				}
			case <-stopAcks:
				sent <- r.flushAcks(em)
				return
			}
		}
	}()
	err := r.write(ctx, in, frames, em)
	if err == nil {
		if err = r.sink.Flush(ctx); err != nil {
			err = r.fail(fmt.Errorf("flush: %w", err), em)
		}
	}
	close(stopAcks)
	if aerr := <-sent; err == nil {
		err = aerr
	}
	r.endSpans()
	if ferr := r.tr.flush(em); err == nil {
		err = ferr
	}
	return err
}

// endSpans ends the spans of batches never acknowledged, as failed.
func (r *SinkRunner) endSpans() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, span := range r.spans {
		span.SetStatus(codes.Error, "not acknowledged as durable")
		span.End()
		delete(r.spans, id)
	}
}

func (r *SinkRunner) write(ctx context.Context, in <-chan Input, frames *frameQueue, em *emitter) error {
	ms, _ := r.sink.(MetadataSink)
	var failures <-chan error
	if fs, ok := r.sink.(FailingSink); ok {
		failures = fs.Failed()
	}
	for {
		var inp Input
		var ok bool
		select {
		case inp, ok = <-in:
		case <-ctx.Done():
			return ctx.Err()
		case err := <-failures:
			return r.fail(err, em)
		}
		if !ok {
			return nil
		}
		if inp.Metadata != nil {
			if ms != nil {
				if err := ms.WriteMetadata(ctx, *inp.Metadata); err != nil {
					return r.fail(fmt.Errorf("write metadata: %w", err), em)
				}
			}
			continue
		}
		env := *inp.Batch
		var f link.Frame
		if !env.IsGap() {
			var err error
			if f, err = frames.take(ctx, env.ID()); err != nil {
				return err
			}
		}
		id := env.ID()
		bctx, span := r.tr.start(withPartition(ctx, env.Topic, env.Partition), "kpipe.sink.write", env.Traceparent, env.Tracestate,
			batchAttrs(env), trace.WithAttributes(spans.Bytes.Int64(env.FrameBytes)))
		r.mu.Lock()
		r.held[id] = f
		if r.spans != nil {
			r.spans[id] = span
		}
		r.mu.Unlock()
		b := Batch{Envelope: env, Arrow: f.Data}.WithRelease(func() { r.release(id) })
		b.free = &releaser{fn: func() { r.freeFrame(id) }}
		if err := r.sink.Write(bctx, b); err != nil {
			r.mu.Lock()
			delete(r.spans, id)
			r.mu.Unlock()
			failed(span, err)
			span.End()
			if asPartitionError(err) == nil {
				err = fmt.Errorf("write %s/%d: %w", env.Topic, env.Partition, err)
			} // else it names its partition, which may be another one's
			return r.fail(err, em)
		}
		span.AddEvent("written")
	}
}

// fail reports a write failure. What the sink acknowledged before it goes
// first: the host counts it durable, and the failure ends the run.
func (r *SinkRunner) fail(err error, em *emitter) error {
	_ = r.flushAcks(em)
	if pe := asPartitionError(err); pe != nil {
		_ = em.send(Event{Error: pe})
	}
	return err
}
