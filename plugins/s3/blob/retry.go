package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// retrier runs a store's requests. A request that fails for a passing
// reason (see transient) is tried again after a backoff, 100 ms doubling up
// to 5 s, for as long as the store, and the request itself, have been
// failing for less than maxOutage. The outage is the store's: it starts at
// the first such failure of any request, ends at the next success of any
// once nothing failed for settle (or after staleOutage without a failure), is told to warn when it starts
// and every so often while it lasts, and fails the requests once it lasts
// longer than maxOutage; a request that keeps failing while others pass
// fails after maxOutage of its own.
type retrier struct {
	store     string // names the store in messages
	maxOutage time.Duration
	warn      func(msg string, args ...any)
	every     time.Duration

	requests, retries *atomic.Int64

	mu       sync.Mutex
	since    time.Time // the outage's start; zero when there is none
	lastFail time.Time
	lastWarn time.Time
	lastErr  error
}

func (r *retrier) do(ctx context.Context, what string, op func(ctx context.Context) error) error {
	backoff := 100 * time.Millisecond
	start := time.Now()
	for {
		r.requests.Add(1)
		err := op(ctx)
		if err == nil || !transient(err) || ctx.Err() != nil {
			if err == nil || !transient(err) {
				r.reached()
			}
			return err
		}
		if over := r.failed(what, err, start); over != nil {
			return over
		}
		r.retries.Add(1)
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, 5*time.Second)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return fmt.Errorf("%w (after %v)", ctx.Err(), err)
		}
	}
}

// failed records a passing failure of a request that began at start; it
// returns the error to fail with once the outage, or that request, has
// lasted longer than maxOutage.
func (r *retrier) failed(what string, err error, start time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if !r.since.IsZero() && now.Sub(r.lastFail) > staleOutage {
		r.since = time.Time{} // nothing failed for a while: that outage ended unseen
	}
	r.lastFail = now
	if r.since.IsZero() {
		r.since = now
		r.lastWarn = now
		r.say("storage unreachable or failing; retrying", "store", r.store, "request", what, "error", brief(err), "max_storage_outage", r.maxOutage.String())
	}
	lasted := now.Sub(r.since)
	if now.Sub(r.since) >= r.maxOutage || now.Sub(start) >= r.maxOutage {
		return &OutageError{Store: r.store, MaxOutage: r.maxOutage, Err: err}
	}
	if now.Sub(r.lastWarn) >= r.every {
		r.lastWarn = now
		r.say("storage still unreachable or failing; retrying", "store", r.store, "for", lasted.Round(time.Second).String(),
			"request", what, "error", brief(err), "max_storage_outage", r.maxOutage.String())
	}
	return nil
}

// staleOutage is how long without a failure ends an outage that no success
// ended (its requests gave up): a request that backs off waits 5 s at most.
const staleOutage = 15 * time.Second

// settle is how long after its last failure a success ends an outage: a
// store going down answers some requests while it refuses others, and
// that is one outage, not several.
const settle = time.Second

// reached ends an outage, if there is one and nothing failed for settle.
func (r *retrier) reached() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.since.IsZero() && time.Since(r.lastFail) >= settle {
		r.say("storage reachable again", "store", r.store, "after", time.Since(r.since).Round(time.Millisecond).String())
		r.since = time.Time{}
	}
}

func (r *retrier) say(msg string, args ...any) {
	if r.warn != nil {
		r.warn(msg, args...)
	}
}

// OutageError fails a request once the store has failed for longer than
// the outage budget.
type OutageError struct {
	Store     string
	MaxOutage time.Duration
	Err       error // the last failure
}

func (e *OutageError) Error() string {
	return fmt.Sprintf("storage %s unreachable or failing for longer than max_storage_outage (%s): %s; what was committed before is intact, and the next run resumes after it",
		e.Store, e.MaxOutage, brief(e.Err))
}

func (e *OutageError) Unwrap() error { return e.Err }

// brief is what went wrong in err, without the layers of the SDK: the
// network error, or the store's answer.
func brief(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		if errors.Is(ue.Err, io.EOF) || errors.Is(ue.Err, io.ErrUnexpectedEOF) {
			return "the connection closed before the answer (EOF)"
		}
		return ue.Err.Error()
	}
	if st := status(err); st != 0 {
		return fmt.Sprintf("HTTP %d %s", st, code(err))
	}
	return err.Error()
}

// transient says whether err may pass if the request is tried again: the
// request never got an answer (a refused or broken connection, a timeout),
// or the answer was throttling, a server error or a conflicting concurrent
// conditional write.
func transient(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	var send *smithyhttp.RequestSendError
	var op *net.OpError
	if errors.As(err, &send) || errors.As(err, &op) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded) {
		return true // no answer, or one cut short: whatever its status said
	}
	switch st := status(err); {
	case st == http.StatusRequestTimeout, st == http.StatusTooManyRequests, st == statusClientClosed:
		return true
	case st == http.StatusNotImplemented:
		return false // a feature the store lacks (a condition, say): it will not pass
	case st >= 500:
		return true
	case st == http.StatusBadRequest:
		return code(err) == "RequestTimeout" // S3's: the body came too slowly
	case st == http.StatusConflict:
		return code(err) == "ConditionalRequestConflict" || code(err) == "OperationAborted"
	}
	return isTimeout(err)
}

// statusClientClosed is the status a server (MinIO's ClientDisconnected)
// logs and sometimes sends when the connection closed before it answered,
// as when it shuts down mid-request: the request never got its answer.
const statusClientClosed = 499

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// status is the HTTP status of the answer err carries, or 0.
func status(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// code is the S3 error code of err, or "".
func code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func isNotFound(err error) bool {
	return err != nil && status(err) == http.StatusNotFound && code(err) != "NoSuchBucket"
}

func isPreconditionFailed(err error) bool { return status(err) == http.StatusPreconditionFailed }
