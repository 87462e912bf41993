package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestWatchEndsRunsOnlyForFailuresForGood: once the cluster answered, a
// login or a certificate refused ends the run, while a connection closed at
// its first message (a broker going down) or a token file caught mid-write
// is left to the outage logic; before it answered, both end the run.
func TestWatchEndsRunsOnlyForFailuresForGood(t *testing.T) {
	c := &securityConfig{Protocol: "SASL_SSL", Mechanism: "SCRAM-SHA-512", Username: "u", CALocation: "/ca.pem"}
	broker := kgo.BrokerMetadata{Host: "kafka-1", Port: 9093}
	forGood := []error{
		fmt.Errorf("unable to dial: %w", x509.UnknownAuthorityError{}),
		fmt.Errorf("wrapped: %w", kerr.SaslAuthenticationFailed),
		kerr.UnsupportedSaslMechanism,
		errors.New("remote error: tls: bad certificate"),
	}
	passing := []error{&kgo.ErrFirstReadEOF{}, &tokenError{"sasl_oauthbearer_token_file: cannot read the file: no such file or directory"}}
	for _, connected := range []bool{false, true} {
		c.connected.Store(connected)
		for _, err := range append(forGood, passing...) {
			var got error
			watch{c, func(e error) { got = e }}.OnBrokerConnect(broker, 0, nil, err)
			isForGood := false
			for _, f := range forGood {
				isForGood = isForGood || f == err
			}
			if want := isForGood || !connected; (got != nil) != want {
				t.Errorf("connected %v, %v: ended the run: %v, want %v", connected, err, got, want)
			}
			if got != nil && !strings.Contains(got.Error(), "Kafka broker kafka-1:9093") {
				t.Errorf("%v explained as %q: the broker is not named", err, got)
			}
		}
	}
	if b := c.lastBroker.Load(); b == nil || *b != "kafka-1:9093" {
		t.Errorf("last broker %v, want kafka-1:9093", b)
	}
	if err := errors.New("some other error"); c.explain(err) != err {
		t.Errorf("an error that is not TLS or SASL changed")
	}
}

// TestTokenExpiry reads the exp claim of unsigned and signed JWTs, padded
// or not, and nothing of a token that is not a JWT.
func TestTokenExpiry(t *testing.T) {
	for tok, want := range map[string]int64{
		"eyJhbGciOiJub25lIn0.eyJleHAiOjE3NjczMjMwNDV9.":     1767323045,
		"eyJhbGciOiJub25lIn0.eyJleHAiOjE3NjczMjMwNDV9.c2ln": 1767323045,
		"eyJhbGciOiJub25lIn0.eyJleHAiOjE3NjczMjMwNDUuNX0=.": 1767323045,
		"opaque-token":                         0,
		"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.": 0,
	} {
		exp, ok := tokenExpiry(tok)
		if got := map[bool]int64{true: exp.Unix(), false: 0}[ok]; got != want {
			t.Errorf("tokenExpiry(%q) = %d, want %d", tok, got, want)
		}
	}
}
