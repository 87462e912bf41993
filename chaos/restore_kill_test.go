package chaos

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/internal/testkit"
	"github.com/kpipe/kpipe/sdk/restore"
)

// TestRestoreSurvivesSIGKILL kills a restore of 3 partitions at random
// moments again and again, then lets it finish: the target holds every
// record exactly once, in order, byte for byte.
func TestRestoreSurvivesSIGKILL(t *testing.T) {
	killRestore(t, "")
}

// TestMergingRestoreSurvivesSIGKILL does the same for a restore that merges
// the 3 source partitions into one: the target partition holds source
// partition 0, then 1, then 2, each in its order, every record once.
func TestMergingRestoreSurvivesSIGKILL(t *testing.T) {
	killRestore(t, "merge")
}

// TestRepartitioningRestoreSurvivesSIGKILL does the same for a restore that
// spreads the 3 source partitions' records over 2 by key (murmur2): each
// target partition holds, every record once, the records that go to it,
// source partition 0's first, each source partition's in order (records
// without a key round-robin).
func TestRepartitioningRestoreSurvivesSIGKILL(t *testing.T) {
	killRestore(t, "repartition")
}

// killRestore kills a restore again and again: a plain one (mode ""), one
// that merges the 3 source partitions into 1 ("merge") or one that spreads
// them over 2 by key ("repartition").
func killRestore(t *testing.T, mode string) {
	addr := testkit.Kafka(t)
	name := "SIGKILL of a restore"
	switch mode {
	case "merge":
		name += " merging 3 partitions into 1"
	case "repartition":
		name += " repartitioning 3 partitions into 2 by key"
	}
	sc := newScenario(t, name)
	rng := rngFor(t)
	rounds := size(10, 20)
	const partitions = 3
	per := size(40_000, 100_000)
	topic := testkit.Topic(t, "rkill")
	testkit.CreateTopic(t, addr, topic, partitions)
	newDataset(topic, partitions).produce(t, addr, 0, per)
	total := int64(partitions * per)
	path := t.TempDir()
	if code, _, stderr := run(t, 5*time.Minute, "--plugin-dir", testkit.PluginDir(t), "backup", "--bootstrap-servers", addr, "--topics", topic,
		"--path", path, "--backup-id", "k", "--state-dir", t.TempDir(), "--progress", "off", "--segment-max-records", "2000"); code != 0 {
		t.Fatalf("backup: exit %d\n%s", code, stderr)
	}

	dst := topic + "-restored"
	args := []string{"--plugin-dir", testkit.PluginDir(t), "restore", "--path", path, "--backup-id", "k",
		"--bootstrap-servers", addr, "--topic-mapping", topic + "=" + dst, "--state-dir", t.TempDir(), "--progress", "off",
		"--in-flight-bytes", "1MiB", "--window", "4", "--log-level", "info"}
	// Created empty, so that its end offsets can be watched from the start.
	switch mode {
	case "merge":
		args = append(args, "--partition-mapping", "1=0,2=0")
		testkit.CreateTopic(t, addr, dst, 1)
	case "repartition":
		args = append(args, "--repartitioning", dst+"=murmur2:2")
		testkit.CreateTopic(t, addr, dst, 2)
	default:
		testkit.CreateTopic(t, addr, dst, partitions)
	}
	adm := kadm.NewClient(testkit.Client(t, addr))
	restored := func() int64 { return endOffsets(adm, dst) }

	var kills, midRun, caughtUp int
	// A run after a kill finds the records the killed run wrote after its
	// last save, and matches them instead of writing them again.
	matched := func(out *syncBuffer) {
		if strings.Contains(out.String(), "records written after the last save are matched") {
			caughtUp++
		}
	}
	last := int64(0)
	for round := 0; round < rounds; round++ {
		var out syncBuffer
		w := wait(start(t, &out, nil, args...))
		// Mostly kill once the target holds a random share more of the
		// records; sometimes at a random moment of start-up.
		target := int64(0)
		deadline := time.Now().Add(time.Duration(rng.IntN(60)) * time.Millisecond)
		if rng.IntN(4) != 0 {
			target = last + 1 + int64(float64(total-last)*(0.03+0.12*rng.Float64()))
		}
		for time.Now().Before(deadline) || (target > 0 && restored() < target) {
			select {
			case <-w.done:
				if w.err != nil {
					t.Fatalf("round %d: the restore failed on its own: %v\n%s", round, w.err, out.String())
				}
			case <-time.After(2 * time.Millisecond):
				continue
			}
			break
		}
		select {
		case <-w.done:
			// It finished before the kill: the loop is over.
			matched(&out)
			round = rounds
			continue
		default:
		}
		time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
		w.cmd.Process.Signal(syscall.SIGKILL)
		<-w.done
		matched(&out)
		kills++
		n := restored()
		t.Logf("round %d: killed with %d of %d records in the target", round, n, total)
		if n > 0 && n < total {
			midRun++
		}
		last = n
	}
	// The last run goes to the end.
	var out syncBuffer
	w := wait(start(t, &out, nil, args...))
	if <-w.done; w.err != nil {
		t.Fatalf("the restore run after the kills: %v\n%s", w.err, out.String())
	}
	matched(&out)
	sc.fault("%d SIGKILLs of the restore, %d of them with part of the records written", kills, midRun)
	if midRun < 3 || caughtUp == 0 {
		t.Fatalf("%d of %d kills landed mid-restore, %d runs matched records a killed run wrote after its last save; want 3 and 1 at least, else the test proves nothing", midRun, kills, caughtUp)
	}
	sc.note("%d runs matched records a killed run wrote after its last save", caughtUp)
	if mode == "" {
		sc.compare(addr, topic, dst)
		return
	}
	// Merged: source partition 0, then 1, then 2, into target partition 0.
	// Repartitioned: the same, for each target partition, of the records
	// that go to it.
	want := testkit.ConsumeAll(t, addr, topic)
	if mode == "repartition" {
		want = repartitioned(want, restore.Repartition{Strategy: restore.Murmur2, Partitions: 2})
	}
	got := testkit.ConsumeAll(t, addr, dst)
	sc.checked = true
	sc.lost, sc.dup = max(0, len(want)-len(got)), max(0, len(got)-len(want))
	for i := range min(len(want), len(got)) {
		if why := differs(want[i], got[i]); why != "" || got[i].Partition != targetOf[want[i]] {
			sc.note("%s restore differs at target record %d", mode, i)
			t.Fatalf("%s target record %d (partition %d): %s; want source partition %d's record %s in partition %d", mode, i, got[i].Partition, why, want[i].Partition, idOfRecord(want[i]), targetOf[want[i]])
		}
	}
	if len(got) != len(want) {
		sc.note("%s restore holds %d of %d records", mode, len(got), len(want))
		t.Fatalf("the %s target holds %d records, want %d", mode, len(got), len(want))
	}
	sc.note("%s restore exact (%d records, source partitions one after the other)", mode, len(want))
}

// targetOf holds the target partition each source record of a merging or
// repartitioning restore goes to; a record not in it goes to 0.
var targetOf = map[*kgo.Record]int32{}

// repartitioned orders the source records as r puts them in the target:
// by target partition, then source partition, then offset; it notes each
// one's target partition in targetOf.
func repartitioned(src []*kgo.Record, r restore.Repartition) []*kgo.Record {
	by := make([][]*kgo.Record, r.Partitions)
	nulls := map[int32]int64{}
	for _, rec := range src { // in partition, then offset order
		p := r.Partition(rec.Key, rec.Partition, nulls[rec.Partition])
		if rec.Key == nil {
			nulls[rec.Partition]++
		}
		targetOf[rec] = p
		by[p] = append(by[p], rec)
	}
	var out []*kgo.Record
	for _, recs := range by {
		out = append(out, recs...)
	}
	return out
}

// TestAnotherProducerStopsARestore: a record produced to a target
// partition while a restore writes to it stops the restore with an error
// naming the partition; a rerun refuses to continue past the foreign
// record.
func TestAnotherProducerStopsARestore(t *testing.T) {
	addr := testkit.Kafka(t)
	sc := newScenario(t, "another producer writes to a restore's target")
	const partitions = 1
	per := size(40_000, 120_000)
	topic := testkit.Topic(t, "rforeign")
	testkit.CreateTopic(t, addr, topic, partitions)
	newDataset(topic, partitions).produce(t, addr, 0, per)
	path := t.TempDir()
	if code, _, stderr := run(t, 5*time.Minute, "--plugin-dir", testkit.PluginDir(t), "backup", "--bootstrap-servers", addr, "--topics", topic,
		"--path", path, "--backup-id", "f", "--state-dir", t.TempDir(), "--progress", "off"); code != 0 {
		t.Fatalf("backup: exit %d\n%s", code, stderr)
	}
	dst := topic + "-restored"
	testkit.CreateTopic(t, addr, dst, partitions)
	args := []string{"--plugin-dir", testkit.PluginDir(t), "restore", "--path", path, "--backup-id", "f",
		"--bootstrap-servers", addr, "--topic-mapping", topic + "=" + dst, "--state-dir", t.TempDir(), "--progress", "off",
		"--in-flight-bytes", "1MiB", "--window", "2"}
	adm := kadm.NewClient(testkit.Client(t, addr))
	var out syncBuffer
	w := wait(start(t, &out, nil, args...))
	waitUntil(t, "the restore wrote its first records", w, &out, func() bool { return endOffsets(adm, dst) > 0 })
	testkit.Produce(t, addr, []*kgo.Record{{Topic: dst, Partition: 0, Value: []byte("not the restore's")}})
	sc.fault("one record produced to the target partition mid-restore")
	<-w.done
	want := fmt.Sprintf("target partition %s/0: a record of this restore landed at offset", dst)
	if code := exitCode(w.err); code != 1 || !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "another producer writes to the partition") {
		t.Fatalf("the restore with another producer: exit %d, want 1 and %q:\n%s", code, want, out.String())
	}
	var again syncBuffer
	w = wait(start(t, &again, nil, args...))
	<-w.done
	if code := exitCode(w.err); code != 1 || !strings.Contains(again.String(), "holds a record this restore did not write there") {
		t.Fatalf("the rerun: exit %d, want 1 and that the target holds a record the restore did not write:\n%s", code, again.String())
	}
	sc.note("the restore stopped with the partition named; the rerun refused to go on")
}
