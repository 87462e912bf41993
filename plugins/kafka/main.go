// Command kpipe-plugin-kafka is kpipe's Kafka plugin, built on franz-go. As
// a source it reads topics (by name or glob, all partitions) from the start
// or from resumed positions, read_committed by default; as a sink it writes
// batches with an idempotent producer, keeping key, value, headers and
// timestamp.
package main

import "github.com/kpipe/kpipe/sdk"

func main() { sdk.Serve(NewSource, NewSink) }
