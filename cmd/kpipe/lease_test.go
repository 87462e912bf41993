package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/internal/testkit"
)

// backupFile writes a backup pipeline file with a short lease, into path:
// a folder (the fs plugin) or an s3:// URL of the test server (the s3
// plugin, which finds the server through the standard AWS variables).
func backupFile(t *testing.T, addr, topic, path string, continuous bool) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "backup.hcl")
	hcl := fmt.Sprintf(`pipeline "backup" {
  source "kafka" {
    bootstrap_servers = [%q]
    topics            = [%q]
    continuous        = %t
  }
  sink %q {
    path           = %q
    backup_id      = "one"
    lease_ttl      = "2s"
    flush_interval = "50ms"
  }
}
`, addr, topic, continuous, sinkFor(path), path)
	if err := os.WriteFile(file, []byte(hcl), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

func sinkFor(path string) string {
	if strings.HasPrefix(path, "s3://") {
		return "s3"
	}
	return "fs"
}

// TestTwoBackupsAtOnceOnS3: while a backup to S3 runs, a second one on the
// same backup id, started with kpipe backup --path s3://..., is refused
// within 2 seconds naming the first's process.
func TestTwoBackupsAtOnceOnS3(t *testing.T) {
	addr := testkit.Kafka(t)
	srv := testkit.S3(t)
	topic := testkit.Topic(t, "s3lease")
	seedPartitions(t, addr, topic, 2, 3000, time.Now().Add(-time.Hour).UnixMilli())
	path := srv.Path(t)
	first := exec.Command(testkit.KpipeBinary(t), "--plugin-dir", testkit.PluginDir(t), "run", backupFile(t, addr, topic, path, true), "--state-dir", t.TempDir())
	var firstErr bytes.Buffer
	first.Stdout, first.Stderr = io.Discard, &firstErr
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	defer first.Process.Kill()
	for deadline := time.Now().Add(30 * time.Second); testkit.Records(t, path, "one") < 6000; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the first backup holds %d of 6000 records after 30s: %s", testkit.Records(t, path, "one"), firstErr.String())
		}
	}
	plugins := testkit.Children(first.Process.Pid)
	t0 := time.Now()
	code, _, stderr := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", topic, "--path", path, "--backup-id", "one",
		"--s3-endpoint", srv.Endpoint, "--s3-force-path-style", "--s3-region", srv.Region)
	took := time.Since(t0)
	named := false
	for _, pid := range plugins {
		named = named || strings.Contains(stderr, fmt.Sprintf(`%s: backup "one" is being written by pid %d on host `, path, pid))
	}
	if code != 1 || !named || took > 2*time.Second {
		t.Fatalf("a second backup to S3 while the first runs: exit %d after %s, stderr %q; want exit 1 within 2s naming one of %v", code, took, errorText(stderr), plugins)
	}
}

// TestOneWriterPerBackup: while a backup runs, a second one on the same id
// is refused within 2 seconds naming the first's process; once the first
// is stopped (SIGSTOP) past its lease, a second takes the backup over, and
// the first, continued (SIGCONT), commits nothing more and fails saying
// why. The backup holds every record once, and restores exactly.
func TestOneWriterPerBackup(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "lease")
	ts := time.Now().Add(-time.Hour).UnixMilli()
	seedPartitions(t, addr, topic, 2, 3000, ts)
	path := t.TempDir()
	first := exec.Command(testkit.KpipeBinary(t), "--plugin-dir", testkit.PluginDir(t), "run", backupFile(t, addr, topic, path, true), "--state-dir", t.TempDir())
	first.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var firstErr bytes.Buffer
	first.Stdout, first.Stderr = io.Discard, &firstErr
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(-first.Process.Pid, syscall.SIGKILL)
	exited := make(chan error, 1)
	go func() { exited <- first.Wait() }()
	for deadline := time.Now().Add(30 * time.Second); held(t, backupAt{path, "one"}) < 6000; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the first backup holds %d of 6000 records after 30s: %s", held(t, backupAt{path, "one"}), firstErr.String())
		}
	}
	plugins := testkit.Children(first.Process.Pid)

	snapshot := backupFile(t, addr, topic, path, false)
	t0 := time.Now()
	code, _, stderr := kpipe(t, "run", snapshot, "--state-dir", t.TempDir())
	took := time.Since(t0)
	named := false
	for _, pid := range plugins {
		named = named || strings.Contains(stderr, fmt.Sprintf(`backup "one" is being written by pid %d on host `, pid))
	}
	if code != 1 || !named || took > 2*time.Second {
		t.Fatalf("a second backup while the first runs: exit %d after %s, stderr %q; want exit 1 within 2s naming one of %v", code, took, errorText(stderr), plugins)
	}

	// The first stops (as a paused VM or a stopped process would) past its
	// lease; the second takes over and backs up what came since.
	syscall.Kill(-first.Process.Pid, syscall.SIGSTOP)
	time.Sleep(2500 * time.Millisecond)
	var more []*kgo.Record
	for i := range 1000 {
		more = append(more, &kgo.Record{Topic: topic, Partition: int32(i % 2), Value: []byte(fmt.Sprint("more ", i)), Timestamp: time.UnixMilli(ts + 5000 + int64(i))})
	}
	testkit.Produce(t, addr, more)
	if code, _, stderr := kpipe(t, "run", snapshot, "--state-dir", t.TempDir()); code != 0 {
		t.Fatalf("taking over an expired lease: exit %d: %s", code, stderr)
	}
	syscall.Kill(-first.Process.Pid, syscall.SIGCONT)
	select {
	case err := <-exited:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(firstErr.String(), "lost its lease to pid ") ||
			!strings.Contains(firstErr.String(), "and commits nothing more") {
			t.Fatalf("the first backup, continued: %v; want exit 1 saying it lost its lease; stderr:\n%s", err, firstErr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the first backup still runs 20s after it lost its lease; stderr:\n%s", firstErr.String())
	}
	for _, p := range testkit.Manifests(t, path, "one") {
		for _, e := range p.Entries {
			if e.Epoch != 1 && e.Epoch != 2 {
				t.Errorf("%s/%d: an entry of epoch %d", p.Topic, p.Partition, e.Epoch)
			}
		}
	}
	if n := testkit.CheckBackup(t, path, "one"); n != 7000 {
		t.Fatalf("the backup holds %d records, want 7000", n)
	}
	dst := testkit.Topic(t, "dst")
	if code, _, stderr := kpipe(t, "restore", "--bootstrap-servers", addr, "--path", path, "--backup-id", "one", "--topic-mapping", topic+"="+dst); code != 0 {
		t.Fatalf("restore: exit %d: %s", code, stderr)
	}
	want, got := testkit.ConsumeAll(t, addr, topic), testkit.ConsumeAll(t, addr, dst)
	if len(got) != len(want) {
		t.Fatalf("restored %d records, want %d", len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		if w.Partition != g.Partition || w.Offset != g.Offset || !bytes.Equal(w.Value, g.Value) || !w.Timestamp.Equal(g.Timestamp) {
			t.Fatalf("restored record %d is %d/%d %q, want %d/%d %q", i, g.Partition, g.Offset, g.Value, w.Partition, w.Offset, w.Value)
		}
	}
}

// TestAKilledBackupsLeaseIsTakenAtOnce: after SIGKILL of a running backup,
// the next run takes the backup over at once and finishes it.
func TestAKilledBackupsLeaseIsTakenAtOnce(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "killed")
	seedPartitions(t, addr, topic, 2, 2000, time.Now().Add(-time.Hour).UnixMilli())
	path := t.TempDir()
	cmd := exec.Command(testkit.KpipeBinary(t), "--plugin-dir", testkit.PluginDir(t), "run", backupFile(t, addr, topic, path, true), "--state-dir", t.TempDir())
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); held(t, backupAt{path, "one"}) < 4000; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the backup never caught up")
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	t0 := time.Now()
	if code, _, stderr := kpipe(t, "run", backupFile(t, addr, topic, path, false), "--state-dir", t.TempDir()); code != 0 {
		t.Fatalf("the run after a SIGKILL: exit %d: %s", code, stderr)
	}
	if took := time.Since(t0); took > 10*time.Second {
		t.Errorf("the run after a SIGKILL took %s", took)
	}
	if n := testkit.CheckBackup(t, path, "one"); n != 4000 {
		t.Fatalf("the backup holds %d records, want 4000", n)
	}
}
