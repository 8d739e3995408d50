package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/nereid-project/nereid/asyncinfer"
	"github.com/nereid-project/nereid/server"
)

// asyncConfig is the asynchronous inference listener (Nereid only:
// Triton has none).
type asyncConfig struct {
	allow           bool
	address         string
	port            int
	dir             string
	maxRequestBytes int64
	maxQueue        int
	maxConcurrent   int
	maxAttempts     int
	ttlSecs         int
	notifyAttempts  int
	notifySecs      int
}

func (c *asyncConfig) register(fs *flag.FlagSet) {
	fs.BoolVar(&c.allow, "allow-async", false,
		"serve asynchronous inference: requests queued on disk, answered 202 with an id, results fetched later (Nereid only)")
	fs.StringVar(&c.address, "async-address", "", "asynchronous inference listen address (default: --http-address; Nereid only)")
	fs.IntVar(&c.port, "async-port", 8003, "asynchronous inference port (Nereid only)")
	fs.StringVar(&c.dir, "async-dir", "",
		"directory of the asynchronous queue, request bodies and results; one server per directory (default: nereid-async in the user cache directory; Nereid only)")
	fs.Int64Var(&c.maxRequestBytes, "async-max-request-bytes", asyncinfer.DefaultMaxRequestBytes,
		"largest asynchronous request body in bytes, after decompression; larger ones are refused with 413 (Nereid only)")
	fs.IntVar(&c.maxQueue, "async-max-queue", asyncinfer.DefaultMaxQueue,
		"asynchronous requests pending or running at once; more are refused with 503 (Nereid only)")
	fs.IntVar(&c.maxConcurrent, "async-max-concurrent-invocations", asyncinfer.DefaultMaxConcurrent,
		"asynchronous requests of one model executing at once (Nereid only)")
	fs.IntVar(&c.maxAttempts, "async-max-attempts", asyncinfer.DefaultMaxAttempts,
		"executions an asynchronous request may start: one interrupted by a crash runs again at the next start until then, and then fails (Nereid only)")
	fs.IntVar(&c.ttlSecs, "async-result-ttl-secs", int(asyncinfer.DefaultResultTTL/time.Second),
		"seconds a finished asynchronous request's result or error is kept (Nereid only)")
	fs.IntVar(&c.notifyAttempts, "async-notify-attempts", asyncinfer.DefaultNotifyAttempts,
		"deliveries tried for each webhook notification, with a doubling backoff from 1 s (Nereid only)")
	fs.IntVar(&c.notifySecs, "async-notify-timeout-secs", int(asyncinfer.DefaultNotifyTimeout/time.Second),
		"seconds each webhook delivery may take (Nereid only)")
}

// finish checks the flags and fills in the defaults that depend on
// others.
func (c *asyncConfig) finish(cfg *config) error {
	if c.port < 0 || c.port > 65535 {
		return fmt.Errorf("--async-port: %d is not a port number", c.port)
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"async-max-request-bytes", c.maxRequestBytes}, {"async-max-queue", int64(c.maxQueue)},
		{"async-max-concurrent-invocations", int64(c.maxConcurrent)}, {"async-max-attempts", int64(c.maxAttempts)},
		{"async-result-ttl-secs", int64(c.ttlSecs)}, {"async-notify-attempts", int64(c.notifyAttempts)},
		{"async-notify-timeout-secs", int64(c.notifySecs)},
	} {
		if f.v <= 0 {
			return fmt.Errorf("--%s: %d must be positive", f.name, f.v)
		}
	}
	if c.address == "" {
		c.address = cfg.httpAddress
	}
	if c.allow && c.dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return fmt.Errorf("--async-dir is needed: %w", err)
		}
		c.dir = filepath.Join(base, "nereid-async")
	}
	return nil
}

// listenAsync opens the queue and starts the asynchronous inference
// listener when --allow-async is set; servers.shutdown stops it with the
// others.
func (s *servers) listenAsync(c *config, core *server.Server, serve func(string, func() error)) error {
	ac := &c.async
	if !ac.allow {
		return nil
	}
	ln, err := net.Listen("tcp", hostPort(ac.address, ac.port))
	if err != nil {
		return err
	}
	var aln net.Listener = guardListener(ln, "async", c.conns.httpMaxConns, s.log)
	if aln, err = c.httpTLS.wrap(aln, s.log); err != nil {
		ln.Close()
		return err
	}
	svc, err := asyncinfer.New(core, asyncinfer.Options{
		Dir:                  ac.dir,
		MaxRequestBytes:      ac.maxRequestBytes,
		MaxQueue:             ac.maxQueue,
		MaxConcurrent:        ac.maxConcurrent,
		MaxAttempts:          ac.maxAttempts,
		ResultTTL:            time.Duration(ac.ttlSecs) * time.Second,
		LoadOnDemand:         c.cache.onDemand,
		Restricted:           c.obs.httpRestricted,
		HeaderForwardPattern: c.httpForward,
		ReadTimeout:          c.conns.httpReadTimeout,
		IdleTimeout:          c.conns.httpIdleTimeout,
		NotifyAttempts:       ac.notifyAttempts,
		NotifyTimeout:        time.Duration(ac.notifySecs) * time.Second,
		Registerer:           s.obs.registerer(),
		Logger:               s.log,
	})
	if err != nil {
		ln.Close()
		return err
	}
	s.async = svc
	serve("async", func() error { return svc.Serve(aln) })
	s.log.Info().Str("address", ln.Addr().String()).Str("dir", ac.dir).Bool("tls", c.httpTLS.useSSL).
		Msg("started asynchronous inference service")
	return nil
}

// shutdownAsync drains the asynchronous listener and executions until ctx
// ends; what is left stays queued for the next start.
func (s *servers) shutdownAsync(ctx context.Context) {
	if s.async == nil {
		return
	}
	if err := s.async.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn().Err(err).Msg("asynchronous inference shutdown")
	}
}
