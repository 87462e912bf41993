package testkit

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	fsblob "github.com/kpipe/kpipe/plugins/fs/blob"
	s3blob "github.com/kpipe/kpipe/plugins/s3/blob"
	"github.com/kpipe/kpipe/sdk/storage"
)

// TestS3Port is the S3 server's port of tests when KPIPE_TEST_S3 is unset.
const TestS3Port = "19000"

// S3Server is a real S3-compatible server (scripts/s3.sh) and the bucket
// tests use in it, with the credentials scripts/s3.sh documents.
type S3Server struct {
	Endpoint  string
	Bucket    string
	AccessKey string
	SecretKey string
	Region    string
}

var (
	s3Once sync.Once
	s3Srv  S3Server
	s3Err  error
)

// S3 returns the tests' S3 server: KPIPE_TEST_S3 (its endpoint URL) when
// set, else one started with scripts/s3.sh on TestS3Port. It sets the
// standard AWS variables (keys, region, endpoint) in this process, so that
// the plugin processes tests start reach the server through the standard
// credential chain. Under -short the test is skipped.
func S3(t testing.TB) S3Server {
	t.Helper()
	if testing.Short() {
		t.Skip("needs an S3 server; skipped with -short")
	}
	s3Once.Do(func() {
		s3Srv = S3Server{Bucket: "kpipe", AccessKey: "kpipe", SecretKey: "kpipe-secret", Region: "us-east-1"}
		if ep := os.Getenv("KPIPE_TEST_S3"); ep != "" {
			s3Srv.Endpoint = ep
		} else {
			s3Err = withLock("s3", func() error {
				out, err := runScript("s3.sh", []string{"S3_PORT=" + TestS3Port}, "up")
				s3Srv.Endpoint = out
				return err
			})
		}
		for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": s3Srv.AccessKey, "AWS_SECRET_ACCESS_KEY": s3Srv.SecretKey,
			"AWS_REGION": s3Srv.Region, "AWS_ENDPOINT_URL_S3": s3Srv.Endpoint} {
			os.Setenv(k, v)
		}
	})
	if s3Err != nil {
		t.Fatal(s3Err)
	}
	return s3Srv
}

// runScript runs scripts/NAME with env added and returns its stdout.
func runScript(name string, env []string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(Root(), "scripts", name), args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("scripts/%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// Prefix returns a prefix of the bucket no other test uses.
func (s S3Server) Prefix(t testing.TB) string {
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	return fmt.Sprintf("test/%s-%08x", name, rand.Uint32())
}

// Path returns an s3:// URL of a prefix of the test bucket no other test
// uses.
func (s S3Server) Path(t testing.TB) string { return "s3://" + s.Bucket + "/" + s.Prefix(t) }

// Store opens the store of a storage path, as the storage plugins do: an
// s3:// URL on the test S3 server, else a folder.
func Store(t testing.TB, path string) storage.BlobStore {
	t.Helper()
	if !strings.HasPrefix(path, "s3://") {
		return fsblob.New(path)
	}
	return S3(t).Store(t, path)
}

// Store opens the store of an s3:// path on this server.
func (srv S3Server) Store(t testing.TB, path string) storage.BlobStore {
	t.Helper()
	bucket, prefix, err := s3blob.ParseURL(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := s3blob.New(context.Background(), s3blob.Options{Bucket: bucket, Prefix: prefix, Endpoint: srv.Endpoint, Region: srv.Region,
		PathStyle: true, AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey, PartSize: s3blob.MinPartSize, MaxOutage: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Params are the s3 plugin's parameters for prefix of the test bucket.
func (s S3Server) Params(prefix string) map[string]any {
	return map[string]any{
		"bucket": s.Bucket, "prefix": prefix, "endpoint": s.Endpoint, "region": s.Region, "force_path_style": true,
		"access_key_id": s.AccessKey, "secret_access_key": s.SecretKey,
	}
}

// StartS3 starts an S3 server of the test's own on a free port, with the
// credentials and bucket of the shared one, and stops it when the test
// ends: for tests that stop and start it.
func StartS3(t testing.TB) *S3Instance {
	t.Helper()
	S3(t) // builds the server binary if need be
	port := freePort(t)
	in := &S3Instance{env: []string{fmt.Sprintf("S3_PORT=%d", port), "S3_STATE_DIR=" + t.TempDir()}}
	in.S3Server = S3Server{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), Bucket: "kpipe", AccessKey: "kpipe", SecretKey: "kpipe-secret", Region: "us-east-1"}
	in.Up(t)
	t.Cleanup(func() { runScript("s3.sh", in.env, "down") })
	return in
}

// S3Instance is an S3 server a test started, stops and starts again; its
// data stays across.
type S3Instance struct {
	S3Server
	env []string
}

// Up starts the server and waits until it serves.
func (in *S3Instance) Up(t testing.TB) {
	t.Helper()
	if _, err := runScript("s3.sh", in.env, "up"); err != nil {
		t.Fatal(err)
	}
}

// Down stops the server.
func (in *S3Instance) Down(t testing.TB) {
	t.Helper()
	if _, err := runScript("s3.sh", in.env, "down"); err != nil {
		t.Fatal(err)
	}
}
