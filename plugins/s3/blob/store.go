// Package blob is kpipe's storage.BlobStore on Amazon S3 and S3-compatible
// object stores: objects under a prefix of a bucket. Create-if-absent is a
// conditional write (If-None-Match: *), large objects go up as multipart
// uploads, and every request is retried with backoff on throttling, server
// errors and lost connections until the store has been unreachable for
// longer than the outage budget.
package blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/kpipe/kpipe/sdk/storage"
)

// MinPartSize is the smallest part S3 takes in a multipart upload (but the
// last).
const MinPartSize = 5 << 20

// ResponseTimeout is how long a request waits for the answer's headers once
// it is sent.
const ResponseTimeout = time.Minute

// tokenKey is the user metadata that marks an object created if absent
// with a token of its own writer (see ours).
const tokenKey = "kpipe-write"

// Options say which bucket and how to reach it.
type Options struct {
	Bucket string
	Prefix string // keys are stored as Prefix + "/" + key; empty for the bucket's root
	// Endpoint is the URL of an S3-compatible store; empty for AWS (or
	// AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL).
	Endpoint  string
	Region    string // empty: from the AWS configuration, else us-east-1
	PathStyle bool   // bucket in the path rather than the host name
	// Profile is a profile of the shared AWS config and credentials files;
	// empty: AWS_PROFILE or the default one.
	Profile string
	// Static keys; when AccessKeyID is empty, credentials come from the
	// standard AWS chain: environment, shared files and profiles, web
	// identity, container and instance roles.
	AccessKeyID, SecretAccessKey, SessionToken string
	// PartSize is the size of a multipart upload's parts; an object that
	// fits in one part is one PutObject. At least MinPartSize.
	PartSize int64
	// MaxOutage is how long requests are retried while the store cannot be
	// reached (or keeps failing with throttling or server errors) before
	// they fail.
	MaxOutage time.Duration
	// Warn is told of an outage when it starts, every WarnEvery while it
	// lasts, and when it ends.
	Warn func(msg string, args ...any)
	// WarnEvery spaces the outage warnings; 0 means 10 seconds.
	WarnEvery time.Duration
}

// Store is a BlobStore on one bucket and prefix.
type Store struct {
	client   *s3.Client
	bucket   string
	prefix   string // "" or ending in "/"
	partSize int64
	retry    *retrier
	bufs     sync.Pool // *[]byte of partSize: the part being uploaded

	requests, retries, bytesUp, bytesDown atomic.Int64
}

// New returns the store Options name. It makes no request: a bucket that
// does not exist, or credentials that are refused, fail the first one.
func New(ctx context.Context, o Options) (*Store, error) {
	loads := []func(*awsconfig.LoadOptions) error{
		// kpipe retries, with its outage budget: see retrier.
		awsconfig.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
		// Checksums only where S3 requires them: trailing checksums in
		// aws-chunked bodies are not what every S3-compatible store takes,
		// and segments carry CRCs of their own.
		awsconfig.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		awsconfig.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
		// A server that takes a request and then stalls fails it, so that
		// the retrier sees a failure and the outage budget runs.
		awsconfig.WithHTTPClient(awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
			tr.ResponseHeaderTimeout = ResponseTimeout
		})),
	}
	if o.Profile != "" {
		loads = append(loads, awsconfig.WithSharedConfigProfile(o.Profile))
	}
	if o.AccessKeyID != "" {
		loads = append(loads, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(o.AccessKeyID, o.SecretAccessKey, o.SessionToken)))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, loads...)
	if err != nil {
		return nil, fmt.Errorf("load the AWS configuration: %w", err)
	}
	if o.Region != "" {
		cfg.Region = o.Region
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	client := s3.NewFromConfig(cfg, func(so *s3.Options) {
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
		}
		so.UsePathStyle = o.PathStyle
	})
	prefix := strings.Trim(o.Prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	partSize := max(o.PartSize, MinPartSize)
	s := &Store{client: client, bucket: o.Bucket, prefix: prefix, partSize: partSize}
	s.retry = &retrier{store: URL(o.Bucket, prefix), maxOutage: o.MaxOutage, warn: o.Warn, every: o.WarnEvery,
		requests: &s.requests, retries: &s.retries}
	if s.retry.every <= 0 {
		s.retry.every = 10 * time.Second
	}
	return s, nil
}

// CheckBucket fails, saying so, when the bucket does not exist or the
// credentials may not use it.
func (s *Store) CheckBucket(ctx context.Context) error {
	err := s.retry.do(ctx, "head bucket "+s.bucket, func(ctx context.Context) error {
		_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &s.bucket})
		return err
	})
	switch st := status(err); {
	case err == nil:
		return nil
	case st == http.StatusNotFound:
		return fmt.Errorf("bucket %q does not exist: create it, or name another", s.bucket)
	case st == http.StatusForbidden || st == http.StatusUnauthorized:
		return fmt.Errorf("bucket %q: access denied (HTTP %d): check the credentials and their permissions on it", s.bucket, st)
	}
	return fmt.Errorf("bucket %q: %w", s.bucket, err)
}

// Metrics are the store's request and byte counts.
func (s *Store) Metrics() map[string]int64 {
	return map[string]int64{
		"s3_requests":         s.requests.Load(),
		"s3_retries":          s.retries.Load(),
		"s3_bytes_uploaded":   s.bytesUp.Load(),
		"s3_bytes_downloaded": s.bytesDown.Load(),
	}
}

func (s *Store) key(k string) *string { return aws.String(s.prefix + k) }

// Put uploads r under key: in one request when it fits in a part, else as
// a multipart upload, which S3 makes visible only when it completes. It
// holds one part in memory, in a buffer of the store's pool. (After a
// request that failed with an early answer, Go's HTTP transport may still be
// sending its body when the buffer is reused; what it then sends belongs to
// a request already answered, and is never stored.)
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) error {
	buf := s.buf()
	defer s.bufs.Put(buf)
	n, err := io.ReadFull(r, *buf)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		if size >= 0 && int64(n) != size {
			return fmt.Errorf("put %s: the reader gave %d bytes, want %d", key, n, size)
		}
		return s.putOne(ctx, key, (*buf)[:n], opts)
	case err != nil:
		return fmt.Errorf("put %s: read: %w", key, err)
	}
	return s.putParts(ctx, key, *buf, r, size, opts)
}

// buf returns a buffer of one part from the pool.
func (s *Store) buf() *[]byte {
	if b, ok := s.bufs.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, s.partSize)
	return &b
}

func ifNoneMatch(opts storage.PutOptions) *string {
	if opts.IfAbsent {
		return aws.String("*")
	}
	return nil
}

// writeToken returns the metadata that marks a create-if-absent as this
// writer's, or nil for a plain put.
func writeToken(opts storage.PutOptions) map[string]string {
	if !opts.IfAbsent {
		return nil
	}
	var b [12]byte
	rand.Read(b[:])
	return map[string]string{tokenKey: hex.EncodeToString(b[:])}
}

func (s *Store) putOne(ctx context.Context, key string, data []byte, opts storage.PutOptions) error {
	token := writeToken(opts)
	attempts := 0
	err := s.retry.do(ctx, "put "+key, func(ctx context.Context) error {
		attempts++
		_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
			Bucket: &s.bucket, Key: s.key(key), Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))),
			IfNoneMatch: ifNoneMatch(opts), Metadata: token,
		})
		return err
	})
	if err == nil {
		s.bytesUp.Add(int64(len(data)))
		return nil
	}
	if isPreconditionFailed(err) {
		if attempts > 1 {
			// An earlier attempt may have created it, its answer lost.
			if ok, herr := s.ours(ctx, key, token); herr != nil {
				return fmt.Errorf("put %s: %w", key, herr)
			} else if ok {
				s.bytesUp.Add(int64(len(data)))
				return nil
			}
		}
		return fmt.Errorf("put %s: %w", key, storage.ErrExists)
	}
	return fmt.Errorf("put %s: %w", key, err)
}

// ours says whether key holds the object this writer created with token:
// what a retried conditional write finds when the answer to an earlier
// attempt was lost on its way.
func (s *Store) ours(ctx context.Context, key string, token map[string]string) (bool, error) {
	out, err := s.head(ctx, key)
	if err != nil {
		return false, err
	}
	return out.Metadata[tokenKey] == token[tokenKey], nil
}

// putParts uploads first and the rest of r as a multipart upload, one part
// at a time, and aborts it if anything fails.
func (s *Store) putParts(ctx context.Context, key string, first []byte, r io.Reader, size int64, opts storage.PutOptions) (err error) {
	var id *string
	token := writeToken(storage.PutOptions{IfAbsent: true}) // even for a replace: NoSuchUpload on a retry is ambiguous
	if err := s.retry.do(ctx, "put "+key, func(ctx context.Context) error {
		out, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: s.key(key), Metadata: token})
		if err == nil {
			id = out.UploadId
		}
		return err
	}); err != nil {
		return fmt.Errorf("put %s: start a multipart upload: %w", key, err)
	}
	defer func() {
		if err != nil {
			// Best effort, on a context of its own: the upload's parts
			// are invisible, and a bucket lifecycle rule for incomplete
			// uploads removes them if this fails.
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			s.requests.Add(1)
			s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: s.key(key), UploadId: id})
		}
	}()
	var parts []types.CompletedPart
	total := int64(0)
	data := first
	for len(data) > 0 {
		num := int32(len(parts) + 1)
		var etag *string
		if err := s.retry.do(ctx, "put "+key, func(ctx context.Context) error {
			out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
				Bucket: &s.bucket, Key: s.key(key), UploadId: id, PartNumber: aws.Int32(num),
				Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))),
			})
			if err == nil {
				etag = out.ETag
			}
			return err
		}); err != nil {
			return fmt.Errorf("put %s: part %d: %w", key, num, err)
		}
		s.bytesUp.Add(int64(len(data)))
		total += int64(len(data))
		parts = append(parts, types.CompletedPart{ETag: etag, PartNumber: aws.Int32(num)})
		n, err := io.ReadFull(r, first) // the part is up: its buffer takes the next
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			return fmt.Errorf("put %s: read: %w", key, err)
		}
		data = first[:n]
	}
	if size >= 0 && total != size {
		return fmt.Errorf("put %s: the reader gave %d bytes, want %d", key, total, size)
	}
	attempts := 0
	err = s.retry.do(ctx, "put "+key, func(ctx context.Context) error {
		attempts++
		_, err := s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
			Bucket: &s.bucket, Key: s.key(key), UploadId: id,
			MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}, IfNoneMatch: ifNoneMatch(opts),
		})
		return err
	})
	if err == nil {
		return nil
	}
	if attempts > 1 && (isPreconditionFailed(err) || code(err) == "NoSuchUpload") {
		// An earlier attempt may have completed it, its answer lost.
		if ok, herr := s.ours(ctx, key, token); herr != nil {
			return fmt.Errorf("put %s: %w", key, herr)
		} else if ok {
			return nil
		}
	}
	if isPreconditionFailed(err) {
		return fmt.Errorf("put %s: %w", key, storage.ErrExists)
	}
	return fmt.Errorf("put %s: complete the multipart upload: %w", key, err)
}

// Get reads a range of key. The body resumes where it stopped if the
// connection breaks while it is read.
func (s *Store) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if length == 0 {
		if _, err := s.Stat(ctx, key); err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	end := int64(-1) // exclusive; -1: to the object's end
	if length > 0 {
		end = offset + length
	}
	b := &body{s: s, ctx: ctx, key: key, off: offset, end: end}
	if err := b.open(); err != nil {
		return nil, err
	}
	return b, nil
}

// maxBreaks is how many times in a row a body's connection may break
// before a byte comes through.
const maxBreaks = 8

// body is the body of a ranged GET that reopens the rest of its range when
// the connection breaks.
type body struct {
	s        *Store
	ctx      context.Context
	key      string
	off, end int64
	rc       io.ReadCloser
	eof      bool
	etag     *string // of the first answer: a resumed read must find the same object
	breaks   int     // connections broken in a row without a byte read
}

func (b *body) open() error {
	var rng *string
	switch {
	case b.end >= 0:
		rng = aws.String(fmt.Sprintf("bytes=%d-%d", b.off, b.end-1))
	case b.off > 0:
		rng = aws.String(fmt.Sprintf("bytes=%d-", b.off))
	}
	err := b.s.retry.do(b.ctx, "get "+b.key, func(ctx context.Context) error {
		out, err := b.s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.s.bucket, Key: b.s.key(b.key), Range: rng, IfMatch: b.etag})
		if err == nil {
			b.rc = out.Body
			b.etag = out.ETag
		}
		return err
	})
	switch {
	case err == nil:
		return nil
	case isNotFound(err):
		return fmt.Errorf("get %s: %w", b.key, storage.ErrNotFound)
	case status(err) == http.StatusRequestedRangeNotSatisfiable:
		b.eof = true // the range starts at or past the end
		return nil
	}
	return fmt.Errorf("get %s: %w", b.key, err)
}

func (b *body) Read(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	for {
		n, err := b.rc.Read(p)
		b.off += int64(n)
		b.s.bytesDown.Add(int64(n))
		if n > 0 {
			b.breaks = 0
		}
		switch {
		case err == nil || n > 0 && err != io.EOF:
			return n, nil
		case err == io.EOF:
			b.eof = true
			return n, io.EOF
		case b.ctx.Err() != nil:
			return n, b.ctx.Err()
		}
		// The connection broke: read the rest of the range anew, after a
		// pause that grows while connections keep breaking at once.
		b.rc.Close()
		b.rc = nil
		if b.end >= 0 && b.off >= b.end {
			b.eof = true
			return 0, io.EOF
		}
		if b.breaks++; b.breaks > maxBreaks {
			return 0, fmt.Errorf("get %s: the connection broke %d times in a row at byte %d: %w", b.key, b.breaks, b.off, err)
		}
		select {
		case <-time.After(time.Duration(b.breaks) * 200 * time.Millisecond):
		case <-b.ctx.Done():
			return 0, b.ctx.Err()
		}
		if oerr := b.open(); oerr != nil {
			return 0, fmt.Errorf("get %s: %v; reading again from byte %d: %w", b.key, err, b.off, oerr)
		}
		if b.eof {
			return 0, io.EOF
		}
	}
}

func (b *body) Close() error {
	if b.rc == nil {
		return nil
	}
	return b.rc.Close()
}

func (s *Store) head(ctx context.Context, key string) (*s3.HeadObjectOutput, error) {
	var out *s3.HeadObjectOutput
	err := s.retry.do(ctx, "stat "+key, func(ctx context.Context) error {
		var err error
		out, err = s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: s.key(key)})
		return err
	})
	return out, err
}

// Stat describes key.
func (s *Store) Stat(ctx context.Context, key string) (storage.Object, error) {
	out, err := s.head(ctx, key)
	switch {
	case isNotFound(err):
		return storage.Object{}, fmt.Errorf("stat %s: %w", key, storage.ErrNotFound)
	case err != nil:
		return storage.Object{}, fmt.Errorf("stat %s: %w", key, err)
	}
	return storage.Object{Key: key, Size: aws.ToInt64(out.ContentLength), Modified: aws.ToTime(out.LastModified)}, nil
}

// List lists a page of up to 1000 objects.
func (s *Store) List(ctx context.Context, prefix, startAfter, token string) ([]storage.Object, string, error) {
	in := &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: s.key(prefix), MaxKeys: aws.Int32(1000)}
	if startAfter != "" {
		in.StartAfter = s.key(startAfter)
	}
	if token != "" {
		in.ContinuationToken = aws.String(token)
	}
	var out *s3.ListObjectsV2Output
	if err := s.retry.do(ctx, "list "+prefix, func(ctx context.Context) error {
		var err error
		out, err = s.client.ListObjectsV2(ctx, in)
		return err
	}); err != nil {
		return nil, "", fmt.Errorf("list %s: %w", prefix, err)
	}
	objs := make([]storage.Object, 0, len(out.Contents))
	for _, o := range out.Contents {
		objs = append(objs, storage.Object{Key: strings.TrimPrefix(aws.ToString(o.Key), s.prefix), Size: aws.ToInt64(o.Size), Modified: aws.ToTime(o.LastModified)})
	}
	next := ""
	if aws.ToBool(out.IsTruncated) {
		next = aws.ToString(out.NextContinuationToken)
	}
	return objs, next, nil
}

// Delete removes key; S3 answers the same whether it existed or not.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.retry.do(ctx, "delete "+key, func(ctx context.Context) error {
		_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: s.key(key)})
		return err
	}); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

var _ storage.BlobStore = (*Store)(nil)
