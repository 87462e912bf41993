package storage_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kpipe/kpipe/plugins/fs/blob"
	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/storage"
)

const topicID = "AAAAAAAAAAAAAAAAAAAAAA"

// validated is a small backup to damage: orders/0 and orders/1 hold six
// segments each (two batches of ten records), orders/2 is empty, and
// orders/1 has a gap recorded after its segments. Snapshots come every
// four entries, so entries 0–3 are in one and 4–6 stand alone.
func validated(t *testing.T) (root string, store storage.BlobStore) {
	t.Helper()
	ctx := context.Background()
	root = t.TempDir()
	store = blob.New(root)
	w, err := storage.OpenWriter(ctx, store, "b1", storage.WriterOptions{SnapshotEvery: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMetadata(ctx, meta("orders", 3)); err != nil {
		t.Fatal(err)
	}
	writeSegments(t, w, "orders", 2, 6, 2, 10, 1_700_000_000_000)
	pw, err := w.Partition(ctx, "orders", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pw.Gap(ctx, 120, 150, "deleted by retention", topicID); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(ctx, storage.OutcomeComplete); err != nil {
		t.Fatal(err)
	}
	return root, store
}

func validate(t *testing.T, store storage.BlobStore, deep bool) *storage.Report {
	t.Helper()
	r, err := storage.Validate(context.Background(), store, "b1", nil, sdk.ValidateOptions{Deep: deep}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// problems renders a report's problems one per line: check, where, and
// the offsets.
func problems(r *storage.Report) string {
	var b strings.Builder
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "%s %s", p.Check, p.Topic)
		if p.Partition != nil {
			fmt.Fprintf(&b, "/%d", *p.Partition)
		}
		if p.Segment != "" {
			fmt.Fprintf(&b, " %s", p.Segment)
		} else if p.Object != "" {
			fmt.Fprintf(&b, " %s", p.Object)
		}
		if p.FromOffset != nil {
			fmt.Fprintf(&b, " %d", *p.FromOffset)
		}
		if p.ToOffset != nil {
			fmt.Fprintf(&b, "-%d", *p.ToOffset)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func entries(t *testing.T, store storage.BlobStore, partition int32) []storage.Entry {
	t.Helper()
	b, err := storage.OpenBackup(context.Background(), store, "b1")
	if err != nil {
		t.Fatal(err)
	}
	m, err := b.Manifest(context.Background(), "orders", partition)
	if err != nil {
		t.Fatal(err)
	}
	return m.Entries
}

func segmentPath(root string, partition int32, seg string) string {
	return filepath.Join(root, "b1", "topics", "orders", fmt.Sprint(partition), seg)
}

func TestAnIntactBackupIsValid(t *testing.T) {
	_, store := validated(t)
	for _, deep := range []bool{false, true} {
		r := validate(t, store, deep)
		if !r.Valid || len(r.Problems) != 0 || len(r.Notes) != 0 {
			t.Fatalf("deep=%v: valid %v, problems:\n%s", deep, r.Valid, problems(r))
		}
		want := storage.Checked{Partitions: 3, Entries: 2 + 3, Segments: 12} // those after the snapshots
		if deep {
			want = storage.Checked{Partitions: 3, Entries: 6 + 7, Segments: 12, Records: 240, BytesRead: r.Checked.BytesRead}
			if r.Checked.BytesRead == 0 {
				t.Error("a deep validation read no bytes")
			}
		}
		if r.Checked != want {
			t.Errorf("deep=%v: checked %+v, want %+v", deep, r.Checked, want)
		}
		if r.LastRun.State != storage.StateComplete || r.LastRun.Runs != 1 {
			t.Errorf("last run %+v, want complete after 1 run", r.LastRun)
		}
		var got []string
		for _, p := range r.Partitions {
			s := fmt.Sprintf("%s/%d %d records %d segments %d gaps next %d", p.Topic, p.Partition, p.Records, p.Segments, p.Gaps, p.NextOffset)
			if p.EarliestOffset != nil {
				s += fmt.Sprintf(" offsets %d-%d ts %s-%s", *p.EarliestOffset, *p.LatestOffset, p.EarliestRecord.ISO, p.LatestRecord.ISO)
			}
			got = append(got, s)
		}
		want2 := []string{
			"orders/0 120 records 6 segments 0 gaps next 120 offsets 0-119 ts 2023-11-14T22:13:20.000Z-2023-11-14T22:13:20.119Z",
			"orders/1 120 records 6 segments 1 gaps next 150 offsets 0-119 ts 2023-11-14T22:13:20.000Z-2023-11-14T22:13:20.119Z",
			"orders/2 0 records 0 segments 0 gaps next -1",
		}
		if strings.Join(got, "\n") != strings.Join(want2, "\n") {
			t.Errorf("deep=%v: partitions\n%s\nwant\n%s", deep, strings.Join(got, "\n"), strings.Join(want2, "\n"))
		}
	}
}

// TestValidationCatchesEachCorruption damages a copy of the backup in each
// of the ways a store can, and checks that validation names the damage:
// the deleted segment and the deleted entry also without --deep.
func TestValidationCatchesEachCorruption(t *testing.T) {
	for _, c := range []struct {
		name         string
		damage       func(t *testing.T, root string, store storage.BlobStore)
		plain, deep  string // problems() of each; plain "" means valid
		deepContains string // a message the deep report holds
	}{{
		name: "flipped byte",
		damage: func(t *testing.T, root string, store storage.BlobStore) {
			e := entries(t, store, 0)[2]
			flip(t, segmentPath(root, 0, e.Segment), e.Batches[1].Start+e.Batches[1].Length/2)
		},
		deep:         "checksum orders/0 segment-00000000000000000040-1-AAAAAAAAAAAAAAAAAAAAAA 50-59\n",
		deepContains: "batch 1 (offsets 50 to 59, bytes ",
	}, {
		name: "truncated segment",
		damage: func(t *testing.T, root string, store storage.BlobStore) {
			e := entries(t, store, 1)[5]
			if err := os.Truncate(segmentPath(root, 1, e.Segment), e.Batches[1].Start+10); err != nil {
				t.Fatal(err)
			}
		},
		plain: "segment_size orders/1 segment-00000000000000000100-1-AAAAAAAAAAAAAAAAAAAAAA 100-119\n",
		deep: "segment_size orders/1 segment-00000000000000000100-1-AAAAAAAAAAAAAAAAAAAAAA 100-119\n" +
			"segment_size orders/1 segment-00000000000000000100-1-AAAAAAAAAAAAAAAAAAAAAA 110-119\n",
		deepContains: "10 bytes into batch 1 (offsets 110 to 119): it is cut short, and the records from offset 110 on are lost",
	}, {
		name: "deleted segment",
		damage: func(t *testing.T, root string, store storage.BlobStore) {
			os.Remove(segmentPath(root, 0, entries(t, store, 0)[0].Segment))
		},
		plain:        "segment_missing orders/0 segment-00000000000000000000-1 0-19\n",
		deep:         "segment_missing orders/0 segment-00000000000000000000-1 0-19\n",
		deepContains: "segment segment-00000000000000000000-1 is missing: its 20 records (offsets 0 to 19) are lost",
	}, {
		name: "deleted manifest entry",
		damage: func(t *testing.T, root string, store storage.BlobStore) {
			os.Remove(filepath.Join(root, "b1/topics/orders/0/entry-00000000000000000004"))
		},
		plain: "entry_missing orders/0 topics/orders/0/entry-00000000000000000004\n" +
			"offset_continuity orders/0 segment-00000000000000000100-1-AAAAAAAAAAAAAAAAAAAAAA 80-99\n" +
			"unknown_object orders/0 segment-00000000000000000080-1-AAAAAAAAAAAAAAAAAAAAAA 80\n",
		deep: "entry_missing orders/0 topics/orders/0/entry-00000000000000000004\n" +
			"offset_continuity orders/0 segment-00000000000000000100-1-AAAAAAAAAAAAAAAAAAAAAA 80-99\n" +
			"unknown_object orders/0 segment-00000000000000000080-1-AAAAAAAAAAAAAAAAAAAAAA 80\n",
		deepContains: "entry 5 starts at offset 100, but the entry before (3) ended at 80: the entries between are lost (offsets 80 to 99)",
	}, {
		name: "deleted last manifest entry",
		damage: func(t *testing.T, root string, store storage.BlobStore) {
			os.Remove(filepath.Join(root, "b1/topics/orders/0/entry-00000000000000000005"))
		},
		plain:        "unknown_object orders/0 segment-00000000000000000100-1-AAAAAAAAAAAAAAAAAAAAAA 100\n",
		deep:         "unknown_object orders/0 segment-00000000000000000100-1-AAAAAAAAAAAAAAAAAAAAAA 100\n",
		deepContains: "the run that wrote it (1) ended cleanly: its entry was lost (records from offset 100 on are not restorable)",
	}, {
		name: "deleted entry a snapshot holds",
		damage: func(t *testing.T, root string, store storage.BlobStore) {
			os.Remove(filepath.Join(root, "b1/topics/orders/1/entry-00000000000000000001"))
		},
		plain:        "entry_missing orders/1 segment-00000000000000000020-1-AAAAAAAAAAAAAAAAAAAAAA\n",
		deep:         "entry_missing orders/1 segment-00000000000000000020-1-AAAAAAAAAAAAAAAAAAAAAA\n",
		deepContains: "entry-00000000000000000001 is missing; snapshot 3 still holds a copy, so no records are lost",
	}, {
		name: "unknown objects",
		damage: func(t *testing.T, root string, store storage.BlobStore) {
			os.MkdirAll(filepath.Join(root, "b1/topics/orders/2"), 0o755)
			os.WriteFile(filepath.Join(root, "b1/topics/orders/2/stray"), []byte("x"), 0o644)
			os.WriteFile(filepath.Join(root, "b1/notes.txt"), []byte("x"), 0o644)
		},
		plain:        "unknown_object  notes.txt\nunknown_object orders/2 topics/orders/2/stray\n",
		deep:         "unknown_object  notes.txt\nunknown_object orders/2 topics/orders/2/stray\n",
		deepContains: "object stray is not one a backup holds",
	}, {
		name: "index whose count disagrees",
		damage: func(t *testing.T, root string, store storage.BlobStore) {
			path := filepath.Join(root, "b1/topics/orders/1/entry-00000000000000000005")
			data, _ := os.ReadFile(path)
			var e storage.Entry
			json.Unmarshal(data, &e)
			e.Batches[0].Records, e.Records = 9, 19 // a consistent lie: only the records can tell
			data, _ = json.Marshal(e)
			os.WriteFile(path, data, 0o644)
		},
		deep:         "index_mismatch orders/1 segment-00000000000000000100-1-AAAAAAAAAAAAAAAAAAAAAA 100-109\n",
		deepContains: "batch 0 (offsets 100 to 109): it holds 10 records, offsets 100 to 109, timestamps 1700000000100 to 1700000000109; its index says 9 records",
	}} {
		t.Run(c.name, func(t *testing.T) {
			root, store := validated(t)
			c.damage(t, root, store)
			plain := validate(t, store, false)
			if got := problems(plain); got != c.plain || plain.Valid != (c.plain == "") {
				t.Errorf("plain: valid %v, problems\n%s\nwant\n%s", plain.Valid, got, c.plain)
			}
			deep := validate(t, store, true)
			if got := problems(deep); got != c.deep || deep.Valid {
				t.Errorf("deep: valid %v, problems\n%s\nwant\n%s", deep.Valid, got, c.deep)
			}
			var all []string
			for _, p := range deep.Problems {
				all = append(all, p.Message)
			}
			if !strings.Contains(strings.Join(all, "\n"), c.deepContains) {
				t.Errorf("deep: no message holds %q:\n%s", c.deepContains, strings.Join(all, "\n"))
			}
		})
	}
}

func flip(t *testing.T, path string, at int64) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[at] ^= 0x40
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestAKilledRunsLeftoverIsNoProblem: a segment a run wrote but never
// committed (it was killed) is a note, and the backup stays valid; the
// same segment after a clean end is a problem.
func TestAKilledRunsLeftoverIsNoProblem(t *testing.T) {
	ctx := context.Background()
	root, store := validated(t)
	w, err := storage.OpenWriter(ctx, store, "b1", storage.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key := storage.SegmentKey("b1/topics/orders/0/", 120, w.Epoch(), topicID)
	if err := store.Put(ctx, key, bytes.NewReader([]byte("half a segment")), -1, storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	r := validate(t, store, true)
	if !r.Valid || len(r.Notes) != 1 || r.Notes[0].Check != storage.NoteLeftover || r.Notes[0].Segment != "segment-00000000000000000120-2-"+topicID {
		t.Fatalf("valid %v, problems\n%s notes %+v", r.Valid, problems(r), r.Notes)
	}
	if r.LastRun.State != storage.StateInProgress {
		t.Errorf("state %q while a writer holds the backup, want in_progress", r.LastRun.State)
	}
	w.Close(ctx, storage.OutcomeStopped)
	if r := validate(t, store, false); r.Valid || problems(r) != "unknown_object orders/0 segment-00000000000000000120-2-AAAAAAAAAAAAAAAAAAAAAA 120\n" {
		t.Errorf("after a clean end: valid %v, problems\n%s", r.Valid, problems(r))
	}
	if r := validate(t, store, false); r.LastRun.State != storage.StateStopped || r.LastRun.Runs != 2 {
		t.Errorf("last run %+v, want stopped after 2 runs", r.LastRun)
	}
	_ = root
}

// TestAnExpiredLeaseIsAFailedRun: a writer that stopped renewing (killed
// elsewhere) and let its lease expire leaves a failed backup.
func TestAnExpiredLeaseIsAFailedRun(t *testing.T) {
	ctx := context.Background()
	_, store := validated(t)
	w, err := storage.OpenWriter(ctx, store, "b1", storage.WriterOptions{Lease: storage.LeaseOptions{TTL: 300 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	storage.StopRenewing(w)
	time.Sleep(400 * time.Millisecond)
	if r := validate(t, store, false); r.LastRun.State != storage.StateFailed || !r.Valid {
		t.Errorf("state %q, valid %v; want failed and valid", r.LastRun.State, r.Valid)
	}
}

func TestMaxAgeFailsAStaleBackup(t *testing.T) {
	_, store := validated(t)
	r, err := storage.Validate(context.Background(), store, "b1", nil, sdk.ValidateOptions{MaxAge: time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	if r.Valid || len(r.Problems) != 1 || r.Problems[0].Check != storage.CheckStale || !strings.Contains(r.Problems[0].Message, "older than the maximum age 1ms (the backup's last run is complete)") {
		t.Errorf("valid %v, problems %+v", r.Valid, r.Problems)
	}
	r, _ = storage.Validate(context.Background(), store, "b1", nil, sdk.ValidateOptions{MaxAge: time.Hour}, nil)
	if !r.Valid {
		t.Errorf("a fresh backup with --max-age 1h: problems %+v", r.Problems)
	}
}

func TestDescribeSumsTheBackupUp(t *testing.T) {
	_, store := validated(t)
	d, err := storage.Describe(context.Background(), store, "b1")
	if err != nil {
		t.Fatal(err)
	}
	var stored, uncompressed int64
	for p := range int32(2) {
		for _, e := range entries(t, store, p) {
			stored, uncompressed = stored+e.Size, uncompressed+e.Uncompressed
		}
	}
	if want := (storage.Totals{Records: 240, Segments: 12, StoredBytes: stored, UncompressedBytes: uncompressed, Gaps: 1}); d.Totals != want || uncompressed == 0 {
		t.Errorf("totals %+v, want %+v", d.Totals, want)
	}
	if d.EarliestRecord.EpochMS != 1_700_000_000_000 || d.LatestRecord.EpochMS != 1_700_000_000_119 || d.EarliestRecord.ISO != "2023-11-14T22:13:20.000Z" {
		t.Errorf("time range %+v – %+v", d.EarliestRecord, d.LatestRecord)
	}
	if len(d.Topics) != 1 || len(d.Topics[0].Incarnations) != 1 || len(d.Topics[0].Incarnations[0].PartitionDetails) != 3 {
		t.Fatalf("topics %+v", d.Topics)
	}
	p1 := d.Topics[0].Incarnations[0].PartitionDetails[1]
	if len(p1.GapList) != 1 || p1.GapList[0].FromOffset != 120 || p1.GapList[0].ToOffset != 149 || p1.GapList[0].Reason != "deleted by retention" {
		t.Errorf("gaps %+v", p1.GapList)
	}
	if d.LastRun.State != storage.StateComplete {
		t.Errorf("state %q", d.LastRun.State)
	}
}

// TestValidatingAnEncryptedBackup: deep with the key decrypts every batch;
// an entry altered to say its segment is not encrypted is caught without
// reading it, and a sealed batch altered by one bit does not decrypt.
func TestValidatingAnEncryptedBackup(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	store := blob.New(root)
	key := mustKey(t, hexKey)
	if err := writePlain(t, store, "enc", key); err != nil {
		t.Fatal(err)
	}
	w, _ := storage.OpenWriter(ctx, store, "enc", storage.WriterOptions{Key: key})
	w.WriteMetadata(ctx, meta("t", 1))
	w.Close(ctx, storage.OutcomeComplete)
	r, err := storage.Validate(ctx, store, "enc", key, sdk.ValidateOptions{Deep: true}, nil)
	if err != nil || !r.Valid || r.Checked.Records != 100 {
		t.Fatalf("deep with the key: %v, valid %v, checked %+v, problems\n%s", err, r != nil && r.Valid, r.Checked, problems(r))
	}
	b, _ := storage.OpenBackup(ctx, store, "enc")
	m, _ := b.Manifest(ctx, "t", 0)
	e := m.Entries[0]

	// The sealed bytes and their CRC both altered: only decryption can tell.
	path := filepath.Join(root, "enc/topics/t/0", e.Segment)
	data, _ := os.ReadFile(path)
	bi := e.Batches[1]
	data[bi.Start+bi.Length/2] ^= 1
	os.WriteFile(path, data, 0o644)
	entryPath := filepath.Join(root, "enc/topics/t/0/entry-00000000000000000000")
	altered := e
	altered.Batches = append([]storage.BatchIndex(nil), e.Batches...)
	altered.Batches[1].CRC = crc32c(data[bi.Start : bi.Start+bi.Length])
	js, _ := json.Marshal(altered)
	os.WriteFile(entryPath, js, 0o644)
	r, _ = storage.Validate(ctx, store, "enc", key, sdk.ValidateOptions{Deep: true}, nil)
	if got := problems(r); got != "decrypt t/0 "+e.Segment+" 50-99\n" {
		t.Errorf("a sealed batch altered: problems\n%s", got)
	}

	altered.Encryption, altered.KeyID = "", ""
	js, _ = json.Marshal(altered)
	os.WriteFile(entryPath, js, 0o644)
	r, _ = storage.Validate(ctx, store, "enc", nil, sdk.ValidateOptions{}, nil)
	if r.Valid || len(r.Problems) != 1 || r.Problems[0].Message != "segment "+e.Segment+" is not encrypted, but the backup is: its entry was altered" {
		t.Errorf("an entry altered to say it is not encrypted: problems %+v", r.Problems)
	}
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }
