// Package plugin is the host's side of the plugin boundary: handles on
// running source, transform and sink plugins in the SDK's own terms
// (envelopes, positions, metadata, events), whether a plugin runs as its own
// process (package host launches those, over gRPC) or in this one (Local,
// which the engine's tests use with fake plugins). The generated protocol
// types stay behind this boundary.
package plugin

import (
	"context"
	"encoding/json"
	"os"
	"strings"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/link"
	"github.com/kpipe/kpipe/sdk/param"
)

// Kind is what a plugin instance serves.
type Kind string

// The kinds of plugins.
const (
	KindSource    Kind = "source"
	KindTransform Kind = "transform"
	KindSink      Kind = "sink"
)

// ParseKind checks a kind name; the empty name is no kind in particular.
func ParseKind(s string) (Kind, bool) {
	switch k := Kind(strings.ToLower(s)); k {
	case KindSource, KindTransform, KindSink, "":
		return k, true
	}
	return "", false
}

// Info describes a running plugin.
type Info struct {
	Name    string
	Version string
	Summary string
	// Kind is the kind this instance serves; Kinds every kind its binary
	// can serve.
	Kind   Kind
	Kinds  []Kind
	Params []param.Param
	// Pid is the plugin's process id (this process's for a Local plugin).
	Pid int
	// EnvelopeOnly marks a transform that gets no data link: batch bytes
	// flow past it.
	EnvelopeOnly bool
	// LinkCert is the certificate the plugin presents on TLS data links.
	LinkCert []byte
	// Storage says the plugin serves the storage service.
	Storage bool
}

// Instance is one running plugin.
type Instance interface {
	Info() Info
	// Configure sends the parameters; param.Errors names each wrong one.
	Configure(ctx context.Context, params map[string]json.RawMessage) error
	// Attach hands the plugin one end of a data link, before it opens. The
	// instance takes f over.
	Attach(role link.Role, f *os.File) error
	// Exactly one of Source, Transform and Sink is non-nil: the kind the
	// instance serves.
	Source() Source
	Transform() Transform
	Sink() Sink
	// Teardown asks the plugin to release its resources and returns its
	// final metrics; o says how the run ended (empty: unknown).
	Teardown(ctx context.Context, o sdk.Outcome) (map[string]int64, error)
	// Kill ends the plugin (its process, for one that has its own).
	Kill()
}

// Source is a source plugin's side of a run.
type Source interface {
	Open(ctx context.Context, o sdk.SourceOpen) error
	Run(ctx context.Context) (SourceStream, error)
}

// SourceStream is a running source: the host sends credit and acked
// positions and receives events; CloseSend stops the source, which then
// sends what it has read, End, and ends the stream (Recv returns io.EOF).
type SourceStream interface {
	Send(c sdk.SourceControl) error
	CloseSend() error
	Recv() (sdk.Event, error)
}

// Transform is a transform plugin's side of a run.
type Transform interface {
	Open(ctx context.Context, o sdk.TransformOpen) error
	Run(ctx context.Context) (InputStream, error)
}

// Sink is a sink plugin's side of a run.
type Sink interface {
	Open(ctx context.Context, o sdk.SinkOpen) (sdk.SinkOpened, error)
	Run(ctx context.Context) (InputStream, error)
}

// InputStream is a running transform or sink: the host sends envelopes and
// metadata and receives events; after CloseSend the plugin finishes what it
// has and ends the stream (Recv returns io.EOF).
type InputStream interface {
	Send(in sdk.Input) error
	CloseSend() error
	Recv() (sdk.Event, error)
}
