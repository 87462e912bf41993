package storage_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/kpipe/kpipe/internal/testkit"
	"github.com/kpipe/kpipe/plugins/fs/blob"
	"github.com/kpipe/kpipe/sdk/record"
	"github.com/kpipe/kpipe/sdk/storage"
)

// The fidelity records: null and empty keys and values, null and empty
// header values, repeated header keys, both timestamp types, timestamps out
// of order, offsets with holes.
var batch1 = []record.Record{
	{Offset: 10, Timestamp: 5000, Key: nil, Value: nil},
	{Offset: 11, Timestamp: 9000, TimestampType: record.LogAppendTime, Key: []byte{}, Value: []byte{},
		Headers: []record.Header{{Key: "a", Value: nil}, {Key: "a", Value: []byte{}}, {Key: "", Value: []byte("x")}}},
	{Offset: 12, Timestamp: 1000, Key: []byte("k"), Value: bytes.Repeat([]byte("compressible "), 200)},
}

var batch2 = []record.Record{
	{Offset: 15, Timestamp: 0, Key: []byte("k2"), Value: []byte("v2"), Headers: []record.Header{{Key: "z", Value: []byte("1")}}},
	{Offset: 17, Timestamp: 12000, Key: []byte("k3"), Value: nil},
}

// commitSegment writes the batches into one segment of backup "b" under
// root and returns the segment's file.
func commitSegment(t *testing.T, root string, codec record.Codec, batches ...[]record.Record) string {
	t.Helper()
	ctx := context.Background()
	w, err := storage.OpenWriter(ctx, blob.New(root), "b", storage.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx, storage.OutcomeComplete)
	pw, err := w.Partition(ctx, "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	seg := pw.NewSegment(ctx, codec)
	for _, recs := range batches {
		bld := record.NewBuilder(nil)
		for i := range recs {
			bld.Append(&recs[i])
		}
		bounds := bld.Bounds()
		rec := bld.NewRecord()
		err := seg.Write(rec, bounds, bounds.MaxOffset+1)
		rec.Release()
		bld.Release()
		if err != nil {
			t.Fatal(err)
		}
	}
	e, err := seg.Commit("")
	if err != nil {
		t.Fatal(err)
	}
	return testkit.SegmentFile(root, "b", "t", 0, e)
}

// readWithPyArrow is run by pyarrow's python: it reads each segment given
// with pyarrow.ipc.open_stream (Arrow C++ underneath) and prints every record
// as a JSON line, bytes as hex, nulls as null.
const readWithPyArrow = `
import json, sys
import pyarrow as pa, pyarrow.ipc as ipc

def hx(b):
    return None if b is None else b.hex()

for path in sys.argv[1:]:
    with pa.OSFile(path) as f:
        t = ipc.open_stream(f).read_all()
    assert t.schema.metadata[b"kpipe.schema_version"] == b"1", t.schema.metadata
    ts = t.column("timestamp").cast(pa.int64()).to_pylist()
    cols = {n: t.column(n).to_pylist() for n in ("offset", "timestamp_type", "key", "value", "headers")}
    for i in range(t.num_rows):
        print(json.dumps({
            "offset": cols["offset"][i], "timestamp": ts[i], "timestamp_type": cols["timestamp_type"][i],
            "key": hx(cols["key"][i]), "value": hx(cols["value"][i]),
            "headers": [[h["key"], hx(h["value"])] for h in cols["headers"][i]],
        }))
`

type pyRecord struct {
	Offset        int64       `json:"offset"`
	Timestamp     int64       `json:"timestamp"`
	TimestampType int8        `json:"timestamp_type"`
	Key           *string     `json:"key"`
	Value         *string     `json:"value"`
	Headers       [][]*string `json:"headers"`
}

func hexOrNil(b []byte) *string {
	if b == nil {
		return nil
	}
	s := hex.EncodeToString(b)
	return &s
}

func asPy(r record.Record) pyRecord {
	p := pyRecord{Offset: r.Offset, Timestamp: r.Timestamp, TimestampType: int8(r.TimestampType),
		Key: hexOrNil(r.Key), Value: hexOrNil(r.Value), Headers: [][]*string{}}
	for _, h := range r.Headers {
		k := h.Key
		p.Headers = append(p.Headers, []*string{&k, hexOrNil(h.Value)})
	}
	return p
}

// TestPyArrowReadsSegments writes segments with every codec, holding the
// fidelity records and a large batch with both compressible and
// incompressible buffers, and has pyarrow read them: every record must come
// out exactly as written. `make test` provides pyarrow (scripts/pyarrow.sh)
// through KPIPE_PYARROW_PYTHON.
func TestPyArrowReadsSegments(t *testing.T) {
	python := os.Getenv("KPIPE_PYARROW_PYTHON")
	if python == "" {
		t.Skip("KPIPE_PYARROW_PYTHON is not set; `make test` sets it (scripts/pyarrow.sh installs pyarrow)")
	}
	rng := rand.New(rand.NewPCG(5, 6))
	var big []record.Record
	for i := range 400 {
		v := bytes.Repeat(fmt.Appendf(nil, `{"n":%d}`, i%13), 40)
		if i%3 == 0 {
			v = make([]byte, 900)
			for j := range v {
				v[j] = byte(rng.Uint32())
			}
		}
		big = append(big, record.Record{Offset: int64(100 + i), Timestamp: int64(1_700_000_000_000 - i), TimestampType: record.TimestampType(i % 2),
			Key: fmt.Appendf(nil, "k%d", i), Value: v, Headers: []record.Header{{Key: "i", Value: fmt.Appendf(nil, "%d", i)}, {Key: "i", Value: nil}}})
	}
	batches := [][]record.Record{batch1, batch2, big}
	var want []pyRecord
	for _, b := range batches {
		for _, r := range b {
			want = append(want, asPy(r))
		}
	}
	script := filepath.Join(t.TempDir(), "read.py")
	if err := os.WriteFile(script, []byte(readWithPyArrow), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []record.Codec{record.Zstd, record.LZ4, record.None} {
		t.Run(string(c), func(t *testing.T) {
			cmd := exec.Command(python, script, commitSegment(t, t.TempDir(), c, batches...))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("pyarrow could not read the %s segment: %v\n%s", c, err, stderr.String())
			}
			dec := json.NewDecoder(bytes.NewReader(out))
			var got []pyRecord
			for dec.More() {
				var r pyRecord
				if err := dec.Decode(&r); err != nil {
					t.Fatalf("pyarrow output: %v", err)
				}
				got = append(got, r)
			}
			if len(got) != len(want) {
				t.Fatalf("pyarrow read %d records, want %d", len(got), len(want))
			}
			for i := range want {
				g, _ := json.Marshal(got[i])
				w, _ := json.Marshal(want[i])
				if !bytes.Equal(g, w) {
					t.Fatalf("record %d as pyarrow reads it:\n%s\nwant:\n%s", i, g, w)
				}
			}
		})
	}
}
