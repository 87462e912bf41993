// Command v1plugin is a plugin built against protocol 1 of kpipe: it
// completes go-plugin's handshake at version 1 and serves nothing else. The
// host tests check that kpipe refuses it with a message naming both
// versions.
package main

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

type v1 struct{ plugin.NetRPCUnsupportedPlugin }

func (v1) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }
func (v1) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, nil
}

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: plugin.HandshakeConfig{
			ProtocolVersion:  1,
			MagicCookieKey:   "KPIPE_PLUGIN",
			MagicCookieValue: "7d5bf0a4-kpipe-plugin-protocol",
		},
		Plugins:    plugin.PluginSet{"kpipe": v1{}},
		GRPCServer: plugin.DefaultGRPCServer,
	})
}
