package sdk

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	pb "github.com/kpipe/kpipe/sdk/proto/kpipe/v1"
)

// countingSource returns an endless stream of empty batches and counts the
// calls to Read.
type countingSource struct {
	UnimplementedSource
	reads atomic.Int64
}

func (s *countingSource) Spec() Spec { return Spec{Name: "counting"} }
func (s *countingSource) Read(context.Context) (Batch, error) {
	n := s.reads.Add(1)
	return Batch{Envelope: Envelope{Topic: "t", NextOffset: n}}, nil
}

func dial(t *testing.T, register func(*grpc.Server)) *grpc.ClientConn {
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	register(srv)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return lis.Dial() }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestSourceSendsNoMoreBatchesThanItsCredit pins down the flow control of
// the data path: a source reads a batch only when the host has granted
// credit for it.
func TestSourceSendsNoMoreBatchesThanItsCredit(t *testing.T) {
	src := &countingSource{}
	conn := dial(t, func(s *grpc.Server) { registerSource(s, src, []pb.Kind{pb.Kind_KIND_SOURCE}) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := pb.NewSourceClient(conn).Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	settle := func() { time.Sleep(200 * time.Millisecond) }
	if err := stream.Send(&pb.SourceRequest{Credit: 3}); err != nil {
		t.Fatal(err)
	}
	for i := int64(1); i <= 3; i++ {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetBatch().GetEnvelope().GetNextOffset(); got != i {
			t.Fatalf("batch %d has next offset %d", i, got)
		}
	}
	settle()
	if n := src.reads.Load(); n != 3 {
		t.Fatalf("source read %d batches with credit for 3", n)
	}
	if err := stream.Send(&pb.SourceRequest{Credit: 2}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	settle()
	if n := src.reads.Load(); n != 5 {
		t.Fatalf("source read %d batches with credit for 5", n)
	}
	// Closing the host's side ends the stream cleanly.
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("after the host closed its side: %v, want a clean end (io.EOF)", err)
	}
}
