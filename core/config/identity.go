package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
)

// Identity names what a pipeline reads and writes: a digest of the plugins
// of its stages, in order, and of their parameters as set (the window, the
// backup and its storage, the target cluster, the mappings...). Pipelines
// with the same identity are the same pipeline: one may resume the other's
// state. Where a pipeline is written (file, line, order of attributes) and
// its name do not count, nor do the settings of how a cluster is reached
// (see ConnectionParam): a rotated password or certificate is the same
// pipeline; nor do the settings of how a run goes (see RunParam).
func (p Pipeline) Identity() string {
	type stage struct {
		Plugin string         `json:"plugin"`
		Params map[string]any `json:"params"`
	}
	stages := make([]stage, 0, 2+len(p.Transforms))
	for _, s := range append(append([]Stage{p.Source}, p.Transforms...), p.Sink) {
		params := make(map[string]any, len(s.Params))
		for k, raw := range s.Params {
			if ConnectionParam(k) || RunParam(k) {
				continue
			}
			var v any
			if err := json.Unmarshal(raw, &v); err != nil {
				v = string(raw) // not JSON: compare it as written
			}
			params[k] = v
		}
		stages = append(stages, stage{Plugin: s.Plugin, Params: params})
	}
	data, err := json.Marshal(stages) // map keys sorted: a canonical form
	if err != nil {
		panic(err) // only plain JSON values
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

// ConnectionParam says whether a plugin parameter is a setting of how a
// system is reached, credentials among them, rather than of what is read or
// written: security_protocol and those named sasl_* or ssl_*. Plugins name
// their TLS and SASL parameters so.
func ConnectionParam(name string) bool {
	return name == "security_protocol" || strings.HasPrefix(name, "sasl_") || strings.HasPrefix(name, "ssl_")
}

// RunParam says whether a plugin parameter is a setting of how a run goes
// rather than of what is read or written: restore_state (where a restore
// keeps its progress, itself named by the identity), allow_nonempty_target,
// allow_empty, verify, replication_factor and max_concurrent_partitions (a
// rerun that adds them continues the same restore).
func RunParam(name string) bool {
	switch name {
	case "restore_state", "allow_nonempty_target", "allow_empty", "verify", "replication_factor", "max_concurrent_partitions":
		return true
	}
	return false
}
