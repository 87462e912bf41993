package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/kpipe/kpipe/core/host"
	"github.com/kpipe/kpipe/core/plugin"
	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/link"
	"github.com/kpipe/kpipe/sdk/record"
)

// Plugin names a plugin binary, the kind to run it as, and valid parameters.
type Plugin struct {
	// Dir holds the kpipe-plugin-NAME binaries.
	Dir  string
	Name string
	// Kind is "source", "transform" or "sink"; RunPair sets it.
	Kind   string
	Params map[string]any
}

func params(m map[string]any) (map[string]json.RawMessage, error) {
	out := map[string]json.RawMessage{}
	for k, v := range m {
		js, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("parameter %s: %w", k, err)
		}
		out[k] = js
	}
	return out, nil
}

func timeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*time.Minute)
}

// start launches the plugin as its own process; it is killed when the test
// ends.
func start(t testing.TB, p Plugin) plugin.Instance {
	t.Helper()
	ctx, cancel := timeout()
	defer cancel()
	h := &host.Host{Dir: p.Dir}
	inst, err := h.Launch(ctx, p.Name, plugin.Kind(p.Kind))
	if err != nil {
		t.Fatalf("launch %s %s: %v", p.Kind, p.Name, err)
	}
	t.Cleanup(func() { inst.Kill(); h.Close() })
	return inst
}

// configured launches and configures the plugin.
func configured(t testing.TB, p Plugin) plugin.Instance {
	t.Helper()
	inst := start(t, p)
	ps, err := params(p.Params)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := timeout()
	defer cancel()
	if err := inst.Configure(ctx, ps); err != nil {
		t.Fatalf("configure %s %s with %v: %v", p.Kind, p.Name, p.Params, err)
	}
	return inst
}

// heap allocates link frames on the Go heap.
type heap struct{}

func (heap) Allocate(n int) []byte { return make([]byte, n) }
func (heap) Free([]byte)           {}

// attach makes a data link, hands the plugin the end of role and returns
// the other end.
func attach(inst plugin.Instance, role link.Role) (io.ReadWriteCloser, error) {
	a, b, err := link.Pair()
	if err != nil {
		return nil, err
	}
	mine, theirs := a, b
	if role == link.Out {
		mine, theirs = b, a
	}
	if err := inst.Attach(role, theirs); err != nil {
		mine.Close()
		return nil, err
	}
	return link.Conn(mine)
}

// ReadAll opens a configured source at resume, plays the receiving end of
// its data link with ample credit, reads until it ends, and tears the source
// down. The batches come back with their frames; the source encodes them in
// codec.
func ReadAll(inst plugin.Instance, resume []sdk.Position, codec record.Codec) ([]sdk.Batch, error) {
	out, err := read(inst, resume, codec)
	if err != nil {
		return out, err
	}
	ctx, cancel := timeout()
	defer cancel()
	_, err = inst.Teardown(ctx, sdk.OutcomeComplete)
	return out, err
}

func read(inst plugin.Instance, resume []sdk.Position, codec record.Codec) ([]sdk.Batch, error) {
	ctx, cancel := timeout()
	defer cancel()
	conn, err := attach(inst, link.Out)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := inst.Source().Open(ctx, sdk.SourceOpen{Resume: resume, Codec: codec, InFlightBytes: 64 << 20}); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	frames := make(chan link.Frame, 1<<16)
	go func() {
		defer close(frames)
		r := link.NewReader(conn, heap{})
		for {
			f, err := r.Next()
			if err != nil {
				return
			}
			frames <- f
		}
	}()
	st, err := inst.Source().Run(ctx)
	if err != nil {
		return nil, err
	}
	if err := st.Send(sdk.SourceControl{Credit: sdk.Credit{Batches: 1 << 30, Bytes: 1 << 50}}); err != nil {
		return nil, err
	}
	var out []sdk.Batch
	for {
		ev, err := st.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		switch {
		case ev.End:
			st.CloseSend()
		case ev.Error != nil:
			return out, ev.Error
		case ev.Batch != nil && ev.Batch.Count > 0:
			f, ok := <-frames
			if !ok || f.ID != ev.Batch.ID() {
				return out, fmt.Errorf("the frame of batch %s did not come next on the data link (got %s, %v)", ev.Batch.ID(), f.ID, ok)
			}
			if int64(len(f.Data)) != ev.Batch.FrameBytes {
				return out, fmt.Errorf("batch %s: the envelope says %d frame bytes, the link carried %d", f.ID, ev.Batch.FrameBytes, len(f.Data))
			}
			out = append(out, sdk.Batch{Envelope: *ev.Batch, Arrow: f.Data})
		}
	}
}

// WriteAll opens a configured sink, plays the sending end of its data link
// (each batch recompressed in the codec the sink asks for, as a source
// would), sends the batches with seqs 1..n, ends the stream, tears the sink
// down and returns what Open reported and how often each seq was acked.
func WriteAll(inst plugin.Instance, batches []sdk.Batch) (sdk.SinkOpened, map[uint64]int, error) {
	ctx, cancel := timeout()
	defer cancel()
	conn, err := attach(inst, link.In)
	if err != nil {
		return sdk.SinkOpened{}, nil, err
	}
	defer conn.Close()
	open, err := inst.Sink().Open(ctx, sdk.SinkOpen{})
	if err != nil {
		return open, nil, fmt.Errorf("open: %w", err)
	}
	st, err := inst.Sink().Run(ctx)
	if err != nil {
		return open, nil, err
	}
	acked := map[uint64]int{}
	released := map[uint64]int{}
	done := make(chan error, 1)
	go func() {
		for {
			ev, err := st.Recv()
			if err == io.EOF {
				done <- nil
				return
			}
			if err != nil {
				done <- err
				return
			}
			for _, s := range ev.Released {
				released[s]++
			}
			for _, s := range ev.Acked {
				if released[s] <= acked[s] {
					done <- fmt.Errorf("batch %d was acknowledged before it was released", s)
					return
				}
				acked[s]++
			}
			if ev.Error != nil {
				done <- ev.Error
				return
			}
		}
	}()
	w := link.NewWriter(conn)
	enc := record.NewEncoder(open.Codec)
	for i, b := range batches {
		b.Seq, b.Part = uint64(i+1), 0
		frame, err := enc.Recompress(b.Arrow, nil)
		if err != nil {
			return open, nil, err
		}
		b.FrameBytes = int64(len(frame))
		if err := st.Send(sdk.Input{Batch: &b.Envelope}); err != nil {
			return open, nil, errors.Join(err, <-done)
		}
		if err := w.Write(b.ID(), frame); err != nil {
			return open, nil, errors.Join(err, <-done)
		}
	}
	if err := st.CloseSend(); err != nil {
		return open, nil, err
	}
	if err := <-done; err != nil {
		return open, acked, err
	}
	_, err = inst.Teardown(ctx, sdk.OutcomeComplete)
	return open, acked, err
}
