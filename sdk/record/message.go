package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	flatbuffers "github.com/google/flatbuffers/go"
)

// A batch crosses plugin boundaries and sits in segments as one
// encapsulated Arrow IPC record batch message (a "frame"): the continuation
// marker 0xFFFFFFFF, the metadata length, the Message flatbuffer padded to 8
// bytes, then the body. Its body buffers may be compressed the standard Arrow
// way (BodyCompression, method BUFFER: each buffer prefixed with its
// uncompressed length as an int64, -1 when stored as is), so that a segment,
// which is the schema message, frames and the end-of-stream marker, is an
// Arrow IPC stream any Arrow implementation reads. The schema is always
// Schema, so a frame carries none.

// The parts of the Arrow IPC format (Message.fbs, Schema.fbs) that a record
// batch message needs.
const (
	ipcContinuation      = 0xFFFFFFFF
	ipcAlign             = 8  // message metadata and body buffer alignment
	headerRecordBatch    = 3  // MessageHeader.RecordBatch
	headerSchema         = 1  // MessageHeader.Schema
	fieldNodeSize        = 16 // struct FieldNode { length, null_count: long }
	bufferSize           = 16 // struct Buffer { offset, length: long }
	msgVersion, msgType  = 0, 1
	msgHeader, msgBody   = 2, 3
	msgCustomMetadata    = 4
	rbLength, rbNodes    = 0, 1
	rbBuffers, rbCompr   = 2, 3
	rbVariadicBufferCnts = 4
	comprCodec           = 0
	// MaxFrameBytes bounds one frame; a length prefix beyond it is damage.
	MaxFrameBytes = 1 << 30
)

// Column buffers of a record batch message in Schema (pre-order, one entry
// per buffer: validity, then offsets or data).
const (
	bufOffsetData    = 1
	bufTimestampData = 3
	numBuffers       = 21
	numFields        = 9
	numColumns       = 6 // top-level fields, whose nodes come first
)

// checkShape refuses a record batch whose buffers and fields are not those
// of Schema: a frame carries no schema, so this is how one of another schema
// is told apart.
func (m *batchMessage) checkShape() error {
	if len(m.spans) != numBuffers || len(m.nodes) != numFields*fieldNodeSize {
		return fmt.Errorf("record batch has %d buffers and %d fields, the kpipe record schema v%s has %d and %d",
			len(m.spans), len(m.nodes)/fieldNodeSize, SchemaVersion, numBuffers, numFields)
	}
	for i := range numColumns {
		if n := int64(binary.LittleEndian.Uint64(m.nodes[i*fieldNodeSize:])); n != m.length {
			return fmt.Errorf("record batch of %d rows has a column of %d values", m.length, n)
		}
	}
	if m.length == 0 {
		return nil
	}
	// The buffers whose sizes follow from the row count alone: the
	// columns' values and offsets.
	for _, b := range []struct {
		buf   int
		name  string
		width int64
		extra int64
	}{{1, "offset", 8, 0}, {3, "timestamp", 8, 0}, {5, "timestamp_type", 1, 0}, {7, "key", 4, 1}, {10, "value", 4, 1}, {13, "headers", 4, 1}} {
		n, err := m.uncompressedLen(b.buf)
		if err != nil {
			return err
		}
		if m.length > n/b.width-b.extra {
			return fmt.Errorf("record batch of %d rows holds %d bytes of column %s, too few for them", m.length, n, b.name)
		}
	}
	return nil
}

// EndOfStream is the marker that ends an Arrow IPC stream.
var EndOfStream = []byte{0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0}

func table(meta []byte) flatbuffers.Table {
	return flatbuffers.Table{Bytes: meta, Pos: flatbuffers.GetUOffsetT(meta)}
}

func slot(i int) flatbuffers.VOffsetT { return flatbuffers.VOffsetT(4 + 2*i) }

func pad(n, align int) int { return (align - n%align) % align }

// span is one body buffer: where it lies in the body and how long it is.
type span struct{ off, len int64 }

// batchMessage is a parsed record batch message. Its slices alias the frame.
type batchMessage struct {
	version int16
	length  int64  // rows
	nodes   []byte // FieldNode structs
	spans   []span
	codec   Codec
	body    []byte
}

// frameParts splits a frame into its metadata flatbuffer and body, checking
// every length against the frame.
func frameParts(frame []byte) (meta, body []byte, err error) {
	if len(frame) < 8 || binary.LittleEndian.Uint32(frame) != ipcContinuation {
		return nil, nil, errors.New("frame does not start with an Arrow IPC message")
	}
	metaLen := int64(binary.LittleEndian.Uint32(frame[4:]))
	if metaLen < 8 || 8+metaLen > int64(len(frame)) {
		return nil, nil, fmt.Errorf("frame metadata length %d does not fit its %d bytes", metaLen, len(frame))
	}
	meta = frame[8 : 8+metaLen]
	body = frame[8+metaLen:]
	return meta, body, nil
}

// messageType returns the header type of an IPC message's metadata; 0 (no
// header) when the metadata is damaged.
func messageType(meta []byte) (typ byte) {
	if len(meta) < 8 {
		return 0
	}
	defer func() {
		if recover() != nil { // the flatbuffers accessors index unchecked
			typ = 0
		}
	}()
	t := table(meta)
	return t.GetByteSlot(slot(msgType), 0)
}

// parseBatch reads a record batch message. It never trusts a length it has
// not checked against the bytes at hand.
func parseBatch(frame []byte) (batchMessage, error) {
	meta, body, err := frameParts(frame)
	if err != nil {
		return batchMessage{}, err
	}
	return parseBatchMeta(meta, body)
}

// parseBatchMeta reads a record batch message from its metadata and body;
// with a nil body, from its metadata alone (the buffers' bounds are then
// checked only against the body length it declares).
func parseBatchMeta(meta, body []byte) (m batchMessage, err error) {
	defer func() {
		// The flatbuffers accessors index without checks; damage that
		// slipped past the checks below must not crash the process.
		if r := recover(); r != nil {
			err = fmt.Errorf("record batch message is damaged: %v", r)
		}
	}()
	if messageType(meta) != headerRecordBatch {
		return m, fmt.Errorf("frame holds an Arrow message of type %d, not a record batch", messageType(meta))
	}
	msg := table(meta)
	bodyLen := msg.GetInt64Slot(slot(msgBody), 0)
	if body != nil && bodyLen != int64(len(body)) {
		return m, fmt.Errorf("record batch message declares a %d-byte body, the frame holds %d", bodyLen, len(body))
	}
	m.version = msg.GetInt16Slot(slot(msgVersion), 0)
	if msg.Offset(slot(msgCustomMetadata)) != 0 {
		return m, errors.New("record batch message has custom metadata")
	}
	o := msg.Offset(slot(msgHeader))
	if o == 0 {
		return m, errors.New("record batch message has no header")
	}
	var rb flatbuffers.Table
	msg.Union(&rb, flatbuffers.UOffsetT(o))
	if rb.Offset(slot(rbVariadicBufferCnts)) != 0 {
		return m, errors.New("record batch has variadic buffers")
	}
	m.length = rb.GetInt64Slot(slot(rbLength), 0)
	if m.length < 0 {
		return m, fmt.Errorf("record batch claims %d rows", m.length)
	}
	m.codec = None
	if co := rb.Offset(slot(rbCompr)); co != 0 {
		var c flatbuffers.Table
		c.Bytes = rb.Bytes
		c.Pos = rb.Indirect(flatbuffers.UOffsetT(co) + rb.Pos)
		switch c.GetInt8Slot(slot(comprCodec), 0) {
		case 0:
			m.codec = LZ4
		case 1:
			m.codec = Zstd
		default:
			return m, fmt.Errorf("record batch uses compression codec %d", c.GetInt8Slot(slot(comprCodec), 0))
		}
	}
	if m.nodes, err = vectorOf(rb, rbNodes, fieldNodeSize); err != nil {
		return m, err
	}
	bufs, err := vectorOf(rb, rbBuffers, bufferSize)
	if err != nil {
		return m, err
	}
	m.spans = make([]span, len(bufs)/bufferSize)
	for i := range m.spans {
		off := int64(binary.LittleEndian.Uint64(bufs[i*bufferSize:]))
		n := int64(binary.LittleEndian.Uint64(bufs[i*bufferSize+8:]))
		if off < 0 || n < 0 || off > bodyLen || n > bodyLen-off {
			return m, fmt.Errorf("buffer %d (%d bytes at %d) lies outside the %d-byte body", i, n, off, bodyLen)
		}
		if m.codec != None && n > 0 && n < 8 {
			return m, fmt.Errorf("compressed buffer %d is %d bytes, too short for its length prefix", i, n)
		}
		m.spans[i] = span{off, n}
	}
	m.body = body
	return m, nil
}

// vectorOf returns the bytes of a vector of structs of size elem held in
// field i of table t.
func vectorOf(t flatbuffers.Table, i, elem int) ([]byte, error) {
	o := flatbuffers.UOffsetT(t.Offset(slot(i)))
	if o == 0 {
		return nil, nil
	}
	start := int(t.Vector(o))
	n := t.VectorLen(o)
	if n < 0 || start < 0 || start > len(t.Bytes) || n > (len(t.Bytes)-start)/elem {
		return nil, fmt.Errorf("record batch metadata vector of %d entries does not fit", n)
	}
	return t.Bytes[start : start+n*elem], nil
}

// uncompressedLen is the length buffer i has once decompressed.
func (m *batchMessage) uncompressedLen(i int) (int64, error) {
	s := m.spans[i]
	if m.codec == None || s.len == 0 {
		return s.len, nil
	}
	n := int64(binary.LittleEndian.Uint64(m.body[s.off:]))
	if n == -1 {
		return s.len - 8, nil
	}
	if n < 0 || n > MaxFrameBytes {
		return 0, fmt.Errorf("buffer %d claims %d bytes once decompressed", i, n)
	}
	if most := maxExpansion(m.codec, s.len-8); n > most {
		return 0, fmt.Errorf("buffer %d claims %d bytes once decompressed from %d, more than %s can expand to (%d): a decompression bomb or damage", i, n, s.len-8, m.codec, most)
	}
	return n, nil
}

// maxExpansion is the most n bytes compressed with codec c can decompress
// to, by the codec's format: a zstd block of 4 bytes (a run-length block)
// stands for at most 128 KiB, and an LZ4 sequence stands for at most 255
// bytes per byte it takes. A buffer that claims more is refused before
// anything is allocated for it.
func maxExpansion(c Codec, n int64) int64 {
	switch c {
	case Zstd:
		return n * (128 << 10 / 4)
	case LZ4:
		return n*255 + 64
	}
	return n
}

// buffer returns buffer i decompressed into dst (grown as needed), or the
// body's own bytes when it is stored uncompressed.
func (m *batchMessage) buffer(i int, dst []byte) ([]byte, error) {
	s := m.spans[i]
	raw := m.body[s.off : s.off+s.len]
	if m.codec == None || s.len == 0 {
		return raw, nil
	}
	n, err := m.uncompressedLen(i)
	if err != nil {
		return nil, err
	}
	if int64(binary.LittleEndian.Uint64(raw)) == -1 {
		return raw[8:], nil
	}
	if int64(cap(dst)) < n {
		dst = make([]byte, n)
	}
	dst = dst[:n]
	if err := decompress(m.codec, raw[8:], dst); err != nil {
		return nil, fmt.Errorf("buffer %d: %w", i, err)
	}
	return dst, nil
}

// MessageInfo describes a frame without decompressing it.
type MessageInfo struct {
	// Rows is the number of records.
	Rows int64
	// Codec is how the body buffers are compressed.
	Codec Codec
	// Size is the body's size once decompressed: what a decoder holds.
	Size int64
}

// Inspect reads a frame's row count, codec and decompressed size.
func Inspect(frame []byte) (MessageInfo, error) {
	m, err := parseBatch(frame)
	if err != nil {
		return MessageInfo{}, err
	}
	info := MessageInfo{Rows: m.length, Codec: m.codec}
	for i := range m.spans {
		n, err := m.uncompressedLen(i)
		if err != nil {
			return MessageInfo{}, err
		}
		info.Size += n + int64(pad(int(n), ipcAlign))
	}
	return info, nil
}

// FrameBounds returns the count and the min/max offset and timestamp of the
// records in a frame. It decompresses only the offset and timestamp columns.
func FrameBounds(frame []byte) (Bounds, error) {
	m, err := parseBatch(frame)
	if err != nil {
		return Bounds{}, err
	}
	if err := m.checkShape(); err != nil {
		return Bounds{}, err
	}
	for node := range 2 {
		if nulls := binary.LittleEndian.Uint64(m.nodes[node*fieldNodeSize+8:]); nulls != 0 {
			return Bounds{}, fmt.Errorf("record batch has %d null offsets or timestamps", nulls)
		}
	}
	offs, err := m.buffer(bufOffsetData, nil)
	if err != nil {
		return Bounds{}, err
	}
	ts, err := m.buffer(bufTimestampData, nil)
	if err != nil {
		return Bounds{}, err
	}
	// checkShape made sure both buffers hold m.length values.
	var b Bounds
	for i := range int(m.length) {
		b.add(int64(binary.LittleEndian.Uint64(offs[8*i:])), int64(binary.LittleEndian.Uint64(ts[8*i:])))
	}
	return b, nil
}

// buildBatchMeta returns the Message flatbuffer of a record batch with the
// given buffers, compressed with codec (None: no BodyCompression).
func buildBatchMeta(version int16, length int64, nodes []byte, spans []span, codec Codec, bodyLen int64) []byte {
	b := flatbuffers.NewBuilder(256 + len(nodes) + len(spans)*bufferSize)
	var compr flatbuffers.UOffsetT
	if codec != None {
		b.StartObject(2) // BodyCompression { codec, method = BUFFER (the default) }
		b.PrependInt8Slot(comprCodec, codecID(codec), 0)
		compr = b.EndObject()
	}
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
	if codec != None {
		b.PrependUOffsetTSlot(rbCompr, compr, 0)
	}
	hdr := b.EndObject()
	b.StartObject(5)
	b.PrependInt64Slot(msgBody, bodyLen, 0)
	b.PrependUOffsetTSlot(msgHeader, hdr, 0)
	b.PrependInt16Slot(msgVersion, version, 0)
	b.PrependByteSlot(msgType, headerRecordBatch, 0)
	b.Finish(b.EndObject())
	return b.FinishedBytes()
}

// appendFrameHeader appends the continuation marker, the padded metadata
// length, the metadata and its padding.
func appendFrameHeader(dst, meta []byte) []byte {
	padding := pad(len(meta), ipcAlign)
	dst = binary.LittleEndian.AppendUint32(dst, ipcContinuation)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(meta)+padding))
	dst = append(dst, meta...)
	return append(dst, zeros[:padding]...)
}

var zeros [ipcAlign]byte

// frameHeaderLen is the length of the frame header appendFrameHeader writes.
func frameHeaderLen(meta []byte) int { return 8 + len(meta) + pad(len(meta), ipcAlign) }

// checkLen refuses sizes no frame may have.
func checkLen(n int64) error {
	if n < 0 || n > MaxFrameBytes {
		return fmt.Errorf("a %d-byte record batch is larger than a frame may be (%d bytes)", n, MaxFrameBytes)
	}
	return nil
}

// maxMetaBytes bounds the metadata of one IPC message; a record batch of the
// kpipe schema needs well under a kilobyte.
const maxMetaBytes = 1 << 20

// ErrNoEndOfStream is returned by ReadFrame for a stream that ends between
// two messages without the end-of-stream marker.
var ErrNoEndOfStream = errors.New("the Arrow IPC stream ends without its end-of-stream marker")

// ReadFrame reads the next encapsulated IPC message of an Arrow IPC stream
// from r, appending it to dst[:0]. At the end-of-stream marker it returns
// io.EOF; a stream that ends between messages without one returns
// ErrNoEndOfStream, and one that ends within a message
// io.ErrUnexpectedEOF.
func ReadFrame(r io.Reader, dst []byte) ([]byte, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if err == io.EOF {
			return nil, ErrNoEndOfStream
		}
		return nil, err
	}
	if binary.LittleEndian.Uint32(hdr[:]) != ipcContinuation {
		return nil, errors.New("not an Arrow IPC message: no continuation marker")
	}
	metaLen := int64(binary.LittleEndian.Uint32(hdr[4:]))
	if metaLen == 0 {
		return nil, io.EOF
	}
	if metaLen < 8 || metaLen > maxMetaBytes {
		return nil, fmt.Errorf("Arrow IPC message metadata length %d is out of bounds", metaLen)
	}
	dst = append(dst[:0], hdr[:]...)
	dst = grow(dst, int(metaLen))
	if _, err := io.ReadFull(r, dst[8:]); err != nil {
		return nil, unexpected(err)
	}
	meta := dst[8:]
	bodyLen, err := bodyLength(meta)
	if err != nil {
		return nil, err
	}
	if bodyLen < 0 || bodyLen > MaxFrameBytes {
		return nil, fmt.Errorf("Arrow IPC message body length %d is out of bounds", bodyLen)
	}
	return readN(r, dst, bodyLen)
}

// bodyLength is the body length an IPC message's metadata declares.
func bodyLength(meta []byte) (n int64, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("Arrow IPC message metadata is damaged: %v", r)
		}
	}()
	if len(meta) < 8 {
		return 0, errors.New("Arrow IPC message metadata is damaged: too short")
	}
	t := table(meta)
	return t.GetInt64Slot(slot(msgBody), 0), nil
}

// readN appends n bytes read from r to dst. It grows dst as the bytes
// arrive, never by more than it already holds, so a length that lies costs
// at most twice the bytes that are really there.
func readN(r io.Reader, dst []byte, n int64) ([]byte, error) {
	for n > 0 {
		step := min(n, max(int64(cap(dst)-len(dst)), int64(len(dst)), 64<<10))
		start := len(dst)
		dst = grow(dst, int(step))
		if _, err := io.ReadFull(r, dst[start:]); err != nil {
			return nil, unexpected(err)
		}
		n -= step
	}
	return dst, nil
}

// grow extends b by n bytes.
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), len(b)+n)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
