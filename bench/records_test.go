package bench

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestGenRecords(t *testing.T) {
	for _, shape := range Shapes {
		g := Gen{Shape: shape, Partitions: 8, BaseMs: 1_700_000_000_000}
		buf, again := NewBuf(), NewBuf()
		seen := map[string]bool{}
		for _, i := range []int64{0, 1, 2, 7, 8, 999_999, 123_456_789} {
			k, v, h := g.Fill(i, buf)
			if len(k) != KeySize || len(v) != ValueSize || len(h) != HeaderValueSize {
				t.Fatalf("%s record %d: sizes %d/%d/%d, want %d/%d/%d", shape, i, len(k), len(v), len(h), KeySize, ValueSize, HeaderValueSize)
			}
			if !json.Valid(v) {
				t.Fatalf("%s record %d: value is not JSON: %s", shape, i, v)
			}
			if seen[string(v)] {
				t.Errorf("%s record %d: same value as an earlier record", shape, i)
			}
			seen[string(v)] = true
			k2, v2, h2 := g.Fill(i, again)
			if !bytes.Equal(k, k2) || !bytes.Equal(v, v2) || !bytes.Equal(h, h2) {
				t.Errorf("%s record %d: not deterministic", shape, i)
			}
			if g.Timestamp(i) != g.BaseMs+i || g.Partition(i) != int32(i%8) {
				t.Errorf("%s record %d: timestamp %d partition %d", shape, i, g.Timestamp(i), g.Partition(i))
			}
		}
	}
	k, _, _ := Gen{Shape: Fresh, Partitions: 1}.Fill(42, NewBuf())
	if string(k) != "k000000000000042" {
		t.Errorf("key of record 42 = %q", k)
	}
}

func TestPartitionsEven(t *testing.T) {
	g := Gen{Shape: Fresh, Partitions: 100}
	count := map[int32]int{}
	for i := range int64(200_000) {
		count[g.Partition(i)]++
	}
	if len(count) != 100 {
		t.Fatalf("%d partitions used, want 100", len(count))
	}
	for p, n := range count {
		if n != 2000 {
			t.Errorf("partition %d holds %d records, want 2000", p, n)
		}
	}
}

func TestCompressionRatio(t *testing.T) {
	rep, err := CompressionRatio(Gen{Shape: Repetitive, Partitions: 1}, 4000)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := CompressionRatio(Gen{Shape: Fresh, Partitions: 1}, 4000)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("zstd fastest: repetitive %.1fx, fresh %.2fx", rep, fresh)
	if rep < 8 {
		t.Errorf("repetitive values compress %.1fx, want highly compressible (>= 8x)", rep)
	}
	if fresh < 1.7 || fresh > 2.4 {
		t.Errorf("fresh values compress %.2fx, want about 2x", fresh)
	}
}

func TestCentredWindow(t *testing.T) {
	g := Gen{Shape: Fresh, Partitions: 8, BaseMs: 1_000_000}
	for _, n := range []int64{1, 99, 100, 101, 12_345, 200_000} {
		w := CentredWindow(g, n, 0.01)
		var in int64
		for i := range n {
			if ts := g.Timestamp(i); ts >= w.Start && ts <= w.End {
				in++
			}
		}
		if in != w.Records {
			t.Errorf("n=%d: window [%d, %d] holds %d records, Records says %d", n, w.Start, w.End, in, w.Records)
		}
		if want := max(n/100, 1); w.Records != want {
			t.Errorf("n=%d: window holds %d records, want %d", n, w.Records, want)
		}
		if before, after := w.Start-g.BaseMs, g.Timestamp(n-1)-w.End; before < 0 || after < 0 || before-after > 1 || after-before > 1 {
			t.Errorf("n=%d: window not centred: %d ms before, %d after", n, before, after)
		}
	}
	if w := CentredWindow(g, 200_000, 0.01); w.Records != 2000 || w.End-w.Start != 1999 {
		t.Errorf("1%% of 200000: %+v", w)
	}
}
