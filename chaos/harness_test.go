// The harness every chaos scenario uses: a known data set to produce, the
// checks that follow each fault (validate --deep, a restore compared with
// the source record by record) and the report's rows.

package chaos

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/internal/testkit"
)

// seed drives every random choice of the scenarios: KPIPE_CHAOS_SEED when
// set, else the clock. The report and each scenario's log name it.
var seed = func() uint64 {
	if s := os.Getenv("KPIPE_CHAOS_SEED"); s != "" {
		if n, err := strconv.ParseUint(s, 10, 64); err == nil {
			return n
		}
	}
	return uint64(time.Now().UnixNano())
}()

// long is the long run of `make chaos` (KPIPE_CHAOS_LONG=1): more faults,
// more data, longer outages. `make test` runs the short one.
var long = os.Getenv("KPIPE_CHAOS_LONG") == "1"

// size is short in the short run, long in the long one.
func size[T any](inShort, inLong T) T {
	if long {
		return inLong
	}
	return inShort
}

// rngFor is a random source of its own for a scenario, from the seed.
func rngFor(t *testing.T) *rand.Rand {
	var h uint64 = 14695981039346656037
	for _, c := range []byte(t.Name()) {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return rand.New(rand.NewPCG(seed, h))
}

// dataset is the known data of a scenario's topic: record i of partition p
// is made from (p, i) alone, so that any part of it can be produced again
// and compared. It has null and empty keys and values, repeated header
// keys, null and empty header values, and timestamps that are not
// monotonic.
type dataset struct {
	topic      string
	partitions int32
	base       int64 // timestamp of record 0, ms
}

func newDataset(topic string, partitions int32) *dataset {
	// Recent enough that no retention deletes the restored records.
	return &dataset{topic: topic, partitions: partitions, base: time.Now().Add(-time.Hour).UnixMilli()}
}

// records are records from..to-1 of every partition.
func (d *dataset) records(from, to int) []*kgo.Record {
	var out []*kgo.Record
	for p := range d.partitions {
		for i := from; i < to; i++ {
			out = append(out, d.record(p, i))
		}
	}
	return out
}

func (d *dataset) record(p int32, i int) *kgo.Record {
	rng := rand.New(rand.NewPCG(uint64(p), uint64(i)))
	r := &kgo.Record{Topic: d.topic, Partition: p, Timestamp: time.UnixMilli(d.base + int64(i) - int64(rng.IntN(40)))}
	switch i % 17 {
	case 0: // null key
	case 1:
		r.Key = []byte{}
	default:
		r.Key = fmt.Appendf(nil, "key-%d-%d", p, i%1000)
	}
	switch i % 23 {
	case 0: // tombstone
	case 1:
		r.Value = []byte{}
	default:
		r.Value = testkit.AppendEvents(nil, rng, 150+rng.IntN(250))
	}
	r.Headers = []kgo.RecordHeader{{Key: "id", Value: []byte(strconv.Itoa(i))}}
	if i%5 == 0 {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: "dup", Value: []byte("a")}, kgo.RecordHeader{Key: "dup", Value: []byte("b")})
	}
	if i%7 == 0 {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: "null"})
	}
	if i%11 == 0 {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: "empty", Value: []byte{}})
	}
	return r
}

// produce writes records from..to-1 of every partition.
func (d *dataset) produce(t *testing.T, addr string, from, to int) {
	t.Helper()
	testkit.Produce(t, addr, d.records(from, to))
}

// A scenario is one row of the report: the faults a test injected, what
// came of them, and how long the run took to recover. The row is added
// when the test ends, failed or not.
type scenario struct {
	t       *testing.T
	name    string
	faults  []string
	outcome []string
	checked bool // compare ran: lost and duplicated are known
	lost    int
	dup     int
	recover time.Duration // the longest recovery
}

func newScenario(t *testing.T, name string) *scenario {
	s := &scenario{t: t, name: name}
	t.Logf("scenario %q, seed %d (KPIPE_CHAOS_SEED=%d replays it)", name, seed, seed)
	t.Cleanup(func() {
		if t.Skipped() {
			return
		}
		r := row{Scenario: name, Faults: strings.Join(s.faults, "; "), Lost: "-", Dup: "-", Recover: "-"}
		if s.checked {
			r.Lost, r.Dup = strconv.Itoa(s.lost), strconv.Itoa(s.dup)
		}
		if s.recover > 0 {
			r.Recover = s.recover.Round(10 * time.Millisecond).String()
		}
		r.Outcome = strings.Join(s.outcome, "; ")
		if t.Failed() {
			r.Outcome = "FAILED: " + r.Outcome
		}
		report.add(r)
	})
	return s
}

// fault notes a fault injected.
func (s *scenario) fault(format string, args ...any) {
	s.faults = append(s.faults, fmt.Sprintf(format, args...))
}

// note adds to the outcome.
func (s *scenario) note(format string, args ...any) {
	s.outcome = append(s.outcome, fmt.Sprintf(format, args...))
}

// recovered notes one recovery's time: from the fault's end until the run
// committed more than it held at that moment, or finished.
func (s *scenario) recovered(d time.Duration) {
	s.t.Logf("recovered in %s", d.Round(time.Millisecond))
	s.recover = max(s.recover, d)
}

// waitProgress waits until held() is more than before, or the run ends
// (done closed), and returns how long that took from since.
func waitProgress(t *testing.T, since time.Time, before int64, held func() int64, done <-chan struct{}, limit time.Duration) time.Duration {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if held() > before {
			return time.Since(since)
		}
		select {
		case <-done:
			return time.Since(since)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no progress past %d records %s after the fault ended", before, limit)
		}
	}
}

// backupRef names a backup and how to reach it: its storage path, id, the
// storage flags of validate and restore, and the broker and topic it was
// taken from (restores go to that broker).
type backupRef struct {
	addr  string
	topic string
	path  string
	id    string
	flags []string // e.g. --s3-endpoint URL --s3-force-path-style
}

// s3Flags are the storage flags of a backup on srv.
func s3Flags(srv testkit.S3Server) []string {
	return []string{"--s3-endpoint", srv.Endpoint, "--s3-force-path-style"}
}

// verdict is what `kpipe validate --format json` prints.
type verdict struct {
	Valid    *bool `json:"valid"`
	Problems []struct {
		Check     string `json:"check"`
		Topic     string `json:"topic"`
		Partition int32  `json:"partition"`
		Segment   string `json:"segment"`
		Message   string `json:"message"`
	} `json:"problems"`
}

// validateDeep runs `kpipe validate --deep` on the backup and checks that
// its verdict is want: exit 0 and "valid": true for a valid backup, exit 1
// and "valid": false with the problems listed for an invalid one.
// When says when it runs, for the report ("" at the end).
func (s *scenario) validateDeep(b backupRef, want bool, when string) {
	t := s.t
	t.Helper()
	args := append([]string{"--plugin-dir", testkit.PluginDir(t), "validate", "--path", b.path, "--backup-id", b.id, "--deep", "--format", "json", "--progress", "off"}, b.flags...)
	if when != "" {
		when = " " + when
	}
	code, stdout, stderr := run(t, 5*time.Minute, args...)
	var v verdict
	if err := json.Unmarshal([]byte(stdout), &v); err != nil || v.Valid == nil {
		t.Errorf("validate --deep: exit %d, no verdict on stdout (%v): %s\n%s", code, err, stdout, stderr)
		s.note("validate --deep%s gave no verdict", when)
		return
	}
	switch {
	case *v.Valid != want:
		t.Errorf("validate --deep says valid=%t, want %t: %s\n%s", *v.Valid, want, stdout, stderr)
	case want && code != 0:
		t.Errorf("validate --deep of a valid backup: exit %d, want 0:\n%s", code, stderr)
	case !want && (code != 1 || len(v.Problems) == 0):
		t.Errorf("validate --deep of an invalid backup: exit %d with %d problems, want exit 1 naming them", code, len(v.Problems))
	}
	if *v.Valid {
		s.note("validate --deep%s: valid", when)
	} else {
		s.note("validate --deep%s: invalid (%d problems)", when, len(v.Problems))
	}
}

// restores numbers the restores, so that each has a target topic of its own.
var restores atomic.Int64

// restore restores the backup to a new topic of its broker (the source
// topic's name, "-restored" and a number) and returns that topic.
func (s *scenario) restore(b backupRef, extra ...string) string {
	t := s.t
	t.Helper()
	dst := fmt.Sprintf("%s-restored%d", b.topic, restores.Add(1))
	args := append([]string{"--plugin-dir", testkit.PluginDir(t), "restore", "--path", b.path, "--backup-id", b.id,
		"--bootstrap-servers", b.addr, "--topic-mapping", b.topic + "=" + dst, "--state-dir", t.TempDir(), "--progress", "off"}, b.flags...)
	code, _, stderr := run(t, 5*time.Minute, append(args, extra...)...)
	if code != 0 {
		t.Fatalf("restore: exit %d:\n%s", code, stderr)
	}
	return dst
}

// verify is what follows every scenario: validate --deep must find the
// backup valid, and a restore of it must hold the source topic's records,
// none lost, none duplicated, each equal to its source and in its order.
func (s *scenario) verify(b backupRef) {
	s.t.Helper()
	s.validateDeep(b, true, "")
	dst := s.restore(b)
	s.compare(b.addr, b.topic, dst)
}

// compare reads the source topic and the restored one and compares them
// partition by partition, record by record: key, value, headers, timestamp
// and order. A record is known by its partition and "id" header; it is
// lost when the target holds it fewer times than the source, duplicated
// for each time more.
func (s *scenario) compare(addr, src, dst string) {
	t := s.t
	t.Helper()
	want := testkit.ConsumeAll(t, addr, src)
	got := testkit.ConsumeAll(t, addr, dst)
	lost, dup, differ, first := diff(want, got)
	s.checked, s.lost, s.dup = true, lost, dup
	switch {
	case lost == 0 && dup == 0 && differ == 0:
		s.note("restore exact (%d records)", len(want))
	default:
		s.note("restore: %d lost, %d duplicated, %d different of %d", lost, dup, differ, len(want))
		t.Errorf("restored %d records of %d: %d lost, %d duplicated, %d different or out of order; first: %s", len(got), len(want), lost, dup, differ, first)
	}
}

// diff counts the records of want that got lacks (lost) or holds more than
// once (duplicated), and, among the rest, those that differ from their
// source or are out of its order; first describes the first difference.
func diff(want, got []*kgo.Record) (lost, dup, differ int, first string) {
	type key struct {
		p  int32
		id string
	}
	idOf := func(r *kgo.Record) key {
		for _, h := range r.Headers {
			if h.Key == "id" {
				return key{r.Partition, string(h.Value)}
			}
		}
		return key{r.Partition, ""}
	}
	note := func(format string, args ...any) {
		if first == "" {
			first = fmt.Sprintf(format, args...)
		}
	}
	count := map[key]int{}
	for _, r := range want {
		count[idOf(r)]++
	}
	for _, r := range got {
		count[idOf(r)]--
	}
	for k, n := range count {
		if n > 0 {
			lost += n
			note("%d/%s lost", k.p, k.id)
		} else if n < 0 {
			dup -= n
			note("%d/%s duplicated", k.p, k.id)
		}
	}
	// Order and content, partition by partition, over the records held
	// exactly once on both sides.
	exact := func(rs []*kgo.Record) map[int32][]*kgo.Record {
		m := map[int32][]*kgo.Record{}
		for _, r := range rs {
			if count[idOf(r)] == 0 {
				m[r.Partition] = append(m[r.Partition], r)
			}
		}
		return m
	}
	w, g := exact(want), exact(got)
	for p, ws := range w {
		for i, wr := range ws {
			if why := differs(wr, g[p][i]); why != "" {
				differ++
				note("partition %d, record %d (source offset %d): %s", p, i, wr.Offset, why)
			}
		}
	}
	return lost, dup, differ, first
}

// differs says how got differs from want, or "" when it does not: keys,
// values and header values compared with null apart from empty.
func differs(want, got *kgo.Record) string {
	same := func(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }
	switch {
	case idOfRecord(want) != idOfRecord(got):
		return fmt.Sprintf("holds record id %s where the source has id %s: out of order", idOfRecord(got), idOfRecord(want))
	case !same(want.Key, got.Key):
		return fmt.Sprintf("key %q (null %t), want %q (null %t)", got.Key, got.Key == nil, want.Key, want.Key == nil)
	case !same(want.Value, got.Value):
		return fmt.Sprintf("value of %d bytes (null %t), want %d (null %t)", len(got.Value), got.Value == nil, len(want.Value), want.Value == nil)
	case !want.Timestamp.Equal(got.Timestamp):
		return fmt.Sprintf("timestamp %d, want %d", got.Timestamp.UnixMilli(), want.Timestamp.UnixMilli())
	case len(want.Headers) != len(got.Headers):
		return fmt.Sprintf("%d headers, want %d", len(got.Headers), len(want.Headers))
	}
	for i, h := range want.Headers {
		if g := got.Headers[i]; g.Key != h.Key || !same(g.Value, h.Value) {
			return fmt.Sprintf("header %d is %q=%q (null %t), want %q=%q (null %t)", i, g.Key, g.Value, g.Value == nil, h.Key, h.Value, h.Value == nil)
		}
	}
	return ""
}

func idOfRecord(r *kgo.Record) string {
	for _, h := range r.Headers {
		if h.Key == "id" {
			return string(h.Value)
		}
	}
	return ""
}

// run runs kpipe with args, bounded by limit, and returns its exit code,
// stdout and stderr.
func run(t *testing.T, limit time.Duration, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(testkit.KpipeBinary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(limit, func() { cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Wait()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("kpipe %s: %v", strings.Join(args, " "), err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// start starts kpipe with args; its stderr collects in out. The process
// is killed when the test ends, if it still runs.
func start(t *testing.T, out *syncBuffer, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(testkit.KpipeBinary(t), args...)
	cmd.Stderr = out
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	})
	return cmd
}

// waiter waits for cmd once, in the background: done closes when it ended.
type waiter struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func wait(cmd *exec.Cmd) *waiter {
	w := &waiter{cmd: cmd, done: make(chan struct{})}
	go func() { w.err = cmd.Wait(); close(w.done) }()
	return w
}

// syncBuffer is the output of a process the test reads while it runs.
type syncBuffer = testkit.SyncBuffer

// row is a line of the chaos report.
type row struct {
	Scenario, Faults, Outcome, Lost, Dup, Recover string
}

// report collects the rows of the scenarios run; TestMain writes them to
// KPIPE_CHAOS_REPORT.
var report reportRows

type reportRows struct {
	mu   sync.Mutex
	rows []row
}

func (rp *reportRows) add(r row) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.rows = append(rp.rows, r)
}

// TestDiffCountsWhatARestoreGotWrong pins the harness's comparison: a lost
// record, a duplicated one, a changed one (key, value, null against empty,
// header, timestamp) and two swapped are each counted, and equal lists give
// nothing.
func TestDiffCountsWhatARestoreGotWrong(t *testing.T) {
	d := newDataset("t", 2)
	src := d.records(0, 30)
	clone := func(rs []*kgo.Record) []*kgo.Record {
		out := make([]*kgo.Record, len(rs))
		for i, r := range rs {
			c := *r
			c.Headers = append([]kgo.RecordHeader(nil), r.Headers...)
			out[i] = &c
		}
		return out
	}
	if lost, dup, differ, first := diff(src, clone(src)); lost+dup+differ != 0 {
		t.Fatalf("equal lists: %d lost, %d duplicated, %d different (%s)", lost, dup, differ, first)
	}
	for _, c := range []struct {
		name              string
		change            func([]*kgo.Record) []*kgo.Record
		lost, dup, differ int
	}{
		{"lost", func(rs []*kgo.Record) []*kgo.Record { return append(rs[:3], rs[4:]...) }, 1, 0, 0},
		{"duplicated", func(rs []*kgo.Record) []*kgo.Record { return append(rs, rs[5], rs[35]) }, 0, 2, 0},
		{"key", func(rs []*kgo.Record) []*kgo.Record { rs[2].Key = []byte("other"); return rs }, 0, 0, 1},
		{"null key for empty", func(rs []*kgo.Record) []*kgo.Record { rs[1].Key = nil; return rs }, 0, 0, 1},
		{"tombstone for empty", func(rs []*kgo.Record) []*kgo.Record { rs[1].Value = nil; return rs }, 0, 0, 1},
		{"value", func(rs []*kgo.Record) []*kgo.Record { rs[6].Value = append([]byte{}, rs[7].Value...); return rs }, 0, 0, 1},
		{"timestamp", func(rs []*kgo.Record) []*kgo.Record {
			rs[8].Timestamp = rs[8].Timestamp.Add(time.Millisecond)
			return rs
		}, 0, 0, 1},
		{"null header value", func(rs []*kgo.Record) []*kgo.Record { rs[11].Headers[len(rs[11].Headers)-1].Value = nil; return rs }, 0, 0, 1},
		{"header dropped", func(rs []*kgo.Record) []*kgo.Record { rs[5].Headers = rs[5].Headers[:1]; return rs }, 0, 0, 1},
		{"swapped", func(rs []*kgo.Record) []*kgo.Record { rs[9], rs[10] = rs[10], rs[9]; return rs }, 0, 0, 2},
	} {
		lost, dup, differ, first := diff(src, c.change(clone(src)))
		if lost != c.lost || dup != c.dup || differ != c.differ || first == "" {
			t.Errorf("%s: %d lost, %d duplicated, %d different (%q), want %d, %d, %d", c.name, lost, dup, differ, first, c.lost, c.dup, c.differ)
		}
	}
}
