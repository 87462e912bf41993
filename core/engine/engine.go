// Package engine runs one pipeline: it starts the source, transform and sink
// plugins, links them so that batch bytes flow directly from plugin to
// plugin, and keeps, on its control plane, what needs only envelopes: the
// order of batches, credit, routing, acknowledgements, checkpoints and the
// report.
//
// Flow control: the source may have at most Window batches and about
// InFlightBytes decompressed bytes (plus the one batch that crosses the
// line) between itself and the sink at any time. Credit comes back when the
// sink holds a batch's bytes no more (or a transform dropped it), so a slow
// sink slows the source instead of filling memory.
//
// Durability: a partition's checkpoint advances only over batches that the
// sink acknowledged as durable together with every earlier batch of that
// partition.
//
// Stopping: cancelling the context given to Run stops the source, lets every
// batch already read reach the sink, flushes the sink and saves the final
// checkpoint. An error in any plugin aborts the run at once; the checkpoint
// then holds the last durable positions.
package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/kpipe/kpipe/core/checkpoint"
	"github.com/kpipe/kpipe/core/config"
	"github.com/kpipe/kpipe/core/plugin"
	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/link"
	"github.com/kpipe/kpipe/sdk/param"
)

// Launcher starts plugins: package host launches processes; tests run
// plugins in process (plugin.Local).
type Launcher interface {
	Launch(ctx context.Context, name string, kind plugin.Kind) (plugin.Instance, error)
}

// Options configure a run.
type Options struct {
	Launcher Launcher
	// StateDir holds the checkpoint files.
	StateDir string
	// FailFast ends the run at the first partition that fails for good;
	// otherwise the source's other partitions go on, and the run fails
	// once they are done, naming each failed partition.
	FailFast bool
	// Fresh runs the pipeline from the start: its checkpoint, finished or
	// not, is ignored and then replaced. A sink that records its own
	// positions (a backup store) still continues after what it holds.
	Fresh bool
	// Window is the most batches in flight between source and sink.
	Window int
	// InFlightBytes is the most decompressed batch bytes in flight between
	// source and sink (one batch may cross it); sources size their reads
	// from it.
	InFlightBytes int64
	// CheckpointInterval is the most time between checkpoint saves while
	// acks arrive; the final checkpoint is always saved.
	CheckpointInterval time.Duration
	// MetricsInterval is how often plugins report their counters while
	// they run.
	MetricsInterval time.Duration
	Logger          *slog.Logger
	// OnLaunch, when set, sees every plugin instance right after it starts.
	OnLaunch func(role string, inst plugin.Instance)
	// OnMetrics, when set, sees the counters plugins report as they run.
	OnMetrics func(role, plugin string, m map[string]int64)
	// Recorder, when set, receives the run's figures as they change
	// (telemetry).
	Recorder Recorder
	// Tracing, when set, traces the run (see Tracing).
	Tracing Tracing
}

// Recorder receives a run's figures as they change.
type Recorder interface {
	// Moved counts the records and bytes a stage passed on for one
	// partition: "source" as read, "sink" as handed to the sink (not yet
	// durable).
	Moved(pipeline, stage, topic string, partition int32, records, bytes int64)
	// Retried and Failed count a source partition's retryable error and
	// its failure for good.
	Retried(pipeline, topic string, partition int32)
	Failed(pipeline, topic string, partition int32)
	// PluginCounters has the counters a plugin reported, and its figures
	// per partition.
	PluginCounters(pipeline, role, plugin string, counters map[string]int64, partitions []sdk.PartitionMetric)
	// Running watches a run's batches and decompressed bytes in flight
	// through inFlight until done is called.
	Running(pipeline string, inFlight func() (batches, bytes int64)) (done func())
}

// Defaults of Options.
const (
	DefaultWindow        = 256
	DefaultInFlightBytes = sdk.DefaultInFlightBytes
)

// PartitionFailure is a partition that failed for good.
type PartitionFailure struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Offset is the offset the failure concerns; -1 when none.
	Offset int64  `json:"offset"`
	Code   string `json:"code,omitempty"`
	Cause  string `json:"cause"`
}

// PluginReport describes one plugin of a finished run.
type PluginReport struct {
	Role    string           `json:"role"`
	Plugin  string           `json:"plugin"`
	Version string           `json:"version"`
	Pid     int              `json:"pid"`
	Metrics map[string]int64 `json:"metrics,omitempty"`
}

// Report describes a finished run.
type Report struct {
	Pipeline string `json:"pipeline"`
	// ResumedFrom is "sink" or "checkpoint" when the run continued from
	// stored positions, empty for a fresh start.
	ResumedFrom string `json:"resumed_from,omitempty"`
	// AlreadyFinished is set when an earlier run of the very same pipeline
	// had finished: this one started no plugin and moved nothing.
	AlreadyFinished *checkpoint.Finished `json:"already_finished,omitempty"`
	BatchesIn       int64                `json:"batches_in"`
	RecordsIn       int64                `json:"records_in"`
	BytesIn         int64                `json:"bytes_in"`
	BatchesOut      int64                `json:"batches_out"`
	RecordsOut      int64                `json:"records_out"`
	// RecordsDurable counts the records the sink made durable (stored,
	// or acknowledged by the brokers): what a run can be said to have
	// done. RecordsOut counts those handed to it.
	RecordsDurable int64 `json:"records_durable"`
	BytesOut       int64 `json:"bytes_out"`
	RecordsDropped int64 `json:"records_dropped"`
	// MaxInFlight and MaxInFlightBytes are the most batches and
	// decompressed bytes there were at once between the source and the
	// sink's release: at most Options.Window, and Options.InFlightBytes
	// plus one batch.
	MaxInFlight      int64          `json:"max_in_flight"`
	MaxInFlightBytes int64          `json:"max_in_flight_bytes"`
	Stopped          bool           `json:"stopped"`
	DurationMS       int64          `json:"duration_ms"`
	Positions        []sdk.Position `json:"positions"`
	// Retries counts the retryable partition errors the source retried.
	Retries int64 `json:"retries"`
	// FailedPartitions are the source partitions that failed for good:
	// the others went on, and each failed one keeps its checkpoint at what
	// was durable.
	FailedPartitions []PartitionFailure `json:"failed_partitions,omitempty"`
	// Metadata holds the metadata messages the sink was given, in order
	// (as transforms rewrote them): what the run saw of its topics.
	Metadata []sdk.Metadata `json:"metadata,omitempty"`
	Plugins  []PluginReport `json:"plugins"`
}

type stage struct {
	role string
	cfg  config.Stage
	kind plugin.Kind
	inst plugin.Instance
	// data says the stage gets batch bytes (all but envelope-only
	// transforms); up and down are its data neighbours.
	data     bool
	up, down *stage

	mu      sync.Mutex
	metrics map[string]int64 // the last live report
}

func (s *stage) cert() []byte {
	if s == nil {
		return nil
	}
	return s.inst.Info().LinkCert
}

// Run runs the pipeline until its source ends or ctx is cancelled.
func Run(ctx context.Context, p config.Pipeline, opts Options) (rep *Report, err error) {
	start := time.Now()
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("pipeline", p.Name)
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.InFlightBytes <= 0 {
		opts.InFlightBytes = DefaultInFlightBytes
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = time.Second
	}
	if opts.MetricsInterval <= 0 {
		opts.MetricsInterval = time.Second
	}

	store := checkpoint.ForPipeline(opts.StateDir, p.Name, p.Identity())
	var stored checkpoint.Checkpoint
	if !opts.Fresh {
		if stored, err = store.Load(); err != nil {
			return nil, fmt.Errorf("pipeline %q: %w", p.Name, err)
		}
		if stored.Finished != nil {
			log.Info("already finished; run with --fresh to run it again", "at", stored.Finished.At, "records_out", stored.Finished.RecordsOut)
			return &Report{Pipeline: p.Name, AlreadyFinished: stored.Finished, Positions: stored.Positions}, nil
		}
	}

	tr := startTraces(opts.Tracing, p.Name, p.Identity())
	defer func() { tr.end(rep, err) }()
	traceparent, tracestate := tr.context()

	stages := []*stage{{role: "source", cfg: p.Source, kind: plugin.KindSource}}
	for _, t := range p.Transforms {
		stages = append(stages, &stage{role: "transform", cfg: t, kind: plugin.KindTransform})
	}
	stages = append(stages, &stage{role: "sink", cfg: p.Sink, kind: plugin.KindSink})
	defer func() {
		var wg sync.WaitGroup
		for _, s := range stages {
			if s.inst != nil {
				wg.Add(1)
				go func() { defer wg.Done(); s.inst.Kill() }()
			}
		}
		wg.Wait()
	}()

	setupCtx, cancelSetup := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancelSetup()
	if err := launch(setupCtx, p, stages, opts, log); err != nil {
		return nil, err
	}
	if err := connect(stages); err != nil {
		return nil, fmt.Errorf("pipeline %q: %w", p.Name, err)
	}

	src, sink := stages[0], stages[len(stages)-1]
	transforms := stages[1 : len(stages)-1]
	rep = &Report{Pipeline: p.Name}

	opened, err := sink.inst.Sink().Open(setupCtx, sdk.SinkOpen{InFlightBytes: opts.InFlightBytes, MetricsInterval: opts.MetricsInterval, InPeerCert: sink.up.cert(),
		Traceparent: traceparent, Tracestate: tracestate})
	if err != nil {
		return nil, fmt.Errorf("pipeline %q: open sink %q: %w", p.Name, sink.cfg.Plugin, err)
	}
	var resume []sdk.Position
	if opened.TracksPositions {
		resume = opened.Resume
		if len(resume) > 0 {
			rep.ResumedFrom = "sink"
		}
	} else if resume = stored.Positions; len(resume) > 0 {
		rep.ResumedFrom = "checkpoint"
	}
	if rep.ResumedFrom != "" {
		log.Info("resuming", "from", rep.ResumedFrom, "partitions", len(resume))
	}
	// A run that fails before data can flow tears the sink down as not
	// started: it undoes what opening it wrote (a backup's lease).
	notStarted := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := sink.inst.Teardown(ctx, sdk.OutcomeNotStarted); err != nil {
			log.Warn("sink teardown after a failed start", "error", err)
		}
	}
	for _, t := range transforms {
		o := sdk.TransformOpen{Codec: opened.Codec, InFlightBytes: opts.InFlightBytes, MetricsInterval: opts.MetricsInterval,
			Traceparent: traceparent, Tracestate: tracestate}
		if t.data {
			o.InPeerCert, o.OutPeerCert = t.up.cert(), t.down.cert()
		}
		if err := t.inst.Transform().Open(setupCtx, o); err != nil {
			notStarted()
			return nil, fmt.Errorf("pipeline %q: open transform %q: %w", p.Name, t.cfg.Plugin, err)
		}
	}
	err = src.inst.Source().Open(setupCtx, sdk.SourceOpen{
		Resume: resume, Codec: opened.Codec, InFlightBytes: opts.InFlightBytes,
		MetricsInterval: opts.MetricsInterval, OutPeerCert: src.down.cert(),
		Traceparent: traceparent, Tracestate: tracestate,
	})
	if err != nil {
		notStarted()
		return nil, fmt.Errorf("pipeline %q: open source %q: %w", p.Name, src.cfg.Plugin, err)
	}

	r := &run{log: log, opts: opts, rep: rep, store: store, name: p.Name, tracker: newTracker(resume), traces: tr}
	if rec := opts.Recorder; rec != nil {
		defer rec.Running(p.Name, r.tracker.current)()
	}
	err = r.flow(ctx, src, transforms, sink)
	positions, _ := r.tracker.snapshot()
	rep.Stopped = ctx.Err() != nil
	var finished *checkpoint.Finished
	if err == nil && !rep.Stopped && !opened.TracksPositions {
		finished = &checkpoint.Finished{At: time.Now().UTC(), RecordsOut: rep.RecordsOut}
	}
	if saveErr := store.Save(positions, finished); saveErr != nil && err == nil {
		err = fmt.Errorf("pipeline %q: save checkpoint: %w", p.Name, saveErr)
	}
	rep.Positions = positions
	rep.MaxInFlight, rep.MaxInFlightBytes = r.tracker.peaks()

	outcome, teardownWithin := sdk.OutcomeComplete, 30*time.Second
	switch {
	case err != nil:
		// Only the sink winds down, briefly, to record what is durable;
		// the others are stopped.
		outcome, teardownWithin = sdk.OutcomeFailed, 5*time.Second
	case rep.Stopped:
		outcome = sdk.OutcomeStopped
	}
	rep.Plugins = make([]PluginReport, len(stages))
	terrs := make([]error, len(stages))
	var wg sync.WaitGroup
	for i, s := range stages {
		info := s.inst.Info()
		rep.Plugins[i] = PluginReport{Role: s.role, Plugin: s.cfg.Plugin, Version: info.Version, Pid: info.Pid}
		s.mu.Lock()
		rep.Plugins[i].Metrics = s.metrics
		s.mu.Unlock()
		if err != nil && s != sink {
			continue
		}
		wg.Add(1)
		go func() { // the plugins wind down at once, each on its own
			defer wg.Done()
			tctx, cancel := context.WithTimeout(context.Background(), teardownWithin)
			defer cancel()
			m, terr := s.inst.Teardown(tctx, outcome)
			if terr != nil {
				terrs[i] = fmt.Errorf("pipeline %q: %w", p.Name, terr)
			}
			if m != nil {
				rep.Plugins[i].Metrics = m
			}
			if opts.OnMetrics != nil && m != nil {
				opts.OnMetrics(s.role, s.cfg.Plugin, m) // the last word
			}
		}()
	}
	wg.Wait()
	for _, terr := range terrs {
		if terr != nil && err == nil {
			err = terr
		}
	}
	rep.DurationMS = time.Since(start).Milliseconds()
	return rep, err
}

// launch starts and configures every stage, all at once: a plugin process
// takes tens of milliseconds to start, and they need not wait for each
// other.
func launch(ctx context.Context, p config.Pipeline, stages []*stage, opts Options, log *slog.Logger) error {
	errs := make([]error, len(stages))
	cfgErrs := make([][]error, len(stages))
	var wg sync.WaitGroup
	for i, s := range stages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inst, err := opts.Launcher.Launch(ctx, s.cfg.Plugin, s.kind)
			if err != nil {
				errs[i] = fmt.Errorf("%spipeline %q: %s: %w", s.cfg.Where(""), p.Name, s.role, err)
				return
			}
			s.inst = inst
			log.Debug("plugin started", "role", s.role, "plugin", s.cfg.Plugin, "pid", inst.Info().Pid)
			if opts.OnLaunch != nil {
				opts.OnLaunch(s.role, inst)
			}
			if err := inst.Configure(ctx, s.cfg.Params); err != nil {
				var pes param.Errors
				if !errors.As(err, &pes) {
					errs[i] = err
					return
				}
				for _, pe := range pes {
					cfgErrs[i] = append(cfgErrs[i], fmt.Errorf("%s%s %q: %s", s.cfg.Where(pe.Param), s.role, s.cfg.Plugin, pe.Error()))
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, e := range errs { // the first stage's error, as it is
			if e != nil {
				return e
			}
		}
	}
	var all []error
	for _, es := range cfgErrs {
		all = append(all, es...)
	}
	if len(all) > 0 {
		return &ConfigError{Pipeline: p.Name, Errs: all}
	}
	return nil
}

// connect makes a data link between each stage that takes batch bytes and
// the next one: envelope-only transforms are left out, the bytes flow past
// them.
func connect(stages []*stage) error {
	var prev *stage
	for _, s := range stages {
		s.data = s.kind != plugin.KindTransform || !s.inst.Info().EnvelopeOnly
		if !s.data {
			continue
		}
		if prev != nil {
			out, in, err := link.Pair()
			if err != nil {
				return err
			}
			if err := prev.inst.Attach(link.Out, out); err != nil {
				in.Close()
				return err
			}
			if err := s.inst.Attach(link.In, in); err != nil {
				return err
			}
			prev.down, s.up = s, prev
		}
		prev = s
	}
	return nil
}

// ConfigError lists every parameter problem of a pipeline.
type ConfigError struct {
	Pipeline string
	Errs     []error
}

func (e *ConfigError) Error() string {
	msg := fmt.Sprintf("pipeline %q has invalid parameters:", e.Pipeline)
	for _, err := range e.Errs {
		msg += "\n  " + err.Error()
	}
	return msg
}

type run struct {
	log     *slog.Logger
	opts    Options
	rep     *Report
	store   *checkpoint.Store
	name    string
	tracker *tracker
	traces  *traces

	srcMu     sync.Mutex
	srcStream plugin.SourceStream
	srcClosed bool

	// The report's counters, written by several goroutines.
	batchesIn, recordsIn, bytesIn    atomic.Int64
	batchesOut, recordsOut, bytesOut atomic.Int64
	recordsDropped                   atomic.Int64
	retries                          atomic.Int64
	failMu                           sync.Mutex
	failed                           []PartitionFailure

	errOnce sync.Once
	err     error
	abort   context.CancelFunc
}

func (r *run) fail(err error) {
	r.errOnce.Do(func() {
		r.err = err
		r.abort()
	})
}

func (r *run) failf(s *stage, err error) {
	r.fail(fmt.Errorf("pipeline %q: %s %q: %w", r.name, s.role, s.cfg.Plugin, err))
}

// flow moves the data and returns the first error.
func (r *run) flow(ctx context.Context, src *stage, transforms []*stage, sink *stage) error {
	runCtx, abort := context.WithCancel(context.Background())
	defer abort()
	r.abort = abort

	var err error
	if r.srcStream, err = src.inst.Source().Run(runCtx); err != nil {
		return fmt.Errorf("pipeline %q: source %q: %w", r.name, src.cfg.Plugin, err)
	}
	streams := make([]plugin.InputStream, len(transforms)+1)
	for i, t := range transforms {
		if streams[i], err = t.inst.Transform().Run(runCtx); err != nil {
			return fmt.Errorf("pipeline %q: transform %q: %w", r.name, t.cfg.Plugin, err)
		}
	}
	if streams[len(transforms)], err = sink.inst.Sink().Run(runCtx); err != nil {
		return fmt.Errorf("pipeline %q: sink %q: %w", r.name, sink.cfg.Plugin, err)
	}
	// queues[i] feeds streams[i]: transform i, or the sink.
	queues := make([]chan sdk.Input, len(streams))
	for i := range queues {
		queues[i] = make(chan sdk.Input, r.opts.Window)
	}
	var wg sync.WaitGroup
	spawn := func(fn func()) {
		wg.Add(1)
		go func() { defer wg.Done(); fn() }()
	}

	// Graceful stop: close the source's side; batches already read still flow.
	stopWatch := make(chan struct{})
	defer close(stopWatch)
	go func() {
		select {
		case <-ctx.Done():
			r.log.Info("stopping: no more reads from the source; draining in-flight batches")
			r.closeSource()
		case <-stopWatch:
		case <-runCtx.Done():
		}
	}()

	r.sendSource(sdk.SourceControl{Credit: sdk.Credit{Batches: int64(r.opts.Window), Bytes: r.opts.InFlightBytes}})
	spawn(func() { r.readSource(runCtx, src, queues[0]) })
	for i, t := range transforms {
		pending := &idQueue{}
		spawn(func() { r.feed(runCtx, t, streams[i], queues[i], pending) })
		spawn(func() { r.readTransform(runCtx, t, streams[i], queues[i+1], pending) })
	}
	last := len(streams) - 1
	spawn(func() { r.feed(runCtx, sink, streams[last], queues[last], nil) })
	spawn(func() { r.readSink(sink, streams[last]) })

	wg.Wait()
	r.closeSource()
	r.rep.BatchesIn, r.rep.RecordsIn, r.rep.BytesIn = r.batchesIn.Load(), r.recordsIn.Load(), r.bytesIn.Load()
	r.rep.BatchesOut, r.rep.RecordsOut, r.rep.BytesOut = r.batchesOut.Load(), r.recordsOut.Load(), r.bytesOut.Load()
	r.rep.RecordsDropped = r.recordsDropped.Load()
	r.rep.RecordsDurable = r.tracker.durableRecords()
	r.rep.Retries = r.retries.Load()
	r.failMu.Lock()
	r.rep.FailedPartitions = r.failed
	r.failMu.Unlock()
	if r.err != nil {
		return r.err
	}
	if n := len(r.rep.FailedPartitions); n > 0 {
		var each []string
		for _, f := range r.rep.FailedPartitions {
			each = append(each, f.String())
		}
		return fmt.Errorf("pipeline %q: %d partition(s) failed, the others finished: %s", r.name, n, strings.Join(each, "; "))
	}
	if n := r.tracker.pending(); n > 0 {
		return fmt.Errorf("pipeline %q: sink %q ended with %d batches not acknowledged as durable", r.name, sink.cfg.Plugin, n)
	}
	return nil
}

// put hands an input to the next stage's queue.
func put(ctx context.Context, q chan<- sdk.Input, in sdk.Input) bool {
	select {
	case q <- in:
		return true
	case <-ctx.Done():
		return false
	}
}

// readSource takes the source's events: envelopes go to the first stage
// after it, their credit is tracked; position-only batches settle at once.
func (r *run) readSource(ctx context.Context, s *stage, next chan<- sdk.Input) {
	defer close(next)
	for {
		ev, err := r.srcStream.Recv()
		if err == io.EOF {
			return
		}
		if err != nil {
			r.failf(s, err)
			return
		}
		switch {
		case ev.Batch != nil:
			e := *ev.Batch
			if err := r.tracker.register(e); err != nil {
				r.failf(s, err)
				return
			}
			r.batchesIn.Add(1)
			r.recordsIn.Add(e.Count)
			r.bytesIn.Add(e.FrameBytes)
			r.traces.read(e)
			if rec := r.opts.Recorder; rec != nil {
				rec.Moved(r.name, "source", e.Topic, e.Partition, e.Count, e.FrameBytes)
			}
			if e.Count == 0 && !e.IsGap() { // a position only: settled here
				r.expand(s, e.Seq, 0)
				continue
			}
			if !put(ctx, next, sdk.Input{Batch: &e}) {
				return
			}
		case ev.Metadata != nil:
			if !put(ctx, next, sdk.Input{Metadata: ev.Metadata}) {
				return
			}
		case ev.End:
			r.closeSource() // the stream ends after End
		default:
			r.event(s, ev)
		}
	}
}

// event handles what every kind of plugin may send: errors and metrics.
func (r *run) event(s *stage, ev sdk.Event) {
	switch {
	case ev.Spans != nil:
		if err := r.traces.imported(ev.Spans); err != nil {
			r.log.Debug("cannot take a plugin's spans", "role", s.role, "plugin", s.cfg.Plugin, "error", err)
		}
	case ev.Error != nil && s.kind == plugin.KindSource && ev.Error.Retryable:
		pe := ev.Error
		r.retries.Add(1)
		// The plugin logs the retry itself, with its backoff.
		r.log.Debug("retrying a partition", append([]any{"topic", pe.Topic, "partition", pe.Partition, "error", pe}, r.traces.logArgs(pe.Topic, pe.Partition)...)...)
		r.traces.partition(pe.Topic, pe.Partition).AddEvent("retry", trace.WithAttributes(attribute.String("error", pe.Error())))
		if rec := r.opts.Recorder; rec != nil {
			rec.Retried(r.name, pe.Topic, pe.Partition)
		}
	case ev.Error != nil && s.kind == plugin.KindSource && !r.opts.FailFast:
		pe := ev.Error
		f := PartitionFailure{Topic: pe.Topic, Partition: pe.Partition, Offset: pe.Offset, Code: pe.Code, Cause: "failed"}
		if pe.Err != nil {
			f.Cause = pe.Err.Error()
		}
		// The plugin logs the failure itself; the report names it.
		r.log.Debug("a partition failed; the others go on", append([]any{"topic", pe.Topic, "partition", pe.Partition, "error", pe}, r.traces.logArgs(pe.Topic, pe.Partition)...)...)
		span := r.traces.partition(pe.Topic, pe.Partition)
		span.RecordError(pe)
		span.SetStatus(codes.Error, f.String())
		r.failMu.Lock()
		r.failed = append(r.failed, f)
		r.failMu.Unlock()
		if rec := r.opts.Recorder; rec != nil {
			rec.Failed(r.name, pe.Topic, pe.Partition)
		}
	case ev.Error != nil:
		r.failf(s, ev.Error)
	case ev.Metrics != nil:
		s.mu.Lock()
		s.metrics = ev.Metrics
		s.mu.Unlock()
		if r.opts.OnMetrics != nil {
			r.opts.OnMetrics(s.role, s.cfg.Plugin, ev.Metrics)
		}
		if rec := r.opts.Recorder; rec != nil {
			rec.PluginCounters(r.name, s.role, s.cfg.Plugin, ev.Metrics, ev.PartitionMetrics)
		}
	}
}

// sent is a batch sent to a transform: its name and record count.
type sent struct {
	id    sdk.BatchID
	count int64
}

// idQueue holds the batches sent to a transform and not yet answered.
type idQueue struct {
	mu  sync.Mutex
	ids []sent
}

func (q *idQueue) push(s sent) {
	q.mu.Lock()
	q.ids = append(q.ids, s)
	q.mu.Unlock()
}

func (q *idQueue) pop() (sent, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.ids) == 0 {
		return sent{}, false
	}
	s := q.ids[0]
	q.ids = q.ids[1:]
	return s, true
}

// feed sends a stage its inputs in order, and closes its side after the last.
func (r *run) feed(ctx context.Context, s *stage, st plugin.InputStream, q <-chan sdk.Input, pending *idQueue) {
	for {
		var in sdk.Input
		var ok bool
		select {
		case in, ok = <-q:
		case <-ctx.Done():
			return
		}
		if !ok {
			if err := st.CloseSend(); err != nil {
				r.failf(s, err)
			}
			return
		}
		if in.Batch != nil && pending != nil {
			pending.push(sent{id: in.Batch.ID(), count: in.Batch.Count})
		}
		if in.Metadata != nil && s.kind == plugin.KindSink {
			// Only the sink's feed writes it; the report is read after.
			r.rep.Metadata = append(r.rep.Metadata, *in.Metadata)
		}
		if in.Batch != nil && s.kind == plugin.KindSink {
			r.tracker.handed(in.Batch.Seq, in.Batch.Count)
		}
		if err := st.Send(in); err != nil {
			if err == io.EOF {
				return // the plugin ended its stream; its Recv tells why
			}
			r.failf(s, err)
			return
		}
		if in.Batch != nil && s.kind == plugin.KindSink {
			r.batchesOut.Add(1)
			r.recordsOut.Add(in.Batch.Count)
			r.bytesOut.Add(in.Batch.FrameBytes)
			if rec := r.opts.Recorder; rec != nil {
				rec.Moved(r.name, "sink", in.Batch.Topic, in.Batch.Partition, in.Batch.Count, in.Batch.FrameBytes)
			}
		}
	}
}

// expand records a transform's answer for one output of seq and returns
// the batch's credit once nothing holds it.
func (r *run) expand(s *stage, seq uint64, k int) bool {
	f, err := r.tracker.expand(seq, k)
	if err != nil {
		r.failf(s, err)
		return false
	}
	r.credit(f)
	return true
}

func (r *run) credit(f freed) {
	if f.ok {
		r.sendSource(sdk.SourceControl{Credit: sdk.Credit{Batches: 1, Bytes: f.size}})
	}
}

// readTransform takes a transform's answers, in order, and passes its
// outputs on.
func (r *run) readTransform(ctx context.Context, s *stage, st plugin.InputStream, next chan<- sdk.Input, pending *idQueue) {
	defer close(next)
	for {
		ev, err := st.Recv()
		if err == io.EOF {
			if b, ok := pending.pop(); ok {
				r.failf(s, fmt.Errorf("ended its stream without answering batch %s", b.id))
			}
			return
		}
		if err != nil {
			r.failf(s, err)
			return
		}
		switch {
		case ev.Result != nil:
			res := ev.Result
			want, ok := pending.pop()
			if !ok || want.id != (sdk.BatchID{Seq: res.Seq, Part: res.Part}) {
				r.failf(s, fmt.Errorf("answered batch %d.%d where batch %s was due", res.Seq, res.Part, want.id))
				return
			}
			var kept int64
			for i := range res.Outputs {
				o := res.Outputs[i]
				if o.Seq != res.Seq {
					r.failf(s, fmt.Errorf("an output of batch %d carries seq %d", res.Seq, o.Seq))
					return
				}
				kept += o.Count
			}
			r.recordsDropped.Add(max(0, want.count-kept))
			if !r.expand(s, res.Seq, len(res.Outputs)) {
				return
			}
			for i := range res.Outputs {
				if !put(ctx, next, sdk.Input{Batch: &res.Outputs[i]}) {
					return
				}
			}
		case ev.Metadata != nil:
			if !put(ctx, next, sdk.Input{Metadata: ev.Metadata}) {
				return
			}
		default:
			r.event(s, ev)
		}
	}
}

// readSink takes the sink's releases (credit) and acknowledgements
// (durability), and saves checkpoints as positions advance.
func (r *run) readSink(s *stage, st plugin.InputStream) {
	lastSave := time.Now()
	for {
		ev, err := st.Recv()
		if err == io.EOF {
			return
		}
		if err != nil {
			r.failf(s, err)
			return
		}
		for _, seq := range ev.Released {
			f, err := r.tracker.release(seq)
			if err != nil {
				r.failf(s, err)
				return
			}
			r.credit(f)
		}
		for _, seq := range ev.Acked {
			if err := r.tracker.ack(seq); err != nil {
				r.failf(s, err)
				return
			}
		}
		r.event(s, ev)
		if len(ev.Acked) > 0 && time.Since(lastSave) >= r.opts.CheckpointInterval {
			if positions, changed := r.tracker.snapshot(); changed {
				if err := r.store.Save(positions, nil); err != nil {
					r.fail(fmt.Errorf("pipeline %q: save checkpoint: %w", r.name, err))
					return
				}
				r.sendSource(sdk.SourceControl{Acked: positions})
			}
			lastSave = time.Now()
		}
	}
}

// closeSource stops the source: it sends what it has read, then End.
func (r *run) closeSource() {
	r.srcMu.Lock()
	defer r.srcMu.Unlock()
	if !r.srcClosed {
		r.srcClosed = true
		_ = r.srcStream.CloseSend()
	}
}

// sendSource sends credit or acks to the source while its stream is open.
func (r *run) sendSource(c sdk.SourceControl) {
	r.srcMu.Lock()
	defer r.srcMu.Unlock()
	if r.srcClosed {
		return
	}
	if err := r.srcStream.Send(c); err != nil {
		r.log.Debug("source stream closed", "error", err)
	}
}

func (f PartitionFailure) String() string {
	s := fmt.Sprintf("%s/%d", f.Topic, f.Partition)
	if f.Offset >= 0 {
		s += fmt.Sprintf(" at offset %d", f.Offset)
	}
	s += ": " + f.Cause
	if f.Code != "" {
		s += " (" + f.Code + ")"
	}
	return s
}
