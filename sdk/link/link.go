// Package link is kpipe's data plane: the byte streams over which batch
// frames travel directly from one plugin process to the next, apart from the
// host's control plane. The host makes each link as a Unix socket pair and
// hands one end to the sending plugin and the other to the receiving one
// (over each plugin's link socket, with SCM_RIGHTS); from then on the bytes
// never pass through the host.
//
// On a link, each frame is a 16-byte header (seq uint64, part uint32, length
// uint32, little endian) followed by the frame's bytes. seq and part name
// the batch, so that a receiver matches each frame with the envelope the
// host sends it; frames arrive in the order the envelopes do.
//
// With TLS (Secure), both ends present a certificate made for the run and
// accept only the one the host told them to expect.
package link

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
)

// HeaderLen is the length of a frame header on a link.
const HeaderLen = 16

// MaxFrameBytes bounds one frame on a link.
const MaxFrameBytes = 1 << 30

// ID names a batch: the seq the source gave it and, among the outputs a
// transform made of it, its part.
type ID struct {
	Seq  uint64
	Part uint32
}

// Less orders IDs as they travel: by seq, then part.
func (a ID) Less(b ID) bool { return a.Seq < b.Seq || (a.Seq == b.Seq && a.Part < b.Part) }

func (a ID) String() string { return fmt.Sprintf("%d.%d", a.Seq, a.Part) }

// Writer sends frames on a link. It is not safe for concurrent use.
type Writer struct {
	c   io.Writer
	hdr [HeaderLen]byte
	// Bytes is the number of bytes written, headers included.
	Bytes int64
}

// NewWriter returns a Writer on c.
func NewWriter(c io.Writer) *Writer { return &Writer{c: c} }

// Write sends one frame.
func (w *Writer) Write(id ID, frame []byte) error {
	if len(frame) > MaxFrameBytes {
		return fmt.Errorf("link: frame %s of %d bytes is larger than a link carries (%d)", id, len(frame), MaxFrameBytes)
	}
	binary.LittleEndian.PutUint64(w.hdr[0:], id.Seq)
	binary.LittleEndian.PutUint32(w.hdr[8:], id.Part)
	binary.LittleEndian.PutUint32(w.hdr[12:], uint32(len(frame)))
	bufs := net.Buffers{w.hdr[:], frame}
	n, err := bufs.WriteTo(w.c)
	w.Bytes += n
	if err != nil {
		return fmt.Errorf("link: write frame %s: %w", id, err)
	}
	return nil
}

// Allocator hands out and takes back frame buffers (record.Pool does).
type Allocator interface {
	Allocate(size int) []byte
	Free(b []byte)
}

// Frame is one frame read from a link. Data comes from the Reader's
// Allocator; give it back with Free once done.
type Frame struct {
	ID
	Data []byte
}

// Reader receives frames from a link. It is not safe for concurrent use.
type Reader struct {
	r   *bufio.Reader
	mem Allocator
	// Bytes is the number of bytes read, headers included.
	Bytes int64
}

// NewReader returns a Reader on c whose frames are allocated from mem.
func NewReader(c io.Reader, mem Allocator) *Reader {
	return &Reader{r: bufio.NewReaderSize(c, 64<<10), mem: mem}
}

// Next reads the next frame; io.EOF when the sender closed the link between
// frames.
func (r *Reader) Next() (Frame, error) {
	var hdr [HeaderLen]byte
	if _, err := io.ReadFull(r.r, hdr[:]); err != nil {
		if err == io.EOF {
			return Frame{}, io.EOF
		}
		return Frame{}, fmt.Errorf("link: read frame header: %w", err)
	}
	f := Frame{ID: ID{Seq: binary.LittleEndian.Uint64(hdr[0:]), Part: binary.LittleEndian.Uint32(hdr[8:])}}
	n := binary.LittleEndian.Uint32(hdr[12:])
	if n > MaxFrameBytes {
		return Frame{}, fmt.Errorf("link: frame %s claims %d bytes, more than a link carries (%d)", f.ID, n, MaxFrameBytes)
	}
	f.Data = r.mem.Allocate(int(n))
	if _, err := io.ReadFull(r.r, f.Data); err != nil {
		r.mem.Free(f.Data)
		return Frame{}, fmt.Errorf("link: read frame %s: %w", f.ID, unexpected(err))
	}
	r.Bytes += HeaderLen + int64(n)
	return f, nil
}

// Free gives a frame's buffer back to the Reader's Allocator.
func (r *Reader) Free(f Frame) { r.mem.Free(f.Data) }

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// bufferBytes is the kernel buffer asked for each end of a link: large
// enough that a sender rarely waits on a receiver that is keeping up.
const bufferBytes = 4 << 20

// Pair makes a link: two connected Unix stream sockets, one for the sender
// and one for the receiver. Both are close-on-exec; os/exec clears that for
// the ends it hands to a child.
func Pair() (*os.File, *os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("link: socketpair: %w", err)
	}
	for _, fd := range fds {
		// Best effort: the kernel caps the sizes at its own limits.
		_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, bufferBytes)
		_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, bufferBytes)
	}
	return os.NewFile(uintptr(fds[0]), "kpipe-link-send"), os.NewFile(uintptr(fds[1]), "kpipe-link-receive"), nil
}

// Conn turns one end of a link into a net.Conn (and closes f, which the
// Conn duplicates).
func Conn(f *os.File) (net.Conn, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("link: %w", err)
	}
	return c, nil
}

// Role says which end of a link a file is.
type Role string

// The two ends of a link.
const (
	In  Role = "in"  // the receiving end
	Out Role = "out" // the sending end
)

// SendFile passes f to the process at the other end of ctl (a Unix socket)
// as the link end role.
func SendFile(ctl *net.UnixConn, role Role, f *os.File) error {
	rights := syscall.UnixRights(int(f.Fd()))
	n, oobn, err := ctl.WriteMsgUnix([]byte(role), rights, nil)
	if err == nil && (n != len(role) || oobn != len(rights)) {
		err = errors.New("short write")
	}
	if err != nil {
		return fmt.Errorf("link: hand over the %s end: %w", role, err)
	}
	return nil
}

// ReceiveFile waits for a link end that SendFile passed over ctl.
func ReceiveFile(ctl *net.UnixConn) (Role, *os.File, error) {
	buf := make([]byte, 16)
	oob := make([]byte, syscall.CmsgSpace(4))
	n, oobn, _, _, err := ctl.ReadMsgUnix(buf, oob)
	if err != nil {
		return "", nil, fmt.Errorf("link: receive a link end: %w", err)
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return "", nil, fmt.Errorf("link: receive a link end: no file in the message (%v)", err)
	}
	fds, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return "", nil, fmt.Errorf("link: receive a link end: no file in the message (%v)", err)
	}
	syscall.CloseOnExec(fds[0])
	role := Role(buf[:n])
	if role != In && role != Out {
		syscall.Close(fds[0])
		return "", nil, fmt.Errorf("link: receive a link end: unknown role %q", role)
	}
	return role, os.NewFile(uintptr(fds[0]), "kpipe-link-"+string(role)), nil
}

// ControlPair makes a plugin's link socket: a Unix datagram-sequenced socket
// pair (message boundaries kept), the first end for the host, the second for
// the plugin, over which SendFile hands link ends.
func ControlPair() (*os.File, *os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("link: socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "kpipe-link-socket-host"), os.NewFile(uintptr(fds[1]), "kpipe-link-socket"), nil
}
