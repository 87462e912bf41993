package segment

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/apache/arrow-go/v18/arrow/ipc"
	flatbuffers "github.com/google/flatbuffers/go"
	"github.com/klauspost/compress/zstd"
)

// A segment is an Arrow IPC stream: the schema message, one message per
// record batch, and the end-of-stream marker. Arrow compresses lz4 segments
// itself. For zstd, streamWriter compresses each body buffer (Arrow's
// BUFFER compression method) with zstd's fastest level: on JSON event data
// it compresses as well as the default level in 40-50% less time
// (BenchmarkZstdLevel), and arrow-go
// offers no way to choose the level.

// The parts of the Arrow IPC format (Message.fbs, Schema.fbs) that a record
// batch message needs.
const (
	ipcContinuation      = 0xFFFFFFFF
	ipcAlign             = 8  // message metadata and body buffer alignment
	headerRecordBatch    = 3  // MessageHeader.RecordBatch
	codecZstd            = 1  // CompressionType.ZSTD
	fieldNodeSize        = 16 // struct FieldNode { length, null_count: long }
	bufferSize           = 16 // struct Buffer { offset, length: long }
	msgVersion, msgType  = 0, 1
	msgHeader, msgBody   = 2, 3
	msgCustomMetadata    = 4
	rbLength, rbNodes    = 0, 1
	rbBuffers, rbCompr   = 2, 3
	rbVariadicBufferCnts = 4
)

var ipcEOS = []byte{0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0}

// streamWriter is the ipc.PayloadWriter of a segment.
type streamWriter struct {
	w    io.Writer
	zstd *zstd.Encoder // nil: write payloads as Arrow made them

	body, out bytes.Buffer
	scratch   []byte
}

// zstdEncoder is shared by every segment of the process: EncodeAll may be
// called from several goroutines (the fs sink writes partitions in
// parallel), each call running on its own.
var zstdEncoder = sync.OnceValues(func() (*zstd.Encoder, error) {
	return zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
})

func newStreamWriter(w io.Writer, compression string) (*streamWriter, error) {
	s := &streamWriter{w: w}
	if compression == Zstd {
		enc, err := zstdEncoder()
		if err != nil {
			return nil, err
		}
		s.zstd = enc
	}
	return s, nil
}

func (s *streamWriter) Start() error { return nil }

func (s *streamWriter) Close() error {
	_, err := s.w.Write(ipcEOS)
	return err
}

func (s *streamWriter) WritePayload(p ipc.Payload) error {
	m := p.Meta()
	if m == nil {
		return errors.New("write segment: IPC message without metadata")
	}
	defer m.Release()
	if s.zstd == nil || messageHeader(m.Bytes()) != headerRecordBatch {
		_, err := p.WritePayload(s.w)
		return err
	}
	s.body.Reset()
	if err := p.SerializeBody(&s.body); err != nil {
		return err
	}
	meta, body, err := s.compress(m.Bytes(), s.body.Bytes())
	if err != nil {
		return fmt.Errorf("compress record batch: %w", err)
	}
	return writeMessage(s.w, meta, body)
}

func table(meta []byte) flatbuffers.Table {
	return flatbuffers.Table{Bytes: meta, Pos: flatbuffers.GetUOffsetT(meta)}
}

func slot(i int) flatbuffers.VOffsetT { return flatbuffers.VOffsetT(4 + 2*i) }

func messageHeader(meta []byte) byte {
	if len(meta) < 4 {
		return 0
	}
	t := table(meta)
	return t.GetByteSlot(slot(msgType), 0)
}

// compress returns the metadata and body of an uncompressed record batch
// message with every body buffer compressed.
func (s *streamWriter) compress(meta, body []byte) ([]byte, []byte, error) {
	msg := table(meta)
	version := msg.GetInt16Slot(slot(msgVersion), 0)
	if msg.Offset(slot(msgCustomMetadata)) != 0 {
		return nil, nil, errors.New("record batch message has custom metadata")
	}
	var rb flatbuffers.Table
	o := msg.Offset(slot(msgHeader))
	if o == 0 {
		return nil, nil, errors.New("record batch message has no header")
	}
	msg.Union(&rb, flatbuffers.UOffsetT(o))
	if rb.Offset(slot(rbCompr)) != 0 || rb.Offset(slot(rbVariadicBufferCnts)) != 0 {
		return nil, nil, errors.New("record batch is already compressed or has variadic buffers")
	}
	length := rb.GetInt64Slot(slot(rbLength), 0)
	nodes := vectorOf(rb, rbNodes, fieldNodeSize)
	bufs := vectorOf(rb, rbBuffers, bufferSize)

	s.out.Reset()
	type span struct{ off, len int64 }
	spans := make([]span, len(bufs)/bufferSize)
	for i := range spans {
		off := int64(binary.LittleEndian.Uint64(bufs[i*bufferSize:]))
		n := int64(binary.LittleEndian.Uint64(bufs[i*bufferSize+8:]))
		if off < 0 || n < 0 || off+n > int64(len(body)) {
			return nil, nil, fmt.Errorf("buffer %d (%d bytes at %d) lies outside the %d-byte body", i, n, off, len(body))
		}
		if n == 0 {
			spans[i] = span{int64(s.out.Len()), 0}
			continue
		}
		raw := body[off : off+n]
		start := s.out.Len()
		s.scratch = s.zstd.EncodeAll(raw, s.scratch[:0])
		var prefix [8]byte
		if len(s.scratch) < len(raw) {
			binary.LittleEndian.PutUint64(prefix[:], uint64(n))
			s.out.Write(prefix[:])
			s.out.Write(s.scratch)
		} else {
			binary.LittleEndian.PutUint64(prefix[:], ^uint64(0)) // int64 -1: stored as is
			s.out.Write(prefix[:])
			s.out.Write(raw)
		}
		spans[i] = span{int64(start), int64(s.out.Len() - start)}
		s.out.Write(make([]byte, pad(s.out.Len(), ipcAlign)))
	}

	b := flatbuffers.NewBuilder(256 + len(nodes) + len(bufs))
	b.StartObject(2) // BodyCompression { codec, method = BUFFER (the default) }
	b.PrependInt8Slot(0, codecZstd, 0)
	compr := b.EndObject()
	b.StartVector(bufferSize, len(spans), 8)
	for i := len(spans) - 1; i >= 0; i-- {
		b.Prep(8, bufferSize)
		b.PrependInt64(spans[i].len)
		b.PrependInt64(spans[i].off)
	}
	bufVec := b.EndVector(len(spans))
	n := len(nodes) / fieldNodeSize
	b.StartVector(fieldNodeSize, n, 8)
	for i := n - 1; i >= 0; i-- {
		b.Prep(8, fieldNodeSize)
		b.PrependInt64(int64(binary.LittleEndian.Uint64(nodes[i*fieldNodeSize+8:]))) // null_count
		b.PrependInt64(int64(binary.LittleEndian.Uint64(nodes[i*fieldNodeSize:])))   // length
	}
	nodeVec := b.EndVector(n)
	b.StartObject(5)
	b.PrependInt64Slot(rbLength, length, 0)
	b.PrependUOffsetTSlot(rbNodes, nodeVec, 0)
	b.PrependUOffsetTSlot(rbBuffers, bufVec, 0)
	b.PrependUOffsetTSlot(rbCompr, compr, 0)
	hdr := b.EndObject()
	b.StartObject(5)
	b.PrependInt64Slot(msgBody, int64(s.out.Len()), 0)
	b.PrependUOffsetTSlot(msgHeader, hdr, 0)
	b.PrependInt16Slot(msgVersion, version, 0)
	b.PrependByteSlot(msgType, headerRecordBatch, 0)
	b.Finish(b.EndObject())
	return b.FinishedBytes(), s.out.Bytes(), nil
}

// vectorOf returns the bytes of a vector of structs of size elem held in
// field i of table t.
func vectorOf(t flatbuffers.Table, i, elem int) []byte {
	o := flatbuffers.UOffsetT(t.Offset(slot(i)))
	if o == 0 {
		return nil
	}
	start := t.Vector(o)
	n := t.VectorLen(o)
	return t.Bytes[start : int(start)+n*elem]
}

func pad(n, align int) int { return (align - n%align) % align }

// writeMessage writes one encapsulated IPC message: continuation marker,
// metadata length, metadata padded to 8 bytes, body.
func writeMessage(w io.Writer, meta, body []byte) error {
	var hdr [8]byte
	padding := pad(len(meta)+len(hdr), ipcAlign)
	binary.LittleEndian.PutUint32(hdr[:4], ipcContinuation)
	binary.LittleEndian.PutUint32(hdr[4:], uint32(len(meta)+padding))
	for _, part := range [][]byte{hdr[:], meta, make([]byte, padding), body} {
		if _, err := w.Write(part); err != nil {
			return err
		}
	}
	return nil
}
