// Package host finds kpipe plugin binaries and starts each as its own
// process through hashicorp/go-plugin, returning plugin.Instance handles
// that speak protocol v2 over gRPC. Each process gets a link socket over
// which the host later hands it the ends of its data links. A host keeps the
// plugins' sockets in a folder of its own, removed by Close (and, should the
// host die, by the plugins as they exit). Plugin logs (hclog) are forwarded
// into the host's slog logger.
package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	kplugin "github.com/kpipe/kpipe/core/plugin"
	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/link"
	pb "github.com/kpipe/kpipe/sdk/proto/kpipe/v2"
)

// BinaryPrefix starts the file name of every plugin binary.
const BinaryPrefix = "kpipe-plugin-"

// ErrNotFound is wrapped by the error of a plugin whose binary is missing.
var ErrNotFound = errors.New("plugin not found")

// ErrProtocol is wrapped by the error of a plugin that speaks another
// protocol version.
var ErrProtocol = errors.New("plugin protocol mismatch")

// Host launches plugins from one directory.
type Host struct {
	// Dir holds the kpipe-plugin-NAME binaries.
	Dir string
	// Logger receives the host's and the plugins' logs.
	Logger *slog.Logger
	// MTLS secures each plugin's control link with go-plugin's AutoMTLS and
	// its data links with mutual TLS. It costs throughput, so it is off
	// unless asked for.
	MTLS bool

	mu     sync.Mutex
	runDir string
}

// DefaultDir is where plugins are looked for when nothing says otherwise:
// the "plugins" folder beside the running executable, if it exists, else
// bin/plugins under the working directory.
func DefaultDir() string {
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Join(filepath.Dir(exe), "plugins")
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			return dir
		}
	}
	return filepath.Join("bin", "plugins")
}

// Path returns the binary of the plugin name, or an error that says where it
// was looked for and what was found instead.
func (h *Host) Path(name string) (string, error) {
	path := filepath.Join(h.Dir, BinaryPrefix+name)
	st, err := os.Stat(path)
	if err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
		return path, nil
	}
	names, _ := h.Names()
	have := "none"
	if len(names) > 0 {
		have = strings.Join(names, ", ")
	}
	return "", fmt.Errorf("%w: %q: no executable %s (plugins found there: %s); build it with `make build` or point --plugin-dir at the folder that holds it", ErrNotFound, name, path, have)
}

// Names lists the plugins in Dir, sorted.
func (h *Host) Names() ([]string, error) {
	entries, err := os.ReadDir(h.Dir)
	if err != nil {
		return nil, fmt.Errorf("list plugins: %w", err)
	}
	var names []string
	for _, e := range entries {
		if n, ok := strings.CutPrefix(e.Name(), BinaryPrefix); ok && !e.IsDir() {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names, nil
}

// runDirPrefix starts the name of a host's socket folder, followed by the
// host's pid.
const runDirPrefix = "kpipe-run-"

// RunDir returns the host's socket folder, creating it (and removing those
// of hosts that are gone) on first use.
func (h *Host) RunDir() (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.runDir != "" {
		return h.runDir, nil
	}
	sweepRunDirs()
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", runDirPrefix, os.Getpid()))
	if err != nil {
		return "", fmt.Errorf("create the plugins' socket folder: %w", err)
	}
	h.runDir = dir
	return dir, nil
}

// sweepRunDirs removes the socket folders of kpipe processes that no longer
// run.
func sweepRunDirs() {
	entries, _ := os.ReadDir(os.TempDir())
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), runDirPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 || syscall.Kill(pid, 0) == nil || errors.Is(syscall.Kill(pid, 0), syscall.EPERM) {
			continue
		}
		os.RemoveAll(filepath.Join(os.TempDir(), e.Name()))
	}
}

// Close removes the host's socket folder. Kill the instances first.
func (h *Host) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.runDir == "" {
		return nil
	}
	err := os.RemoveAll(h.runDir)
	h.runDir = ""
	return err
}

// Launch starts the plugin name as its own process serving kind (or its
// first kind when kind is empty) and reads its spec.
func (h *Host) Launch(ctx context.Context, name string, kind kplugin.Kind) (kplugin.Instance, error) {
	return h.launch(ctx, name, kind)
}

func (h *Host) launch(ctx context.Context, name string, kind kplugin.Kind) (*Instance, error) {
	path, err := h.Path(name)
	if err != nil {
		return nil, err
	}
	runDir, err := h.RunDir()
	if err != nil {
		return nil, err
	}
	hostEnd, pluginEnd, err := link.ControlPair()
	if err != nil {
		return nil, err
	}
	defer pluginEnd.Close() // the child has its own copy once started
	cmd := exec.Command(path)
	cmd.Env = append(os.Environ(),
		plugin.EnvUnixSocketDir+"="+runDir,
		sdk.LinkFDEnv+"=3", // ExtraFiles[0]
	)
	cmd.ExtraFiles = []*os.File{pluginEnd}
	if kind != "" {
		cmd.Env = append(cmd.Env, sdk.KindEnv+"="+string(kind))
	}
	if h.MTLS {
		cmd.Env = append(cmd.Env, sdk.LinkTLSEnv+"=1")
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig: sdk.Handshake,
		// Protocol 1 is accepted at the handshake only to refuse it below
		// with a message that names both versions.
		VersionedPlugins: map[int]plugin.PluginSet{
			1:                   {sdk.PluginKey: &sdk.ClientPlugin{}},
			sdk.ProtocolVersion: {sdk.PluginKey: &sdk.ClientPlugin{}},
		},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           h.hclogger(name),
		AutoMTLS:         h.MTLS,
		GRPCDialOptions:  sdk.DialOptions(),
		SyncStdout:       os.Stderr,
		SyncStderr:       os.Stderr,
	})
	fail := func(err error) (*Instance, error) {
		client.Kill()
		hostEnd.Close()
		return nil, err
	}
	rpc, err := client.Client()
	if err != nil {
		return fail(fmt.Errorf("start plugin %q (%s): %w", name, path, err))
	}
	if v := client.NegotiatedVersion(); v != sdk.ProtocolVersion {
		return fail(fmt.Errorf("%w: plugin %q speaks protocol v%d, this kpipe speaks v%d; rebuild the plugin against this kpipe's SDK", ErrProtocol, name, v, sdk.ProtocolVersion))
	}
	raw, err := rpc.Dispense(sdk.PluginKey)
	if err != nil {
		return fail(fmt.Errorf("start plugin %q: %w", name, err))
	}
	ctl, err := net.FileConn(hostEnd)
	hostEnd.Close()
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("start plugin %q: link socket: %w", name, err)
	}
	conn := raw.(*grpc.ClientConn)
	inst := &Instance{
		name: name, path: path, client: client, ctl: ctl.(*net.UnixConn),
		plugin: pb.NewPluginClient(conn),
		src:    pb.NewSourceClient(conn),
		tf:     pb.NewTransformClient(conn),
		sink:   pb.NewSinkClient(conn),
		store:  pb.NewStorageClient(conn),
	}
	if rc := client.ReattachConfig(); rc != nil {
		inst.pid = rc.Pid
	}
	spec, err := inst.plugin.Spec(ctx, &pb.SpecRequest{})
	if err != nil {
		inst.Kill()
		return nil, fmt.Errorf("plugin %q: read spec: %w", name, err)
	}
	if spec.GetProtocolVersion() != sdk.ProtocolVersion {
		inst.Kill()
		return nil, fmt.Errorf("%w: plugin %q speaks protocol v%d, this kpipe speaks v%d; rebuild the plugin against this kpipe's SDK", ErrProtocol, name, spec.GetProtocolVersion(), sdk.ProtocolVersion)
	}
	inst.info = infoFromSpec(spec)
	if kind != "" && inst.info.Kind != kind {
		inst.Kill()
		return nil, fmt.Errorf("plugin %q serves %s, not %s", name, inst.info.Kind, kind)
	}
	return inst, nil
}

// KindName is the name of a wire kind: source, transform, sink.
func KindName(k pb.Kind) kplugin.Kind {
	return kplugin.Kind(strings.ToLower(strings.TrimPrefix(k.String(), "KIND_")))
}

func infoFromSpec(spec *pb.SpecResponse) kplugin.Info {
	info := kplugin.Info{
		Name: spec.GetName(), Version: spec.GetVersion(), Summary: spec.GetSummary(),
		Kind: KindName(spec.GetKind()), Pid: int(spec.GetPid()), EnvelopeOnly: spec.GetEnvelopeOnly(),
		LinkCert: spec.GetLinkCert(), Storage: spec.GetStorage(),
	}
	for _, k := range spec.GetKinds() {
		info.Kinds = append(info.Kinds, KindName(k))
	}
	for _, p := range spec.GetParams() {
		info.Params = append(info.Params, paramFromProto(p))
	}
	return info
}

// Info is what `kpipe plugins list` shows of a plugin.
type Info struct {
	Name    string   `json:"name"`
	Version string   `json:"version"`
	Kinds   []string `json:"kinds"`
	Summary string   `json:"summary"`
	Path    string   `json:"path"`
	Error   string   `json:"error,omitempty"`
}

// List starts every plugin in Dir once, reads its spec and stops it.
func (h *Host) List(ctx context.Context) ([]Info, error) {
	names, err := h.Names()
	if err != nil {
		return nil, err
	}
	var infos []Info
	for _, n := range names {
		info := Info{Name: n, Path: filepath.Join(h.Dir, BinaryPrefix+n)}
		inst, err := h.launch(ctx, n, "")
		if err != nil {
			info.Error = err.Error()
			infos = append(infos, info)
			continue
		}
		info.Version = inst.info.Version
		info.Summary = inst.info.Summary
		for _, k := range inst.info.Kinds {
			info.Kinds = append(info.Kinds, string(k))
		}
		inst.Kill()
		infos = append(infos, info)
	}
	if len(infos) == 0 {
		return nil, errors.New("no plugins found in " + h.Dir)
	}
	return infos, nil
}

func (h *Host) hclogger(name string) hclog.Logger {
	l := hclog.NewInterceptLogger(&hclog.LoggerOptions{
		Name:   "plugin." + name,
		Level:  hclog.Info,
		Output: hclogDiscard{},
	})
	level := hclog.Info
	if h.logger().Enabled(context.Background(), slog.LevelDebug) {
		level = hclog.Debug
	}
	l.SetLevel(level)
	l.RegisterSink(&slogSink{log: h.logger()})
	return l
}

func (h *Host) logger() *slog.Logger {
	if h.Logger != nil {
		return h.Logger
	}
	return slog.Default()
}

type hclogDiscard struct{}

func (hclogDiscard) Write(p []byte) (int, error) { return len(p), nil }

// lifecycle messages of go-plugin itself are debug detail, not news.
var lifecycle = map[string]bool{
	"plugin process exited": true, "starting plugin": true, "plugin started": true,
	"waiting for RPC address": true, "plugin address": true,
}

// slogSink forwards hclog entries (the host's go-plugin logs and the
// plugins' own) into slog.
type slogSink struct{ log *slog.Logger }

func (s *slogSink) Accept(name string, level hclog.Level, msg string, args ...any) {
	var l slog.Level
	switch {
	case level <= hclog.Debug:
		l = slog.LevelDebug
	case level == hclog.Info:
		l = slog.LevelInfo
	case level == hclog.Warn:
		l = slog.LevelWarn
	default:
		l = slog.LevelError
	}
	if l == slog.LevelInfo && lifecycle[msg] {
		l = slog.LevelDebug
	}
	s.log.Log(context.Background(), l, msg, append([]any{"logger", name}, args...)...)
}
