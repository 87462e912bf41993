package link

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
)

type heap struct{}

func (heap) Allocate(n int) []byte { return make([]byte, n) }
func (heap) Free([]byte)           {}

func pair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	a, b, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := Conn(a)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := Conn(b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ca.Close(); cb.Close() })
	return ca, cb
}

func TestFramesCrossALinkInOrder(t *testing.T) {
	out, in := pair(t)
	want := []Frame{
		{ID{1, 0}, []byte("first")},
		{ID{1, 1}, nil},
		{ID{7, 0}, bytes.Repeat([]byte{0xAB}, 3<<20)}, // larger than the socket buffers
	}
	go func() {
		w := NewWriter(out)
		for _, f := range want {
			if err := w.Write(f.ID, f.Data); err != nil {
				t.Error(err)
			}
		}
		out.Close()
	}()
	r := NewReader(in, heap{})
	for _, w := range want {
		f, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if f.ID != w.ID || !bytes.Equal(f.Data, w.Data) {
			t.Fatalf("got frame %s of %d bytes, want %s of %d", f.ID, len(f.Data), w.ID, len(w.Data))
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("after the sender closed: %v, want io.EOF", err)
	}
	if r.Bytes != int64(3*HeaderLen+5+3<<20) {
		t.Errorf("Bytes = %d", r.Bytes)
	}
}

func TestReaderRefusesDamage(t *testing.T) {
	hdr := make([]byte, HeaderLen)
	binary.LittleEndian.PutUint32(hdr[12:], MaxFrameBytes+1)
	_, err := NewReader(bytes.NewReader(hdr), heap{}).Next()
	if want := "link: frame 0.0 claims 1073741825 bytes, more than a link carries (1073741824)"; err == nil || err.Error() != want {
		t.Errorf("oversized frame: %v, want %q", err, want)
	}
	binary.LittleEndian.PutUint32(hdr[12:], 10)
	_, err = NewReader(bytes.NewReader(append(hdr, 1, 2, 3)), heap{}).Next()
	if want := "link: read frame 0.0: unexpected EOF"; err == nil || err.Error() != want {
		t.Errorf("cut frame: %v, want %q", err, want)
	}
	_, err = NewReader(bytes.NewReader(hdr[:5]), heap{}).Next()
	if want := "link: read frame header: unexpected EOF"; err == nil || err.Error() != want {
		t.Errorf("cut header: %v, want %q", err, want)
	}
}

func TestLinkEndsPassOverASocket(t *testing.T) {
	a, b, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	ctlA, ctlB := pair(t)
	send, recv := ctlA.(*net.UnixConn), ctlB.(*net.UnixConn)
	if err := SendFile(send, Out, a); err != nil {
		t.Fatal(err)
	}
	a.Close()
	role, got, err := ReceiveFile(recv)
	if err != nil {
		t.Fatal(err)
	}
	if role != Out {
		t.Fatalf("role %q, want out", role)
	}
	// The received end is the same socket: what is written on it arrives
	// at b.
	ca, err := Conn(got)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	cb, err := Conn(b)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	if err := NewWriter(ca).Write(ID{3, 2}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	f, err := NewReader(cb, heap{}).Next()
	if err != nil || f.ID != (ID{3, 2}) || string(f.Data) != "x" {
		t.Fatalf("frame %v %q %v", f.ID, f.Data, err)
	}
}

func TestTLSAcceptsOnlyTheAnnouncedPeer(t *testing.T) {
	sender, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	receiver, _ := NewIdentity()
	stranger, _ := NewIdentity()

	run := func(senderPins, receiverPins []byte) (sendErr, recvErr error, got []byte) {
		out, in := pair(t)
		so, err := Secure(out, Out, sender, senderPins)
		if err != nil {
			t.Fatal(err)
		}
		si, err := Secure(in, In, receiver, receiverPins)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			err := NewWriter(so).Write(ID{1, 0}, []byte("secret"))
			so.Close()
			done <- err
		}()
		f, err := NewReader(si, heap{}).Next()
		si.Close()
		return <-done, err, f.Data
	}
	if serr, rerr, got := run(receiver.DER, sender.DER); serr != nil || rerr != nil || string(got) != "secret" {
		t.Fatalf("matching peers: send %v, receive %v, got %q", serr, rerr, got)
	}
	// The receiver expects someone else: the handshake fails and nothing
	// is delivered.
	_, rerr, got := run(receiver.DER, stranger.DER)
	if rerr == nil || !strings.Contains(rerr.Error(), "the peer's certificate is not the one the host announced") || got != nil {
		t.Fatalf("receiver pinned to another cert: receive %v, got %q", rerr, got)
	}
	// The sender expects someone else.
	serr, _, got := run(stranger.DER, sender.DER)
	if serr == nil || !strings.Contains(serr.Error(), "the peer's certificate is not the one the host announced") || got != nil {
		t.Fatalf("sender pinned to another cert: send %v, got %q", serr, got)
	}
}
