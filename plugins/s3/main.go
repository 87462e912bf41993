// Command kpipe-plugin-s3 is kpipe's storage on Amazon S3 and S3-compatible
// object stores (package plugins/s3/blob), written and read by the SDK's
// segment store (package sdk/storage): as a sink it writes a backup under a
// bucket and prefix, as a source it reads one back.
package main

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/kpipe/kpipe/plugins/s3/blob"
	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/storage"
)

type config struct {
	Path            string        `param:"path" help:"s3://BUCKET/PREFIX: the bucket and prefix in one (or set bucket and prefix)"`
	Bucket          string        `param:"bucket" help:"bucket that holds backups (or give path)"`
	Prefix          string        `param:"prefix" help:"folder in the bucket under which backups are kept; empty for its root"`
	Endpoint        string        `param:"endpoint" help:"URL of an S3-compatible store, such as http://127.0.0.1:9000; empty for AWS (or AWS_ENDPOINT_URL_S3)"`
	Region          string        `param:"region" help:"region of the bucket; empty: from AWS_REGION or the AWS config, else us-east-1"`
	ForcePathStyle  bool          `param:"force_path_style" help:"address the bucket in the URL path (http://host/bucket/key), as most S3-compatible stores want, instead of the host name"`
	Profile         string        `param:"profile" help:"profile of the shared AWS config and credentials files; empty: AWS_PROFILE or default"`
	AccessKeyID     string        `param:"access_key_id" help:"static access key; empty: the standard AWS chain (environment, shared files and profiles, web identity, container and instance roles)"`
	SecretAccessKey string        `param:"secret_access_key" help:"secret of access_key_id"`
	SessionToken    string        `param:"session_token" help:"session token of temporary static keys"`
	PartSize        int64         `param:"part_size" default:"8388608" help:"objects larger than this go up as multipart uploads in parts of this size (at least 5 MiB); each upload holds one part in memory"`
	MaxOutage       time.Duration `param:"max_storage_outage" default:"5m" help:"how long requests are retried while the store cannot be reached, or answers with throttling or server errors, before the run fails (a warning every 10s meanwhile)"`
}

// s3 is the plugin: a prefix of a bucket.
type s3 struct{ cfg config }

func (p *s3) Spec() sdk.Spec {
	return sdk.Spec{Name: "s3", Version: sdk.Version, Summary: "backups as Arrow segments in S3 or an S3-compatible object store", Config: &p.cfg}
}

func (p *s3) Configure(context.Context) error {
	var errs param.Errors
	if p.cfg.Path != "" {
		if p.cfg.Bucket != "" || p.cfg.Prefix != "" {
			errs = append(errs, param.Errorf("path", "give either path or bucket and prefix, not both"))
		} else if b, pre, err := blob.ParseURL(p.cfg.Path); err != nil {
			errs = append(errs, param.Errorf("path", "%v", err))
		} else {
			p.cfg.Bucket, p.cfg.Prefix = b, pre
		}
	} else if p.cfg.Bucket == "" {
		errs = append(errs, param.Errorf("bucket", "is required: name the bucket, or give path = \"s3://BUCKET/PREFIX\""))
	}
	if e := p.cfg.Endpoint; e != "" {
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, param.Errorf("endpoint", "%q is not a URL of a server: write http://HOST:PORT or https://HOST", e))
		}
	}
	if p.cfg.PartSize < blob.MinPartSize {
		errs = append(errs, param.Errorf("part_size", "must be at least %d (5 MiB, the least S3 takes), got %d", blob.MinPartSize, p.cfg.PartSize))
	}
	if p.cfg.MaxOutage <= 0 {
		errs = append(errs, param.Errorf("max_storage_outage", "must be positive, got %s", p.cfg.MaxOutage))
	}
	if (p.cfg.AccessKeyID == "") != (p.cfg.SecretAccessKey == "") {
		errs = append(errs, param.Errorf("secret_access_key", "access_key_id and secret_access_key go together: give both or neither"))
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// Open opens the store and checks that its bucket is there.
func (p *s3) Open(ctx context.Context) (storage.BlobStore, error) {
	st, err := blob.New(ctx, blob.Options{
		Bucket: p.cfg.Bucket, Prefix: p.cfg.Prefix, Endpoint: p.cfg.Endpoint, Region: p.cfg.Region, PathStyle: p.cfg.ForcePathStyle,
		Profile: p.cfg.Profile, AccessKeyID: p.cfg.AccessKeyID, SecretAccessKey: p.cfg.SecretAccessKey, SessionToken: p.cfg.SessionToken,
		PartSize: p.cfg.PartSize, MaxOutage: p.cfg.MaxOutage, Warn: sdk.Logger().Warn,
	})
	if err != nil {
		return nil, err
	}
	if err := st.CheckBucket(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", p.Location(), err)
	}
	return st, nil
}

func (p *s3) Location() string { return blob.URL(p.cfg.Bucket, p.cfg.Prefix) }

func main() { storage.Serve(func() storage.Plugin { return &s3{} }) }
