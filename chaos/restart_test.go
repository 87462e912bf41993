package chaos

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kpipe/kpipe/internal/testkit"
)

// TestABrokerRestartMidBackup stops the broker of the test's own in the
// middle of a snapshot backup and starts it again: the backup waits for it,
// completes with exit 0, and holds every offset once.
func TestABrokerRestartMidBackup(t *testing.T) {
	sc := newScenario(t, "broker restarted mid-backup")
	k := testkit.StartKafka(t)
	topic := testkit.Topic(t, "restart")
	const partitions = 3
	per := size(25_000, 60_000) // enough that the backup is still running once the broker has stopped
	testkit.CreateTopic(t, k.Addr, topic, partitions)
	newDataset(topic, partitions).produce(t, k.Addr, 0, per)
	total := int64(partitions * per)
	path := t.TempDir()
	held := func() int64 { return testkit.Records(t, path, "r") }

	var out syncBuffer
	w := wait(start(t, &out, nil, "--plugin-dir", testkit.PluginDir(t), "backup", "--bootstrap-servers", k.Addr, "--topics", topic,
		"--path", path, "--backup-id", "r", "--state-dir", t.TempDir(), "--in-flight-bytes", "1MiB", "--segment-max-records", "1000", "--progress", "off"))
	waitUntil(t, "the backup holds a twentieth of the records", w, &out, func() bool { return held() >= total/20 })
	pause := size(2*time.Second, 15*time.Second)
	down := time.Now()
	k.Down(t)
	if held() == total {
		t.Fatalf("the backup finished before the broker stopped: the test proves nothing")
	}
	time.Sleep(pause)
	k.Up(t)
	sc.fault("the broker down for %s (stopped, %s, started) with %d of %d records backed up", time.Since(down).Round(time.Second), pause, held(), total)
	sc.recovered(waitProgress(t, time.Now(), held(), held, w.done, 2*time.Minute))
	if <-w.done; w.err != nil {
		t.Fatalf("the backup failed after the broker restart: %v\n%s", w.err, out.String())
	}
	if n := testkit.CheckBackup(t, path, "r"); n != total {
		t.Fatalf("the backup holds %d records, want %d", n, total)
	}
	sc.note("backup completed, every offset once")
	sc.verify(backupRef{addr: k.Addr, topic: topic, path: path, id: "r"})
}

// TestABrokerRestartMidRestore stops the target broker (the test's own) in
// the middle of a restore and starts it again. The restore either rides it
// out or fails; a failed one is run again and resumes. Either way the
// target ends up with every record of the source once, in order.
func TestABrokerRestartMidRestore(t *testing.T) {
	sc := newScenario(t, "broker restarted mid-restore")
	k := testkit.StartKafka(t)
	topic := testkit.Topic(t, "restart")
	const partitions = 3
	per := size(40_000, 80_000) // enough that the restore is still running when the broker stops
	testkit.CreateTopic(t, k.Addr, topic, partitions)
	newDataset(topic, partitions).produce(t, k.Addr, 0, per)
	total := int64(partitions * per)
	path := t.TempDir()
	ref := backupRef{addr: k.Addr, topic: topic, path: path, id: "r"}
	if code, _, stderr := run(t, 5*time.Minute, "--plugin-dir", testkit.PluginDir(t), "backup", "--bootstrap-servers", k.Addr, "--topics", topic,
		"--path", path, "--backup-id", "r", "--state-dir", t.TempDir(), "--progress", "off"); code != 0 {
		t.Fatalf("backup: exit %d\n%s", code, stderr)
	}
	sc.validateDeep(ref, true, "")

	dst := topic + "-restored"
	testkit.CreateTopic(t, k.Addr, dst, partitions) // so that its end offsets can be watched from the start
	state := t.TempDir()
	restore := func(out *syncBuffer) *waiter {
		return wait(start(t, out, nil, "--plugin-dir", testkit.PluginDir(t), "restore", "--path", path, "--backup-id", "r",
			"--bootstrap-servers", k.Addr, "--topic-mapping", topic+"="+dst, "--state-dir", state, "--progress", "off",
			"--in-flight-bytes", "1MiB", "--window", "1"))
	}
	adm := kadm.NewClient(testkit.Client(t, k.Addr))
	restored := func() int64 { return endOffsets(adm, dst) }
	var out syncBuffer
	w := restore(&out)
	// The broker goes down early in the restore: stopping it takes a while,
	// and on a fast machine the restore could finish meanwhile.
	waitUntil(t, "the restore wrote its first records", w, &out, func() bool { return restored() >= total/50 })
	pause := size(2*time.Second, 15*time.Second)
	down := time.Now()
	k.Down(t)
	select {
	case <-w.done:
		if w.err == nil {
			t.Fatalf("the restore finished before the broker stopped: the test proves nothing")
		}
	default:
	}
	time.Sleep(pause)
	k.Up(t)
	up := time.Now()
	before := restored()
	sc.fault("the target broker down for %s (stopped, %s, started) with %d of %d records restored", up.Sub(down).Round(time.Second), pause, before, total)
	sc.recovered(waitProgress(t, up, before, restored, w.done, 2*time.Minute))
	if <-w.done; w.err != nil {
		t.Logf("the restore failed when the broker stopped (%v); running it again:\n%s", w.err, out.String())
		sc.note("the restore failed (exit %d), the next run resumed it", exitCode(w.err))
		var again syncBuffer
		w = restore(&again)
		if <-w.done; w.err != nil {
			t.Fatalf("the restore run after the broker restart: %v\n%s", w.err, again.String())
		}
	} else {
		sc.note("the restore rode it out")
	}
	sc.compare(k.Addr, topic, dst)
}

// waitUntil waits up to a minute for cond, failing the test if the run w
// ends first.
func waitUntil(t *testing.T, what string, w *waiter, out *syncBuffer, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(5 * time.Millisecond) {
		select {
		case <-w.done:
			t.Fatalf("the run ended (%v) before %s: the test proves nothing\n%s", w.err, what, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not yet after a minute: %s\n%s", what, out.String())
		}
	}
}

// endOffsets adds up the end offsets of topic's partitions; 0 while the
// topic does not exist or the broker does not answer.
func endOffsets(adm *kadm.Client, topic string) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			n += o.Offset
		}
	})
	return n
}

// exitCode is the exit code of a run's error.
func exitCode(err error) int {
	if ee, ok := err.(interface{ ExitCode() int }); ok {
		return ee.ExitCode()
	}
	return -1
}
