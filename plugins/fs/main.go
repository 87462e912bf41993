// Command kpipe-plugin-fs is kpipe's local file system storage: as a sink it
// writes a backup as Arrow segments with a manifest (see package
// sdk/segment); as a source it reads a backup back in offset order per
// partition, skipping segments that cannot hold records of a time window.
package main

import "github.com/kpipe/kpipe/sdk"

func main() { sdk.Serve(NewSink, NewSource) }
