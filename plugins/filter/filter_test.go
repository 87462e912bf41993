package main

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
	"github.com/kpipe/kpipe/sdk/record"
)

func newFilter(t *testing.T, params map[string]any) (*Filter, error) {
	t.Helper()
	f := New().(*Filter)
	js, _ := json.Marshal(params)
	if err := param.Decode(f.Spec().Config, js); err != nil {
		return nil, err
	}
	return f, f.Configure(context.Background())
}

const base = int64(1_731_236_400_000)

// batch holds offsets 0..9 with timestamps base+offset*10; odd offsets have
// a null key.
func batch(t *testing.T, partition int32) sdk.Batch {
	b := record.NewBuilder(nil)
	defer b.Release()
	for i := int64(0); i < 10; i++ {
		r := record.Record{Offset: i, Timestamp: base + i*10, Key: []byte("k"), Value: []byte("v")}
		if i%2 == 1 {
			r.Key = nil
		}
		b.Append(&r)
	}
	out, err := sdk.NewBatch("t", partition, b, -1)
	if err != nil {
		t.Fatal(err)
	}
	// A frame as a backup stores it: zstd.
	out.Arrow, err = record.NewEncoder(record.Zstd).Encode(out.Record, nil)
	out.Record.Release()
	out.Record = nil
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func offsets(t *testing.T, bs []sdk.Batch) []int64 {
	var out []int64
	for _, b := range bs {
		rec := b.Record
		if rec == nil {
			var err error
			if rec, err = record.Decode(b.Arrow); err != nil {
				t.Fatal(err)
			}
		}
		v, err := record.NewView(rec)
		if err != nil {
			t.Fatal(err)
		}
		if int64(v.Len()) != b.Count || v.Bounds() != b.Bounds() {
			t.Fatalf("output envelope %+v, its records have bounds %+v", b.Envelope, v.Bounds())
		}
		for i := range v.Len() {
			out = append(out, v.Offset(i))
		}
		rec.Release()
	}
	return out
}

func TestFilterKeepsExactlyTheMatchingRecords(t *testing.T) {
	cases := []struct {
		name   string
		params map[string]any
		want   []int64
	}{
		{"window inclusive", map[string]any{"time_window_start": base + 20, "time_window_end": base + 50}, []int64{2, 3, 4, 5}},
		{"open end", map[string]any{"time_window_start": base + 80}, []int64{8, 9}},
		{"expression", map[string]any{"expression": "key == null"}, []int64{1, 3, 5, 7, 9}},
		{"expression and window", map[string]any{"expression": "key != null", "time_window_end": base + 40}, []int64{0, 2, 4}},
		{"other partition", map[string]any{"partitions": []int{1}}, nil},
		{"window before the batch", map[string]any{"time_window_end": base - 1}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := newFilter(t, c.params)
			if err != nil {
				t.Fatal(err)
			}
			out, err := f.Process(context.Background(), batch(t, 0))
			if err != nil {
				t.Fatal(err)
			}
			got := offsets(t, out)
			if len(got) != len(c.want) {
				t.Fatalf("kept %v, want %v", got, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Fatalf("kept %v, want %v", got, c.want)
				}
			}
			if m := f.Metrics(); m["records_kept"] != int64(len(c.want)) || m["records_dropped"] != 10-int64(len(c.want)) {
				t.Fatalf("metrics %v", m)
			}
		})
	}
}

func TestFilterPassesAWholeBatchWithoutReencoding(t *testing.T) {
	f, err := newFilter(t, map[string]any{"time_window_start": base, "time_window_end": base + 90, "partitions": []int{0}})
	if err != nil {
		t.Fatal(err)
	}
	in := batch(t, 0)
	out, err := f.Process(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || &out[0].Arrow[0] != &in.Arrow[0] {
		t.Fatal("a batch wholly inside the window was copied or re-encoded")
	}
}

func TestFilterRejectsBadParameters(t *testing.T) {
	_, err := newFilter(t, map[string]any{"expression": "offset + 1", "time_window_start": 1731236400, "time_window_end": base})
	want := `parameter "time_window_start": 1731236400 looks like epoch seconds, not milliseconds: read as milliseconds it is 1970-01-21T00:53:56.4Z, as seconds 2024-11-10T11:00:00Z; use 13-digit epoch milliseconds: 1731236400000; ` +
		`parameter "expression": CEL expression must be true or false for a record, but it gives int`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	_, err = newFilter(t, map[string]any{"time_window_start": base + 10, "time_window_end": base})
	if err == nil || err.Error() != `parameter "time_window_end": 1731236400000 is before time_window_start 1731236400010` {
		t.Fatalf("got %v", err)
	}
}
