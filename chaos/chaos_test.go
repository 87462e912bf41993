package chaos

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kpipe/kpipe/internal/testkit"
)

// durable counts the records of the backup, checking on the way that each
// partition's segments are contiguous and intact.
func durable(t *testing.T, root string) int64 { return testkit.CheckBackup(t, root, "chaos") }

// progress counts the records the backup's manifests list, without reading
// the segments: cheap enough to poll.
func progress(t *testing.T, root string) int64 { return testkit.Records(t, root, "chaos") }

// TestBackupSurvivesSIGKILL kills a backup into a folder again and again;
// every source offset ends up in it exactly once.
func TestBackupSurvivesSIGKILL(t *testing.T) {
	dir := t.TempDir()
	killBackup(t, filepath.Join(dir, "backups"), "fs", false)
}

// TestBackupOnS3SurvivesSIGKILL does the same on the real S3 server.
func TestBackupOnS3SurvivesSIGKILL(t *testing.T) {
	killBackup(t, testkit.S3(t).Path(t), "s3", false)
}

// TestContinuousBackupSurvivesSIGKILL kills a continuous backup again and
// again while half of the records are produced between the kills; the run
// after the kills follows them all, stops on SIGTERM, and the backup holds
// every offset exactly once.
func TestContinuousBackupSurvivesSIGKILL(t *testing.T) {
	dir := t.TempDir()
	killBackup(t, filepath.Join(dir, "backups"), "fs", true)
}

// killBackup kills a backup of 3 partitions (25,000 records each in the
// short run, 100,000 in the long one) into backup (a path of the storage
// plugin sink) at random moments, mostly mid-run, again and again (8 times
// in the short run, 20 in the long one), then lets it finish, and checks
// that the backup holds every source offset exactly once, byte for byte;
// then that validate --deep finds it valid and a restore of it equals the
// source.
func killBackup(t *testing.T, backup, sink string, continuous bool) {
	addr := testkit.Kafka(t)
	kpipe := testkit.KpipeBinary(t)
	mode := "snapshot"
	if continuous {
		mode = "continuous"
	}
	sc := newScenario(t, fmt.Sprintf("SIGKILL of a %s backup (%s)", mode, sink))
	rng := rngFor(t)
	rounds := size(8, 20)

	partitions, perPartition := int32(3), size(25_000, 100_000)
	topic := testkit.Topic(t, "chaos")
	testkit.CreateTopic(t, addr, topic, partitions)
	data := newDataset(topic, partitions)
	total := int64(partitions) * int64(perPartition)
	if continuous {
		// Every partition's second half comes between the kills.
		data.produce(t, addr, 0, perPartition/2)
	} else {
		data.produce(t, addr, 0, perPartition)
	}
	later := continuous // the second half is still to produce

	dir := t.TempDir()
	file := filepath.Join(dir, "backup.hcl")
	hcl := fmt.Sprintf(`pipeline "backup" {
  source "kafka" {
    bootstrap_servers = [%q]
    topics            = [%q]
    continuous        = %t
  }
  sink %q {
    path                = %q
    backup_id           = "chaos"
    segment_max_records = 1500
    flush_interval      = "50ms"
  }
}
`, addr, topic, continuous, sink, backup)
	if err := os.WriteFile(file, []byte(hcl), 0o644); err != nil {
		t.Fatal(err)
	}
	start := func() *exec.Cmd {
		// A small in-flight budget makes small fetches: many steps to kill in.
		cmd := exec.Command(kpipe, "run", file, "--plugin-dir", testkit.PluginDir(t), "--state-dir", filepath.Join(dir, "state"), "--log-level", "warn", "--progress", "off", "--in-flight-bytes", "1MiB")
		cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}

	ref := backupRef{addr: addr, topic: topic, path: backup, id: "chaos"}
	if sink == "s3" {
		ref.flags = s3Flags(testkit.S3(t))
	}
	var kills, midRun int
	var killed []int // host pids
	last := int64(0)
	for round := 0; round < rounds; round++ {
		if round == rounds/2 && later {
			data.produce(t, addr, perPartition/2, perPartition)
			later = false
		}
		cmd := start()
		restarted, caughtUp := time.Now(), false
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		// Mostly kill once the run has made a random share of the remaining
		// progress (so that the kill lands between segments, mid-write or
		// mid-checkpoint, whatever the machine's speed); sometimes kill
		// during start-up, while the plugins are being launched.
		var target int64 // records durable before the kill; 0 kills at a random moment of start-up
		deadline := time.Now().Add(time.Duration(rng.IntN(40)) * time.Millisecond)
		if rng.IntN(4) != 0 {
			target = last + 1 + int64(float64(total-last)*(0.02+0.13*rng.Float64()))
			deadline = time.Now()
		}
		finished := false
		var plugins []int
		for !finished {
			select {
			case err := <-exited:
				if err != nil {
					t.Fatalf("round %d: backup failed on its own: %v", round, err)
				}
				finished = true
				continue
			case <-time.After(2 * time.Millisecond):
			}
			if time.Now().Before(deadline) {
				continue
			}
			if target > 0 {
				// A continuous run never ends by itself: once it holds
				// all there is so far, it is killed there.
				have := total
				if later {
					have = total / 2
				}
				n := progress(t, backup)
				if round > 0 && !caughtUp && n > last {
					caughtUp = true
					sc.recovered(time.Since(restarted))
				}
				if n < min(target, have) {
					continue
				}
			}
			time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
			plugins = testkit.Children(cmd.Process.Pid)
			cmd.Process.Signal(syscall.SIGKILL)
			<-exited
			kills++
			killed = append(killed, cmd.Process.Pid)
			waitGone(t, plugins)
			break
		}
		if finished {
			break
		}
		n := durable(t, backup)
		t.Logf("round %d: killed with %d of %d records durable; its %d plugin processes ended with it", round, n, total, len(plugins))
		// A run that had made progress but not finished must have had both
		// plugins up; once everything is durable it may be tearing them down.
		if n > last && n < total && len(plugins) != 2 {
			t.Fatalf("round %d: the killed backup had %d plugin processes, want 2 (kafka source, %s sink)", round, len(plugins), sink)
		}
		if n < last {
			t.Fatalf("round %d: durable records went down from %d to %d", round, last, n)
		}
		if n > 0 && n < total {
			midRun++
			if midRun == 1 {
				// What a killed run left (uncommitted segments and
				// temporary files) is not damage.
				sc.validateDeep(ref, true, "after a kill mid-backup")
			}
		}
		last = n
	}
	// The last run goes to the end.
	cmd := start()
	restarted := time.Now()
	ended := make(chan struct{})
	if !continuous {
		go func() { cmd.Wait(); close(ended) }()
	}
	if !continuous || last < total {
		sc.recovered(waitProgress(t, restarted, last, func() int64 { return progress(t, backup) }, ended, 2*time.Minute))
	}
	if continuous {
		for deadline := time.Now().Add(2 * time.Minute); progress(t, backup) < total; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("final run holds %d of %d records after 2 minutes", progress(t, backup), total)
			}
		}
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); cmd.ProcessState.ExitCode() != 3 {
			t.Fatalf("final continuous run on SIGTERM: %v, want exit 3", err)
		}
	} else if <-ended; !cmd.ProcessState.Success() {
		t.Fatalf("final run: %v", cmd.ProcessState)
	}
	sc.fault("%d SIGKILLs of the backup, %d of them mid-run", kills, midRun)
	if midRun < 3 {
		t.Fatalf("only %d of %d kills landed mid-backup; the test proves nothing (make the data larger)", midRun, kills)
	}
	// No killed host left its plugins' socket folder behind: the plugins
	// remove it as they exit, or the next host sweeps it.
	for _, pid := range killed {
		if left, _ := filepath.Glob(filepath.Join(os.TempDir(), fmt.Sprintf("kpipe-run-%d-*", pid))); len(left) > 0 {
			t.Errorf("killed host %d left %v", pid, left)
		}
	}

	// Every source offset exactly once, in order, byte for byte.
	if n := durable(t, backup); n != total {
		t.Fatalf("backup holds %d records, want %d", n, total)
	}
	want := testkit.ConsumeAll(t, addr, topic)
	got := testkit.BackupRecords(t, backup, "chaos")
	for i, w := range want {
		if i >= len(got) {
			break
		}
		g := got[i]
		if why := differs(w, g); w.Partition != g.Partition || w.Offset != g.Offset || why != "" {
			t.Fatalf("backup record %d is %d/%d, want %d/%d with the source's key, value, headers and timestamp: %s", i, g.Partition, g.Offset, w.Partition, w.Offset, why)
		}
	}
	// A killed writer's temporary files are never part of the backup, and
	// its uncommitted segments are ignored; list what is left in a folder.
	filepath.WalkDir(backup, func(path string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".tmp-") {
			t.Logf("left by a kill: %s", path)
		}
		return nil
	})
	if len(got) != len(want) {
		t.Fatalf("read %d records from the backup, want %d", len(got), len(want))
	}
	t.Logf("%d kills (%d mid-backup); the backup holds all %d offsets exactly once", kills, midRun, total)
	sc.note("backup complete, every offset once")
	sc.verify(ref)
}

// waitGone fails the test unless every plugin process of a killed host
// ends within 3 seconds: plugins must not outlive the host.
func waitGone(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for _, pid := range pids {
		for {
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil || bytes.Contains(stat, []byte(") Z ")) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("plugin process %d still runs 3s after its host was killed", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
