// Package conformance is the suite that any kpipe plugin, built in or third
// party, runs to prove it behaves. A plugin author calls it from a test:
//
//	func TestMyStorage(t *testing.T) {
//		conformance.RunPair(t, conformance.Pair{
//			Sink:   conformance.Plugin{Dir: "bin/plugins", Name: "mystore", Params: map[string]any{...}},
//			Source: conformance.Plugin{Dir: "bin/plugins", Name: "mystore", Params: map[string]any{...}},
//			Topic:  "conformance",
//		})
//	}
//
// Every plugin runs as its own process, exactly as the runtime starts it.
// The checks:
//
//   - CheckSpec: the spec is complete: name, version, summary, the kind
//     asked for, and every parameter named, typed and described, with no
//     default on a required one.
//   - CheckRequired: Configure accepts the given parameters and rejects the
//     removal of each required parameter with an error naming it.
//   - RunPair: a sink and a source that read back what it wrote (a storage
//     plugin is usually both) round-trip records that exercise every fidelity
//     rule byte for byte, with their offsets; every batch is acked; the source
//     re-opened at positions mid-partition continues exactly there; a sink
//     that tracks positions reports them after a re-open and stores nothing
//     twice when the same batches come again.
package conformance
