package param

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

type allTypes struct {
	Name      string            `param:"name" required:"true" help:"the name"`
	Enabled   bool              `param:"enabled" default:"true" help:"on or off"`
	Count     int               `param:"count" default:"7" help:"how many"`
	Partition int32             `param:"partition" default:"-1" help:"one partition"`
	Start     int64             `param:"start" default:"1731236400000" help:"epoch ms"`
	Timeout   time.Duration     `param:"timeout" default:"10s" help:"how long"`
	Topics    []string          `param:"topics" default:"[\"a\",\"b\"]" help:"topic names"`
	Parts     []int32           `param:"partitions" help:"partition list"`
	Ints      []int             `param:"ints" help:"ints"`
	Int64s    []int64           `param:"int64s" help:"int64s"`
	Labels    map[string]string `param:"labels" help:"labels"`
	Map       map[string]int32  `param:"partition_map" default:"{\"x\":1}" help:"renumbering"`
	Ignored   string            `param:"-"`
	Untagged  string
	unexp     int //nolint:unused
}

var allParams = []Param{
	{Name: "name", Type: "string", Required: true, Default: "", Description: "the name"},
	{Name: "enabled", Type: "bool", Default: "true", Description: "on or off"},
	{Name: "count", Type: "int", Default: "7", Description: "how many"},
	{Name: "partition", Type: "int", Default: "-1", Description: "one partition"},
	{Name: "start", Type: "int", Default: "1731236400000", Description: "epoch ms"},
	{Name: "timeout", Type: "duration", Default: "10s", Description: "how long"},
	{Name: "topics", Type: "list(string)", Default: `["a","b"]`, Description: "topic names"},
	{Name: "partitions", Type: "list(int)", Description: "partition list"},
	{Name: "ints", Type: "list(int)", Description: "ints"},
	{Name: "int64s", Type: "list(int)", Description: "int64s"},
	{Name: "labels", Type: "map(string)", Description: "labels"},
	{Name: "partition_map", Type: "map(int)", Default: `{"x":1}`, Description: "renumbering"},
}

const knownList = "name, enabled, count, partition, start, timeout, topics, partitions, ints, int64s, labels, partition_map"

func TestDescribe(t *testing.T) {
	got, err := Describe(&allTypes{})
	if err != nil {
		t.Fatalf("Describe: %v", err)
	}
	if !reflect.DeepEqual(got, allParams) {
		t.Errorf("Describe mismatch:\n got %+v\nwant %+v", got, allParams)
	}
}

func TestDescribeRejects(t *testing.T) {
	if _, err := Describe(allTypes{}); err == nil || err.Error() != "param: config must be a pointer to a struct, got param.allTypes" {
		t.Errorf("Describe(non-pointer) error = %v", err)
	}
	n := 3
	if _, err := Describe(&n); err == nil || err.Error() != "param: config must be a pointer to a struct, got *int" {
		t.Errorf("Describe(*int) error = %v", err)
	}
	type bad struct {
		F float64 `param:"f"`
	}
	if _, err := Describe(&bad{}); err == nil || err.Error() != "param: field F has unsupported type float64" {
		t.Errorf("Describe(float field) error = %v", err)
	}
	type badMap struct {
		M map[string]int64 `param:"m"`
	}
	if _, err := Describe(&badMap{}); err == nil || err.Error() != "param: field M has unsupported type map[string]int64" {
		t.Errorf("Describe(map[string]int64) error = %v", err)
	}
}

func TestDecodeDefaults(t *testing.T) {
	var c allTypes
	if err := Decode(&c, []byte(`{"name":"n"}`)); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := allTypes{
		Name: "n", Enabled: true, Count: 7, Partition: -1, Start: 1731236400000,
		Timeout: 10 * time.Second, Topics: []string{"a", "b"},
		Map: map[string]int32{"x": 1},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Decode with defaults:\n got %+v\nwant %+v", c, want)
	}
}

func TestDecodeOverrides(t *testing.T) {
	var c allTypes
	js := `{
		"name": "n", "enabled": false, "count": 0, "partition": 3, "start": -1,
		"timeout": "1m30s", "topics": [], "partitions": [0, 2], "ints": [1],
		"int64s": [9007199254740993], "labels": {"k": "v"}, "partition_map": {"y": 2}
	}`
	if err := Decode(&c, []byte(js)); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := allTypes{
		Name: "n", Enabled: false, Count: 0, Partition: 3, Start: -1,
		Timeout: 90 * time.Second, Topics: []string{}, Parts: []int32{0, 2}, Ints: []int{1},
		Int64s: []int64{9007199254740993}, Labels: map[string]string{"k": "v"},
		Map: map[string]int32{"y": 2},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Decode with values:\n got %+v\nwant %+v", c, want)
	}
}

func TestDecodeNullMeansDefault(t *testing.T) {
	var c allTypes
	if err := Decode(&c, []byte(`{"name":"n","count":null}`)); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if c.Count != 7 {
		t.Errorf("count = %d after null, want the default 7", c.Count)
	}
}

func TestDecodeDuration(t *testing.T) {
	type d struct {
		T time.Duration `param:"t"`
	}
	var c d
	if err := Decode(&c, []byte(`{"t":"10s"}`)); err != nil || c.T != 10*time.Second {
		t.Errorf("Decode 10s: %v, %v", c.T, err)
	}
	if err := Decode(&c, []byte(`{"t":"500ms"}`)); err != nil || c.T != 500*time.Millisecond {
		t.Errorf("Decode 500ms: %v, %v", c.T, err)
	}
	err := Decode(&c, []byte(`{"t":10}`))
	if want := `parameter "t": want duration: a duration such as "10s" or "500ms"`; err == nil || err.Error() != want {
		t.Errorf("Decode number as duration: error = %v, want %q", err, want)
	}
	err = Decode(&c, []byte(`{"t":"10 parsecs"}`))
	if want := `parameter "t": want duration: time: unknown unit " parsecs" in duration "10 parsecs"`; err == nil || err.Error() != want {
		t.Errorf("Decode bad duration: error = %v, want %q", err, want)
	}
}

func TestDecodeUnknownParameter(t *testing.T) {
	var c allTypes
	err := Decode(&c, []byte(`{"name":"n","zeta":1,"alpha":2}`))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error %v (%T) is not Errors", err, err)
	}
	want := Errors{
		{Param: "alpha", Message: "unknown parameter; known parameters: " + knownList},
		{Param: "zeta", Message: "unknown parameter; known parameters: " + knownList},
	}
	if !reflect.DeepEqual(es, want) {
		t.Errorf("errors:\n got %v\nwant %v", es, want)
	}
	wantText := `parameter "alpha": unknown parameter; known parameters: ` + knownList +
		`; parameter "zeta": unknown parameter; known parameters: ` + knownList
	if err.Error() != wantText {
		t.Errorf("error text:\n got %q\nwant %q", err.Error(), wantText)
	}
}

func TestDecodeMissingRequired(t *testing.T) {
	var c allTypes
	for _, js := range []string{``, `{}`, `{"name":null}`} {
		err := Decode(&c, []byte(js))
		if want := `parameter "name": missing required parameter (string): the name`; err == nil || err.Error() != want {
			t.Errorf("Decode(%q): error = %v, want %q", js, err, want)
		}
	}
}

func TestDecodeWrongType(t *testing.T) {
	var c allTypes
	cases := []struct{ js, want string }{
		{`{"name":"n","count":"5"}`, `parameter "count": want int: got a string`},
		{`{"name":"n","count":1.5}`, `parameter "count": want int: got a number 1.5`},
		{`{"name":"n","partition":4294967296}`, `parameter "partition": want int: got a number 4294967296`},
		{`{"name":"n","enabled":"yes"}`, `parameter "enabled": want bool: got a string`},
		{`{"name":5}`, `parameter "name": want string: got a number`},
		{`{"name":"n","topics":"a"}`, `parameter "topics": want list(string): got a string`},
		{`{"name":"n","partitions":["0"]}`, `parameter "partitions": want list(int): got a string`},
		{`{"name":"n","labels":{"k":1}}`, `parameter "labels": want map(string): got a number`},
	}
	for _, tc := range cases {
		err := Decode(&c, []byte(tc.js))
		if err == nil {
			t.Errorf("Decode(%s) gave no error", tc.js)
			continue
		}
		if err.Error() != tc.want {
			t.Errorf("Decode(%s):\n got %q\nwant %q", tc.js, err.Error(), tc.want)
		}
	}
	// string for int: the message names the wanted type.
	err := Decode(&c, []byte(`{"name":"n","count":"5"}`))
	if err == nil || !strings.Contains(err.Error(), "want int") {
		t.Errorf("string for int: error = %v, want it to contain %q", err, "want int")
	}
}

func TestDecodeReportsEveryError(t *testing.T) {
	var c allTypes
	err := Decode(&c, []byte(`{"bogus":1,"count":"x"}`))
	es := AsErrors(err)
	var names []string
	for _, e := range es {
		names = append(names, e.Param)
	}
	if got := strings.Join(names, ","); got != "bogus,name,count" {
		t.Errorf("parameters with errors = %q, want %q (unknown first, then fields in order)", got, "bogus,name,count")
	}
}

func TestDecodeBadJSON(t *testing.T) {
	var c allTypes
	for _, js := range []string{`[1,2]`, `{"name":`, `"name"`} {
		err := Decode(&c, []byte(js))
		var es Errors
		if !errors.As(err, &es) || len(es) != 1 {
			t.Errorf("Decode(%q): error = %v (%T), want one Errors entry", js, err, err)
			continue
		}
		if es[0].Param != "" || !strings.HasPrefix(es[0].Message, "parameters are not a JSON object: ") {
			t.Errorf("Decode(%q): %+v, want a configuration-wide error starting %q", js, es[0], "parameters are not a JSON object: ")
		}
	}
	err := Decode(&c, []byte(`[1,2]`))
	if want := "parameters are not a JSON object: json: cannot unmarshal array into Go value of type map[string]json.RawMessage"; err == nil || err.Error() != want {
		t.Errorf("Decode([1,2]) error = %v, want %q", err, want)
	}
}

func TestDecodeBadDefault(t *testing.T) {
	type bad struct {
		N int `param:"n" default:"seven"`
	}
	var c bad
	err := Decode(&c, nil)
	if want := `param: bad default for "n": strconv.ParseInt: parsing "seven": invalid syntax`; err == nil || err.Error() != want {
		t.Errorf("Decode with bad default: error = %v, want %q", err, want)
	}
}

func TestAsErrors(t *testing.T) {
	if AsErrors(nil) != nil {
		t.Errorf("AsErrors(nil) = %v, want nil", AsErrors(nil))
	}
	es := Errors{Errorf("a", "bad %d", 1), Errorf("b", "worse")}
	if got := AsErrors(es); !reflect.DeepEqual(got, es) {
		t.Errorf("AsErrors(Errors) = %v, want %v", got, es)
	}
	wrapped := fmt.Errorf("configure: %w", es)
	if got := AsErrors(wrapped); !reflect.DeepEqual(got, es) {
		t.Errorf("AsErrors(wrapped Errors) = %v, want %v", got, es)
	}
	one := Errorf("topics", "no topic matches %q", "x*")
	if got := AsErrors(one); len(got) != 1 || got[0] != one {
		t.Errorf("AsErrors(*Error) = %v, want [%v]", got, one)
	}
	if got := AsErrors(fmt.Errorf("wrap: %w", one)); len(got) != 1 || got[0] != one {
		t.Errorf("AsErrors(wrapped *Error) = %v, want [%v]", got, one)
	}
	got := AsErrors(errors.New("plain failure"))
	if len(got) != 1 || got[0].Param != "" || got[0].Message != "plain failure" {
		t.Errorf("AsErrors(plain) = %#v, want one Error{Message: plain failure}", got)
	}
	if got[0].Error() != "plain failure" {
		t.Errorf("configuration-wide Error() = %q, want %q", got[0].Error(), "plain failure")
	}
	if one.Error() != `parameter "topics": no topic matches "x*"` {
		t.Errorf("Error() = %q", one.Error())
	}
	if es.Error() != `parameter "a": bad 1; parameter "b": worse` {
		t.Errorf("Errors.Error() = %q", es.Error())
	}
}

func TestCheckEpochMillis(t *testing.T) {
	cases := []struct {
		v    int64
		want string // "" for no error
	}{
		{-1, ""},
		{0, ""},
		{1731236400000, ""},
		{100_000_000_000, ""},
		{1731236400, `parameter "start": 1731236400 looks like epoch seconds, not milliseconds: read as milliseconds it is 1970-01-21T00:53:56.4Z, as seconds 2024-11-10T11:00:00Z; use 13-digit epoch milliseconds: 1731236400000`},
		{1, `parameter "start": 1 looks like epoch seconds, not milliseconds: read as milliseconds it is 1970-01-01T00:00:00.001Z, as seconds 1970-01-01T00:00:01Z; use 13-digit epoch milliseconds: 1000`},
		{99_999_999_999, `parameter "start": 99999999999 looks like epoch seconds, not milliseconds: read as milliseconds it is 1973-03-03T09:46:39.999Z, as seconds 5138-11-16T09:46:39Z; use 13-digit epoch milliseconds: 99999999999000`},
		{999_999_999_999_999, ""},
		{1731236400123456, `parameter "start": 1731236400123456 looks like epoch microseconds, not milliseconds: read as milliseconds it is the year 56830, as microseconds 2024-11-10T11:00:00.123Z; use 13-digit epoch milliseconds: 1731236400123`},
		{1731236400123456789, `parameter "start": 1731236400123456789 looks like epoch nanoseconds, not milliseconds: read as milliseconds it is the year 54862667, as nanoseconds 2024-11-10T11:00:00.123Z; use 13-digit epoch milliseconds: 1731236400123`},
		{-5, `parameter "start": -5 is negative; use epoch milliseconds, or leave it out for no bound`},
		{-2, `parameter "start": -2 is negative; use epoch milliseconds, or leave it out for no bound`},
	}
	for _, tc := range cases {
		e := CheckEpochMillis("start", tc.v)
		switch {
		case tc.want == "" && e != nil:
			t.Errorf("CheckEpochMillis(%d) = %q, want no error", tc.v, e)
		case tc.want != "" && e == nil:
			t.Errorf("CheckEpochMillis(%d) = nil, want %q", tc.v, tc.want)
		case tc.want != "" && e.Error() != tc.want:
			t.Errorf("CheckEpochMillis(%d):\n got %q\nwant %q", tc.v, e.Error(), tc.want)
		case tc.want != "" && e.Param != "start":
			t.Errorf("CheckEpochMillis(%d).Param = %q, want start", tc.v, e.Param)
		}
	}
}

func TestCheckTimeWindow(t *testing.T) {
	for _, c := range []struct {
		start, end int64
		want       string
	}{
		{-1, -1, ""},
		{1731236400000, 1731236400000, ""},
		{1731236400001, 1731236400000, `parameter "time_window_end": 1731236400000 is before time_window_start 1731236400001`},
		{1731236400, 1731236400000, `parameter "time_window_start": 1731236400 looks like epoch seconds, not milliseconds: read as milliseconds it is 1970-01-21T00:53:56.4Z, as seconds 2024-11-10T11:00:00Z; use 13-digit epoch milliseconds: 1731236400000`},
	} {
		got := ""
		if errs := CheckTimeWindow(c.start, c.end); len(errs) > 0 {
			got = errs.Error()
		}
		if got != c.want {
			t.Errorf("CheckTimeWindow(%d, %d) = %q, want %q", c.start, c.end, got, c.want)
		}
	}
}

type storeParams struct {
	Path string `param:"path" required:"true" help:"folder"`
}

type sdkParams struct {
	BackupID string `param:"backup_id" required:"true" help:"backup"`
	Level    int    `param:"level" default:"3" help:"level"`
}

// TestMultiTakesTheParametersOfEveryStruct: a Multi describes and decodes
// the parameters of all its structs as one list.
func TestMultiTakesTheParametersOfEveryStruct(t *testing.T) {
	var a storeParams
	var b sdkParams
	ps, err := Describe(Multi{&a, &b})
	if err != nil || len(ps) != 3 || ps[0].Name != "path" || ps[1].Name != "backup_id" || ps[2].Name != "level" {
		t.Fatalf("Describe: %+v, %v", ps, err)
	}
	if err := Decode(Multi{&a, &b}, []byte(`{"path":"/b","backup_id":"x"}`)); err != nil || a.Path != "/b" || b.BackupID != "x" || b.Level != 3 {
		t.Fatalf("Decode: %v; got %+v %+v", err, a, b)
	}
	err = Decode(Multi{&a, &b}, []byte(`{"backup_id":"x","pth":"/b"}`))
	want := `parameter "pth": unknown parameter; known parameters: path, backup_id, level; parameter "path": missing required parameter (string): folder`
	if err == nil || err.Error() != want {
		t.Fatalf("Decode with a typo: %v, want %s", err, want)
	}
	if _, err := Describe(Multi{&a, &storeParams{}}); err == nil || err.Error() != `param: parameter "path" is declared twice` {
		t.Fatalf("a name twice: %v", err)
	}
}
