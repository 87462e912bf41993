package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/internal/fuzzseed"
	"github.com/kpipe/kpipe/internal/testkit"
	"github.com/kpipe/kpipe/sdk/storage"
)

// TestValidateDeepNamesAFuzzedSegment: a segment of a real backup replaced
// by each input of the segment fuzz corpora (what the fuzzer kept, and
// the crashes it found) is reported by validate --deep as damaged, naming
// the segment, with exit 1, and never a panic.
func TestValidateDeepNamesAFuzzedSegment(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "fuzzed")
	testkit.CreateTopic(t, addr, topic, 1)
	var recs []*kgo.Record
	for i := range 60 {
		recs = append(recs, &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "value %d", i)})
	}
	testkit.Produce(t, addr, recs)
	path := t.TempDir()
	if code, _, errText := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", topic, "--path", path, "--backup-id", "f", "--segment-max-records", "20"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, errText)
	}
	segs, _ := filepath.Glob(filepath.Join(path, "f", "topics", topic, "0", "segment-*"))
	if len(segs) != 3 {
		t.Fatalf("the backup has segments %v, want 3", segs)
	}
	victim := segs[1]
	name := filepath.Base(victim)
	original, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	inputs := map[string][]byte{}
	for _, dir := range []string{"../../sdk/storage/testdata/fuzz/FuzzSegment", "../../sdk/record/testdata/fuzz/FuzzStream"} {
		in, err := fuzzseed.Inputs(dir)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range in {
			inputs[filepath.Base(dir)+"/"+k] = v
		}
	}
	if len(inputs) < 10 {
		t.Fatalf("only %d fuzz inputs", len(inputs))
	}
	for _, k := range slices.Sorted(maps.Keys(inputs)) {
		if err := os.WriteFile(victim, inputs[k], 0o644); err != nil {
			t.Fatal(err)
		}
		code, out, errText := kpipe(t, "--format", "json", "validate", "--path", path, "--backup-id", "f", "--deep", "--progress", "off")
		var r storage.Report
		if err := json.Unmarshal([]byte(out), &r); err != nil || code != 1 || r.Valid || strings.Contains(errText, "panic") {
			t.Errorf("%s: exit %d (%v), valid %v: %s", k, code, err, r.Valid, errText)
			continue
		}
		named := false
		for _, p := range r.Problems {
			named = named || (p.Segment == name && p.Check != "")
		}
		if !named {
			t.Errorf("%s: validate --deep does not name segment %s: %+v", k, name, r.Problems)
		}
	}
	if err := os.WriteFile(victim, original, 0o644); err != nil {
		t.Fatal(err)
	}
	validBackup(t, path, "f")
}
