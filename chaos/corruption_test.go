package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/internal/testkit"
	"github.com/kpipe/kpipe/sdk/storage"
)

// Corruption after the backup: each of six kinds of damage is done to its
// own copy of one backup, in a folder and on the S3 server, and `kpipe
// validate` must name it; the intact backup must pass.

func TestValidateCatchesCorruptionOnFS(t *testing.T) {
	corruptions(t, filepath.Join(t.TempDir(), "backups"))
}

func TestValidateCatchesCorruptionOnS3(t *testing.T) {
	corruptions(t, testkit.S3(t).Path(t), "--s3-force-path-style")
}

// corruption damages backup id of store.
type corruption struct {
	name string
	// damage returns the segment it names, or the object it adds.
	damage func(t *testing.T, store storage.BlobStore, id string) string
	// check is the problem validate must report; plain says whether a
	// validation without --deep must see it too.
	check string
	plain bool
}

var corruptionKinds = []corruption{
	{"flipped byte", func(t *testing.T, store storage.BlobStore, id string) string {
		e := entry(t, store, id, 1, 1)
		key := segmentKey(id, 1, e)
		data := read(t, store, key)
		data[e.Batches[0].Start+e.Batches[0].Length/2] ^= 0x01
		put(t, store, key, data)
		return e.Segment
	}, storage.CheckChecksum, false},
	{"truncated segment", func(t *testing.T, store storage.BlobStore, id string) string {
		e := entry(t, store, id, 2, 0)
		key := segmentKey(id, 2, e)
		put(t, store, key, read(t, store, key)[:e.Size/2])
		return e.Segment
	}, storage.CheckSegmentSize, true},
	{"deleted segment", func(t *testing.T, store storage.BlobStore, id string) string {
		e := entry(t, store, id, 0, 2)
		if err := store.Delete(context.Background(), segmentKey(id, 0, e)); err != nil {
			t.Fatal(err)
		}
		return e.Segment
	}, storage.CheckSegmentMissing, true},
	{"deleted manifest entry", func(t *testing.T, store storage.BlobStore, id string) string {
		// The last entry of partition 1: no hole in the entries' numbers
		// shows, only the segment no entry names any more.
		m := manifest(t, store, id, 1)
		e := m.Entries[len(m.Entries)-1]
		if err := store.Delete(context.Background(), storage.EntryKey(storage.Keys{ID: id}.Partition(corruptTopic, 1), e.Seq)); err != nil {
			t.Fatal(err)
		}
		return e.Segment
	}, storage.CheckUnknownObject, true},
	{"unknown object", func(t *testing.T, store storage.BlobStore, id string) string {
		put(t, store, storage.Keys{ID: id}.Partition(corruptTopic, 0)+"segment-00000000000000000000-9", []byte("not a segment"))
		return "segment-00000000000000000000-9"
	}, storage.CheckUnknownObject, true},
	{"index whose count disagrees", func(t *testing.T, store storage.BlobStore, id string) string {
		e := entry(t, store, id, 2, 1)
		key := storage.EntryKey(storage.Keys{ID: id}.Partition(corruptTopic, 2), e.Seq)
		e.Batches[0].Records--
		e.Records--
		data, _ := json.Marshal(e)
		put(t, store, key, data)
		return e.Segment
	}, storage.CheckIndex, false},
}

const corruptTopic = "corrupt"

func corruptions(t *testing.T, path string, flags ...string) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, corruptTopic)
	testkit.CreateTopic(t, addr, topic, 3)
	var recs []*kgo.Record
	for p := range int32(3) {
		for i := range 3000 {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Key: fmt.Appendf(nil, "k%d", i),
				Value: bytes.Repeat([]byte{byte(i)}, 100+i%50), Headers: []kgo.RecordHeader{{Key: "h", Value: fmt.Appendf(nil, "%d", i)}},
				Timestamp: time.UnixMilli(1_700_000_000_000 + int64(i))})
		}
	}
	testkit.Produce(t, addr, recs)
	kpipe := func(args ...string) (int, string, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, testkit.KpipeBinary(t), append([]string{"--plugin-dir", testkit.PluginDir(t)}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.Run()
		return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
	}
	storeArgs := append([]string{"--path", path}, flags...)
	// Back up under the topic's own name, then copy the backup per case,
	// its topic renamed corruptTopic: each damage gets a backup of its own.
	if code, _, errText := kpipe(append([]string{"backup", "--bootstrap-servers", addr, "--topics", topic, "--backup-id", "src",
		"--segment-max-records", "1000", "--state-dir", t.TempDir(), "--progress", "off"}, storeArgs...)...); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, errText)
	}
	store := testkit.Store(t, path)
	validate := func(id string, deep bool) (int, storage.Report, string) {
		t.Helper()
		args := append([]string{"--format", "json", "validate", "--backup-id", id, "--progress", "off"}, storeArgs...)
		if deep {
			args = append(args, "--deep")
		}
		code, out, errText := kpipe(args...)
		var r storage.Report
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("validate %s: exit %d, not a report (%v): %s %s", id, code, err, out, errText)
		}
		return code, r, errText
	}
	copyBackup(t, store, "src", "intact", topic)
	for _, deep := range []bool{false, true} {
		if code, r, errText := validate("intact", deep); code != 0 || !r.Valid || len(r.Problems) != 0 || r.Checked.Segments != 9 {
			t.Fatalf("intact backup, deep=%v: exit %d, valid %v, checked %+v, problems %+v: %s", deep, code, r.Valid, r.Checked, r.Problems, errText)
		}
	}
	for i, c := range corruptionKinds {
		t.Run(c.name, func(t *testing.T) {
			id := fmt.Sprintf("damaged-%d", i)
			copyBackup(t, store, "src", id, topic)
			named := c.damage(t, store, id)
			for _, deep := range []bool{false, true} {
				if !deep && !c.plain {
					continue
				}
				code, r, errText := validate(id, deep)
				found := false
				for _, p := range r.Problems {
					found = found || (p.Check == c.check && p.Segment == named && p.Topic == corruptTopic)
				}
				if code != 1 || r.Valid || !found {
					t.Errorf("deep=%v: exit %d, valid %v, want exit 1 and a %s problem naming %s; problems %+v: %s", deep, code, r.Valid, c.check, named, r.Problems, errText)
				}
				if !strings.Contains(errText, fmt.Sprintf("backup %s is INVALID", id)) {
					t.Errorf("deep=%v: stderr %q does not say the backup is invalid", deep, errText)
				}
			}
		})
	}
}

// copyBackup copies backup from to id, its topic renamed to corruptTopic.
func copyBackup(t *testing.T, store storage.BlobStore, from, id, topic string) {
	t.Helper()
	ctx := context.Background()
	objs, err := storage.ListAll(ctx, store, from+"/", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		data := read(t, store, o.Key)
		key := id + "/" + strings.TrimPrefix(o.Key, from+"/")
		key = strings.Replace(key, "/topics/"+topic+"/", "/topics/"+corruptTopic+"/", 1)
		switch {
		case strings.HasSuffix(key, "/backup.json"):
			data = bytes.Replace(data, []byte(`"`+from+`"`), []byte(`"`+id+`"`), 1)
		case strings.Contains(key, "/metadata/"):
			data = bytes.ReplaceAll(data, []byte(`"`+topic+`"`), []byte(`"`+corruptTopic+`"`))
		}
		put(t, store, key, data)
	}
}

func manifest(t *testing.T, store storage.BlobStore, id string, partition int32) storage.Manifest {
	t.Helper()
	b, err := storage.OpenBackup(context.Background(), store, id)
	if err != nil {
		t.Fatal(err)
	}
	m, err := b.Manifest(context.Background(), corruptTopic, partition)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func entry(t *testing.T, store storage.BlobStore, id string, partition int32, i int) storage.Entry {
	t.Helper()
	m := manifest(t, store, id, partition)
	if i >= len(m.Entries) {
		t.Fatalf("partition %d has %d entries, no entry %d", partition, len(m.Entries), i)
	}
	return m.Entries[i]
}

func segmentKey(id string, partition int32, e storage.Entry) string {
	return storage.Keys{ID: id}.Partition(corruptTopic, partition) + e.Segment
}

func read(t *testing.T, store storage.BlobStore, key string) []byte {
	t.Helper()
	rc, err := store.Get(context.Background(), key, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func put(t *testing.T, store storage.BlobStore, key string, data []byte) {
	t.Helper()
	if err := store.Put(context.Background(), key, bytes.NewReader(data), int64(len(data)), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}
