package blob

import (
	"fmt"
	"strings"
)

// ParseURL splits s3://BUCKET/PREFIX into its bucket and prefix.
func ParseURL(u string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(u, "s3://")
	if !ok {
		return "", "", fmt.Errorf("%q is not an s3:// URL: write s3://BUCKET/PREFIX", u)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("%q names no bucket: write s3://BUCKET/PREFIX", u)
	}
	return bucket, strings.Trim(prefix, "/"), nil
}

// URL is the s3:// URL of a bucket and prefix.
func URL(bucket, prefix string) string {
	if prefix = strings.Trim(prefix, "/"); prefix == "" {
		return "s3://" + bucket
	}
	return "s3://" + bucket + "/" + prefix
}
