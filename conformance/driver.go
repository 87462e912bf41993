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
	"github.com/kpipe/kpipe/sdk"
	pb "github.com/kpipe/kpipe/sdk/proto/kpipe/v1"
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

func (p Plugin) kind() pb.Kind {
	return pb.Kind(pb.Kind_value["KIND_"+upper(p.Kind)])
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 32
		}
	}
	return string(b)
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
func start(t testing.TB, p Plugin) *host.Instance {
	t.Helper()
	ctx, cancel := timeout()
	defer cancel()
	inst, err := (&host.Host{Dir: p.Dir}).Launch(ctx, p.Name, p.kind())
	if err != nil {
		t.Fatalf("launch %s %s: %v", p.Kind, p.Name, err)
	}
	t.Cleanup(inst.Kill)
	return inst
}

// configured launches and configures the plugin.
func configured(t testing.TB, p Plugin) *host.Instance {
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

// ReadAll opens a configured source at resume, reads until it ends, and
// tears the source down.
func ReadAll(inst *host.Instance, resume []sdk.Position) ([]sdk.Batch, error) {
	out, err := read(inst, resume)
	if err != nil {
		return out, err
	}
	ctx, cancel := timeout()
	defer cancel()
	_, err = inst.Teardown(ctx)
	return out, err
}

func read(inst *host.Instance, resume []sdk.Position) ([]sdk.Batch, error) {
	ctx, cancel := timeout()
	defer cancel()
	if _, err := inst.Source.Open(ctx, &pb.SourceOpenRequest{Resume: sdk.PositionsToProto(resume)}); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	stream, err := inst.Source.Read(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&pb.SourceRequest{Credit: 1 << 20}); err != nil {
		return nil, err
	}
	var out []sdk.Batch
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if resp.GetEnd() {
			stream.CloseSend()
			continue
		}
		out = append(out, sdk.BatchFromProto(resp.GetBatch()))
	}
}

// WriteAll opens a configured sink, writes the batches with seqs 1..n,
// closes the stream, tears the sink down and returns what Open reported and
// how often each seq was acked.
func WriteAll(inst *host.Instance, batches []sdk.Batch) (*pb.SinkOpenResponse, map[uint64]int, error) {
	ctx, cancel := timeout()
	defer cancel()
	open, err := inst.Sink.Open(ctx, &pb.SinkOpenRequest{})
	if err != nil {
		return nil, nil, fmt.Errorf("open: %w", err)
	}
	stream, err := inst.Sink.Write(ctx)
	if err != nil {
		return open, nil, err
	}
	acked := map[uint64]int{}
	done := make(chan error, 1)
	go func() {
		for {
			ack, err := stream.Recv()
			if err == io.EOF {
				done <- nil
				return
			}
			if err != nil {
				done <- err
				return
			}
			for _, s := range ack.GetSeqs() {
				acked[s]++
			}
		}
	}()
	for i, b := range batches {
		b.Seq = uint64(i + 1)
		if err := stream.Send(sdk.BatchToProto(b)); err != nil {
			return open, nil, errors.Join(err, <-done)
		}
	}
	if err := stream.CloseSend(); err != nil {
		return open, nil, err
	}
	if err := <-done; err != nil {
		return open, acked, err
	}
	_, err = inst.Teardown(ctx)
	return open, acked, err
}
