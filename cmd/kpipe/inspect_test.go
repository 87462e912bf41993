package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/internal/testkit"
	"github.com/kpipe/kpipe/sdk/storage"
)

// describeBackup runs `kpipe describe --format json`.
func describeBackup(t *testing.T, path, id string, flags ...string) storage.Description {
	t.Helper()
	code, out, errText := kpipe(t, append([]string{"--format", "json", "describe", "--path", path, "--backup-id", id}, flags...)...)
	var d storage.Description
	if err := json.Unmarshal([]byte(out), &d); code != 0 || err != nil {
		t.Fatalf("describe: exit %d (%v): %s%s", code, err, out, errText)
	}
	return d
}

// validBackup checks that `kpipe validate` passes the backup, plain and
// deep, with no problems and no notes.
func validBackup(t *testing.T, path, id string, flags ...string) storage.Report {
	t.Helper()
	var r storage.Report
	for _, deep := range []string{"--deep=false", "--deep"} {
		code, out, errText := kpipe(t, append([]string{"--format", "json", "validate", "--path", path, "--backup-id", id, deep, "--progress", "off"}, flags...)...)
		r = storage.Report{}
		if err := json.Unmarshal([]byte(out), &r); err != nil || code != 0 || !r.Valid || len(r.Problems) != 0 || len(r.Notes) != 0 {
			t.Fatalf("validate %s: exit %d (%v), problems %+v, notes %+v: %s", deep, code, err, r.Problems, r.Notes, errText)
		}
	}
	return r
}

// TestValidatePassesTransactions: committed transactions leave markers
// and aborted records between the segments' records; with a segment per
// record, every entry starts past offsets that hold nothing to back up,
// and validate must tell that from a lost entry.
func TestValidatePassesTransactions(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "txnval")
	testkit.CreateTopic(t, addr, topic, 1)
	cl := testkit.Client(t, addr, kgo.TransactionalID(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, commit := range []bool{true, false, true, true, false, true} {
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for j := range 2 {
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: fmt.Appendf(nil, "%d-%d", i, j)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	path := t.TempDir()
	if code, _, errText := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", topic, "--path", path, "--backup-id", "t", "--segment-max-records", "1"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, errText)
	}
	r := validBackup(t, path, "t")
	if len(r.Partitions) != 1 || r.Partitions[0].Records != 8 || r.Partitions[0].Segments != 8 || r.Checked.Records != 8 {
		t.Fatalf("partitions %+v, checked %+v: want 8 records in 8 segments", r.Partitions, r.Checked)
	}
	// Offsets: 6 transactions of 2 records and a marker each.
	if p := r.Partitions[0]; *p.EarliestOffset != 0 || *p.LatestOffset != 16 || p.NextOffset != 18 {
		t.Fatalf("offsets %d-%d next %d, want 0-16 next 18", *p.EarliestOffset, *p.LatestOffset, p.NextOffset)
	}

	// --max-age: within it the backup passes; past it, it fails as stale.
	if code, _, errText := kpipe(t, "validate", "--path", path, "--backup-id", "t", "--max-age", "1h", "--progress", "off"); code != 0 {
		t.Fatalf("--max-age 1h: exit %d: %s", code, errText)
	}
	time.Sleep(10 * time.Millisecond)
	code, out, errText := kpipe(t, "validate", "--path", path, "--backup-id", "t", "--max-age", "5ms", "--progress", "off")
	if code != exitFailed || !strings.Contains(out, "[stale] the last commit was at ") || !strings.Contains(out, "older than the maximum age 5ms (the backup's last run is complete)") ||
		!strings.HasSuffix(errText, "backup t is INVALID: 1 problem(s)\n") {
		t.Fatalf("--max-age 5ms: exit %d: %s%s", code, out, errText)
	}

	// Progress ends with a last line of the report's counts.
	code, _, errText = kpipe(t, "validate", "--path", path, "--backup-id", "t", "--deep", "--progress", "json")
	lines := strings.Split(strings.TrimSpace(errText), "\n")
	want := fmt.Sprintf(`{"validating":{"bytes_read":%d,"done":true,"partitions":1,"partitions_done":1,"records":8,"segments":8}}`, r.Checked.BytesRead)
	if code != 0 || lines[len(lines)-1] != want {
		t.Fatalf("--progress json: exit %d, stderr %q, want it to end with %s", code, errText, want)
	}
	code, _, errText = kpipe(t, "validate", "--path", path, "--backup-id", "t", "--deep", "--progress", "tty")
	if want := fmt.Sprintf("\rvalidating: 1/1 partitions, 8 segments, 8 records, %s read   \n", humanBytes(r.Checked.BytesRead)); code != 0 || !strings.HasSuffix(errText, want) {
		t.Fatalf("--progress tty: exit %d, stderr %q, want it to end with %q", code, errText, want)
	}
}

// TestListShowsEachBackupsState: a snapshot that ended is complete, a
// continuous backup is in progress while it runs and stopped after
// SIGTERM, and one killed with SIGKILL is failed.
func TestListShowsEachBackupsState(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "states")
	ts := time.Now().Add(-time.Hour).UnixMilli()
	seedPartitions(t, addr, topic, 2, 50, ts)
	path := t.TempDir()
	if code, _, errText := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", topic, "--path", path, "--backup-id", "done"); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, errText)
	}
	start := func(id string) (*exec.Cmd, *bytes.Buffer) {
		cmd := exec.Command(testkit.KpipeBinary(t), "--plugin-dir", testkit.PluginDir(t), "backup", "--bootstrap-servers", addr, "--topics", topic,
			"--path", path, "--backup-id", id, "--state-dir", t.TempDir(), "--continuous", "--segment-max-interval", "200ms", "--progress", "off")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
		for deadline := time.Now().Add(time.Minute); held(t, backupAt{path, id}) < 100; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("continuous backup %s holds %d records after a minute: %s", id, held(t, backupAt{path, id}), stderr.String())
			}
		}
		return cmd, &stderr
	}
	stopped, _ := start("stopped")
	killed, _ := start("killed")
	list := func() map[string]string {
		t.Helper()
		code, out, errText := kpipe(t, "--format", "json", "list", "--path", path)
		var l struct {
			Backups []struct {
				BackupID string `json:"backup_id"`
				State    string `json:"state"`
				Records  int64  `json:"records"`
			} `json:"backups"`
		}
		if err := json.Unmarshal([]byte(out), &l); code != 0 || err != nil {
			t.Fatalf("list: exit %d (%v): %s%s", code, err, out, errText)
		}
		got := map[string]string{}
		for _, b := range l.Backups {
			got[b.BackupID] = fmt.Sprintf("%s %d", b.State, b.Records)
		}
		return got
	}
	if got, want := list(), map[string]string{"done": "complete 100", "stopped": "in_progress 100", "killed": "in_progress 100"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("list while two run: %v, want %v", got, want)
	}
	stopped.Process.Signal(syscall.SIGTERM)
	stopped.Wait()
	syscall.Kill(-killed.Process.Pid, syscall.SIGKILL)
	killed.Wait()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		got, want := list(), map[string]string{"done": "complete 100", "stopped": "stopped 100", "killed": "failed 100"}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("list after SIGTERM and SIGKILL: %v, want %v", got, want)
		}
	}
	code, out, _ := kpipe(t, "list", "--path", path)
	first := time.UnixMilli(ts).UTC().Format("2006-01-02T15:04:05.000Z")
	for _, want := range []string{"BACKUP ID  STATE", "\ndone       complete  " + first, "\nkilled     failed    " + first, "\nstopped    stopped   " + first} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("list: exit %d, no %q in\n%s", code, want, out)
		}
	}
	// The killed run's open segment, if it had one, is a leftover, not a
	// problem.
	validBackupOrLeftovers(t, path, "killed")
}

// validBackupOrLeftovers is validBackup allowing notes of uncommitted
// leftovers.
func validBackupOrLeftovers(t *testing.T, path, id string) {
	t.Helper()
	code, out, errText := kpipe(t, "--format", "json", "validate", "--path", path, "--backup-id", id, "--deep", "--progress", "off")
	var r storage.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != 0 || !r.Valid {
		t.Fatalf("validate: exit %d (%v), problems %+v: %s", code, err, r.Problems, errText)
	}
	for _, n := range r.Notes {
		if n.Check != storage.NoteLeftover {
			t.Fatalf("note %+v", n)
		}
	}
}

// TestInspectBadInput: each mistake is named, with exit 2.
func TestInspectBadInput(t *testing.T) {
	path := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"validate", "--path", path}, "kpipe: missing required flag(s) --backup-id; see --help\n"},
		{[]string{"describe", "--backup-id", "x"}, "kpipe: missing required flag(s) --path; see --help\n"},
		{[]string{"validate", "--path", path, "--backup-id", "nope"}, "kpipe: backup not found: the storage holds no backup \"nope\" (no nope/backup.json)\n"},
		{[]string{"describe", "--path", path, "--backup-id", "nope"}, "kpipe: backup not found: the storage holds no backup \"nope\" (no nope/backup.json)\n"},
		{[]string{"validate", "--path", path, "--backup-id", "x", "--max-age", "soon"}, "kpipe: --max-age \"soon\": time: invalid duration \"soon\"; write a duration such as 90m, 26h or 7d\n"},
		{[]string{"validate", "--path", path, "--backup-id", "x", "--max-age", "-1d"}, "kpipe: --max-age \"-1d\": not a positive number of days; write a duration such as 90m, 26h or 7d\n"},
		{[]string{"list", "--path", path, "--s3-region", "eu-west-1"}, fmt.Sprintf("kpipe: --s3-region applies to an s3:// --path only; --path %q is a folder\n", path)},
		{[]string{"validate", "--path", path, "--backup-id", "x", "--progress", "loud"}, "kpipe: --progress \"loud\": use auto, tty, json or off\n"},
	} {
		code, _, errText := kpipe(t, c.args...)
		if code != exitBadInput || errText != c.want {
			t.Errorf("%v: exit %d, stderr %q; want exit %d, %q", c.args, code, errText, exitBadInput, c.want)
		}
	}
}

// TestDeepValidationOfAnEncryptedBackupNeedsItsKey: plain validation reads
// no segment and needs no key; --deep without it is bad input, and with
// it every batch is decrypted.
func TestDeepValidationOfAnEncryptedBackupNeedsItsKey(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "encval")
	seedPartitions(t, addr, topic, 1, 30, time.Now().UnixMilli())
	path := t.TempDir()
	key := filepath.Join(t.TempDir(), "key")
	os.WriteFile(key, []byte(strings.Repeat("ab", 32)), 0o600)
	if code, _, errText := kpipe(t, "backup", "--bootstrap-servers", addr, "--topics", topic, "--path", path, "--backup-id", "e", "--encryption-key-file", key); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, errText)
	}
	if code, _, errText := kpipe(t, "validate", "--path", path, "--backup-id", "e", "--progress", "off"); code != 0 {
		t.Fatalf("plain validate without the key: exit %d: %s", code, errText)
	}
	code, _, errText := kpipe(t, "validate", "--path", path, "--backup-id", "e", "--deep", "--progress", "off")
	if code != exitBadInput || !strings.HasSuffix(errText, "is encrypted (key "+describeBackup(t, path, "e").Encryption.KeyID+"): give its key (encryption_key_file or encryption_key_env): a deep validation decrypts every batch\n") {
		t.Fatalf("deep validate without the key: exit %d: %q", code, errText)
	}
	if r := validBackup(t, path, "e", "--encryption-key-file", key); r.Checked.Records != 30 {
		t.Fatalf("deep validation decoded %d records, want 30", r.Checked.Records)
	}
}
