package param

import (
	"strconv"
	"testing"
	"time"

	"github.com/kpipe/kpipe/internal/fuzzseed"
)

// FuzzDecode decodes the JSON parameters a plugin receives from the host
// into a config of every kind of field.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, params []byte) {
		var cfg allTypes
		if err := Decode(&cfg, params); err != nil && err.Error() == "" {
			t.Fatal("an error without a message")
		}
	})
}

// FuzzParseTimeBound reads a time window bound, epoch milliseconds or
// ISO-8601: what it takes reads back the same.
func FuzzParseTimeBound(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		ms, err := ParseTimeBound(s)
		if err != nil || ms < 0 {
			return
		}
		if again, err := ParseTimeBound(strconv.FormatInt(ms, 10)); err != nil || again != ms {
			t.Fatalf("%q is %d, which reads back as %d, %v", s, ms, again, err)
		}
		iso := time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
		if again, err := ParseTimeBound(iso); err == nil && again != ms {
			t.Fatalf("%q is %d, whose ISO-8601 form %s reads back as %d", s, ms, iso, again)
		}
	})
}

// TestWriteFuzzSeeds writes parameters as the host sends them and the
// time bounds of the tests.
func TestWriteFuzzSeeds(t *testing.T) {
	fuzzseed.Writing(t)
	fuzzseed.Write(t, "FuzzDecode", "every-kind", []byte(`{"name":"n","enabled":false,"count":3,"partition":2,"start":1731236400000,"timeout":"1m30s",`+
		`"topics":["x","y"],"partitions":[0,1],"ints":[1],"int64s":[9007199254740993],"labels":{"a":"b"},"partition_map":{"x":2}}`))
	fuzzseed.Write(t, "FuzzDecode", "nulls", []byte(`{"name":"n","timeout":null,"topics":null}`))
	for name, s := range map[string]string{"epoch": "1731236400000", "utc": "2024-11-10T10:00:00Z", "offset-millis": "2024-11-10T12:00:00.250+02:00",
		"open": "-1", "no-zone": "2024-11-10T10:00:00"} {
		fuzzseed.Write(t, "FuzzParseTimeBound", name, s)
	}
}
