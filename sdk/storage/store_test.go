package storage_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kpipe/kpipe/plugins/fs/blob"
	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/record"
	"github.com/kpipe/kpipe/sdk/storage"
)

// counting counts the requests made of a store and the bytes Get returns.
type counting struct {
	storage.BlobStore
	puts, gets, lists, stats, deletes atomic.Int64
	bytes                             atomic.Int64
}

func (c *counting) Put(ctx context.Context, key string, r io.Reader, size int64, o storage.PutOptions) error {
	c.puts.Add(1)
	return c.BlobStore.Put(ctx, key, r, size, o)
}

func (c *counting) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	c.gets.Add(1)
	r, err := c.BlobStore.Get(ctx, key, offset, length)
	if err != nil {
		return nil, err
	}
	return countedReader{r, &c.bytes}, nil
}

func (c *counting) List(ctx context.Context, prefix, startAfter, token string) ([]storage.Object, string, error) {
	c.lists.Add(1)
	return c.BlobStore.List(ctx, prefix, startAfter, token)
}

func (c *counting) Stat(ctx context.Context, key string) (storage.Object, error) {
	c.stats.Add(1)
	return c.BlobStore.Stat(ctx, key)
}

func (c *counting) Delete(ctx context.Context, key string) error {
	c.deletes.Add(1)
	return c.BlobStore.Delete(ctx, key)
}

func (c *counting) reads() int64 { return c.gets.Load() + c.lists.Load() + c.stats.Load() }

func (c *counting) reset() {
	for _, n := range []*atomic.Int64{&c.puts, &c.gets, &c.lists, &c.stats, &c.deletes, &c.bytes} {
		n.Store(0)
	}
}

type countedReader struct {
	io.ReadCloser
	n *atomic.Int64
}

func (r countedReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.n.Add(int64(n))
	return n, err
}

// frame builds a frame of n records from offset base, timestamps ts+i.
func frame(t testing.TB, base, ts int64, n int) ([]byte, record.Bounds) {
	t.Helper()
	b := record.NewBuilder(nil)
	defer b.Release()
	for i := range int64(n) {
		b.AppendFields(base+i, ts+i, record.CreateTime, []byte(fmt.Sprint("k", base+i)), []byte(fmt.Sprint("value ", base+i)))
	}
	bounds := b.Bounds()
	rec := b.NewRecord()
	defer rec.Release()
	f, err := record.NewEncoder(record.Zstd).Encode(rec, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f, bounds
}

// writeSegments commits segs segments of batches batches of per records to
// each partition of topic, offsets from 0, timestamps from ts0.
func writeSegments(t testing.TB, w *storage.Writer, topic string, partitions int32, segs, batches, per int, ts0 int64) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, partitions)
	for p := range partitions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pw, err := w.Partition(ctx, topic, p)
			if err != nil {
				errs <- err
				return
			}
			off := max(pw.NextOffset(), 0)
			for range segs {
				seg := pw.NewSegment(ctx, record.Zstd)
				for range batches {
					f, bounds := frame(t, off, ts0+off, per)
					if err := seg.WriteFrame(f, bounds, off+int64(per), 20); err != nil {
						errs <- err
						return
					}
					off += int64(per)
				}
				if _, err := seg.Commit("AAAAAAAAAAAAAAAAAAAAAA"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func meta(topic string, partitions int32) sdk.Metadata {
	return sdk.Metadata{Topics: []sdk.TopicMetadata{{Name: topic, Partitions: partitions}}}
}

// TestAWrittenBackupReadsBackExactly writes segments over several
// snapshots, reopens the backup and reads every batch back.
func TestAWrittenBackupReadsBackExactly(t *testing.T) {
	ctx := context.Background()
	store := blob.New(t.TempDir())
	w, err := storage.OpenWriter(ctx, store, "b1", storage.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMetadata(ctx, meta("orders", 3)); err != nil {
		t.Fatal(err)
	}
	writeSegments(t, w, "orders", 2, 40, 3, 10, 1_700_000_000_000) // partition 2 stays empty
	if err := w.Close(ctx, storage.OutcomeComplete); err != nil {
		t.Fatal(err)
	}

	// A new writer resumes where the first ended.
	w, err = storage.OpenWriter(ctx, store, "b1", storage.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(w.Positions()); got != "[orders/0@1200 orders/1@1200]" {
		t.Errorf("positions %s, want orders/0@1200 orders/1@1200", got)
	}
	w.Close(ctx, storage.OutcomeComplete)

	b, err := storage.OpenBackup(ctx, store, "b1")
	if err != nil {
		t.Fatal(err)
	}
	m, err := b.Metadata(ctx)
	if err != nil || len(m.Topics) != 1 || m.Topics[0].Partitions != 3 {
		t.Fatalf("metadata %+v, %v", m, err)
	}
	for p := range int32(3) {
		man, err := b.Manifest(ctx, "orders", p)
		if err != nil {
			t.Fatal(err)
		}
		wantSegs, wantNext := 40, int64(1200)
		if p == 2 {
			wantSegs, wantNext = 0, -1
		}
		if len(man.Entries) != wantSegs || man.NextOffset() != wantNext {
			t.Fatalf("partition %d: %d entries up to %d, want %d up to %d", p, len(man.Entries), man.NextOffset(), wantSegs, wantNext)
		}
		next := int64(0)
		for _, e := range man.Entries {
			if e.Kind != storage.KindSegment || e.MinOffset != next || e.Records != 30 || len(e.Batches) != 3 || e.TopicID != "AAAAAAAAAAAAAAAAAAAAAA" {
				t.Fatalf("partition %d: entry %+v, want a segment of 30 records from offset %d in 3 batches", p, e, next)
			}
			r := b.Batches(ctx, "orders", p, e, nil)
			for {
				f, bi, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				v, err := record.DecodeView(f)
				if err != nil {
					t.Fatal(err)
				}
				for i := range v.Len() {
					if v.Offset(i) != next || string(v.Value(i)) != fmt.Sprint("value ", next) {
						t.Fatalf("partition %d: record %d is offset %d %q, want %d", p, i, v.Offset(i), v.Value(i), next)
					}
					next++
				}
				if bi.MaxRecordBytes != 20 {
					t.Errorf("batch index %+v: largest record %d, want 20", bi, bi.MaxRecordBytes)
				}
			}
		}
	}
}

// TestASecondWriterIsRefusedNamingTheHolder: a live writer's lease stands;
// a dead one's is taken over at once; a released one's too.
func TestASecondWriterIsRefusedNamingTheHolder(t *testing.T) {
	ctx := context.Background()
	store := blob.New(t.TempDir())
	first, err := storage.OpenWriter(ctx, store, "b", storage.WriterOptions{Lease: storage.LeaseOptions{Host: "h1", Pid: 4242, Alive: func(int) bool { return true }}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = storage.OpenWriter(ctx, store, "b", storage.WriterOptions{Lease: storage.LeaseOptions{Host: "h1", Pid: 77, Alive: func(int) bool { return true }}})
	var held *storage.HeldError
	if !errors.As(err, &held) || held.Lease.Pid != 4242 || held.Lease.Host != "h1" || held.Lease.Epoch != 1 {
		t.Fatalf("a second writer: %v, want the lease of pid 4242 on h1", err)
	}
	// Pid 4242 is gone: the next writer takes over at once.
	second, err := storage.OpenWriter(ctx, store, "b", storage.WriterOptions{Lease: storage.LeaseOptions{Host: "h1", Pid: 78, Alive: func(pid int) bool { return pid != 4242 }}})
	if err != nil {
		t.Fatalf("after the holder died: %v", err)
	}
	if second.Epoch() != 2 {
		t.Errorf("epoch %d, want 2", second.Epoch())
	}
	first.Close(ctx, storage.OutcomeComplete)
	if err := second.Close(ctx, storage.OutcomeComplete); err != nil {
		t.Fatal(err)
	}
	third, err := storage.OpenWriter(ctx, store, "b", storage.WriterOptions{Lease: storage.LeaseOptions{Host: "h2", Pid: 1, Alive: func(int) bool { return true }}})
	if err != nil {
		t.Fatalf("after a released lease: %v", err)
	}
	third.Close(ctx, storage.OutcomeComplete)
}

// TestAWriterThatLostItsLeaseCommitsNothing: a writer paused past its
// lease's TTL while another takes over cannot commit a single entry.
func TestAWriterThatLostItsLeaseCommitsNothing(t *testing.T) {
	ctx := context.Background()
	store := blob.New(t.TempDir())
	ttl := 300 * time.Millisecond
	alive := func(int) bool { return true }
	a, err := storage.OpenWriter(ctx, store, "b", storage.WriterOptions{Lease: storage.LeaseOptions{Host: "h1", Pid: 1, TTL: ttl, Alive: alive}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.WriteMetadata(ctx, meta("t", 1)); err != nil {
		t.Fatal(err)
	}
	writeSegments(t, a, "t", 1, 1, 1, 10, 0)
	pa, _ := a.Partition(ctx, "t", 0)
	// a's next segment is written, then a pauses (its lease is taken over
	// before it commits).
	seg := pa.NewSegment(ctx, record.Zstd)
	f, bounds := frame(t, 10, 10, 10)
	if err := seg.WriteFrame(f, bounds, 20, 0); err != nil {
		t.Fatal(err)
	}
	// Pretend a stopped renewing: a second writer waits out the TTL.
	storage.StopRenewing(a)
	time.Sleep(ttl + 100*time.Millisecond)
	b, err := storage.OpenWriter(ctx, store, "b", storage.WriterOptions{Lease: storage.LeaseOptions{Host: "h1", Pid: 2, TTL: ttl, Alive: alive}})
	if err != nil {
		t.Fatalf("taking over an expired lease: %v", err)
	}
	_, err = seg.Commit("")
	var fenced *storage.FencedError
	if !errors.As(err, &fenced) || fenced.By.Pid != 2 || fenced.Epoch != 1 {
		t.Fatalf("the paused writer's commit: %v, want a FencedError naming pid 2", err)
	}
	if err := a.WriteMetadata(ctx, meta("t", 2)); !errors.As(err, &fenced) {
		t.Fatalf("the paused writer's metadata: %v, want a FencedError", err)
	}
	writeSegments(t, b, "t", 1, 1, 1, 10, 0)
	b.Close(ctx, storage.OutcomeComplete)
	bk, _ := storage.OpenBackup(ctx, store, "b")
	m, err := bk.Manifest(ctx, "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Entries) != 2 || m.Entries[1].Epoch != 2 || m.NextOffset() != 20 {
		t.Fatalf("entries %+v, want the first writer's segment then the second's, up to offset 20", m.Entries)
	}
}

// TestOpeningCostsRequestsPerPartition: opening a backup for reading or
// writing costs a few requests per partition, however many segments.
// KPIPE_STORAGE_SCALE=PARTITIONSxSEGMENTS (such as 1000x50) measures
// another size.
func TestOpeningCostsRequestsPerPartition(t *testing.T) {
	ctx := context.Background()
	store := &counting{BlobStore: blob.New(t.TempDir())}
	partitions, segments := int32(20), 50
	if scale := os.Getenv("KPIPE_STORAGE_SCALE"); scale != "" {
		if _, err := fmt.Sscanf(scale, "%dx%d", &partitions, &segments); err != nil {
			t.Fatalf("KPIPE_STORAGE_SCALE=%q: want PARTITIONSxSEGMENTS, such as 1000x50", scale)
		}
	}
	w, err := storage.OpenWriter(ctx, store, "b", storage.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.WriteMetadata(ctx, meta("t", partitions))
	writeSegments(t, w, "t", partitions, segments, 1, 1, 0)
	w.Close(ctx, storage.OutcomeComplete)

	store.reset()
	w, err = storage.OpenWriter(ctx, store, "b", storage.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.Close(ctx, storage.OutcomeComplete)
	resume := store.reads()
	store.reset()
	b, err := storage.OpenBackup(ctx, store, "b")
	if err != nil {
		t.Fatal(err)
	}
	for p := range partitions {
		if _, err := b.Manifest(ctx, "t", p); err != nil {
			t.Fatal(err)
		}
	}
	read := store.reads()
	t.Logf("%d partitions × %d segments: resume %d requests, open for reading %d", partitions, segments, resume, read)
	// Per partition: list snapshots, get one, list the entries after it,
	// get those (at most SnapshotEvery-1; 2 here).
	if max := int64(5*partitions + 10); resume > max || read > max {
		t.Errorf("resume took %d requests, reading %d; want at most %d", resume, read, max)
	}
}
