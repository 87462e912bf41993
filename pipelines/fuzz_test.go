package pipelines

import (
	"testing"

	"github.com/kpipe/kpipe/internal/fuzzseed"
)

// The kafka-backup style configs, backup and restore, in every shape the
// tests write (their seeds come from writeYAML): none may panic or hang,
// and a refusal says what is wrong.

func FuzzLoadBackup(f *testing.F) {
	fuzzseed.File(f, "backup.yaml", func(t *testing.T, file string) {
		if _, err := LoadBackup(file); err != nil && err.Error() == "" {
			t.Fatal("an error without a message")
		}
	})
}

func FuzzLoadRestore(f *testing.F) {
	fuzzseed.File(f, "restore.yaml", func(t *testing.T, file string) {
		if _, err := LoadRestore(file); err != nil && err.Error() == "" {
			t.Fatal("an error without a message")
		}
	})
}
