package pipelines

import (
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/kpipe/kpipe/sdk/celexpr"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/restore"
	"github.com/kpipe/kpipe/sdk/storage"
)

// restoreOptionKeys are the keys of what a restore does, flat under
// restore or in restore.options.
var restoreOptionKeys = map[string]schema{
	"time_window_start":              leaf(kString),
	"time_window_end":                leaf(kString),
	"topics":                         leaf(kStrings),
	"topic_mapping":                  leaf(kPairs),
	"partition_mapping":              leaf(kPairs),
	"source_partitions":              leaf(kStrings),
	"create_topics":                  leaf(kBool),
	"incarnation":                    leaf(kPairs),
	"max_concurrent_partitions":      leaf(kInt),
	"dry_run":                        leaf(kBool),
	"allow_empty":                    leaf(kBool),
	"allow_nonempty_target":          leaf(kBool),
	"verify":                         leaf(kBool),
	"filter":                         leaf(kString),
	"include_original_offset_header": leaf(kBool),
	"rate_limit_records_per_sec":     leaf(kInt),
	"rate_limit_bytes_per_sec":       leaf(kInt),
	"repartitioning":                 leaf(kNode),
	"consumer_group_strategy":        leaf(kString),
	"consumer_groups":                leaf(kStrings),
	"reset_consumer_offsets":         leaf(kBool),
	"offset_reset_timestamp":         leaf(kString),
	"manual_offsets":                 leaf(kNode),
	"source_cluster":                 mapOf(map[string]schema{"bootstrap_servers": leaf(kStrings)}),
}

// restoreSchema holds every key `kpipe restore --config` reads, in both
// shapes: target and storage at the top with the options flat under
// restore, or restore.source, restore.target and restore.options.
var restoreSchema = func() schema {
	restore := map[string]schema{
		"source": mapOf(map[string]schema{
			"path":      leaf(kString),
			"backup_id": leaf(kString),
		}),
		"target":  mapOf(withSecurity(map[string]schema{"bootstrap_servers": leaf(kStrings)})),
		"options": mapOf(restoreOptionKeys),
	}
	for k, v := range restoreOptionKeys {
		restore[k] = v
	}
	return mapOf(map[string]schema{
		"mode":      leaf(kString),
		"backup_id": leaf(kString),
		"target":    mapOf(withSecurity(map[string]schema{"bootstrap_servers": leaf(kStrings)})),
		"storage":   storageSchema,
		"restore":   mapOf(restore),
	})
}()

// RestoreConfig is a restore config file read: the restore, and whether
// to only plan it.
type RestoreConfig struct {
	Restore RestoreOptions
	// DryRun plans the restore and prints the plan, writing nothing.
	DryRun bool
}

// LoadRestore reads a restore config in the kafka-backup YAML shapes:
//
//	mode: restore
//	backup_id: daily
//	target: {bootstrap_servers: [dr-0:9092], security_protocol: SASL_SSL, ...}
//	storage: {backend: s3, bucket: backups, prefix: prod}
//	restore:
//	  time_window_start: 1731236400000   # epoch ms or ISO-8601; either may be left out
//	  time_window_end: 1731250800000
//	  topic_mapping: {orders: orders_restored}
//
// or
//
//	restore:
//	  source: {path: s3://backups/prod, backup_id: daily}
//	  target: {bootstrap_servers: [dr-0:9092]}
//	  options:
//	    time_window_start: 1731236400000
//	    topic_mapping:
//	      - {source: orders, target: orders-restored}
//
// ${VAR} in a value comes from the environment. A mistake is a
// *ConfigError naming the key, its line and the fix.
func LoadRestore(file string) (RestoreConfig, error) {
	d, err := readDoc(file, restoreSchema)
	if err != nil {
		return RestoreConfig{}, err
	}
	var c RestoreConfig
	o := &c.Restore
	fail := func(key, format string, args ...any) (RestoreConfig, error) {
		return RestoreConfig{}, d.errorf(d.values[key], key, format, args...)
	}
	switch mode := d.str("mode"); mode {
	case "restore", "":
	default:
		return fail("mode", "is %q: kpipe restore --config reads a config of mode: restore", mode)
	}
	// Where the backup is: storage and backup_id, or restore.source.
	if d.has("restore.source.path") {
		for _, k := range []string{"storage.path", "storage.bucket", "storage.prefix", "storage.s3.bucket", "storage.s3.prefix"} {
			if d.has(k) {
				return fail(k, "is given with restore.source.path; say where the backups are in one of them")
			}
		}
		o.Path = d.str("restore.source.path")
		if o.Store, err = loadStoreSettings(d); err != nil {
			return RestoreConfig{}, err
		}
	} else if o.Path, o.Store, err = loadStorage(d); err != nil {
		return RestoreConfig{}, err
	}
	id, err := oneOf(d, "backup_id", "restore.source.backup_id")
	if err != nil {
		return RestoreConfig{}, err
	}
	if o.BackupID = d.str(id); o.BackupID == "" {
		return fail("backup_id", "is missing; name the backup to restore, such as backup_id: daily")
	}
	if err := storage.CheckID(o.BackupID); err != nil {
		return fail(id, "%v", err)
	}
	// Where it goes: target, or restore.target.
	target := "target"
	if d.hasUnder("restore.target") {
		if d.hasUnder("target") {
			return fail("restore.target.bootstrap_servers", "is given with target; name the target cluster in one of them")
		}
		target = "restore.target"
	}
	if o.BootstrapServers = d.strs(target + ".bootstrap_servers"); len(o.BootstrapServers) == 0 {
		return fail(target+".bootstrap_servers", "is missing; list the target cluster's brokers, such as [\"kafka-dr-0:9092\"]")
	}
	if o.Security, err = loadSecurity(d, target); err != nil {
		return RestoreConfig{}, err
	}
	if err := loadRestoreOptions(d, &c); err != nil {
		return RestoreConfig{}, err
	}
	return c, nil
}

// hasUnder says whether any key under prefix is given.
func (d *doc) hasUnder(prefix string) bool {
	for k := range d.values {
		if strings.HasPrefix(k, prefix+".") {
			return true
		}
	}
	return false
}

// oneOf returns which of two keys that mean the same is given; both is an
// error.
func oneOf(d *doc, a, b string) (string, error) {
	if d.has(a) && d.has(b) {
		return "", d.errorf(d.values[b], b, "is given twice, also as %s; keep one", a)
	}
	if d.has(b) {
		return b, nil
	}
	return a, nil
}

// loadRestoreOptions reads the keys of what the restore does, flat under
// restore or in restore.options.
func loadRestoreOptions(d *doc, c *RestoreConfig) error {
	o := &c.Restore
	key := func(name string) (string, error) { return oneOf(d, "restore."+name, "restore.options."+name) }
	keys := map[string]string{}
	for name := range restoreOptionKeys {
		k, err := key(name)
		if err != nil {
			return err
		}
		keys[name] = k
	}
	if err := loadOffsetOptions(d, keys, &o.Offsets); err != nil {
		return err
	}
	var err error
	for _, b := range []struct {
		name string
		to   *int64
	}{{"time_window_start", &o.TimeWindowStart}, {"time_window_end", &o.TimeWindowEnd}} {
		k := keys[b.name]
		v, perr := param.ParseTimeBound(d.str(k))
		if perr != nil {
			return d.errorf(d.values[k], k, "%v", perr)
		}
		if cerr := param.CheckEpochMillis(b.name, v); cerr != nil {
			return d.errorf(d.values[k], k, "%s", cerr.Message)
		}
		*b.to = v
	}
	if s, e := o.TimeWindowStart, o.TimeWindowEnd; s >= 0 && e >= 0 && e < s {
		k := keys["time_window_end"]
		return d.errorf(d.values[k], k, "is before time_window_start; swap them")
	}
	if k := keys["filter"]; d.has(k) {
		o.Filter = d.str(k)
		if _, err := celexpr.Compile(o.Filter); err != nil {
			return d.errorf(d.values[k], k, "%v", err)
		}
	}
	if err := loadRepartitioning(d, keys["repartitioning"], o); err != nil {
		return err
	}
	o.Topics = d.strs(keys["topics"])
	for _, v := range d.strs(keys["source_partitions"]) {
		p, perr := strconv.ParseInt(v, 10, 32)
		if perr != nil || p < 0 {
			return d.errorf(d.values[keys["source_partitions"]], keys["source_partitions"], "%q is not a partition number", v)
		}
		o.Partitions = append(o.Partitions, int32(p))
	}
	for _, p := range d.pairs(keys["topic_mapping"]) {
		if o.TopicMapping == nil {
			o.TopicMapping = map[string]string{}
		}
		if _, dup := o.TopicMapping[p[0].Value]; dup {
			return d.errorf(p[0], keys["topic_mapping"], "maps topic %q twice", p[0].Value)
		}
		o.TopicMapping[p[0].Value] = p[1].Value
	}
	for _, p := range d.pairs(keys["partition_mapping"]) {
		from, ferr := strconv.ParseInt(p[0].Value, 10, 32)
		to, terr := strconv.ParseInt(p[1].Value, 10, 32)
		if ferr != nil || terr != nil || from < 0 || to < 0 {
			return d.errorf(p[0], keys["partition_mapping"], "%s: %s is not a partition number = partition number", p[0].Value, p[1].Value)
		}
		if o.PartitionMapping == nil {
			o.PartitionMapping = map[string]int32{}
		}
		o.PartitionMapping[p[0].Value] = int32(to)
	}
	for _, p := range d.pairs(keys["incarnation"]) {
		if o.TopicIncarnations == nil {
			o.TopicIncarnations = map[string]string{}
		}
		o.TopicIncarnations[p[0].Value] = p[1].Value
	}
	create, ok, err := d.bool(keys["create_topics"])
	if err != nil {
		return err
	}
	if ok && !create {
		o.NoCreateTopics = true
	}
	if n, ok, err := d.int(keys["max_concurrent_partitions"]); err != nil {
		return err
	} else if ok && n < 1 {
		k := keys["max_concurrent_partitions"]
		return d.errorf(d.values[k], k, "%d is not a number of partitions; use 1 or more (1: one partition read at a time)", n)
	} else if ok {
		o.MaxConcurrentPartitions = int(n)
	}
	for _, r := range []struct {
		name string
		to   *int64
	}{{"rate_limit_records_per_sec", &o.RateLimitRecordsPerSec}, {"rate_limit_bytes_per_sec", &o.RateLimitBytesPerSec}} {
		k := keys[r.name]
		n, _, err := d.int(k)
		if err != nil {
			return err
		}
		if n < 0 {
			return d.errorf(d.values[k], k, "%d is not a rate; use a number above 0, or 0 for no limit", n)
		}
		*r.to = n
	}
	for _, f := range []struct {
		name string
		to   *bool
	}{{"dry_run", &c.DryRun}, {"allow_empty", &o.AllowEmpty}, {"include_original_offset_header", &o.IncludeOriginalOffsetHeader}, {"allow_nonempty_target", &o.AllowNonemptyTarget}, {"verify", &o.Verify}} {
		if *f.to, _, err = d.bool(keys[f.name]); err != nil {
			return err
		}
	}
	return nil
}

// loadRepartitioning reads repartitioning: {TARGET_TOPIC: {strategy:
// murmur2, target_partitions: N}, ...} (none, or left out: none).
func loadRepartitioning(d *doc, key string, o *RestoreOptions) error {
	n := d.values[key]
	if n == nil || (n.Kind == yaml.ScalarNode && strings.EqualFold(n.Value, "none")) {
		return nil
	}
	shape := "must be a map of target topics, each {strategy: murmur2, target_partitions: N}"
	if n.Kind != yaml.MappingNode {
		return d.errorf(n, key, "%s", shape)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		topic, v := n.Content[i], n.Content[i+1]
		at := key + "." + topic.Value
		if v.Kind != yaml.MappingNode {
			return d.errorf(v, at, "%s", shape)
		}
		r := restore.Repartition{Strategy: restore.Murmur2}
		for j := 0; j+1 < len(v.Content); j += 2 {
			k, val := v.Content[j], v.Content[j+1]
			switch k.Value {
			case "strategy":
				r.Strategy = val.Value
			case "target_partitions":
				p, err := strconv.ParseInt(val.Value, 10, 32)
				if err != nil || p < 1 {
					return d.errorf(val, at+".target_partitions", "%q is not a number of partitions; use 1 or more", val.Value)
				}
				r.Partitions = int32(p)
			default:
				return d.errorf(k, at+"."+k.Value, "unknown key%s", suggest(k.Value, []string{"strategy", "target_partitions"}))
			}
		}
		if r.Partitions == 0 {
			return d.errorf(v, at+".target_partitions", "is missing; say over how many partitions to spread the topic's records, such as target_partitions: 6")
		}
		if err := r.Check(); err != nil {
			return d.errorf(v, at+".strategy", "%v", err)
		}
		if o.Repartitioning == nil {
			o.Repartitioning = map[string]restore.Repartition{}
		}
		o.Repartitioning[topic.Value] = r
	}
	return nil
}
