package tlsfiles

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ca is a throwaway certificate authority.
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *ca {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &ca{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns PEM certificate and key for cn, for servers and clients.
func (c *ca) issue(t *testing.T, cn string, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// serve accepts TLS connections with cfg and completes each handshake.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
				_, _ = c.Read(make([]byte, 1))
			}()
		}
	}()
	return ln.Addr().String()
}

// dial handshakes and returns the server certificate's common name.
func dial(addr string, roots *x509.CertPool, client *tls.Certificate) (string, error) {
	cfg := &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if client != nil {
		cfg.Certificates = []tls.Certificate{*client}
	}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	// TLS 1.3 reports a refused client certificate on the first read.
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return "", err
	}
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

func TestReloadAndMutual(t *testing.T) {
	dir := t.TempDir()
	authority := newCA(t, "test CA")
	roots := x509.NewCertPool()
	roots.AddCert(authority.cert)
	certFile, keyFile, rootFile := filepath.Join(dir, "s.crt"), filepath.Join(dir, "s.key"), filepath.Join(dir, "ca.crt")
	c, k := authority.issue(t, "server one", 2)
	write(t, certFile, c)
	write(t, keyFile, k)
	write(t, rootFile, authority.pem)

	var reloadErrs []error
	src, err := New(Files{Cert: certFile, Key: keyFile, RootCert: rootFile, Mutual: true}, func(err error) { reloadErrs = append(reloadErrs, err) })
	if err != nil {
		t.Fatal(err)
	}
	src.every = 0
	addr := serve(t, src.Config())

	cc, ck := authority.issue(t, "client", 3)
	client, err := tls.X509KeyPair(cc, ck)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dial(addr, roots, nil); err == nil {
		t.Fatal("a client without a certificate was accepted under mutual TLS")
	}
	stranger := newCA(t, "other CA")
	sc, sk := stranger.issue(t, "stranger", 4)
	strangerCert, _ := tls.X509KeyPair(sc, sk)
	if _, err := dial(addr, roots, &strangerCert); err == nil {
		t.Fatal("a client certificate from another CA was accepted")
	}
	if cn, err := dial(addr, roots, &client); err != nil || cn != "server one" {
		t.Fatalf("mutual handshake: %q, %v", cn, err)
	}

	// A renewed certificate is served without a restart.
	c2, k2 := authority.issue(t, "server two", 5)
	write(t, certFile, c2)
	write(t, keyFile, k2)
	if cn, err := dial(addr, roots, &client); err != nil || cn != "server two" {
		t.Fatalf("after renewal: %q, %v", cn, err)
	}
	// A broken replacement keeps the last good one.
	write(t, keyFile, []byte("not a key"))
	if cn, err := dial(addr, roots, &client); err != nil || cn != "server two" {
		t.Fatalf("after a broken key: %q, %v", cn, err)
	}
	if len(reloadErrs) == 0 || !strings.Contains(reloadErrs[0].Error(), "keeping the previous TLS certificate") {
		t.Errorf("reload errors: %v", reloadErrs)
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := New(Files{Cert: "a"}, nil); err == nil || !strings.Contains(err.Error(), "both required") {
		t.Errorf("missing key: %v", err)
	}
	if _, err := New(Files{Cert: "a", Key: "b", Mutual: true}, nil); err == nil || !strings.Contains(err.Error(), "root certificate") {
		t.Errorf("mutual without root: %v", err)
	}
	bad := filepath.Join(dir, "bad.pem")
	write(t, bad, []byte("garbage"))
	if _, err := New(Files{Cert: bad, Key: bad}, nil); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("garbage files: %v", err)
	}
	if _, err := New(Files{Cert: filepath.Join(dir, "none"), Key: bad}, nil); err == nil || !strings.Contains(err.Error(), "none") {
		t.Errorf("missing file: %v", err)
	}
}
