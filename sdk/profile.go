package sdk

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	pb "github.com/kpipe/kpipe/sdk/proto/kpipe/v2"
)

// ProfileEnv names a folder into which every plugin process writes a CPU
// profile of its run (pprof format, <binary>-<kind>-<pid>.pprof), a profile
// of what it allocated (.allocs.pprof) and one of its heap when it was
// largest (.heap.pprof), finished when the host tears the plugin down. It is
// for measuring, not production.
const ProfileEnv = "KPIPE_PLUGIN_CPUPROFILE"

var profile struct {
	sync.Mutex
	f        *os.File
	heap     bytes.Buffer // the heap profile at the largest heap seen
	stopHeap chan struct{}
}

// watchHeap keeps a heap profile of the moment the live heap was largest.
func watchHeap(stop chan struct{}) {
	var most uint64
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	var ms runtime.MemStats
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		runtime.ReadMemStats(&ms)
		if ms.HeapAlloc <= most {
			continue
		}
		most = ms.HeapAlloc
		profile.Lock()
		profile.heap.Reset()
		pprof.Lookup("heap").WriteTo(&profile.heap, 0)
		profile.Unlock()
	}
}

func startProfile(kind pb.Kind) {
	dir := os.Getenv(ProfileEnv)
	if dir == "" {
		return
	}
	name := fmt.Sprintf("%s-%s-%d.pprof", filepath.Base(os.Args[0]),
		strings.ToLower(strings.TrimPrefix(kind.String(), "KIND_")), os.Getpid())
	f, err := os.Create(filepath.Join(dir, name))
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		logger.Warn("cannot write a CPU profile", "env", ProfileEnv, "error", err)
		return
	}
	profile.Lock()
	profile.f = f
	profile.stopHeap = make(chan struct{})
	go watchHeap(profile.stopHeap)
	profile.Unlock()
}

func stopProfile() {
	profile.Lock()
	defer profile.Unlock()
	if profile.f == nil {
		return
	}
	pprof.StopCPUProfile()
	profile.f.Close()
	close(profile.stopHeap)
	base := strings.TrimSuffix(profile.f.Name(), ".pprof")
	if f, err := os.Create(base + ".allocs.pprof"); err == nil {
		pprof.Lookup("allocs").WriteTo(f, 0)
		f.Close()
	}
	os.WriteFile(base+".heap.pprof", profile.heap.Bytes(), 0o644)
	profile.f = nil
}
