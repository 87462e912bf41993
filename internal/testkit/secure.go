package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// SecureKafka is what the secure listeners of the test broker (started with
// KAFKA_SECURE=1) need: their addresses, the CA, the client certificate of
// mutual TLS and the SASL users.
type SecureKafka struct {
	SASLSSL, MTLS         string // host:port of the SASL_SSL and mutual TLS listeners
	SASLPlaintext         string // host:port of the SASL_PLAINTEXT listener (SCRAM-SHA-256, PLAIN)
	CA, CAKey             string // PEM files of the CA that signs the broker's and the client's certificates
	ClientCert, ClientKey string
	ScramUser, PlainUser  string
	ScramPassword         string // SCRAM-SHA-512 and SCRAM-SHA-256
	PlainPassword         string
	ScramPasswordFile     string
	PlainPasswordFile     string
}

// Secure returns the secure listeners of the broker Kafka returns.
func Secure(t testing.TB) SecureKafka {
	t.Helper()
	addr := Kafka(t)
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	out, err := runScript("kafka.sh", []string{"KAFKA_PORT=" + port}, "security")
	if err != nil {
		t.Fatalf("the test broker has no secure listeners (start it with KAFKA_SECURE=1, as make test does): %v", err)
	}
	kv := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = v
		}
	}
	read := func(file string) string {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(data))
	}
	return SecureKafka{
		SASLSSL: kv["SASL_SSL_BOOTSTRAP"], MTLS: kv["MTLS_BOOTSTRAP"], SASLPlaintext: kv["SASL_PLAINTEXT_BOOTSTRAP"],
		CA: kv["CA"], CAKey: kv["CA_KEY"], ClientCert: kv["CLIENT_CERT"], ClientKey: kv["CLIENT_KEY"],
		ScramUser: kv["SCRAM_USER"], PlainUser: kv["PLAIN_USER"],
		ScramPassword: read(kv["SCRAM_PASSWORD_FILE"]), PlainPassword: read(kv["PLAIN_PASSWORD_FILE"]),
		ScramPasswordFile: kv["SCRAM_PASSWORD_FILE"], PlainPasswordFile: kv["PLAIN_PASSWORD_FILE"],
	}
}

// ClientCertificate writes a client certificate for name, valid from
// notBefore to notAfter, and its key into dir; signed by the test broker's
// CA when signed, else by a CA of its own. It returns the files and that
// other CA's certificate file ("" when signed by the broker's).
func (s SecureKafka) ClientCertificate(t testing.TB, dir, name string, notBefore, notAfter time.Time, signed bool) (cert, key, otherCA string) {
	t.Helper()
	var caCert *x509.Certificate
	var caKey any
	if signed {
		pair, err := tls.LoadX509KeyPair(s.CA, s.CAKey)
		if err != nil {
			t.Fatal(err)
		}
		caCert, caKey = pair.Leaf, pair.PrivateKey
	} else {
		k, c := selfSignedCA(t, "another CA")
		caCert, caKey = c, k
		otherCA = writePEM(t, filepath.Join(dir, "other-ca.crt"), "CERTIFICATE", c.Raw)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: notBefore, NotAfter: notAfter, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, filepath.Join(dir, name+".crt"), "CERTIFICATE", der), writePEM(t, filepath.Join(dir, name+".key"), "PRIVATE KEY", keyDER), otherCA
}

func selfSignedCA(t testing.TB, name string) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return k, c
}

func writePEM(t testing.TB, file, kind string, der []byte) string {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// UnsecuredJWT is a token the test broker's OAUTHBEARER listener takes (it
// checks no signature): for subject, expiring at exp.
func UnsecuredJWT(subject string, exp time.Time) string {
	enc := func(s string) string { return base64URL([]byte(s)) }
	return enc(`{"alg":"none"}`) + "." + enc(`{"sub":"`+subject+`","iat":`+itoa(time.Now().Unix())+`,"exp":`+itoa(exp.Unix())+`}`) + "."
}

func base64URL(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
