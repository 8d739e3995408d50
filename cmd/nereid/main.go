// Command nereid serves models from Triton-layout model repositories over the
// KServe v2 / Triton HTTP and gRPC protocols. Its flags keep Triton's names so
// existing launch scripts work unchanged.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"

	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/asyncinfer"
	_ "github.com/nereid-project/nereid/backends/aggregate" // registers the aggregate backend
	_ "github.com/nereid-project/nereid/backends/identity"  // registers the identity backend
	_ "github.com/nereid-project/nereid/backends/repeat"    // registers the repeat backend
	_ "github.com/nereid-project/nereid/backends/route"     // registers the route backend
	_ "github.com/nereid-project/nereid/backends/square"    // registers the square backend
	"github.com/nereid-project/nereid/logging"
	"github.com/nereid-project/nereid/payload"
	"github.com/nereid-project/nereid/server"
	grpcfront "github.com/nereid-project/nereid/server/grpc"
	httpfront "github.com/nereid-project/nereid/server/http"
	"github.com/nereid-project/nereid/server/modelmesh"
	"github.com/nereid-project/nereid/server/sagemaker"
)

// version is the Nereid release, reported in server metadata.
var version = "0.1.0"

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run wires the components, serves until SIGINT or SIGTERM, then shuts down
// in order: stop accepting, drain in-flight requests, unload models.
func run(args []string, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "serve" {
		return runServe(args[1:], stderr) // serve.go: SageMaker's entry point
	}
	if len(args) > 0 && args[0] == "batch" {
		return runBatch(args[1:], stderr) // batch.go: batch transform of a data set
	}
	if len(args) > 0 && args[0] == "analyze" {
		return runAnalyze(args[1:], os.Stdout, stderr) // analyze.go: the configuration recommender
	}
	c, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, errHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "error:", err)
		return 2
	}
	logCtl, log, err := newLogger(c, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 2
	}
	defer logCtl.Close()
	obs, err := newObservability(c, log)
	if err != nil {
		log.Error().Err(err).Msg("cannot start metrics and tracing")
		return 1
	}
	defer func() {
		if err := obs.close(context.Background()); err != nil {
			log.Warn().Err(err).Msg("closing metrics and traces")
		}
	}()
	if len(c.warnedFlags) > 0 {
		log.Warn().Strs("flags", c.warnedFlags).Msg("Triton flags with no effect in Nereid (see --help)")
	}
	log.Info().Uint64("soft", c.conns.descriptorSoftLimit).Uint64("hard", c.conns.descriptorHardLimit).
		Int("http_max_connections", c.conns.httpMaxConns).Int("grpc_max_connections", c.conns.grpcMaxConns).
		Msg("file descriptor limit")
	log.Info().Int64("payload_budget_bytes", c.mem.payloadBudget).Int64("memory_bytes", c.mem.memoryAvailable).
		Int("grpc_max_message_size", c.mem.grpcMaxMessageSize).Msg("payload memory")
	if err := setupBackends(c, log); err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 2
	}
	if err := setupPython(c, log, obs.registerer()); err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 2
	}
	defer pythonBackend.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	p, err := buildCore(c, log, obs)
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		return 1
	}
	models, router, core := p.models, p.router, p.core

	shutdownModels := func() {
		sctx, cancel := context.WithTimeout(context.Background(), c.exitTimeout)
		defer cancel()
		if err := models.Close(sctx); err != nil {
			log.Warn().Err(err).Msg("unloading models")
		}
	}
	if err := models.Start(ctx); err != nil {
		log.Error().Msg(strings.TrimSpace("failed to load all models: " + err.Error()))
		if c.exitOnError {
			shutdownModels()
			return 1
		}
	}

	// Large payloads' memory goes back to the OS once they are done.
	releaser := payload.NewReleaser()
	releaserDone := make(chan struct{})
	go func() {
		defer close(releaserDone)
		releaser.Run(ctx)
	}()
	defer func() { stop(); <-releaserDone }()
	srv := &servers{log: log, obs: obs, logs: logCtl, budget: payload.NewBudget(c.mem.payloadBudget, releaser)}
	if err := srv.listen(c, core); err != nil {
		log.Error().Err(err).Msg("cannot listen")
		srv.shutdown(c.exitTimeout)
		shutdownModels()
		return 1
	}

	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		models.Run(ctx)
	}()
	routerDone := make(chan struct{})
	go func() {
		defer close(routerDone)
		if router != nil {
			router.Run(ctx)
		}
	}()

	exit := 0
	select {
	case <-ctx.Done():
		log.Info().Msg("signal received: shutting down")
	case err := <-srv.group.failed():
		log.Error().Err(err).Msg("server failed")
		exit = 1
	}
	stop()
	core.BeginShutdown()
	srv.shutdown(c.exitTimeout)
	srv.group.wait()
	if err := core.CloseSharedMemory(); err != nil {
		log.Warn().Err(err).Msg("unmapping shared-memory regions")
	}
	<-pollDone
	<-routerDone
	if router != nil {
		router.Close() // mirrored requests still running
	}
	shutdownModels()
	log.Info().Msg("stopped")
	return exit
}

// servers owns the network listeners and their serving goroutines.
type servers struct {
	log     zerolog.Logger
	obs     *observability
	logs    *logging.Control
	http    *httpfront.Server
	grpc    *grpcfront.Server
	metrics *http.Server
	pprof   *http.Server
	group   runGroup
	budget  *payload.Budget

	// sagemaker is the SageMaker listener (--allow-sagemaker); sagemaker.go.
	sagemaker *sagemaker.Server
	// modelmesh is ModelMesh's model-runtime listener (--allow-modelmesh); modelmesh.go.
	modelmesh *modelmesh.Server
	// async is the asynchronous inference listener (--allow-async); async.go.
	async *asyncinfer.Service
	// longJobs serves the batch jobs (--allow-batch-jobs); async.go.
	longJobs *longJobs
}

func (s *servers) listen(c *config, core *server.Server) error {
	serve := func(what string, fn func() error) { s.group.run(what, fn, s.log) }
	if err := s.listenSageMaker(c, core, serve); err != nil {
		return err
	}
	if err := s.listenModelMesh(c, core, serve); err != nil {
		return err
	}
	if err := s.listenAsync(c, core, serve); err != nil {
		return err
	}
	if c.allowHTTP {
		ln, err := net.Listen("tcp", hostPort(c.httpAddress, c.httpPort))
		if err != nil {
			return err
		}
		var hln net.Listener = guardListener(ln, "http", c.conns.httpMaxConns, s.log)
		if hln, err = c.httpTLS.wrap(hln, s.log); err != nil {
			ln.Close()
			return err
		}
		s.http = httpfront.New(core, httpfront.Options{
			MaxInputSize: c.httpMaxInputSize, PayloadBudget: s.budget, Logger: s.log,
			ReadTimeout: c.conns.httpReadTimeout, IdleTimeout: c.conns.httpIdleTimeout,
			MaxConnsPerIP: c.conns.httpMaxConnsPerPeer, HeaderForwardPattern: c.httpForward,
			Logging: s.logs, Tracer: s.obs.tracer, Restricted: c.obs.httpRestricted,
		})
		serve("http", func() error { return s.http.Serve(hln) })
		s.log.Info().Str("address", ln.Addr().String()).Bool("tls", c.httpTLS.useSSL).Bool("mutual_tls", c.httpTLS.mutual).
			Msg("started HTTP service")
	}
	if c.allowGRPC {
		ln, err := net.Listen("tcp", hostPort(c.grpcAddress, c.grpcPort))
		if err != nil {
			return err
		}
		ln = guardListener(ln, "grpc", c.conns.grpcMaxConns, s.log)
		creds, err := c.grpc.serverOptions(s.log)
		if err != nil {
			ln.Close()
			return err
		}
		s.grpc = grpcfront.New(core, grpcfront.Options{
			Logger: s.log, MaxMessageSize: c.mem.grpcMaxMessageSize, PayloadBudget: s.budget,
			Logging: s.logs, Tracer: s.obs.tracer, Restricted: c.obs.grpcRestricted,
			Keepalive: c.grpc.keepalive, KeepalivePolicy: c.grpc.policy,
			InferResponseCompression: c.grpc.compressionLevel, HeaderForwardPattern: c.grpcForward,
			ServerOptions: creds,
		})
		serve("grpc", func() error { return s.grpc.Serve(ln) })
		s.log.Info().Str("address", ln.Addr().String()).Bool("tls", c.grpc.tls.useSSL).Bool("mutual_tls", c.grpc.tls.mutual).
			Msg("started gRPC service")
	}
	if c.allowMetrics {
		ln, err := net.Listen("tcp", hostPort(c.metricsAddress, c.metricsPort))
		if err != nil {
			return err
		}
		var mln net.Listener = guardListener(ln, "metrics", auxiliaryListenerCap, s.log)
		if mln, err = c.metricsTLS.wrap(mln, s.log); err != nil {
			ln.Close()
			return err
		}
		s.metrics = &http.Server{Handler: s.obs.handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
		serve("metrics", func() error {
			if err := s.metrics.Serve(mln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		s.log.Info().Str("address", ln.Addr().String()).Bool("tls", c.metricsTLS.useSSL).Msg("started metrics service")
	}
	if c.pprofAddress != "" {
		ln, err := net.Listen("tcp", c.pprofAddress)
		if err != nil {
			return err
		}
		ln = guardListener(ln, "pprof", auxiliaryListenerCap, s.log)
		s.pprof = &http.Server{Handler: pprofHandler(), ReadHeaderTimeout: 10 * time.Second}
		serve("pprof", func() error {
			if err := s.pprof.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		s.log.Info().Str("address", ln.Addr().String()).Msg("started pprof service")
	}
	return nil
}

// pprofHandler serves the runtime profiles on their own mux, so that they
// appear only on --pprof-address and never on the metrics port.
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// shutdown stops accepting and waits up to timeout for in-flight requests.
func (s *servers) shutdown(timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if s.http != nil {
		// First answer every request on the open keep-alive connections
		// with Connection: close for a moment, so that their clients go
		// away rather than send a request into a connection that
		// Shutdown then closes under it.
		s.http.BeginDrain()
		t := time.NewTimer(min(httpDrainWindow, timeout/2))
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	// The front ends drain side by side, so neither keeps accepting work
	// while the other drains, and both get the whole timeout.
	var wg sync.WaitGroup
	if s.http != nil {
		wg.Go(func() {
			if err := s.http.Shutdown(ctx); err != nil {
				s.log.Warn().Err(err).Msg("HTTP shutdown")
			}
		})
	}
	wg.Go(func() { s.shutdownSageMaker(ctx) })
	wg.Go(func() { s.shutdownModelMesh(ctx) })
	wg.Go(func() { s.shutdownAsync(ctx) })
	if s.grpc != nil {
		wg.Go(func() {
			if err := s.grpc.Shutdown(ctx); err != nil {
				s.log.Warn().Err(err).Msg("gRPC shutdown: in-flight calls were cut off")
			}
		})
	}
	for _, hs := range []*http.Server{s.metrics, s.pprof} {
		if hs != nil {
			wg.Go(func() {
				if err := hs.Shutdown(ctx); err != nil {
					s.log.Warn().Err(err).Msg("metrics or pprof shutdown")
				}
			})
		}
	}
	wg.Wait()
}

// httpDrainWindow is how long the HTTP front end answers with
// Connection: close before it stops accepting and closes idle connections.
const httpDrainWindow = 500 * time.Millisecond

// runGroup owns the serving goroutines of the listeners: each runs until its
// server is shut down, and wait joins them all. The first one that fails
// is reported on failed(), which makes the server shut down; later failures
// (a listener failing while the others drain) are logged.
type runGroup struct {
	wg   sync.WaitGroup
	once sync.Once
	errc chan error // capacity 1: the first failure
}

func (g *runGroup) failed() <-chan error { return g.errs() }

func (g *runGroup) errs() chan error {
	g.once.Do(func() { g.errc = make(chan error, 1) })
	return g.errc
}

func (g *runGroup) run(what string, serve func() error, log zerolog.Logger) {
	errc := g.errs()
	g.wg.Go(func() {
		if err := serve(); err != nil {
			err = fmt.Errorf("%s: %w", what, err)
			select {
			case errc <- err:
			default:
				log.Error().Err(err).Msg("server failed while shutting down")
			}
		}
	})
}

// wait returns once every serving goroutine has returned.
func (g *runGroup) wait() { g.wg.Wait() }
