package link

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Identity is the certificate a plugin process presents on its links. Its
// key never leaves the process; the host learns only the certificate and
// tells each peer to expect it.
type Identity struct {
	cert tls.Certificate
	// DER is the certificate, to hand to the host.
	DER []byte
}

// NewIdentity makes a self-signed ECDSA P-256 certificate for this process.
func NewIdentity() (*Identity, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("link: make a key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "kpipe data link"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{"kpipe-link"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("link: make a certificate: %w", err)
	}
	return &Identity{cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, DER: der}, nil
}

// Secure wraps c in mutual TLS: this end presents id and accepts only a
// peer that presents exactly peerDER. The receiving end of a link is the TLS
// server, the sending end the client. The handshake runs on first use.
func Secure(c net.Conn, role Role, id *Identity, peerDER []byte) (net.Conn, error) {
	if id == nil || len(peerDER) == 0 {
		return nil, errors.New("link: TLS needs this process's identity and the peer's certificate")
	}
	pinned := func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) != 1 || !bytes.Equal(raw[0], peerDER) {
			return errors.New("link: the peer's certificate is not the one the host announced")
		}
		return nil
	}
	cfg := &tls.Config{
		Certificates:          []tls.Certificate{id.cert},
		MinVersion:            tls.VersionTLS13,
		InsecureSkipVerify:    true, // no CA: the peer's exact certificate is checked instead
		VerifyPeerCertificate: pinned,
		ServerName:            "kpipe-link",
	}
	if role == In {
		cfg.ClientAuth = tls.RequireAnyClientCert
		return tls.Server(c, cfg), nil
	}
	return tls.Client(c, cfg), nil
}
