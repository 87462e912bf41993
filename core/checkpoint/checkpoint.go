// Package checkpoint stores a pipeline's resume positions in a small JSON
// file, replaced atomically (see segment.WriteFileAtomic), so that a crash
// leaves either the old or the new checkpoint, never a torn one.
package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/segment"
)

// Checkpoint is what the file holds.
type Checkpoint struct {
	Pipeline  string         `json:"pipeline"`
	UpdatedAt time.Time      `json:"updated_at"`
	Positions []sdk.Position `json:"positions"`
}

// Store is the checkpoint file of one pipeline.
type Store struct {
	Path string
}

// ForPipeline returns the Store of a pipeline under dir.
func ForPipeline(dir, pipeline string) *Store {
	return &Store{Path: filepath.Join(dir, pipeline+".checkpoint.json")}
}

// Load returns the stored positions; none when there is no checkpoint yet.
func (s *Store) Load() ([]sdk.Position, error) {
	data, err := os.ReadFile(s.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	}
	var c Checkpoint
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("checkpoint %s is not valid JSON (%v); move it aside to start over", s.Path, err)
	}
	return c.Positions, nil
}

// Save replaces the checkpoint with positions.
func (s *Store) Save(pipeline string, positions []sdk.Position) error {
	ps := append([]sdk.Position(nil), positions...)
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].Topic != ps[j].Topic {
			return ps[i].Topic < ps[j].Topic
		}
		return ps[i].Partition < ps[j].Partition
	})
	data, err := json.MarshalIndent(Checkpoint{Pipeline: pipeline, UpdatedAt: time.Now().UTC(), Positions: ps}, "", "  ")
	if err != nil {
		return err
	}
	return segment.WriteFileAtomic(s.Path, data)
}
