package celexpr

import (
	"strings"
	"testing"

	"github.com/kpipe/kpipe/internal/fuzzseed"
)

// FuzzCompile compiles a filter expression and evaluates it on records
// with every kind of field: none may panic, hang or run without bound.
func FuzzCompile(f *testing.F) {
	v := view(f)
	f.Fuzz(func(t *testing.T, expr string) {
		p, err := Compile(expr)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "invalid CEL expression") && !strings.HasPrefix(err.Error(), "CEL expression") {
				t.Fatalf("Compile(%q): %v, which does not say it is the expression", expr, err)
			}
			return
		}
		for i := range v.Len() {
			p.Match("orders", 3, v, i)
		}
	})
}

// TestACostlyExpressionIsStopped: comprehensions nested six deep over ten
// items would take a million steps per record; evaluation stops at the
// cost limit with an error that says so.
func TestACostlyExpressionIsStopped(t *testing.T) {
	ten := "[0,1,2,3,4,5,6,7,8,9]"
	expr := "true"
	for _, x := range []string{"a", "b", "c", "d", "e", "f"} {
		expr = ten + ".all(" + x + ", " + expr + ")"
	}
	p, err := Compile(expr)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Match("orders", 0, view(t), 0)
	if want := "CEL evaluation at offset 100: the expression costs more than 1000000 for one record; write a simpler one"; err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
}

// TestWriteFuzzSeeds writes the expressions of the tests.
func TestWriteFuzzSeeds(t *testing.T) {
	fuzzseed.Writing(t)
	for name, e := range map[string]string{
		"window":    "partition in [0, 1] && timestamp >= 1731236400000 && key != null",
		"headers":   `headers.exists(h, h.key == "a" && h.value == b"1")`,
		"value":     `value != null && string(value).contains("xy")`,
		"offsets":   "offset % 2 == 0 || timestamp_type == 1",
		"topic":     `topic.startsWith("ord") && size(headers) > 0`,
		"bad":       "valu == 1",
		"not-bool":  "offset + 1",
		"tombstone": "value == null",
	} {
		fuzzseed.Write(t, "FuzzCompile", name, e)
	}
}
