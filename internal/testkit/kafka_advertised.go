package testkit

import (
	"fmt"
	"testing"
)

// StartKafkaAdvertising is StartKafka for a broker whose listener
// advertises another address than the one it listens on (advertised,
// host:port), such as a TCP proxy's in front of it: clients bootstrap at
// either address and then reach the broker only through the advertised
// one. Addr is the address the broker listens on.
func StartKafkaAdvertising(t testing.TB, advertised string) *KafkaInstance {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a Kafka broker; skipped with -short")
	}
	port, cport := freePort(t), freePort(t)
	in := &KafkaInstance{Addr: fmt.Sprintf("127.0.0.1:%d", port),
		env: []string{fmt.Sprintf("KAFKA_PORT=%d", port), fmt.Sprintf("KAFKA_CONTROLLER_PORT=%d", cport), "KAFKA_STATE_DIR=" + t.TempDir(),
			"KAFKA_ADVERTISED_ADDR=" + advertised}}
	if err := withLock("kafka", func() error { return in.up() }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { runScript("kafka.sh", in.env, "down") })
	return in
}

// FreePort returns a TCP port free on 127.0.0.1 now.
func FreePort(t testing.TB) int { return freePort(t) }
