//go:build linux

package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary act as one process of a small tree
// instead of running the tests (see TestMain).
const helperEnv = "KPIPE_BENCH_PROC_HELPER"

const (
	parentHold = 48 << 20 // bytes the parent keeps resident
	childHold  = 32 << 20 // bytes the child keeps resident, at the same time
	burn       = 200 * time.Millisecond
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "parent":
		os.Exit(helperParent())
	case "child":
		os.Exit(helperChild())
	}
	os.Exit(m.Run())
}

// helperParent holds parentHold bytes, burns CPU, reads its own binary,
// then starts a child that does the same with childHold bytes while the
// parent still holds its memory, and waits for it.
func helperParent() int {
	mem := hold(parentHold)
	spin(burn)
	readSelf()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=child")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	runtime.KeepAlive(mem)
	return 0
}

func helperChild() int {
	mem := hold(childHold)
	spin(burn)
	readSelf()
	time.Sleep(300 * time.Millisecond) // both hold their memory meanwhile
	runtime.KeepAlive(mem)
	return 0
}

// hold allocates n bytes and touches every page so that they are resident.
func hold(n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 4096 {
		b[i] = 1
	}
	return b
}

// spin burns d of CPU time (not wall time, which a loaded machine stretches).
func spin(d time.Duration) {
	x := 0
	for start := cpuSelf(); cpuSelf()-start < d; {
		for i := range 100_000 {
			x += i
		}
	}
	runtime.KeepAlive(x)
}

func cpuSelf() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func readSelf() {
	if _, err := os.ReadFile(os.Args[0]); err != nil {
		panic(err)
	}
}

// TestMeasureTree measures a real two-process tree (this test binary run as
// a parent that starts a child) and checks every figure against what the
// processes are known to do.
func TestMeasureTree(t *testing.T) {
	self, err := os.Stat(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=parent")
	cmd.Stderr = os.Stderr
	u, err := Measure(context.Background(), cmd, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", u)
	const mib = 1 << 20
	// Go's os/exec may also start a short-lived probe child of its own (to
	// learn whether clone supports pidfds), so there may be a third.
	if u.Procs < 2 || u.Procs != len(u.Commands) {
		t.Errorf("saw %d processes (%v), want the parent and its child", u.Procs, u.Commands)
	}
	name := filepath.Base(os.Args[0])
	name = name[:min(len(name), 15)] // the kernel keeps 15 bytes of a command name
	for pid, comm := range u.Commands {
		if comm != name {
			t.Errorf("process %d of the tree is %q, not this test binary %q", pid, comm, name)
		}
	}
	if u.PeakRSS < (parentHold+childHold)-4*mib {
		t.Errorf("peak RSS of the tree %d MiB, want at least the %d MiB both held at once", u.PeakRSS/mib, (parentHold+childHold)/mib)
	}
	if u.MaxRSS < parentHold || u.MaxRSS >= u.PeakRSS {
		t.Errorf("largest single process %d MiB, want between %d MiB and the tree's %d MiB", u.MaxRSS/mib, parentHold/mib, u.PeakRSS/mib)
	}
	if u.CPU() < 2*burn*9/10 {
		t.Errorf("CPU %v, want at least the 2×%v both processes burnt", u.CPU(), burn)
	}
	if u.SampledCPU < 2*burn*8/10 || u.SampledCPU > u.CPU()+50*time.Millisecond {
		t.Errorf("sampled CPU %v, want close to wait4's %v", u.SampledCPU, u.CPU())
	}
	if u.Wall < burn+300*time.Millisecond {
		t.Errorf("wall %v, shorter than the child's sleep alone", u.Wall)
	}
	if u.IO.RChar < 2*self.Size() {
		t.Errorf("tree read %d bytes, want at least twice the binary's %d", u.IO.RChar, self.Size())
	}
	if u.RootIO.RChar < self.Size() || u.RootIO.RChar >= 2*self.Size() {
		t.Errorf("parent alone read %d bytes, want its own read of %d and not the child's", u.RootIO.RChar, self.Size())
	}
}

func TestMeasureFailure(t *testing.T) {
	_, err := Measure(context.Background(), exec.Command("sh", "-c", "exit 3"), 10*time.Millisecond)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Errorf("err = %v, want exit status 3", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Measure(ctx, exec.Command("sh", "-c", "sleep 30 & sleep 30; wait"), 10*time.Millisecond)
	if err == nil || time.Since(start) > 5*time.Second {
		t.Errorf("timed-out run: err %v after %v, want a context error at once", err, time.Since(start))
	}
}

func TestInTree(t *testing.T) {
	// 10 is the root: 11 and 13 are its children, 12 its grandchild; 20
	// and 21 live elsewhere; 30's parent cannot be read.
	parents := map[int]int{10: 5, 11: 10, 12: 11, 13: 10, 20: 1, 21: 20, 5: 1}
	reads := 0
	ppidOf := func(pid int) (int, bool) {
		reads++
		p, ok := parents[pid]
		return p, ok
	}
	member := map[int]bool{}
	for _, pid := range []int{12, 21, 13, 10, 11, 20, 30, 1, 5} {
		want := pid >= 10 && pid <= 13
		if got := inTree(pid, 10, member, ppidOf); got != want {
			t.Errorf("inTree(%d) = %v, want %v", pid, got, want)
		}
	}
	if _, ok := member[30]; ok {
		t.Error("an unreadable process was classified; it should be asked about again")
	}
	before := reads
	for _, pid := range []int{12, 21, 13, 11, 20} {
		inTree(pid, 10, member, ppidOf)
	}
	if reads != before {
		t.Errorf("known processes were read again (%d reads)", reads-before)
	}
}

func TestParseIO(t *testing.T) {
	io, err := parseIO([]byte("rchar: 100\nwchar: 20\nsyscr: 3\nsyscw: 4\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if io != (IO{RChar: 100, WChar: 20, ReadBytes: 4096, WriteBytes: 8192}) {
		t.Errorf("parseIO = %+v", io)
	}
	if _, err := parseIO([]byte("rchar: 1\n")); err == nil {
		t.Error("parseIO accepted a file without every counter")
	}
	if got := io.Add(io).Sub(io); got != io {
		t.Errorf("Add then Sub = %+v, want %+v", got, io)
	}
}

func TestSamplerSelf(t *testing.T) {
	s := NewSampler(os.Getpid())
	if err := s.Sample(); err != nil {
		t.Fatal(err)
	}
	if s.Procs() < 1 || s.PeakRSS() <= 0 || s.Samples() != 1 {
		t.Errorf("sampling this process: %d procs, %d bytes, %d samples", s.Procs(), s.PeakRSS(), s.Samples())
	}
	if _, err := ReadIO("/proc/" + strconv.Itoa(os.Getpid()) + "/io"); err != nil {
		t.Errorf("ReadIO of this process: %v", err)
	}
}

// TestEvictCache checks that a file read after EvictCache comes from
// storage, where the file system has a storage layer to come from.
func TestEvictCache(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	path := dir + "/f"
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := EvictCache(dir); err != nil {
		t.Fatal(err)
	}
	u, err := Measure(context.Background(), exec.Command("cat", path), 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	const tmpfsMagic = 0x01021994
	if st.Type == tmpfsMagic {
		t.Skipf("%s is on tmpfs: nothing to read from storage (read %d bytes)", dir, u.IO.ReadBytes)
	}
	if u.IO.RChar < int64(len(data)) || u.IO.ReadBytes < int64(len(data))*9/10 {
		t.Errorf("cat read %d bytes, %d of them from storage; want all %d from storage", u.IO.RChar, u.IO.ReadBytes, len(data))
	}
}
