package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/link"
	"github.com/kpipe/kpipe/sdk/param"
)

// Local runs a plugin (an sdk.Source, sdk.Transform or sdk.Sink) in this
// process, through the same SDK runners a plugin process uses, with real
// data links between plugins. Only the gRPC hop is missing.
func Local(impl any) (Instance, error) {
	l := &local{impl: impl, links: &localLinks{}}
	switch p := impl.(type) {
	case sdk.Source:
		l.kind, l.spec = KindSource, p.Spec
		l.src = sdk.NewSourceRunner(p, l.links, nil)
	case sdk.Transform:
		l.kind, l.spec = KindTransform, p.Spec
		l.tf = sdk.NewTransformRunner(p, l.links, nil)
	case sdk.Sink:
		l.kind, l.spec = KindSink, p.Spec
		l.sink = sdk.NewSinkRunner(p, l.links, nil)
	default:
		return nil, fmt.Errorf("plugin.Local: %T is not an sdk.Source, sdk.Transform or sdk.Sink", impl)
	}
	return l, nil
}

type local struct {
	impl  any
	kind  Kind
	spec  func() sdk.Spec
	links *localLinks
	src   *sdk.SourceRunner
	tf    *sdk.TransformRunner
	sink  *sdk.SinkRunner
}

// localLinks holds the link ends Attach was given.
type localLinks struct {
	mu   sync.Mutex
	ends map[link.Role]net.Conn
}

func (l *localLinks) Link(_ context.Context, role link.Role) (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.ends[role]
	if c == nil {
		return nil, fmt.Errorf("no %s data link was attached", role)
	}
	delete(l.ends, role)
	return c, nil
}

func (l *local) Info() Info {
	spec := l.spec()
	info := Info{Name: spec.Name, Version: spec.Version, Summary: spec.Summary, Kind: l.kind,
		Kinds: []Kind{l.kind}, Pid: os.Getpid()}
	if spec.Config != nil {
		info.Params, _ = param.Describe(spec.Config)
	}
	if l.tf != nil {
		info.EnvelopeOnly = l.tf.EnvelopeOnly()
	}
	_, info.Storage = l.impl.(sdk.StorageReader)
	return info
}

func (l *local) Configure(ctx context.Context, params map[string]json.RawMessage) error {
	js, err := json.Marshal(params)
	if err != nil {
		return err
	}
	if err := param.Decode(l.spec().Config, js); err != nil {
		return param.AsErrors(err)
	}
	var configure func(context.Context) error
	switch p := l.impl.(type) {
	case sdk.Source:
		configure = p.Configure
	case sdk.Transform:
		configure = p.Configure
	case sdk.Sink:
		configure = p.Configure
	}
	if err := configure(ctx); err != nil {
		return param.AsErrors(err)
	}
	return nil
}

func (l *local) Attach(role link.Role, f *os.File) error {
	c, err := link.Conn(f)
	if err != nil {
		return err
	}
	l.links.mu.Lock()
	defer l.links.mu.Unlock()
	if l.links.ends == nil {
		l.links.ends = map[link.Role]net.Conn{}
	}
	l.links.ends[role] = c
	return nil
}

func (l *local) Source() Source {
	if l.src == nil {
		return nil
	}
	return localSource{l.src}
}

func (l *local) Transform() Transform {
	if l.tf == nil {
		return nil
	}
	return localTransform{l.tf}
}

func (l *local) Sink() Sink {
	if l.sink == nil {
		return nil
	}
	return localSink{l.sink}
}

func (l *local) Teardown(ctx context.Context, o sdk.Outcome) (map[string]int64, error) {
	if e, ok := l.impl.(sdk.Ender); ok && o != "" {
		e.End(ctx, o)
	}
	var metrics func() map[string]int64
	var teardown func(context.Context) error
	switch p := l.impl.(type) {
	case sdk.Source:
		metrics, teardown = p.Metrics, p.Teardown
	case sdk.Transform:
		metrics, teardown = p.Metrics, p.Teardown
	case sdk.Sink:
		metrics, teardown = p.Metrics, p.Teardown
	}
	m := metrics()
	return m, teardown(ctx)
}

func (l *local) Kill() {}

type localSource struct{ r *sdk.SourceRunner }

func (s localSource) Open(ctx context.Context, o sdk.SourceOpen) error { return s.r.Open(ctx, o) }

func (s localSource) Run(ctx context.Context) (SourceStream, error) {
	ctl := make(chan sdk.SourceControl, 16)
	st := &localStream[sdk.SourceControl]{in: ctl, events: make(chan sdk.Event, 16), done: make(chan struct{})}
	go st.run(ctx, func(ctx context.Context, emit func(sdk.Event) error) error { return s.r.Run(ctx, ctl, emit) })
	return st, nil
}

type localTransform struct{ r *sdk.TransformRunner }

func (t localTransform) Open(ctx context.Context, o sdk.TransformOpen) error { return t.r.Open(ctx, o) }

func (t localTransform) Run(ctx context.Context) (InputStream, error) {
	in := make(chan sdk.Input, 16)
	st := &localStream[sdk.Input]{in: in, events: make(chan sdk.Event, 16), done: make(chan struct{})}
	go st.run(ctx, func(ctx context.Context, emit func(sdk.Event) error) error { return t.r.Run(ctx, in, emit) })
	return st, nil
}

type localSink struct{ r *sdk.SinkRunner }

func (s localSink) Open(ctx context.Context, o sdk.SinkOpen) (sdk.SinkOpened, error) {
	return s.r.Open(ctx, o)
}

func (s localSink) Run(ctx context.Context) (InputStream, error) {
	in := make(chan sdk.Input, 16)
	st := &localStream[sdk.Input]{in: in, events: make(chan sdk.Event, 16), done: make(chan struct{})}
	go st.run(ctx, func(ctx context.Context, emit func(sdk.Event) error) error { return s.r.Run(ctx, in, emit) })
	return st, nil
}

// localStream connects the host to a runner with channels, as a gRPC
// stream would.
type localStream[T any] struct {
	ctx    context.Context
	in     chan T
	events chan sdk.Event
	done   chan struct{}
	err    error // set before done closes

	mu     sync.Mutex
	closed bool
}

func (s *localStream[T]) run(ctx context.Context, fn func(context.Context, func(sdk.Event) error) error) {
	s.ctx = ctx
	emit := func(ev sdk.Event) error {
		select {
		case s.events <- ev:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.err = fn(ctx, emit)
	close(s.done)
}

func (s *localStream[T]) Send(v T) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("send after CloseSend")
	}
	select {
	case s.in <- v:
		return nil
	case <-s.done:
		return io.EOF
	}
}

func (s *localStream[T]) CloseSend() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.in)
	}
	return nil
}

func (s *localStream[T]) Recv() (sdk.Event, error) {
	select {
	case ev := <-s.events:
		return ev, nil
	case <-s.done:
		select {
		case ev := <-s.events:
			return ev, nil
		default:
		}
		if s.err != nil {
			return sdk.Event{}, s.err
		}
		return sdk.Event{}, io.EOF
	}
}
