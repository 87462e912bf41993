package main

import (
	"fmt"
	"math/rand/v2"
	"os/exec"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/bench"
	"github.com/kpipe/kpipe/internal/testkit"
)

// measured runs kpipe with args and samples its process tree until it
// exits: the host's own I/O, its plugins' I/O and the tree's peak memory.
func measured(t *testing.T, args ...string) *bench.Sampler {
	t.Helper()
	cmd := exec.Command(testkit.KpipeBinary(t), append([]string{"--plugin-dir", testkit.PluginDir(t), "--log-level", "warn"}, args...)...)
	cmd.Dir = t.TempDir()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	s := bench.NewSampler(cmd.Process.Pid)
	for {
		s.Sample()
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("kpipe %v: %v", args, err)
			}
			return s
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// seedPayload fills a topic with records of a 16-byte key, a 1 KiB value
// (half random, half repeated) and a header, and returns the payload bytes.
func seedPayload(t *testing.T, addr, topic string, partitions int32, n int) int64 {
	t.Helper()
	testkit.CreateTopic(t, addr, topic, partitions)
	rng := rand.New(rand.NewPCG(3, 4))
	recs := make([]*kgo.Record, n)
	var payload int64
	for i := range recs {
		v := make([]byte, 1024)
		for j := range 512 {
			v[j] = byte(rng.Uint32())
		}
		copy(v[512:], fmt.Sprintf("%0512d", i))
		r := &kgo.Record{Topic: topic, Partition: int32(i) % partitions, Key: fmt.Appendf(nil, "key-%012d", i), Value: v,
			Headers: []kgo.RecordHeader{{Key: "trace", Value: []byte("0123456789abcdef")}}, Timestamp: time.Now()}
		payload += int64(len(r.Key) + len(r.Value) + len("trace") + 16)
		recs[i] = r
	}
	testkit.Produce(t, addr, recs)
	return payload
}

// TestHostRelaysNoBatchBytes: batch bytes flow from plugin to plugin. During
// a backup and a restore, the host process's own reads and writes (rchar +
// wchar, sampled while its plugins run) stay under 5% of the payload, while
// its plugins move it several times over; and the whole process tree stays
// within a memory bound of its own (make bench measures the real one).
func TestHostRelaysNoBatchBytes(t *testing.T) {
	addr := testkit.Kafka(t)
	topic := testkit.Topic(t, "dataplane")
	payload := seedPayload(t, addr, topic, 4, 30_000)
	root := t.TempDir()
	const memoryBound = 115 << 20

	check := func(what string, s *bench.Sampler) {
		t.Helper()
		host := s.RootIO()
		plugins := s.TreeIO().Sub(host)
		hostBytes, pluginBytes := host.RChar+host.WChar, plugins.RChar+plugins.WChar
		t.Logf("%s: payload %d bytes; host read+wrote %d (%.2f%%), plugins %d (%.1fx); peak memory of %d processes %.1f MiB",
			what, payload, hostBytes, 100*float64(hostBytes)/float64(payload), pluginBytes, float64(pluginBytes)/float64(payload),
			s.Procs(), float64(s.PeakRSS())/(1<<20))
		if hostBytes*20 >= payload {
			t.Errorf("%s: the host read and wrote %d bytes, 5%% of the %d-byte payload or more: it relays batch bytes", what, hostBytes, payload)
		}
		if pluginBytes < payload {
			t.Errorf("%s: the plugins read and wrote only %d bytes of a %d-byte payload", what, pluginBytes, payload)
		}
		if s.PeakRSS() > memoryBound {
			t.Errorf("%s: the process tree peaked at %.1f MiB, above the %d MiB this test allows", what, float64(s.PeakRSS())/(1<<20), memoryBound>>20)
		}
	}
	check("backup", measured(t, "backup", "--bootstrap-servers", addr, "--topics", topic, "--path", root, "--backup-id", "b",
		"--state-dir", t.TempDir()))
	restored := testkit.Topic(t, "restored")
	check("restore", measured(t, "restore", "--bootstrap-servers", addr, "--path", root, "--backup-id", "b",
		"--topic-mapping", topic+"="+restored, "--state-dir", t.TempDir()))
	if got := len(testkit.ConsumeAll(t, addr, restored)); got != 30_000 {
		t.Fatalf("restored %d records, want 30000", got)
	}
}
