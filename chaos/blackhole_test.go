package chaos

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kpipe/kpipe/internal/testkit"
)

// TestABackupRidesOutANetworkBlackHole puts a TCP proxy between kpipe and
// a broker of the test's own, whose listener is advertised at the proxy's
// address so that every connection goes through it. In the middle of a
// snapshot backup the proxy stops forwarding bytes, in both directions and
// for new connections too, without closing anything: requests go
// unanswered, as when a firewall drops packets. Then it forwards again.
// The backup, whose --max-broker-outage is longer than the black hole,
// rides it out: it completes with exit 0 and holds every offset once.
func TestABackupRidesOutANetworkBlackHole(t *testing.T) {
	sc := newScenario(t, "network black hole between kpipe and the broker, mid-backup")
	px := startProxy(t)
	k := testkit.StartKafkaAdvertising(t, px.Addr())
	px.setTarget(k.Addr)
	topic := testkit.Topic(t, "blackhole")
	const partitions = 3
	per := size(10_000, 60_000)
	testkit.CreateTopic(t, px.Addr(), topic, partitions)
	newDataset(topic, partitions).produce(t, px.Addr(), 0, per)
	total := int64(partitions * per)
	path := t.TempDir()
	held := func() int64 { return testkit.Records(t, path, "h") }

	var out syncBuffer
	w := wait(start(t, &out, nil, "--plugin-dir", testkit.PluginDir(t), "backup", "--bootstrap-servers", px.Addr(), "--topics", topic,
		"--path", path, "--backup-id", "h", "--state-dir", t.TempDir(), "--in-flight-bytes", "1MiB", "--segment-max-records", "1000",
		"--progress", "off", "--max-broker-outage", "3m"))
	waitUntil(t, "the backup holds a tenth of the records", w, &out, func() bool { return held() >= total/10 })
	hole := size(16*time.Second, 60*time.Second)
	px.blackHole(true)
	time.Sleep(hole)
	if held() == total {
		t.Fatalf("the backup finished before the black hole: the test proves nothing")
	}
	before := held()
	px.blackHole(false)
	sc.fault("no byte forwarded for %s, connections left open, with %d of %d records backed up", hole, before, total)
	sc.recovered(waitProgress(t, time.Now(), before, held, w.done, 3*time.Minute))
	if <-w.done; w.err != nil {
		t.Fatalf("the backup failed after the black hole: %v\n%s", w.err, out.String())
	}
	if n := testkit.CheckBackup(t, path, "h"); n != total {
		t.Fatalf("the backup holds %d records, want %d", n, total)
	}
	// Nothing is refused in a black hole: the fetches left unanswered are
	// what the user must hear of, within stallAfter (10s) and a poll.
	if log := out.String(); !strings.Contains(log, "Kafka broker not answering; waiting for it") || !strings.Contains(log, "no answer to fetches for 1") {
		t.Errorf("a %s black hole went unreported:\n%s", hole, log)
	}
	sc.note("warned that the broker did not answer, rode it out")
	sc.verify(backupRef{addr: px.Addr(), topic: topic, path: path, id: "h"})
}

// proxy forwards TCP connections to a target; while it is a black hole it
// forwards nothing, holding what it reads and the connections it accepts,
// and closes nothing.
type proxy struct {
	ln net.Listener

	mu     sync.Mutex
	cond   *sync.Cond
	holed  bool
	target string
	conns  []net.Conn
	closed bool
}

// startProxy listens on a free port of 127.0.0.1; the proxy stops when the
// test ends.
func startProxy(t *testing.T) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	p.cond = sync.NewCond(&p.mu)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's address.
func (p *proxy) Addr() string { return p.ln.Addr().String() }

func (p *proxy) setTarget(addr string) {
	p.mu.Lock()
	p.target = addr
	p.mu.Unlock()
}

// blackHole starts (on) or ends the black hole.
func (p *proxy) blackHole(on bool) {
	p.mu.Lock()
	p.holed = on
	p.mu.Unlock()
	p.cond.Broadcast()
}

// pass waits while the proxy is a black hole; false once it is closed.
func (p *proxy) pass() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.holed && !p.closed {
		p.cond.Wait()
	}
	return !p.closed
}

func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns = append(p.conns, c)
	return true
}

func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.mu.Unlock()
	p.cond.Broadcast()
	p.ln.Close()
	for _, c := range conns {
		c.Close()
	}
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.track(c) {
			go p.handle(c)
		}
	}
}

func (p *proxy) handle(c net.Conn) {
	if !p.pass() { // a connection made in the black hole waits in it
		return
	}
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	up, err := net.DialTimeout("tcp", target, 10*time.Second)
	if err != nil || !p.track(up) {
		c.Close()
		return
	}
	go p.pipe(up, c)
	p.pipe(c, up)
}

// pipe copies from src to dst while the proxy is not a black hole; what it
// read when one begins it holds until it ends. When either side ends, it
// closes both.
func (p *proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if !p.pass() {
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil { // EOF or a failure: the connection is over
			return
		}
	}
}
