package bench

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"

	"github.com/klauspost/compress/zstd"
)

// Sizes of every benchmark record: a 16-byte key, a 1 KiB value and one
// header "trace" with a 16-byte value.
const (
	KeySize         = 16
	ValueSize       = 1024
	HeaderKey       = "trace"
	HeaderValueSize = 16
	// RecordSize is the payload of one record: key, value, header key and
	// header value.
	RecordSize = KeySize + ValueSize + len(HeaderKey) + HeaderValueSize
	// bufSize is what Gen.Fill needs: key, value and header value.
	bufSize = KeySize + ValueSize + HeaderValueSize
)

// Shape names how compressible the record values are.
type Shape string

const (
	// Repetitive values are a few JSON documents repeated, differing only
	// in a sequence number: they compress very well.
	Repetitive Shape = "repetitive"
	// Fresh values are JSON documents whose field values are random hex
	// digits: about 2x compressible with zstd at its fastest level.
	Fresh Shape = "fresh"
)

// Shapes lists every shape, in the order the benchmark runs them.
var Shapes = []Shape{Repetitive, Fresh}

// ParseShape returns the shape named s.
func ParseShape(s string) (Shape, error) {
	for _, sh := range Shapes {
		if string(sh) == s {
			return sh, nil
		}
	}
	return "", fmt.Errorf("unknown shape %q: want %q or %q", s, Repetitive, Fresh)
}

// Gen generates the records of one benchmark topic deterministically: record
// i always has the same key, value, header, partition and timestamp, so a
// program can regenerate any of them without storing the topic.
type Gen struct {
	Shape      Shape
	Partitions int32
	// BaseMs is the timestamp of record 0, epoch milliseconds; record i has
	// BaseMs+i, so timestamps are strictly increasing in the order the
	// records are produced.
	BaseMs int64
}

// Partition returns the partition of record i: records are spread evenly,
// round robin.
func (g Gen) Partition(i int64) int32 { return int32(i % int64(g.Partitions)) }

// Timestamp returns the timestamp of record i, epoch milliseconds.
func (g Gen) Timestamp(i int64) int64 { return g.BaseMs + i }

// NewBuf returns a buffer for Fill.
func NewBuf() []byte { return make([]byte, bufSize) }

// Fill writes record i into buf (from NewBuf) and returns its key, value and
// header value, which alias buf.
func (g Gen) Fill(i int64, buf []byte) (key, value, headerValue []byte) {
	buf = buf[:bufSize]
	key, value, headerValue = buf[:KeySize], buf[KeySize:KeySize+ValueSize], buf[KeySize+ValueSize:]
	fillKey(key, i)
	rng := rand.New(rand.NewPCG(uint64(i), 0x6b70697065))
	switch g.Shape {
	case Repetitive:
		fillRepetitive(value, i)
	default:
		fillFresh(value, rng)
	}
	fillHex(headerValue, rng)
	return key, value, headerValue
}

// fillKey writes "k" and the last 15 digits of i, zero-padded.
func fillKey(key []byte, i int64) {
	key[0] = 'k'
	for j := KeySize - 1; j >= 1; j-- {
		key[j] = byte('0' + i%10)
		i /= 10
	}
}

// templates are the documents of repetitive values, each exactly ValueSize
// bytes with a 12-digit sequence number at seqAt.
var templates = buildTemplates()

const seqAt = len(`{"seq":"`)

func buildTemplates() [][]byte {
	kinds := []struct{ action, country, plan string }{
		{"page_view", "DE", "free"},
		{"add_to_cart", "FR", "pro"},
		{"checkout", "US", "team"},
		{"login", "JP", "enterprise"},
	}
	out := make([][]byte, len(kinds))
	for k, kd := range kinds {
		b := fmt.Appendf(nil, `{"seq":"000000000000","event":%q,"user":{"country":%q,"plan":%q,"locale":"en"},"items":[`,
			kd.action, kd.country, kd.plan)
		for j := 0; len(b) < ValueSize-64; j++ {
			b = fmt.Appendf(b, `{"sku":"sku-%04d","qty":%d,"price":%d.99},`, 1000+j*7, j%3+1, 10+j)
		}
		b = append(b[:len(b)-1], `],"note":"`...)
		for len(b) < ValueSize-2 {
			b = append(b, 'x')
		}
		out[k] = append(b, `"}`...)
	}
	return out
}

func fillRepetitive(value []byte, i int64) {
	copy(value, templates[i%int64(len(templates))])
	n := i
	for j := seqAt + 11; j >= seqAt; j-- {
		value[j] = byte('0' + n%10)
		n /= 10
	}
}

// freshFields are the field names of fresh values; the value of each is
// random hex, and the last one fills the document up to ValueSize.
var freshFields = []string{"id", "trace_id", "span_id", "user", "session", "device", "checksum", "blob"}

func fillFresh(value []byte, rng *rand.Rand) {
	b := value[:0]
	b = append(b, '{')
	for f, name := range freshFields {
		if f > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, `":"`...)
		n := 32
		if f == len(freshFields)-1 {
			n = ValueSize - len(b) - 2
		}
		start := len(b)
		b = b[:start+n]
		fillHex(b[start:], rng)
		b = append(b, '"')
	}
	_ = append(b, '}')
}

// fillHex fills dst with random lower-case hex digits.
func fillHex(dst []byte, rng *rand.Rand) {
	var raw [8]byte
	var enc [16]byte
	for len(dst) > 0 {
		binary.LittleEndian.PutUint64(raw[:], rng.Uint64())
		hex.Encode(enc[:], raw[:])
		dst = dst[copy(dst, enc[:]):]
	}
}

// CompressionRatio compresses the values of the first n records of g, as one
// zstd frame per 1 MiB at the fastest level, and returns uncompressed bytes
// divided by compressed bytes.
func CompressionRatio(g Gen, n int64) (float64, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return 0, err
	}
	defer enc.Close()
	buf := NewBuf()
	var chunk, out []byte
	var in, compressed int
	flush := func() {
		out = enc.EncodeAll(chunk, out[:0])
		in += len(chunk)
		compressed += len(out)
		chunk = chunk[:0]
	}
	for i := range n {
		_, v, _ := g.Fill(i, buf)
		chunk = append(chunk, v...)
		if len(chunk) >= 1<<20 {
			flush()
		}
	}
	if len(chunk) > 0 {
		flush()
	}
	if compressed == 0 {
		return 0, fmt.Errorf("no records to compress")
	}
	return float64(in) / float64(compressed), nil
}

// Window is a time window over a generated topic: the records whose
// timestamps t satisfy Start <= t <= End, both inclusive, epoch ms.
type Window struct {
	Start, End int64
	// Records is how many records of the topic lie in the window.
	Records int64
}

// CentredWindow returns the window in the middle of the time range of n
// records of g that holds fraction of them (at least one).
func CentredWindow(g Gen, n int64, fraction float64) Window {
	count := max(int64(float64(n)*fraction), 1)
	count = min(count, n)
	first := (n - count) / 2
	return Window{Start: g.Timestamp(first), End: g.Timestamp(first + count - 1), Records: count}
}
