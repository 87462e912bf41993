// Package fuzzseed writes seed inputs of Go fuzz targets in the corpus file
// format `go test` reads from testdata/fuzz/FuzzName: the project's tests
// produce real files (segments, manifests, configs) and keep them there, so
// every fuzz run starts from what kpipe really reads.
package fuzzseed

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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

// Inputs reads the corpus of a fuzz target (a testdata/fuzz/FuzzName
// folder) whose one argument is a []byte: each file's input by its name.
func Inputs(dir string) (map[string][]byte, error) {
	files, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(dir, f.Name()))
		if err != nil {
			return nil, err
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") || !strings.HasSuffix(lines[1], ")") {
			return nil, fmt.Errorf("%s/%s is not a corpus file of one []byte", dir, f.Name())
		}
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %v", dir, f.Name(), err)
		}
		out[f.Name()] = []byte(s)
	}
	return out, nil
}

// File fuzzes a reader of files: each input is written to one file named
// name in a temporary folder, and check reads it from there.
func File(f *testing.F, name string, check func(t *testing.T, file string)) {
	file := filepath.Join(f.TempDir(), name)
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		check(t, file)
	})
}
