package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// connect builds a client and proves the cluster answers within timeout, so
// that an unreachable broker is an error at start, not a silent hang.
func connect(ctx context.Context, servers []string, timeout time.Duration, opts ...kgo.Opt) (*kgo.Client, *kadm.Client, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(servers...),
		kgo.ClientID("kpipe"),
	}, opts...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("kafka client: %w", err)
	}
	adm := kadm.NewClient(cl)
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := adm.BrokerMetadata(pctx); err != nil {
		cl.Close()
		return nil, nil, fmt.Errorf("cannot reach Kafka at %s within %s: %w; check bootstrap_servers and that the brokers are up", strings.Join(servers, ","), timeout, err)
	}
	return cl, adm, nil
}
