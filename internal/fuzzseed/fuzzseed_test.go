package fuzzseed

import (
	"bytes"
	"path/filepath"
	"testing"
)

// TestWriteThenInputs: every byte value written as a seed reads back the
// same, by the file's name; a corpus file of another shape is refused.
func TestWriteThenInputs(t *testing.T) {
	t.Chdir(t.TempDir())
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	Write(t, "FuzzX", "every-byte", all)
	Write(t, "FuzzX", "empty", []byte{})
	got, err := Inputs(filepath.Join("testdata", "fuzz", "FuzzX"))
	if err != nil || len(got) != 2 || !bytes.Equal(got["every-byte"], all) || len(got["empty"]) != 0 {
		t.Fatalf("Inputs: %v, %q", err, got)
	}
	Write(t, "FuzzY", "text", "a string")
	if _, err := Inputs(filepath.Join("testdata", "fuzz", "FuzzY")); err == nil || err.Error() != "testdata/fuzz/FuzzY/text is not a corpus file of one []byte" {
		t.Fatalf("a string seed read as bytes: %v", err)
	}
}
