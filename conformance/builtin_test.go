package conformance_test

import (
	"testing"
	"time"

	"github.com/kpipe/kpipe/conformance"
	"github.com/kpipe/kpipe/internal/testkit"
)

func TestFSStorageConforms(t *testing.T) {
	dir := testkit.PluginDir(t)
	params := map[string]any{"path": t.TempDir(), "backup_id": "conformance"}
	conformance.RunPair(t, conformance.Pair{
		Sink:   conformance.Plugin{Dir: dir, Name: "fs", Params: params},
		Source: conformance.Plugin{Dir: dir, Name: "fs", Params: params},
		Topic:  "orders",
	})
}

// TestS3StorageConforms runs the s3 plugin's processes against the real S3
// server.
func TestS3StorageConforms(t *testing.T) {
	srv := testkit.S3(t)
	dir := testkit.PluginDir(t)
	params := srv.Params(srv.Prefix(t))
	params["backup_id"] = "conformance"
	conformance.RunPair(t, conformance.Pair{
		Sink:   conformance.Plugin{Dir: dir, Name: "s3", Params: params},
		Source: conformance.Plugin{Dir: dir, Name: "s3", Params: params},
		Topic:  "orders",
	})
}

func TestKafkaConforms(t *testing.T) {
	addr := testkit.Kafka(t)
	dir := testkit.PluginDir(t)
	topic := testkit.Topic(t, "conf")
	conformance.RunPair(t, conformance.Pair{
		Sink:   conformance.Plugin{Dir: dir, Name: "kafka", Params: map[string]any{"bootstrap_servers": []string{addr}}},
		Source: conformance.Plugin{Dir: dir, Name: "kafka", Params: map[string]any{"bootstrap_servers": []string{addr}, "topics": []string{topic}}},
		Topic:  topic,
		// Recent timestamps: the broker's retention would delete old ones.
		BaseTimestamp: time.Now().Add(-time.Hour).UnixMilli(),
	})
}

func TestTransformsConform(t *testing.T) {
	dir := testkit.PluginDir(t)
	for _, p := range []conformance.Plugin{
		{Dir: dir, Name: "filter", Kind: "transform", Params: map[string]any{"expression": "partition == 0"}},
		{Dir: dir, Name: "remap", Kind: "transform", Params: map[string]any{"topic_mapping": map[string]string{"a": "b"}}},
	} {
		t.Run(p.Name, func(t *testing.T) {
			conformance.CheckSpec(t, p)
			conformance.CheckRequired(t, p)
		})
	}
}
