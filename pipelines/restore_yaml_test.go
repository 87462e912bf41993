package pipelines

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/kpipe/kpipe/sdk/restore"
)

// TestLoadRestoreReadsEveryKey: each key of a restore config lands in the
// options (a key read and ignored would leave its field at zero), in both
// shapes of the file.
func TestLoadRestoreReadsEveryKey(t *testing.T) {
	t.Setenv("KPIPE_TEST_PASSWORD", "pass word")
	want := RestoreConfig{DryRun: true, Restore: RestoreOptions{
		Path: "s3://backups/prod", BackupID: "daily",
		Store:            StoreOptions{S3Region: "eu-west-1", S3Endpoint: "http://minio:9000", S3ForcePathStyle: true, EncryptionKeyEnv: "KEY"},
		BootstrapServers: []string{"dr-0:9092", "dr-1:9092"},
		Security:         Security{Protocol: "SASL_SSL", Mechanism: "SCRAM-SHA-512", Username: "restorer", Password: "pass word", CALocation: "/etc/ca.pem"},
		TimeWindowStart:  1731236400000, TimeWindowEnd: 1731250800000,
		Topics: []string{"orders", "payments"}, Partitions: []int32{0, 2},
		TopicMapping:        map[string]string{"orders": "orders_pitr", "payments": "payments_pitr"},
		PartitionMapping:    map[string]int32{"1": 0, "2": 1},
		TopicIncarnations:   map[string]string{"orders": "AAAAAAAAAAAAAAAAAAAAAQ"},
		AllowNonemptyTarget: true, AllowEmpty: true, NoCreateTopics: true, Verify: true, MaxConcurrentPartitions: 4,
		Filter: `!(key in [b"user-17"])`, IncludeOriginalOffsetHeader: true,
		RateLimitRecordsPerSec: 5000, RateLimitBytesPerSec: 1 << 20,
		Repartitioning: map[string]restore.Repartition{"orders_pitr": {Strategy: "murmur2", Partitions: 3}, "payments_pitr": {Strategy: "murmur2", Partitions: 12}},
		Offsets: OffsetOptions{Strategy: "cluster-scan", Groups: []string{"billing", "orders-*"}, Reset: true, Timestamp: 1731240000000,
			Manual: []string{"billing:orders_pitr:0:42", "ops:x:team:payments_pitr:2:0"}, SourceCluster: []string{"prod-0:9092", "prod-1:9092"}},
	}}
	options := `time_window_start: 1731236400000
  time_window_end: "2024-11-10T15:00:00Z"
  topics: [orders, payments]
  source_partitions: [0, 2]
  partition_mapping: {1: 0, 2: 1}
  incarnation: {orders: AAAAAAAAAAAAAAAAAAAAAQ}
  create_topics: false
  max_concurrent_partitions: 4
  dry_run: true
  allow_empty: true
  allow_nonempty_target: true
  verify: true
  filter: '!(key in [b"user-17"])'
  include_original_offset_header: true
  rate_limit_records_per_sec: 5000
  rate_limit_bytes_per_sec: 1048576
  consumer_group_strategy: cluster-scan
  consumer_groups: [billing, orders-*]
  reset_consumer_offsets: true
  offset_reset_timestamp: 2024-11-10T12:00:00Z
  manual_offsets:
    - {group: billing, topic: orders_pitr, partition: 0, offset: 42}
    - {group: "ops:x:team", topic: payments_pitr, partition: 2, offset: 0}
  source_cluster:
    bootstrap_servers: [prod-0:9092, prod-1:9092]
  repartitioning:
    orders_pitr: {strategy: murmur2, target_partitions: 3}
    payments_pitr:
      target_partitions: 12
`
	target := `bootstrap_servers: [dr-0:9092, dr-1:9092]
  security_protocol: SASL_SSL
  sasl_mechanism: SCRAM-SHA-512
  sasl_username: restorer
  sasl_password: ${KPIPE_TEST_PASSWORD}
  ssl_ca_location: /etc/ca.pem
`
	for _, c := range []struct{ name, yaml string }{{
		name: "target and storage at the top, options flat under restore, topic_mapping a map",
		yaml: `mode: restore
backup_id: daily
target:
  ` + target + `storage:
  backend: s3
  bucket: backups
  prefix: prod
  region: eu-west-1
  endpoint: http://minio:9000
  force_path_style: true
  encryption_key_env: KEY
restore:
  topic_mapping:
    orders: orders_pitr
    payments: payments_pitr
  ` + options,
	}, {
		name: "restore.source, restore.target, restore.options, topic_mapping a list",
		yaml: `restore:
  source:
    path: s3://backups/prod
    backup_id: daily
  target:
    ` + strings.ReplaceAll(target, "\n  ", "\n    ") + `  options:
    topic_mapping:
      - source: orders
        target: orders_pitr
      - {source: payments, target: payments_pitr}
    ` + strings.ReplaceAll(options, "\n  ", "\n    ") + `storage:
  type: s3
  s3:
    region: eu-west-1
    endpoint: http://minio:9000
    force_path_style: true
  encryption_key_env: KEY
`,
	}} {
		got, err := LoadRestore(writeYAML(t, c.yaml))
		if err != nil {
			t.Fatalf("%s: %v\n%s", c.name, err, c.yaml)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, got, want)
		}
	}
}

// TestBadRestoreConfigs: each mistake names its key, line and fix.
func TestBadRestoreConfigs(t *testing.T) {
	head := "mode: restore\nbackup_id: b\ntarget: {bootstrap_servers: [k:9092]}\nstorage: {backend: filesystem, path: /b}\nrestore:\n"
	for _, c := range []struct{ yaml, want string }{
		{head + "  time_window_start: 1731236400\n", "FILE:6: restore.time_window_start: 1731236400 looks like epoch seconds, not milliseconds: read as milliseconds it is 1970-01-21T00:53:56.4Z, as seconds 2024-11-10T11:00:00Z; use 13-digit epoch milliseconds: 1731236400000"},
		{head + "  time_window_end: 1731236400000000\n", "FILE:6: restore.time_window_end: 1731236400000000 looks like epoch microseconds, not milliseconds: read as milliseconds it is the year 56830, as microseconds 2024-11-10T11:00:00Z; use 13-digit epoch milliseconds: 1731236400000"},
		{head + "  time_window_start: 1731250800000\n  time_window_end: 1731236400000\n", "FILE:7: restore.time_window_end: is before time_window_start; swap them"},
		{head + "  time_window_start: 2024-11-10T10:00:00\n", "FILE:6: restore.time_window_start: \"2024-11-10T10:00:00\" has no time zone; add one, such as 2024-11-10T10:00:00Z for UTC"},
		{head + "  include_original_offset_header: yes please\n", "FILE:6: restore.include_original_offset_header: \"yes please\" is not true or false"},
		{head + "  consumer_group_strategy: header\n", "FILE:6: restore.consumer_group_strategy: \"header\" is not a strategy; use one of skip, group-snapshot, header-based, timestamp, cluster-scan, manual"},
		{head + "  consumer_groups: [\"a[\"]\n", "FILE:6: restore.consumer_groups: \"a[\" is not a valid glob (syntax error in pattern)"},
		{head + "  reset_consumer_offsets: true\n", "FILE:6: restore.reset_consumer_offsets: is true, but consumer_group_strategy is skip, which sets no offset: pick a strategy (group-snapshot, header-based, timestamp, cluster-scan, manual)"},
		{head + "  offset_reset_timestamp: 1731236400\n", "FILE:6: restore.offset_reset_timestamp: 1731236400 looks like epoch seconds, not milliseconds: read as milliseconds it is 1970-01-21T00:53:56.4Z, as seconds 2024-11-10T11:00:00Z; use 13-digit epoch milliseconds: 1731236400000"},
		{head + "  manual_offsets: {g: 1}\n", "FILE:6: restore.manual_offsets: must be a list of {group: G, topic: T, partition: P, offset: O}, each a target topic's partition and the offset the group resumes at"},
		{head + "  manual_offsets: [{group: g, topic: t, partition: 0}]\n", "FILE:6: restore.manual_offsets: an entry lacks offset; must be a list of {group: G, topic: T, partition: P, offset: O}, each a target topic's partition and the offset the group resumes at"},
		{head + "  manual_offsets: [{group: g, topic: t, partition: 0, offset: -3}]\n", "FILE:6: restore.manual_offsets: offset \"-3\" is not a number from 0 up"},
		{head + "  manual_offsets: [{group: g, topic: t, partition: 0, ofset: 3}]\n", "FILE:6: restore.manual_offsets.ofset: unknown key; did you mean offset?"},
		{head + "  source_cluster: {bootstrap: [a:1]}\n", "FILE:6: restore.source_cluster.bootstrap: unknown key; known keys here: bootstrap_servers"},
		{head + "  repartitioning: murmur2\n", "FILE:6: restore.repartitioning: must be a map of target topics, each {strategy: murmur2, target_partitions: N}"},
		{head + "  repartitioning: {t: {strategy: crc32, target_partitions: 3}}\n", "FILE:6: restore.repartitioning.t.strategy: strategy \"crc32\" is not known; use murmur2 (Kafka's default partitioner)"},
		{head + "  repartitioning: {t: {strategy: murmur2}}\n", "FILE:6: restore.repartitioning.t.target_partitions: is missing; say over how many partitions to spread the topic's records, such as target_partitions: 6"},
		{head + "  repartitioning: {t: {target_partitons: 3}}\n", "FILE:6: restore.repartitioning.t.target_partitons: unknown key; did you mean target_partitions?"},
		{head + "  repartitioning: {t: {target_partitions: 0}}\n", "FILE:6: restore.repartitioning.t.target_partitions: \"0\" is not a number of partitions; use 1 or more"},
		{head + "  rate_limit_records_per_sec: -1\n", "FILE:6: restore.rate_limit_records_per_sec: -1 is not a rate; use a number above 0, or 0 for no limit"},
		{head + "  rate_limit_bytes_per_sec: 1MB\n", "FILE:6: restore.rate_limit_bytes_per_sec: \"1MB\" is not a whole number"},
		{head + "  filter: \"partition == \"\n", "FILE:6: restore.filter: invalid CEL expression at line 1, column 14: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}"},
		{head + "  filter: |\n    key != null &&\n      valu == b\"x\"\n", "FILE:6: restore.filter: invalid CEL expression at line 2, column 3: undeclared reference to 'valu' (did you mean 'value'?)"},
		{head + "  max_concurrent_partitions: 0\n", "FILE:6: restore.max_concurrent_partitions: 0 is not a number of partitions; use 1 or more (1: one partition read at a time)"},
		{head + "  topic_mapping: [{source: a}]\n", "FILE:6: restore.topic_mapping: each item must be {source: NAME, target: NAME}"},
		{head + "  partition_mapping: {one: 0}\n", "FILE:6: restore.partition_mapping: one: 0 is not a partition number = partition number"},
		{head + "  source_partitions: [x]\n", "FILE:6: restore.source_partitions: \"x\" is not a partition number"},
		{head + "  time_window_start: 1\n  options: {time_window_start: 2}\n", "FILE:7: restore.options.time_window_start: is given twice, also as restore.time_window_start; keep one"},
		{head + "  topic_mappings: {a: b}\n", "FILE:6: restore.topic_mappings: unknown key; did you mean topic_mapping?"},
		{"mode: backup\n", "FILE:1: mode: is \"backup\": kpipe restore --config reads a config of mode: restore"},
		{"restore: {source: {path: /b}, target: {bootstrap_servers: [k:9092]}}\n", "FILE: backup_id: is missing; name the backup to restore, such as backup_id: daily"},
		{"backup_id: b\nstorage: {backend: filesystem, path: /b}\nrestore: {}\n", "FILE: target.bootstrap_servers: is missing; list the target cluster's brokers, such as [\"kafka-dr-0:9092\"]"},
		{"backup_id: b\ntarget: {bootstrap_servers: [k:9092]}\nstorage: {backend: filesystem, path: /b}\nrestore: {source: {path: /c}}\n", "FILE:3: storage.path: is given with restore.source.path; say where the backups are in one of them"},
	} {
		file := writeYAML(t, c.yaml)
		_, err := LoadRestore(file)
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("%q: error %v, want a *ConfigError", c.yaml, err)
			continue
		}
		if got := strings.ReplaceAll(err.Error(), file, "FILE"); got != c.want {
			t.Errorf("%q:\n got %s\nwant %s", c.yaml, got, c.want)
		}
	}
}
