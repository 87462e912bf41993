// Package engine runs one pipeline: it starts the source, transform and sink
// plugins as separate processes, moves batches source → transforms → sink
// with a bounded number in flight, carries the sink's acks back, and persists
// positions only once the sink has reported them durable.
//
// Flow control: the source may send only as many batches as the engine has
// granted credit for, and a credit comes back only when a batch has been
// handed to the sink (or dropped by a transform). So at most Window batches
// are between the source and the sink at any time; a slow sink slows the
// source instead of filling memory.
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
	"sync"
	"sync/atomic"
	"time"

	"github.com/kpipe/kpipe/core/checkpoint"
	"github.com/kpipe/kpipe/core/config"
	"github.com/kpipe/kpipe/core/host"
	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
	pb "github.com/kpipe/kpipe/sdk/proto/kpipe/v1"
)

// Options configure a run.
type Options struct {
	Host *host.Host
	// StateDir holds the checkpoint files.
	StateDir string
	// Window is the most batches in flight between source and sink.
	Window int
	// CheckpointInterval is the most time between checkpoint saves while
	// acks arrive; the final checkpoint is always saved.
	CheckpointInterval time.Duration
	Logger             *slog.Logger
	// OnLaunch, when set, sees every plugin instance right after it starts.
	OnLaunch func(role string, inst *host.Instance)
}

// DefaultWindow is the default of Options.Window.
const DefaultWindow = 32

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
	ResumedFrom    string `json:"resumed_from,omitempty"`
	BatchesIn      int64  `json:"batches_in"`
	RecordsIn      int64  `json:"records_in"`
	BytesIn        int64  `json:"bytes_in"`
	BatchesOut     int64  `json:"batches_out"`
	RecordsOut     int64  `json:"records_out"`
	BytesOut       int64  `json:"bytes_out"`
	RecordsDropped int64  `json:"records_dropped"`
	// MaxInFlight is the most batches that were at once read from the
	// source and not yet handed to the sink (or dropped): never above
	// Options.Window.
	MaxInFlight int64          `json:"max_in_flight"`
	Stopped     bool           `json:"stopped"`
	DurationMS  int64          `json:"duration_ms"`
	Positions   []sdk.Position `json:"positions"`
	Plugins     []PluginReport `json:"plugins"`
}

type stage struct {
	role string
	cfg  config.Stage
	kind pb.Kind
	inst *host.Instance
}

// Run runs the pipeline until its source ends or ctx is cancelled.
func Run(ctx context.Context, p config.Pipeline, opts Options) (*Report, error) {
	start := time.Now()
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("pipeline", p.Name)
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = time.Second
	}

	stages := []*stage{{role: "source", cfg: p.Source, kind: pb.Kind_KIND_SOURCE}}
	for _, t := range p.Transforms {
		stages = append(stages, &stage{role: "transform", cfg: t, kind: pb.Kind_KIND_TRANSFORM})
	}
	stages = append(stages, &stage{role: "sink", cfg: p.Sink, kind: pb.Kind_KIND_SINK})
	defer func() {
		for _, s := range stages {
			s.inst.Kill()
		}
	}()

	setupCtx, cancelSetup := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancelSetup()
	for _, s := range stages {
		inst, err := opts.Host.Launch(setupCtx, s.cfg.Plugin, s.kind)
		if err != nil {
			return nil, fmt.Errorf("%spipeline %q: %s: %w", s.cfg.Where(""), p.Name, s.role, err)
		}
		s.inst = inst
		log.Debug("plugin started", "role", s.role, "plugin", s.cfg.Plugin, "pid", inst.Pid)
		if opts.OnLaunch != nil {
			opts.OnLaunch(s.role, inst)
		}
	}
	var cfgErrs []error
	for _, s := range stages {
		if err := s.inst.Configure(setupCtx, s.cfg.Params); err != nil {
			var pes param.Errors
			if !errors.As(err, &pes) {
				return nil, err
			}
			for _, pe := range pes {
				cfgErrs = append(cfgErrs, fmt.Errorf("%s%s %q: %s", s.cfg.Where(pe.Param), s.role, s.cfg.Plugin, pe.Error()))
			}
		}
	}
	if len(cfgErrs) > 0 {
		return nil, &ConfigError{Pipeline: p.Name, Errs: cfgErrs}
	}

	src, sink := stages[0], stages[len(stages)-1]
	transforms := stages[1 : len(stages)-1]
	store := checkpoint.ForPipeline(opts.StateDir, p.Name)
	rep := &Report{Pipeline: p.Name}

	sinkOpen, err := sink.inst.Sink.Open(setupCtx, &pb.SinkOpenRequest{})
	if err != nil {
		return nil, fmt.Errorf("pipeline %q: open sink %q: %w", p.Name, sink.cfg.Plugin, err)
	}
	var resume []sdk.Position
	if sinkOpen.GetTracksPositions() {
		resume = sdk.PositionsFromProto(sinkOpen.GetResume())
		if len(resume) > 0 {
			rep.ResumedFrom = "sink"
		}
	} else {
		if resume, err = store.Load(); err != nil {
			return nil, fmt.Errorf("pipeline %q: %w", p.Name, err)
		}
		if len(resume) > 0 {
			rep.ResumedFrom = "checkpoint"
		}
	}
	if rep.ResumedFrom != "" {
		log.Info("resuming", "from", rep.ResumedFrom, "partitions", len(resume))
	}
	if _, err := src.inst.Source.Open(setupCtx, &pb.SourceOpenRequest{Resume: sdk.PositionsToProto(resume)}); err != nil {
		return nil, fmt.Errorf("pipeline %q: open source %q: %w", p.Name, src.cfg.Plugin, err)
	}

	r := &run{
		log: log, opts: opts, rep: rep, store: store, name: p.Name,
		tracker: newTracker(resume),
	}
	err = r.flow(ctx, src, transforms, sink)
	positions, _ := r.tracker.snapshot()
	if saveErr := store.Save(p.Name, positions); saveErr != nil && err == nil {
		err = fmt.Errorf("pipeline %q: save checkpoint: %w", p.Name, saveErr)
	}
	rep.Positions = positions
	rep.Stopped = ctx.Err() != nil

	for _, s := range stages {
		pr := PluginReport{Role: s.role, Plugin: s.cfg.Plugin, Version: s.inst.Spec.GetVersion(), Pid: s.inst.Pid}
		if err == nil {
			tctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			m, terr := s.inst.Teardown(tctx)
			cancel()
			if terr != nil {
				err = fmt.Errorf("pipeline %q: %w", p.Name, terr)
			}
			pr.Metrics = m
		}
		rep.Plugins = append(rep.Plugins, pr)
	}
	rep.DurationMS = time.Since(start).Milliseconds()
	if err != nil {
		return rep, err
	}
	return rep, nil
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

	inFlight atomic.Int64 // batches read from the source, not yet passed on

	srcMu     sync.Mutex
	srcStream pb.Source_ReadClient
	srcClosed bool

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

type outBatch struct {
	b    *pb.Batch
	last bool
}

// flow moves the data and returns the first error.
func (r *run) flow(ctx context.Context, src *stage, transforms []*stage, sink *stage) error {
	runCtx, abort := context.WithCancel(context.Background())
	defer abort()
	r.abort = abort

	var err error
	if r.srcStream, err = src.inst.Source.Read(runCtx); err != nil {
		return fmt.Errorf("pipeline %q: source read: %w", r.name, err)
	}
	tfStreams := make([]pb.Transform_ProcessClient, len(transforms))
	for i, t := range transforms {
		if tfStreams[i], err = t.inst.Transform.Process(runCtx); err != nil {
			return fmt.Errorf("pipeline %q: transform %q: %w", r.name, t.cfg.Plugin, err)
		}
	}
	sinkStream, err := sink.inst.Sink.Write(runCtx)
	if err != nil {
		return fmt.Errorf("pipeline %q: sink write: %w", r.name, err)
	}

	toTransforms := make(chan *pb.Batch)
	toSink := make(chan outBatch)
	acksDone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(4)

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

	go func() { // source → transforms
		defer wg.Done()
		defer close(toTransforms)
		r.sendSource(&pb.SourceRequest{Credit: int64(r.opts.Window)})
		var seq uint64
		for {
			resp, err := r.srcStream.Recv()
			if err == io.EOF {
				return
			}
			if err != nil {
				r.fail(fmt.Errorf("pipeline %q: source %q: %w", r.name, src.cfg.Plugin, err))
				return
			}
			if resp.GetEnd() {
				r.closeSource()
				continue // wait for the stream to end
			}
			b := resp.GetBatch()
			seq++
			b.Seq = seq
			e := b.GetEnvelope()
			r.tracker.register(seq, e.GetTopic(), e.GetPartition(), e.GetNextOffset())
			r.rep.BatchesIn++
			r.rep.RecordsIn += e.GetCount()
			r.rep.BytesIn += int64(len(b.GetArrow()))
			if n := r.inFlight.Add(1); n > r.rep.MaxInFlight {
				r.rep.MaxInFlight = n
			}
			select {
			case toTransforms <- b:
			case <-runCtx.Done():
				return
			}
		}
	}()

	go func() { // transforms → sink
		defer wg.Done()
		defer close(toSink)
		for b := range toTransforms {
			outs := []*pb.Batch{b}
			if b.GetEnvelope().GetCount() == 0 {
				outs = nil // advances the position only
			}
			for i, ts := range tfStreams {
				var next []*pb.Batch
				for _, o := range outs {
					if err := ts.Send(o); err != nil {
						r.fail(r.streamErr("transform", transforms[i].cfg.Plugin, func() error { _, err := ts.Recv(); return err }, err))
						return
					}
					resp, err := ts.Recv()
					if err != nil {
						r.fail(fmt.Errorf("pipeline %q: transform %q: %w", r.name, transforms[i].cfg.Plugin, err))
						return
					}
					next = append(next, resp.GetBatches()...)
				}
				outs = next
			}
			var kept []*pb.Batch
			var keptRecords int64
			for _, o := range outs {
				if o.GetEnvelope().GetCount() > 0 {
					o.Seq = b.Seq
					kept = append(kept, o)
					keptRecords += o.GetEnvelope().GetCount()
				}
			}
			r.rep.RecordsDropped += b.GetEnvelope().GetCount() - keptRecords
			r.tracker.expect(b.Seq, len(kept))
			if len(kept) == 0 {
				r.returnCredit()
				continue
			}
			for i, o := range kept {
				select {
				case toSink <- outBatch{b: o, last: i == len(kept)-1}:
				case <-runCtx.Done():
					return
				}
			}
		}
		for i, ts := range tfStreams {
			if err := ts.CloseSend(); err != nil {
				r.fail(err)
				return
			}
			if _, err := ts.Recv(); err != io.EOF {
				r.fail(fmt.Errorf("pipeline %q: transform %q did not end cleanly: %v", r.name, transforms[i].cfg.Plugin, err))
				return
			}
		}
	}()

	go func() { // → sink
		defer wg.Done()
		for o := range toSink {
			if err := sinkStream.Send(o.b); err != nil {
				if err == io.EOF {
					// The sink ended the stream; the ack reader learns why.
					<-acksDone
					err = errors.New("ended its stream before every batch was written")
				}
				r.fail(fmt.Errorf("pipeline %q: sink %q: %w", r.name, sink.cfg.Plugin, err))
				return
			}
			e := o.b.GetEnvelope()
			r.rep.BatchesOut++
			r.rep.RecordsOut += e.GetCount()
			r.rep.BytesOut += int64(len(o.b.GetArrow()))
			if o.last {
				r.returnCredit()
			}
		}
		if runCtx.Err() == nil {
			if err := sinkStream.CloseSend(); err != nil {
				r.fail(err)
			}
		}
	}()

	go func() { // sink acks → checkpoint → source acks
		defer wg.Done()
		defer close(acksDone)
		lastSave := time.Now()
		for {
			ack, err := sinkStream.Recv()
			if err == io.EOF {
				return
			}
			if err != nil {
				r.fail(fmt.Errorf("pipeline %q: sink %q: %w", r.name, sink.cfg.Plugin, err))
				return
			}
			for _, seq := range ack.GetSeqs() {
				if err := r.tracker.ack(seq); err != nil {
					r.fail(fmt.Errorf("pipeline %q: sink %q: %w", r.name, sink.cfg.Plugin, err))
					return
				}
			}
			if time.Since(lastSave) >= r.opts.CheckpointInterval {
				if positions, changed := r.tracker.snapshot(); changed {
					if err := r.store.Save(r.name, positions); err != nil {
						r.fail(fmt.Errorf("pipeline %q: save checkpoint: %w", r.name, err))
						return
					}
					r.sendSource(&pb.SourceRequest{Acked: sdk.PositionsToProto(positions)})
				}
				lastSave = time.Now()
			}
		}
	}()

	wg.Wait()
	r.closeSource()
	if r.err != nil {
		return r.err
	}
	if n := r.tracker.pending(); n > 0 {
		return fmt.Errorf("pipeline %q: sink %q ended with %d batches not acknowledged as durable", r.name, sink.cfg.Plugin, n)
	}
	return nil
}

// streamErr explains a failed Send: when the plugin ended the stream, its
// status, which the next Recv returns, is the real cause.
func (r *run) streamErr(role, plugin string, recv func() error, sendErr error) error {
	if sendErr == io.EOF {
		if err := recv(); err != nil && err != io.EOF {
			sendErr = err
		}
	}
	return fmt.Errorf("pipeline %q: %s %q: %w", r.name, role, plugin, sendErr)
}

// returnCredit lets the source read one more batch: one that it sent has
// been handed to the sink or dropped.
func (r *run) returnCredit() {
	r.inFlight.Add(-1)
	r.sendSource(&pb.SourceRequest{Credit: 1})
}

// sendSource sends credit or acks to the source while its stream is open.
func (r *run) sendSource(req *pb.SourceRequest) {
	r.srcMu.Lock()
	defer r.srcMu.Unlock()
	if r.srcClosed {
		return
	}
	if err := r.srcStream.Send(req); err != nil {
		r.log.Debug("source stream closed", "error", err)
	}
}

func (r *run) closeSource() {
	r.srcMu.Lock()
	defer r.srcMu.Unlock()
	if !r.srcClosed {
		r.srcClosed = true
		_ = r.srcStream.CloseSend()
	}
}
