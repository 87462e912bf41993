//go:build linux

package bench

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"
	"unsafe"
)

// Usage is what one run of a program cost, its whole process tree included.
type Usage struct {
	Wall time.Duration
	// User and Sys come from wait4 of the program: they include every
	// descendant it waited for (kpipe waits for its plugins).
	User, Sys time.Duration
	// SampledCPU is the CPU time of every process seen in the tree, from
	// /proc, as a cross-check of User+Sys (a lower bound: each process
	// loses what it ran after its last sample).
	SampledCPU time.Duration
	// PeakRSS is the most resident memory the tree held at one sample: the
	// sum of VmRSS over all its processes, in bytes.
	PeakRSS int64
	// MaxRSS is wait4's ru_maxrss: the largest single process, in bytes.
	MaxRSS int64
	// IO is the I/O of the whole tree, read when the program had exited
	// and before it was reaped (see Sampler.TreeIO).
	IO IO
	// RootIO is the program's own I/O, without its children's.
	RootIO IO
	// Procs counts the processes seen in the tree, Samples the samples.
	Procs, Samples int
	// Commands names the processes seen, by pid.
	Commands map[int]string
}

// CPU returns user plus system time of the whole tree.
func (u Usage) CPU() time.Duration { return u.User + u.Sys }

// Measure starts cmd in a process group of its own, samples its process
// tree every interval until the program exits, and returns what it cost.
// When ctx ends first, the whole process group is killed. The error is the
// program's (an *exec.ExitError for a non-zero exit) or ctx's.
func Measure(ctx context.Context, cmd *exec.Cmd, interval time.Duration) (Usage, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Usage{}, err
	}
	pid := cmd.Process.Pid
	s := NewSampler(pid)
	exited := make(chan error, 1)
	go func() { exited <- waitExited(pid) }()
	_ = s.Sample()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var ctxErr error
	done := ctx.Done()
	for waiting := true; waiting; {
		select {
		case <-tick.C:
			_ = s.Sample()
		case <-done:
			ctxErr, done = ctx.Err(), nil
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		case err := <-exited:
			if err != nil {
				ctxErr = errors.Join(ctxErr, err)
			}
			waiting = false
		}
	}
	u := Usage{Wall: time.Since(start)}
	_ = s.Sample() // the program is a zombie now: its I/O counters are final
	err := cmd.Wait()
	u.SampledCPU, u.PeakRSS, u.Procs, u.Samples = s.CPU(), s.PeakRSS(), s.Procs(), s.Samples()
	u.Commands = s.Commands()
	u.IO, u.RootIO = s.TreeIO(), s.RootIO()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		u.User = time.Duration(ru.Utime.Nano())
		u.Sys = time.Duration(ru.Stime.Nano())
		u.MaxRSS = ru.Maxrss * 1024
	}
	if ctxErr != nil {
		return u, ctxErr
	}
	return u, err
}

// waitExited blocks until process pid has exited, leaving it a zombie
// (waitid with WNOWAIT) so that its /proc files can still be read.
func waitExited(pid int) error {
	const (
		pPID    = 1          // P_PID
		wNoWait = 0x01000000 // WNOWAIT
	)
	var info [128]byte // siginfo_t
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid),
			uintptr(unsafe.Pointer(&info[0])), syscall.WEXITED|wNoWait, 0, 0)
		switch errno {
		case 0:
			return nil
		case syscall.EINTR:
			continue
		default:
			return fmt.Errorf("waitid %d: %w", pid, errno)
		}
	}
}
