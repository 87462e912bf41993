package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kpipe/kpipe/core/checkpoint"
	"github.com/kpipe/kpipe/core/config"
	"github.com/kpipe/kpipe/core/engine"
	"github.com/kpipe/kpipe/core/host"
	"github.com/kpipe/kpipe/core/plugin"
	"github.com/kpipe/kpipe/core/telemetry"
	"github.com/kpipe/kpipe/pipelines"
	"github.com/kpipe/kpipe/sdk/celexpr"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/record"
	"github.com/kpipe/kpipe/sdk/restore"
)

func (g *globals) host(fileDir string) *host.Host {
	dir := g.pluginDir
	if dir == "" {
		dir = fileDir
	}
	if dir == "" {
		dir = host.DefaultDir()
	}
	return &host.Host{Dir: dir, Logger: g.logger(), MTLS: g.mtls}
}

// runOpts are the flags of commands that run pipelines.
type runOpts struct {
	stateDir      string
	fresh         bool
	failFast      bool
	metricsAddr   string
	window        int
	inFlightBytes string
	metrics       *telemetry.Exporter // exporting while the command runs
	progressMode  string
	progress      *progress // showing progress while the command runs
}

// close stops what engine started.
func (o *runOpts) close() {
	o.progress.stop()
	if o.metrics != nil {
		o.metrics.Close()
	}
}

func (o *runOpts) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.stateDir, "state-dir", "", "folder for checkpoints (default .kpipe/state; a pipeline file's state_dir comes before the default)")
	cmd.Flags().StringVar(&o.metricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://HOST:PORT/metrics while the command runs (records and bytes per partition, retries, failures, plugin counters); empty: off")
	cmd.Flags().BoolVar(&o.failFast, "fail-fast", false, "end the run at the first source partition that fails for good, instead of letting the other partitions finish")
	cmd.Flags().BoolVar(&o.fresh, "fresh", false, "run from the start, ignoring the pipeline's checkpoint (also after it finished); a backup still continues after what its storage holds")
	cmd.Flags().IntVar(&o.window, "window", engine.DefaultWindow, "most batches in flight between source and sink")
	cmd.Flags().StringVar(&o.progressMode, "progress", progressAuto, "progress on stderr: tty (a line redrawn every second: records durable, bytes, rate, lag, and for a snapshot partitions done and an ETA), json (the same as a JSON line every 5s), auto (tty on a terminal, else json) or off; a last report when the run ends")
	cmd.Flags().StringVar(&o.inFlightBytes, "in-flight-bytes", "8MiB", "most decompressed batch bytes in flight between source and sink (one batch may cross it); bounds memory, and the kafka source sizes its fetches from it. Bytes, or with KiB, MiB or GiB")
}

func (o *runOpts) engine(h *host.Host, g *globals, fileStateDir string) (engine.Options, error) {
	dir := o.stateDir
	if dir == "" {
		dir = fileStateDir
	}
	if dir == "" {
		dir = ".kpipe/state"
	}
	if o.window <= 0 {
		return engine.Options{}, badInput("--window %d: must be at least 1", o.window)
	}
	n, err := parseSize(o.inFlightBytes)
	if err != nil || n < 1<<20 {
		return engine.Options{}, badInput("--in-flight-bytes %q: want a size of at least 1MiB, such as 8MiB or 64MiB", o.inFlightBytes)
	}
	opts := engine.Options{Launcher: h, StateDir: dir, Fresh: o.fresh, FailFast: o.failFast, Window: o.window, InFlightBytes: n, Logger: g.logger()}
	if o.progress, err = startProgress(o.progressMode, os.Stderr); err != nil {
		return engine.Options{}, err
	}
	if o.progress != nil {
		opts.OnMetrics = o.progress.observe
	}
	exp, err := telemetry.Start(context.Background(), o.metricsAddr, g.logger())
	var le *telemetry.ListenError
	if errors.As(err, &le) {
		return engine.Options{}, badInput("--metrics-addr %q: %v; give a free HOST:PORT, such as 127.0.0.1:9464", o.metricsAddr, le.Err)
	}
	if err != nil {
		return engine.Options{}, badInput("%v", err)
	}
	if exp != nil {
		o.metrics = exp
		if exp.Metrics != nil {
			opts.Recorder = exp.Metrics
		}
		if exp.Traces != nil {
			opts.Tracing = exp.Traces
		}
	}
	return opts, nil
}

// parseSize reads a byte count, plain or with a KiB, MiB or GiB suffix.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if rest, ok := strings.CutSuffix(s, suffix); ok {
			s, mult = rest, m
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("not a size: %q", s)
	}
	return n * mult, nil
}

// runPipeline runs one pipeline and classifies its error for the exit code.
func runPipeline(ctx context.Context, p config.Pipeline, opts engine.Options) (*engine.Report, error) {
	rep, err := engine.Run(ctx, p, opts)
	if err != nil {
		var ce *engine.ConfigError
		if errors.As(err, &ce) || errors.Is(err, host.ErrNotFound) || errors.Is(err, host.ErrProtocol) {
			return rep, usageError{err}
		}
		return rep, err
	}
	if rep.Stopped {
		return rep, errInterrupted
	}
	return rep, nil
}

func newRunCmd(g *globals) *cobra.Command {
	var o runOpts
	var only []string
	cmd := &cobra.Command{
		Use:   "run FILE",
		Short: "Run the pipelines of an HCL pipeline file, one after another",
		Long: `Run the pipelines of an HCL pipeline file in the order they are written
(or only those named with --pipeline). Each pipeline resumes from its durable
positions: those its sink records (a backup store), else its checkpoint, which
belongs to the pipeline's plugins and parameters. A pipeline whose checkpoint
says it finished does nothing; --fresh runs it again from the start.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return badInput("run takes one pipeline file, e.g. kpipe run pipelines.example.hcl")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := config.Load(args[0])
			if err != nil {
				return usageError{err}
			}
			for _, name := range only {
				if !slices.ContainsFunc(f.Pipelines, func(p config.Pipeline) bool { return p.Name == name }) {
					return badInput("--pipeline %q: no such pipeline in %s", name, args[0])
				}
			}
			h := g.host(f.PluginDir)
			defer h.Close()
			opts, err := o.engine(h, g, f.StateDir)
			if err != nil {
				return err
			}
			defer o.close()
			var reports []*engine.Report
			for _, p := range f.Pipelines {
				if len(only) > 0 && !slices.Contains(only, p.Name) {
					continue
				}
				rep, err := runPipeline(cmd.Context(), p, opts)
				if rep != nil {
					reports = append(reports, rep)
				}
				if err != nil {
					printReports(cmd.OutOrStdout(), g.format, reports)
					return err
				}
			}
			return printReports(cmd.OutOrStdout(), g.format, reports)
		},
	}
	o.flags(cmd)
	cmd.Flags().StringSliceVar(&only, "pipeline", nil, "run only the named pipeline(s); repeat or separate with commas")
	return cmd
}

// storeFlags declares the flags of the storage --path names.
func storeFlags(f *pflag.FlagSet, o *pipelines.StoreOptions) {
	f.StringVar(&o.S3Endpoint, "s3-endpoint", "", "for an s3:// path: URL of an S3-compatible store, such as http://127.0.0.1:9000 (default: AWS, or AWS_ENDPOINT_URL_S3)")
	f.StringVar(&o.S3Region, "s3-region", "", "for an s3:// path: region of the bucket (default: AWS_REGION or the AWS config, else us-east-1)")
	f.BoolVar(&o.S3ForcePathStyle, "s3-force-path-style", false, "for an s3:// path: address the bucket in the URL path, as most S3-compatible stores want")
	f.StringVar(&o.EncryptionKeyFile, "encryption-key-file", "", "file holding the 256-bit key of encryption at rest, as 64 hex digits or base64 (make one with: openssl rand -hex 32); a backup is encrypted from its first run or never, and its restores need the key")
	f.StringVar(&o.EncryptionKeyEnv, "encryption-key-env", "", "name of an environment variable holding the key of encryption at rest, instead of --encryption-key-file")
	f.StringVar(&o.S3Profile, "s3-profile", "", "for an s3:// path: profile of the shared AWS config and credentials files (default: AWS_PROFILE or default); credentials come from the standard AWS chain")
}

// securityFlags declares the flags of a secured Kafka cluster; which says
// whose it is ("Kafka" or "target Kafka").
func securityFlags(f *pflag.FlagSet, o *pipelines.Security, which string) {
	f.StringVar(&o.Protocol, "security-protocol", "", "how to reach the "+which+" brokers: PLAINTEXT (default), SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS)")
	f.StringVar(&o.Mechanism, "sasl-mechanism", "", "with SASL_*: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER")
	f.StringVar(&o.Username, "sasl-username", "", "user of PLAIN and SCRAM")
	f.StringVar(&o.Password, "sasl-password", "", "password of PLAIN and SCRAM; write '${NAME}' (quoted) to read it from the environment variable NAME, which keeps it out of the process list, or use --sasl-password-file")
	f.StringVar(&o.PasswordFile, "sasl-password-file", "", "file holding the password of PLAIN and SCRAM (a trailing newline is ignored)")
	f.StringVar(&o.Token, "sasl-oauthbearer-token", "", "OAUTHBEARER: a static token (a JWT); '${NAME}' reads it from the environment variable NAME")
	f.StringVar(&o.TokenFile, "sasl-oauthbearer-token-file", "", "OAUTHBEARER: file holding the token, read again at every login, so a token rotated in the file is used from the next one")
	f.StringVar(&o.CALocation, "ssl-ca-location", "", "with SSL and SASL_SSL: PEM file of the CAs that sign the brokers' certificates (default: the system's)")
	f.StringVar(&o.CertLocation, "ssl-certificate-location", "", "mutual TLS: PEM file of this client's certificate (with --ssl-key-location)")
	f.StringVar(&o.KeyLocation, "ssl-key-location", "", "mutual TLS: PEM file of this client's private key (unencrypted)")
	f.Bool("ssl-endpoint-identification", true, "check that each broker's certificate is for the name it is reached by; false skips that check (the certificate must still be signed by a trusted CA)")
}

// readSecurity finishes the settings securityFlags declared: the check of
// names, and secrets given as ${NAME}.
func readSecurity(cmd *cobra.Command, o *pipelines.Security) error {
	check, err := cmd.Flags().GetBool("ssl-endpoint-identification")
	if err != nil {
		return err
	}
	o.SkipEndpointIdentification = !check
	for flag, v := range map[string]*string{"--sasl-password": &o.Password, "--sasl-oauthbearer-token": &o.Token} {
		if *v, err = pipelines.ExpandEnv(*v); err != nil {
			return badInput("%s: %v", flag, err)
		}
	}
	return nil
}

// checkStore refuses S3 flags beside a path that is not an s3:// URL.
func checkStore(cmd *cobra.Command, path string) error {
	if pipelines.IsS3(path) {
		return nil
	}
	for _, name := range []string{"s3-endpoint", "s3-region", "s3-force-path-style", "s3-profile"} {
		if cmd.Flags().Changed(name) {
			return badInput("--%s applies to an s3:// --path only; --path %q is a folder", name, path)
		}
	}
	return nil
}

func printReports(w io.Writer, format string, reports []*engine.Report) error {
	if format == "json" {
		return writeJSON(w, map[string]any{"pipelines": reports})
	}
	for _, r := range reports {
		printReport(w, r)
	}
	return nil
}

func printReport(w io.Writer, r *engine.Report) {
	if f := r.AlreadyFinished; f != nil {
		fmt.Fprintf(w, "pipeline %s: already finished at %s (%d records written); nothing to do, --fresh runs it again\n",
			r.Pipeline, f.At.Format(time.RFC3339), f.RecordsOut)
		return
	}
	status := "done"
	if r.Stopped {
		status = "stopped"
	}
	fmt.Fprintf(w, "pipeline %s: %s in %.1fs\n", r.Pipeline, status, float64(r.DurationMS)/1000)
	if r.ResumedFrom != "" {
		fmt.Fprintf(w, "  resumed from %s positions\n", r.ResumedFrom)
	}
	fmt.Fprintf(w, "  records: %d read, %d written, %d durable, %d dropped by transforms\n", r.RecordsIn, r.RecordsOut, r.RecordsDurable, r.RecordsDropped)
	fmt.Fprintf(w, "  batches: %d read, %d written (%s), at most %d in flight\n", r.BatchesIn, r.BatchesOut, humanBytes(r.BytesOut), r.MaxInFlight)
	if r.Retries > 0 {
		fmt.Fprintf(w, "  retries: %d (retryable partition errors that cleared or failed below)\n", r.Retries)
	}
	for _, f := range r.FailedPartitions {
		fmt.Fprintf(w, "  failed partition %s\n", f)
	}
	if n := len(r.Metadata); n > 0 {
		var topics []string
		for _, t := range r.Metadata[n-1].Topics {
			topics = append(topics, fmt.Sprintf("%s (%d partitions)", t.Name, t.Partitions))
		}
		fmt.Fprintf(w, "  metadata: %d message(s), the last naming %s\n", n, strings.Join(topics, ", "))
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, p := range r.Plugins {
		fmt.Fprintf(tw, "  %s\t%s %s\tpid %d\t%s\n", p.Role, p.Plugin, p.Version, p.Pid, metrics(p.Metrics))
	}
	tw.Flush()
}

func metrics(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newPluginsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "plugins", Short: "Inspect the plugins kpipe can run"}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the plugins found, with version, kinds and summary (starts each once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			h := g.host("")
			defer h.Close()
			infos, err := h.List(cmd.Context())
			if err != nil {
				return badInput("%v (looked in %s; build plugins with `make build` or set --plugin-dir)", err, h.Dir)
			}
			if g.format == "json" {
				return writeJSON(cmd.OutOrStdout(), map[string]any{"plugin_dir": h.Dir, "plugins": infos})
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tKINDS\tSUMMARY")
			for _, i := range infos {
				if i.Error != "" {
					fmt.Fprintf(tw, "%s\t-\t-\terror: %s\n", i.Name, i.Error)
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", i.Name, i.Version, strings.Join(i.Kinds, ","), i.Summary)
			}
			return tw.Flush()
		},
	})
	var kind string
	describe := &cobra.Command{
		Use:   "describe NAME",
		Short: "Show a plugin's parameters: name, type, default, whether required, and what each does",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return badInput("describe takes one plugin name, e.g. kpipe plugins describe fs")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			h := g.host("")
			defer h.Close()
			k, ok := plugin.ParseKind(kind)
			if !ok {
				return badInput("--kind %q: use source, transform or sink", kind)
			}
			inst, err := h.Launch(cmd.Context(), args[0], k)
			if err != nil {
				if errors.Is(err, host.ErrNotFound) || errors.Is(err, host.ErrProtocol) {
					return usageError{err}
				}
				return err
			}
			defer inst.Kill()
			spec := inst.Info()
			if g.format == "json" {
				return writeJSON(cmd.OutOrStdout(), map[string]any{
					"name": spec.Name, "version": spec.Version, "kind": spec.Kind,
					"summary": spec.Summary, "params": paramsJSON(spec.Params),
				})
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%s %s (%s): %s\n\n", spec.Name, spec.Version, spec.Kind, spec.Summary)
			tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PARAMETER\tTYPE\tDEFAULT\tDESCRIPTION")
			for _, p := range spec.Params {
				def := p.Default
				if p.Required {
					def = "(required)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, p.Type, def, p.Description)
			}
			return tw.Flush()
		},
	}
	describe.Flags().StringVar(&kind, "kind", "", "which kind of a plugin that serves several: source, transform or sink (default: its first)")
	cmd.AddCommand(describe)
	return cmd
}

func newBackupCmd(g *globals) *cobra.Command {
	var o runOpts
	var b pipelines.BackupOptions
	var configFile string
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Back up Kafka topics to Arrow segments in a folder or an S3 bucket",
		Long: `Back up Kafka topics (names or globs, all partitions) into a backup id under
--path, as the pipeline kafka → fs (a folder) or kafka → s3 (s3://BUCKET/PREFIX). Without --continuous it stops at the end
offsets taken at start. Running it again with the same --backup-id resumes:
it continues after what the backup durably holds.

With --config FILE the backup comes from a YAML file of mode: backup in the
kafka-backup shape (source, storage, backup sections; ${VAR} from the
environment), instead of the flags that describe what to back up.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configFile != "" {
				if err := onlyConfig(cmd, configFlags, "back up"); err != nil {
					return err
				}
				var err error
				if b, err = pipelines.LoadBackup(configFile); err != nil {
					return usageError{err}
				}
			}
			if configFile == "" {
				if err := readSecurity(cmd, &b.Security); err != nil {
					return err
				}
			}
			if err := required(map[string]bool{
				"--bootstrap-servers": len(b.BootstrapServers) > 0, "--topics": len(b.Topics) > 0,
				"--path": b.Path != "", "--backup-id": b.BackupID != "",
			}); err != nil {
				return err
			}
			if err := checkStore(cmd, b.Path); err != nil {
				return err
			}
			h := g.host("")
			defer h.Close()
			opts, err := o.engine(h, g, "")
			if err != nil {
				return err
			}
			defer o.close()
			rep, err := runPipeline(cmd.Context(), pipelines.Backup("backup", b), opts)
			if rep != nil {
				printBackup(cmd.OutOrStdout(), g.format, b, rep)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "YAML file of mode: backup describing the backup (source, storage, backup sections), instead of the flags below up to --segment-max-interval")
	f.StringSliceVar(&b.BootstrapServers, "bootstrap-servers", nil, "Kafka brokers, host:port, comma separated (required)")
	f.StringSliceVar(&b.Topics, "topics", nil, "topic names or globs, comma separated (required)")
	securityFlags(f, &b.Security, "Kafka")
	f.StringVar(&b.Path, "path", "", "where backups are kept: a folder, or s3://BUCKET/PREFIX (required)")
	storeFlags(f, &b.Store)
	f.StringVar(&b.BackupID, "backup-id", "", "name of this backup under --path (required)")
	f.StringVar(&b.Compression, "compression", "zstd", "segment compression: zstd, lz4 or none")
	f.BoolVar(&b.Continuous, "continuous", false, "keep backing up new records until stopped")
	f.BoolVar(&b.ConsumerGroupSnapshot, "consumer-group-snapshot", false, "store every consumer group's committed offsets on the topics with the backup, asked of each group's coordinator beside the end offsets taken at start")
	f.DurationVar(&b.MaxBrokerOutage, "max-broker-outage", 0, "how long the brokers may stay unreachable mid-run before the backup fails with exit 1, what was committed intact; a warning names the broker every 10s meanwhile (0: 5m for a snapshot, unbounded with --continuous; negative: unbounded)")
	f.Int64Var(&b.SegmentMaxBytes, "segment-max-bytes", 0, "commit a segment once it holds this many bytes (0: 64 MiB)")
	f.Int64Var(&b.SegmentMaxRecords, "segment-max-records", 0, "commit a segment once it holds this many records (0: no limit)")
	f.DurationVar(&b.SegmentMaxInterval, "segment-max-interval", 0, "commit a segment at the latest this long after its first record, such as 5s (0: 5s); the most a crash makes the next run read again")
	o.flags(cmd)
	return cmd
}

func printBackup(w io.Writer, format string, b pipelines.BackupOptions, rep *engine.Report) {
	if format == "json" {
		writeJSON(w, map[string]any{"backup_id": b.BackupID, "path": b.Path, "records_backed_up": rep.RecordsDurable, "report": rep})
		return
	}
	fmt.Fprintf(w, "backup %s: %d records backed up to %s\n", b.BackupID, rep.RecordsDurable, b.Path)
	printReport(w, rep)
}

func newRestoreCmd(g *globals) *cobra.Command {
	var o runOpts
	r := pipelines.RestoreOptions{}
	var topicMap, partMap, incarnations, repartitioning []string
	var windowStart, windowEnd, configFile string
	var dryRun bool
	var off offsetFlags
	createTopics := true
	cmd := &cobra.Command{
		Use:   "restore",
		Short: "Restore a backup to Kafka, whole or for a time window (PITR)",
		Long: `Restore a backup to a Kafka cluster as the pipeline fs → kafka
(s3 → kafka for an s3:// --path).
A time window keeps the records whose timestamp t satisfies start <= t <= end
(both bounds inclusive, epoch milliseconds); segments that cannot hold such
records are skipped unread. Missing target topics are created with the
partitions and topic configs of the backup.

A restore is exactly once: it keeps its progress and offset map in a state
file under --state-dir, and a restore stopped or killed at any moment and
run again continues where it stopped, no record twice and none missing. It
must be the only writer of its target partitions: it starts only on empty
ones (unless --allow-nonempty-target), and another producer writing to one
stops it. Merged partitions (--partition-mapping 1=0,2=0) are written one
after the other, lowest source partition first. A restore that finished
says so when run again; --fresh runs it again from the start.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configFile != "" {
				if err := onlyConfig(cmd, restoreConfigFlags, "restore"); err != nil {
					return err
				}
				c, err := pipelines.LoadRestore(configFile)
				if err != nil {
					return usageError{err}
				}
				c.Restore.AllowEmpty = c.Restore.AllowEmpty || r.AllowEmpty
				c.Restore.AllowNonemptyTarget = c.Restore.AllowNonemptyTarget || r.AllowNonemptyTarget
				c.Restore.Verify = c.Restore.Verify || r.Verify
				c.Restore.ReplicationFactor = r.ReplicationFactor
				if cmd.Flags().Changed("max-concurrent-partitions") {
					if r.MaxConcurrentPartitions < 1 {
						return badInput("--max-concurrent-partitions %d: use 1 or more (1: one partition read at a time)", r.MaxConcurrentPartitions)
					}
					c.Restore.MaxConcurrentPartitions = r.MaxConcurrentPartitions
				}
				r, dryRun = c.Restore, dryRun || c.DryRun
			} else if err := restoreFlags(cmd, &r, windowStart, windowEnd, topicMap, partMap, incarnations, repartitioning, createTopics); err != nil {
				return err
			} else if r.Offsets, err = off.options(); err != nil {
				return err
			}
			return runRestore(cmd, g, &o, r, dryRun)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "YAML file of mode: restore describing the restore (target, storage, restore sections; or restore.source, restore.target, restore.options), instead of the flags below that say what to restore")
	f.BoolVar(&dryRun, "dry-run", false, "plan the restore from the backup's index and print the plan (window, topics → targets, partitions, segments and records to read), writing nothing")
	f.StringVar(&r.Path, "path", "", "where backups are kept: a folder, or s3://BUCKET/PREFIX (required)")
	storeFlags(f, &r.Store)
	f.StringVar(&r.BackupID, "backup-id", "", "backup to restore (required)")
	f.BoolVar(&createTopics, "create-topics", true, "create missing target topics with the backup's partitions, configs and replication factor, and add partitions to a target with too few; false fails the restore instead, before writing")
	f.IntVar(&r.MaxConcurrentPartitions, "max-concurrent-partitions", 1, "how many partitions are read from storage at once: while one is restored, the next segment of each of the next ones is read ahead into memory; records are still written one source partition after another, in the same order")
	f.IntVar(&r.ReplicationFactor, "replication-factor", 0, "replication factor of the target topics the restore creates: 0 for the backup's, -1 for the broker default; one the target cluster has too few brokers for fails the restore before writing")
	f.StringSliceVar(&r.BootstrapServers, "bootstrap-servers", nil, "target Kafka brokers, host:port, comma separated (required)")
	securityFlags(f, &r.Security, "target Kafka")
	f.StringSliceVar(&r.Topics, "topics", nil, "backup topics (names or globs) to restore; all when empty")
	f.Int32SliceVar(&r.Partitions, "source-partitions", nil, "backup partitions to restore; all when empty")
	f.StringVar(&windowStart, "time-window-start", "", "restore records with timestamp >= this: epoch milliseconds or an ISO-8601 time with its zone, such as 2024-11-10T10:00:00Z (empty: from the start)")
	f.StringVar(&windowEnd, "time-window-end", "", "restore records with timestamp <= this: epoch milliseconds or an ISO-8601 time with its zone (empty: to the end)")
	f.StringVar(&r.Filter, "filter", "", "CEL expression over topic, partition, offset, timestamp, timestamp_type, key, value and headers: restore only the records of the window for which it is true, such as '!(key in [b\"user-17\", b\"user-42\"])' (every batch of the window is then decoded to evaluate it)")
	f.Int64Var(&r.RateLimitRecordsPerSec, "rate-limit-records-per-sec", 0, "produce at most this many records per second, over the whole restore (0: no limit)")
	f.Int64Var(&r.RateLimitBytesPerSec, "rate-limit-bytes-per-sec", 0, "produce at most this many bytes of records (keys, values and headers as backed up) per second, over the whole restore (0: no limit)")
	f.BoolVar(&r.IncludeOriginalOffsetHeader, "include-original-offset-header", false, "append to each restored record's own headers x-original-offset, x-original-partition and x-original-timestamp: where it was in the backed-up topic (offset, partition, timestamp in epoch milliseconds), as decimal text")
	f.BoolVar(&r.Verify, "verify", false, "before writing, read every segment of the chosen partitions and check it against its checksums (the deep validation of what the restore reads); without it the restore checks before writing that every segment is there with its size and every manifest continuous, and a checksum mismatch found while restoring stops it at once")
	f.BoolVar(&r.AllowEmpty, "allow-empty", false, "let a restore that selects no record succeed (exit 0); else a time window outside the backup's records, or topics and partitions matching none, fail with exit 1")
	f.StringSliceVar(&topicMap, "topic-mapping", nil, "SOURCE=TARGET topic renames, comma separated")
	f.StringSliceVar(&partMap, "partition-mapping", nil, "SOURCE=TARGET partition moves, comma separated (several may merge into one)")
	f.StringSliceVar(&repartitioning, "repartitioning", nil, "TARGET_TOPIC=murmur2:N, comma separated: spread the target topic's records over N partitions by key as Kafka's default partitioner does (each key's records in order in the partition a Kafka producer would pick), records without a key round-robin in source order; --partition-mapping does not apply to it")
	f.BoolVar(&r.AllowNonemptyTarget, "allow-nonempty-target", false, "let the restore start on target partitions that already hold records, appending after them (a restore otherwise writes only to empty ones, so that a rerun tells its own records from others')")
	f.StringSliceVar(&incarnations, "topic-incarnation", nil, "TOPIC=TOPIC_ID: for a topic deleted and re-created during the backup, the incarnation to restore (its topic ID); the latest when not given")
	off.add(f)
	o.flags(cmd)
	return cmd
}

// runRestore restores r (a dry run only plans it) and, when its offsets
// are to be reset, plans and sets them after the data: the three phases of
// three-phase-restore. Each phase done by an earlier run is not done again.
func runRestore(cmd *cobra.Command, g *globals, o *runOpts, r pipelines.RestoreOptions, dryRun bool) error {
	if err := checkStore(cmd, r.Path); err != nil {
		return err
	}
	h := g.host("")
	defer h.Close()
	opts, err := o.engine(h, g, "")
	if err != nil {
		return err
	}
	defer o.close()
	// A damaged partition stops the restore at once: the report then says
	// exactly what was written.
	opts.FailFast = true
	plan, err := planRestore(cmd, g, r)
	if err != nil {
		return err
	}
	if dryRun {
		printPlan(cmd.OutOrStdout(), g.format, r, plan)
		return nil
	}
	p, stateFile := pipelines.WithRestoreState(pipelines.Restore("restore", r), opts.StateDir)
	w := cmd.OutOrStdout()
	var rep *engine.Report
	if o.fresh {
		// The offset plan of the former restore goes with it, and the
		// offsets its execution replaced.
		planFile := pipelines.PlanFile(stateFile)
		for _, f := range []string{stateFile, planFile, restore.RollbackFile(planFile)} {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	} else if st, err := restore.Load(stateFile); err != nil {
		return err
	} else if st != nil && st.Finished != nil {
		rep = &engine.Report{Pipeline: p.Name, AlreadyFinished: &checkpoint.Finished{At: *st.Finished, RecordsOut: st.Records()}}
	}
	if rep == nil {
		if g.format != "json" {
			printPlan(w, g.format, r, plan)
		}
		var err error
		rep, err = runPipeline(cmd.Context(), p, opts)
		if err != nil || !r.Offsets.Reset || g.format != "json" {
			if rep != nil {
				printRestore(w, g.format, r, plan, rep, stateFile, nil)
			}
			if err != nil {
				return err
			}
		}
	} else if !r.Offsets.Reset || g.format != "json" {
		printRestore(w, g.format, r, plan, rep, stateFile, nil)
	}
	if !r.Offsets.Reset {
		return nil
	}
	phases, oplan, res, err := resetOffsets(cmd, g, r, opts.StateDir, stateFile)
	p1 := phase{Name: "restore", DurationMS: rep.DurationMS}
	if rep.AlreadyFinished != nil {
		p1.Skipped = "the restore finished in an earlier run"
	}
	phases = append([]phase{p1}, phases...)
	if g.format == "json" {
		printRestore(w, g.format, r, plan, rep, stateFile, map[string]any{"phases": phases, "offset_plan": oplan, "offset_result": res, "offset_plan_file": pipelines.PlanFile(stateFile)})
	} else if oplan != nil {
		printOffsetPhases(w, phases[1:], oplan, res, pipelines.PlanFile(stateFile))
	}
	return err
}

// restoreFlags reads the flags that say what to restore into r.
func restoreFlags(cmd *cobra.Command, r *pipelines.RestoreOptions, windowStart, windowEnd string, topicMap, partMap, incarnations, repartitioning []string, createTopics bool) error {
	if err := readSecurity(cmd, &r.Security); err != nil {
		return err
	}
	if err := required(map[string]bool{
		"--bootstrap-servers": len(r.BootstrapServers) > 0,
		"--path":              r.Path != "", "--backup-id": r.BackupID != "",
	}); err != nil {
		return err
	}
	var err error
	if r.TimeWindowStart, r.TimeWindowEnd, err = timeWindowFlags(windowStart, windowEnd); err != nil {
		return err
	}
	if r.TopicMapping, err = parseMapping("--topic-mapping", topicMap); err != nil {
		return err
	}
	if r.TopicIncarnations, err = parseMapping("--topic-incarnation", incarnations); err != nil {
		return err
	}
	pm, err := parseMapping("--partition-mapping", partMap)
	if err != nil {
		return err
	}
	for k, v := range pm {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			return badInput("--partition-mapping %s=%s: %q is not a partition number", k, v, v)
		}
		if r.PartitionMapping == nil {
			r.PartitionMapping = map[string]int32{}
		}
		r.PartitionMapping[k] = int32(n)
	}
	rs, err := parseMapping("--repartitioning", repartitioning)
	if err != nil {
		return err
	}
	for topic, v := range rs {
		rp, err := restore.ParseRepartition(v)
		if err != nil {
			return badInput("--repartitioning %s=%s: %v", topic, v, err)
		}
		if r.Repartitioning == nil {
			r.Repartitioning = map[string]restore.Repartition{}
		}
		r.Repartitioning[topic] = rp
	}
	if r.MaxConcurrentPartitions < 1 {
		return badInput("--max-concurrent-partitions %d: use 1 or more (1: one partition read at a time)", r.MaxConcurrentPartitions)
	}
	for name, n := range map[string]int64{"--rate-limit-records-per-sec": r.RateLimitRecordsPerSec, "--rate-limit-bytes-per-sec": r.RateLimitBytesPerSec} {
		if n < 0 {
			return badInput("%s %d: use a number above 0, or 0 for no limit", name, n)
		}
	}
	if r.Filter != "" {
		if _, err := celexpr.Compile(r.Filter); err != nil {
			return badInput("--filter: %v", err)
		}
	}
	r.NoCreateTopics = !createTopics
	return nil
}

// planRestore plans r from the backup's index, through its storage plugin.
func planRestore(cmd *cobra.Command, g *globals, r pipelines.RestoreOptions) (*pipelines.RestorePlan, error) {
	st, done, err := (&storeArgs{path: r.Path, store: r.Store}).open(cmd.Context(), cmd, g)
	if err != nil {
		return nil, err
	}
	defer done()
	plan, err := pipelines.PlanRestore(cmd.Context(), st, r)
	if err != nil {
		return nil, storageErr(err)
	}
	return plan, nil
}

// printPlan prints what the restore will read and write: the window, each
// topic → target with partition counts, and what each chosen partition
// holds.
func printPlan(w io.Writer, format string, r pipelines.RestoreOptions, p *pipelines.RestorePlan) {
	if format == "json" {
		writeJSON(w, map[string]any{"backup_id": r.BackupID, "dry_run": true, "plan": p})
		return
	}
	fmt.Fprintf(w, "Restore of backup %s from %s\n", r.BackupID, r.Path)
	fmt.Fprintf(w, "  time window: %s\n", p.WindowText)
	fmt.Fprintf(w, "  to read: %d of %d segments, at most %s records, %s\n", p.SegmentsMatching, p.SegmentsTotal, thousands(p.Records), humanBytes(p.Bytes))
	for _, t := range p.Topics {
		byKey := ""
		if t.Repartitioning != "" {
			byKey = ", records spread over them by key (" + t.Repartitioning + ")"
		}
		fmt.Fprintf(w, "  topic %s → %s: %d partitions (%d in the backup)%s, at most %s records\n", t.Topic, t.Target, t.TargetPartitions, t.Partitions, byKey, thousands(t.Records))
		for _, pp := range t.Chosen {
			target := fmt.Sprint(pp.Target)
			if pp.Target < 0 {
				target = "by key"
			}
			fmt.Fprintf(w, "    partition %d → %s: at most %s records in %d segments\n", pp.Partition, target, thousands(pp.Records), pp.Segments)
		}
	}
}

// printRestore prints the restore's summary: records restored (acknowledged
// by the brokers, in every run of this restore), those skipped outside the
// window, bytes read and duration, then each target partition.
func printRestore(w io.Writer, format string, r pipelines.RestoreOptions, plan *pipelines.RestorePlan, rep *engine.Report, stateFile string, extra map[string]any) {
	s := pipelines.Summarize(rep)
	st, stErr := restore.Load(stateFile)
	if format == "json" {
		out := map[string]any{"backup_id": r.BackupID, "summary": s, "plan": plan, "state_file": stateFile, "report": rep}
		maps.Copy(out, extra)
		if st != nil {
			out["targets"] = pipelines.TargetsOf(st)
		}
		writeJSON(w, out)
		return
	}
	if rep.AlreadyFinished == nil {
		filtered := ""
		if r.Filter != "" {
			filtered = fmt.Sprintf(", %d dropped by the filter", s.Filtered)
		}
		fmt.Fprintf(w, "restore %s: %d records restored, %d skipped outside the time window%s, %s read, in %s\n", r.BackupID, s.Restored, s.Skipped, filtered,
			humanBytes(s.BytesRead), (time.Duration(rep.DurationMS) * time.Millisecond).String())
		switch {
		case stErr != nil:
			fmt.Fprintf(w, "  state: %v\n", stErr)
		case st == nil:
			fmt.Fprintf(w, "  no record was written to the target cluster\n")
		default:
			printTargets(w, st, false)
			fmt.Fprintf(w, "  state and offset map: %s (kpipe describe --restore-state FILE shows it)\n", stateFile)
		}
	}
	printReport(w, rep)
}

// timeWindowFlags reads --time-window-start and --time-window-end: epoch
// milliseconds or ISO-8601 times; empty is no bound.
func timeWindowFlags(start, end string) (int64, int64, error) {
	var bounds [2]int64
	for i, b := range []struct{ flag, v string }{{"--time-window-start", start}, {"--time-window-end", end}} {
		v, err := param.ParseTimeBound(b.v)
		if err != nil {
			return 0, 0, badInput("%s %v", b.flag, err)
		}
		if err := param.CheckEpochMillis(b.flag, v); err != nil {
			return 0, 0, badInput("%s %s", b.flag, err.Message)
		}
		bounds[i] = v
	}
	if bounds[0] >= 0 && bounds[1] >= 0 && bounds[1] < bounds[0] {
		return 0, 0, badInput("--time-window-end %s is before --time-window-start %s; swap them", record.Instant(bounds[1]), record.Instant(bounds[0]))
	}
	return bounds[0], bounds[1], nil
}

// printTargets prints what a restore's state says each target partition
// got, with its offset map when ranges is set; partitions that got nothing
// are counted, not listed.
func printTargets(w io.Writer, st *restore.State, ranges bool) {
	byName := map[string]*restore.Target{}
	for _, t := range st.Targets {
		byName[fmt.Sprintf("%s/%d", t.Topic, t.Partition)] = t
	}
	none := 0
	for _, t := range pipelines.TargetsOf(st) {
		if t.Records == 0 {
			none++
			continue
		}
		fmt.Fprintf(w, "  %s/%d: %s records at offsets %d to %d\n", t.Topic, t.Partition, thousands(t.Records), t.FirstOffset, t.LastOffset)
		if !ranges {
			continue
		}
		for _, r := range byName[fmt.Sprintf("%s/%d", t.Topic, t.Partition)].Ranges {
			sparse := ""
			if r.Sparse() {
				sparse = fmt.Sprintf(" (%s of them, by key)", thousands(r.Count))
			}
			fmt.Fprintf(w, "    %s/%d offsets %d to %d%s → offsets %d to %d\n", r.SourceTopic, r.SourcePartition, r.SourceOffset, r.Last(), sparse,
				r.TargetOffset, r.TargetOffset+r.Count-1)
		}
	}
	switch {
	case none == 1:
		fmt.Fprintf(w, "  1 other partition of the target topics got no records\n")
	case none > 1:
		fmt.Fprintf(w, "  %d other partitions of the target topics got no records\n", none)
	}
}

func required(set map[string]bool) error {
	var missing []string
	for flag, ok := range set {
		if !ok {
			missing = append(missing, flag)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	return badInput("missing required flag(s) %s; see --help", strings.Join(missing, ", "))
}

func parseMapping(flag string, pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, p := range pairs {
		from, to, ok := strings.Cut(p, "=")
		if !ok || from == "" || to == "" {
			return nil, badInput("%s %q: write SOURCE=TARGET", flag, p)
		}
		m[from] = to
	}
	return m, nil
}

// paramJSON is a parameter as `plugins describe --format json` prints it.
type paramJSON struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Required    bool   `json:"required,omitempty"`
	Default     string `json:"default,omitempty"`
	Description string `json:"description"`
}

func paramsJSON(ps []param.Param) []paramJSON {
	out := make([]paramJSON, len(ps))
	for i, p := range ps {
		out[i] = paramJSON{Name: p.Name, Type: p.Type, Required: p.Required, Default: p.Default, Description: p.Description}
	}
	return out
}

// storeFlagNames and securityFlagNames are the flags storeFlags and
// securityFlags define.
var (
	storeFlagNames    = []string{"s3-endpoint", "s3-region", "s3-force-path-style", "s3-profile", "encryption-key-file", "encryption-key-env"}
	securityFlagNames = []string{"security-protocol", "sasl-mechanism", "sasl-username", "sasl-password", "sasl-password-file",
		"sasl-oauthbearer-token", "sasl-oauthbearer-token-file", "ssl-ca-location", "ssl-certificate-location", "ssl-key-location", "ssl-endpoint-identification"}
)

// configFlags are the backup flags a --config file replaces.
var configFlags = slices.Concat([]string{"bootstrap-servers", "topics", "path", "backup-id", "compression", "continuous", "max-broker-outage",
	"consumer-group-snapshot", "segment-max-bytes", "segment-max-records", "segment-max-interval"}, storeFlagNames, securityFlagNames)

// restoreConfigFlags are the restore flags a --config file replaces.
var restoreConfigFlags = slices.Concat([]string{"bootstrap-servers", "path", "backup-id", "topics", "source-partitions", "time-window-start", "filter", "include-original-offset-header", "rate-limit-records-per-sec", "rate-limit-bytes-per-sec", "repartitioning",
	"time-window-end", "topic-mapping", "partition-mapping", "topic-incarnation", "create-topics"}, storeFlagNames, securityFlagNames, offsetFlagNames)

// onlyConfig refuses flags beside --config that the config file replaces.
func onlyConfig(cmd *cobra.Command, flags []string, what string) error {
	for _, name := range flags {
		if f := cmd.Flags().Lookup(name); f != nil && f.Changed {
			return badInput("--%s with --config: the config file says what to %s; give one or the other", name, what)
		}
	}
	return nil
}
