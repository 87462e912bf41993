package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// This file tells a failed TLS handshake or SASL login from an outage and
// explains it: which it was, the broker, the setting to fix.

// watch is a kgo hook: it notes the broker of each connection, and hands
// a connection that failed for good (a refused login, a certificate not
// trusted) to fail, explained.
type watch struct {
	c    *securityConfig
	fail func(error) // nil: only note the broker
}

func (w watch) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	addr := net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port)))
	w.c.lastBroker.Store(&addr)
	if err == nil || w.fail == nil {
		return
	}
	if e, permanent := w.c.classify(err, addr); e != err && (permanent || !w.c.connected.Load()) {
		w.fail(e)
	}
}

// failure is the error explain makes of err when err is a TLS handshake or
// SASL login that failed for good, else nil.
func (c *securityConfig) failure(err error) error {
	broker := "?"
	if b := c.lastBroker.Load(); b != nil {
		broker = *b
	}
	if e, permanent := c.classify(err, broker); e != err && (permanent || !c.connected.Load()) {
		return e
	}
	return nil
}

// explain turns a failed TLS handshake or SASL login with the broker the
// client last connected to into an error that says which it was, names
// the broker and the setting to fix; other errors come back as they are.
func (c *securityConfig) explain(err error) error {
	broker := "?"
	if b := c.lastBroker.Load(); b != nil {
		broker = *b
	}
	e, _ := c.classify(err, broker)
	return e
}

// classify explains err, a failure with broker, when it is a TLS or SASL
// one, and says whether it is for good. Some are only at the start of a
// run: a connection closed at its first message means another protocol at
// start, but may be a broker going down mid-run, and a token file may be
// caught while it is rewritten.
func (c *securityConfig) classify(err error, broker string) (error, bool) {
	msg := err.Error()
	var (
		hostErr   x509.HostnameError
		authErr   x509.UnknownAuthorityError
		validErr  x509.CertificateInvalidError
		verifyErr *tls.CertificateVerificationError
		alert     tls.AlertError
		firstEOF  *kgo.ErrFirstReadEOF
	)
	tlsFail := func(format string, args ...any) error {
		return fmt.Errorf("TLS with Kafka broker %s failed: %s", broker, fmt.Sprintf(format, args...))
	}
	switch {
	case errors.As(err, &hostErr):
		return tlsFail("its certificate is for %s, not %s; list the brokers in bootstrap_servers by a name their certificates hold, or set ssl_endpoint_identification to false to skip this check",
			certNames(hostErr.Certificate), hostErr.Host), true
	case errors.As(err, &authErr):
		if c.CALocation == "" {
			return tlsFail("its certificate is signed by an authority this system does not trust; set ssl_ca_location to the file of the CA that signs the brokers' certificates"), true
		}
		return tlsFail("its certificate is signed by an authority that ssl_ca_location (%s) does not hold; set ssl_ca_location to the file of the CA that signs the brokers' certificates", c.CALocation), true
	case errors.As(err, &validErr) && validErr.Reason == x509.Expired:
		return tlsFail("its certificate is not valid now (%s); the broker's certificate must be renewed, or this machine's clock is wrong", validErr.Detail), true
	case errors.As(err, &verifyErr):
		return tlsFail("its certificate cannot be verified: %v; check ssl_ca_location", verifyErr.Err), true
	case errors.As(err, &alert) || strings.Contains(msg, "remote error: tls: "):
		return c.explainRefused(broker, msg), true
	case errors.As(err, &firstEOF) && strings.Contains(msg, "after a dial") && c.usesTLS():
		return tlsFail("it closed the connection at the first message: its listener on that port does not speak TLS; check security_protocol (%s) against the listener", c.Protocol), false
	case errors.As(err, &firstEOF) && strings.Contains(msg, "SASL is required") && !c.usesSASL():
		return fmt.Errorf("Kafka broker %s closed the connection at the first request: its listener on that port wants a SASL login; set security_protocol to SASL_SSL or SASL_PLAINTEXT, with sasl_mechanism (it is %s)", broker, c.Protocol), false
	case strings.Contains(msg, "appear to be a tls alert record") || (errors.As(err, &firstEOF) && strings.Contains(msg, "api versions") && !c.usesTLS()):
		return fmt.Errorf("Kafka broker %s speaks TLS on that port; set security_protocol to SSL or SASL_SSL (it is %s)", broker, c.Protocol), false
	case errors.Is(err, kerr.UnsupportedSaslMechanism):
		return fmt.Errorf("Kafka broker %s does not enable SASL mechanism %s on that listener; set sasl_mechanism to one it enables", broker, c.Mechanism), true
	case errors.Is(err, kerr.SaslAuthenticationFailed) && c.Mechanism != "OAUTHBEARER":
		return fmt.Errorf("Kafka broker %s refused the %s login of user %q: wrong user name or password; check sasl_username and sasl_password", broker, c.Mechanism, c.Username), true
	case c.Mechanism == "OAUTHBEARER" && (errors.Is(err, kerr.SaslAuthenticationFailed) || strings.Contains(msg, "oauth response")):
		return fmt.Errorf("Kafka broker %s refused the OAUTHBEARER token of %s: it is not valid for this cluster (expired, not yet valid, or for another audience or scope)", broker, c.tokenSetting()), true
	case errors.As(err, new(*tokenError)):
		return fmt.Errorf("Kafka broker %s: OAUTHBEARER login: %s", broker, msg), false
	}
	return err, false
}

func (c *securityConfig) tokenSetting() string {
	if c.TokenFile != "" {
		return "sasl_oauthbearer_token_file (" + c.TokenFile + ")"
	}
	return "sasl_oauthbearer_token"
}

// clientCertAlerts are the TLS alerts of a client certificate refused.
var clientCertAlerts = []string{"bad certificate", "unknown certificate", "expired certificate", "revoked certificate",
	"unsupported certificate", "certificate required", "unknown certificate authority"}

// explainRefused explains a TLS alert from the broker: in mutual TLS, a
// refused client certificate.
func (c *securityConfig) explainRefused(broker, msg string) error {
	alert := msg
	if i := strings.Index(msg, "remote error: tls: "); i >= 0 {
		alert = msg[i+len("remote error: tls: "):]
	}
	if !slices.Contains(clientCertAlerts, alert) {
		return fmt.Errorf("TLS with Kafka broker %s failed: it refused the handshake (%s); check that security_protocol and the port agree, and that the broker accepts this client's TLS version", broker, alert)
	}
	switch {
	case c.leaf == nil:
		return fmt.Errorf("TLS with Kafka broker %s failed: it refused the handshake (%s): it wants a client certificate (mutual TLS); set ssl_certificate_location and ssl_key_location", broker, alert)
	case time.Now().After(c.leaf.NotAfter):
		return fmt.Errorf("TLS with Kafka broker %s failed: it refused the client certificate of ssl_certificate_location (%s), which expired at %s; renew it",
			broker, c.CertLocation, c.leaf.NotAfter.UTC().Format(time.RFC3339))
	case time.Now().Before(c.leaf.NotBefore):
		return fmt.Errorf("TLS with Kafka broker %s failed: it refused the client certificate of ssl_certificate_location (%s), which is valid only from %s; check this machine's clock",
			broker, c.CertLocation, c.leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return fmt.Errorf("TLS with Kafka broker %s failed: it refused the client certificate of ssl_certificate_location (%s) (%s); is it signed by a CA the broker trusts?", broker, c.CertLocation, alert)
}

// certNames lists the names a certificate is for.
func certNames(cert *x509.Certificate) string {
	names := slices.Clone(cert.DNSNames)
	for _, ip := range cert.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 && cert.Subject.CommonName != "" {
		names = append(names, cert.Subject.CommonName)
	}
	return strings.Join(names, ", ")
}
