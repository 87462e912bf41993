package checkpoint

import (
	"os"
	"testing"
	"time"

	"github.com/kpipe/kpipe/internal/fuzzseed"
	"github.com/kpipe/kpipe/sdk"
)

// FuzzLoad reads a pipeline's checkpoint file, as a resumed run does.
func FuzzLoad(f *testing.F) {
	s := ForPipeline(f.TempDir(), "backup", "abc123")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(s.Path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := s.Load()
		if err == nil && c.Identity != "abc123" && len(data) > 0 {
			t.Fatalf("a checkpoint of identity %q was taken for abc123", c.Identity)
		}
	})
}

// TestWriteFuzzSeeds writes checkpoints as a run saves them.
func TestWriteFuzzSeeds(t *testing.T) {
	fuzzseed.Writing(t)
	s := ForPipeline(t.TempDir(), "backup", "abc123")
	pos := []sdk.Position{{Topic: "orders", Partition: 1, NextOffset: 42}, {Topic: "orders", Partition: 0, NextOffset: 7}}
	for name, fin := range map[string]*Finished{"running": nil, "finished": {At: time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC), RecordsOut: 49}} {
		if err := s.Save(pos, fin); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(s.Path)
		fuzzseed.Write(t, "FuzzLoad", name, data)
	}
}
