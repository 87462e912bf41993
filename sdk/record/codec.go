package record

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Codec says how the body buffers of a frame are compressed.
type Codec string

// The codecs of frames and segments.
const (
	None Codec = "none"
	Zstd Codec = "zstd"
	LZ4  Codec = "lz4"
)

// ParseCodec checks a codec name, with a level as WithLevel writes it
// (such as "zstd:9") or without; the empty name is None.
func ParseCodec(s string) (Codec, error) {
	name, lvl, leveled := strings.Cut(s, ":")
	switch c := Codec(name); c {
	case None, Zstd, LZ4:
		if !leveled {
			return c, nil
		}
		n, err := strconv.Atoi(lvl)
		if err != nil {
			return "", fmt.Errorf("compression %q: the level %q is not a number", s, lvl)
		}
		return c.WithLevel(n)
	case "":
		return None, nil
	}
	return "", fmt.Errorf("unknown compression %q: use zstd, lz4 or none", s)
}

// WithLevel returns the codec at a compression level: zstd 1 to 22 (as
// zstd counts them: 1-2 fastest, 3-6 default, 7-10 better, 11 and up best,
// the levels this encoder has), lz4 1 to 9; 0 is the codec's own default.
func (c Codec) WithLevel(level int) (Codec, error) {
	base := c.Base()
	switch {
	case level == 0:
		return base, nil
	case base == Zstd && level >= 1 && level <= 22, base == LZ4 && level >= 1 && level <= 9:
		return Codec(fmt.Sprintf("%s:%d", base, level)), nil
	case base == None:
		return "", fmt.Errorf("compression none has no level")
	}
	return "", fmt.Errorf("compression level %d is out of range for %s (zstd: 1 to 22, lz4: 1 to 9)", level, base)
}

// Base is the codec without its level: what a frame records.
func (c Codec) Base() Codec {
	name, _, _ := strings.Cut(string(c), ":")
	return Codec(name)
}

// Level is the codec's compression level; 0 for its default.
func (c Codec) Level() int {
	_, lvl, _ := strings.Cut(string(c), ":")
	n, _ := strconv.Atoi(lvl)
	return n
}

func codecID(c Codec) int8 {
	if c.Base() == Zstd {
		return 1 // CompressionType.ZSTD
	}
	return 0 // CompressionType.LZ4_FRAME
}

// zstd runs at its fastest level: on JSON event data it compresses as well
// as the default level in 40-50% less time (see the segment package's
// BenchmarkZstdLevel). Entropy coding stays on for buffers without repeats
// (random identifiers, hex, base64): the fastest level would otherwise store
// them as they are, twice the size the default level makes of them.
// EncodeAll and DecodeAll may run concurrently.
var (
	zstdEncoders sync.Map // zstd.EncoderLevel → func() *zstd.Encoder
	zstdDecoder  = sync.OnceValue(func() *zstd.Decoder {
		dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(MaxFrameBytes),
			// Never past the buffer's declared size: a frame that would
			// decompress to more fails instead of growing it.
			zstd.WithDecodeAllCapLimit(true))
		if err != nil {
			panic(err)
		}
		return dec
	})
	lz4Writers sync.Map // level → *sync.Pool of *lz4.Writer
	lz4Readers = sync.Pool{New: func() any { return lz4.NewReader(nil) }}
)

// zstdEncoder returns the encoder of a zstd level (0: the fastest).
func zstdEncoder(level int) *zstd.Encoder {
	lvl := zstd.SpeedFastest
	if level > 0 {
		lvl = zstd.EncoderLevelFromZstd(level)
	}
	f, _ := zstdEncoders.LoadOrStore(lvl, sync.OnceValue(func() *zstd.Encoder {
		// A 1 MiB window (buffers are rarely larger) keeps each of the
		// encoder's concurrent states small.
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(lvl), zstd.WithEncoderCRC(true),
			zstd.WithAllLitEntropyCompression(true), zstd.WithWindowSize(1<<20), zstd.WithLowerEncoderMem(true))
		if err != nil {
			panic(err) // only bad options fail
		}
		return enc
	}))
	return f.(func() *zstd.Encoder)()
}

// lz4Pool returns the writers of an lz4 level (0: the fastest).
func lz4Pool(level int) *sync.Pool {
	if p, ok := lz4Writers.Load(level); ok {
		return p.(*sync.Pool)
	}
	lvl := lz4.Fast
	if level > 0 {
		lvl = lz4.CompressionLevel(1 << (8 + level))
	}
	p, _ := lz4Writers.LoadOrStore(level, &sync.Pool{New: func() any {
		w := lz4.NewWriter(nil)
		// As Arrow C++ writes LZ4_FRAME buffers.
		if err := w.Apply(lz4.ChecksumOption(false), lz4.BlockSizeOption(lz4.Block64Kb), lz4.CompressionLevelOption(lvl)); err != nil {
			panic(err)
		}
		return w
	}})
	return p.(*sync.Pool)
}

// compress appends the compressed form of raw to dst.
func compress(c Codec, raw, dst []byte) ([]byte, error) {
	switch c.Base() {
	case Zstd:
		return zstdEncoder(c.Level()).EncodeAll(raw, dst), nil
	case LZ4:
		buf := bytes.NewBuffer(dst)
		pool := lz4Pool(c.Level())
		w := pool.Get().(*lz4.Writer)
		defer pool.Put(w)
		w.Reset(buf)
		if _, err := w.Write(raw); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	return nil, fmt.Errorf("cannot compress with %q", c)
}

// decompress fills dst, whose length is the uncompressed size, from src.
func decompress(c Codec, src, dst []byte) error {
	switch c {
	case Zstd:
		// Capacity cut at the buffer: with the cap limit, the decoder
		// may write no further, whatever the frame says.
		out, err := zstdDecoder().DecodeAll(src, dst[:0:len(dst)])
		if err != nil {
			return fmt.Errorf("zstd: %w", err)
		}
		if len(out) != len(dst) || (len(out) > 0 && &out[0] != &dst[0]) {
			return fmt.Errorf("zstd: decompressed to %d bytes, the buffer says %d", len(out), len(dst))
		}
		return nil
	case LZ4:
		r := lz4Readers.Get().(*lz4.Reader)
		defer lz4Readers.Put(r)
		r.Reset(bytes.NewReader(src))
		if _, err := io.ReadFull(r, dst); err != nil {
			return fmt.Errorf("lz4: %w", err)
		}
		if n, _ := r.Read(make([]byte, 1)); n != 0 {
			return fmt.Errorf("lz4: decompresses to more than the buffer's %d bytes", len(dst))
		}
		return nil
	}
	return fmt.Errorf("cannot decompress %q", c)
}

// Encoder turns record batches into frames compressed with its codec. It
// keeps its scratch space between calls and is not safe for concurrent use;
// use one per goroutine.
type Encoder struct {
	codec  Codec
	mem    memory.Allocator
	body   bytes.Buffer
	out    []byte
	spans  []span
	writes [][]byte // what SerializeBody wrote
	bufs   [][]byte
}

// NewEncoder returns an Encoder for codec.
func NewEncoder(codec Codec) *Encoder {
	return &Encoder{codec: codec, mem: memory.DefaultAllocator}
}

// Codec is the codec the Encoder compresses with.
func (e *Encoder) Codec() Codec { return e.codec }

// Encode appends the frame of rec to dst and returns it. The buffers are
// compressed straight from the batch's memory, without a copy of the body.
func (e *Encoder) Encode(rec arrow.RecordBatch, dst []byte) ([]byte, error) {
	p, err := ipc.GetRecordBatchPayload(rec, ipc.WithAllocator(e.mem))
	if err != nil {
		return nil, fmt.Errorf("encode record batch: %w", err)
	}
	defer p.Release()
	meta := p.Meta()
	defer meta.Release()
	e.writes = e.writes[:0]
	if err := p.SerializeBody(e); err != nil {
		return nil, fmt.Errorf("encode record batch: %w", err)
	}
	m, err := parseBatchMeta(meta.Bytes(), nil)
	if err != nil {
		return nil, fmt.Errorf("encode record batch: %w", err)
	}
	bufs, ok := e.buffers(m.spans)
	if !ok {
		// Not the layout expected of arrow-go's writer: take the body whole.
		e.body.Reset()
		for _, w := range e.writes {
			e.body.Write(w)
		}
		m.body = e.body.Bytes()
		bufs = make([][]byte, len(m.spans))
		for i, sp := range m.spans {
			if sp.off+sp.len > int64(len(m.body)) {
				return nil, fmt.Errorf("encode record batch: buffer %d lies outside the body", i)
			}
			bufs[i] = m.body[sp.off : sp.off+sp.len]
		}
	}
	if e.codec == None {
		dst = appendFrameHeader(dst, meta.Bytes())
		for _, b := range bufs {
			dst = append(dst, b...)
			dst = append(dst, zeros[:pad(len(b), ipcAlign)]...)
		}
		return dst, nil
	}
	return e.compress(&m, bufs, dst)
}

// Write implements io.Writer for ipc.Payload.SerializeBody: it keeps each
// slice it is given (a buffer of the batch, or padding), without copying.
func (e *Encoder) Write(b []byte) (int, error) {
	e.writes = append(e.writes, b)
	return len(b), nil
}

// buffers matches the writes SerializeBody made with the buffers the
// metadata lists: each non-empty buffer in one write, followed by its
// padding.
func (e *Encoder) buffers(spans []span) ([][]byte, bool) {
	out := e.bufs[:0]
	w := 0
	for _, sp := range spans {
		if sp.len == 0 {
			out = append(out, nil)
			continue
		}
		if w >= len(e.writes) || int64(len(e.writes[w])) != sp.len {
			return nil, false
		}
		out = append(out, e.writes[w])
		w++
		if p := pad(int(sp.len), ipcAlign); p > 0 {
			if w >= len(e.writes) || len(e.writes[w]) != p {
				return nil, false
			}
			w++
		}
	}
	e.bufs = out
	return out, w == len(e.writes)
}

// Recompress appends to dst the frame compressed with the Encoder's codec.
// A frame that already is is appended as it is; otherwise its buffers are
// decompressed and compressed again, without decoding the records.
func (e *Encoder) Recompress(frame, dst []byte) ([]byte, error) {
	m, err := parseBatch(frame)
	if err != nil {
		return nil, err
	}
	if m.codec == e.codec.Base() {
		return append(dst, frame...), nil
	}
	if m.codec != None {
		if m, err = e.decompressed(&m); err != nil {
			return nil, err
		}
	}
	if e.codec == None {
		meta := buildBatchMeta(m.version, m.length, m.nodes, m.spans, None, int64(len(m.body)))
		dst = appendFrameHeader(dst, meta)
		return append(dst, m.body...), nil
	}
	return e.compress(&m, bodyBuffers(&m), dst)
}

// decompressed returns m with every buffer decompressed into e.body.
func (e *Encoder) decompressed(m *batchMessage) (batchMessage, error) {
	out := *m
	out.codec = None
	out.spans = make([]span, len(m.spans))
	total := int64(0)
	for i := range m.spans {
		n, err := m.uncompressedLen(i)
		if err != nil {
			return out, err
		}
		out.spans[i] = span{total, n}
		total += n + int64(pad(int(n), ipcAlign))
	}
	if err := checkLen(total); err != nil {
		return out, err
	}
	e.body.Reset()
	e.body.Grow(int(total))
	body := e.body.AvailableBuffer()[:total]
	clear(body)
	for i, s := range out.spans {
		raw, err := m.buffer(i, body[s.off:s.off+s.len])
		if err != nil {
			return out, err
		}
		if s.len > 0 && &raw[0] != &body[s.off] {
			copy(body[s.off:], raw)
		}
	}
	out.body = body
	return out, nil
}

// compress appends the frame of the message m, whose buffers are bufs
// (uncompressed), with every buffer compressed with e.codec, to dst. A buffer
// that does not shrink is stored as is, behind the length -1, as the Arrow
// format allows.
func (e *Encoder) compress(m *batchMessage, bufs [][]byte, dst []byte) ([]byte, error) {
	e.out = e.out[:0]
	e.spans = e.spans[:0]
	for _, raw := range bufs {
		if len(raw) == 0 {
			e.spans = append(e.spans, span{int64(len(e.out)), 0})
			continue
		}
		start := len(e.out)
		e.out = binary.LittleEndian.AppendUint64(e.out, uint64(len(raw)))
		var err error
		if e.out, err = compress(e.codec, raw, e.out); err != nil {
			return nil, fmt.Errorf("compress record batch: %w", err)
		}
		if len(e.out)-start-8 >= len(raw) {
			e.out = binary.LittleEndian.AppendUint64(e.out[:start], ^uint64(0)) // int64 -1: stored as is
			e.out = append(e.out, raw...)
		}
		e.spans = append(e.spans, span{int64(start), int64(len(e.out) - start)})
		e.out = append(e.out, zeros[:pad(len(e.out), ipcAlign)]...)
	}
	meta := buildBatchMeta(m.version, m.length, m.nodes, e.spans, e.codec, int64(len(e.out)))
	dst = appendFrameHeader(dst, meta)
	return append(dst, e.out...), nil
}

// bodyBuffers returns the buffers of an uncompressed message's body.
func bodyBuffers(m *batchMessage) [][]byte {
	bufs := make([][]byte, len(m.spans))
	for i, sp := range m.spans {
		bufs[i] = m.body[sp.off : sp.off+sp.len]
	}
	return bufs
}

// Decoder turns frames back into record batches, whatever their codec. It
// reads the schema once, and is not safe for concurrent use.
type Decoder struct {
	mem  memory.Allocator
	enc  Encoder // decompresses into pooled memory
	rd   *ipc.Reader
	next *ipc.Message
}

// NewDecoder returns a Decoder whose batches hold memory from mem (nil for
// the Go heap); a Pool makes decoding batch after batch cheap.
func NewDecoder(mem memory.Allocator) *Decoder {
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	return &Decoder{mem: mem}
}

// Message implements ipc.MessageReader: the schema first, then each frame.
func (d *Decoder) Message() (*ipc.Message, error) {
	if d.next == nil {
		return nil, io.EOF
	}
	m := d.next
	d.next = nil
	return m, nil
}

// Retain and Release implement ipc.MessageReader.
func (d *Decoder) Retain()  {}
func (d *Decoder) Release() {}

// Decode returns the records of a frame. The caller must Release them.
func (d *Decoder) Decode(frame []byte) (rec arrow.RecordBatch, err error) {
	m, err := parseBatch(frame)
	if err == nil {
		err = m.checkShape()
	}
	if err != nil {
		return nil, fmt.Errorf("decode record batch: %w", err)
	}
	var body *memory.Buffer
	meta, _, _ := frameParts(frame)
	if m.codec == None {
		body = memory.NewBufferBytes(m.body)
	} else {
		// Decompress every buffer into one pooled body that the batch's
		// arrays then slice without copying.
		sizes := make([]span, len(m.spans))
		var total int64
		for i := range m.spans {
			n, err := m.uncompressedLen(i)
			if err != nil {
				return nil, fmt.Errorf("decode record batch: %w", err)
			}
			sizes[i] = span{total, n}
			total += n + int64(pad(int(n), ipcAlign))
		}
		if err := checkLen(total); err != nil {
			return nil, fmt.Errorf("decode record batch: %w", err)
		}
		buf := d.mem.Allocate(int(total))
		for i, s := range sizes {
			dst := buf[s.off : s.off+s.len]
			raw, err := m.buffer(i, dst)
			if err != nil {
				d.mem.Free(buf)
				return nil, fmt.Errorf("decode record batch: %w", err)
			}
			if s.len > 0 && &raw[0] != &dst[0] {
				copy(dst, raw)
			}
			clear(buf[s.off+s.len : s.off+s.len+int64(pad(int(s.len), ipcAlign))])
		}
		meta = buildBatchMeta(m.version, m.length, m.nodes, sizes, None, total)
		body = memory.NewBufferWithAllocator(buf, d.mem)
	}
	defer body.Release()
	msg := ipc.NewMessage(memory.NewBufferBytes(meta), body)
	defer msg.Release()
	defer func() {
		if r := recover(); r != nil {
			d.reset()
			rec, err = nil, fmt.Errorf("decode record batch: damaged: %v", r)
		}
	}()
	if d.rd == nil {
		d.next = schemaMessage()
		if d.rd, err = ipc.NewReaderFromMessageReader(d, ipc.WithAllocator(d.mem), ipc.WithSchema(Schema)); err != nil {
			d.rd = nil
			return nil, fmt.Errorf("decode record batch: %w", err)
		}
	}
	d.next = msg
	if !d.rd.Next() {
		err := d.rd.Err()
		d.reset()
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("decode record batch: %w", err)
	}
	rec = d.rd.RecordBatch()
	rec.Retain()
	if rec.NumRows() != m.length {
		rec.Release()
		return nil, fmt.Errorf("decode record batch: %d rows, the message says %d", rec.NumRows(), m.length)
	}
	if err := checkLayout(rec); err != nil {
		rec.Release()
		return nil, fmt.Errorf("decode record batch: %w", err)
	}
	return rec, nil
}

// reset drops the reader after an error, so the next Decode starts afresh.
func (d *Decoder) reset() {
	if d.rd != nil {
		d.rd.Release()
		d.rd = nil
	}
	if d.next != nil {
		d.next.Release()
		d.next = nil
	}
}

// Close releases the Decoder's reader.
func (d *Decoder) Close() { d.reset() }

// schemaMessage returns a new IPC message holding Schema.
func schemaMessage() *ipc.Message {
	frame := SchemaFrame()
	meta, _, _ := frameParts(frame)
	return ipc.NewMessage(memory.NewBufferBytes(meta), memory.NewBufferBytes(nil))
}

// SchemaFrame returns the encapsulated IPC schema message of Schema: how a
// segment (an Arrow IPC stream) starts. Do not modify the result.
var SchemaFrame = sync.OnceValue(func() []byte {
	p := ipc.GetSchemaPayload(Schema, memory.DefaultAllocator)
	defer p.Release()
	var buf bytes.Buffer
	if _, err := p.WritePayload(&buf); err != nil {
		panic(err)
	}
	return buf.Bytes()
})

// IsSchemaFrame reports whether frame is an IPC schema message.
func IsSchemaFrame(frame []byte) bool {
	meta, _, err := frameParts(frame)
	return err == nil && messageType(meta) == headerSchema
}

// CheckSchemaFrame checks that frame is the schema message kpipe writes
// for Schema, byte for byte. Every segment starts with it, so nothing else
// is a kpipe segment; and comparing, rather than handing the frame to an
// Arrow reader that trusts the lengths in it, costs no memory whatever the
// frame says.
func CheckSchemaFrame(frame []byte) error {
	want := SchemaFrame()
	if bytes.Equal(frame, want) {
		return nil
	}
	meta, _, err := frameParts(frame)
	if err != nil {
		return err
	}
	if t := messageType(meta); t != headerSchema {
		return fmt.Errorf("the stream starts with an Arrow message of type %d, not a schema", t)
	}
	return fmt.Errorf("its %d-byte schema message is not the %d bytes of the kpipe record schema v%s", len(frame), len(want), SchemaVersion)
}

// EncodeRecord returns the uncompressed frame of rec.
func EncodeRecord(rec arrow.RecordBatch) ([]byte, error) {
	return NewEncoder(None).Encode(rec, nil)
}
