// Package blob is the fs plugin's BlobStore: each object a file under a
// root folder, its key the file's path below the root.
//
// A Put writes a temporary file beside the object's, fsyncs it, and puts
// it in place: with rename(2) to replace, with link(2) to create only if
// absent (link never replaces an existing name, so of two racing writers
// exactly one wins); then it fsyncs the folder, and every folder it had to
// create, so that the object survives a crash once Put returns.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/kpipe/kpipe/sdk/storage"
)

// PageSize is the most objects one List page holds.
const PageSize = 1000

// tmpMark marks temporary files; keys never contain a name that starts
// with a dot.
const tmpMark = ".tmp-"

// Store keeps objects as files under Root.
type Store struct {
	Root string
}

var _ storage.BlobStore = (*Store)(nil)

// New returns a store of objects under root.
func New(root string) *Store { return &Store{Root: root} }

// file is the path of key's file, once key is checked.
func (s *Store) file(key string) (string, error) {
	if key == "" || strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/") {
		return "", fmt.Errorf("object key %q: want a relative path such as \"a/b\"", key)
	}
	for _, part := range strings.Split(key, "/") {
		if part == "" || strings.HasPrefix(part, ".") {
			return "", fmt.Errorf("object key %q: no empty part and no part that starts with a dot", key)
		}
	}
	return filepath.Join(s.Root, filepath.FromSlash(key)), nil
}

// Put writes the object through a temporary file: see the package doc.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) error {
	name, err := s.file(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dir := filepath.Dir(name)
	if err := s.mkdirAll(dir); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(name)+tmpMark+"*")
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	defer os.Remove(tmp.Name()) // after a link, or a failure
	src := r
	if size >= 0 {
		src = io.LimitReader(r, size+1)
	}
	n, err := io.Copy(tmp, src)
	if err == nil && size >= 0 && n != size {
		err = fmt.Errorf("the reader gave %d bytes, not the %d announced", n, size)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if opts.IfAbsent {
		err = os.Link(tmp.Name(), name)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("put %s: %w", key, storage.ErrExists)
		}
	} else {
		err = os.Rename(tmp.Name(), name)
	}
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// mkdirAll creates dir and its missing parents, and fsyncs the parent of
// each folder it created.
func (s *Store) mkdirAll(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := s.mkdirAll(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // another Put made it
		}
		return err
	}
	return syncDir(parent)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, syscall.EINVAL) {
		return nil // a file system that cannot sync folders
	}
	return err
}

// Get reads a byte range of the object's file.
func (s *Store) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	name, err := s.file(key)
	if err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("get %s: negative offset %d", key, offset)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, notFound("get", key, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	if st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("get %s: %w", key, storage.ErrNotFound)
	}
	end := st.Size()
	if length >= 0 && offset+length < end {
		end = offset + length
	}
	return &section{SectionReader: io.NewSectionReader(f, offset, max(0, end-offset)), f: f}, nil
}

type section struct {
	*io.SectionReader
	f *os.File
}

func (s *section) Close() error { return s.f.Close() }

func notFound(op, key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("%s %s: %w", op, key, storage.ErrNotFound)
	}
	return fmt.Errorf("%s %s: %w", op, key, err)
}

// Stat describes the object's file.
func (s *Store) Stat(ctx context.Context, key string) (storage.Object, error) {
	name, err := s.file(key)
	if err != nil {
		return storage.Object{}, err
	}
	st, err := os.Stat(name)
	if err != nil {
		return storage.Object{}, notFound("stat", key, err)
	}
	if st.IsDir() {
		return storage.Object{}, fmt.Errorf("stat %s: %w", key, storage.ErrNotFound)
	}
	return storage.Object{Key: key, Size: st.Size(), Modified: st.ModTime()}, nil
}

// Delete removes the object's file.
func (s *Store) Delete(ctx context.Context, key string) error {
	name, err := s.file(key)
	if err != nil {
		return err
	}
	if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// List walks the folder that holds the prefix's keys, sorts what it finds
// and returns a page of at most PageSize objects. The token is the last key
// of the page before.
func (s *Store) List(ctx context.Context, prefix, startAfter, token string) ([]storage.Object, string, error) {
	after := max(startAfter, token)
	base := s.Root
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		base = filepath.Join(s.Root, filepath.FromSlash(prefix[:i]))
	}
	var objs []storage.Object
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if strings.HasPrefix(d.Name(), ".") && p != base {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(s.Root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) || key <= after {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // deleted while listing
			}
			return err
		}
		objs = append(objs, storage.Object{Key: key, Size: info.Size(), Modified: info.ModTime()})
		return ctx.Err()
	})
	if err != nil {
		return nil, "", fmt.Errorf("list %s: %w", path.Clean(prefix), err)
	}
	slices.SortFunc(objs, func(a, b storage.Object) int { return strings.Compare(a.Key, b.Key) })
	if len(objs) <= PageSize {
		return objs, "", nil
	}
	objs = objs[:PageSize]
	return objs, objs[PageSize-1].Key, nil
}
