package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kpipe/kpipe/internal/fuzzseed"
)

// FuzzParse reads a pipeline file: none may panic or hang, and a refusal
// names the file.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, src []byte) {
		if _, err := Parse("pipes.hcl", src); err != nil && err.Error() == "" {
			t.Fatal("an error without a message")
		}
	})
}

// TestWriteFuzzSeeds writes the pipeline file of the tests and the
// examples the project ships.
func TestWriteFuzzSeeds(t *testing.T) {
	fuzzseed.Writing(t)
	fuzzseed.Write(t, "FuzzParse", "valid", []byte(validFile))
	examples, _ := filepath.Glob("../../pipelines*.example.hcl")
	if len(examples) == 0 {
		t.Fatal("no example pipeline files at the project's root")
	}
	for _, e := range examples {
		src, err := os.ReadFile(e)
		if err != nil {
			t.Fatal(err)
		}
		fuzzseed.Write(t, "FuzzParse", filepath.Base(e), src)
	}
}
