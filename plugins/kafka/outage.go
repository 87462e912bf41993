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
// outage begins with a connection that cannot be made, or with fetches a
// broker leaves unanswered for stallAfter (a network that drops traffic
// without closing connections refuses nothing), and ends with the next
// response any broker sends once nothing failed for settle; while it
// lasts, the client retries with backoff on its own, and the outage is
// reported when it begins and every warnEvery, naming the broker. Past max
// it is an error.
type outage struct {
	max time.Duration // 0: unbounded

	mu       sync.Mutex
	since    time.Time // zero when there is none
	lastFail time.Time
	lastRead time.Time // the last answer
	lastWarn time.Time
	broker   string
	cause    error
	fatal    error // a connection failed for good
	now      func() time.Time
	// fetches counts each broker's fetches written and not yet answered,
	// and since when the oldest of them has waited.
	fetches map[int32]*pending
}

type pending struct {
	n      int
	since  time.Time
	broker string
}

func newOutage(max time.Duration) *outage {
	return &outage{max: max, now: time.Now, fetches: map[int32]*pending{}}
}

// stallAfter is how long fetches may go unanswered before that counts as
// an outage: a broker answers a fetch within its wait (5s), data or not.
const stallAfter = 10 * time.Second

// fetchKey is the Kafka API key of Fetch.
const fetchKey = 1

// OnBrokerWrite counts a fetch sent.
func (o *outage) OnBrokerWrite(meta kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if key != fetchKey || err != nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	p := o.fetches[meta.NodeID]
	if p == nil {
		p = &pending{broker: net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port)))}
		o.fetches[meta.NodeID] = p
	}
	if p.n == 0 {
		p.since = o.now()
	}
	p.n++
}

// OnBrokerDisconnect forgets a broker's fetches: they died with the
// connection.
func (o *outage) OnBrokerDisconnect(meta kgo.BrokerMetadata, _ net.Conn) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.fetches, meta.NodeID)
}

// ErrBrokerOutage is the error of an outage longer than max_broker_outage.
var ErrBrokerOutage = errors.New("Kafka unreachable for longer than max_broker_outage")

// OnBrokerConnect notes a connection that could not be made.
func (o *outage) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fatal != nil {
		return // no outage to wait out: the run ends with it
	}
	o.broker, o.cause = net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port))), err
	o.lastFail = o.now()
	if o.since.IsZero() {
		o.since = o.now()
		o.lastWarn = o.since
		sdk.Logger().Warn("Kafka broker unreachable; retrying with backoff", "broker", o.broker, "error", err.Error(), "gives_up_after", o.limit())
	}
}

// fail ends the run with err at the next check: a connection failed for
// good (a refused login, a certificate not trusted), which no retry mends.
func (o *outage) fail(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fatal == nil {
		o.fatal = err
	}
}

// settle is how long after the last failed connection an answer ends an
// outage: a cluster going down answers on some connections while it
// refuses others, and that is one outage, not several.
const settle = time.Second

// OnBrokerRead ends an outage: a broker answered, and no connection
// failed for settle (or, if one failed less than settle before, check
// ends it once settle has passed: a backup that caught up may read
// nothing more for a while).
func (o *outage) OnBrokerRead(meta kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if p := o.fetches[meta.NodeID]; key == fetchKey && p != nil && p.n > 0 {
		p.n--
		p.since = o.now() // the ones left have waited since this answer at most
	}
	if err != nil {
		return
	}
	o.lastRead = o.now()
	o.settled(o.lastRead)
}

// settled ends the outage if a broker answered after the last failure and
// that failure was settle ago. o.mu is held.
func (o *outage) settled(now time.Time) {
	if !o.since.IsZero() && o.lastRead.After(o.lastFail) && now.Sub(o.lastFail) >= settle {
		sdk.Logger().Info("Kafka reachable again", "after", now.Sub(o.since).Round(time.Second).String())
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
	if o.fatal != nil {
		return o.fatal
	}
	now := o.now()
	for _, p := range o.fetches {
		if p.n == 0 || now.Sub(p.since) < stallAfter {
			continue
		}
		o.lastFail = now // an answer ends the outage only once it settles
		if o.since.IsZero() {
			o.since, o.lastWarn, o.broker = p.since, now, p.broker
			o.cause = fmt.Errorf("no answer to fetches for %s: the network drops the traffic, or the broker hangs", now.Sub(p.since).Round(time.Second))
			sdk.Logger().Warn("Kafka broker not answering; waiting for it", "broker", o.broker, "error", o.cause.Error(), "gives_up_after", o.limit())
		}
	}
	if o.settled(now); o.since.IsZero() {
		return nil
	}
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
