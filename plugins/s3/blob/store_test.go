package blob_test

import (
	"context"
	"testing"
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
