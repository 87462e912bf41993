// Package host finds kpipe plugin binaries, starts each as its own process
// through hashicorp/go-plugin, and gives the runtime typed gRPC clients to
// them. Plugin logs (hclog) are forwarded into the host's slog logger.
package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
	pb "github.com/kpipe/kpipe/sdk/proto/kpipe/v1"
)

// BinaryPrefix starts the file name of every plugin binary.
const BinaryPrefix = "kpipe-plugin-"

// ErrNotFound is wrapped by the error of a plugin whose binary is missing.
var ErrNotFound = errors.New("plugin not found")

// Host launches plugins from one directory.
type Host struct {
	// Dir holds the kpipe-plugin-NAME binaries.
	Dir string
	// Logger receives the host's and the plugins' logs.
	Logger *slog.Logger
	// MTLS secures each plugin link with go-plugin's AutoMTLS. It costs
	// throughput on the data path, so it is off unless asked for.
	MTLS bool
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

// Instance is one running plugin process.
type Instance struct {
	Name string
	Path string
	Kind pb.Kind
	Spec *pb.SpecResponse
	// Pid is the plugin process id as the operating system reports it.
	Pid int

	Plugin    pb.PluginClient
	Source    pb.SourceClient
	Transform pb.TransformClient
	Sink      pb.SinkClient

	client *plugin.Client
}

// KindName is the lower-case name of a kind: source, transform, sink.
func KindName(k pb.Kind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "KIND_"))
}

// Launch starts the plugin name as its own process serving kind (or its
// first kind when kind is KIND_UNSPECIFIED) and reads its spec.
func (h *Host) Launch(ctx context.Context, name string, kind pb.Kind) (*Instance, error) {
	path, err := h.Path(name)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path)
	cmd.Env = os.Environ()
	if kind != pb.Kind_KIND_UNSPECIFIED {
		cmd.Env = append(cmd.Env, sdk.KindEnv+"="+KindName(kind))
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		Plugins:          plugin.PluginSet{sdk.PluginKey: &sdk.ClientPlugin{}},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           h.hclogger(name),
		AutoMTLS:         h.MTLS,
		GRPCDialOptions:  sdk.DialOptions(),
		SyncStdout:       os.Stderr,
		SyncStderr:       os.Stderr,
	})
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("start plugin %q (%s): %w", name, path, err)
	}
	raw, err := rpc.Dispense(sdk.PluginKey)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("start plugin %q: %w", name, err)
	}
	conn := raw.(*grpc.ClientConn)
	inst := &Instance{
		Name: name, Path: path, client: client,
		Plugin:    pb.NewPluginClient(conn),
		Source:    pb.NewSourceClient(conn),
		Transform: pb.NewTransformClient(conn),
		Sink:      pb.NewSinkClient(conn),
	}
	if rc := client.ReattachConfig(); rc != nil {
		inst.Pid = rc.Pid
	}
	spec, err := inst.Plugin.Spec(ctx, &pb.SpecRequest{})
	if err != nil {
		inst.Kill()
		return nil, fmt.Errorf("plugin %q: read spec: %w", name, err)
	}
	if spec.GetProtocolVersion() != sdk.ProtocolVersion {
		inst.Kill()
		return nil, fmt.Errorf("plugin %q speaks protocol v%d, this kpipe speaks v%d; rebuild the plugin against this SDK", name, spec.GetProtocolVersion(), sdk.ProtocolVersion)
	}
	inst.Spec = spec
	inst.Kind = spec.GetKind()
	if kind != pb.Kind_KIND_UNSPECIFIED && inst.Kind != kind {
		inst.Kill()
		return nil, fmt.Errorf("plugin %q serves %s, not %s", name, KindName(inst.Kind), KindName(kind))
	}
	return inst, nil
}

// Configure sends the parameters to the plugin. A non-nil param.Errors names
// each wrong parameter; other errors are about the link.
func (i *Instance) Configure(ctx context.Context, params map[string]json.RawMessage) error {
	js, err := json.Marshal(params)
	if err != nil {
		return fmt.Errorf("plugin %q: encode parameters: %w", i.Name, err)
	}
	resp, err := i.Plugin.Configure(ctx, &pb.ConfigureRequest{ParamsJson: js})
	if err != nil {
		return fmt.Errorf("plugin %q: configure: %w", i.Name, err)
	}
	if len(resp.GetErrors()) == 0 {
		return nil
	}
	var errs param.Errors
	for _, e := range resp.GetErrors() {
		errs = append(errs, &param.Error{Param: e.GetParam(), Message: e.GetMessage()})
	}
	return errs
}

// Teardown asks the plugin to release its resources and returns its metrics.
func (i *Instance) Teardown(ctx context.Context) (map[string]int64, error) {
	resp, err := i.Plugin.Teardown(ctx, &pb.TeardownRequest{})
	if err != nil {
		return nil, fmt.Errorf("plugin %q: teardown: %w", i.Name, err)
	}
	return resp.GetMetrics(), nil
}

// Kill ends the plugin process (gracefully first) and waits for it.
func (i *Instance) Kill() {
	if i != nil && i.client != nil {
		i.client.Kill()
	}
}

// Exited reports whether the plugin process has ended.
func (i *Instance) Exited() bool { return i.client.Exited() }

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
		inst, err := h.Launch(ctx, n, pb.Kind_KIND_UNSPECIFIED)
		if err != nil {
			info.Error = err.Error()
			infos = append(infos, info)
			continue
		}
		info.Version = inst.Spec.GetVersion()
		info.Summary = inst.Spec.GetSummary()
		for _, k := range inst.Spec.GetKinds() {
			info.Kinds = append(info.Kinds, KindName(k))
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
