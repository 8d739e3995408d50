package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/asyncinfer"
	"github.com/nereid-project/nereid/batch"
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
	// jobs is the batch job API, served on the same listener
	// (batchjobs.go).
	jobs batchJobsConfig
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
	c.jobs.register(fs)
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
	if err := c.jobs.finish(); err != nil {
		return err
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

// longJobs is the listener of long jobs: one HTTP server for
// asynchronous inference (servers.async, when on) and the batch job API
// (jobs, when on), which longJobsHandler routes between.
type longJobs struct {
	srv  *http.Server
	jobs *batch.Jobs // nil without --allow-batch-jobs
}

// listenAsync opens the queue and the batch job list and starts the
// listener of long jobs when --allow-async or --allow-batch-jobs is set;
// servers.shutdown stops it with the others.
func (s *servers) listenAsync(c *config, core *server.Server, serve func(string, func() error)) error {
	ac := &c.async
	if !ac.allow && !ac.jobs.allow {
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
	var asyncHandler, jobsHandler http.Handler
	if ac.allow {
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
			NotifyAttempts:       ac.notifyAttempts,
			NotifyTimeout:        time.Duration(ac.notifySecs) * time.Second,
			Registerer:           s.obs.registerer(),
			Logger:               s.log,
		})
		if err != nil {
			ln.Close()
			return err
		}
		s.async, asyncHandler = svc, svc
	}
	lj := &longJobs{}
	if ac.jobs.allow {
		if lj.jobs, err = s.openBatchJobs(c, core); err != nil {
			ln.Close()
			return err // servers.shutdown closes the asynchronous service
		}
		jobsHandler = lj.jobs
	}
	lj.srv = &http.Server{
		Handler:           longJobsHandler(asyncHandler, jobsHandler),
		ReadHeaderTimeout: c.conns.httpReadTimeout,
		IdleTimeout:       c.conns.httpIdleTimeout,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          log.New(debugWriter{s.log}, "", 0),
	}
	s.longJobs = lj
	serve("async", func() error {
		if err := lj.srv.Serve(aln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	asyncDir, jobsRoot := "", ""
	if ac.allow {
		asyncDir = ac.dir
	}
	if ac.jobs.allow {
		jobsRoot = ac.jobs.root
	}
	s.log.Info().Str("address", ln.Addr().String()).Bool("tls", c.httpTLS.useSSL).Bool("async", ac.allow).Str("dir", asyncDir).
		Bool("batch_jobs", ac.jobs.allow).Str("batch_jobs_root", jobsRoot).Msg("started long jobs service")
	return nil
}

// debugWriter writes net/http's own messages (TLS handshake failures,
// mostly) as debug lines.
type debugWriter struct{ log zerolog.Logger }

func (w debugWriter) Write(p []byte) (int, error) {
	w.log.Debug().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

// shutdownAsync drains the listener of long jobs, then the asynchronous
// executions until ctx ends; what is left stays queued for the next
// start. Running batch jobs are stopped at once, side by side, and resume
// at the next start.
func (s *servers) shutdownAsync(ctx context.Context) {
	lj := s.longJobs
	if lj == nil {
		return
	}
	if err := lj.srv.Shutdown(ctx); err != nil {
		s.log.Warn().Err(err).Msg("long jobs listener shutdown: requests cut off")
		_ = lj.srv.Close()
	}
	var wg sync.WaitGroup
	if lj.jobs != nil {
		wg.Go(func() {
			if err := lj.jobs.Close(ctx); err != nil {
				s.log.Warn().Err(err).Msg("batch jobs shutdown")
			}
		})
	}
	if s.async != nil {
		if err := s.async.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			s.log.Warn().Err(err).Msg("asynchronous inference shutdown")
		}
	}
	wg.Wait()
}
