package testkit

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
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
// set, else one started with scripts/s3.sh on TestS3Port. Under -short the
// test is skipped.
func S3(t testing.TB) S3Server {
	t.Helper()
	if testing.Short() {
		t.Skip("needs an S3 server; skipped with -short")
	}
	s3Once.Do(func() {
		s3Srv = S3Server{Bucket: "kpipe", AccessKey: "kpipe", SecretKey: "kpipe-secret", Region: "us-east-1"}
		if ep := os.Getenv("KPIPE_TEST_S3"); ep != "" {
			s3Srv.Endpoint = ep
			return
		}
		s3Err = withLock("s3", func() error {
			out, err := runScript("s3.sh", []string{"S3_PORT=" + TestS3Port}, "up")
			s3Srv.Endpoint = out
			return err
		})
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

// Params are the s3 plugin's parameters for prefix of the test bucket.
func (s S3Server) Params(prefix string) map[string]any {
	return map[string]any{
		"bucket": s.Bucket, "prefix": prefix, "endpoint": s.Endpoint, "region": s.Region, "force_path_style": true,
		"access_key_id": s.AccessKey, "secret_access_key": s.SecretKey,
	}
}
