package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kpipe/kpipe/internal/testkit"
)

// kpipe runs the built binary and returns its exit code, stdout and stderr.
func kpipe(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return kpipeWithin(t, 5*time.Minute, args...)
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "p.hcl")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// lastLine is the error kpipe printed last (logs come before it).
func errorText(stderr string) string {
	i := strings.Index(stderr, "kpipe: ")
	if i < 0 {
		return ""
	}
	return strings.TrimSpace(stderr[i:])
}

func TestBadInputExitsTwoWithAClearError(t *testing.T) {
	cases := []struct {
		name string
		hcl  string
		args []string
		want string
	}{{
		name: "unknown block",
		hcl:  "pipeline \"p\" {\n  source \"kafka\" {}\n  sink \"fs\" {}\n}\nworkflow \"w\" {}\n",
		want: `kpipe: FILE:5,1-9: Unsupported block type; Blocks of type "workflow" are not expected here.`,
	}, {
		name: "unknown block in a pipeline",
		hcl:  "pipeline \"p\" {\n  source \"kafka\" {}\n  sinks \"fs\" {}\n}\n",
		want: `kpipe: FILE:3,3-8: Unsupported block type; Blocks of type "sinks" are not expected here. Did you mean "sink"?`,
	}, {
		name: "missing required parameter",
		hcl:  "pipeline \"p\" {\n  source \"fs\" {\n    path = \"b\"\n    backup_id = \"x\"\n  }\n  sink \"fs\" {\n    path = \"b\"\n  }\n}\n",
		want: "kpipe: pipeline \"p\" has invalid parameters:\n  FILE:6,3-12: sink \"fs\": parameter \"backup_id\": missing required parameter (string): name of the backup in the storage; a run resumes a backup of the same id",
	}, {
		name: "unknown parameter",
		hcl:  "pipeline \"p\" {\n  source \"fs\" {\n    path = \"b\"\n    backup_id = \"x\"\n    window = 5\n  }\n  sink \"fs\" {\n    path = \"b\"\n    backup_id = \"y\"\n  }\n}\n",
		want: "kpipe: pipeline \"p\" has invalid parameters:\n  FILE:5,5-11: source \"fs\": parameter \"window\": unknown parameter; known parameters: path, backup_id, topics, partitions, time_window_start, time_window_end, filter, topic_incarnations, preflight, verify, allow_empty, metadata_only, max_concurrent_partitions, encryption_key_file, encryption_key_env",
	}, {
		name: "epoch seconds in a time window",
		hcl:  "pipeline \"p\" {\n  source \"fs\" {\n    path = \"b\"\n    backup_id = \"x\"\n  }\n  transform \"filter\" {\n    time_window_start = 1731236400\n  }\n  sink \"fs\" {\n    path = \"b\"\n    backup_id = \"y\"\n  }\n}\n",
		want: "kpipe: pipeline \"p\" has invalid parameters:\n  FILE:7,5-22: transform \"filter\": parameter \"time_window_start\": 1731236400 looks like epoch seconds, not milliseconds: read as milliseconds it is 1970-01-21T00:53:56.4Z, as seconds 2024-11-10T11:00:00Z; use 13-digit epoch milliseconds: 1731236400000",
	}, {
		name: "a filter that does not compile",
		hcl:  "pipeline \"p\" {\n  source \"fs\" {\n    path = \"b\"\n    backup_id = \"x\"\n    filter = \"key == b'a' &&\"\n  }\n  sink \"kafka\" {\n    bootstrap_servers = [\"127.0.0.1:1\"]\n  }\n}\n",
		want: "kpipe: pipeline \"p\" has invalid parameters:\n  FILE:5,5-11: source \"fs\": parameter \"filter\": invalid CEL expression at line 1, column 15: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}",
	}, {
		name: "a negative rate limit and a bad repartitioning",
		hcl:  "pipeline \"p\" {\n  source \"fs\" {\n    path = \"b\"\n    backup_id = \"x\"\n  }\n  sink \"kafka\" {\n    bootstrap_servers = [\"127.0.0.1:1\"]\n    rate_limit_records_per_sec = -1\n    repartitioning = { t = \"murmur2\" }\n  }\n}\n",
		want: "kpipe: pipeline \"p\" has invalid parameters:\n  FILE:9,5-19: sink \"kafka\": parameter \"repartitioning\": topic \"t\": \"murmur2\" is not STRATEGY:PARTITIONS, such as murmur2:6\n  FILE:8,5-31: sink \"kafka\": parameter \"rate_limit_records_per_sec\": -1 is not a rate; use a number above 0, or 0 for no limit",
	}, {
		name: "replication factor of zero",
		hcl:  "pipeline \"p\" {\n  source \"fs\" {\n    path = \"b\"\n    backup_id = \"x\"\n  }\n  sink \"kafka\" {\n    bootstrap_servers = [\"127.0.0.1:1\"]\n    replication_factor = -2\n  }\n}\n",
		want: "kpipe: pipeline \"p\" has invalid parameters:\n  FILE:8,5-23: sink \"kafka\": parameter \"replication_factor\": -2 is not a replication factor; use 1 or more, 0 for the source's, or -1 for the broker default",
	}, {
		name: "plugin binary that does not exist",
		hcl:  "pipeline \"p\" {\n  source \"nosuch\" {}\n  sink \"fs\" {}\n}\n",
		want: "kpipe: FILE:2,3-18: pipeline \"p\": source: plugin not found: \"nosuch\": no executable PLUGINS/kpipe-plugin-nosuch (plugins found there: filter, fs, kafka, remap, s3); build it with `make build` or point --plugin-dir at the folder that holds it",
	}, {
		name: "restore with epoch seconds",
		args: []string{"restore", "--path", "b", "--backup-id", "x", "--bootstrap-servers", "127.0.0.1:1", "--time-window-end", "1731250800"},
		want: "kpipe: --time-window-end 1731250800 looks like epoch seconds, not milliseconds: read as milliseconds it is 1970-01-21T00:54:10.8Z, as seconds 2024-11-10T15:00:00Z; use 13-digit epoch milliseconds: 1731250800000",
	}, {
		name: "restore with epoch microseconds",
		args: []string{"restore", "--path", "b", "--backup-id", "x", "--bootstrap-servers", "127.0.0.1:1", "--time-window-start", "1731236400000000"},
		want: "kpipe: --time-window-start 1731236400000000 looks like epoch microseconds, not milliseconds: read as milliseconds it is the year 56830, as microseconds 2024-11-10T11:00:00Z; use 13-digit epoch milliseconds: 1731236400000",
	}, {
		name: "restore with an ISO-8601 time without its zone",
		args: []string{"restore", "--path", "b", "--backup-id", "x", "--bootstrap-servers", "127.0.0.1:1", "--time-window-start", "2024-11-10T10:00:00"},
		want: "kpipe: --time-window-start \"2024-11-10T10:00:00\" has no time zone; add one, such as 2024-11-10T10:00:00Z for UTC",
	}, {
		name: "restore with a time that is neither",
		args: []string{"restore", "--path", "b", "--backup-id", "x", "--bootstrap-servers", "127.0.0.1:1", "--time-window-end", "yesterday"},
		want: "kpipe: --time-window-end \"yesterday\" is neither epoch milliseconds nor an ISO-8601 time such as 2024-11-10T10:00:00Z",
	}, {
		name: "restore with the window's end before its start",
		args: []string{"restore", "--path", "b", "--backup-id", "x", "--bootstrap-servers", "127.0.0.1:1", "--time-window-start", "2024-11-10T14:00:00Z", "--time-window-end", "1731236400000"},
		want: "kpipe: --time-window-end 2024-11-10T11:00:00Z (1731236400000) is before --time-window-start 2024-11-10T14:00:00Z (1731247200000); swap them",
	}, {
		name: "restore reading no partition at a time",
		args: []string{"restore", "--path", "b", "--backup-id", "x", "--bootstrap-servers", "127.0.0.1:1", "--max-concurrent-partitions", "0"},
		want: "kpipe: --max-concurrent-partitions 0: use 1 or more (1: one partition read at a time)",
	}, {
		name: "backup without required flags",
		args: []string{"backup", "--topics", "orders"},
		want: "kpipe: missing required flag(s) --backup-id, --bootstrap-servers, --path; see --help",
	}, {
		name: "unknown flag",
		args: []string{"backup", "--topic", "orders"},
		want: "kpipe: unknown flag: --topic",
	}, {
		name: "no window",
		args: []string{"backup", "--bootstrap-servers", "h:1", "--topics", "t", "--path", "b", "--backup-id", "x", "--window", "0"},
		want: "kpipe: --window 0: must be at least 1",
	}, {
		name: "in-flight budget below 1MiB",
		args: []string{"backup", "--bootstrap-servers", "h:1", "--topics", "t", "--path", "b", "--backup-id", "x", "--in-flight-bytes", "64KiB"},
		want: `kpipe: --in-flight-bytes "64KiB": want a size of at least 1MiB, such as 8MiB or 64MiB`,
	}, {
		name: "in-flight budget that is no size",
		args: []string{"restore", "--bootstrap-servers", "h:1", "--path", "b", "--backup-id", "x", "--in-flight-bytes", "8MB"},
		want: `kpipe: --in-flight-bytes "8MB": want a size of at least 1MiB, such as 8MiB or 64MiB`,
	}, {
		name: "unknown pipeline",
		hcl:  "pipeline \"p\" {\n  source \"kafka\" {}\n  sink \"fs\" {}\n}\n",
		args: []string{"--pipeline", "q"},
		want: `kpipe: --pipeline "q": no such pipeline in FILE`,
	}, {
		name: "bad format",
		args: []string{"plugins", "list", "--format", "yaml"},
		want: `kpipe: --format yaml: only validate-restore prints YAML; use text or json`,
	}, {
		name: "unknown format",
		args: []string{"validate-restore", "--format", "xml"},
		want: `kpipe: --format "xml": use text or json (or yaml, for validate-restore)`,
	}, {
		name: "validate-restore without a config",
		args: []string{"validate-restore"},
		want: `kpipe: missing required flag --config; see --help`,
	}, {
		name: "a URL as the fs path",
		args: []string{"backup", "--bootstrap-servers", "h:1", "--topics", "t", "--path", "gs://bucket/prefix", "--backup-id", "x"},
		want: "kpipe: pipeline \"backup\" has invalid parameters:\n  sink \"fs\": parameter \"path\": \"gs://bucket/prefix\" is a URL; the fs plugin keeps backups in a folder: give its path",
	}, {
		name: "an s3 URL without a bucket",
		args: []string{"restore", "--bootstrap-servers", "h:1", "--path", "s3://", "--backup-id", "x"},
		want: "kpipe: storage s3://: parameter \"path\": \"s3://\" names no bucket: write s3://BUCKET/PREFIX",
	}, {
		name: "an S3 endpoint that is no URL",
		args: []string{"backup", "--bootstrap-servers", "h:1", "--topics", "t", "--path", "s3://b/p", "--backup-id", "x", "--s3-endpoint", "127.0.0.1:9000"},
		want: "kpipe: pipeline \"backup\" has invalid parameters:\n  sink \"s3\": parameter \"endpoint\": \"127.0.0.1:9000\" is not a URL of a server: write http://HOST:PORT or https://HOST",
	}, {
		name: "S3 flags beside a folder",
		args: []string{"backup", "--bootstrap-servers", "h:1", "--topics", "t", "--path", "b", "--backup-id", "x", "--s3-endpoint", "http://127.0.0.1:9000"},
		want: `kpipe: --s3-endpoint applies to an s3:// --path only; --path "b" is a folder`,
	}, {
		name: "a key file that does not exist",
		args: []string{"backup", "--bootstrap-servers", "h:1", "--topics", "t", "--path", "b", "--backup-id", "x", "--encryption-key-file", "/nonexistent/key"},
		want: "kpipe: pipeline \"backup\" has invalid parameters:\n  sink \"fs\": parameter \"encryption_key_file\": open /nonexistent/key: no such file or directory",
	}, {
		name: "an s3 part size below the least S3 takes",
		hcl:  "pipeline \"p\" {\n  source \"kafka\" {\n    bootstrap_servers = [\"h:1\"]\n    topics = [\"t\"]\n  }\n  sink \"s3\" {\n    bucket = \"b\"\n    backup_id = \"x\"\n    part_size = 1048576\n  }\n}\n",
		want: "kpipe: pipeline \"p\" has invalid parameters:\n  FILE:9,5-14: sink \"s3\": parameter \"part_size\": must be at least 5242880 (5 MiB, the least S3 takes), got 1048576",
	}, {
		name: "a backup id the store keeps for itself",
		args: []string{"backup", "--bootstrap-servers", "h:1", "--topics", "t", "--path", "b", "--backup-id", "_backups"},
		want: "kpipe: pipeline \"backup\" has invalid parameters:\n  sink \"fs\": parameter \"backup_id\": \"_backups\" is not a valid backup id: use a name without slashes that starts with a letter or digit, such as \"daily-2024-11-10\"",
	}, {
		name: "malformed topic mapping",
		args: []string{"restore", "--path", "b", "--backup-id", "x", "--bootstrap-servers", "h:1", "--topic-mapping", "orders"},
		want: `kpipe: --topic-mapping "orders": write SOURCE=TARGET`,
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := c.args
			file := ""
			if c.hcl != "" {
				file = writeFile(t, c.hcl)
				args = append([]string{"run", file}, c.args...)
			}
			code, _, stderr := kpipe(t, args...)
			want := strings.ReplaceAll(strings.ReplaceAll(c.want, "FILE", file), "PLUGINS", testkit.PluginDir(t))
			if got := errorText(stderr); got != want {
				t.Errorf("stderr:\n%s\nwant:\n%s", got, want)
			}
			if code != exitBadInput {
				t.Errorf("exit code %d, want %d", code, exitBadInput)
			}
		})
	}
}

func TestUnreachableBrokerFailsWithExitOne(t *testing.T) {
	file := writeFile(t, `pipeline "p" {
  source "kafka" {
    bootstrap_servers = ["127.0.0.1:1"]
    topics            = ["orders"]
    connect_timeout   = "1s"
  }
  sink "fs" {
    path      = "b"
    backup_id = "x"
  }
}
`)
	code, _, stderr := kpipe(t, "run", file)
	if code != exitFailed {
		t.Errorf("exit code %d, want %d", code, exitFailed)
	}
	want := `kpipe: pipeline "p": open source "kafka": open: cannot reach Kafka at 127.0.0.1:1 within 1s`
	if got := errorText(stderr); !strings.HasPrefix(got, want) || !strings.HasSuffix(got, "check bootstrap_servers and that the brokers are up") {
		t.Errorf("stderr:\n%s\nwant it to start with:\n%s", got, want)
	}
}

func TestHelpExplainsEveryCommand(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"run", "--help"}, {"backup", "--help"}, {"restore", "--help"}, {"plugins", "list", "--help"}, {"plugins", "describe", "--help"}} {
		code, stdout, _ := kpipe(t, args...)
		if code != 0 || !strings.Contains(stdout, "Usage:") {
			t.Errorf("kpipe %v: exit %d, output:\n%s", args, code, stdout)
		}
	}
}

func TestPluginsListShowsEveryBuiltIn(t *testing.T) {
	for _, mtls := range []bool{false, true} {
		args := []string{"plugins", "list"}
		if mtls {
			args = append(args, "--plugin-mtls")
		}
		code, stdout, stderr := kpipe(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		checkPluginList(t, stdout)
	}
}

func checkPluginList(t *testing.T, stdout string) {
	t.Helper()
	want := "NAME    VERSION  KINDS        SUMMARY\n" +
		"filter  0.2.0    transform    keeps records by time window, partition and CEL expression\n" +
		"fs      0.2.0    sink,source  backups as Arrow segments on a local file system\n" +
		"kafka   0.2.0    source,sink  Apache Kafka topics (franz-go)\n" +
		"remap   0.2.0    transform    renames topics and moves partitions\n" +
		"s3      0.2.0    sink,source  backups as Arrow segments in S3 or an S3-compatible object store\n"
	if stdout != want {
		t.Fatalf("got:\n%s\nwant:\n%s", stdout, want)
	}
}

// TestLogFormatJSON: with --log-format json every line on stderr is a JSON
// object (plugin logs forwarded by the host included), and so is the final
// error, with its exit code.
func TestLogFormatJSON(t *testing.T) {
	code, _, stderr := kpipe(t, "--log-format", "json", "--log-level", "debug", "plugins", "list")
	if code != 0 {
		t.Fatalf("plugins list: exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	plugins := 0
	for _, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec["level"] == nil || rec["msg"] == nil || rec["time"] == nil {
			t.Fatalf("stderr line %q is not a JSON log record (%v)", l, err)
		}
		if strings.HasPrefix(fmt.Sprint(rec["logger"]), "plugin.") {
			plugins++
		}
	}
	if plugins == 0 {
		t.Errorf("no plugin log among %d JSON lines:\n%s", len(lines), stderr)
	}

	code, _, stderr = kpipe(t, "--log-format", "json", "run", "no-such-file.hcl")
	var rec struct {
		Level    string `json:"level"`
		Msg      string `json:"msg"`
		ExitCode int    `json:"exit_code"`
	}
	last := strings.TrimSpace(stderr)
	last = last[strings.LastIndex(last, "\n")+1:]
	if err := json.Unmarshal([]byte(last), &rec); err != nil || code != 2 || rec.Level != "ERROR" || rec.ExitCode != 2 ||
		!strings.HasPrefix(rec.Msg, "kpipe: ") || !strings.Contains(rec.Msg, "no-such-file.hcl") {
		t.Fatalf("a bad file with --log-format json: exit %d, last line %q (%v)", code, last, err)
	}

	code, _, stderr = kpipe(t, "--log-format", "yaml", "plugins", "list")
	if want := `kpipe: --log-format "yaml": use text or json`; code != 2 || errorText(stderr) != want {
		t.Fatalf("--log-format yaml: exit %d, %q; want exit 2 and %q", code, errorText(stderr), want)
	}
}
