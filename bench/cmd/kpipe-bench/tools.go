//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/kpipe/kpipe/bench"
)

// Tool names, as the report shows them.
const (
	toolKpipe   = "kpipe"
	toolKpipeS3 = "kpipe-s3"
	toolRef     = "reference"
	toolCeiling = "ceiling"
)

// task is one backup or restore for a tool to do.
type task struct {
	bootstrap string
	topic     string // the topic backed up, or restored from the backup
	gen       bench.Gen
	records   int64  // records of the topic
	dir       string // the backups folder: written by a backup, read by a restore
	backupID  string
	target    string        // restore: the new topic
	window    *bench.Window // restore: only this time window
	merge     bool          // restore: every partition into partition 0
	// repartition, above 0, spreads a restore's records over that many
	// partitions by key (murmur2).
	repartition int32
	// segmentRecords, when set, makes a backup cut a segment every that
	// many records.
	segmentRecords int64
	scratch        string  // a folder of the run's own: configs, state
	sec            *secure // set: over the SASL_SSL listener
}

// secure is the broker's SASL_SSL listener and a SCRAM-SHA-512 user of it.
type secure struct {
	bootstrap, user, password, passwordFile, ca string
}

// readSecure reads the KEY=VALUE lines of `scripts/kafka.sh security`.
func readSecure(file string) (*secure, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	kv := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = v
		}
	}
	s := &secure{bootstrap: kv["SASL_SSL_BOOTSTRAP"], user: kv["SCRAM_USER"], passwordFile: kv["SCRAM_PASSWORD_FILE"], ca: kv["CA"]}
	if s.bootstrap == "" || s.user == "" || s.passwordFile == "" || s.ca == "" {
		return nil, errors.New("want SASL_SSL_BOOTSTRAP, SCRAM_USER, SCRAM_PASSWORD_FILE and CA")
	}
	pw, err := os.ReadFile(s.passwordFile)
	if err != nil {
		return nil, err
	}
	s.password = strings.TrimSpace(string(pw))
	return s, nil
}

// kpipeFlags are kpipe's flags of the broker t reaches.
func (t task) kpipeFlags() []string {
	if t.sec == nil {
		return []string{"--bootstrap-servers", t.bootstrap}
	}
	return []string{"--bootstrap-servers", t.sec.bootstrap, "--security-protocol", "SASL_SSL", "--sasl-mechanism", "SCRAM-SHA-512",
		"--sasl-username", t.sec.user, "--sasl-password-file", t.sec.passwordFile, "--ssl-ca-location", t.sec.ca}
}

// refYAML is the reference tool's bootstrap_servers line and security
// block of the broker t reaches, indented under source or target.
func (t task) refYAML() string {
	if t.sec == nil {
		return fmt.Sprintf("  bootstrap_servers: [%q]\n", t.bootstrap)
	}
	return fmt.Sprintf("  bootstrap_servers: [%q]\n  security:\n    security_protocol: SASL_SSL\n    sasl_mechanism: SCRAM-SHA512\n"+
		"    sasl_username: %q\n    sasl_password: %q\n    ssl_ca_location: %q\n", t.sec.bootstrap, t.sec.user, t.sec.password, t.sec.ca)
}

// outcome is what a finished run reports about its work.
type outcome struct {
	records  int64            // records the tool says it backed up or restored (-1: not said)
	segments int64            // backup segments written, or read by a restore (-1: not said)
	report   map[string]int64 // figures of the tool's own report
}

// prepared is a command ready to run and how to read its result.
type prepared struct {
	cmd  *exec.Cmd
	read func(stdout, stderr []byte) (outcome, error)
}

// tool runs backups, restores and deep validations.
type tool interface {
	name() string
	backup(t task) (prepared, error)
	restore(t task) (prepared, error)
	// validate reads a backup whole and checks every record; errNoValidate
	// for a tool that has no such command.
	validate(t task) (prepared, error)
}

// errNoValidate is the validate of a tool that cannot validate backups.
var errNoValidate = errors.New("no validate command")

// kpipeTool runs bin/kpipe.
type kpipeTool struct{ bin, pluginDir string }

func (k kpipeTool) name() string { return toolKpipe }

func (k kpipeTool) command(t task, args ...string) *exec.Cmd {
	cmd := exec.Command(k.bin, append([]string{"--plugin-dir", k.pluginDir, "--format", "json"}, args...)...)
	cmd.Dir = t.scratch
	return cmd
}

func (k kpipeTool) backup(t task) (prepared, error) {
	state := filepath.Join(t.scratch, "state")
	if t.segmentRecords > 0 {
		file := filepath.Join(t.scratch, "backup.hcl")
		if err := os.WriteFile(file, []byte(kpipeBackupHCL(t, state, k.pluginDir)), 0o644); err != nil {
			return prepared{}, err
		}
		return prepared{cmd: k.command(t, "run", file, "--state-dir", state), read: readKpipeRun}, nil
	}
	cmd := k.command(t, append([]string{"backup", "--topics", t.topic,
		"--path", t.dir, "--backup-id", t.backupID, "--state-dir", state}, t.kpipeFlags()...)...)
	return prepared{cmd: cmd, read: readKpipeBackup}, nil
}

// kpipeBackupHCL is a pipeline file backing the topic up into segments of
// t.segmentRecords records (and a byte limit that does not bind first).
func kpipeBackupHCL(t task, state, pluginDir string) string {
	return fmt.Sprintf(`# Written by kpipe-bench: a backup cut into many segments.
state_dir  = %q
plugin_dir = %q

pipeline "backup" {
  source "kafka" {
    bootstrap_servers = [%q]
    topics            = [%q]
  }
  sink "fs" {
    path                = %q
    backup_id           = %q
    compression         = "zstd"
    segment_max_bytes   = %d
    segment_max_records = %d
  }
}
`, state, pluginDir, t.bootstrap, t.topic, t.dir, t.backupID, segmentBytes(t.segmentRecords), t.segmentRecords)
}

// segmentBytes is the byte limit set beside a record limit: half again the
// payload of that many records, so that the record limit cuts first.
func segmentBytes(records int64) int64 { return records * int64(bench.RecordSize) * 3 / 2 }

func (k kpipeTool) restore(t task) (prepared, error) {
	args := append([]string{"restore", "--path", t.dir, "--backup-id", t.backupID,
		"--topics", t.topic, "--topic-mapping", t.topic + "=" + t.target, "--state-dir", filepath.Join(t.scratch, "state")}, t.kpipeFlags()...)
	if t.window != nil {
		args = append(args, "--time-window-start", strconv.FormatInt(t.window.Start, 10),
			"--time-window-end", strconv.FormatInt(t.window.End, 10))
	}
	if t.merge {
		var moves []string
		for p := int32(1); p < t.gen.Partitions; p++ {
			moves = append(moves, fmt.Sprintf("%d=0", p))
		}
		args = append(args, "--partition-mapping", strings.Join(moves, ","))
	}
	if t.repartition > 0 {
		args = append(args, "--repartitioning", fmt.Sprintf("%s=murmur2:%d", t.target, t.repartition))
	}
	return prepared{cmd: k.command(t, args...), read: readKpipeRestore}, nil
}

func (k kpipeTool) validate(t task) (prepared, error) {
	cmd := k.command(t, "validate", "--path", t.dir, "--backup-id", t.backupID, "--deep", "--progress", "off")
	return prepared{cmd: cmd, read: readKpipeValidate}, nil
}

func readKpipeValidate(stdout, _ []byte) (outcome, error) {
	var r struct {
		Valid   bool `json:"valid"`
		Checked struct {
			Records  int64 `json:"records"`
			Segments int64 `json:"segments"`
			Bytes    int64 `json:"bytes_read"`
		} `json:"checked"`
	}
	if err := json.Unmarshal(stdout, &r); err != nil {
		return outcome{}, fmt.Errorf("kpipe's JSON report: %w", err)
	}
	if !r.Valid {
		return outcome{}, errors.New("kpipe found the backup invalid")
	}
	return outcome{records: r.Checked.Records, segments: r.Checked.Segments, report: map[string]int64{"bytes_read": r.Checked.Bytes}}, nil
}

// kpipeReport is the part of kpipe's JSON report (--format json) the
// benchmark reads; fields kpipe does not print stay zero.
type kpipeReport struct {
	RecordsOut int64 `json:"records_out"`
	Plugins    []struct {
		Role    string           `json:"role"`
		Metrics map[string]int64 `json:"metrics"`
	} `json:"plugins"`
}

func (r kpipeReport) metrics(role string) map[string]int64 {
	for _, p := range r.Plugins {
		if p.Role == role {
			return p.Metrics
		}
	}
	return nil
}

func readKpipeBackup(stdout, _ []byte) (outcome, error) {
	var out struct {
		Records *int64      `json:"records_backed_up"`
		Report  kpipeReport `json:"report"`
	}
	if err := json.Unmarshal(stdout, &out); err != nil {
		return outcome{}, fmt.Errorf("kpipe's JSON report: %w", err)
	}
	o := outcome{records: out.Report.RecordsOut, segments: -1, report: out.Report.metrics("sink")}
	if out.Records != nil {
		o.records = *out.Records
	}
	if n, ok := o.report["segments_written"]; ok {
		o.segments = n
	}
	return o, nil
}

func readKpipeRun(stdout, _ []byte) (outcome, error) {
	var out struct {
		Pipelines []kpipeReport `json:"pipelines"`
	}
	if err := json.Unmarshal(stdout, &out); err != nil {
		return outcome{}, fmt.Errorf("kpipe's JSON report: %w", err)
	}
	if len(out.Pipelines) != 1 {
		return outcome{}, fmt.Errorf("kpipe ran %d pipelines, want 1", len(out.Pipelines))
	}
	o := outcome{records: out.Pipelines[0].RecordsOut, segments: -1, report: out.Pipelines[0].metrics("sink")}
	if n, ok := o.report["segments_written"]; ok {
		o.segments = n
	}
	return o, nil
}

func readKpipeRestore(stdout, _ []byte) (outcome, error) {
	var out struct {
		Summary struct {
			Restored *int64 `json:"records_restored"`
		} `json:"summary"`
		Report kpipeReport `json:"report"`
	}
	if err := json.Unmarshal(stdout, &out); err != nil {
		return outcome{}, fmt.Errorf("kpipe's JSON report: %w", err)
	}
	o := outcome{records: out.Report.RecordsOut, segments: -1, report: out.Report.metrics("source")}
	if out.Summary.Restored != nil {
		o.records = *out.Summary.Restored
	}
	if n, ok := o.report["segments_read"]; ok {
		o.segments = n
	}
	return o, nil
}

// kpipeS3Tool runs bin/kpipe with its backups in a bucket of an S3 server:
// the path of a task (a folder) names a prefix of the bucket instead, and
// credentials come from the AWS variables kpipe-bench sets.
type kpipeS3Tool struct {
	kpipeTool
	endpoint, bucket string
	// run names the benchmark run: the server keeps its data across runs,
	// whose folders are numbered alike.
	run string
}

func (k kpipeS3Tool) name() string { return toolKpipeS3 }

// onS3 is t with its backups under a prefix of the bucket named after the
// run and its folder: a backup of its own, as a folder is on disk.
func (k kpipeS3Tool) onS3(t task) task {
	t.dir = fmt.Sprintf("s3://%s/bench/%s%s", k.bucket, k.run, filepath.Base(filepath.Dir(t.dir)))
	return t
}

func (k kpipeS3Tool) flags(p prepared) prepared {
	p.cmd.Args = append(p.cmd.Args, "--s3-endpoint", k.endpoint, "--s3-force-path-style")
	return p
}

func (k kpipeS3Tool) backup(t task) (prepared, error) {
	if t.segmentRecords > 0 {
		return prepared{}, fmt.Errorf("%s: backups of many segments are not benchmarked", toolKpipeS3)
	}
	p, err := k.kpipeTool.backup(k.onS3(t))
	return k.flags(p), err
}

func (k kpipeS3Tool) restore(t task) (prepared, error) {
	p, err := k.kpipeTool.restore(k.onS3(t))
	return k.flags(p), err
}

func (k kpipeS3Tool) validate(t task) (prepared, error) {
	p, err := k.kpipeTool.validate(k.onS3(t))
	return k.flags(p), err
}

// refTool runs the reference tool, OSO kafka-backup, with the settings of
// its example configurations: zstd level 1, no offset headers, no metrics
// server, a snapshot that stops at the end offsets taken at start.
type refTool struct{ bin string }

func (r refTool) name() string { return toolRef }

func (r refTool) command(t task, verb, config string) (*exec.Cmd, error) {
	file := filepath.Join(t.scratch, verb+".yaml")
	if err := os.WriteFile(file, []byte(config), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(r.bin, verb, "--config", file)
	cmd.Dir = t.scratch
	return cmd, nil
}

func (r refTool) backup(t task) (prepared, error) {
	segments := ""
	if t.segmentRecords > 0 {
		segments = fmt.Sprintf("  segment_max_bytes: %d\n  segment_max_records: %d\n", segmentBytes(t.segmentRecords), t.segmentRecords)
	}
	cmd, err := r.command(t, "backup", fmt.Sprintf(`# Written by kpipe-bench.
mode: backup
backup_id: %q
source:
%s  topics:
    include: [%q]
storage:
  backend: filesystem
  path: %q
metrics:
  enabled: false
backup:
  compression: zstd
  compression_level: 1
  stop_at_current_offsets: true
  include_offset_headers: false
%s`, t.backupID, t.refYAML(), t.topic, t.dir, segments))
	if err != nil {
		return prepared{}, err
	}
	return prepared{cmd: cmd, read: func(_, _ []byte) (outcome, error) { return readRefManifest(t.dir, t.backupID) }}, nil
}

// readRefManifest counts the records and segments of a reference backup
// from its manifest.
func readRefManifest(dir, id string) (outcome, error) {
	data, err := os.ReadFile(filepath.Join(dir, id, "manifest.json"))
	if err != nil {
		return outcome{}, fmt.Errorf("reference backup manifest: %w", err)
	}
	var m struct {
		Topics []struct {
			Partitions []struct {
				Segments []struct {
					Records int64 `json:"record_count"`
				} `json:"segments"`
			} `json:"partitions"`
		} `json:"topics"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return outcome{}, fmt.Errorf("reference backup manifest: %w", err)
	}
	var o outcome
	for _, t := range m.Topics {
		for _, p := range t.Partitions {
			for _, s := range p.Segments {
				o.records += s.Records
				o.segments++
			}
		}
	}
	return o, nil
}

// errRefRepartition is why the reference tool has no restore-repartition
// rows: tried by hand, its murmur2 repartitioning restore of a topic of
// 20,000 records into 4 partitions logged that it began repartitioning and
// wrote nothing in the next 60 s; in the benchmark it would use up its
// whole timeout on each shape.
var errRefRepartition = errors.New("not run: the reference tool's repartitioning restore (kafka-backup 0.17.4) wrote nothing in 60 s on a topic of 20,000 records when tried by hand")

func (r refTool) restore(t task) (prepared, error) {
	if t.repartition > 0 {
		return prepared{}, errRefRepartition
	}
	window := ""
	if t.window != nil {
		window = fmt.Sprintf("  time_window_start: %d\n  time_window_end: %d\n", t.window.Start, t.window.End)
	}
	if t.merge {
		window += "  partition_mapping:\n"
		for p := int32(1); p < t.gen.Partitions; p++ {
			window += fmt.Sprintf("    %d: 0\n", p)
		}
	}
	if t.repartition > 0 {
		window += fmt.Sprintf("  repartitioning:\n    %q:\n      strategy: murmur2\n      target_partitions: %d\n", t.target, t.repartition)
	}
	cmd, err := r.command(t, "restore", fmt.Sprintf(`# Written by kpipe-bench.
mode: restore
backup_id: %q
target:
%s  topics:
    include: [%q]
storage:
  backend: filesystem
  path: %q
metrics:
  enabled: false
restore:
  create_topics: true
  topic_mapping:
    %q: %q
%s`, t.backupID, t.refYAML(), t.topic, t.dir, t.topic, t.target, window))
	if err != nil {
		return prepared{}, err
	}
	return prepared{cmd: cmd, read: readRefRestore}, nil
}

func (r refTool) validate(t task) (prepared, error) {
	cmd := exec.Command(r.bin, "validate", "--path", t.dir, "--backup-id", t.backupID, "--deep")
	cmd.Dir = t.scratch
	return prepared{cmd: cmd, read: readRefValidate}, nil
}

// refValidated matches the reference tool's validation summary lines.
var (
	refRecordsValidated = regexp.MustCompile(`Records Validated:\s+(\d+)`)
	refSegmentsChecked  = regexp.MustCompile(`Segments Checked:\s+(\d+)`)
)

func readRefValidate(stdout, _ []byte) (outcome, error) {
	out := stripANSI(stdout)
	if !bytes.Contains(out, []byte("Result: VALID")) {
		return outcome{}, errors.New("the reference tool did not find the backup valid")
	}
	o := outcome{records: -1, segments: -1}
	if m := refRecordsValidated.FindSubmatch(out); m != nil {
		o.records, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	if m := refSegmentsChecked.FindSubmatch(out); m != nil {
		o.segments, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	return o, nil
}

// refRestored matches the reference tool's log line (on stdout) for each
// partition it restored, "Restored T:P -> T2:P (N records, M segments)".
var refRestored = regexp.MustCompile(`Restored \S+ -> \S+ \((\d+) records, (\d+) segments\)`)

func readRefRestore(stdout, _ []byte) (outcome, error) {
	o := outcome{records: -1, segments: -1}
	for _, m := range refRestored.FindAllSubmatch(stripANSI(stdout), -1) {
		n, _ := strconv.ParseInt(string(m[1]), 10, 64)
		s, _ := strconv.ParseInt(string(m[2]), 10, 64)
		if o.records < 0 {
			o.records, o.segments = 0, 0
		}
		o.records += n
		o.segments += s
	}
	return o, nil
}

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

func stripANSI(b []byte) []byte { return ansi.ReplaceAll(b, nil) }

// ceilingTool runs the bare franz-go programs, this binary's ceiling-backup
// and ceiling-restore subcommands.
type ceilingTool struct{ self string }

func (c ceilingTool) name() string { return toolCeiling }

func (c ceilingTool) backup(t task) (prepared, error) {
	cmd := exec.Command(c.self, "ceiling-backup", "--bootstrap", t.bootstrap, "--topic", t.topic,
		"--dir", filepath.Join(t.dir, t.backupID))
	cmd.Dir = t.scratch
	return prepared{cmd: cmd, read: readCeiling}, nil
}

func (c ceilingTool) restore(t task) (prepared, error) {
	if t.window != nil {
		return prepared{}, fmt.Errorf("the restore ceiling has no time window")
	}
	cmd := exec.Command(c.self, "ceiling-restore", "--bootstrap", t.bootstrap, "--topic", t.target,
		"--partitions", strconv.Itoa(int(t.gen.Partitions)), "--records", strconv.FormatInt(t.records, 10),
		"--shape", string(t.gen.Shape), "--base-ms", strconv.FormatInt(t.gen.BaseMs, 10), "--merge="+strconv.FormatBool(t.merge),
		"--repartition", strconv.Itoa(int(t.repartition)))
	cmd.Dir = t.scratch
	return prepared{cmd: cmd, read: readCeiling}, nil
}

func (c ceilingTool) validate(task) (prepared, error) { return prepared{}, errNoValidate }

func readCeiling(stdout, _ []byte) (outcome, error) {
	var r ceilingResult
	if err := json.Unmarshal(bytes.TrimSpace(stdout), &r); err != nil {
		return outcome{}, fmt.Errorf("ceiling's JSON result: %w", err)
	}
	return outcome{records: r.Records, segments: -1}, nil
}
