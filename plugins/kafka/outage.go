package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/sdk"
)

// warnEvery is how often a broker outage is reported while it lasts.
const warnEvery = 10 * time.Second

// outage watches the client's connections to the brokers (a kgo hook). An
// outage begins with a connection that cannot be made and ends with the
// next response any broker sends once no connection failed for settle; while it lasts, the client retries with
// backoff on its own, and the outage is reported when it begins and every
// warnEvery, naming the broker. Past max it is an error.
type outage struct {
	max time.Duration // 0: unbounded

	mu       sync.Mutex
	since    time.Time // zero when there is none
	lastFail time.Time
	lastWarn time.Time
	broker   string
	cause    error
	now      func() time.Time
}

func newOutage(max time.Duration) *outage { return &outage{max: max, now: time.Now} }

// ErrBrokerOutage is the error of an outage longer than max_broker_outage.
var ErrBrokerOutage = errors.New("Kafka unreachable for longer than max_broker_outage")

// OnBrokerConnect notes a connection that could not be made.
func (o *outage) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.broker, o.cause = net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port))), err
	o.lastFail = o.now()
	if o.since.IsZero() {
		o.since = o.now()
		o.lastWarn = o.since
		sdk.Logger().Warn("Kafka broker unreachable; retrying with backoff", "broker", o.broker, "error", err.Error(), "gives_up_after", o.limit())
	}
}

// settle is how long after the last failed connection an answer ends an
// outage: a cluster going down answers on some connections while it
// refuses others, and that is one outage, not several.
const settle = time.Second

// OnBrokerRead ends an outage: a broker answered, and no connection
// failed for settle.
func (o *outage) OnBrokerRead(_ kgo.BrokerMetadata, _ int16, _ int, _, _ time.Duration, err error) {
	if err != nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.since.IsZero() && o.now().Sub(o.lastFail) >= settle {
		sdk.Logger().Info("Kafka reachable again", "after", o.now().Sub(o.since).Round(time.Second).String())
		o.since = time.Time{}
	}
}

func (o *outage) limit() string {
	if o.max <= 0 {
		return "never (max_broker_outage unbounded)"
	}
	return o.max.String()
}

// check warns while an outage lasts and fails once it lasted longer than
// max. The source calls it between polls.
func (o *outage) check() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.since.IsZero() {
		return nil
	}
	now := o.now()
	lasted := now.Sub(o.since)
	if o.max > 0 && lasted >= o.max {
		return fmt.Errorf("%w (%s): broker %s: %v; what was committed before is intact, and the next run resumes after it", ErrBrokerOutage, o.max, o.broker, o.cause)
	}
	if now.Sub(o.lastWarn) >= warnEvery {
		o.lastWarn = now
		sdk.Logger().Warn("Kafka broker still unreachable; retrying with backoff", "broker", o.broker, "for", lasted.Round(time.Second).String(),
			"error", o.cause.Error(), "gives_up_after", o.limit())
	}
	return nil
}
