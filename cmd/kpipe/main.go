// Command kpipe runs kpipe pipelines: Kafka backup, restore and
// point-in-time recovery built from source, transform and sink plugins that
// each run as their own process.
//
// Exit codes: 0 success; 1 the run failed; 2 bad input (flags, pipeline
// file, plugin parameters, a plugin that cannot be found); 3 stopped by
// SIGINT or SIGTERM after saving its checkpoint.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kpipe/kpipe/internal/lean"
	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/storage"
)

// Exit codes.
const (
	exitOK          = 0
	exitFailed      = 1
	exitBadInput    = 2
	exitInterrupted = 3
)

// usageError marks bad input: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func badInput(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// errInterrupted marks a run stopped by a signal: exit code 3.
var errInterrupted = errors.New("stopped by signal; the checkpoint holds the last durable positions, run again to resume")

func main() {
	lean.Release()
	ctx, stop := signalContext()
	defer stop()
	os.Exit(run(ctx, os.Args[1:]))
}

// signalContext is cancelled by the first SIGINT or SIGTERM (a graceful
// stop); a second one exits at once.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-ch
		cancel()
		<-ch
		fmt.Fprintln(os.Stderr, "kpipe: second signal, exiting now")
		os.Exit(130)
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}

func run(ctx context.Context, args []string) int {
	root, g := newRoot()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	code := exitFailed
	var ue usageError
	switch {
	case errors.As(err, &ue):
		code = exitBadInput
	case errors.Is(err, errInterrupted):
		code = exitInterrupted
	}
	if g.logFormat == "json" {
		g.logger().Error("kpipe: "+err.Error(), "exit_code", code)
	} else {
		fmt.Fprintln(os.Stderr, "kpipe: "+err.Error())
	}
	return code
}

// globals are the flags every command has.
type globals struct {
	pluginDir string
	mtls      bool
	logLevel  string
	logFormat string
	format    string
}

func (g *globals) logger() *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if g.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func newRoot() (*cobra.Command, *globals) {
	g := &globals{}
	root := &cobra.Command{
		Use:   "kpipe",
		Short: "Kafka backup, restore and point-in-time recovery as plugin pipelines",
		Long: `kpipe runs pipelines of plugins (source → transforms → sink), each plugin
its own process. Its verbs back up Kafka topics to Arrow segments and restore
them, whole or for a time window, to any Kafka cluster.

Exit codes: 0 success; 1 the run failed; 2 bad input (flags, pipeline file,
plugin parameters, missing plugin); 3 stopped by SIGINT/SIGTERM after saving
the checkpoint (run again to resume).

Telemetry: --metrics-addr serves Prometheus metrics; with
OTEL_EXPORTER_OTLP_ENDPOINT set, metrics and traces (a span per run, per
partition, and per batch in each plugin process) go out with OTLP, as the
standard OTEL_* environment variables say.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if g.format == "yaml" && cmd.Name() != "validate-restore" {
				return badInput("--format yaml: only validate-restore prints YAML; use text or json")
			}
			if g.format != "text" && g.format != "json" && g.format != "yaml" {
				return badInput("--format %q: use text or json (or yaml, for validate-restore)", g.format)
			}
			if g.logFormat != "text" && g.logFormat != "json" {
				f := g.logFormat
				g.logFormat = "text"
				return badInput("--log-format %q: use text or json", f)
			}
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
				return badInput("--log-level %q: use debug, info, warn or error", g.logLevel)
			}
			slog.SetDefault(g.logger())
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.pluginDir, "plugin-dir", "", "folder holding the kpipe-plugin-NAME binaries (default: the plugins folder beside kpipe, else bin/plugins; a pipeline file's plugin_dir comes before the default)")
	pf.BoolVar(&g.mtls, "plugin-mtls", false, "secure every plugin link with mutual TLS (certificates made per run); costs throughput on the data path")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level on stderr: debug, info, warn or error")
	pf.StringVar(&g.logFormat, "log-format", "text", "log format on stderr: text, or json (one object per line, the final error included, with its exit_code)")
	pf.StringVar(&g.format, "format", "text", "report format on stdout: text or json (validate-restore: text, json or yaml)")
	root.Version = versionLine()
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(newRunCmd(g), newPluginsCmd(g), newBackupCmd(g), newRestoreCmd(g), newListCmd(g), newDescribeCmd(g), newValidateCmd(g), newValidateRestoreCmd(g), newOffsetResetCmd(g), newThreePhaseRestoreCmd(g), newVersionCmd(g))
	return root, g
}

// versionLine is what kpipe --version prints.
func versionLine() string {
	return fmt.Sprintf("kpipe %s (plugin protocol %d, backup format %d, %s)", sdk.Version, sdk.ProtocolVersion, storage.FormatVersion, runtime.Version())
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print kpipe's version, plugin protocol and backup format",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.format == "json" {
				return writeJSON(cmd.OutOrStdout(), map[string]any{"version": sdk.Version, "plugin_protocol": sdk.ProtocolVersion,
					"backup_format": storage.FormatVersion, "go": runtime.Version()})
			}
			fmt.Fprintln(cmd.OutOrStdout(), versionLine())
			return nil
		},
	}
}
