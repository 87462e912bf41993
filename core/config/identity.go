package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// Identity names what a pipeline reads and writes: a digest of the plugins
// of its stages, in order, and of their parameters as set (the window, the
// backup and its storage, the target cluster, the mappings...). Pipelines
// with the same identity are the same pipeline: one may resume the other's
// state. Where a pipeline is written (file, line, order of attributes) and
// its name do not count.
func (p Pipeline) Identity() string {
	type stage struct {
		Plugin string         `json:"plugin"`
		Params map[string]any `json:"params"`
	}
	stages := make([]stage, 0, 2+len(p.Transforms))
	for _, s := range append(append([]Stage{p.Source}, p.Transforms...), p.Sink) {
		params := make(map[string]any, len(s.Params))
		for k, raw := range s.Params {
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
