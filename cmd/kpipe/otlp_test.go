package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/kpipe/kpipe/internal/testkit"
)

// otlpReceiver keeps the records the sink wrote per partition, as the last
// OTLP export it received says (cumulative sums).
type otlpReceiver struct {
	colmetricpb.UnimplementedMetricsServiceServer
	mu      sync.Mutex
	written map[string]int64 // partition → records
}

func (r *otlpReceiver) Export(_ context.Context, req *colmetricpb.ExportMetricsServiceRequest) (*colmetricpb.ExportMetricsServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rm := range req.ResourceMetrics {
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if m.Name != "kpipe.records" || m.GetSum() == nil {
					continue
				}
				for _, dp := range m.GetSum().DataPoints {
					attrs := map[string]string{}
					for _, kv := range dp.Attributes {
						if _, ok := kv.Value.Value.(*commonpb.AnyValue_IntValue); ok {
							attrs[kv.Key] = fmt.Sprint(kv.Value.GetIntValue())
						} else {
							attrs[kv.Key] = kv.Value.GetStringValue()
						}
					}
					if attrs["stage"] == "sink" {
						r.written[attrs["partition"]] = dp.GetAsInt()
					}
				}
			}
		}
	}
	return &colmetricpb.ExportMetricsServiceResponse{}, nil
}

// otlpTraces keeps what an OTLP trace receiver got: the trace ids, and per
// service its process ids and span names.
type otlpTraces struct {
	coltracepb.UnimplementedTraceServiceServer
	mu     sync.Mutex
	traces map[string]bool
	pids   map[string]map[int64]bool
	names  map[string]map[string]int
}

func (r *otlpTraces) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		var svc string
		var pid int64
		for _, kv := range rs.GetResource().GetAttributes() {
			switch kv.Key {
			case "service.name":
				svc = kv.Value.GetStringValue()
			case "process.pid":
				pid = kv.Value.GetIntValue()
			}
		}
		if r.pids[svc] == nil {
			r.pids[svc], r.names[svc] = map[int64]bool{}, map[string]int{}
		}
		r.pids[svc][pid] = true
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				r.traces[fmt.Sprintf("%x", sp.TraceId)] = true
				r.names[svc][sp.Name]++
			}
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// TestOTLPMetricsAndTraces runs a backup with the standard OTLP environment pointing
// at an in-process receiver, over gRPC and over HTTP: the records written
// per partition arrive.
func TestOTLPMetricsAndTraces(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "otlp")
	seedPartitions(t, addr, topic, 2, 30, 1_700_000_000_000)
	bad := exec.Command(testkit.KpipeBinary(t), "--plugin-dir", testkit.PluginDir(t), "backup", "--bootstrap-servers", addr,
		"--topics", topic, "--path", t.TempDir(), "--backup-id", "o", "--state-dir", t.TempDir())
	bad.Env = append(os.Environ(), "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL=thrift")
	out, err := bad.CombinedOutput()
	want := `kpipe: OTLP metrics exporter for http://127.0.0.1:1: OTEL_EXPORTER_OTLP_PROTOCOL "thrift": use http/protobuf or grpc`
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitBadInput || errorText(string(out)) != want {
		t.Fatalf("an unknown OTLP protocol: %v, %q; want exit %d and %q", err, errorText(string(out)), exitBadInput, want)
	}
	t.Run("interval", func(t *testing.T) {
		// OTEL_METRIC_EXPORT_INTERVAL: a continuous backup exports while
		// it runs, not only when it ends.
		rcv := &otlpReceiver{written: map[string]int64{}}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer()
		colmetricpb.RegisterMetricsServiceServer(srv, rcv)
		go srv.Serve(ln)
		defer srv.Stop()
		cmd := exec.Command(testkit.KpipeBinary(t), "--plugin-dir", testkit.PluginDir(t), "backup", "--continuous", "--bootstrap-servers", addr,
			"--topics", topic, "--path", t.TempDir(), "--backup-id", "o", "--state-dir", t.TempDir())
		cmd.Env = append(os.Environ(), "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+ln.Addr().String(),
			"OTEL_EXPORTER_OTLP_PROTOCOL=grpc", "OTEL_EXPORTER_OTLP_INSECURE=true", "OTEL_METRIC_EXPORT_INTERVAL=200")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		got := func() (int64, int64) {
			rcv.mu.Lock()
			defer rcv.mu.Unlock()
			return rcv.written["0"], rcv.written["1"]
		}
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if p0, p1 := got(); p0 == 30 && p1 == 30 {
				break
			}
			select {
			case err := <-exited:
				t.Fatalf("the continuous backup ended (%v) before any export", err)
			default:
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				p0, p1 := got()
				t.Fatalf("after 20s of a continuous backup the receiver has %d and %d records, want 30 each", p0, p1)
			}
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			exited <- err
		case <-time.After(15 * time.Second):
			cmd.Process.Signal(syscall.SIGQUIT) // the Go runtime prints every goroutine
			<-exited
			t.Fatalf("15s after SIGTERM the backup has not exited; its stderr:\n%s", stderr.String())
		}
		if err := <-exited; err == nil || err.(*exec.ExitError).ExitCode() != exitInterrupted {
			t.Fatalf("after SIGTERM: %v, want exit %d", err, exitInterrupted)
		}
	})
	for _, protocol := range []string{"grpc", "http/protobuf"} {
		t.Run(protocol, func(t *testing.T) {
			rcv := &otlpReceiver{written: map[string]int64{}}
			trc := &otlpTraces{traces: map[string]bool{}, pids: map[string]map[int64]bool{}, names: map[string]map[string]int{}}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			if protocol == "grpc" {
				srv := grpc.NewServer()
				colmetricpb.RegisterMetricsServiceServer(srv, rcv)
				coltracepb.RegisterTraceServiceServer(srv, trc)
				go srv.Serve(ln)
				defer srv.Stop()
			} else {
				srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
					body, _ := io.ReadAll(req.Body)
					var resp proto.Message
					switch req.URL.Path {
					case "/v1/metrics":
						var in colmetricpb.ExportMetricsServiceRequest
						if proto.Unmarshal(body, &in) == nil {
							resp, _ = rcv.Export(req.Context(), &in)
						}
					case "/v1/traces":
						var in coltracepb.ExportTraceServiceRequest
						if proto.Unmarshal(body, &in) == nil {
							resp, _ = trc.Export(req.Context(), &in)
						}
					}
					if resp == nil {
						http.Error(w, "bad request", http.StatusBadRequest)
						return
					}
					out, _ := proto.Marshal(resp)
					w.Header().Set("Content-Type", "application/x-protobuf")
					w.Write(out)
				})}
				go srv.Serve(ln)
				defer srv.Close()
			}
			cmd := exec.Command(testkit.KpipeBinary(t), "--plugin-dir", testkit.PluginDir(t), "backup", "--bootstrap-servers", addr,
				"--topics", topic, "--path", t.TempDir(), "--backup-id", "o", "--state-dir", t.TempDir())
			cmd.Env = append(os.Environ(), "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+ln.Addr().String(),
				"OTEL_EXPORTER_OTLP_PROTOCOL="+protocol, "OTEL_EXPORTER_OTLP_INSECURE=true")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("backup: %v\n%s", err, out)
			}
			rcv.mu.Lock()
			defer rcv.mu.Unlock()
			if rcv.written["0"] != 30 || rcv.written["1"] != 30 {
				t.Fatalf("the receiver got %v records written per partition, want 30 each", rcv.written)
			}
			// One trace, with spans from kpipe and from each plugin process.
			trc.mu.Lock()
			defer trc.mu.Unlock()
			if len(trc.traces) != 1 {
				t.Errorf("the receiver got %d traces, want 1", len(trc.traces))
			}
			pids := map[int64]string{}
			for svc, want := range map[string]string{"kpipe": "kpipe.run", "kpipe-plugin-kafka": "kpipe.source.read", "kpipe-plugin-fs": "kpipe.sink.write"} {
				if trc.names[svc][want] == 0 || len(trc.pids[svc]) != 1 {
					t.Errorf("service %s: spans %v from pids %v; want %s spans from one process", svc, trc.names[svc], trc.pids[svc], want)
				}
				for pid := range trc.pids[svc] {
					if other, ok := pids[pid]; ok {
						t.Errorf("%s and %s share pid %d", svc, other, pid)
					}
					pids[pid] = svc
				}
			}
			if !trc.pids["kpipe"][int64(cmd.Process.Pid)] {
				t.Errorf("kpipe's spans come from pids %v, not from kpipe's pid %d", trc.pids["kpipe"], cmd.Process.Pid)
			}
			if n := trc.names["kpipe"]["kpipe.partition"]; n != 2 {
				t.Errorf("%d kpipe.partition spans, want 2", n)
			}
		})
	}
}
