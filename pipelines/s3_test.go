package pipelines_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/core/engine"
	"github.com/kpipe/kpipe/internal/testkit"
	"github.com/kpipe/kpipe/pipelines"
	"github.com/kpipe/kpipe/sdk/storage"
)

// objectsHolding lists the objects under path that contain any of values.
func objectsHolding(t *testing.T, path string, values [][]byte) []string {
	t.Helper()
	ctx := context.Background()
	store := testkit.Store(t, path)
	objs, err := storage.ListAll(ctx, store, "", "")
	if err != nil || len(objs) == 0 {
		t.Fatalf("list %s: %d objects, %v", path, len(objs), err)
	}
	var out []string
	for _, o := range objs {
		r, err := store.Get(ctx, o.Key, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			if bytes.Contains(data, v) {
				out = append(out, fmt.Sprintf("%s holds %q", o.Key, v))
				break
			}
		}
	}
	return out
}

// TestEncryptedBackupOnS3RoundTripsAndHoldsNoPlaintext backs up to the real
// S3 server, encrypted and uncompressed (so that any record bytes stored in
// the clear would show), restores whole and for a time window byte for
// byte, and greps every object for the records' keys and values: the same
// backup without a key shows them, the encrypted one does not. A restore
// without the key, or with another, fails before it writes anything.
func TestEncryptedBackupOnS3RoundTripsAndHoldsNoPlaintext(t *testing.T) {
	srv := testkit.S3(t)
	addr := testkit.Kafka(t)
	src := testkit.Topic(t, "s3src")
	testkit.CreateTopic(t, addr, src, 3)
	base := time.Now().Add(-30 * time.Minute).UnixMilli()
	recs := fidelityRecords(src, base, 300)
	testkit.Produce(t, addr, recs)
	want := testkit.ConsumeAll(t, addr, src)
	var secrets [][]byte
	for _, r := range want {
		if len(r.Value) >= 8 {
			secrets = append(secrets, r.Value)
		}
		if len(r.Key) >= 8 {
			secrets = append(secrets, r.Key)
		}
	}

	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	os.WriteFile(keyFile, []byte("8f2b5c1e9d4a7b3c6e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f\n"), 0o600)
	otherKey := filepath.Join(dir, "other")
	os.WriteFile(otherKey, []byte(strings.Repeat("ab", 32)), 0o600)

	backup := func(path string, store pipelines.StoreOptions) {
		bp := pipelines.Backup("backup", pipelines.BackupOptions{BootstrapServers: []string{addr}, Topics: []string{src},
			Path: path, Store: store, BackupID: "b1", Compression: "none"})
		setParam(&bp.Sink, "segment_max_records", 100)
		if rep := run(t, bp, options(t)); rep.RecordsOut != int64(len(want)) {
			t.Fatalf("backed up %d records to %s, want %d", rep.RecordsOut, path, len(want))
		}
	}
	plain := srv.Path(t)
	backup(plain, pipelines.StoreOptions{})
	if len(objectsHolding(t, plain, secrets)) == 0 {
		t.Fatal("no object of the unencrypted backup holds a record's bytes: the grep below proves nothing")
	}
	sealed := srv.Path(t)
	backup(sealed, pipelines.StoreOptions{EncryptionKeyFile: keyFile})
	if found := objectsHolding(t, sealed, secrets); len(found) > 0 {
		t.Fatalf("objects of the encrypted backup hold record bytes: %v", found)
	}

	restore := func(name, dst string, o pipelines.RestoreOptions) (*engine.Report, error) {
		o.Path, o.BackupID, o.BootstrapServers = sealed, "b1", []string{addr}
		o.TopicMapping = map[string]string{src: dst}
		if o.TimeWindowStart == 0 {
			o.TimeWindowStart, o.TimeWindowEnd = -1, -1
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		return engine.Run(ctx, pipelines.Restore(name, o), options(t))
	}
	// Without the key, or with another: an error that says which, and the
	// target topic never made.
	for _, c := range []struct {
		store pipelines.StoreOptions
		want  string
	}{
		{pipelines.StoreOptions{}, `backup "b1" is encrypted (aes-256-gcm, key k-`},
		{pipelines.StoreOptions{EncryptionKeyFile: otherKey}, `backup "b1" is encrypted with key k-`},
	} {
		dst := testkit.Topic(t, "nokey")
		_, err := restore("restore", dst, pipelines.RestoreOptions{Store: c.store})
		if err == nil || !strings.Contains(err.Error(), sealed+": "+c.want) {
			t.Fatalf("restore with key file %q: %v, want an error with %q", c.store.EncryptionKeyFile, err, c.want)
		}
		topics, terr := kadm.NewClient(testkit.Client(t, addr)).ListTopics(context.Background(), dst)
		if terr != nil || topics.Has(dst) {
			t.Fatalf("a restore that failed on its key made topic %s (%v)", dst, terr)
		}
	}

	dst := testkit.Topic(t, "s3dst")
	rep, err := restore("restore", dst, pipelines.RestoreOptions{Store: pipelines.StoreOptions{EncryptionKeyFile: keyFile}})
	if err != nil || rep.RecordsOut != int64(len(want)) {
		t.Fatalf("restore: %d records, %v; want %d", rep.RecordsOut, err, len(want))
	}
	compare(t, want, testkit.ConsumeAll(t, addr, dst))
	m := rep.Plugins[0].Metrics
	if m["s3_requests"] == 0 || m["s3_bytes_downloaded"] == 0 {
		t.Fatalf("the s3 source reports no requests or bytes: %v", m)
	}

	// PITR from S3: exactly the records of the window.
	start, end := base+10+100*50, base+10+100*150
	var inWindow []*kgo.Record
	for _, r := range want {
		if ts := r.Timestamp.UnixMilli(); ts >= start && ts <= end {
			inWindow = append(inWindow, r)
		}
	}
	pitr := testkit.Topic(t, "s3pitr")
	rep, err = restore("pitr", pitr, pipelines.RestoreOptions{Store: pipelines.StoreOptions{EncryptionKeyEnv: "KPIPE_TEST_PITR_KEY"},
		TimeWindowStart: start, TimeWindowEnd: end})
	if err == nil || !strings.Contains(err.Error(), `source "s3": parameter "encryption_key_env": the environment variable KPIPE_TEST_PITR_KEY is not set: set it to the key (64 hex digits or base64)`) {
		t.Fatalf("a restore naming an unset key variable: %v", err)
	}
	key, _ := os.ReadFile(keyFile)
	t.Setenv("KPIPE_TEST_PITR_KEY", strings.TrimSpace(string(key)))
	rep, err = restore("pitr", pitr, pipelines.RestoreOptions{Store: pipelines.StoreOptions{EncryptionKeyEnv: "KPIPE_TEST_PITR_KEY"},
		TimeWindowStart: start, TimeWindowEnd: end})
	if err != nil {
		t.Fatal(err)
	}
	got := testkit.ConsumeAll(t, addr, pitr)
	if len(got) != len(inWindow) || len(inWindow) == 0 {
		t.Fatalf("PITR restored %d records, want %d", len(got), len(inWindow))
	}
	for i := range inWindow {
		w, g := *inWindow[i], *got[i]
		w.Offset = g.Offset
		if d := sameRecord(&w, &g); d != "" {
			t.Fatalf("PITR record %d: %s", i, d)
		}
	}
	if m := rep.Plugins[0].Metrics; m["segments_pruned"] == 0 {
		t.Fatalf("the window pruned no segment: %v", m)
	}
}
