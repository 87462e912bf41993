package chaos

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kpipe/kpipe/internal/testkit"
)

// outageBackup is a backup of a seeded topic into an S3 server of the
// test's own, which the test stops and starts.
type outageBackup struct {
	s3    *testkit.S3Instance
	addr  string
	topic string
	path  string
	file  string
	state string
	total int64
	down  time.Time // when stopMidway stopped the server
}

func newOutageBackup(t *testing.T, maxOutage string) *outageBackup {
	addr := testkit.Kafka(t)
	s3 := testkit.StartS3(t)
	const partitions = 3
	perPartition := size(15_000, 60_000)
	topic := testkit.Topic(t, "outage")
	testkit.CreateTopic(t, addr, topic, partitions)
	newDataset(topic, partitions).produce(t, addr, 0, perPartition)
	dir := t.TempDir()
	o := &outageBackup{s3: s3, addr: addr, topic: topic, path: "s3://kpipe/outage", file: filepath.Join(dir, "backup.hcl"), state: filepath.Join(dir, "state"),
		total: int64(partitions * perPartition)}
	hcl := fmt.Sprintf(`pipeline "backup" {
  source "kafka" {
    bootstrap_servers = [%q]
    topics            = [%q]
  }
  sink "s3" {
    path                = %q
    endpoint            = %q
    force_path_style    = true
    access_key_id       = %q
    secret_access_key   = %q
    backup_id           = "outage"
    segment_max_records = 500
    flush_interval      = "50ms"
    max_storage_outage  = %q
  }
}
`, addr, topic, o.path, s3.Endpoint, s3.AccessKey, s3.SecretKey, maxOutage)
	if err := os.WriteFile(o.file, []byte(hcl), 0o644); err != nil {
		t.Fatal(err)
	}
	return o
}

// start starts the backup; its stderr collects in out.
func (o *outageBackup) start(t *testing.T, out *syncBuffer) *exec.Cmd {
	cmd := exec.Command(testkit.KpipeBinary(t), "run", o.file, "--plugin-dir", testkit.PluginDir(t), "--state-dir", o.state, "--in-flight-bytes", "1MiB")
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// held is how many records the backup's manifests list.
func (o *outageBackup) held(t *testing.T) int64 {
	return testkit.RecordsIn(t, o.s3.Store(t, o.path), "outage")
}

// stopMidway waits until the backup holds some but not all records, then
// stops the server.
func (o *outageBackup) stopMidway(t *testing.T, cmd *exec.Cmd, out *syncBuffer) int64 {
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
		n := o.held(t)
		if n >= o.total/10 {
			if n == o.total {
				t.Fatalf("the backup finished before the outage: the test proves nothing")
			}
			o.down = time.Now()
			o.s3.Down(t)
			return n
		}
		if time.Now().After(deadline) || cmd.ProcessState != nil {
			t.Fatalf("the backup holds %d of %d records after a minute: %s", n, o.total, out)
		}
	}
}

// checkExactlyOnce checks that the backup holds every source offset once.
func (o *outageBackup) checkExactlyOnce(t *testing.T) {
	if n := testkit.CheckBackupIn(t, o.s3.Store(t, o.path), "outage"); n != o.total {
		t.Fatalf("the backup holds %d records, want %d", n, o.total)
	}
}

// ref is the backup, for the harness's checks.
func (o *outageBackup) ref() backupRef {
	return backupRef{addr: o.addr, topic: o.topic, path: o.path, id: "outage", flags: s3Flags(o.s3.S3Server)}
}

// TestABackupRidesOutAnS3Outage stops the S3 server for 15 seconds (40 in
// the long run) in the middle of a backup: the backup warns (naming the
// store) when the outage starts and every 10 seconds while it lasts,
// retries, and completes once the server is back, with every source offset
// in it exactly once.
func TestABackupRidesOutAnS3Outage(t *testing.T) {
	sc := newScenario(t, "S3 server stopped mid-backup, then started")
	o := newOutageBackup(t, "5m")
	var out syncBuffer
	cmd := o.start(t, &out)
	before := o.stopMidway(t, cmd, &out)
	outage := size(15*time.Second, 40*time.Second)
	time.Sleep(outage)
	o.s3.Up(t)
	sc.fault("the backup's S3 server down for %s (stopped, %s, started)", time.Since(o.down).Round(time.Second), outage)
	up := time.Now()
	w := wait(cmd)
	sc.recovered(waitProgress(t, up, before, func() int64 { return o.held(t) }, w.done, 2*time.Minute))
	if <-w.done; w.err != nil {
		t.Fatalf("the backup failed after a %s outage: %v\n%s", outage, w.err, out.String())
	}
	o.checkExactlyOnce(t)
	sc.note("backup rode it out, every offset once")
	log := out.String()
	store := "store=s3://kpipe/outage"
	warned, still := strings.Count(log, "storage unreachable or failing; retrying"), strings.Count(log, "storage still unreachable or failing; retrying")
	// One every 10s, and maybe one more while the server starts.
	least := int((outage+10*time.Second-1)/(10*time.Second)) - 1
	if warned != 1 || still < least || still > least+1 || !strings.Contains(log, store) || !strings.Contains(log, "storage reachable again") {
		t.Fatalf("stderr has %d first warnings and %d repeats (want 1 and %d or %d, naming %s, then reachable again):\n%s", warned, still, least, least+1, store, log)
	}
	t.Logf("%d of %d records were durable when the server stopped", before, o.total)
	sc.verify(o.ref())
}

// TestAnS3OutageLongerThanTheBudgetFails: a backup whose store stays away
// longer than max_storage_outage exits 1 saying so, what it committed
// stays, and the next run, with the store back, resumes and completes.
func TestAnS3OutageLongerThanTheBudgetFails(t *testing.T) {
	sc := newScenario(t, "S3 server stopped mid-backup for longer than max_storage_outage")
	o := newOutageBackup(t, "4s")
	var out syncBuffer
	cmd := o.start(t, &out)
	o.stopMidway(t, cmd, &out)
	t0 := time.Now()
	err := cmd.Wait()
	took, sinceDown := time.Since(t0), time.Since(o.down)
	ee, ok := err.(*exec.ExitError)
	want := "storage s3://kpipe/outage unreachable or failing for longer than max_storage_outage (4s): dial tcp 127.0.0.1:"
	if !ok || ee.ExitCode() != 1 || !strings.Contains(out.String(), want) || took > 20*time.Second {
		t.Fatalf("a backup whose store stayed away: %v after %s, want exit 1 within 20s saying %q:\n%s", err, took, want, out.String())
	}
	o.s3.Up(t)
	sc.fault("the backup's S3 server down for %s (stopped until the run failed, then started), past max_storage_outage (4s)", time.Since(o.down).Round(time.Second))
	sc.note("the run failed with exit 1 %s after the server stopped, saying so", sinceDown.Round(100*time.Millisecond))
	durable := o.held(t)
	up := time.Now()
	var again syncBuffer
	w := wait(o.start(t, &again))
	sc.recovered(waitProgress(t, up, durable, func() int64 { return o.held(t) }, w.done, 2*time.Minute))
	if <-w.done; w.err != nil {
		t.Fatalf("the run after the outage: %v\n%s", w.err, again.String())
	}
	o.checkExactlyOnce(t)
	t.Logf("%d of %d records were durable when the run failed; the next run completed the backup", durable, o.total)
	sc.note("the next run completed it, every offset once")
	sc.verify(o.ref())
}
