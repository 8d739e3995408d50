// Package tlsfiles serves TLS from certificate files that may change while
// the server runs: the key pair and the client CA bundle are read again
// when their files change (a renewed certificate from cert-manager or a
// mounted secret), without a restart. A replacement that cannot be read
// keeps the last good one and is reported.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// recheck bounds how often the files are stat'ed: at most once per this
// interval, on a handshake.
const recheck = time.Second

// Files names a server's TLS material.
type Files struct {
	Cert string // PEM certificate chain
	Key  string // PEM private key
	// RootCert, when set, is the CA bundle client certificates are
	// verified against.
	RootCert string
	// Mutual requires and verifies a client certificate (RootCert is
	// then required).
	Mutual bool
}

// Source hands out the current TLS configuration.
type Source struct {
	files  Files
	onErr  func(error)
	every  time.Duration // recheck; tests set 0
	mu     sync.Mutex
	cert   *tls.Certificate
	pool   *x509.CertPool
	stamps map[string]stamp
	last   time.Time
}

type stamp struct {
	mod  time.Time
	size int64
}

// New reads the files once; an error names the file and reason. onErr,
// when set, hears about replacements that could not be loaded.
func New(f Files, onErr func(error)) (*Source, error) {
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("a server certificate and key are both required")
	}
	if f.Mutual && f.RootCert == "" {
		return nil, errors.New("mutual TLS needs a root certificate to verify clients against")
	}
	s := &Source{files: f, onErr: onErr, every: recheck}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Source) paths() []string {
	p := []string{s.files.Cert, s.files.Key}
	if s.files.RootCert != "" {
		p = append(p, s.files.RootCert)
	}
	return p
}

// load reads every file; the caller holds mu or owns s.
func (s *Source) load() error {
	stamps := map[string]stamp{}
	for _, p := range s.paths() {
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("TLS file: %w", err)
		}
		stamps[p] = stamp{st.ModTime(), st.Size()}
	}
	cert, err := tls.LoadX509KeyPair(s.files.Cert, s.files.Key)
	if err != nil {
		return fmt.Errorf("TLS key pair %s, %s: %w", s.files.Cert, s.files.Key, err)
	}
	var pool *x509.CertPool
	if s.files.RootCert != "" {
		pem, err := os.ReadFile(s.files.RootCert)
		if err != nil {
			return fmt.Errorf("TLS root certificate: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("TLS root certificate %s: no PEM certificate in it", s.files.RootCert)
		}
	}
	s.cert, s.pool, s.stamps, s.last = &cert, pool, stamps, time.Now()
	return nil
}

// current re-reads the files when they changed, and returns what is in
// force.
func (s *Source) current() (*tls.Certificate, *x509.CertPool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.last) < s.every {
		return s.cert, s.pool
	}
	s.last = time.Now()
	changed := false
	for _, p := range s.paths() {
		st, err := os.Stat(p)
		if err != nil || (stamp{st.ModTime(), st.Size()}) != s.stamps[p] {
			changed = true
			break
		}
	}
	if changed {
		old, oldPool, oldStamps := s.cert, s.pool, s.stamps
		if err := s.load(); err != nil {
			s.cert, s.pool, s.stamps = old, oldPool, oldStamps
			if s.onErr != nil {
				s.onErr(fmt.Errorf("keeping the previous TLS certificate: %w", err))
			}
		}
	}
	return s.cert, s.pool
}

// Config is the server configuration: TLS 1.2 or later, the current
// certificate on every handshake and, when Mutual, a client certificate
// required and verified against the current root bundle (as Triton, the
// root certificate is used for mutual TLS only). nextProtos is the ALPN
// list ("h2" for gRPC).
func (s *Source) Config(nextProtos ...string) *tls.Config {
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: nextProtos}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: nextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool := s.current()
			c := base.Clone()
			c.Certificates = []tls.Certificate{*cert}
			if s.files.Mutual {
				c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, pool
			}
			return c, nil
		},
	}
}
