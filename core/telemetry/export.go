package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Exporter sends a run's telemetry where the user asked: metrics to
// Prometheus /metrics on an address, and metrics and traces with OTLP when
// the standard OpenTelemetry environment names an endpoint.
type Exporter struct {
	// Metrics records the run's figures; nil when no metrics are exported.
	Metrics *Metrics
	// Traces makes the run's spans; nil when no traces are exported.
	Traces *Traces
	// Addr is the address /metrics is served on (the port chosen when
	// asked for 0); empty when not served.
	Addr     string
	srv      *http.Server
	provider *sdkmetric.MeterProvider
}

// Start exports telemetry:
//   - metrics at http://addr/metrics when addr is set;
//   - metrics with OTLP when OTEL_EXPORTER_OTLP_ENDPOINT or
//     OTEL_EXPORTER_OTLP_METRICS_ENDPOINT is set, unless
//     OTEL_METRICS_EXPORTER is none; OTEL_METRIC_EXPORT_INTERVAL sets how
//     often (60s by default), besides a last export at Close;
//   - traces with OTLP when OTEL_EXPORTER_OTLP_ENDPOINT or
//     OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, unless
//     OTEL_TRACES_EXPORTER is none; OTEL_TRACES_SAMPLER applies.
//
// The OTLP protocol is http/protobuf (the default) or grpc, from
// OTEL_EXPORTER_OTLP[_METRICS|_TRACES]_PROTOCOL; the exporters read the
// other OTEL_EXPORTER_OTLP_* settings. Start returns nil when nothing is
// asked for.
func Start(ctx context.Context, addr string, log *slog.Logger) (e *Exporter, err error) {
	e = &Exporter{}
	var ln net.Listener
	defer func() {
		if err != nil {
			if ln != nil {
				ln.Close()
			}
			e.Close()
			e = nil
		}
	}()
	var readers []sdkmetric.Option
	var reg *prometheus.Registry
	if addr != "" {
		if ln, err = net.Listen("tcp", addr); err != nil {
			return e, &ListenError{Err: err}
		}
		reg = prometheus.NewRegistry()
		exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
		if err != nil {
			return e, fmt.Errorf("prometheus exporter: %w", err)
		}
		readers = append(readers, sdkmetric.WithReader(exp))
	}
	if endpoint := otlpEndpoint("METRICS"); endpoint != "" {
		exp, err := otlpMetricExporter(ctx)
		if err != nil {
			return e, fmt.Errorf("OTLP metrics exporter for %s: %w", endpoint, err)
		}
		readers = append(readers, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)))
		log.Info("exporting metrics with OTLP", "endpoint", endpoint)
	}
	if endpoint := otlpEndpoint("TRACES"); endpoint != "" {
		exp, err := otlpSpanExporter(ctx)
		if err != nil {
			return e, fmt.Errorf("OTLP traces exporter for %s: %w", endpoint, err)
		}
		e.Traces = NewTraces(exp)
		log.Info("exporting traces with OTLP", "endpoint", endpoint)
	}
	if len(readers) > 0 {
		e.provider = sdkmetric.NewMeterProvider(readers...)
		if e.Metrics, err = New(e.provider.Meter("kpipe")); err != nil {
			return e, err
		}
	}
	if ln != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		e.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		e.Addr = ln.Addr().String()
		go func() {
			if err := e.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Warn("metrics server stopped", "error", err)
			}
		}()
		log.Info("serving Prometheus metrics", "url", "http://"+e.Addr+"/metrics")
	}
	if e.Metrics == nil && e.Traces == nil {
		return nil, nil
	}
	return e, nil
}

// ListenError says the /metrics address cannot be listened on.
type ListenError struct{ Err error }

func (e *ListenError) Error() string { return e.Err.Error() }
func (e *ListenError) Unwrap() error { return e.Err }

// otlpEndpoint is the OTLP endpoint of a signal (METRICS or TRACES), empty
// when the signal is not to be exported with OTLP.
func otlpEndpoint(signal string) string {
	if os.Getenv("OTEL_"+signal+"_EXPORTER") == "none" {
		return ""
	}
	if v := os.Getenv("OTEL_EXPORTER_OTLP_" + signal + "_ENDPOINT"); v != "" {
		return v
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
}

// otlpProtocol is the OTLP protocol the environment names for a signal.
func otlpProtocol(signal string) (string, error) {
	for _, name := range []string{"OTEL_EXPORTER_OTLP_" + signal + "_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		switch proto := os.Getenv(name); proto {
		case "":
			continue
		case "http/protobuf", "grpc":
			return proto, nil
		default:
			return "", fmt.Errorf("%s %q: use http/protobuf or grpc", name, proto)
		}
	}
	return "http/protobuf", nil
}

func otlpMetricExporter(ctx context.Context) (sdkmetric.Exporter, error) {
	proto, err := otlpProtocol("METRICS")
	if err != nil {
		return nil, err
	}
	if proto == "grpc" {
		return otlpmetricgrpc.New(ctx)
	}
	return otlpmetrichttp.New(ctx)
}

func otlpSpanExporter(ctx context.Context) (sdktrace.SpanExporter, error) {
	proto, err := otlpProtocol("TRACES")
	if err != nil {
		return nil, err
	}
	if proto == "grpc" {
		return otlptracegrpc.New(ctx)
	}
	return otlptracehttp.New(ctx)
}

// Close stops serving and exports what OTLP has not sent yet, waiting at
// most 5 seconds.
func (e *Exporter) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	if e.srv != nil {
		errs = append(errs, e.srv.Shutdown(ctx))
	}
	if e.provider != nil {
		errs = append(errs, e.provider.Shutdown(ctx))
	}
	if e.Traces != nil {
		errs = append(errs, e.Traces.Shutdown(ctx))
	}
	return errors.Join(errs...)
}
