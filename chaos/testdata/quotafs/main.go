// Command quotafs is a storage plugin for the chaos tests only: the fs
// plugin's blob store (plugins/fs/blob) behind a byte quota, so that a test
// can fill the store on any machine, without root and without a small
// filesystem. The test builds it as kpipe-plugin-fs into a plugin folder of
// its own, beside links to the real plugins.
//
// The quota is KPIPE_QUOTAFS_BYTES (bytes; unset or 0: no limit), read when
// the store is opened, so that a test raises it between two runs. The bytes
// in use are those of the objects under the folder when the store is
// opened, plus what this process writes. A Put that would go past the quota
// fails, as a full disk does, with "no space left on device", and leaves
// nothing behind.
package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/kpipe/kpipe/plugins/fs/blob"
	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/storage"
)

type config struct {
	Path string `param:"path" required:"true" help:"folder that holds backups"`
}

type plugin struct{ cfg config }

func (p *plugin) Spec() sdk.Spec {
	return sdk.Spec{Name: "fs", Version: sdk.Version, Summary: "the fs storage behind a byte quota (chaos tests only)", Config: &p.cfg}
}

func (p *plugin) Configure(context.Context) error { return nil }

func (p *plugin) Location() string { return p.cfg.Path }

func (p *plugin) Open(context.Context) (storage.BlobStore, error) {
	var quota int64
	if s := os.Getenv("KPIPE_QUOTAFS_BYTES"); s != "" {
		q, err := strconv.ParseInt(s, 10, 64)
		if err != nil || q < 0 {
			return nil, fmt.Errorf("KPIPE_QUOTAFS_BYTES=%q: want a number of bytes", s)
		}
		quota = q
	}
	used, err := usage(p.cfg.Path)
	if err != nil {
		return nil, err
	}
	return &store{Store: blob.New(p.cfg.Path), quota: quota, used: used}, nil
}

// usage adds up the sizes of the objects under root (temporary files, whose
// names start with a dot, left out).
func usage(root string) (int64, error) {
	var n int64
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() && !strings.HasPrefix(d.Name(), ".") {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	return n, err
}

// store is the fs blob store with a quota on the bytes its objects hold.
type store struct {
	*blob.Store
	quota int64

	mu   sync.Mutex
	used int64 // bytes of the objects, and of the Puts under way
}

// reserve takes n more bytes, or fails as a full disk does.
func (s *store) reserve(n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.quota > 0 && s.used+n > s.quota {
		return fmt.Errorf("%w (quota of %d bytes, %d in use)", syscall.ENOSPC, s.quota, s.used)
	}
	s.used += n
	return nil
}

func (s *store) release(n int64) {
	s.mu.Lock()
	s.used -= n
	s.mu.Unlock()
}

// Put reserves the object's bytes as it reads them; when the quota runs out
// the read fails, and the fs store leaves nothing behind.
func (s *store) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) error {
	var old int64 = -1
	if !opts.IfAbsent {
		if o, err := s.Store.Stat(ctx, key); err == nil {
			old = o.Size
		}
	}
	q := &quotaReader{r: r, s: s}
	err := s.Store.Put(ctx, key, q, size, opts)
	if err != nil {
		s.release(q.n)
		return err
	}
	if old >= 0 {
		s.release(old) // replaced
	}
	return nil
}

// Delete gives the object's bytes back.
func (s *store) Delete(ctx context.Context, key string) error {
	o, statErr := s.Store.Stat(ctx, key)
	if err := s.Store.Delete(ctx, key); err != nil {
		return err
	}
	if statErr == nil {
		s.release(o.Size)
	}
	return nil
}

// quotaReader reserves each chunk it reads.
type quotaReader struct {
	r io.Reader
	s *store
	n int64 // bytes reserved
}

func (q *quotaReader) Read(p []byte) (int, error) {
	n, err := q.r.Read(p)
	if n > 0 {
		if rerr := q.s.reserve(int64(n)); rerr != nil {
			return 0, rerr
		}
		q.n += int64(n)
	}
	return n, err
}

func main() { storage.Serve(func() storage.Plugin { return &plugin{} }) }
