// Package fuzzseed writes seed inputs of Go fuzz targets in the corpus file
// format `go test` reads from testdata/fuzz/FuzzName: the project's tests
// produce real files (segments, manifests, configs) and keep them there, so
// every fuzz run starts from what kpipe really reads.
package fuzzseed

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Env, set to 1, makes the seed writers of the tests (re)write their files.
const Env = "KPIPE_WRITE_FUZZ_SEEDS"

// Writing reports whether the seeds are to be written; the tests that write
// them skip otherwise.
func Writing(t testing.TB) {
	t.Helper()
	if os.Getenv(Env) != "1" {
		t.Skipf("set %s=1 to write the fuzz seed corpora under testdata/fuzz", Env)
	}
}

// Write stores one input of target under testdata/fuzz/target/name, in the
// package the test runs in. Each arg is a []byte or a string.
func Write(t testing.TB, target, name string, args ...any) {
	t.Helper()
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, a := range args {
		switch v := a.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case string:
			fmt.Fprintf(&b, "string(%q)\n", v)
		default:
			t.Fatalf("fuzz seed %s/%s: cannot write a %T", target, name, a)
		}
	}
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
