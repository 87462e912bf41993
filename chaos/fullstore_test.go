package chaos

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/internal/testkit"
)

// TestAFullStoreFailsCleanlyAndTheNextRunCompletes backs up into a store
// whose quota (the quotafs test plugin: the fs store behind a byte quota)
// runs out mid-backup. The run fails with exit 1 saying "no space left on
// device"; what it committed stays, intact and valid; once the quota is
// raised the next run completes the backup, every offset once.
func TestAFullStoreFailsCleanlyAndTheNextRunCompletes(t *testing.T) {
	addr := testkit.Kafka(t)
	sc := newScenario(t, "full store (a quota-limited BlobStore)")
	plugins := quotaPlugins(t)
	path := t.TempDir()
	fullStore(t, sc, addr, plugins, path, []string{"KPIPE_QUOTAFS_BYTES=" + strconv.Itoa(size(1_500_000, 6_000_000))}, func() []string {
		sc.fault("the store's quota (%s bytes) ran out mid-backup; raised after the failure", strconv.Itoa(size(1_500_000, 6_000_000)))
		return []string{"KPIPE_QUOTAFS_BYTES=0"}
	})
}

// TestAFullDiskFailsCleanlyAndTheNextRunCompletes is the same on a real
// filesystem: a small tmpfs, grown after the failure. It needs root (to
// mount), and is skipped elsewhere.
func TestAFullDiskFailsCleanlyAndTheNextRunCompletes(t *testing.T) {
	addr := testkit.Kafka(t)
	path := t.TempDir()
	const small = "1m"
	if err := syscall.Mount("tmpfs", path, "tmpfs", 0, "size="+small); err != nil {
		t.Skipf("cannot mount a small filesystem here (%v): run as root to test a full disk", err)
	}
	t.Cleanup(func() { syscall.Unmount(path, syscall.MNT_DETACH) })
	sc := newScenario(t, "full disk (a 1 MiB tmpfs)")
	fullStore(t, sc, addr, testkit.PluginDir(t), path, nil, func() []string {
		if err := syscall.Mount("tmpfs", path, "tmpfs", syscall.MS_REMOUNT, "size=256m"); err != nil {
			t.Fatalf("grow the tmpfs: %v", err)
		}
		sc.fault("the %s tmpfs filled up mid-backup; grown to 256 MiB after the failure", "1 MiB")
		return nil
	})
}

// fullStore backs up a data set from addr into path with plugins and env,
// a store that fills up before the backup is complete: the run must fail
// with exit 1 saying so, having committed some of the records, all intact;
// then raise makes room and returns the environment of the next run, which
// must complete the backup exactly.
func fullStore(t *testing.T, sc *scenario, addr, plugins, path string, env []string, raise func() []string) {
	topic := testkit.Topic(t, "full")
	const partitions = 3
	per := size(5_000, 20_000) // about 300 bytes a record
	testkit.CreateTopic(t, addr, topic, partitions)
	newDataset(topic, partitions).produce(t, addr, 0, per)
	total := int64(partitions * per)
	held := func() int64 { return testkit.Records(t, path, "f") }
	state := t.TempDir()
	backup := func(out *syncBuffer, env []string) *waiter {
		return wait(start(t, out, env, "--plugin-dir", plugins, "backup", "--bootstrap-servers", addr, "--topics", topic,
			"--path", path, "--backup-id", "f", "--state-dir", state, "--compression", "none", "--segment-max-records", "500", "--progress", "off"))
	}

	var out syncBuffer
	w := backup(&out, env)
	<-w.done
	if exitCode(w.err) != 1 || !strings.Contains(out.String(), "no space left on device") {
		t.Fatalf("a backup into a full store: %v, want exit 1 saying \"no space left on device\":\n%s", w.err, out.String())
	}
	t.Logf("the failed run said: %s", lastLine(out.String()))
	failed := held()
	if failed == 0 || failed >= total {
		t.Fatalf("the failed run committed %d of %d records, want some, not all (resize the store)", failed, total)
	}
	if n := testkit.CheckBackup(t, path, "f"); n != failed {
		t.Fatalf("the backup's segments hold %d records, its manifests %d", n, failed)
	}
	committed := testkit.BackupRecords(t, path, "f")
	sc.note("the run failed with exit 1 (no space left on device) with %d of %d records committed", failed, total)
	ref := backupRef{addr: addr, topic: topic, path: path, id: "f"}
	sc.validateDeep(ref, true, "after the failure") // what was committed is a valid backup

	env = raise()
	raised := time.Now()
	var again syncBuffer
	w = backup(&again, env)
	sc.recovered(waitProgress(t, raised, failed, held, w.done, 2*time.Minute))
	if <-w.done; w.err != nil {
		t.Fatalf("the run after room was made: %v\n%s", w.err, again.String())
	}
	if n := testkit.CheckBackup(t, path, "f"); n != total {
		t.Fatalf("the backup holds %d records, want %d", n, total)
	}
	// Nothing committed before the store filled up was lost or changed.
	after := map[[2]int64]*kgo.Record{}
	for _, r := range testkit.BackupRecords(t, path, "f") {
		after[[2]int64{int64(r.Partition), r.Offset}] = r
	}
	for _, r := range committed {
		if a := after[[2]int64{int64(r.Partition), r.Offset}]; a == nil || differs(r, a) != "" {
			t.Fatalf("record %d/%d, committed before the store filled up, is gone or changed after the next run", r.Partition, r.Offset)
		}
	}
	sc.note("the next run completed the backup, every offset once")
	sc.verify(ref)
}

// quotaPlugins builds the quotafs test plugin as kpipe-plugin-fs into a
// folder beside links to the other plugins, and returns the folder.
func quotaPlugins(t *testing.T) string {
	t.Helper()
	real := testkit.PluginDir(t)
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "kpipe-plugin-fs"), "./chaos/testdata/quotafs")
	cmd.Dir = testkit.Root()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the quotafs plugin: %v\n%s", err, out)
	}
	entries, err := os.ReadDir(real)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "kpipe-plugin-fs" {
			if err := os.Symlink(filepath.Join(real, e.Name()), filepath.Join(dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// lastLine is the last line of s that is not empty.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
