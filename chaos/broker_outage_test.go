package chaos

import (
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kpipe/kpipe/internal/testkit"
)

// TestBrokerOutages stops a broker of the test's own under a continuous
// backup. For 22 seconds: the backup warns naming the broker when the
// outage begins and every 10 seconds, and goes on once the broker is back,
// with every offset once. Past --max-broker-outage: the backup fails with
// exit 1 and a clear error, and the next run completes the backup.
func TestBrokerOutages(t *testing.T) {
	k := testkit.StartKafka(t)
	topic := testkit.Topic(t, "brokerout")
	testkit.CreateTopic(t, k.Addr, topic, 2)
	data := newDataset(topic, 2)
	// produce writes n records from the from-th on, alternately to the two
	// partitions.
	produce := func(from, n int) { data.produce(t, k.Addr, from/2, (from+n)/2) }
	produce(0, 1000)
	path := t.TempDir()
	held := func() int64 { return testkit.Records(t, path, "b") }
	waitFor := func(cmd *exec.Cmd, out *syncBuffer, want int64) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); held() < want; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the backup holds %d of %d records after a minute:\n%s", held(), want, out.String())
			}
		}
	}
	backup := func(out *syncBuffer, extra ...string) *exec.Cmd {
		args := append([]string{"--plugin-dir", testkit.PluginDir(t), "backup", "--bootstrap-servers", k.Addr, "--topics", topic,
			"--path", path, "--backup-id", "b", "--state-dir", t.TempDir(), "--segment-max-interval", "200ms"}, extra...)
		cmd := exec.Command(testkit.KpipeBinary(t), args...)
		cmd.Stderr = out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill() })
		return cmd
	}

	ref := backupRef{addr: k.Addr, topic: topic, path: path, id: "b"}

	t.Run("ridden out", func(t *testing.T) {
		sc := newScenario(t, "broker stopped under a continuous backup, then started")
		var out syncBuffer
		cmd := backup(&out, "--continuous")
		waitFor(cmd, &out, 1000)
		k.Down(t)
		down := time.Now()
		time.Sleep(22 * time.Second)
		k.Up(t)
		outage := time.Since(down) // the broker takes its time to start
		sc.fault("the broker down for %s under a continuous backup", outage.Round(time.Second))
		up := time.Now()
		produce(1000, 1000)
		sc.recovered(waitProgress(t, up, 1000, held, nil, time.Minute))
		waitFor(cmd, &out, 2000)
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err == nil || cmd.ProcessState.ExitCode() != 3 {
			t.Fatalf("stopped backup: %v, want exit 3:\n%s", err, out.String())
		}
		log := out.String()
		first, still := strings.Count(log, "Kafka broker unreachable; retrying"), strings.Count(log, "Kafka broker still unreachable; retrying")
		most := int(outage/(10*time.Second)) + 1 // one every 10s, a last one maybe as it ends
		if first != 1 || still < 2 || still > most || !strings.Contains(log, "broker="+k.Addr) || !strings.Contains(log, "Kafka reachable again") {
			t.Fatalf("stderr has %d first warnings and %d repeats over a %s outage (want 1, and 2 to %d, naming broker=%s, then reachable again):\n%s",
				first, still, outage.Round(time.Second), most, k.Addr, log)
		}
		if n := testkit.CheckBackup(t, path, "b"); n != 2000 {
			t.Fatalf("the backup holds %d records, want 2000", n)
		}
		sc.note("warned, rode it out, every offset once")
		sc.verify(ref)
	})

	t.Run("past the budget", func(t *testing.T) {
		sc := newScenario(t, "broker stopped under a continuous backup for longer than --max-broker-outage")
		var out syncBuffer
		cmd := backup(&out, "--continuous", "--max-broker-outage", "5s")
		time.Sleep(2 * time.Second) // resumed at 2000, polling
		k.Down(t)
		start := time.Now()
		err := cmd.Wait()
		if err == nil || cmd.ProcessState.ExitCode() != 1 {
			t.Fatalf("backup past its outage budget: %v, want exit 1:\n%s", err, out.String())
		}
		if took := time.Since(start); took > 30*time.Second {
			t.Errorf("the backup gave up %s after the broker stopped, want about 5s", took)
		}
		want := "Kafka unreachable for longer than max_broker_outage (5s): broker " + k.Addr
		if !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "what was committed before is intact") {
			t.Fatalf("stderr does not say %q:\n%s", want, out.String())
		}
		k.Up(t)
		sc.fault("the broker down for %s, past --max-broker-outage (5s)", time.Since(start).Round(time.Second))
		sc.note("the run failed with exit 1, saying so")
		up := time.Now()
		produce(2000, 500)
		var again syncBuffer
		w := wait(backup(&again))
		sc.recovered(waitProgress(t, up, 2000, held, w.done, time.Minute))
		if <-w.done; w.err != nil {
			t.Fatalf("the next run: %v\n%s", w.err, again.String())
		}
		if n := testkit.CheckBackup(t, path, "b"); n != 2500 {
			t.Fatalf("the backup holds %d records after the next run, want 2500", n)
		}
		sc.note("the next run completed it, every offset once")
		sc.verify(ref)
	})
}
