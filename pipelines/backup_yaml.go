package pipelines

import (
	"cmp"
	"strings"
	"time"

	"github.com/kpipe/kpipe/sdk/record"
	"github.com/kpipe/kpipe/sdk/storage"
)

// DefaultCheckpointInterval is the most time between two commits of a
// backup configured in YAML, unless checkpoint_interval says otherwise.
const DefaultCheckpointInterval = 10 * time.Second

// LoadBackup reads a backup config in the kafka-backup YAML shape:
//
//	mode: backup
//	backup_id: daily
//	source:
//	  bootstrap_servers: [broker:9092]
//	  topics: {include: ["orders-*"], exclude: ["orders-tmp"]}
//	  security: {security_protocol: SASL_SSL, sasl_mechanism: SCRAM-SHA-512, ...}  # or the same keys flat
//	storage: {backend: filesystem, path: /backups}   # or backend: s3 with bucket, prefix, ...
//	backup: {compression: zstd, continuous: false, ...}
//
// ${VAR} in a value comes from the environment. A mistake (an unknown key,
// a value of the wrong kind or out of range) is a *ConfigError naming the
// key, its line and the fix.
func LoadBackup(file string) (BackupOptions, error) {
	d, err := readDoc(file, backupSchema)
	if err != nil {
		return BackupOptions{}, err
	}
	var o BackupOptions
	fail := func(key, format string, args ...any) (BackupOptions, error) {
		return BackupOptions{}, d.errorf(d.values[key], key, format, args...)
	}
	switch mode := d.str("mode"); mode {
	case "backup":
	case "":
		return fail("mode", "is missing; write mode: backup")
	default:
		return fail("mode", "is %q: kpipe backup --config reads a config of mode: backup", mode)
	}
	if o.BackupID = d.str("backup_id"); o.BackupID == "" {
		return fail("backup_id", "is missing; name the backup, such as backup_id: daily")
	}
	if err := storage.CheckID(o.BackupID); err != nil {
		return fail("backup_id", "%v", err)
	}
	if o.BootstrapServers = d.strs("source.bootstrap_servers"); len(o.BootstrapServers) == 0 {
		return fail("source.bootstrap_servers", "is missing; list the brokers, such as [\"kafka-0:9092\"]")
	}
	if o.Topics = d.strs("source.topics.include"); len(o.Topics) == 0 {
		return fail("source.topics.include", "is missing; list topic names or globs, such as [\"orders-*\"]")
	}
	o.ExcludeTopics = d.strs("source.topics.exclude")
	if o.Security, err = loadSecurity(d, "source"); err != nil {
		return BackupOptions{}, err
	}
	if o.Path, o.Store, err = loadStorage(d); err != nil {
		return BackupOptions{}, err
	}
	return o, loadBackupSection(d, &o)
}

// loadStorage reads the storage section in either shape: backend with flat
// keys, or type with an s3 block.
func loadStorage(d *doc) (string, StoreOptions, error) {
	var o struct {
		Path  string
		Store StoreOptions
	}
	backend, typ := d.str("storage.backend"), d.str("storage.type")
	if backend != "" && typ != "" && backend != typ {
		return "", StoreOptions{}, d.errorf(d.values["storage.type"], "storage.type", "says %q, storage.backend %q; give one of them", typ, backend)
	}
	s3Keys := []string{"storage.bucket", "storage.region", "storage.prefix", "storage.endpoint", "storage.force_path_style", "storage.profile",
		"storage.s3.bucket", "storage.s3.region", "storage.s3.prefix", "storage.s3.endpoint", "storage.s3.force_path_style", "storage.s3.profile"}
	switch kind := cmp.Or(backend, typ); kind {
	case "filesystem", "fs", "local":
		for _, k := range s3Keys {
			if d.has(k) {
				return "", StoreOptions{}, d.errorf(d.values[k], k, "is for backend: s3, not %s", kind)
			}
		}
		if o.Path = d.str("storage.path"); o.Path == "" {
			return "", StoreOptions{}, d.errorf(nil, "storage.path", "is missing; give the folder backups go to")
		}
	case "s3":
		if d.has("storage.path") {
			return "", StoreOptions{}, d.errorf(d.values["storage.path"], "storage.path", "is for backend: filesystem; give bucket and prefix for s3")
		}
		pick := func(key string) string { return cmp.Or(d.str("storage.s3."+key), d.str("storage."+key)) }
		bucket := pick("bucket")
		if bucket == "" {
			return "", StoreOptions{}, d.errorf(nil, "storage.bucket", "is missing; name the bucket backups go to")
		}
		o.Path = "s3://" + bucket + "/" + strings.Trim(pick("prefix"), "/")
		var err error
		if o.Store, err = loadStoreSettings(d); err != nil {
			return "", StoreOptions{}, err
		}
		return o.Path, o.Store, nil
	case "":
		return "", StoreOptions{}, d.errorf(nil, "storage.backend", "is missing; write backend: filesystem with path, or backend: s3 with bucket")
	default:
		key := "storage.backend"
		if backend == "" {
			key = "storage.type"
		}
		return "", StoreOptions{}, d.errorf(d.values[key], key, "%q is not a storage kpipe knows; use filesystem or s3", kind)
	}
	o.Store.EncryptionKeyFile, o.Store.EncryptionKeyEnv = d.str("storage.encryption_key_file"), d.str("storage.encryption_key_env")
	return o.Path, o.Store, nil
}

// loadStoreSettings reads the storage section's settings beside where the
// backups are: S3 region, endpoint, profile and path style (flat or in the
// s3 block), and the encryption key.
func loadStoreSettings(d *doc) (StoreOptions, error) {
	pick := func(key string) string { return cmp.Or(d.str("storage.s3."+key), d.str("storage."+key)) }
	st := StoreOptions{S3Region: pick("region"), S3Endpoint: pick("endpoint"), S3Profile: pick("profile"),
		EncryptionKeyFile: d.str("storage.encryption_key_file"), EncryptionKeyEnv: d.str("storage.encryption_key_env")}
	for _, k := range []string{"storage.s3.force_path_style", "storage.force_path_style"} {
		v, ok, err := d.bool(k)
		if err != nil {
			return StoreOptions{}, err
		}
		if ok {
			st.S3ForcePathStyle = v
			break
		}
	}
	return st, nil
}

// loadBackupSection reads the backup section.
func loadBackupSection(d *doc, o *BackupOptions) error {
	if c := d.str("backup.compression"); c != "" {
		if _, err := record.ParseCodec(c); err != nil || strings.Contains(c, ":") {
			return d.errorf(d.values["backup.compression"], "backup.compression", "%q is not zstd, lz4 or none", c)
		}
		o.Compression = c
	}
	if lvl, ok, err := d.int("backup.compression_level"); err != nil {
		return err
	} else if ok {
		if _, err := record.Codec(cmp.Or(o.Compression, string(record.Zstd))).WithLevel(int(lvl)); err != nil {
			return d.errorf(d.values["backup.compression_level"], "backup.compression_level", "%v", err)
		}
		o.CompressionLevel = int(lvl)
	}
	for _, f := range []struct {
		key string
		to  *int64
	}{{"backup.segment_max_bytes", &o.SegmentMaxBytes}, {"backup.segment_max_records", &o.SegmentMaxRecords}} {
		v, ok, err := d.int(f.key)
		if err != nil {
			return err
		}
		if ok && v <= 0 {
			return d.errorf(d.values[f.key], f.key, "must be positive, got %d", v)
		}
		*f.to = v
	}
	checkpoint, ok, err := d.duration("backup.checkpoint_interval")
	if err != nil {
		return err
	}
	if !ok {
		checkpoint = DefaultCheckpointInterval
	} else if checkpoint <= 0 {
		return d.errorf(d.values["backup.checkpoint_interval"], "backup.checkpoint_interval", "must be positive, got %s", checkpoint)
	}
	// A segment is committed when it is segment_max_interval_ms old, and
	// at the latest checkpoint_interval after its first record.
	o.SegmentMaxInterval = checkpoint
	if ms, ok, err := d.int("backup.segment_max_interval_ms"); err != nil {
		return err
	} else if ok {
		const key = "backup.segment_max_interval_ms"
		switch {
		case ms <= 0:
			return d.errorf(d.values[key], key, "must be positive, got %d", ms)
		case ms < 1000:
			return d.errorf(d.values[key], key, "is in milliseconds: %d is %dms; for %d seconds write %d", ms, ms, ms, ms*1000)
		}
		o.SegmentMaxInterval = min(checkpoint, time.Duration(ms)*time.Millisecond)
	}
	continuous, hasContinuous, err := d.bool("backup.continuous")
	if err != nil {
		return err
	}
	stop, hasStop, err := d.bool("backup.stop_at_current_offsets")
	if err != nil {
		return err
	}
	switch {
	case hasContinuous && hasStop && continuous == stop:
		return d.errorf(d.values["backup.stop_at_current_offsets"], "backup.stop_at_current_offsets",
			"is %v with continuous: %v; a backup either stops at the offsets it starts with or follows new records: set one of them", stop, continuous)
	case hasContinuous:
		o.Continuous = continuous
	case hasStop:
		o.Continuous = !stop
	}
	if o.IncludeInternalTopics, _, err = d.bool("backup.include_internal_topics"); err != nil {
		return err
	}
	if o.ConsumerGroupSnapshot, _, err = d.bool("backup.consumer_group_snapshot"); err != nil {
		return err
	}
	switch lvl := d.str("backup.isolation_level"); lvl {
	case "", "read_committed", "read_uncommitted":
		o.IsolationLevel = lvl
	default:
		return d.errorf(d.values["backup.isolation_level"], "backup.isolation_level", "%q is not read_committed or read_uncommitted", lvl)
	}
	outage, ok, err := d.duration("backup.max_broker_outage")
	if err != nil {
		return err
	}
	if ok {
		if outage == 0 {
			outage = -1 // 0 in the file: unbounded, as the flag's negative
		}
		o.MaxBrokerOutage = outage
	}
	return nil
}
