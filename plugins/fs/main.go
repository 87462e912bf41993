// Command kpipe-plugin-fs is kpipe's local file system storage: backups as
// objects under a folder (package plugins/fs/blob), written and read by the
// SDK's segment store (package sdk/storage). As a sink it writes a backup;
// as a source it reads one back in offset order per partition, reading only
// the record batches a time window can use.
package main

import (
	"context"
	"strings"

	"github.com/kpipe/kpipe/plugins/fs/blob"
	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/storage"
)

type config struct {
	Path string `param:"path" required:"true" help:"folder that holds backups"`
}

// fs is the plugin: a folder of objects.
type fs struct{ cfg config }

func (p *fs) Spec() sdk.Spec {
	return sdk.Spec{Name: "fs", Version: sdk.Version, Summary: "backups as Arrow segments on a local file system", Config: &p.cfg}
}

func (p *fs) Configure(context.Context) error {
	if scheme, _, ok := strings.Cut(p.cfg.Path, "://"); ok && !strings.ContainsRune(scheme, '/') {
		return param.Errorf("path", "%q is a URL; the fs plugin keeps backups in a folder: give its path", p.cfg.Path)
	}
	return nil
}

func (p *fs) Open(context.Context) (storage.BlobStore, error) { return blob.New(p.cfg.Path), nil }

func (p *fs) Location() string { return p.cfg.Path }

func main() { storage.Serve(func() storage.Plugin { return &fs{} }) }
