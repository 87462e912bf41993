package main

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kpipe/kpipe/sdk/record"
)

// testDecoder is a decompressor with a pool of its own.
func testDecoder() *decompressor {
	return newDecompressor(newFetchPools(record.NewPool(), newFetchSizer(8<<20)))
}

// lz4Frame compresses data as one LZ4 frame with the given writer options.
func lz4Frame(t *testing.T, data []byte, opts ...lz4.Option) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := lz4.NewWriter(&buf)
	if err := w.Apply(opts...); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// lz4Data is JSON lines, then a stretch of random bytes (stored blocks).
func lz4Data() []byte {
	rng := rand.New(rand.NewPCG(5, 6))
	var b []byte
	for i := range 30_000 {
		b = fmt.Appendf(b, `{"i":%d,"user":"u-%d","note":"`, i, i%97)
		for range rng.IntN(20) {
			b = append(b, byte('a'+rng.IntN(26)))
		}
		b = append(b, "\"}\n"...)
	}
	for range 300_000 {
		b = append(b, byte(rng.Uint32()))
	}
	return b
}

// TestLZ4FramesDecodeAsTheReferenceDecoder: frames of every block size,
// with and without checksums and the content size, at every level, decode
// to the bytes they were made of, whatever room the buffer has to start
// with.
func TestLZ4FramesDecodeAsTheReferenceDecoder(t *testing.T) {
	data := lz4Data()
	for _, c := range []struct {
		name string
		opts []lz4.Option
	}{
		{"64KiB blocks", []lz4.Option{lz4.BlockSizeOption(lz4.Block64Kb)}},
		{"256KiB blocks, block checksums", []lz4.Option{lz4.BlockSizeOption(lz4.Block256Kb), lz4.BlockChecksumOption(true)}},
		{"1MiB blocks, no content checksum", []lz4.Option{lz4.BlockSizeOption(lz4.Block1Mb), lz4.ChecksumOption(false)}},
		{"4MiB blocks, content size", []lz4.Option{lz4.BlockSizeOption(lz4.Block4Mb), lz4.SizeOption(uint64(len(data)))}},
		{"fastest level", []lz4.Option{lz4.CompressionLevelOption(lz4.Fast)}},
		{"highest level", []lz4.Option{lz4.CompressionLevelOption(lz4.Level9)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			frame := lz4Frame(t, data, c.opts...)
			// Two frames back to back, behind a skippable frame.
			skippable := []byte{0x51, 0x2A, 0x4D, 0x18, 3, 0, 0, 0, 'x', 'y', 'z'}
			src := append(append(append([]byte{}, frame...), skippable...), frame...)
			want := append(append([]byte{}, data...), data...)
			for _, room := range []int{0, 100, len(want) / 3, len(want) + 10} {
				got, err := testDecoder().decodeLZ4Frames(make([]byte, 0, room), src, 1<<30)
				if err != nil {
					t.Fatalf("room %d: %v", room, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("room %d: decoded %d bytes, want %d", room, len(got), len(want))
				}
			}
		})
	}
}

func TestLZ4FramesRefuseDamage(t *testing.T) {
	data := lz4Data()
	frame := lz4Frame(t, data, lz4.BlockSizeOption(lz4.Block64Kb))
	if _, err := testDecoder().decodeLZ4Frames(nil, frame, len(data)-1); !errors.Is(err, kgo.ErrMaxDecompress) {
		t.Errorf("over the limit: %v, want ErrMaxDecompress", err)
	}
	for name, bad := range map[string][]byte{
		"cut magic":   frame[:3],
		"cut header":  frame[:6],
		"cut block":   frame[:len(frame)/2],
		"wrong magic": append([]byte{1, 2, 3, 4}, frame[4:]...),
	} {
		if _, err := testDecoder().decodeLZ4Frames(nil, bad, 1<<30); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	flipped := bytes.Clone(frame)
	flipped[len(flipped)/3] ^= 0xFF
	if got, err := testDecoder().decodeLZ4Frames(nil, flipped, 1<<30); err == nil && bytes.Equal(got, data) {
		t.Errorf("a flipped byte went unnoticed")
	}
}

// TestLZ4LinkedBlocksGoToFranzGo: a frame whose blocks refer to earlier
// ones (no Kafka client writes them) is left to franz-go's own decoder.
func TestLZ4LinkedBlocksGoToFranzGo(t *testing.T) {
	data := lz4Data()
	frame := lz4Frame(t, data, lz4.BlockSizeOption(lz4.Block64Kb))
	frame[4] &^= 0x20                       // clear the block independence flag
	frame[6] = byte(xxh32(frame[4:6]) >> 8) // and fix the header checksum
	if _, err := testDecoder().decodeLZ4Frames(nil, frame, 1<<30); !errors.Is(err, errLinkedBlocks) {
		t.Fatalf("linked blocks: %v, want errLinkedBlocks", err)
	}
	d := testDecoder()
	got, err := d.Decompress(frame, kgo.CodecLz4)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("franz-go's decoder: %d bytes, %v", len(got), err)
	}
	// Its own frames, the decompressor decodes itself.
	if got, err := d.Decompress(lz4Frame(t, data), kgo.CodecLz4); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Decompress: %d bytes, %v", len(got), err)
	}
}

// xxh32 is the 32-bit xxHash of b with seed 0, for inputs under 16 bytes
// (all an LZ4 frame descriptor needs).
func xxh32(b []byte) uint32 {
	const p1, p2, p3, p4, p5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
	rotl := func(x uint32, r uint) uint32 { return x<<r | x>>(32-r) }
	h := uint32(p5) + uint32(len(b))
	for ; len(b) >= 4; b = b[4:] {
		h += (uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24) * p3
		h = rotl(h, 17) * p4
	}
	for _, c := range b {
		h += uint32(c) * p5
		h = rotl(h, 11) * p1
	}
	h ^= h >> 15
	h *= p2
	h ^= h >> 13
	h *= p3
	h ^= h >> 16
	return h
}
