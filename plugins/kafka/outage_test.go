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
