package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/internal/testkit"
)

// TestAThousandPartitions backs up and restores a topic of 1,000
// partitions, a few records each: every partition comes back whole, and
// the process tree of each run, and of a deep validation, stays within the
// data plane's memory bound (128 MiB peak RSS).
func TestAThousandPartitions(t *testing.T) {
	const partitions, per = 1000, 3
	const bound = 128 << 20
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "thousand")
	testkit.CreateTopic(t, addr, topic, partitions)
	var recs []*kgo.Record
	for p := range int32(partitions) {
		for i := range per {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Key: []byte(fmt.Sprint(i)), Value: []byte(fmt.Sprintf("%d-%d", p, i))})
		}
	}
	testkit.Produce(t, addr, recs)
	path := t.TempDir()
	s := measured(t, "backup", "--bootstrap-servers", addr, "--topics", topic, "--path", path, "--backup-id", "k", "--progress", "off")
	t.Logf("backup: tree peak RSS %d MiB over %d processes", s.PeakRSS()>>20, s.Procs())
	if s.PeakRSS() > bound {
		t.Errorf("backup of %d partitions: tree peak RSS %d MiB, over %d MiB", partitions, s.PeakRSS()>>20, bound>>20)
	}
	if n := testkit.CheckBackup(t, path, "k"); n != partitions*per {
		t.Fatalf("backup holds %d records, want %d", n, partitions*per)
	}
	// Validating reads a thousand manifests (deep: and segments) at once,
	// a few at a time, within the same bound.
	s = measured(t, "validate", "--path", path, "--backup-id", "k", "--deep", "--progress", "off")
	t.Logf("validate --deep: tree peak RSS %d MiB", s.PeakRSS()>>20)
	if s.PeakRSS() > bound {
		t.Errorf("validate --deep of %d partitions: tree peak RSS %d MiB, over %d MiB", partitions, s.PeakRSS()>>20, bound>>20)
	}
	dst := testkit.Topic(t, "thousand-back")
	s = measured(t, "restore", "--bootstrap-servers", addr, "--path", path, "--backup-id", "k", "--topic-mapping", topic+"="+dst, "--progress", "off")
	t.Logf("restore: tree peak RSS %d MiB", s.PeakRSS()>>20)
	if s.PeakRSS() > bound {
		t.Errorf("restore of %d partitions: tree peak RSS %d MiB, over %d MiB", partitions, s.PeakRSS()>>20, bound>>20)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ends, err := kadm.NewClient(testkit.Client(t, addr)).ListEndOffsets(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	ends.Each(func(o kadm.ListedOffset) {
		n++
		if o.Offset != per {
			t.Errorf("restored partition %d ends at %d, want %d", o.Partition, o.Offset, per)
		}
	})
	if n != partitions {
		t.Fatalf("restored topic has %d partitions, want %d", n, partitions)
	}
}
