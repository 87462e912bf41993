package pipelines

import (
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ConfigError is a mistake in a YAML config file, at a line, naming the
// key (as a dotted path) and the fix.
type ConfigError struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *ConfigError) Error() string {
	where := e.File
	if e.Line > 0 {
		where += ":" + strconv.Itoa(e.Line)
	}
	if e.Key == "" {
		return where + ": " + e.Msg
	}
	return where + ": " + e.Key + ": " + e.Msg
}

// kind is what a YAML key holds.
type kind int

const (
	kString kind = iota
	kStrings
	kInt
	kBool
	kDuration
	kMap
	// kTopics is either a list of topics or a map with include and exclude.
	kTopics
	// kPairs is a mapping of names to values, written as a map (from: to)
	// or as a list of {source: from, target: to}.
	kPairs
	// kNode is any YAML value, which its reader checks.
	kNode
)

// schema describes the keys of a YAML config: a key of kind kMap has the
// keys of its children.
type schema struct {
	kind     kind
	children map[string]schema
}

func leaf(k kind) schema { return schema{kind: k} }

func mapOf(children map[string]schema) schema { return schema{kind: kMap, children: children} }

// backupSchema holds every key `kpipe backup --config` reads.
var backupSchema = mapOf(map[string]schema{
	"mode":      leaf(kString),
	"backup_id": leaf(kString),
	"source": mapOf(withSecurity(map[string]schema{
		"bootstrap_servers": leaf(kStrings),
		"topics": {kind: kTopics, children: map[string]schema{
			"include": leaf(kStrings),
			"exclude": leaf(kStrings),
		}},
	})),
	"storage": storageSchema,
	"backup": mapOf(map[string]schema{
		"compression":             leaf(kString),
		"compression_level":       leaf(kInt),
		"segment_max_bytes":       leaf(kInt),
		"segment_max_records":     leaf(kInt),
		"segment_max_interval_ms": leaf(kInt),
		"continuous":              leaf(kBool),
		"stop_at_current_offsets": leaf(kBool),
		"checkpoint_interval":     leaf(kDuration),
		"include_internal_topics": leaf(kBool),
		"consumer_group_snapshot": leaf(kBool),
		"isolation_level":         leaf(kString),
		"max_broker_outage":       leaf(kDuration),
	}),
})

// storageSchema holds the keys of the storage section, in either shape.
var storageSchema = mapOf(map[string]schema{
	"backend":  leaf(kString),
	"type":     leaf(kString),
	"path":     leaf(kString),
	"bucket":   leaf(kString),
	"region":   leaf(kString),
	"prefix":   leaf(kString),
	"endpoint": leaf(kString),
	"s3": mapOf(map[string]schema{
		"bucket":           leaf(kString),
		"region":           leaf(kString),
		"prefix":           leaf(kString),
		"endpoint":         leaf(kString),
		"force_path_style": leaf(kBool),
		"profile":          leaf(kString),
	}),
	"force_path_style":    leaf(kBool),
	"profile":             leaf(kString),
	"encryption_key_file": leaf(kString),
	"encryption_key_env":  leaf(kString),
})

// securityKeys are the keys of a cluster's security settings, the kafka
// plugin's parameters of the same names.
var securityKeys = func() map[string]schema {
	keys := map[string]schema{"ssl_endpoint_identification": leaf(kBool)}
	for name := range new(Security).fields() {
		keys[name] = leaf(kString)
	}
	return keys
}()

// withSecurity adds to the keys of a cluster (source or target) its
// security settings, flat or in a security block.
func withSecurity(keys map[string]schema) map[string]schema {
	for k, v := range securityKeys {
		keys[k] = v
	}
	keys["security"] = mapOf(securityKeys)
	return keys
}

// doc is a YAML config file read against a schema: its values by dotted
// key, with ${VAR} references replaced from the environment.
type doc struct {
	file   string
	values map[string]*yaml.Node
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// readDoc reads a YAML file and checks it against s: unknown keys and
// values of the wrong kind are errors.
func readDoc(file string, s schema) (*doc, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, &ConfigError{File: file, Msg: err.Error()}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, &ConfigError{File: file, Msg: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	d := &doc{file: file, values: map[string]*yaml.Node{}}
	if len(root.Content) == 0 {
		return nil, &ConfigError{File: file, Msg: "the file is empty"}
	}
	return d, d.walk(root.Content[0], "", s)
}

func (d *doc) errorf(n *yaml.Node, key, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &ConfigError{File: d.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)}
}

func (d *doc) walk(n *yaml.Node, path string, s schema) error {
	if s.kind == kTopics && n.Kind == yaml.SequenceNode {
		return d.walk(n, path+".include", leaf(kStrings))
	}
	if s.kind == kMap || s.kind == kTopics {
		if n.Kind != yaml.MappingNode {
			return d.errorf(n, strings.TrimPrefix(path, "."), "must be a map of keys (%s)", strings.Join(keys(s), ", "))
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := strings.TrimPrefix(path+"."+k.Value, ".")
			child, ok := s.children[k.Value]
			if !ok {
				return d.errorf(k, key, "unknown key%s", suggest(k.Value, keys(s)))
			}
			if _, dup := d.values[key]; dup {
				return d.errorf(k, key, "given twice")
			}
			if err := d.walk(v, path+"."+k.Value, child); err != nil {
				return err
			}
		}
		return nil
	}
	key := strings.TrimPrefix(path, ".")
	if err := d.expand(n, key); err != nil {
		return err
	}
	switch s.kind {
	case kNode:
	case kPairs:
		if err := d.checkPairs(n, key); err != nil {
			return err
		}
	case kStrings:
		if n.Kind == yaml.ScalarNode { // one value for a list of one
			break
		}
		if n.Kind != yaml.SequenceNode {
			return d.errorf(n, key, "must be a list")
		}
		for _, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				return d.errorf(item, key, "must be a list of strings")
			}
			if err := d.expand(item, key); err != nil {
				return err
			}
		}
	default:
		if n.Kind != yaml.ScalarNode {
			return d.errorf(n, key, "must be a single value")
		}
	}
	d.values[key] = n
	return nil
}

// expand replaces ${VAR} in a scalar from the environment; an unset
// variable is an error.
func (d *doc) expand(n *yaml.Node, key string) error {
	if n.Kind != yaml.ScalarNode || !strings.Contains(n.Value, "${") {
		return nil
	}
	v, err := ExpandEnv(n.Value)
	if err != nil {
		return d.errorf(n, key, "%v", err)
	}
	n.Value, n.Tag = v, "!!str"
	return nil
}

// ExpandEnv replaces each ${NAME} in s with the environment variable NAME;
// one that is not set is an error.
func ExpandEnv(s string) (string, error) {
	var missing string
	out := envRef.ReplaceAllStringFunc(s, func(ref string) string {
		name := envRef.FindStringSubmatch(ref)[1]
		v, ok := os.LookupEnv(name)
		if !ok && missing == "" {
			missing = name
		}
		return v
	})
	if missing != "" {
		return "", fmt.Errorf("${%s} is not set in the environment; set it, or write the value", missing)
	}
	return out, nil
}

// loadSecurity reads the security settings of the cluster under prefix
// (source or target), each given flat or in the security block.
func loadSecurity(d *doc, prefix string) (Security, error) {
	var s Security
	pick := func(name string) (string, error) {
		flat, block := prefix+"."+name, prefix+".security."+name
		if d.has(flat) && d.has(block) {
			return "", d.errorf(d.values[block], block, "is given twice, also as %s; keep one", flat)
		}
		if d.has(block) {
			return block, nil
		}
		return flat, nil
	}
	for name, to := range s.fields() {
		key, err := pick(name)
		if err != nil {
			return s, err
		}
		*to = d.str(key)
	}
	key, err := pick("ssl_endpoint_identification")
	if err != nil {
		return s, err
	}
	check, ok, err := d.bool(key)
	if err != nil {
		return s, err
	}
	s.SkipEndpointIdentification = ok && !check
	return s, nil
}

// checkPairs checks a kPairs value: a map of scalars, or a list of maps
// with source and target.
func (d *doc) checkPairs(n *yaml.Node, key string) error {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if v := n.Content[i+1]; v.Kind != yaml.ScalarNode {
				return d.errorf(v, key+"."+n.Content[i].Value, "must be a single value")
			}
			if err := d.expand(n.Content[i+1], key); err != nil {
				return err
			}
		}
		return nil
	case yaml.SequenceNode:
		for _, item := range n.Content {
			if item.Kind != yaml.MappingNode || len(item.Content) != 4 {
				return d.errorf(item, key, "each item must be {source: NAME, target: NAME}")
			}
			seen := map[string]bool{}
			for i := 0; i+1 < len(item.Content); i += 2 {
				k, v := item.Content[i], item.Content[i+1]
				if (k.Value != "source" && k.Value != "target") || v.Kind != yaml.ScalarNode {
					return d.errorf(k, key, "each item must be {source: NAME, target: NAME}, not %s", k.Value)
				}
				if err := d.expand(v, key); err != nil {
					return err
				}
				seen[k.Value] = true
			}
			if len(seen) != 2 {
				return d.errorf(item, key, "each item must be {source: NAME, target: NAME}")
			}
		}
		return nil
	}
	return d.errorf(n, key, "must be a map (source: target) or a list of {source: NAME, target: NAME}")
}

// pairs reads a kPairs key as its (from, to) pairs, each with its node.
func (d *doc) pairs(key string) (pairs [][2]*yaml.Node) {
	n := d.values[key]
	if n == nil {
		return nil
	}
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			pairs = append(pairs, [2]*yaml.Node{n.Content[i], n.Content[i+1]})
		}
		return pairs
	}
	for _, item := range n.Content {
		var p [2]*yaml.Node
		for i := 0; i+1 < len(item.Content); i += 2 {
			if item.Content[i].Value == "source" {
				p[0] = item.Content[i+1]
			} else {
				p[1] = item.Content[i+1]
			}
		}
		pairs = append(pairs, p)
	}
	return pairs
}

func (d *doc) has(key string) bool { _, ok := d.values[key]; return ok }

func (d *doc) str(key string) string {
	if n := d.values[key]; n != nil {
		return n.Value
	}
	return ""
}

func (d *doc) strs(key string) []string {
	n := d.values[key]
	if n == nil {
		return nil
	}
	if n.Kind == yaml.ScalarNode {
		return []string{n.Value}
	}
	out := make([]string, 0, len(n.Content))
	for _, item := range n.Content {
		out = append(out, item.Value)
	}
	return out
}

// int reads an integer key; 0 and false when absent.
func (d *doc) int(key string) (int64, bool, error) {
	n := d.values[key]
	if n == nil {
		return 0, false, nil
	}
	v, err := strconv.ParseInt(n.Value, 10, 64)
	if err != nil {
		return 0, false, d.errorf(n, key, "%q is not a whole number", n.Value)
	}
	return v, true, nil
}

func (d *doc) bool(key string) (bool, bool, error) {
	n := d.values[key]
	if n == nil {
		return false, false, nil
	}
	switch strings.ToLower(n.Value) {
	case "true", "yes", "on":
		return true, true, nil
	case "false", "no", "off":
		return false, true, nil
	}
	return false, false, d.errorf(n, key, "%q is not true or false", n.Value)
}

// duration reads a duration with its unit, such as 30s or 5m.
func (d *doc) duration(key string) (time.Duration, bool, error) {
	n := d.values[key]
	if n == nil {
		return 0, false, nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		if _, nerr := strconv.ParseFloat(n.Value, 64); nerr == nil {
			return 0, false, d.errorf(n, key, "%q has no unit; write it with one, such as %ss or %sms", n.Value, n.Value, n.Value)
		}
		return 0, false, d.errorf(n, key, "%q is not a duration such as 30s, 5m or 1h", n.Value)
	}
	return v, true, nil
}

func keys(s schema) []string {
	out := make([]string, 0, len(s.children))
	for k := range s.children {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// suggest names the known key closest to an unknown one, or lists them
// all when none is close.
func suggest(got string, known []string) string {
	best, bestDist := "", 1<<30
	for _, k := range known {
		if dist := editDistance(got, k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best != "" && bestDist <= max(2, len(got)/3) {
		return fmt.Sprintf("; did you mean %s?", best)
	}
	return "; known keys here: " + strings.Join(known, ", ")
}

// editDistance is the Levenshtein distance of two strings.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
