// Package checkpoint stores a pipeline's resume positions in a small JSON
// file, replaced atomically (package atomicfile), so that a crash
// leaves either the old or the new checkpoint, never a torn one. A file
// belongs to one pipeline identity (config.Pipeline.Identity): a pipeline
// that reads or writes anything else never sees it.
package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/kpipe/kpipe/internal/atomicfile"
	"github.com/kpipe/kpipe/sdk"
)

// Checkpoint is what the file holds.
type Checkpoint struct {
	Pipeline  string         `json:"pipeline"`
	Identity  string         `json:"identity"`
	UpdatedAt time.Time      `json:"updated_at"`
	Positions []sdk.Position `json:"positions"`
	// Finished is set once a run reached the end of its source: running
	// the same pipeline again has nothing to do.
	Finished *Finished `json:"finished,omitempty"`
}

// Finished records the run that completed a pipeline.
type Finished struct {
	At time.Time `json:"at"`
	// RecordsOut is how many records that run wrote.
	RecordsOut int64 `json:"records_out"`
}

// Store is the checkpoint file of one pipeline identity.
type Store struct {
	Path     string
	pipeline string
	identity string
}

// ForPipeline returns the Store of the pipeline named pipeline whose
// identity is identity, under dir.
func ForPipeline(dir, pipeline, identity string) *Store {
	return &Store{Path: filepath.Join(dir, pipeline+"-"+identity+".checkpoint.json"), pipeline: pipeline, identity: identity}
}

// Load returns what the file holds; the zero Checkpoint when there is none
// yet.
func (s *Store) Load() (Checkpoint, error) {
	data, err := os.ReadFile(s.Path)
	if errors.Is(err, os.ErrNotExist) {
		return Checkpoint{}, nil
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("read checkpoint: %w", err)
	}
	var c Checkpoint
	if err := json.Unmarshal(data, &c); err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint %s is not valid JSON (%v); move it aside to start over", s.Path, err)
	}
	if c.Identity != s.identity {
		return Checkpoint{}, fmt.Errorf("checkpoint %s belongs to pipeline identity %q, not %q; move it aside to start over", s.Path, c.Identity, s.identity)
	}
	return c, nil
}

// Save replaces the checkpoint with positions; finished is set when the
// run reached the end of its source.
func (s *Store) Save(positions []sdk.Position, finished *Finished) error {
	ps := append([]sdk.Position(nil), positions...)
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].Topic != ps[j].Topic {
			return ps[i].Topic < ps[j].Topic
		}
		return ps[i].Partition < ps[j].Partition
	})
	c := Checkpoint{Pipeline: s.pipeline, Identity: s.identity, UpdatedAt: time.Now().UTC(), Positions: ps, Finished: finished}
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(s.Path, data)
}
