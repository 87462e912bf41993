package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Kafka record batches compressed with lz4 hold one LZ4 frame each. franz-go
// decodes them through a streaming reader that copies every block twice and
// takes a block buffer of up to 4 MiB from a pool that each garbage
// collection empties, so that the source spent more time allocating and
// clearing block buffers than decoding. decompressor decodes the frame's
// blocks straight into the pooled buffer the records will live in; other
// codecs go to franz-go's own decompressor.
type decompressor struct {
	pools *fetchPools
	other kgo.Decompressor

	mu   sync.Mutex
	free [][]byte // scratch blocks
}

func newDecompressor(pools *fetchPools) *decompressor {
	return &decompressor{pools: pools, other: kgo.DefaultDecompressor(pools)}
}

// maxDecompressed bounds one decompressed batch, as franz-go's own
// decompressor does by default.
const maxDecompressed = 256 << 20

// Decompress implements kgo.Decompressor.
func (d *decompressor) Decompress(src []byte, codec kgo.CompressionCodecType) ([]byte, error) {
	if codec != kgo.CodecLz4 {
		return d.other.Decompress(src, codec)
	}
	dst, err := d.decodeLZ4Frames(d.pools.GetDecompressBytes(src, codec)[:0], src, maxDecompressed)
	if errors.Is(err, errLinkedBlocks) {
		return d.other.Decompress(src, codec)
	}
	if err != nil {
		return nil, fmt.Errorf("lz4: %w", err)
	}
	return dst, nil
}

const (
	lz4Magic          = 0x184D2204
	lz4SkippableMagic = 0x184D2A50 // to 0x184D2A5F
	lz4SkippableMask  = 0xFFFFFFF0
)

var (
	errLZ4Frame = errors.New("malformed frame")
	// errLinkedBlocks marks a frame whose blocks refer to earlier ones.
	// Kafka's clients write independent blocks; such a frame goes to
	// franz-go's decoder.
	errLinkedBlocks = errors.New("linked blocks")
)

// decodeLZ4Frames appends the decoded content of the LZ4 frames in src to
// dst, refusing more than limit bytes; dst grows, when it must, with memory
// from the pool. Checksums are not verified: the record batch's own CRC-32C
// covers these bytes.
func (d *decompressor) decodeLZ4Frames(dst, src []byte, limit int) ([]byte, error) {
	for len(src) > 0 {
		if len(src) < 4 {
			return nil, errLZ4Frame
		}
		magic := binary.LittleEndian.Uint32(src)
		if magic&lz4SkippableMask == lz4SkippableMagic {
			if len(src) < 8 {
				return nil, errLZ4Frame
			}
			n := uint64(binary.LittleEndian.Uint32(src[4:]))
			if n > uint64(len(src)-8) {
				return nil, errLZ4Frame
			}
			src = src[8+n:]
			continue
		}
		if magic != lz4Magic {
			return nil, fmt.Errorf("not an LZ4 frame (magic %#x)", magic)
		}
		var err error
		if dst, src, err = d.decodeLZ4Frame(dst, src[4:], limit); err != nil {
			return nil, err
		}
	}
	return dst, nil
}

// decodeLZ4Frame decodes one frame, src starting after its magic number,
// and returns what follows it.
func (d *decompressor) decodeLZ4Frame(dst, src []byte, limit int) ([]byte, []byte, error) {
	if len(src) < 3 {
		return nil, nil, errLZ4Frame
	}
	flg, bd := src[0], src[1]
	if flg>>6 != 1 {
		return nil, nil, fmt.Errorf("LZ4 frame version %d", flg>>6)
	}
	if flg&0x20 == 0 {
		return nil, nil, errLinkedBlocks
	}
	blockChecksum := flg&0x10 != 0
	contentChecksum := flg&0x04 != 0
	if flg&0x01 != 0 {
		return nil, nil, errors.New("LZ4 frames with a dictionary are not supported")
	}
	code := (bd >> 4) & 7
	if code < 4 {
		return nil, nil, fmt.Errorf("LZ4 block size code %d", code)
	}
	blockMax := 1 << (8 + 2*int(code)) // 4: 64 KiB ... 7: 4 MiB
	hdr := 3                           // FLG, BD, HC
	if flg&0x08 != 0 {
		hdr += 8 // content size
	}
	if len(src) < hdr {
		return nil, nil, errLZ4Frame
	}
	src = src[hdr:]
	start := len(dst)
	for {
		if len(src) < 4 {
			return nil, nil, errLZ4Frame
		}
		size := binary.LittleEndian.Uint32(src)
		src = src[4:]
		if size == 0 {
			break // end mark
		}
		stored := size&0x80000000 != 0
		size &= 0x7FFFFFFF
		if int(size) > len(src) || int(size) > blockMax {
			return nil, nil, errLZ4Frame
		}
		block := src[:size]
		src = src[size:]
		if blockChecksum {
			if len(src) < 4 {
				return nil, nil, errLZ4Frame
			}
			src = src[4:]
		}
		if stored {
			dst = append(dst, block...)
		} else {
			var err error
			if dst, err = d.uncompressBlock(dst, block, blockMax); err != nil {
				return nil, nil, err
			}
		}
		if len(dst)-start > limit {
			return nil, nil, kgo.ErrMaxDecompress
		}
	}
	if contentChecksum {
		if len(src) < 4 {
			return nil, nil, errLZ4Frame
		}
		src = src[4:]
	}
	return dst, src, nil
}

// uncompressBlock appends a compressed block's content to dst. It decodes
// into the room dst has: a batch's buffer, sized from the compression seen
// lately, usually has it. Otherwise it decodes into a scratch block, and dst
// grows from the pool by a quarter more than it needs.
func (d *decompressor) uncompressBlock(dst, block []byte, blockMax int) ([]byte, error) {
	pos := len(dst)
	if n, err := lz4.UncompressBlock(block, dst[pos:cap(dst)]); err == nil {
		return dst[:pos+n], nil
	}
	scratch := d.scratch(blockMax)
	defer d.putScratch(scratch)
	n, err := lz4.UncompressBlock(block, scratch)
	if err != nil {
		return nil, err
	}
	if cap(dst) < pos+n {
		mem := d.pools.mem
		nb := mem.Allocate((pos + n) * 5 / 4)[:pos]
		copy(nb, dst)
		mem.Free(dst)
		dst = nb
	}
	return append(dst, scratch[:n]...), nil
}

// scratch returns a block buffer of at least n bytes. The decompressor keeps
// its few scratch blocks itself: they are large, and a pool that a garbage
// collection empties would allocate (and clear) them again and again.
func (d *decompressor) scratch(n int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, b := range d.free {
		if cap(b) >= n {
			d.free = append(d.free[:i], d.free[i+1:]...)
			return b[:n]
		}
	}
	return make([]byte, n)
}

func (d *decompressor) putScratch(b []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.free) < maxScratch {
		d.free = append(d.free, b)
	}
}

// maxScratch is the most scratch blocks kept: one per broker fetched from
// at once is what is used.
const maxScratch = 2
