package blob

import (
	"errors"
	"net/http"
	"testing"

	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// TestWhichAnswersAreTriedAgain: a request a server saw cut off (499, as
// MinIO answers while it shuts down), throttled or failed on its side is
// tried again; one refused for what it asked is not.
func TestWhichAnswersAreTriedAgain(t *testing.T) {
	answer := func(status int) error {
		return &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}}, Err: errors.New("answer")}
	}
	for status, want := range map[int]bool{499: true, 503: true, 500: true, 429: true, 408: true, 403: false, 404: false, 412: false, 501: false} {
		if got := transient(answer(status)); got != want {
			t.Errorf("status %d: transient %v, want %v", status, got, want)
		}
	}
}
