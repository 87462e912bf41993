package conformance_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kpipe/kpipe/conformance"
	"github.com/kpipe/kpipe/plugins/fs/blob"
	"github.com/kpipe/kpipe/sdk/storage"
)

// TestFSStoreConformsAsAStoragePlugin proves the fs plugin's store.
func TestFSStoreConformsAsAStoragePlugin(t *testing.T) {
	conformance.RunStorage(t, func(t *testing.T) storage.BlobStore { return blob.New(t.TempDir()) })
}

// nonAtomic writes objects in place, as they come.
type nonAtomic struct{ *blob.Store }

func (s nonAtomic) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) error {
	name := filepath.Join(s.Root, filepath.FromSlash(key))
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.CopyN(f, r, size)
	return err
}

// ignoresIfAbsent replaces whatever is there.
type ignoresIfAbsent struct{ *blob.Store }

func (s ignoresIfAbsent) Put(ctx context.Context, key string, r io.Reader, size int64, _ storage.PutOptions) error {
	return s.Store.Put(ctx, key, r, size, storage.PutOptions{})
}

// dropsLastPage says a page is the last one page too early.
type dropsLastPage struct{ *blob.Store }

func (s dropsLastPage) List(ctx context.Context, prefix, startAfter, token string) ([]storage.Object, string, error) {
	objs, next, err := s.Store.List(ctx, prefix, startAfter, token)
	if err != nil || next == "" {
		return objs, next, err
	}
	if _, after, _ := s.Store.List(ctx, prefix, startAfter, next); after == "" {
		return objs, "", nil
	}
	return objs, next, nil
}

// TestBrokenBlobStoresFail: the checks catch a Put that is not atomic, a
// create-if-absent that is ignored and a List that drops its last page,
// each with a message that says what is wrong.
func TestBrokenBlobStoresFail(t *testing.T) {
	for _, c := range []struct {
		name  string
		store func(*blob.Store) storage.BlobStore
		check string
		want  string
	}{
		{"non-atomic put", func(s *blob.Store) storage.BlobStore { return nonAtomic{s} }, "put is atomic",
			"while a Put of atomic/new was half done, get gave 524288 bytes (<nil>); want ErrNotFound: a Put must not be seen before it ends"},
		{"if-absent ignored", func(s *blob.Store) storage.BlobStore { return ignoresIfAbsent{s} }, "create if absent",
			"create if absent over an existing object: <nil>, want ErrExists"},
		{"if-absent ignored, racing", func(s *blob.Store) storage.BlobStore { return ignoresIfAbsent{s} }, "create if absent races",
			"race/obj-00: writers "},
		{"last page dropped", func(s *blob.Store) storage.BlobStore { return dropsLastPage{s} }, "list pages",
			"listing 2345 objects page by page gave 2000 in 2 pages"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var check conformance.BlobCheck
			for _, bc := range conformance.BlobChecks {
				if bc.Name == c.check {
					check = bc
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err := check.Run(ctx, c.store(blob.New(t.TempDir())))
			if err == nil || !strings.HasPrefix(err.Error(), c.want) {
				t.Fatalf("check %q: %v, want an error starting %q", c.check, err, c.want)
			}
			// The same check passes on the store done right.
			if err := check.Run(ctx, blob.New(t.TempDir())); err != nil {
				t.Fatalf("check %q on the fs store: %v", c.check, err)
			}
		})
	}
}

// TestAStoreThatIgnoresIfAbsentGetsNoBackup: opening a backup probes the
// store's create-if-absent; a store that ignores it is refused with a
// message that says so, and nothing of the backup is written.
func TestAStoreThatIgnoresIfAbsentGetsNoBackup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fs := blob.New(t.TempDir())
	_, err := storage.OpenWriter(ctx, ignoresIfAbsent{fs}, "b1", storage.WriterOptions{})
	if err != storage.ErrIgnoresIfAbsent {
		t.Fatalf("open a backup on a store that ignores create-if-absent: %v, want ErrIgnoresIfAbsent", err)
	}
	const want = "the store ignores create-if-absent (on S3, the condition If-None-Match: *): a second create of one object succeeded, so two writers of one backup could overwrite each other's commits; kpipe writes no backup there: use a store, or a version of it, that honours conditional writes"
	if err.Error() != want {
		t.Fatalf("message:\n%s\nwant:\n%s", err, want)
	}
	if objs, err := storage.ListAll(ctx, fs, "", ""); err != nil || len(objs) != 0 {
		t.Fatalf("the refused store holds %v (%v), want nothing", objs, err)
	}
	// The same store done right takes the backup.
	w, err := storage.OpenWriter(ctx, fs, "b1", storage.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.Close(ctx, storage.OutcomeComplete)
}
