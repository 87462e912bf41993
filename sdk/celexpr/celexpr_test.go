package celexpr

import (
	"strings"
	"testing"

	"github.com/kpipe/kpipe/sdk/record"
)

// view builds a View of four records:
//
//	0: offset 100, ts 1000, key "k", value "xyz", headers [a=1, n=null]
//	1: offset 101, ts 2000 LogAppendTime, key null, value null (tombstone)
//	2: offset 102, ts 3000, key "" (empty), value "" (empty), headers [b=""]
//	3: offset 103, ts 500, key "other", value "abc", headers [a=1, a=2, n=""]
func view(t testing.TB) *record.View {
	t.Helper()
	b := record.NewBuilder(nil)
	defer b.Release()
	recs := []record.Record{
		{Offset: 100, Timestamp: 1000, Key: []byte("k"), Value: []byte("xyz"),
			Headers: []record.Header{{Key: "a", Value: []byte("1")}, {Key: "n", Value: nil}}},
		{Offset: 101, Timestamp: 2000, TimestampType: record.LogAppendTime, Key: nil, Value: nil},
		{Offset: 102, Timestamp: 3000, Key: []byte{}, Value: []byte{},
			Headers: []record.Header{{Key: "b", Value: []byte{}}}},
		{Offset: 103, Timestamp: 500, Key: []byte("other"), Value: []byte("abc"),
			Headers: []record.Header{{Key: "a", Value: []byte("1")}, {Key: "a", Value: []byte("2")}, {Key: "n", Value: []byte{}}}},
	}
	for i := range recs {
		b.Append(&recs[i])
	}
	rec := b.NewRecord()
	data, err := record.Encode(rec)
	rec.Release()
	if err != nil {
		t.Fatal(err)
	}
	v, err := record.DecodeView(data)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Batch.Release)
	return v
}

func TestMatch(t *testing.T) {
	v := view(t)
	cases := []struct {
		expr      string
		topic     string
		partition int32
		want      [4]bool // per record
	}{
		{`partition == 1`, "orders", 1, [4]bool{true, true, true, true}},
		{`partition == 1`, "orders", 0, [4]bool{false, false, false, false}},
		{`partition in [0, 1]`, "orders", 1, [4]bool{true, true, true, true}},
		{`offset >= 102`, "orders", 0, [4]bool{false, false, true, true}},
		{`timestamp >= 1000`, "orders", 0, [4]bool{true, true, true, false}},
		{`timestamp >= 1000 && timestamp <= 2000`, "orders", 0, [4]bool{true, true, false, false}},
		{`timestamp_type == 1`, "orders", 0, [4]bool{false, true, false, false}},
		{`key == null`, "orders", 0, [4]bool{false, true, false, false}},
		{`key != null`, "orders", 0, [4]bool{true, false, true, true}},
		{`key == b"k"`, "orders", 0, [4]bool{true, false, false, false}},
		{`key == b""`, "orders", 0, [4]bool{false, false, true, false}},
		{`value == null`, "orders", 0, [4]bool{false, true, false, false}},
		{`value == b""`, "orders", 0, [4]bool{false, false, true, false}},
		{`size(headers) == 0`, "orders", 0, [4]bool{false, true, false, false}},
		{`size(headers) == 2 && headers[0].key == "a"`, "orders", 0, [4]bool{true, false, false, false}},
		{`headers.exists(h, h.key == "n" && h.value == null)`, "orders", 0, [4]bool{true, false, false, false}},
		{`headers.exists(h, h.key == "n" && h.value == b"")`, "orders", 0, [4]bool{false, false, false, true}},
		{`headers.filter(h, h.key == "a").size() == 2`, "orders", 0, [4]bool{false, false, false, true}},
		{`size(headers) == 3 && headers[1].value == b"2"`, "orders", 0, [4]bool{false, false, false, true}},
		{`topic.startsWith("ord")`, "orders", 0, [4]bool{true, true, true, true}},
		{`topic.startsWith("ord")`, "payments", 0, [4]bool{false, false, false, false}},
		{`topic == "payments"`, "payments", 0, [4]bool{true, true, true, true}},
		{`value != null && string(value).contains("x")`, "orders", 0, [4]bool{true, false, false, false}},
		{`key != null && size(key) == 0`, "orders", 0, [4]bool{false, false, true, false}},
		{`true`, "orders", 0, [4]bool{true, true, true, true}},
	}
	for _, c := range cases {
		p, err := Compile(c.expr)
		if err != nil {
			t.Errorf("Compile(%q): %v", c.expr, err)
			continue
		}
		for i := range 4 {
			got, err := p.Match(c.topic, c.partition, v, i)
			if err != nil {
				t.Errorf("%q on record %d (%s/%d): %v", c.expr, i, c.topic, c.partition, err)
				continue
			}
			if got != c.want[i] {
				t.Errorf("%q on record %d (%s/%d) = %v, want %v", c.expr, i, c.topic, c.partition, got, c.want[i])
			}
		}
	}
}

// TestStringOfNullValueFails: string(value) of a tombstone is an evaluation
// error (null is not bytes), reported with the record's offset.
func TestStringOfNullValueFails(t *testing.T) {
	v := view(t)
	p, err := Compile(`string(value).contains("x")`)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	if got, err := p.Match("orders", 0, v, 0); err != nil || !got {
		t.Errorf("record 0: %v, %v; want true", got, err)
	}
	_, err = p.Match("orders", 0, v, 1)
	if err == nil || !strings.HasPrefix(err.Error(), "CEL evaluation at offset 101: ") {
		t.Errorf("record 1 (tombstone): %v, want an evaluation error at offset 101", err)
	}
}

func TestDynNonBooleanResultFails(t *testing.T) {
	v := view(t)
	// key is dyn, so this type-checks, but gives bytes at run time.
	p, err := Compile(`key`)
	if err != nil {
		t.Fatalf("Compile(key): %v", err)
	}
	_, err = p.Match("orders", 0, v, 0)
	if want := "CEL expression gave [107] (bytes) at offset 100, want true or false"; err == nil || err.Error() != want {
		t.Errorf("Match(key) = %v, want %q", err, want)
	}
}

func TestCompileErrors(t *testing.T) {
	_, err := Compile(`offset + 1`)
	if want := "CEL expression must be true or false for a record, but it gives int"; err == nil || err.Error() != want {
		t.Errorf("Compile(offset + 1) = %v, want %q", err, want)
	}
	_, err = Compile(`topic + "x"`)
	if want := "CEL expression must be true or false for a record, but it gives string"; err == nil || err.Error() != want {
		t.Errorf("Compile(topic + \"x\") = %v, want %q", err, want)
	}

	// Each error names its line and column, counted from 1.
	for _, c := range []struct{ expr, want string }{
		{"partition ==", "invalid CEL expression at line 1, column 13: Syntax error: mismatched input '<EOF>' expecting "},
		{"partiton == 1", "invalid CEL expression at line 1, column 1: undeclared reference to 'partiton' (did you mean 'partition'?)"},
		{"key == null &&\n  valu == null", "invalid CEL expression at line 2, column 3: undeclared reference to 'valu' (did you mean 'value'?)"},
		{"topic == 1", "invalid CEL expression at line 1, column 7: found no matching overload for '_==_' applied to '(string, int)'"},
		{"a b", "invalid CEL expression at line 1, column 3: Syntax error: extraneous input 'b' expecting <EOF>"},
		{" ", "CEL expression is empty; write one that is true for the records to keep, such as key != null"},
	} {
		_, err = Compile(c.expr)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("Compile(%q) = %v, want %q", c.expr, err, c.want)
		}
	}
}

func TestProgramReuse(t *testing.T) {
	// A Program is reused row after row and across views.
	v1 := view(t)
	v2 := view(t)
	p, err := Compile(`offset == 101`)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []*record.View{v1, v2, v1} {
		var got []bool
		for i := range v.Len() {
			m, err := p.Match("t", 0, v, i)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, m)
		}
		if len(got) != 4 || got[0] || !got[1] || got[2] || got[3] {
			t.Errorf("offset == 101 over the view = %v, want [false true false false]", got)
		}
	}
}
