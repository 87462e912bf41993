package sdk

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"

	pb "github.com/kpipe/kpipe/sdk/proto/kpipe/v2"
)

// ProfileEnv names a folder into which every plugin process writes a CPU
// profile of its run (pprof format, <binary>-<kind>-<pid>.pprof), finished
// when the host tears the plugin down. It is for measuring, not production.
const ProfileEnv = "KPIPE_PLUGIN_CPUPROFILE"

var profile struct {
	sync.Mutex
	f *os.File
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
	profile.f = nil
}
