package host

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kpipe/kpipe/core/plugin"
	"github.com/kpipe/kpipe/internal/testkit"
	"github.com/kpipe/kpipe/plugins/fs/blob"
	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/record"
	"github.com/kpipe/kpipe/sdk/storage"
)

func launch(t *testing.T, h *Host, name string, kind plugin.Kind) *Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst, err := h.launch(ctx, name, kind)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(inst.Kill)
	return inst
}

// TestProtocolV1PluginIsRefused: a plugin of the previous protocol is
// refused with a message that names both versions and the fix.
func TestProtocolV1PluginIsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a plugin binary")
	}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, BinaryPrefix+"old"), "./testdata/v1plugin")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the v1 plugin: %v\n%s", err, out)
	}
	h := &Host{Dir: dir}
	defer h.Close()
	_, err := h.Launch(context.Background(), "old", plugin.KindSource)
	want := `plugin protocol mismatch: plugin "old" speaks protocol v1, this kpipe speaks v2; rebuild the plugin against this kpipe's SDK`
	if err == nil || err.Error() != want || !errors.Is(err, ErrProtocol) {
		t.Fatalf("Launch: %v\nwant %s", err, want)
	}
}

// socketsIn lists the Unix sockets in dir.
func socketsIn(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.Type()&os.ModeSocket != 0 {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestPluginSocketsLiveInTheRunFolder: every plugin's socket is in the
// host's own folder, which Close removes, also when a plugin was killed and
// could not remove its socket itself.
func TestPluginSocketsLiveInTheRunFolder(t *testing.T) {
	h := &Host{Dir: testkit.PluginDir(t)}
	run, err := h.RunDir()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(run), fmt.Sprintf("kpipe-run-%d-", os.Getpid())) {
		t.Fatalf("run folder %s is not named after this process", run)
	}
	a := launch(t, h, "fs", plugin.KindSource)
	b := launch(t, h, "kafka", plugin.KindSink)
	if got := socketsIn(t, run); len(got) != 2 {
		t.Fatalf("sockets in the run folder: %v, want one per plugin", got)
	}
	// SIGKILL leaves no chance to clean up.
	syscall.Kill(a.Pid(), syscall.SIGKILL)
	b.Kill()
	a.Kill()
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(run); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("run folder %s still there after Close: %v", run, err)
	}
}

// TestRunFoldersOfDeadHostsAreSwept: a folder left by a host that died
// (SIGKILL) is removed by the next host.
func TestRunFoldersOfDeadHostsAreSwept(t *testing.T) {
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(os.TempDir(), fmt.Sprintf("kpipe-run-%d-123", dead.Process.Pid))
	alive := filepath.Join(os.TempDir(), fmt.Sprintf("kpipe-run-%d-456", os.Getppid()))
	for _, d := range []string{stale, alive} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	defer os.RemoveAll(alive)
	h := &Host{}
	if _, err := h.RunDir(); err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the folder of dead pid %d is still there", dead.Process.Pid)
	}
	if _, err := os.Stat(alive); err != nil {
		t.Errorf("the folder of a live process was removed: %v", err)
	}
}

// TestLinkCertificatesOnlyWithMTLS: with MTLS every plugin presents a data
// link certificate of its own; without, none.
func TestLinkCertificatesOnlyWithMTLS(t *testing.T) {
	for _, mtls := range []bool{false, true} {
		h := &Host{Dir: testkit.PluginDir(t), MTLS: mtls}
		a := launch(t, h, "fs", plugin.KindSource)
		b := launch(t, h, "fs", plugin.KindSink)
		ca, cb := a.Info().LinkCert, b.Info().LinkCert
		if mtls && (len(ca) == 0 || len(cb) == 0 || string(ca) == string(cb)) {
			t.Errorf("with MTLS: certificates of %d and %d bytes, want two different ones", len(ca), len(cb))
		}
		if !mtls && (len(ca) != 0 || len(cb) != 0) {
			t.Errorf("without MTLS the plugins present certificates")
		}
		a.Kill()
		b.Kill()
		h.Close()
	}
}

// TestStorageServiceReadsBackups: the fs plugin serves its backups through
// the storage service: list, metadata, partitions (every partition of the
// metadata, empty ones too), manifests and byte ranges, the same bytes as
// stored, and no key outside a backup.
func TestStorageServiceReadsBackups(t *testing.T) {
	root := t.TempDir()
	ctx := context.Background()
	w, err := storage.OpenWriter(ctx, blob.New(root), "nightly", storage.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMetadata(ctx, sdk.Metadata{Topics: []sdk.TopicMetadata{{Name: "orders", Partitions: 2}}}); err != nil {
		t.Fatal(err)
	}
	bld := record.NewBuilder(nil)
	for i := range int64(20) {
		bld.Append(&record.Record{Offset: i, Timestamp: 1000 + i, Value: []byte("v")})
	}
	rec := bld.NewRecord()
	defer rec.Release()
	pw, err := w.Partition(ctx, "orders", 1)
	if err != nil {
		t.Fatal(err)
	}
	seg := pw.NewSegment(ctx, record.Zstd)
	v, _ := record.NewView(rec)
	if err := seg.Write(rec, v.Bounds(), 20); err != nil {
		t.Fatal(err)
	}
	entry, err := seg.Commit("")
	if err != nil {
		t.Fatal(err)
	}
	w.Close(ctx, storage.OutcomeComplete)

	h := &Host{Dir: testkit.PluginDir(t)}
	defer h.Close()
	inst := launch(t, h, "fs", plugin.KindSource)
	if err := inst.Configure(ctx, map[string]json.RawMessage{"path": json.RawMessage(strconv.Quote(root)), "backup_id": json.RawMessage(`"nightly"`)}); err != nil {
		t.Fatal(err)
	}
	st := inst.Storage()
	if st == nil {
		t.Fatal("the fs plugin does not serve the storage service")
	}
	list, err := st.ListBackups(ctx)
	if err != nil || len(list) != 1 || list[0].ID != "nightly" {
		t.Fatalf("ListBackups: %v, %v", list, err)
	}
	_, m, err := st.ReadMetadata(ctx, "nightly")
	if err != nil || len(m.Topics) != 1 || m.Topics[0].Name != "orders" || m.Topics[0].Partitions != 2 {
		t.Fatalf("ReadMetadata: %+v, %v", m, err)
	}
	parts, err := st.ListPartitions(ctx, "nightly")
	if err != nil || fmt.Sprint(parts) != "[{orders 0} {orders 1}]" {
		t.Fatalf("ListPartitions: %v, %v", parts, err)
	}
	entries, err := st.ReadManifest(ctx, "nightly", "orders", 1)
	var got storage.Entry
	if err != nil || len(entries) != 1 || json.Unmarshal(entries[0], &got) != nil || got.Checksum != entry.Checksum || got.Records != 20 {
		t.Fatalf("ReadManifest: %s, %v", entries, err)
	}
	want, _ := os.ReadFile(testkit.SegmentFile(root, "nightly", "orders", 1, entry))
	object := "topics/orders/1/" + entry.Segment
	for _, c := range []struct{ off, n int64 }{{0, -1}, {8, 100}, {int64(len(want)) - 5, 50}} {
		rc, err := st.ReadRange(ctx, "nightly", object, c.off, c.n)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		end := int64(len(want))
		if c.n >= 0 {
			end = min(end, c.off+c.n)
		}
		if err != nil || len(want) == 0 || !bytes.Equal(data, want[c.off:end]) {
			t.Fatalf("ReadRange(%d, %d): %d bytes, %v; want %d", c.off, c.n, len(data), err, end-c.off)
		}
	}
	if _, err := st.ReadRange(ctx, "nightly", "../../etc/passwd", 0, -1); err == nil || !strings.Contains(err.Error(), `object "../../etc/passwd" is not a path within backup "nightly"`) {
		t.Fatalf("a path outside the backup: %v", err)
	}
}
