// Package cloudtest runs a real S3-protocol server (gofakes3, in memory)
// on loopback for the tests of the cloud repositories, and sets the AWS
// environment those tests run under.
package cloudtest

import (
	"bytes"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// Server is an in-memory S3 server on a loopback port.
type Server struct {
	// Endpoint is "http://127.0.0.1:<port>".
	Endpoint string
	// HostPort is "127.0.0.1:<port>", as an s3://host:port/… URL writes it.
	HostPort string
	backend  *s3mem.Backend
	srv      *httptest.Server
}

// Start starts a server; it stops when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	backend := s3mem.New()
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	tb.Cleanup(srv.Close)
	return &Server{Endpoint: srv.URL, HostPort: srv.Listener.Addr().String(), backend: backend, srv: srv}
}

// CreateBucket makes a bucket.
func (s *Server) CreateBucket(tb testing.TB, name string) {
	tb.Helper()
	if err := s.backend.CreateBucket(name); err != nil {
		tb.Fatal(err)
	}
}

// Put stores an object.
func (s *Server) Put(tb testing.TB, bucket, key string, data []byte) {
	tb.Helper()
	if _, err := s.backend.PutObject(bucket, key, map[string]string{}, bytes.NewReader(data), int64(len(data)), nil); err != nil {
		tb.Fatal(err)
	}
}

// Delete removes an object.
func (s *Server) Delete(tb testing.TB, bucket, key string) {
	tb.Helper()
	if _, err := s.backend.DeleteObject(bucket, key); err != nil {
		tb.Fatal(err)
	}
}

// Upload stores every file under dir as bucket/prefix/<relative path>,
// and an empty directory as a marker object ("<path>/").
func (s *Server) Upload(tb testing.TB, bucket, prefix, dir string) {
	tb.Helper()
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		key := prefix + filepath.ToSlash(rel)
		if info.IsDir() {
			entries, err := os.ReadDir(p)
			if err == nil && len(entries) == 0 {
				s.Put(tb, bucket, key+"/", nil)
			}
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		s.Put(tb, bucket, key, data)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// Credentials sets the AWS environment to static test credentials and
// keeps the SDK off everything else: no shared files, no instance
// metadata service.
func Credentials(tb testing.TB) {
	tb.Helper()
	NoCredentials(tb)
	tb.Setenv("AWS_ACCESS_KEY_ID", "nereid-test")
	tb.Setenv("AWS_SECRET_ACCESS_KEY", "nereid-test-secret")
	tb.Setenv("AWS_REGION", "us-east-1")
}

// NoCredentials clears every AWS credential source the SDK would find.
func NoCredentials(tb testing.TB) {
	tb.Helper()
	none := filepath.Join(tb.TempDir(), "none")
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
		"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"} {
		tb.Setenv(k, "")
		os.Unsetenv(k)
	}
	tb.Setenv("AWS_CONFIG_FILE", none)
	tb.Setenv("AWS_SHARED_CREDENTIALS_FILE", none)
	tb.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// ClosedPort returns a loopback host:port nothing listens on.
func ClosedPort(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
