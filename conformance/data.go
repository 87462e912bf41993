package conformance

import (
	"bytes"
	"fmt"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/record"
)

// BaseTimestamp is the first timestamp of the fixture records (epoch ms).
// Stores that expire old data by timestamp (Kafka's retention) must keep it
// for the length of a test: callers may shift it with Fixture.
var BaseTimestamp int64 = 1_731_236_400_000

// Fixture returns records for each partition, offsets 0..n-1, that exercise
// every fidelity rule: null and empty keys, tombstones and empty values,
// null and empty header values, repeated and empty header keys, header
// order, and timestamps out of order.
func Fixture(partitions, perPartition int, base int64) map[int32][]record.Record {
	out := map[int32][]record.Record{}
	for p := range int32(partitions) {
		recs := make([]record.Record, perPartition)
		for i := range recs {
			r := record.Record{
				Offset:    int64(i),
				Timestamp: base + int64(p)*3 + int64(i)*1000,
				Key:       []byte(fmt.Sprintf("key-%d-%d", p, i)),
				Value:     bytes.Repeat([]byte{byte('a' + i%26)}, 1+i%300),
				Headers:   []record.Header{{Key: "i", Value: []byte(fmt.Sprint(i))}},
			}
			switch i % 9 {
			case 1:
				r.Key = nil
			case 2:
				r.Key = []byte{}
			case 3:
				r.Value = nil
			case 4:
				r.Value = []byte{}
			case 5:
				r.Headers = []record.Header{{Key: "dup", Value: []byte("1")}, {Key: "null", Value: nil}, {Key: "dup", Value: []byte("2")}, {Key: "empty", Value: []byte{}}, {Key: "", Value: []byte("x")}}
			case 6:
				r.Headers = nil
			case 7:
				r.Timestamp -= 7_500 // older than the records before it
			case 8:
				r.Key, r.Value = nil, nil
			}
			recs[i] = r
		}
		out[p] = recs
	}
	return out
}

// Batches cuts the fixture into batches of at most size records, each an
// uncompressed frame.
func Batches(topic string, fixture map[int32][]record.Record, size int) ([]sdk.Batch, error) {
	var out []sdk.Batch
	b := record.NewBuilder(nil)
	defer b.Release()
	for p := int32(0); p < int32(len(fixture)); p++ {
		recs := fixture[p]
		for i := 0; i < len(recs); i += size {
			for j := i; j < min(i+size, len(recs)); j++ {
				b.Append(&recs[j])
			}
			batch, err := sdk.NewBatch(topic, p, b, -1)
			if err != nil {
				return nil, err
			}
			batch.Arrow, err = record.Encode(batch.Record)
			batch.Record.Release()
			batch.Record = nil
			if err != nil {
				return nil, err
			}
			out = append(out, batch)
		}
	}
	return out, nil
}

// Diff describes the first difference between two records, or "".
func Diff(want, got record.Record) string {
	switch {
	case want.Offset != got.Offset:
		return fmt.Sprintf("offset %d, want %d", got.Offset, want.Offset)
	case want.Timestamp != got.Timestamp:
		return fmt.Sprintf("timestamp %d, want %d", got.Timestamp, want.Timestamp)
	case want.TimestampType != got.TimestampType:
		return fmt.Sprintf("timestamp type %d, want %d", got.TimestampType, want.TimestampType)
	case (want.Key == nil) != (got.Key == nil) || !bytes.Equal(want.Key, got.Key):
		return fmt.Sprintf("key %q (null %v), want %q (null %v)", got.Key, got.Key == nil, want.Key, want.Key == nil)
	case (want.Value == nil) != (got.Value == nil) || !bytes.Equal(want.Value, got.Value):
		return fmt.Sprintf("value %q (null %v), want %q (null %v)", trunc(got.Value), got.Value == nil, trunc(want.Value), want.Value == nil)
	case len(want.Headers) != len(got.Headers):
		return fmt.Sprintf("%d headers, want %d", len(got.Headers), len(want.Headers))
	}
	for i, w := range want.Headers {
		g := got.Headers[i]
		if w.Key != g.Key || (w.Value == nil) != (g.Value == nil) || !bytes.Equal(w.Value, g.Value) {
			return fmt.Sprintf("header %d %q=%q (null %v), want %q=%q (null %v)", i, g.Key, g.Value, g.Value == nil, w.Key, w.Value, w.Value == nil)
		}
	}
	return ""
}

func trunc(b []byte) []byte {
	if len(b) > 20 {
		return b[:20]
	}
	return b
}

// Collect decodes batches into records per partition, copying them out of
// the batches' memory, and checks each envelope against its records.
func Collect(batches []sdk.Batch) (map[int32][]record.Record, error) {
	out := map[int32][]record.Record{}
	for _, b := range batches {
		if b.Count == 0 {
			continue
		}
		v, err := record.DecodeView(b.Arrow)
		if err != nil {
			return nil, err
		}
		if int64(v.Len()) != b.Count {
			v.Batch.Release()
			return nil, fmt.Errorf("batch %s/%d: envelope count %d, %d records", b.Topic, b.Partition, b.Count, v.Len())
		}
		for i := range v.Len() {
			r := v.Record(i)
			if r.Offset < b.MinOffset || r.Offset > b.MaxOffset || r.Timestamp < b.MinTimestamp || r.Timestamp > b.MaxTimestamp {
				v.Batch.Release()
				return nil, fmt.Errorf("batch %s/%d: record at offset %d (timestamp %d) outside the envelope's bounds %+v", b.Topic, b.Partition, r.Offset, r.Timestamp, b.Envelope)
			}
			out[b.Partition] = append(out[b.Partition], clone(r))
		}
		v.Batch.Release()
	}
	return out, nil
}

func clone(r record.Record) record.Record {
	c := r
	c.Key = cloneBytes(r.Key)
	c.Value = cloneBytes(r.Value)
	if r.Headers != nil {
		c.Headers = make([]record.Header, len(r.Headers))
		for i, h := range r.Headers {
			c.Headers[i] = record.Header{Key: h.Key, Value: cloneBytes(h.Value)}
		}
	}
	return c
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}
