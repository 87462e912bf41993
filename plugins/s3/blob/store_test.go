package blob_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/kpipe/kpipe/conformance"
	"github.com/kpipe/kpipe/internal/testkit"
	"github.com/kpipe/kpipe/plugins/s3/blob"
	"github.com/kpipe/kpipe/sdk/storage"
)

// newStore returns a store on a prefix of the test bucket no other test
// uses.
func newStore(t *testing.T, srv testkit.S3Server, tune func(*blob.Options)) *blob.Store {
	t.Helper()
	o := blob.Options{
		Bucket: srv.Bucket, Prefix: srv.Prefix(t), Endpoint: srv.Endpoint, Region: srv.Region, PathStyle: true,
		AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey, PartSize: blob.MinPartSize, MaxOutage: time.Minute,
	}
	if tune != nil {
		tune(&o)
	}
	s, err := blob.New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestS3StoreConforms(t *testing.T) {
	srv := testkit.S3(t)
	conformance.RunStorage(t, func(t *testing.T) storage.BlobStore { return newStore(t, srv, nil) })
}

// TestLargeObjectsGoUpInPartsAndStayCreateIfAbsent: an object larger than
// a part, of a size not known beforehand, goes up as a multipart upload
// (one request to start, one per part, one to complete, counted in the
// store's metrics) and reads back exactly; a second create of it fails with
// ErrExists and leaves the first; a multipart upload whose reader fails
// leaves no object.
func TestLargeObjectsGoUpInPartsAndStayCreateIfAbsent(t *testing.T) {
	srv := testkit.S3(t)
	s := newStore(t, srv, nil)
	ctx := context.Background()
	data := make([]byte, 2*blob.MinPartSize+12345)
	for i := range data {
		data[i] = byte(i * 31 / 7)
	}
	if err := s.Put(ctx, "big", bytes.NewReader(data), -1, storage.PutOptions{IfAbsent: true}); err != nil {
		t.Fatal(err)
	}
	m := s.Metrics()
	if m["s3_requests"] != 5 || m["s3_bytes_uploaded"] != int64(len(data)) || m["s3_retries"] != 0 {
		t.Fatalf("metrics after a put of 3 parts: %v; want 5 requests, %d bytes uploaded, no retry", m, len(data))
	}
	err := s.Put(ctx, "big", bytes.NewReader(data[:blob.MinPartSize+1]), -1, storage.PutOptions{IfAbsent: true})
	if !errors.Is(err, storage.ErrExists) {
		t.Fatalf("a second multipart create of one key: %v, want ErrExists", err)
	}
	r, err := s.Get(ctx, "big", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (%v), want the first put's %d", len(got), err, len(data))
	}
	if m := s.Metrics(); m["s3_bytes_downloaded"] != int64(len(data)) {
		t.Fatalf("metrics after reading it: %v; want %d bytes downloaded", m, len(data))
	}
	failing := io.MultiReader(bytes.NewReader(data[:blob.MinPartSize+100]), iotest.ErrReader(errors.New("the source broke")))
	if err := s.Put(ctx, "broken", failing, -1, storage.PutOptions{}); err == nil || !strings.Contains(err.Error(), "the source broke") {
		t.Fatalf("a multipart put whose reader fails: %v", err)
	}
	if _, err := s.Stat(ctx, "broken"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("after a failed multipart put, stat says %v; want ErrNotFound", err)
	}
}

// TestAnUnreachableStoreFailsAfterTheOutageBudget: requests to a port
// nobody listens on are retried, warned about, and fail once the store has
// been unreachable for longer than MaxOutage, naming it.
func TestAnUnreachableStoreFailsAfterTheOutageBudget(t *testing.T) {
	var warnings []string
	s := newStore(t, testkit.S3Server{Endpoint: "http://127.0.0.1:1", Bucket: "nowhere", AccessKey: "k", SecretKey: "secretkey", Region: "us-east-1"}, func(o *blob.Options) {
		o.MaxOutage = 1500 * time.Millisecond
		o.WarnEvery = 500 * time.Millisecond
		o.Warn = func(msg string, args ...any) { warnings = append(warnings, msg) }
	})
	t0 := time.Now()
	_, err := s.Stat(context.Background(), "x")
	took := time.Since(t0)
	var oe *blob.OutageError
	if !errors.As(err, &oe) || took < 1500*time.Millisecond || took > 8*time.Second {
		t.Fatalf("stat on an unreachable store: %v after %s; want an OutageError after 1.5s", err, took)
	}
	want := "stat x: storage s3://nowhere/" + strings.TrimPrefix(oe.Store, "s3://nowhere/") + " unreachable or failing for longer than max_storage_outage (1.5s): dial tcp 127.0.0.1:1: connect: connection refused; what was committed before is intact, and the next run resumes after it"
	if err.Error() != want || !strings.HasPrefix(oe.Store, "s3://nowhere/test/") {
		t.Fatalf("error:\n%s\nwant:\n%s", err, want)
	}
	if len(warnings) < 2 || warnings[0] != "storage unreachable or failing; retrying" || warnings[1] != "storage still unreachable or failing; retrying" {
		t.Fatalf("warnings %q: want the first, then repeats", warnings)
	}
	if m := s.Metrics(); m["s3_retries"] < 2 || m["s3_requests"] != m["s3_retries"]+1 {
		t.Fatalf("metrics %v: want every attempt counted, the retries among them", m)
	}
}

// TestCredentialsComeFromTheStandardChain: without static keys, the store
// signs with the keys of the environment, or of a profile of the shared
// credentials file when one is named; a profile whose secret is wrong is
// refused at once, not retried.
func TestCredentialsComeFromTheStandardChain(t *testing.T) {
	srv := testkit.S3(t)
	ctx := context.Background()
	noKeys := func(o *blob.Options) { o.AccessKeyID, o.SecretAccessKey = "", "" }
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	if _, _, err := newStore(t, srv, noKeys).List(ctx, "", "", ""); err != nil {
		t.Fatalf("keys from the environment: %v", err)
	}
	file := filepath.Join(t.TempDir(), "credentials")
	os.WriteFile(file, []byte("[backups]\naws_access_key_id = "+srv.AccessKey+"\naws_secret_access_key = "+srv.SecretKey+
		"\n[wrong]\naws_access_key_id = "+srv.AccessKey+"\naws_secret_access_key = not-the-secret\n"), 0o600)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", file)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	if _, _, err := newStore(t, srv, func(o *blob.Options) { noKeys(o); o.Profile = "backups" }).List(ctx, "", "", ""); err != nil {
		t.Fatalf("keys from profile backups: %v", err)
	}
	s := newStore(t, srv, func(o *blob.Options) { noKeys(o); o.Profile = "wrong" })
	t0 := time.Now()
	_, _, err := s.List(ctx, "", "", "")
	if err == nil || !strings.Contains(err.Error(), "StatusCode: 403") || time.Since(t0) > 2*time.Second || s.Metrics()["s3_retries"] != 0 {
		t.Fatalf("a wrong secret: %v after %s (%v); want a 403 at once", err, time.Since(t0), s.Metrics())
	}
}

// TestAMissingBucketIsNamed: opening a store on a bucket that does not
// exist says so, at once.
func TestAMissingBucketIsNamed(t *testing.T) {
	srv := testkit.S3(t)
	srv.Bucket = "no-such-bucket"
	err := newStore(t, srv, nil).CheckBucket(context.Background())
	if err == nil || err.Error() != `bucket "no-such-bucket" does not exist: create it, or name another` {
		t.Fatalf("a missing bucket: %v", err)
	}
	if err := newStore(t, testkit.S3(t), nil).CheckBucket(context.Background()); err != nil {
		t.Fatalf("the test bucket: %v", err)
	}
}
