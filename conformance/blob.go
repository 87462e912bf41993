package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/kpipe/kpipe/sdk/storage"
)

// BlobCheck is one check of a storage.BlobStore: Run returns what is wrong,
// or nil.
type BlobCheck struct {
	Name string
	Run  func(ctx context.Context, s storage.BlobStore) error
}

// BlobChecks are the checks RunBlobStore runs, each on a store of its own.
var BlobChecks = []BlobCheck{
	{"put and get", checkPutGet},
	{"put is atomic", checkAtomicPut},
	{"create if absent", checkIfAbsent},
	{"create if absent races", checkIfAbsentRace},
	{"ranges", checkRanges},
	{"missing objects", checkMissing},
	{"list pages", checkListPages},
	{"list prefix and start", checkListPrefix},
	{"stat and delete", checkStatDelete},
}

// RunBlobStore runs every BlobCheck, each as a subtest with an empty store
// from newStore. A storage author calls it from a test with the BlobStore
// they wrote:
//
//	func TestMyStore(t *testing.T) {
//		conformance.RunBlobStore(t, func(t *testing.T) storage.BlobStore { return mystore.New(...) })
//	}
func RunBlobStore(t *testing.T, newStore func(t *testing.T) storage.BlobStore) {
	for _, c := range BlobChecks {
		t.Run(c.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := c.Run(ctx, newStore(t)); err != nil {
				t.Error(err)
			}
		})
	}
}

func put(ctx context.Context, s storage.BlobStore, key string, data []byte, ifAbsent bool) error {
	return s.Put(ctx, key, bytes.NewReader(data), int64(len(data)), storage.PutOptions{IfAbsent: ifAbsent})
}

// get reads a range of an object whole.
func get(ctx context.Context, s storage.BlobStore, key string, offset, length int64) ([]byte, error) {
	r, err := s.Get(ctx, key, offset, length)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// wantObject checks that key holds exactly want.
func wantObject(ctx context.Context, s storage.BlobStore, key string, want []byte) error {
	got, err := get(ctx, s, key, 0, -1)
	if err != nil {
		return fmt.Errorf("get %s: %w", key, err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s holds %d bytes (%.20q...), want %d (%.20q...)", key, len(got), got, len(want), want)
	}
	return nil
}

// payload is n bytes that differ from one seed to the next.
func payload(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func checkPutGet(ctx context.Context, s storage.BlobStore) error {
	for _, size := range []int{0, 1, 4096, 3 << 20} {
		key := fmt.Sprintf("pg/obj-%d", size)
		data := payload(byte(size), size)
		if err := put(ctx, s, key, data, false); err != nil {
			return fmt.Errorf("put %d bytes: %w", size, err)
		}
		if err := wantObject(ctx, s, key, data); err != nil {
			return err
		}
	}
	// A size not known beforehand: all the reader gives.
	streamed := payload(7, 100000)
	if err := s.Put(ctx, "pg/streamed", bytes.NewReader(streamed), -1, storage.PutOptions{}); err != nil {
		return fmt.Errorf("put of unknown size: %w", err)
	}
	if err := wantObject(ctx, s, "pg/streamed", streamed); err != nil {
		return err
	}
	// Replacing an object replaces it whole.
	if err := put(ctx, s, "pg/obj-4096", []byte("short"), false); err != nil {
		return fmt.Errorf("replace: %w", err)
	}
	if err := wantObject(ctx, s, "pg/obj-4096", []byte("short")); err != nil {
		return fmt.Errorf("after a replace: %w", err)
	}
	// A reader that gives fewer bytes than announced fails the Put.
	if err := s.Put(ctx, "pg/short", bytes.NewReader([]byte("abc")), 10, storage.PutOptions{}); err == nil {
		return errors.New("a Put of 10 bytes whose reader gave 3 succeeded")
	}
	if _, err := s.Stat(ctx, "pg/short"); !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("after a Put whose reader gave too few bytes, stat says %v; want ErrNotFound", err)
	}
	return nil
}

// stalling gives the first half of data, then waits for release: true
// gives the rest, false fails.
type stalling struct {
	data    []byte
	n       int
	stalled chan struct{}
	release chan bool
	resumed bool
}

func (r *stalling) Read(p []byte) (int, error) {
	half := len(r.data) / 2
	if r.n == half && !r.resumed {
		close(r.stalled)
		if !<-r.release {
			return 0, errors.New("the writer's reader failed")
		}
		r.resumed = true
	}
	end := len(r.data)
	if r.n < half {
		end = half
	}
	n := copy(p, r.data[r.n:end])
	r.n += n
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

func checkAtomicPut(ctx context.Context, s storage.BlobStore) error {
	old := payload(1, 1<<20)
	if err := put(ctx, s, "atomic/replaced", old, false); err != nil {
		return err
	}
	for _, c := range []struct {
		key    string
		before []byte // nil: no object
		finish bool
	}{{"atomic/new", nil, false}, {"atomic/new", nil, true}, {"atomic/replaced", old, false}, {"atomic/replaced", old, true}} {
		data := payload(9, 1<<20)
		r := &stalling{data: data, stalled: make(chan struct{}), release: make(chan bool, 1)}
		done := make(chan error, 1)
		go func() { done <- s.Put(ctx, c.key, r, int64(len(data)), storage.PutOptions{}) }()
		select {
		case <-r.stalled:
		case err := <-done:
			return fmt.Errorf("put %s ended (%v) before reading its data", c.key, err)
		}
		// Half written: readers see what was there before.
		seen := func() error {
			got, err := get(ctx, s, c.key, 0, -1)
			switch {
			case c.before == nil && !errors.Is(err, storage.ErrNotFound):
				return fmt.Errorf("while a Put of %s was half done, get gave %d bytes (%v); want ErrNotFound: a Put must not be seen before it ends", c.key, len(got), err)
			case c.before != nil && (err != nil || !bytes.Equal(got, c.before)):
				return fmt.Errorf("while a Put replacing %s was half done, get gave %d bytes (%v); want the old %d: a Put must not be seen before it ends", c.key, len(got), err, len(c.before))
			}
			return nil
		}
		if err := seen(); err != nil {
			r.release <- false
			<-done
			return err
		}
		r.release <- c.finish
		err := <-done
		if !c.finish {
			if err == nil {
				return fmt.Errorf("a Put of %s whose reader failed succeeded", c.key)
			}
			if err := seen(); err != nil {
				return fmt.Errorf("after a failed Put: %w", err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("put %s: %w", c.key, err)
		}
		if err := wantObject(ctx, s, c.key, data); err != nil {
			return err
		}
		if err := s.Delete(ctx, "atomic/new"); err != nil {
			return err
		}
		if err := put(ctx, s, "atomic/replaced", old, false); err != nil {
			return err
		}
	}
	return nil
}

func checkIfAbsent(ctx context.Context, s storage.BlobStore) error {
	if err := put(ctx, s, "ia/obj", []byte("first"), true); err != nil {
		return fmt.Errorf("create if absent of a new key: %w", err)
	}
	err := put(ctx, s, "ia/obj", []byte("second"), true)
	if !errors.Is(err, storage.ErrExists) {
		return fmt.Errorf("create if absent over an existing object: %v, want ErrExists", err)
	}
	return wantObject(ctx, s, "ia/obj", []byte("first"))
}

func checkIfAbsentRace(ctx context.Context, s storage.BlobStore) error {
	const writers, rounds = 8, 20
	for round := range rounds {
		key := fmt.Sprintf("race/obj-%02d", round)
		var wg sync.WaitGroup
		errs := make([]error, writers)
		start := make(chan struct{})
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[w] = put(ctx, s, key, payload(byte(w), 64<<10), true)
			}()
		}
		close(start)
		wg.Wait()
		winner := -1
		for w, err := range errs {
			switch {
			case err == nil && winner >= 0:
				return fmt.Errorf("%s: writers %d and %d both created it: of racing creates exactly one may win", key, winner, w)
			case err == nil:
				winner = w
			case !errors.Is(err, storage.ErrExists):
				return fmt.Errorf("%s: writer %d: %v, want success or ErrExists", key, w, err)
			}
		}
		if winner < 0 {
			return fmt.Errorf("%s: none of %d racing creates won", key, writers)
		}
		if err := wantObject(ctx, s, key, payload(byte(winner), 64<<10)); err != nil {
			return fmt.Errorf("the winner's bytes: %w", err)
		}
	}
	return nil
}

func checkRanges(ctx context.Context, s storage.BlobStore) error {
	data := payload(3, 10000)
	if err := put(ctx, s, "ranges/obj", data, false); err != nil {
		return err
	}
	for _, c := range []struct{ offset, length, from, to int64 }{
		{0, -1, 0, 10000}, {0, 0, 0, 0}, {0, 1, 0, 1}, {9999, 1, 9999, 10000}, {9999, -1, 9999, 10000},
		{1234, 5000, 1234, 6234}, {5000, 10000, 5000, 10000}, {10000, -1, 10000, 10000}, {10000, 5, 10000, 10000}, {20000, 5, 10000, 10000},
	} {
		got, err := get(ctx, s, "ranges/obj", c.offset, c.length)
		if err != nil {
			return fmt.Errorf("get %d bytes from %d of 10000: %w", c.length, c.offset, err)
		}
		if !bytes.Equal(got, data[c.from:c.to]) {
			return fmt.Errorf("get %d bytes from %d of 10000 gave %d bytes, want bytes %d to %d", c.length, c.offset, len(got), c.from, c.to)
		}
	}
	return nil
}

func checkMissing(ctx context.Context, s storage.BlobStore) error {
	if _, err := s.Get(ctx, "missing/obj", 0, -1); !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("get of a missing object: %v, want ErrNotFound", err)
	}
	if _, err := s.Stat(ctx, "missing/obj"); !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("stat of a missing object: %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, "missing/obj"); err != nil {
		return fmt.Errorf("delete of a missing object: %v, want no error", err)
	}
	objs, next, err := s.List(ctx, "missing/", "", "")
	if err != nil || len(objs) != 0 || next != "" {
		return fmt.Errorf("list of an empty prefix: %v, %q, %v; want nothing", objs, next, err)
	}
	return nil
}

func checkListPages(ctx context.Context, s storage.BlobStore) error {
	const n = 2345
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs <- put(ctx, s, fmt.Sprintf("pages/%05d", i), []byte(fmt.Sprint(i)), false)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	var keys []string
	pages, token := 0, ""
	for {
		objs, next, err := s.List(ctx, "pages/", "", token)
		if err != nil {
			return fmt.Errorf("list page %d: %w", pages+1, err)
		}
		pages++
		for _, o := range objs {
			keys = append(keys, o.Key)
			if want := int64(len(fmt.Sprint(len(keys) - 1))); o.Size != want && len(keys) <= n {
				return fmt.Errorf("list: %s has size %d, want %d", o.Key, o.Size, want)
			}
		}
		if next == "" {
			break
		}
		if pages > n {
			return errors.New("list: the pages never end")
		}
		token = next
	}
	if len(keys) != n {
		return fmt.Errorf("listing %d objects page by page gave %d in %d pages", n, len(keys), pages)
	}
	for i, k := range keys {
		if want := fmt.Sprintf("pages/%05d", i); k != want {
			return fmt.Errorf("list: object %d is %s, want %s (each once, in key order)", i, k, want)
		}
	}
	return nil
}

func checkListPrefix(ctx context.Context, s storage.BlobStore) error {
	for _, k := range []string{"lp/a/1", "lp/a/2", "lp/a-b", "lp/ab/1", "lp/b/x/y", "lpz"} {
		if err := put(ctx, s, k, []byte(k), false); err != nil {
			return err
		}
	}
	for _, c := range []struct {
		prefix, after string
		want          []string
	}{
		{"lp/", "", []string{"lp/a-b", "lp/a/1", "lp/a/2", "lp/ab/1", "lp/b/x/y"}},
		{"lp/a", "", []string{"lp/a-b", "lp/a/1", "lp/a/2", "lp/ab/1"}},
		{"lp/a/", "", []string{"lp/a/1", "lp/a/2"}},
		{"lp/a/", "lp/a/1", []string{"lp/a/2"}},
		{"lp/", "lp/a/2", []string{"lp/ab/1", "lp/b/x/y"}},
		{"lp/b/", "", []string{"lp/b/x/y"}},
		{"lp/c", "", nil},
	} {
		objs, err := storage.ListAll(ctx, s, c.prefix, c.after)
		if err != nil {
			return fmt.Errorf("list %q after %q: %w", c.prefix, c.after, err)
		}
		var got []string
		for _, o := range objs {
			got = append(got, o.Key)
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			return fmt.Errorf("list %q after %q gave %v, want %v", c.prefix, c.after, got, c.want)
		}
	}
	return nil
}

func checkStatDelete(ctx context.Context, s storage.BlobStore) error {
	before := time.Now().Add(-time.Minute)
	if err := put(ctx, s, "sd/obj", payload(5, 777), false); err != nil {
		return err
	}
	o, err := s.Stat(ctx, "sd/obj")
	if err != nil {
		return fmt.Errorf("stat: %w", err)
	}
	if o.Key != "sd/obj" || o.Size != 777 || o.Modified.Before(before) || o.Modified.After(time.Now().Add(time.Minute)) {
		return fmt.Errorf("stat gave %+v, want sd/obj of 777 bytes modified about now", o)
	}
	if err := s.Delete(ctx, "sd/obj"); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	if _, err := s.Stat(ctx, "sd/obj"); !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("stat after delete: %v, want ErrNotFound", err)
	}
	if objs, err := storage.ListAll(ctx, s, "sd/", ""); err != nil || len(objs) != 0 {
		return fmt.Errorf("list after delete: %v, %v; want nothing", objs, err)
	}
	return nil
}
