package testkit

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"strconv"
)

var actions = []string{"view", "click", "add_to_cart", "remove_from_cart", "checkout", "login", "logout", "search"}

// AppendEvents appends JSON-lines events until the value is exactly size
// bytes long (the last one cut short): repeated field names and enumerated
// values with random ids, amounts and session tokens, which compress about
// like application logs and events do: about 2:1 with lz4 and 3.5:1 with
// zstd as Arrow segments.
func AppendEvents(buf []byte, rng *rand.Rand, size int) []byte {
	start := len(buf)
	for len(buf)-start < size {
		buf = append(buf, `{"seq":`...)
		buf = strconv.AppendUint(buf, rng.Uint64N(1e9), 10)
		buf = append(buf, `,"user":"u-`...)
		buf = strconv.AppendUint(buf, 10000+rng.Uint64N(90000), 10)
		buf = append(buf, `","action":"`...)
		buf = append(buf, actions[rng.IntN(len(actions))]...)
		buf = append(buf, `","item":"sku-`...)
		buf = strconv.AppendUint(buf, rng.Uint64N(100000), 10)
		buf = append(buf, `","price":`...)
		buf = strconv.AppendFloat(buf, float64(rng.IntN(100000))/100, 'f', 2, 64)
		buf = append(buf, `,"session":"`...)
		buf = AppendHex(buf, rng, 16)
		buf = append(buf, "\"}\n"...)
	}
	return buf[:start+size]
}

// AppendHex appends n random lower-case hex digits.
func AppendHex(buf []byte, rng *rand.Rand, n int) []byte {
	var raw [8]byte
	for n > 0 {
		binary.LittleEndian.PutUint64(raw[:], rng.Uint64())
		k := min(n, 16)
		end := len(buf) + k
		buf = hex.AppendEncode(buf, raw[:(k+1)/2])[:end]
		n -= k
	}
	return buf
}
