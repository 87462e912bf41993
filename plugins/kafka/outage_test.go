package main

import (
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestAnOutageIsOneUntilTheClusterSettles: a cluster going down answers on
// one connection while it refuses another; that is one outage, which ends
// only once an answer comes a second after the last refusal, and which
// fails past its budget.
func TestAnOutageIsOneUntilTheClusterSettles(t *testing.T) {
	now := time.Unix(1000, 0)
	o := newOutage(30 * time.Second)
	o.now = func() time.Time { return now }
	broker := kgo.BrokerMetadata{Host: "127.0.0.1", Port: 9092}
	refused := errors.New("connection refused")

	o.OnBrokerConnect(broker, 0, nil, refused)
	began := o.since
	now = now.Add(2 * time.Millisecond)
	o.OnBrokerRead(broker, 1, 100, 0, 0, nil) // an answer on a connection still open
	if o.since != began {
		t.Fatal("an answer 2ms after a refusal ended the outage")
	}
	now = now.Add(10 * time.Millisecond)
	o.OnBrokerConnect(broker, 0, nil, refused)
	if o.since != began {
		t.Fatal("a refusal during the outage began another one")
	}
	now = now.Add(29 * time.Second)
	if err := o.check(); err != nil {
		t.Fatalf("within the budget: %v", err)
	}
	now = now.Add(time.Second)
	err := o.check()
	want := "Kafka unreachable for longer than max_broker_outage (30s): broker 127.0.0.1:9092: connection refused; what was committed before is intact, and the next run resumes after it"
	if !errors.Is(err, ErrBrokerOutage) || err.Error() != want {
		t.Fatalf("past the budget: %v, want %q", err, want)
	}
	now = now.Add(time.Second)
	o.OnBrokerRead(broker, 1, 100, 0, 0, nil)
	if !o.since.IsZero() || o.check() != nil {
		t.Fatal("an answer a second after the last refusal did not end the outage")
	}
}

// TestAnAnswerSoonAfterTheLastRefusalEndsTheOutageOnceItSettles: a backup
// that caught up reads nothing more for seconds after the broker came back;
// the answers that came within settle of the last refusal end the outage
// at the next check past settle, without waiting for another answer.
func TestAnAnswerSoonAfterTheLastRefusalEndsTheOutageOnceItSettles(t *testing.T) {
	now := time.Unix(1000, 0)
	o := newOutage(0)
	o.now = func() time.Time { return now }
	broker := kgo.BrokerMetadata{Host: "127.0.0.1", Port: 9092}
	o.OnBrokerConnect(broker, 0, nil, errors.New("connection refused"))
	now = now.Add(20 * time.Second)
	o.OnBrokerConnect(broker, 0, nil, errors.New("connection refused"))
	now = now.Add(300 * time.Millisecond)
	o.OnBrokerRead(broker, 1, 100, 0, 0, nil)
	now = now.Add(600 * time.Millisecond)
	if o.check(); o.since.IsZero() {
		t.Fatal("the outage ended 900ms after the last refusal")
	}
	now = now.Add(100 * time.Millisecond)
	if o.check(); !o.since.IsZero() {
		t.Fatal("an answer 300ms after the last refusal did not end the outage once a second had passed")
	}
}

// TestUnansweredFetchesAreAnOutage: a network that drops traffic refuses
// no connection; fetches a broker leaves unanswered for stallAfter begin
// an outage from when they were sent, and an answer ends it once it
// settles. Other requests, and fetches answered in time, do not count.
func TestUnansweredFetchesAreAnOutage(t *testing.T) {
	now := time.Unix(1000, 0)
	o := newOutage(time.Minute)
	o.now = func() time.Time { return now }
	broker := kgo.BrokerMetadata{NodeID: 1, Host: "127.0.0.1", Port: 9092}
	const metadataKey = 3

	o.OnBrokerWrite(broker, metadataKey, 100, 0, 0, nil)
	o.OnBrokerWrite(broker, fetchKey, 100, 0, 0, nil)
	sent := now
	now = now.Add(5 * time.Second)
	o.OnBrokerRead(broker, fetchKey, 100, 0, 0, nil) // answered within its wait
	o.OnBrokerWrite(broker, fetchKey, 100, 0, 0, nil)
	sent = now
	now = now.Add(stallAfter - time.Millisecond)
	if o.check(); !o.since.IsZero() {
		t.Fatal("a fetch unanswered for less than stallAfter began an outage")
	}
	now = now.Add(time.Millisecond)
	if err := o.check(); err != nil || !o.since.Equal(sent) || o.broker != "127.0.0.1:9092" {
		t.Fatalf("a fetch unanswered for stallAfter: %v, outage since %v (want %v) at %q", err, o.since, sent, o.broker)
	}
	if want := "no answer to fetches for 10s: the network drops the traffic, or the broker hangs"; o.cause.Error() != want {
		t.Fatalf("cause %q, want %q", o.cause, want)
	}
	now = now.Add(50 * time.Second)
	o.check()
	err := o.check()
	want := "Kafka unreachable for longer than max_broker_outage (1m0s): broker 127.0.0.1:9092: no answer to fetches for 10s: the network drops the traffic, or the broker hangs; what was committed before is intact, and the next run resumes after it"
	if err == nil || err.Error() != want {
		t.Fatalf("past the budget: %v, want %q", err, want)
	}

	// The traffic comes back: the answer ends the outage once it settles.
	o = newOutage(time.Minute)
	o.now = func() time.Time { return now }
	o.OnBrokerWrite(broker, fetchKey, 100, 0, 0, nil)
	now = now.Add(stallAfter)
	o.check()
	o.OnBrokerRead(broker, fetchKey, 100, 0, 0, nil)
	if o.since.IsZero() {
		t.Fatal("an answer right after the stall was seen ended the outage before it settled")
	}
	o.OnBrokerWrite(broker, fetchKey, 100, 0, 0, nil)
	now = now.Add(time.Second)
	o.check()
	o.OnBrokerRead(broker, fetchKey, 100, 0, 0, nil)
	if !o.since.IsZero() || o.check() != nil {
		t.Fatal("answers a second after the stall did not end the outage")
	}

	// A connection that closes takes its fetches with it.
	o.OnBrokerWrite(broker, fetchKey, 100, 0, 0, nil)
	o.OnBrokerDisconnect(broker, nil)
	now = now.Add(time.Minute)
	if o.check(); !o.since.IsZero() {
		t.Fatal("fetches of a closed connection began an outage")
	}
}
