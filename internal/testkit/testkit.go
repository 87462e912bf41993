// Package testkit gives kpipe's integration tests what they share: a real
// Kafka broker started by scripts/kafka.sh, the plugin binaries, unique
// topic names, and helpers to produce and read back records exactly.
package testkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/sdk/record"
	"github.com/kpipe/kpipe/sdk/storage"
)

// Root is the repository root.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// TestPort is the broker port of tests when KPIPE_TEST_BOOTSTRAP is unset.
const TestPort = "19092"

var (
	brokerOnce sync.Once
	brokerAddr string
	brokerErr  error
)

// withLock runs fn while holding an exclusive lock on a file under .cache,
// serializing test packages that run in parallel processes.
func withLock(name string, fn func() error) error {
	dir := filepath.Join(Root(), ".cache")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, name+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return fn()
}

// Kafka returns the bootstrap address of a real broker: KPIPE_TEST_BOOTSTRAP
// when set, else one started with scripts/kafka.sh on TestPort, with its
// secure listeners (see Secure). Under -short
// the test is skipped.
func Kafka(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a Kafka broker; skipped with -short")
	}
	brokerOnce.Do(func() {
		if addr := os.Getenv("KPIPE_TEST_BOOTSTRAP"); addr != "" {
			brokerAddr = addr
			return
		}
		brokerErr = withLock("kafka", func() error {
			cmd := exec.Command(filepath.Join(Root(), "scripts", "kafka.sh"), "up")
			cmd.Env = append(os.Environ(), "KAFKA_PORT="+TestPort, "KAFKA_SECURE=1")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				return fmt.Errorf("scripts/kafka.sh up: %v\n%s", err, stderr.String())
			}
			brokerAddr = strings.TrimSpace(string(out))
			return nil
		})
	})
	if brokerErr != nil {
		t.Fatal(brokerErr)
	}
	return brokerAddr
}

var (
	buildOnce sync.Once
	pluginDir string
	buildErr  error
)

// PluginDir returns the folder of the plugin binaries: KPIPE_PLUGIN_DIR when
// set, else bin/plugins after building them.
func PluginDir(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if d := os.Getenv("KPIPE_PLUGIN_DIR"); d != "" {
			pluginDir = d
			return
		}
		buildErr = withLock("build", func() error {
			cmd := exec.Command("make", "build")
			cmd.Dir = Root()
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("make build: %v\n%s", err, out)
			}
			pluginDir = filepath.Join(Root(), "bin", "plugins")
			return nil
		})
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return pluginDir
}

// KpipeBinary returns bin/kpipe, built.
func KpipeBinary(t testing.TB) string {
	t.Helper()
	dir := PluginDir(t)
	return filepath.Join(filepath.Dir(dir), "kpipe")
}

// Topic returns a topic name unique to this test run.
func Topic(t testing.TB, prefix string) string {
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	return fmt.Sprintf("%s-%s-%d", prefix, strings.ToLower(name), time.Now().UnixNano()%1_000_000_000)
}

// Client returns a franz-go client for the broker, closed when the test ends.
func Client(t testing.TB, addr string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// CreateTopic creates a topic with the given partitions.
func CreateTopic(t testing.TB, addr, topic string, partitions int32) {
	t.Helper()
	CreateTopicWithConfigs(t, addr, topic, partitions, nil)
}

// CreateTopicWithConfigs creates a topic with the given partitions and
// topic configs, and returns once every partition has a leader.
func CreateTopicWithConfigs(t testing.TB, addr, topic string, partitions int32, configs map[string]*string) {
	t.Helper()
	adm := kadm.NewClient(Client(t, addr))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, partitions, 1, configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
	// A busy broker takes a moment to serve a new topic: wait until every
	// partition has a leader, so that the test's first produce finds it.
	for {
		details, err := adm.ListTopics(ctx, topic)
		if err == nil {
			d := details[topic]
			led := d.Err == nil && len(d.Partitions) == int(partitions)
			for _, p := range d.Partitions {
				led = led && p.Err == nil && p.Leader >= 0
			}
			if led {
				return
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("topic %s: not served after 30s: %v", topic, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Produce writes records synchronously (each record's Topic and Partition
// are used as given) and fills in their offsets. Batches are lz4
// compressed, as Kafka clients most often write them (the kafka plugin
// decodes lz4 itself; other codecs it leaves to franz-go).
func Produce(t testing.TB, addr string, recs []*kgo.Record) {
	t.Helper()
	cl := Client(t, addr, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(2*time.Millisecond),
		kgo.ProducerBatchCompression(kgo.Lz4Compression()), kgo.UnknownTopicRetries(100))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// ConsumeAll reads every record of topic up to its current end offsets,
// in partition order then offset order.
func ConsumeAll(t testing.TB, addr, topic string) []*kgo.Record {
	t.Helper()
	adm := kadm.NewClient(Client(t, addr))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	var total int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			total += o.Offset
		}
	})
	byPart := map[int32][]*kgo.Record{}
	if total > 0 {
		cl := Client(t, addr, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		got := map[int32]int64{}
		for done := false; !done; {
			fs := cl.PollFetches(ctx)
			if err := ctx.Err(); err != nil {
				t.Fatalf("consume %s: timed out with %v of %v", topic, got, want)
			}
			fs.EachError(func(_ string, p int32, err error) { t.Fatalf("consume %s/%d: %v", topic, p, err) })
			fs.EachRecord(func(r *kgo.Record) {
				byPart[r.Partition] = append(byPart[r.Partition], r)
				got[r.Partition] = r.Offset + 1
			})
			done = true
			for p, end := range want {
				if got[p] < end {
					done = false
				}
			}
		}
	}
	var out []*kgo.Record
	for p := int32(0); p < int32(len(ends[topic])); p++ {
		out = append(out, byPart[p]...)
	}
	return out
}

// Backup opens a backup under root (a storage plugin's path: a folder, or
// an s3:// URL of the test S3 server) for reading.
func Backup(t testing.TB, root, id string) *storage.Backup { return BackupIn(t, Store(t, root), id) }

// BackupIn opens a backup of store for reading.
func BackupIn(t testing.TB, store storage.BlobStore, id string) *storage.Backup {
	t.Helper()
	b, err := storage.OpenBackup(context.Background(), store, id)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Manifests reads the manifest of every partition of a backup's topics.
func Manifests(t testing.TB, root, id string) []storage.Manifest {
	return ManifestsIn(t, Store(t, root), id)
}

// ManifestsIn is Manifests of a backup of store.
func ManifestsIn(t testing.TB, store storage.BlobStore, id string) []storage.Manifest {
	t.Helper()
	ctx := context.Background()
	b := BackupIn(t, store, id)
	m, err := b.AllMetadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []storage.Manifest
	for _, tm := range m.Topics {
		for p := range m.Partitions(tm.Name) {
			man, err := b.Manifest(ctx, tm.Name, p)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, man)
		}
	}
	return out
}

// SegmentFile is the file of a segment entry of a backup under root.
func SegmentFile(root, id, topic string, partition int32, e storage.Entry) string {
	return filepath.Join(root, filepath.FromSlash(storage.Keys{ID: id}.Partition(topic, partition)+e.Segment))
}

// Children lists the processes whose parent is pid.
func Children(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ")".
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// Records is how many records a backup under root holds, by its
// manifests; 0 before the backup exists.
func Records(t testing.TB, root, id string) int64 { return RecordsIn(t, Store(t, root), id) }

// RecordsIn is Records of a backup of store.
func RecordsIn(t testing.TB, store storage.BlobStore, id string) int64 {
	t.Helper()
	if _, err := storage.OpenBackup(context.Background(), store, id); errors.Is(err, storage.ErrBackupNotFound) {
		return 0
	}
	var n int64
	for _, p := range ManifestsIn(t, store, id) {
		n += p.Records()
	}
	return n
}

// CheckBackup checks that each partition of a backup under root holds
// contiguous segments from offset 0 whose every batch reads back (its
// CRC-32C checked), and returns how many records it holds; 0 before the
// backup exists.
func CheckBackup(t testing.TB, root, id string) int64 { return CheckBackupIn(t, Store(t, root), id) }

// CheckBackupIn is CheckBackup of a backup of store.
func CheckBackupIn(t testing.TB, store storage.BlobStore, id string) int64 {
	t.Helper()
	if RecordsIn(t, store, id) == 0 {
		return 0
	}
	b := BackupIn(t, store, id)
	var n int64
	for _, p := range ManifestsIn(t, store, id) {
		next := int64(0)
		for _, e := range p.Entries {
			if e.MinOffset != next {
				t.Fatalf("%s/%d: segment %s starts at %d, want %d (a gap or an overlap)", p.Topic, p.Partition, e.Segment, e.MinOffset, next)
			}
			r := b.Batches(context.Background(), p.Topic, p.Partition, e, nil)
			for {
				if _, _, err := r.Next(); err == io.EOF {
					break
				} else if err != nil {
					t.Fatal(err)
				}
			}
			next = e.NextOffset
		}
		n += p.Records()
	}
	return n
}

// BackupRecords reads every record of a backup under root (its current
// incarnations' and earlier ones' alike), partition by partition in offset
// order, each checked against its batch's CRC-32C.
func BackupRecords(t testing.TB, root, id string) []*kgo.Record {
	t.Helper()
	b := Backup(t, root, id)
	var out []*kgo.Record
	for _, m := range Manifests(t, root, id) {
		for _, e := range m.Entries {
			r := b.Batches(context.Background(), m.Topic, m.Partition, e, nil)
			for {
				frame, _, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				rec, err := record.Decode(frame)
				if err != nil {
					t.Fatal(err)
				}
				v, err := record.NewView(rec)
				if err != nil {
					t.Fatal(err)
				}
				for i := range v.Len() {
					kr := &kgo.Record{Topic: m.Topic, Partition: m.Partition, Offset: v.Offset(i), Timestamp: time.UnixMilli(v.Timestamp(i)),
						Key: bytes.Clone(v.Key(i)), Value: bytes.Clone(v.Value(i))}
					for _, h := range v.Headers(i) {
						kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: h.Key, Value: bytes.Clone(h.Value)})
					}
					out = append(out, kr)
				}
				rec.Release()
			}
		}
	}
	return out
}

// ListTopics returns the names of the cluster's topics.
func ListTopics(t testing.TB, addr string) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	td, err := kadm.NewClient(Client(t, addr)).ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for name := range td {
		out[name] = true
	}
	return out
}

// EndOffsets returns the end offset of every partition of topic, in
// partition order.
func EndOffsets(t testing.TB, addr, topic string) []int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(Client(t, addr)).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for p := int32(0); ; p++ {
		o, ok := ends.Lookup(topic, p)
		if !ok {
			return out
		}
		out = append(out, o.Offset)
	}
}
