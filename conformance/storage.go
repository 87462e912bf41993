package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/kpipe/kpipe/core/plugin"
	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/record"
	"github.com/kpipe/kpipe/sdk/storage"
)

// RunStorage proves a BlobStore as a whole storage plugin. It runs
// RunBlobStore, then, with the sink and the source storage.Serve makes of
// the store (in this process), the plugin contract of RunPair (a byte-exact
// round trip of every fidelity rule, an exact resume, positions after a
// re-open and nothing stored twice), and then what the segment store
// promises on that store: a second writer is refused naming the holder; a
// writer whose lease expired and was taken over commits nothing more; a
// segment whose entry was never written (a crash between the two) is not
// read; a backup validates deep, and a deleted segment is caught.
// newStore returns an empty store each time it is called.
func RunStorage(t *testing.T, newStore func(t *testing.T) storage.BlobStore) {
	t.Run("blob_store", func(t *testing.T) { RunBlobStore(t, newStore) })
	t.Run("round_trip_and_resume", func(t *testing.T) {
		store := newStore(t)
		pr := Pair{Topic: "conformance", Partitions: 3, PerPartition: 250, BaseTimestamp: BaseTimestamp}
		params := map[string]json.RawMessage{"backup_id": json.RawMessage(`"conformance"`), "segment_max_records": json.RawMessage(strconv.Itoa(100))}
		open := func(impl any) func(t *testing.T) plugin.Instance {
			return func(t *testing.T) plugin.Instance {
				inst, err := plugin.Local(impl)
				if err != nil {
					t.Fatal(err)
				}
				ps := params
				if _, ok := impl.(sdk.Source); ok {
					ps = map[string]json.RawMessage{"backup_id": params["backup_id"]}
				}
				ctx, cancel := timeout()
				defer cancel()
				if err := inst.Configure(ctx, ps); err != nil {
					t.Fatal(err)
				}
				return inst
			}
		}
		checkRoundTrip(t, pr, func(t *testing.T) plugin.Instance { return open(storage.NewSink(&given{store}))(t) },
			func(t *testing.T) plugin.Instance { return open(storage.NewSource(&given{store}))(t) })
	})
	t.Run("one_writer", func(t *testing.T) { checkOneWriter(t, newStore(t)) })
	t.Run("segment_without_entry", func(t *testing.T) { checkOrphan(t, newStore(t)) })
	t.Run("validate", func(t *testing.T) { checkValidate(t, newStore(t)) })
}

// checkValidate: a backup on the store validates deep, every record
// decoded; with a segment deleted it does not, the segment named.
func checkValidate(t *testing.T, store storage.BlobStore) {
	ctx := context.Background()
	w, err := storage.OpenWriter(ctx, store, "valid", storage.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMetadata(ctx, sdk.Metadata{Topics: []sdk.TopicMetadata{{Name: "t", Partitions: 2}}}); err != nil {
		t.Fatal(err)
	}
	for from := int64(0); from < 30; from += 10 {
		if err := commitOne(ctx, w, from, 10); err != nil {
			t.Fatal(err)
		}
	}
	w.Close(ctx, storage.OutcomeComplete)
	r, err := storage.Validate(ctx, store, "valid", nil, sdk.ValidateOptions{Deep: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Valid || r.Checked.Records != 30 || r.Checked.Segments != 3 || r.Checked.Partitions != 2 || r.LastRun.State != storage.StateComplete {
		t.Fatalf("an intact backup: valid %v, checked %+v, last run %+v, problems %+v", r.Valid, r.Checked, r.LastRun, r.Problems)
	}
	b, err := storage.OpenBackup(ctx, store, "valid")
	if err != nil {
		t.Fatal(err)
	}
	m, err := b.Manifest(ctx, "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	seg := m.Entries[1].Segment
	if err := store.Delete(ctx, storage.Keys{ID: "valid"}.Partition("t", 0)+seg); err != nil {
		t.Fatal(err)
	}
	r, err = storage.Validate(ctx, store, "valid", nil, sdk.ValidateOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Valid || len(r.Problems) != 1 || r.Problems[0].Check != storage.CheckSegmentMissing || r.Problems[0].Segment != seg {
		t.Fatalf("a deleted segment: valid %v, problems %+v; want segment_missing naming %s", r.Valid, r.Problems, seg)
	}
}

// given is a storage plugin over a store at hand, without parameters.
type given struct{ store storage.BlobStore }

func (g *given) Spec() sdk.Spec {
	return sdk.Spec{Name: "given", Version: sdk.Version, Summary: "the store under test", Config: &struct{}{}}
}
func (g *given) Configure(context.Context) error                 { return nil }
func (g *given) Open(context.Context) (storage.BlobStore, error) { return g.store, nil }
func (g *given) Location() string                                { return "the store under test" }

// commitOne commits a segment of n records from offset from to t/0.
func commitOne(ctx context.Context, w *storage.Writer, from, n int64) error {
	pw, err := w.Partition(ctx, "t", 0)
	if err != nil {
		return err
	}
	bld := record.NewBuilder(nil)
	defer bld.Release()
	for i := from; i < from+n; i++ {
		bld.AppendFields(i, BaseTimestamp+i, record.CreateTime, nil, []byte("v"))
	}
	bounds := bld.Bounds()
	rec := bld.NewRecord()
	defer rec.Release()
	seg := pw.NewSegment(ctx, record.Zstd)
	if err := seg.Write(rec, bounds, bounds.MaxOffset+1); err != nil {
		return err
	}
	_, err = seg.Commit("")
	return err
}

func checkOneWriter(t *testing.T, store storage.BlobStore) {
	ctx := context.Background()
	alive := func(int) bool { return true }
	a, err := storage.OpenWriter(ctx, store, "lease", storage.WriterOptions{Lease: storage.LeaseOptions{Host: "host-a", Pid: 1, TTL: time.Minute, Alive: alive}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.WriteMetadata(ctx, sdk.Metadata{Topics: []sdk.TopicMetadata{{Name: "t", Partitions: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := commitOne(ctx, a, 0, 10); err != nil {
		t.Fatal(err)
	}
	bOpts := storage.WriterOptions{Lease: storage.LeaseOptions{Host: "host-b", Pid: 2, TTL: time.Minute, Alive: alive}}
	_, err = storage.OpenWriter(ctx, store, "lease", bOpts)
	var held *storage.HeldError
	if !errors.As(err, &held) || held.Lease.Host != "host-a" || held.Lease.Pid != 1 {
		t.Fatalf("a second writer while the first holds the lease: %v, want a HeldError naming pid 1 on host-a", err)
	}
	// The first writer stops renewing, as a paused one does: its lease,
	// renewed two minutes ago by its own account, has expired.
	stale := storage.Lease{Epoch: 1, Host: "host-a", Pid: 1, Since: time.Now().Add(-3 * time.Minute), Renewed: time.Now().Add(-2 * time.Minute), TTL: time.Minute}
	data, _ := json.Marshal(stale)
	if err := store.Put(ctx, storage.Keys{ID: "lease"}.Lease(1), bytes.NewReader(data), int64(len(data)), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	b, err := storage.OpenWriter(ctx, store, "lease", bOpts)
	if err != nil {
		t.Fatalf("taking over an expired lease: %v", err)
	}
	var fenced *storage.FencedError
	if err := commitOne(ctx, a, 10, 10); !errors.As(err, &fenced) {
		t.Fatalf("the writer whose lease was taken over committed (%v); want a FencedError", err)
	}
	if err := commitOne(ctx, b, 10, 10); err != nil {
		t.Fatalf("the writer that took over: %v", err)
	}
	b.Close(ctx, storage.OutcomeComplete)
	bk, err := storage.OpenBackup(ctx, store, "lease")
	if err != nil {
		t.Fatal(err)
	}
	m, err := bk.Manifest(ctx, "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Entries) != 2 || m.Entries[0].Epoch != 1 || m.Entries[1].Epoch != 2 || m.NextOffset() != 20 {
		t.Fatalf("entries %+v: want the first writer's segment, then the second's, up to offset 20", m.Entries)
	}
}

func checkOrphan(t *testing.T, store storage.BlobStore) {
	ctx := context.Background()
	w, err := storage.OpenWriter(ctx, store, "orphan", storage.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMetadata(ctx, sdk.Metadata{Topics: []sdk.TopicMetadata{{Name: "t", Partitions: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := commitOne(ctx, w, 0, 10); err != nil {
		t.Fatal(err)
	}
	w.Close(ctx, storage.OutcomeComplete)
	// A segment of offsets 10-19 made whole, then the crash: no entry.
	key := storage.SegmentKey(storage.Keys{ID: "orphan"}.Partition("t", 0), 10, 2, "")
	junk := bytes.Repeat([]byte{1}, 100)
	if err := store.Put(ctx, key, bytes.NewReader(junk), int64(len(junk)), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	var reported []string
	w, err = storage.OpenWriter(ctx, store, "orphan", storage.WriterOptions{Orphans: func(_ string, _ int32, keys []string) { reported = append(reported, keys...) }})
	if err != nil {
		t.Fatal(err)
	}
	if pos := w.Positions(); len(pos) != 1 || pos[0].NextOffset != 10 || len(reported) != 1 || reported[0] != key {
		t.Fatalf("after a crash between segment and entry: positions %v, orphans %v; want t/0@10 and %s reported", pos, reported, key)
	}
	w.Close(ctx, storage.OutcomeComplete)
	b, err := storage.OpenBackup(ctx, store, "orphan")
	if err != nil {
		t.Fatal(err)
	}
	m, err := b.Manifest(ctx, "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range m.Entries {
		r := b.Batches(ctx, "t", 0, e, nil)
		for {
			f, _, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			info, err := record.Inspect(f)
			if err != nil {
				t.Fatal(err)
			}
			n += info.Rows
		}
	}
	if n != 10 {
		t.Fatalf("read %d records, want the 10 committed", n)
	}
}
