package storage_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kpipe/kpipe/internal/heap"

	"github.com/kpipe/kpipe/sdk/storage"
)

// What damaged or hostile objects of a backup may make kpipe do: each is
// refused or reported with an exact message, and refusing allocates under
// 64 MiB.

// TestAnEntryNumberNearTheIntegerLimitIsOneProblem: an entry object named
// with the largest seq once made validate loop over every number below it,
// adding a problem for each.
func TestAnEntryNumberNearTheIntegerLimitIsOneProblem(t *testing.T) {
	root, store := validated(t)
	dir := filepath.Join(root, "b1", "topics", "orders", "0")
	if err := os.WriteFile(filepath.Join(dir, "entry-9223372036854775807"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	var r *storage.Report
	if n := heap.Allocated(func() { r = validate(t, store, false) }); n >= 64<<20 {
		t.Errorf("validate allocated %d MiB", n>>20)
	}
	got := problems(r)
	for _, w := range []string{
		"entries entry-00000000000000000006 to entry-09223372036854775806 (9223372036854775801 objects) are missing: what it committed is not restorable, and readers stop before it",
		"entry entry-9223372036854775807 cannot be read: it says seq 0",
	} {
		found := false
		for _, p := range r.Problems {
			found = found || p.Message == w
		}
		if !found {
			t.Errorf("validate does not report %q; it reports:\n%s", w, got)
		}
	}
	if len(r.Problems) > 4 {
		t.Errorf("validate reports %d problems:\n%s", len(r.Problems), got)
	}
}

// TestMetadataWithTooManyPartitionsIsRefused: a topic of 2^31-1
// partitions once made describe and validate scan that many.
func TestMetadataWithTooManyPartitionsIsRefused(t *testing.T) {
	root, store := validated(t)
	file := filepath.Join(root, "b1", "metadata", "00000000000000000001")
	if err := os.WriteFile(file, []byte(`{"topics":[{"name":"orders","partitions":2147483647}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var err error
	if n := heap.Allocated(func() { _, err = storage.Describe(context.Background(), store, "b1") }); n >= 64<<20 {
		t.Errorf("describe allocated %d MiB", n>>20)
	}
	want := `backup "b1": b1/metadata/00000000000000000001 is corrupt: topic orders has 2147483647 partitions, outside 0..1048576`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("describe: %v, want it to say %s", err, want)
	}
}

// TestADamagedBatchIndexStopsTheReader: an entry whose batch index gives a
// negative length, read without the preflight that checks entries (the
// restore option preflight=false), is refused before anything is read.
func TestADamagedBatchIndexStopsTheReader(t *testing.T) {
	_, store := validated(t)
	ctx := context.Background()
	b, err := storage.OpenBackup(ctx, store, "b1")
	if err != nil {
		t.Fatal(err)
	}
	m, err := b.Manifest(ctx, "orders", 0)
	if err != nil {
		t.Fatal(err)
	}
	e := m.Entries[0]
	e.Batches[1].Length = -1 << 62
	var rerr error
	if n := heap.Allocated(func() { _, _, rerr = b.Batches(ctx, "orders", 0, e, nil).Next() }); n >= 64<<20 {
		t.Errorf("reading allocated %d MiB", n>>20)
	}
	want := "segment b1/topics/orders/0/" + e.Segment + ": its entry is damaged: batch 1 at bytes " + itoa(e.Batches[1].Start) + "+-4611686018427387904 does not follow the batch before (which ends at " + itoa(e.Batches[1].Start) + ")"
	if rerr == nil || !strings.HasPrefix(rerr.Error(), want) {
		t.Errorf("got %v\nwant it to begin %s", rerr, want)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
