// Command fakes3 serves an in-memory S3-protocol server (gofakes3) on
// loopback for Nereid's end-to-end tests of s3:// model repositories.
// It creates one bucket, uploads a local directory into it, prints
// "endpoint http://127.0.0.1:<port>" and serves until SIGTERM, SIGINT or
// the end of its standard input. Requests are not authenticated: the
// tests change objects with plain HTTP PUT and DELETE.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "fakes3:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	bucket := flag.String("bucket", "models", "bucket to create")
	upload := flag.String("upload", "", "local directory to upload into the bucket")
	prefix := flag.String("prefix", "", "key prefix of the uploaded files (e.g. repo/)")
	flag.Parse()

	backend := s3mem.New()
	if err := backend.CreateBucket(*bucket); err != nil {
		return err
	}
	if *upload != "" {
		if err := uploadDir(backend, *bucket, *prefix, *upload); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: gofakes3.New(backend).Server(), ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("endpoint http://%s\n", ln.Addr())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	stdinDone := make(chan struct{})
	go func() { // ends with the process: stdin closing is a stop signal
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stdinDone)
	}()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case <-stdinDone:
	case err := <-served:
		return err
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return err
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func uploadDir(backend *s3mem.Backend, bucket, prefix, dir string) error {
	return filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		key := prefix + filepath.ToSlash(rel)
		var data []byte
		if info.IsDir() {
			entries, err := os.ReadDir(p)
			if err != nil || len(entries) > 0 {
				return err
			}
			key += "/" // an empty directory's marker
		} else if data, err = os.ReadFile(p); err != nil {
			return err
		}
		_, err = backend.PutObject(bucket, key, map[string]string{}, bytes.NewReader(data), int64(len(data)), nil)
		return err
	})
}
