package storage

import (
	"context"

	"github.com/kpipe/kpipe/sdk"
)

// Plugin is a storage plugin: all a storage author writes besides the
// BlobStore. Serve turns it into kpipe's sink and source of backups.
type Plugin interface {
	// Spec names the plugin; its Config holds the store's own parameters
	// (a folder, a bucket), which Serve declares beside the SDK's.
	Spec() sdk.Spec
	// Configure checks the store's parameters, decoded into Spec().Config;
	// return *param.Error or param.Errors to point at one.
	Configure(ctx context.Context) error
	// Open returns the store the parameters name.
	Open(ctx context.Context) (BlobStore, error)
	// Location names the store for messages: a folder, a bucket and prefix.
	Location() string
}

// Serve runs a storage plugin's process: a sink that writes backups into
// the plugin's BlobStore and a source that reads them back, both serving
// the read-only storage service. A storage plugin's main is one line:
//
//	func main() { storage.Serve(mystore.New) }
func Serve(newPlugin func() Plugin) {
	sdk.Serve(func() sdk.Sink { return NewSink(newPlugin()) }, func() sdk.Source { return NewSource(newPlugin()) })
}
