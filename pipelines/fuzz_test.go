package pipelines

import (
	"os"
	"path/filepath"
	"testing"
)

// The kafka-backup style configs, backup and restore, in every shape the
// tests write (their seeds come from writeYAML): none may panic or hang,
// and each refusal is a *ConfigError that names where.

func FuzzLoadBackup(f *testing.F) {
	file := filepath.Join(f.TempDir(), "backup.yaml")
	f.Fuzz(func(t *testing.T, text string) {
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadBackup(file); err != nil && err.Error() == "" {
			t.Fatal("an error without a message")
		}
	})
}

func FuzzLoadRestore(f *testing.F) {
	file := filepath.Join(f.TempDir(), "restore.yaml")
	f.Fuzz(func(t *testing.T, text string) {
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadRestore(file); err != nil && err.Error() == "" {
			t.Fatal("an error without a message")
		}
	})
}
