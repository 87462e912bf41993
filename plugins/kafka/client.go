package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// connect builds a client with the security settings and proves the
// cluster answers within timeout, so that an unreachable broker is an error
// at start, not a silent hang, and a failed TLS handshake or SASL login an
// error that says which.
//
// fail hears of a connection that fails for good later (a login refused
// by another broker, a password rotated): nil leaves them to the client's
// retries.
func connect(ctx context.Context, servers []string, timeout time.Duration, sec *securityConfig, fail func(error), opts ...kgo.Opt) (*kgo.Client, *kadm.Client, error) {
	cl, err := kgo.NewClient(append(append([]kgo.Opt{
		kgo.SeedBrokers(servers...),
		kgo.ClientID("kpipe"),
	}, sec.opts(fail)...), opts...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("kafka client: %w", err)
	}
	adm := kadm.NewClient(cl)
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := adm.BrokerMetadata(pctx); err != nil {
		cl.Close()
		if explained := sec.explain(err); explained != err {
			return nil, nil, explained
		}
		return nil, nil, fmt.Errorf("cannot reach Kafka at %s within %s: %w; check bootstrap_servers and that the brokers are up", strings.Join(servers, ","), timeout, err)
	}
	sec.connected.Store(true)
	return cl, adm, nil
}
