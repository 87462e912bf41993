package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kpipe/kpipe/core/plugin"
	"github.com/kpipe/kpipe/internal/testkit"
)

func launch(t *testing.T, h *Host, name string, kind plugin.Kind) *Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst, err := h.launch(ctx, name, kind)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(inst.Kill)
	return inst
}

// TestProtocolV1PluginIsRefused: a plugin of the previous protocol is
// refused with a message that names both versions and the fix.
func TestProtocolV1PluginIsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a plugin binary")
	}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, BinaryPrefix+"old"), "./testdata/v1plugin")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the v1 plugin: %v\n%s", err, out)
	}
	h := &Host{Dir: dir}
	defer h.Close()
	_, err := h.Launch(context.Background(), "old", plugin.KindSource)
	want := `plugin protocol mismatch: plugin "old" speaks protocol v1, this kpipe speaks v2; rebuild the plugin against this kpipe's SDK`
	if err == nil || err.Error() != want || !errors.Is(err, ErrProtocol) {
		t.Fatalf("Launch: %v\nwant %s", err, want)
	}
}

// socketsIn lists the Unix sockets in dir.
func socketsIn(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.Type()&os.ModeSocket != 0 {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestPluginSocketsLiveInTheRunFolder: every plugin's socket is in the
// host's own folder, which Close removes, also when a plugin was killed and
// could not remove its socket itself.
func TestPluginSocketsLiveInTheRunFolder(t *testing.T) {
	h := &Host{Dir: testkit.PluginDir(t)}
	run, err := h.RunDir()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(run), fmt.Sprintf("kpipe-run-%d-", os.Getpid())) {
		t.Fatalf("run folder %s is not named after this process", run)
	}
	a := launch(t, h, "fs", plugin.KindSource)
	b := launch(t, h, "kafka", plugin.KindSink)
	if got := socketsIn(t, run); len(got) != 2 {
		t.Fatalf("sockets in the run folder: %v, want one per plugin", got)
	}
	// SIGKILL leaves no chance to clean up.
	syscall.Kill(a.Pid(), syscall.SIGKILL)
	b.Kill()
	a.Kill()
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(run); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("run folder %s still there after Close: %v", run, err)
	}
}

// TestRunFoldersOfDeadHostsAreSwept: a folder left by a host that died
// (SIGKILL) is removed by the next host.
func TestRunFoldersOfDeadHostsAreSwept(t *testing.T) {
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(os.TempDir(), fmt.Sprintf("kpipe-run-%d-123", dead.Process.Pid))
	alive := filepath.Join(os.TempDir(), fmt.Sprintf("kpipe-run-%d-456", os.Getppid()))
	for _, d := range []string{stale, alive} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	defer os.RemoveAll(alive)
	h := &Host{}
	if _, err := h.RunDir(); err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the folder of dead pid %d is still there", dead.Process.Pid)
	}
	if _, err := os.Stat(alive); err != nil {
		t.Errorf("the folder of a live process was removed: %v", err)
	}
}

// TestLinkCertificatesOnlyWithMTLS: with MTLS every plugin presents a data
// link certificate of its own; without, none.
func TestLinkCertificatesOnlyWithMTLS(t *testing.T) {
	for _, mtls := range []bool{false, true} {
		h := &Host{Dir: testkit.PluginDir(t), MTLS: mtls}
		a := launch(t, h, "fs", plugin.KindSource)
		b := launch(t, h, "fs", plugin.KindSink)
		ca, cb := a.Info().LinkCert, b.Info().LinkCert
		if mtls && (len(ca) == 0 || len(cb) == 0 || string(ca) == string(cb)) {
			t.Errorf("with MTLS: certificates of %d and %d bytes, want two different ones", len(ca), len(cb))
		}
		if !mtls && (len(ca) != 0 || len(cb) != 0) {
			t.Errorf("without MTLS the plugins present certificates")
		}
		a.Kill()
		b.Kill()
		h.Close()
	}
}
