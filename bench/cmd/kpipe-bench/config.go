//go:build linux

package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// config is the benchmark's command line.
type config struct {
	bootstrap    string
	peer         string // the reference tool's binary; empty to skip it
	s3           string // endpoint of an S3 server for kpipe's s3 rows; empty to skip them
	peerNote     string // why the reference tool is skipped
	records      int64
	runs         int
	out          string
	format       string
	only         *regexp.Regexp
	kpipe        string
	pluginDir    string
	work         string
	kafkaVersion string
	partitions   []int32
	pitrSegments int64
	warmups      int
	timeout      time.Duration
	interval     time.Duration
	sec          *secure // the broker's SASL_SSL listener; nil skips the cases over it
}

func parseConfig(args []string) (config, error) {
	var c config
	var secFile string
	var only, parts string
	fs := flag.NewFlagSet("kpipe-bench", flag.ContinueOnError)
	fs.StringVar(&c.bootstrap, "bootstrap", "127.0.0.1:19092", "Kafka broker host:port")
	fs.StringVar(&c.peer, "peer", "", "the reference tool's binary (OSO kafka-backup); its rows are skipped when empty or missing")
	fs.StringVar(&c.s3, "s3", "", "endpoint URL of an S3 server (bucket kpipe, keys kpipe / kpipe-secret, as scripts/s3.sh makes it) for kpipe's backup and restore rows on S3; empty skips them")
	fs.Int64Var(&c.records, "records", 200_000, "records per topic")
	fs.IntVar(&c.runs, "runs", 5, "rounds: each tool runs once per round, in turn")
	fs.StringVar(&c.out, "out", "bench/RESULTS.md", "markdown report to write (empty: none)")
	fs.StringVar(&c.format, "format", "text", "stdout: text (the report's tables) or json (every run's figures)")
	fs.StringVar(&only, "only", "", "run only the cases whose names match this regular expression (e.g. 'backup/fresh/p8', 'pitr', '/p1$')")
	fs.StringVar(&c.kpipe, "kpipe", "bin/kpipe", "the kpipe binary")
	fs.StringVar(&c.pluginDir, "plugin-dir", "bin/plugins", "kpipe's plugin folder")
	fs.StringVar(&c.work, "work", "", "folder for backups and scratch files (default: a new one under $TMPDIR, removed at the end)")
	fs.StringVar(&c.kafkaVersion, "kafka-version", "", "the broker's Kafka version, for the report (default: guessed from its API versions)")
	fs.StringVar(&parts, "partitions", "1,8,100", "partition counts of the topics, comma separated")
	fs.Int64Var(&c.pitrSegments, "pitr-segments", 250, "segments (about) of the backups the PITR cases restore from")
	fs.IntVar(&c.warmups, "warmups", 2, "untimed full reads of each topic before its runs")
	fs.DurationVar(&c.timeout, "timeout", 15*time.Minute, "longest a single tool run may take")
	fs.DurationVar(&c.interval, "interval", 10*time.Millisecond, "how often /proc is sampled during a run")
	fs.StringVar(&secFile, "kafka-security", "", "file of the KEY=VALUE lines `scripts/kafka.sh security` prints for a broker started with KAFKA_SECURE=1: adds the backup and restore cases over its SASL_SSL listener (SCRAM-SHA-512) on the 8-partition topics; empty skips them")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kpipe-bench [flags]\n       kpipe-bench ceiling-backup|ceiling-restore -h\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if secFile != "" {
		var err error
		if c.sec, err = readSecure(secFile); err != nil {
			return c, fmt.Errorf("--kafka-security %s: %w", secFile, err)
		}
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q (flags only; see -h)", fs.Arg(0))
	}
	return c, c.check(only, parts)
}

func (c *config) check(only, parts string) error {
	var err error
	if c.only, err = regexp.Compile(only); err != nil {
		return fmt.Errorf("--only: %w", err)
	}
	if c.partitions, err = parseInt32s(parts); err != nil {
		return fmt.Errorf("--partitions: %w", err)
	}
	switch {
	case c.records < 100:
		return errors.New("--records: want at least 100 (the PITR window is 1% of them)")
	case c.runs < 1:
		return errors.New("--runs: want at least 1")
	case c.format != "text" && c.format != "json":
		return fmt.Errorf("--format %q: want text or json", c.format)
	case c.pitrSegments < 1:
		return errors.New("--pitr-segments: want at least 1")
	}
	if c.kpipe, err = executable(c.kpipe, "--kpipe", "run `make build`"); err != nil {
		return err
	}
	if c.pluginDir, err = filepath.Abs(c.pluginDir); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(c.pluginDir, "kpipe-plugin-fs")); err != nil {
		return fmt.Errorf("--plugin-dir %s holds no kpipe-plugin-fs: run `make build`", c.pluginDir)
	}
	c.checkPeer()
	return nil
}

// checkPeer drops the reference tool, with a note, when it cannot run.
func (c *config) checkPeer() {
	if c.peer == "" {
		c.peerNote = "no --peer given"
		return
	}
	p, err := executable(c.peer, "--peer", "")
	if err != nil {
		c.peer, c.peerNote = "", err.Error()
		return
	}
	c.peer = p
}

// executable returns path made absolute, once it is known to be an
// executable file.
func executable(path, flagName, fix string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(abs)
	if err == nil && (st.IsDir() || st.Mode()&0o111 == 0) {
		err = errors.New("not an executable file")
	}
	if err != nil {
		if fix != "" {
			return "", fmt.Errorf("%s %s: %v; %s", flagName, path, err, fix)
		}
		return "", fmt.Errorf("%s %s: %v", flagName, path, err)
	}
	return abs, nil
}

func parseInt32s(s string) ([]int32, error) {
	var out []int32
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(f), 10, 32)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, int32(n))
	}
	return out, nil
}
