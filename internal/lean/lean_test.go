package lean

import (
	"os/user"
	"testing"

	"github.com/kpipe/kpipe/sdk/record"
)

// TestReleaseKeepsRelocatedData runs Release in a test binary that, built
// with cgo (as the race detector builds it), is linked dynamically: its
// relocated read-only data must survive, or the calls into C below jump to
// address zero.
func TestReleaseKeepsRelocatedData(t *testing.T) {
	Release()
	if _, err := user.Current(); err != nil {
		t.Fatalf("user.Current after Release: %v", err)
	}
	b := record.NewBuilder(record.NewPool())
	defer b.Release()
	b.AppendFields(0, 1, record.TimestampType(0), []byte("k"), make([]byte, 1<<16))
	rec := b.NewRecord()
	defer rec.Release()
	if frame, err := record.NewEncoder(record.Zstd).Encode(rec, nil); err != nil || len(frame) == 0 {
		t.Fatalf("zstd after Release: %d bytes, %v", len(frame), err)
	}
}
