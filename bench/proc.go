//go:build linux

package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/PID/stat: 100
// on every Linux architecture Go supports.
const clockTicks = 100

// IO holds the counters of /proc/PID/io.
type IO struct {
	// RChar and WChar count the bytes passed to read-like and write-like
	// system calls, from files, sockets and pipes alike.
	RChar, WChar int64
	// ReadBytes and WriteBytes count the bytes fetched from and sent to the
	// storage layer (page cache misses and writeback).
	ReadBytes, WriteBytes int64
}

// Add returns the sum of io and o.
func (io IO) Add(o IO) IO {
	return IO{io.RChar + o.RChar, io.WChar + o.WChar, io.ReadBytes + o.ReadBytes, io.WriteBytes + o.WriteBytes}
}

// Sub returns io minus o.
func (io IO) Sub(o IO) IO {
	return IO{io.RChar - o.RChar, io.WChar - o.WChar, io.ReadBytes - o.ReadBytes, io.WriteBytes - o.WriteBytes}
}

// procState is what one read of a process's /proc files gave.
type procState struct {
	comm string
	ppid int
	cpu  time.Duration // utime + stime
	rss  int64         // bytes
	io   IO
}

// Sampler follows the process tree under a root process through /proc: every
// Sample finds the root's descendants (by their parent pids) and adds up the
// resident memory of the whole tree.
type Sampler struct {
	Root int
	// Proc is the proc file system, /proc unless set otherwise.
	Proc string

	member  map[int]bool // pid → whether it is Root or descends from it
	last    map[int]procState
	alive   map[int]bool // members seen by the latest Sample
	peakRSS int64
	samples int
}

// NewSampler returns a sampler of the tree under root.
func NewSampler(root int) *Sampler {
	return &Sampler{Root: root, Proc: "/proc", member: map[int]bool{}, last: map[int]procState{}, alive: map[int]bool{}}
}

// Sample reads the memory, CPU time and I/O of every process of the tree
// once, and keeps the largest sum of resident memory seen.
func (s *Sampler) Sample() error {
	dir, err := os.Open(s.Proc)
	if err != nil {
		return err
	}
	names, err := dir.Readdirnames(-1)
	dir.Close()
	if err != nil {
		return err
	}
	ppids := map[int]int{} // read during this pass only
	ppidOf := func(pid int) (int, bool) {
		if p, ok := ppids[pid]; ok {
			return p, true
		}
		p, err := readPPID(s.Proc, pid)
		if err != nil {
			return 0, false
		}
		ppids[pid] = p
		return p, true
	}
	clear(s.alive)
	var rss int64
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || !inTree(pid, s.Root, s.member, ppidOf) {
			continue
		}
		st, err := readProc(s.Proc, pid)
		if err != nil {
			continue // gone since the directory was read
		}
		s.last[pid] = latest(s.last[pid], st)
		s.alive[pid] = true
		rss += st.rss
	}
	s.samples++
	s.peakRSS = max(s.peakRSS, rss)
	return nil
}

// latest merges a new reading into the previous one of the same process.
// Counters only grow, so the larger value wins: a zombie, for one, reports
// no memory and may report no CPU time.
func latest(prev, cur procState) procState {
	cur.cpu = max(cur.cpu, prev.cpu)
	cur.io = IO{max(cur.io.RChar, prev.io.RChar), max(cur.io.WChar, prev.io.WChar),
		max(cur.io.ReadBytes, prev.io.ReadBytes), max(cur.io.WriteBytes, prev.io.WriteBytes)}
	return cur
}

// inTree tells whether pid is root or one of its descendants, following
// parent pids (from ppidOf) and remembering every answer in member. A
// process's ancestry does not change while it lives, save for orphans
// moving to a reaper, which by then are already known members.
func inTree(pid, root int, member map[int]bool, ppidOf func(int) (int, bool)) bool {
	if in, ok := member[pid]; ok {
		return in
	}
	in := false
	switch {
	case pid == root:
		in = true
	case pid <= 1:
		in = false
	default:
		ppid, ok := ppidOf(pid)
		if !ok {
			return false // not known yet; ask again next time
		}
		in = ppid != pid && inTree(ppid, root, member, ppidOf)
	}
	member[pid] = in
	return in
}

// PeakRSS returns the largest resident memory of the whole tree at one
// sample, in bytes.
func (s *Sampler) PeakRSS() int64 { return s.peakRSS }

// Samples returns how many samples were taken.
func (s *Sampler) Samples() int { return s.samples }

// Procs returns how many processes of the tree were seen.
func (s *Sampler) Procs() int { return len(s.last) }

// Commands returns the command name of every process of the tree seen, by
// pid.
func (s *Sampler) Commands() map[int]string {
	out := make(map[int]string, len(s.last))
	for pid, st := range s.last {
		out[pid] = st.comm
	}
	return out
}

// CPU returns the sum over every process seen of its latest sampled CPU
// time. Processes lose the time they ran after their last sample, so it is
// a lower bound.
func (s *Sampler) CPU() time.Duration {
	var d time.Duration
	for _, st := range s.last {
		d += st.cpu
	}
	return d
}

// RootIO returns the I/O of the root process itself, as sampled: Linux adds
// the I/O of a reaped child to its parent's counters, so the latest sample
// of every child the root reaped is taken out again.
func (s *Sampler) RootIO() IO {
	io := s.last[s.Root].io
	for pid, st := range s.last {
		if pid != s.Root && st.ppid == s.Root && !s.alive[pid] {
			io = io.Sub(st.io)
		}
	}
	return io
}

// TreeIO returns the I/O of the whole tree: the root's counters, which hold
// those of the children it reaped, plus those of the members still alive at
// the latest sample or orphaned (moved to another parent).
func (s *Sampler) TreeIO() IO {
	io := s.last[s.Root].io
	for pid, st := range s.last {
		if pid == s.Root {
			continue
		}
		if s.alive[pid] || !s.member[st.ppid] {
			io = io.Add(st.io)
		}
	}
	return io
}

// readPPID returns the parent pid from /proc/PID/stat.
func readPPID(proc string, pid int) (int, error) {
	_, f, err := statFields(proc, pid)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(string(f[1]))
}

// statFields returns the command name from /proc/PID/stat and the fields
// after it: f[0] is the state (field 3 of proc(5)), f[1] the parent pid,
// and so on.
func statFields(proc string, pid int) (comm string, f [][]byte, err error) {
	data, err := os.ReadFile(fmt.Sprintf("%s/%d/stat", proc, pid))
	if err != nil {
		return "", nil, err
	}
	open, end := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return "", nil, fmt.Errorf("%s/%d/stat: no command name", proc, pid)
	}
	f = bytes.Fields(data[end+1:])
	if len(f) < 13 {
		return "", nil, fmt.Errorf("%s/%d/stat: %d fields", proc, pid, len(f))
	}
	return string(data[open+1 : end]), f, nil
}

// readProc reads what a sample needs of one process.
func readProc(proc string, pid int) (procState, error) {
	comm, f, err := statFields(proc, pid)
	if err != nil {
		return procState{}, err
	}
	st := procState{comm: comm}
	st.ppid, _ = strconv.Atoi(string(f[1]))
	utime, _ := strconv.ParseInt(string(f[11]), 10, 64)
	stime, _ := strconv.ParseInt(string(f[12]), 10, 64)
	st.cpu = time.Duration(utime+stime) * time.Second / clockTicks
	if st.rss, err = readRSS(proc, pid); err != nil {
		return procState{}, err
	}
	st.io, _ = ReadIO(fmt.Sprintf("%s/%d/io", proc, pid)) // absent on kernels without task I/O accounting
	return st, nil
}

// readRSS returns the resident set size from /proc/PID/statm (its second
// field, in pages): the VmRSS of /proc/PID/status.
func readRSS(proc string, pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("%s/%d/statm", proc, pid))
	if err != nil {
		return 0, err
	}
	f := bytes.Fields(data)
	if len(f) < 2 {
		return 0, fmt.Errorf("%s/%d/statm: %q", proc, pid, data)
	}
	pages, err := strconv.ParseInt(string(f[1]), 10, 64)
	return pages * int64(os.Getpagesize()), err
}

// ReadIO parses a /proc/PID/io file.
func ReadIO(path string) (IO, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return IO{}, err
	}
	return parseIO(data)
}

func parseIO(data []byte) (IO, error) {
	var io IO
	fields := map[string]*int64{"rchar": &io.RChar, "wchar": &io.WChar, "read_bytes": &io.ReadBytes, "write_bytes": &io.WriteBytes}
	found := 0
	for line := range bytes.Lines(data) {
		k, v, ok := bytes.Cut(bytes.TrimSpace(line), []byte(":"))
		p := fields[string(k)]
		if !ok || p == nil {
			continue
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
		if err != nil {
			return IO{}, fmt.Errorf("io %s: %w", k, err)
		}
		*p = n
		found++
	}
	if found != len(fields) {
		return IO{}, errors.New("io: missing counters")
	}
	return io, nil
}
