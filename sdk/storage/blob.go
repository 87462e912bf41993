// Package storage is what a storage plugin's author implements and what
// kpipe builds on it: BlobStore, a small interface to a store of objects
// (a folder of files, a bucket), which is all a storage author writes; and
// on it the segment store (the backup format, its writer and reader), the
// describer and the validator, and the sink and source plugins that serve
// them.
package storage

import (
	"context"
	"errors"
	"io"
	"time"
)

// BlobStore is a flat namespace of objects named by keys: "/"-separated
// paths such as "b1/topics/orders/0/entry-00000000000000000042". An
// object is written whole and read by byte ranges. Methods may be called
// from many goroutines at once.
type BlobStore interface {
	// Put stores the bytes r yields under key: size of them, or all of
	// them up to EOF when size is negative (a segment streamed while it is
	// made). It is atomic: a reader sees the whole object or none of it
	// (or, when replacing one, the whole old object), never a part, and a
	// Put that fails, or whose reader fails, leaves nothing behind. With
	// IfAbsent, Put fails with ErrExists when key exists: of two Puts
	// racing on one key, exactly one succeeds.
	Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) error
	// Get reads length bytes of the object key from offset on; a negative
	// length reads to the end, and a range that reaches past the end stops
	// there. It fails with ErrNotFound when key does not exist.
	Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
	// List returns the objects whose keys start with prefix and sort after
	// startAfter (all of them when it is empty), in key order, a page at a
	// time: token is empty for the first page, and the next token of the
	// page before for the others; next is empty on the last page.
	List(ctx context.Context, prefix, startAfter, token string) (objects []Object, next string, err error)
	// Stat describes the object key; ErrNotFound when it does not exist.
	Stat(ctx context.Context, key string) (Object, error)
	// Delete removes the object key; removing one that does not exist is
	// not an error.
	Delete(ctx context.Context, key string) error
}

// PutOptions are the conditions of a Put.
type PutOptions struct {
	// IfAbsent creates the object only if none exists under its key.
	IfAbsent bool
}

// Object describes a stored object.
type Object struct {
	Key  string
	Size int64
	// Modified is when the object was written, as the store's clock says.
	Modified time.Time
}

// The errors a BlobStore returns (wrapped or not) for these conditions.
var (
	ErrNotFound = errors.New("object not found")
	ErrExists   = errors.New("object already exists")
)

// ListAll returns every object under prefix that sorts after startAfter,
// following the pages of List.
func ListAll(ctx context.Context, s BlobStore, prefix, startAfter string) ([]Object, error) {
	var all []Object
	token := ""
	for {
		objs, next, err := s.List(ctx, prefix, startAfter, token)
		if err != nil {
			return nil, err
		}
		all = append(all, objs...)
		if next == "" {
			return all, nil
		}
		token = next
	}
}
