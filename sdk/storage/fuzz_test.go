package storage_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kpipe/kpipe/internal/fuzzseed"
	"github.com/kpipe/kpipe/plugins/fs/blob"
	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/record"
	"github.com/kpipe/kpipe/sdk/storage"
)

// The objects of a backup, each replaced by the fuzzer's bytes in a small
// real backup, then read the ways kpipe reads them: validate (deep),
// describe, and a restore's reads (the manifest, then every batch,
// decoded). None may panic, hang or allocate without bound; validate
// reports a changed segment as damaged, naming it.

// The objects of fuzzBackup the targets replace.
const (
	fuzzSegment  = "b1/topics/orders/0/segment-00000000000000000010-1-AAAAAAAAAAAAAAAAAAAAAA"
	fuzzEntry    = "b1/topics/orders/0/entry-00000000000000000002"
	fuzzSnapshot = "b1/topics/orders/0/snapshot-00000000000000000001"
	fuzzMetadata = "b1/metadata/00000000000000000001"
	fuzzInfo     = "b1/backup.json"
	fuzzLease    = "b1/lease/00000000000000000001"
)

// fuzzBackup writes backup b1 under root: orders/0 holds three segments
// of two batches of five records, entries 0 and 1 in a snapshot and entry
// 2 after it.
func fuzzBackup(t testing.TB, root string) storage.BlobStore {
	t.Helper()
	ctx := context.Background()
	store := blob.New(root)
	w, err := storage.OpenWriter(ctx, store, "b1", storage.WriterOptions{SnapshotEvery: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMetadata(ctx, meta("orders", 1)); err != nil {
		t.Fatal(err)
	}
	writeSegments(t, w, "orders", 1, 3, 2, 5, 1_700_000_000_000)
	if err := w.Close(ctx, storage.OutcomeComplete); err != nil {
		t.Fatal(err)
	}
	return store
}

// fuzzObject runs check on fuzzBackup with object replaced by each input.
func fuzzObject(f *testing.F, object string, check func(t *testing.T, store storage.BlobStore, changed bool)) {
	root := f.TempDir()
	store := fuzzBackup(f, root)
	file := filepath.Join(root, filepath.FromSlash(object))
	original, err := os.ReadFile(file)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(file, original, 0o644)
		check(t, store, !bytes.Equal(data, original))
	})
}

// readBackup reads the backup as the commands do, failing the test only for
// what no input may cause: an error without a message.
func readBackup(t *testing.T, store storage.BlobStore, deep bool) *storage.Report {
	ctx := context.Background()
	r, err := storage.Validate(ctx, store, "b1", nil, sdk.ValidateOptions{Deep: deep}, nil)
	if err != nil && err.Error() == "" {
		t.Fatal("validate: an error without a message")
	}
	if _, err := storage.Describe(ctx, store, "b1"); err != nil && err.Error() == "" {
		t.Fatal("describe: an error without a message")
	}
	b, err := storage.OpenBackup(ctx, store, "b1")
	if err != nil {
		return r
	}
	m, err := b.AllMetadata(ctx)
	if err != nil {
		return r
	}
	for _, tm := range m.Topics {
		for p := range m.Partitions(tm.Name) {
			man, err := b.Manifest(ctx, tm.Name, p)
			if err != nil {
				continue
			}
			for _, e := range man.Entries {
				if e.Kind != storage.KindSegment {
					continue
				}
				br := b.Batches(ctx, tm.Name, p, e, nil)
				for {
					frame, _, err := br.Next()
					if err != nil {
						if err != io.EOF && err.Error() == "" {
							t.Fatal("batches: an error without a message")
						}
						break
					}
					if v, err := record.DecodeView(frame); err == nil {
						for i := range v.Len() {
							v.Record(i)
						}
						v.Batch.Release()
					}
				}
				br.Close()
			}
		}
	}
	return r
}

func FuzzSegment(f *testing.F) {
	segment := fuzzSegment[strings.LastIndex(fuzzSegment, "/")+1:]
	fuzzObject(f, fuzzSegment, func(t *testing.T, store storage.BlobStore, changed bool) {
		r := readBackup(t, store, true)
		if r == nil {
			t.Fatal("validate --deep gave no report")
		}
		named := false
		for _, p := range r.Problems {
			named = named || p.Segment == segment
		}
		if changed != named {
			t.Fatalf("segment changed %v, and validate --deep named it %v: %+v", changed, named, r.Problems)
		}
	})
}

func FuzzEntry(f *testing.F) {
	fuzzObject(f, fuzzEntry, func(t *testing.T, store storage.BlobStore, _ bool) { readBackup(t, store, true) })
}

func FuzzSnapshot(f *testing.F) {
	fuzzObject(f, fuzzSnapshot, func(t *testing.T, store storage.BlobStore, _ bool) { readBackup(t, store, true) })
}

func FuzzMetadata(f *testing.F) {
	fuzzObject(f, fuzzMetadata, func(t *testing.T, store storage.BlobStore, _ bool) { readBackup(t, store, false) })
}

func FuzzInfo(f *testing.F) {
	fuzzObject(f, fuzzInfo, func(t *testing.T, store storage.BlobStore, _ bool) { readBackup(t, store, false) })
}

func FuzzLease(f *testing.F) {
	fuzzObject(f, fuzzLease, func(t *testing.T, store storage.BlobStore, _ bool) { readBackup(t, store, false) })
}

// TestWriteFuzzSeeds writes each object of fuzzBackup as the seed of its
// target.
func TestWriteFuzzSeeds(t *testing.T) {
	fuzzseed.Writing(t)
	root := t.TempDir()
	fuzzBackup(t, root)
	for target, object := range map[string]string{"FuzzSegment": fuzzSegment, "FuzzEntry": fuzzEntry, "FuzzSnapshot": fuzzSnapshot,
		"FuzzMetadata": fuzzMetadata, "FuzzInfo": fuzzInfo, "FuzzLease": fuzzLease} {
		data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(object)))
		if err != nil {
			t.Fatal(err)
		}
		fuzzseed.Write(t, target, "written", data)
	}
}
