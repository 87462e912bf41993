package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kpipe/kpipe/sdk"
	"github.com/kpipe/kpipe/sdk/param"
)

// securityConfig is how the plugin reaches a secured cluster: TLS, mutual
// TLS and SASL. The source and the sink share it. Its secrets (the
// password, the token) never appear in a log, an error or a report.
type securityConfig struct {
	Protocol               string `param:"security_protocol" default:"PLAINTEXT" help:"PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS)"`
	Mechanism              string `param:"sasl_mechanism" help:"with SASL_*: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER"`
	Username               string `param:"sasl_username" help:"user of PLAIN and SCRAM"`
	Password               string `param:"sasl_password" help:"password of PLAIN and SCRAM (or sasl_password_file)"`
	PasswordFile           string `param:"sasl_password_file" help:"file holding the password of PLAIN and SCRAM (trailing newline ignored)"`
	Token                  string `param:"sasl_oauthbearer_token" help:"OAUTHBEARER: a static token (a JWT)"`
	TokenFile              string `param:"sasl_oauthbearer_token_file" help:"OAUTHBEARER: file holding the token, read again at every authentication, so a token rotated in the file is used from the next one"`
	CALocation             string `param:"ssl_ca_location" help:"with SSL and SASL_SSL: PEM file of the CAs that sign the brokers' certificates (default: the system's)"`
	CertLocation           string `param:"ssl_certificate_location" help:"mutual TLS: PEM file of this client's certificate (with ssl_key_location)"`
	KeyLocation            string `param:"ssl_key_location" help:"mutual TLS: PEM file of this client's private key (unencrypted)"`
	EndpointIdentification bool   `param:"ssl_endpoint_identification" default:"true" help:"check that each broker's certificate is for the name it is reached by; false skips that check (the certificate must still be signed by a trusted CA)"`

	// Set by check.
	tls      *tls.Config
	password string
	leaf     *x509.Certificate // the client certificate, for mutual TLS
	// lastBroker is the broker the client last connected to, host:port:
	// the one a failed handshake or login was with.
	lastBroker atomic.Pointer[string]
	// connected is set once the cluster answered: failures that mean the
	// wrong protocol at start may be an outage after.
	connected atomic.Bool
}

var (
	protocols  = []string{"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
	mechanisms = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"}
	// mechanismAliases are other spellings in use (kafka-backup's YAML
	// writes SCRAM-SHA512).
	mechanismAliases = map[string]string{"SCRAM-SHA256": "SCRAM-SHA-256", "SCRAM-SHA512": "SCRAM-SHA-512"}
)

func (c *securityConfig) usesTLS() bool  { return c.Protocol == "SSL" || c.Protocol == "SASL_SSL" }
func (c *securityConfig) usesSASL() bool { return strings.HasPrefix(c.Protocol, "SASL_") }

// check validates the settings and loads the files they name: a mistake is
// a parameter error naming the setting and the fix.
func (c *securityConfig) check() param.Errors {
	var errs param.Errors
	add := func(name, format string, args ...any) { errs = append(errs, param.Errorf(name, format, args...)) }
	c.Protocol = strings.ToUpper(c.Protocol)
	c.Mechanism = strings.ToUpper(c.Mechanism)
	if m, ok := mechanismAliases[c.Mechanism]; ok {
		c.Mechanism = m
	}
	if !slices.Contains(protocols, c.Protocol) {
		add("security_protocol", "%q is not one of %s", c.Protocol, strings.Join(protocols, ", "))
		return errs
	}
	if c.usesSASL() {
		errs = append(errs, c.checkSASL()...)
	} else {
		for name, set := range map[string]bool{"sasl_mechanism": c.Mechanism != "", "sasl_username": c.Username != "",
			"sasl_password": c.Password != "", "sasl_password_file": c.PasswordFile != "",
			"sasl_oauthbearer_token": c.Token != "", "sasl_oauthbearer_token_file": c.TokenFile != ""} {
			if set {
				add(name, "is set, but security_protocol is %s; use SASL_SSL (or SASL_PLAINTEXT) to log in with SASL", c.Protocol)
			}
		}
	}
	if c.usesTLS() {
		errs = append(errs, c.loadTLS()...)
	} else {
		for name, set := range map[string]bool{"ssl_ca_location": c.CALocation != "", "ssl_certificate_location": c.CertLocation != "",
			"ssl_key_location": c.KeyLocation != ""} {
			if set {
				add(name, "is set, but security_protocol is %s; use SSL or SASL_SSL to connect with TLS", c.Protocol)
			}
		}
	}
	slices.SortFunc(errs, func(a, b *param.Error) int { return strings.Compare(a.Param, b.Param) })
	return errs
}

func (c *securityConfig) checkSASL() param.Errors {
	var errs param.Errors
	add := func(name, format string, args ...any) { errs = append(errs, param.Errorf(name, format, args...)) }
	switch c.Mechanism {
	case "":
		add("sasl_mechanism", "is missing; security_protocol %s needs one of %s", c.Protocol, strings.Join(mechanisms, ", "))
	case "OAUTHBEARER":
		switch {
		case c.Token == "" && c.TokenFile == "":
			add("sasl_oauthbearer_token", "is missing; OAUTHBEARER needs a token: give sasl_oauthbearer_token or sasl_oauthbearer_token_file")
		case c.Token != "" && c.TokenFile != "":
			add("sasl_oauthbearer_token", "and sasl_oauthbearer_token_file are both set; give one of them")
		case c.TokenFile != "":
			if _, err := readSecret(c.TokenFile); err != nil {
				add("sasl_oauthbearer_token_file", "%v", err)
			}
		}
		for name, set := range map[string]bool{"sasl_username": c.Username != "", "sasl_password": c.Password != "", "sasl_password_file": c.PasswordFile != ""} {
			if set {
				add(name, "is for PLAIN and SCRAM; OAUTHBEARER logs in with a token alone")
			}
		}
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if c.Username == "" {
			add("sasl_username", "is missing; %s needs a user and a password", c.Mechanism)
		}
		switch {
		case c.Password == "" && c.PasswordFile == "":
			add("sasl_password", "is missing; %s needs a password: give sasl_password or sasl_password_file", c.Mechanism)
		case c.Password != "" && c.PasswordFile != "":
			add("sasl_password", "and sasl_password_file are both set; give one of them")
		case c.PasswordFile != "":
			pw, err := readSecret(c.PasswordFile)
			if err != nil {
				add("sasl_password_file", "%v", err)
			}
			c.password = pw
		default:
			c.password = c.Password
		}
		for name, set := range map[string]bool{"sasl_oauthbearer_token": c.Token != "", "sasl_oauthbearer_token_file": c.TokenFile != ""} {
			if set {
				add(name, "is for OAUTHBEARER; %s logs in with sasl_username and sasl_password", c.Mechanism)
			}
		}
	default:
		add("sasl_mechanism", "%q is not one of %s", c.Mechanism, strings.Join(mechanisms, ", "))
	}
	return errs
}

// readSecret reads a file holding a secret, without its trailing newline.
// Its errors quote neither the content nor the name (a secret given where
// its file's name goes would be printed).
func readSecret(file string) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("cannot read the file: %v", errors.Unwrap(err))
	}
	s := strings.TrimRight(string(data), "\r\n")
	if s == "" {
		return "", errors.New("the file is empty")
	}
	return s, nil
}

func (c *securityConfig) loadTLS() param.Errors {
	var errs param.Errors
	add := func(name, format string, args ...any) { errs = append(errs, param.Errorf(name, format, args...)) }
	c.tls = &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CALocation != "" {
		pem, err := os.ReadFile(c.CALocation)
		pool := x509.NewCertPool()
		switch {
		case err != nil:
			add("ssl_ca_location", "cannot read %s: %v", c.CALocation, errors.Unwrap(err))
		case !pool.AppendCertsFromPEM(pem):
			add("ssl_ca_location", "%s holds no PEM certificate; give the CA certificate that signs the brokers' certificates", c.CALocation)
		}
		c.tls.RootCAs = pool
	}
	switch {
	case c.CertLocation != "" && c.KeyLocation == "":
		add("ssl_key_location", "is missing; mutual TLS needs the private key of ssl_certificate_location")
	case c.CertLocation == "" && c.KeyLocation != "":
		add("ssl_certificate_location", "is missing; mutual TLS needs the certificate of ssl_key_location")
	case c.CertLocation != "":
		pair, err := tls.LoadX509KeyPair(c.CertLocation, c.KeyLocation)
		if err != nil {
			add("ssl_certificate_location", "cannot load the pair %s and %s (ssl_key_location): %v", c.CertLocation, c.KeyLocation, err)
			break
		}
		c.tls.Certificates = []tls.Certificate{pair}
		c.leaf = pair.Leaf
	}
	if !c.EndpointIdentification {
		// Go checks the chain and the name together; this checks the chain
		// alone.
		roots := c.tls.RootCAs
		c.tls.InsecureSkipVerify = true
		c.tls.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the broker sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, cert := range cs.PeerCertificates[1:] {
				inter.AddCert(cert)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
			return err
		}
	}
	return errs
}

// opts are the client options of the settings: the TLS dialer, the SASL
// mechanism and a hook that notes the broker each connection is with and
// hands a connection that failed for good to fail (nil: nobody).
func (c *securityConfig) opts(fail func(error)) []kgo.Opt {
	opts := []kgo.Opt{kgo.WithHooks(watch{c, fail})}
	if c.usesTLS() {
		opts = append(opts, kgo.DialTLSConfig(c.tls))
	}
	if c.usesSASL() {
		opts = append(opts, kgo.SASL(c.mechanism()))
	}
	return opts
}

func (c *securityConfig) mechanism() sasl.Mechanism {
	switch c.Mechanism {
	case "PLAIN":
		return plain.Auth{User: c.Username, Pass: c.password}.AsMechanism()
	case "SCRAM-SHA-256":
		return scram.Auth{User: c.Username, Pass: c.password}.AsSha256Mechanism()
	case "SCRAM-SHA-512":
		return scram.Auth{User: c.Username, Pass: c.password}.AsSha512Mechanism()
	}
	t := &tokenSource{static: c.Token, file: c.TokenFile}
	return oauth.Oauth(func(context.Context) (oauth.Auth, error) {
		tok, err := t.token()
		return oauth.Auth{Token: tok}, err
	})
}

// tokenSource hands out the OAUTHBEARER token: the static one, or the
// token file's content, read at every authentication.
type tokenSource struct {
	static, file string
	mu           sync.Mutex
	last         string
}

// tokenError is a token that cannot be used: unreadable or expired.
type tokenError struct{ msg string }

func (e *tokenError) Error() string { return e.msg }

func (t *tokenSource) token() (string, error) {
	where := "sasl_oauthbearer_token"
	tok := t.static
	if t.file != "" {
		where = "the token in sasl_oauthbearer_token_file (" + t.file + ")"
		var err error
		if tok, err = readSecret(t.file); err != nil {
			return "", &tokenError{"sasl_oauthbearer_token_file: " + err.Error()}
		}
		t.mu.Lock()
		changed := t.last != "" && t.last != tok
		t.last = tok
		t.mu.Unlock()
		if changed {
			sdk.Logger().Info("OAUTHBEARER token file changed; logging in with the new token", "file", t.file, "expires", expiryText(tok))
		}
	}
	if exp, ok := tokenExpiry(tok); ok && !exp.After(time.Now()) {
		return "", &tokenError{fmt.Sprintf("%s expired at %s; renew it", where, exp.UTC().Format(time.RFC3339))}
	}
	return tok, nil
}

// tokenExpiry reads the exp claim of a JWT, when it has one.
func tokenExpiry(tok string) (time.Time, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) < 2 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	return time.UnixMilli(int64(*claims.Exp * 1000)), true
}

func expiryText(tok string) string {
	if exp, ok := tokenExpiry(tok); ok {
		return exp.UTC().Format(time.RFC3339)
	}
	return "unknown"
}
