package pipelines

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/kpipe/kpipe/internal/fuzzseed"
)

// writeYAML writes a config for a test to read; with the fuzz seeds being
// written, it also keeps it as a seed of both config fuzz targets.
func writeYAML(t *testing.T, text string) string {
	t.Helper()
	if os.Getenv(fuzzseed.Env) == "1" {
		name := fmt.Sprintf("%x", sha256.Sum256([]byte(text)))[:16]
		fuzzseed.Write(t, "FuzzLoadBackup", name, []byte(text))
		fuzzseed.Write(t, "FuzzLoadRestore", name, []byte(text))
	}
	path := filepath.Join(t.TempDir(), "backup.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLoadBackupReadsEveryKey: each key of a backup config lands in the
// options (a key read and ignored would leave its field at zero), in both
// storage shapes.
func TestLoadBackupReadsEveryKey(t *testing.T) {
	t.Setenv("KPIPE_TEST_BROKER", "broker-1:9092")
	t.Setenv("KPIPE_TEST_PASSWORD", "pass word")
	cases := []struct {
		name, yaml string
		want       BackupOptions
	}{{
		name: "filesystem",
		yaml: `mode: backup
backup_id: daily
source:
  bootstrap_servers: ["${KPIPE_TEST_BROKER}", broker-2:9092]
  topics:
    include: ["orders-*", payments]
    exclude: [orders-tmp]
  security_protocol: SASL_SSL
  sasl_mechanism: SCRAM-SHA-512
  sasl_username: backup
  sasl_password: ${KPIPE_TEST_PASSWORD}
  sasl_password_file: /etc/pw
  sasl_oauthbearer_token: tok
  sasl_oauthbearer_token_file: /etc/tok
  ssl_ca_location: /etc/ca.pem
  ssl_certificate_location: /etc/c.pem
  ssl_key_location: /etc/k.pem
  ssl_endpoint_identification: false
storage:
  backend: filesystem
  path: /backups
  encryption_key_env: BACKUP_KEY
backup:
  compression: lz4
  compression_level: 5
  segment_max_bytes: 1048576
  segment_max_records: 1000
  segment_max_interval_ms: 4000
  checkpoint_interval: 3s
  continuous: true
  include_internal_topics: true
  consumer_group_snapshot: true
  isolation_level: read_uncommitted
  max_broker_outage: 2m
`,
		want: BackupOptions{BackupID: "daily", BootstrapServers: []string{"broker-1:9092", "broker-2:9092"},
			Topics: []string{"orders-*", "payments"}, ExcludeTopics: []string{"orders-tmp"}, Path: "/backups",
			Security: Security{Protocol: "SASL_SSL", Mechanism: "SCRAM-SHA-512", Username: "backup", Password: "pass word", PasswordFile: "/etc/pw",
				Token: "tok", TokenFile: "/etc/tok", CALocation: "/etc/ca.pem", CertLocation: "/etc/c.pem", KeyLocation: "/etc/k.pem",
				SkipEndpointIdentification: true},
			Store:       StoreOptions{EncryptionKeyEnv: "BACKUP_KEY"},
			Compression: "lz4", CompressionLevel: 5, SegmentMaxBytes: 1048576, SegmentMaxRecords: 1000,
			SegmentMaxInterval: 3 * time.Second, Continuous: true, IncludeInternalTopics: true, ConsumerGroupSnapshot: true,
			IsolationLevel: "read_uncommitted", MaxBrokerOutage: 2 * time.Minute},
	}, {
		name: "s3 with flat keys",
		yaml: `mode: backup
backup_id: b
source: {bootstrap_servers: [k:9092], topics: {include: [t]}}
storage:
  backend: s3
  bucket: my-backups
  region: us-west-2
  prefix: /production/
  endpoint: http://127.0.0.1:9000
backup:
  stop_at_current_offsets: true
  segment_max_interval_ms: 60000
`,
		want: BackupOptions{BackupID: "b", BootstrapServers: []string{"k:9092"}, Topics: []string{"t"},
			Path: "s3://my-backups/production", Store: StoreOptions{S3Region: "us-west-2", S3Endpoint: "http://127.0.0.1:9000"},
			SegmentMaxInterval: DefaultCheckpointInterval},
	}, {
		name: "s3 block",
		yaml: `mode: backup
backup_id: b
source:
  bootstrap_servers: [k:9092]
  topics: [t, u]
  security:
    security_protocol: SSL
    ssl_ca_location: /ca.pem
    ssl_endpoint_identification: true
storage:
  type: s3
  s3:
    bucket: dr
    region: eu-west-1
    endpoint: http://minio:9000
    force_path_style: true
    prefix: kafka
    profile: backup
  encryption_key_file: /etc/kpipe/key
backup:
  continuous: false
`,
		want: BackupOptions{BackupID: "b", BootstrapServers: []string{"k:9092"}, Topics: []string{"t", "u"},
			Security: Security{Protocol: "SSL", CALocation: "/ca.pem"},
			Path:     "s3://dr/kafka", Store: StoreOptions{S3Region: "eu-west-1", S3Endpoint: "http://minio:9000", S3ForcePathStyle: true,
				S3Profile: "backup", EncryptionKeyFile: "/etc/kpipe/key"},
			SegmentMaxInterval: DefaultCheckpointInterval},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := LoadBackup(writeYAML(t, c.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("options\n%+v\nwant\n%+v", got, c.want)
			}
		})
	}
}

// TestABackupConfigBecomesItsPipeline: the options reach the plugins'
// parameters.
func TestABackupConfigBecomesItsPipeline(t *testing.T) {
	o := BackupOptions{BackupID: "daily", BootstrapServers: []string{"k:9092"}, Topics: []string{"orders-*"}, ExcludeTopics: []string{"orders-tmp"},
		Path: "/backups", Compression: "lz4", CompressionLevel: 5, SegmentMaxBytes: 1 << 20, SegmentMaxRecords: 1000,
		SegmentMaxInterval: 3 * time.Second, Continuous: true, IncludeInternalTopics: true, ConsumerGroupSnapshot: true, IsolationLevel: "read_uncommitted", MaxBrokerOutage: 2 * time.Minute,
		Security: Security{Protocol: "SASL_SSL", Mechanism: "OAUTHBEARER", TokenFile: "/t", CALocation: "/ca", SkipEndpointIdentification: true}}
	p := Backup("backup", o)
	params := func(raw map[string]json.RawMessage) map[string]any {
		out := map[string]any{}
		for k, v := range raw {
			var x any
			json.Unmarshal(v, &x)
			out[k] = x
		}
		return out
	}
	src, sink := params(p.Source.Params), params(p.Sink.Params)
	wantSrc := map[string]any{"bootstrap_servers": []any{"k:9092"}, "topics": []any{"orders-*"}, "exclude_topics": []any{"orders-tmp"},
		"continuous": true, "include_internal_topics": true, "consumer_group_snapshot": true, "isolation_level": "read_uncommitted", "max_broker_outage": "2m0s",
		"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER", "sasl_oauthbearer_token_file": "/t", "ssl_ca_location": "/ca", "ssl_endpoint_identification": false}
	wantSink := map[string]any{"path": "/backups", "backup_id": "daily", "compression": "lz4", "compression_level": float64(5),
		"segment_max_bytes": float64(1 << 20), "segment_max_records": float64(1000), "flush_interval": "3s"}
	if p.Source.Plugin != "kafka" || !reflect.DeepEqual(src, wantSrc) {
		t.Errorf("source %s %v\nwant kafka %v", p.Source.Plugin, src, wantSrc)
	}
	if p.Sink.Plugin != "fs" || !reflect.DeepEqual(sink, wantSink) {
		t.Errorf("sink %s %v\nwant fs %v", p.Sink.Plugin, sink, wantSink)
	}
}

// TestBadBackupConfigsNameTheKeyAndTheFix pins the error of each mistake.
func TestBadBackupConfigsNameTheKeyAndTheFix(t *testing.T) {
	const head = "mode: backup\nbackup_id: b\nsource: {bootstrap_servers: [k:9092], topics: [t]}\nstorage: {backend: filesystem, path: /b}\n"
	cases := []struct{ name, yaml, want string }{
		{"unknown key", head + "backup:\n  segment_max_byte: 100\n", `:6: backup.segment_max_byte: unknown key; did you mean segment_max_bytes?`},
		{"unknown section", head + "restore:\n  x: 1\n", `:5: restore: unknown key; known keys here: backup, backup_id, mode, source, storage`},
		{"seconds as milliseconds", head + "backup:\n  segment_max_interval_ms: 30\n", `:6: backup.segment_max_interval_ms: is in milliseconds: 30 is 30ms; for 30 seconds write 30000`},
		{"a unit where milliseconds go", head + "backup:\n  segment_max_interval_ms: 30s\n", `:6: backup.segment_max_interval_ms: "30s" is not a whole number`},
		{"a number where a duration goes", head + "backup:\n  checkpoint_interval: 30\n", `:6: backup.checkpoint_interval: "30" has no unit; write it with one, such as 30s or 30ms`},
		{"negative size", head + "backup:\n  segment_max_bytes: -5\n", `:6: backup.segment_max_bytes: must be positive, got -5`},
		{"no backup id", "mode: backup\nsource: {bootstrap_servers: [k:9092], topics: [t]}\nstorage: {backend: filesystem, path: /b}\n", `: backup_id: is missing; name the backup, such as backup_id: daily`},
		{"unset variable", "mode: backup\nbackup_id: ${KPIPE_TEST_UNSET_VAR}\n", `:2: backup_id: ${KPIPE_TEST_UNSET_VAR} is not set in the environment; set it, or write the value`},
		{"restore mode", "mode: restore\n", `:1: mode: is "restore": kpipe backup --config reads a config of mode: backup`},
		{"both modes", head + "backup:\n  continuous: true\n  stop_at_current_offsets: true\n", `:7: backup.stop_at_current_offsets: is true with continuous: true; a backup either stops at the offsets it starts with or follows new records: set one of them`},
		{"s3 key on a folder", "mode: backup\nbackup_id: b\nsource: {bootstrap_servers: [k:9092], topics: [t]}\nstorage: {backend: filesystem, path: /b, bucket: x}\n", `:4: storage.bucket: is for backend: s3, not filesystem`},
		{"unknown storage", "mode: backup\nbackup_id: b\nsource: {bootstrap_servers: [k:9092], topics: [t]}\nstorage: {backend: gcs}\n", `:4: storage.backend: "gcs" is not a storage kpipe knows; use filesystem or s3`},
		{"compression level out of range", head + "backup:\n  compression_level: 30\n", `:6: backup.compression_level: compression level 30 is out of range for zstd (zstd: 1 to 22, lz4: 1 to 9)`},
		{"a security key twice", "mode: backup\nbackup_id: b\nsource:\n  bootstrap_servers: [k:9092]\n  topics: [t]\n  sasl_username: a\n  security:\n    sasl_username: b\n",
			`:8: source.security.sasl_username: is given twice, also as source.sasl_username; keep one`},
		{"unknown security key", "mode: backup\nbackup_id: b\nsource:\n  bootstrap_servers: [k:9092]\n  topics: [t]\n  security:\n    sasl_pasword: b\n",
			`:7: source.security.sasl_pasword: unknown key; did you mean sasl_password?`},
		{"isolation level", head + "backup:\n  isolation_level: committed\n", `:6: backup.isolation_level: "committed" is not read_committed or read_uncommitted`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			file := writeYAML(t, c.yaml)
			_, err := LoadBackup(file)
			if err == nil {
				t.Fatal("no error")
			}
			if got, want := err.Error(), file+c.want; got != want {
				t.Fatalf("error\n%s\nwant\n%s", got, want)
			}
		})
	}
}
