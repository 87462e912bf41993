package main

import (
	"encoding/binary"
	"errors"
	"fmt"

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
	dst, err := decodeLZ4Frames(d.pools.GetDecompressBytes(src, codec)[:0], src, maxDecompressed)
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
// dst, refusing more than limit bytes. Checksums are not verified: the
// record batch's own CRC-32C covers these bytes.
func decodeLZ4Frames(dst, src []byte, limit int) ([]byte, error) {
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
		if dst, src, err = decodeLZ4Frame(dst, src[4:], limit); err != nil {
			return nil, err
		}
	}
	return dst, nil
}

// decodeLZ4Frame decodes one frame, src starting after its magic number,
// and returns what follows it.
func decodeLZ4Frame(dst, src []byte, limit int) ([]byte, []byte, error) {
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
			if dst, err = uncompressBlock(dst, block, blockMax); err != nil {
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
// into the room dst has, and only when that is too small grows dst, up to
// the frame's block size: a batch's buffer, sized from the compression seen
// lately, usually has the room.
func uncompressBlock(dst, block []byte, blockMax int) ([]byte, error) {
	pos := len(dst)
	for room := cap(dst) - pos; ; room = cap(dst) - pos {
		n, err := lz4.UncompressBlock(block, dst[pos:pos+room])
		if err == nil {
			return dst[:pos+n], nil
		}
		if room >= blockMax {
			return nil, err // damage: the block does not fit its frame's size
		}
		nb := make([]byte, pos, pos+max(2*room, min(blockMax, 255*len(block)+16)))
		copy(nb, dst)
		dst = nb
	}
}
