package spans

import "testing"

// FuzzDecode reads the spans a plugin process sends the host: what decodes
// encodes again.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		spans, err := Decode(data)
		if err != nil {
			return
		}
		if _, err := Encode(spans); err != nil {
			t.Fatalf("spans that decode do not encode again: %v", err)
		}
	})
}
