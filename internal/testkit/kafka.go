package testkit

import (
	"fmt"
	"net"
	"strings"
	"testing"
)

// KafkaInstance is a broker a test started, stops and starts again; its
// data stays across.
type KafkaInstance struct {
	Addr string
	env  []string
}

// StartKafka starts a broker of the test's own on free ports, and stops it
// when the test ends: for tests that stop and start it.
func StartKafka(t testing.TB) *KafkaInstance {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a Kafka broker; skipped with -short")
	}
	port, cport := freePort(t), freePort(t)
	in := &KafkaInstance{Addr: fmt.Sprintf("127.0.0.1:%d", port),
		env: []string{fmt.Sprintf("KAFKA_PORT=%d", port), fmt.Sprintf("KAFKA_CONTROLLER_PORT=%d", cport), "KAFKA_STATE_DIR=" + t.TempDir()}}
	// The first start may fetch the jars: one at a time.
	if err := withLock("kafka", func() error { return in.up() }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { runScript("kafka.sh", in.env, "down") })
	return in
}

func (in *KafkaInstance) up() error {
	out, err := runScript("kafka.sh", in.env, "up")
	if err != nil {
		return err
	}
	if got := strings.TrimSpace(out); got != in.Addr {
		return fmt.Errorf("kafka.sh up: serves %q, want %q", got, in.Addr)
	}
	return nil
}

// Up starts the broker and waits until it serves.
func (in *KafkaInstance) Up(t testing.TB) {
	t.Helper()
	if err := in.up(); err != nil {
		t.Fatal(err)
	}
}

// Down stops the broker.
func (in *KafkaInstance) Down(t testing.TB) {
	t.Helper()
	if _, err := runScript("kafka.sh", in.env, "down"); err != nil {
		t.Fatal(err)
	}
}

// freePort returns a TCP port free on 127.0.0.1 now.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
