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
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	_ "github.com/nereid-project/nereid/backends/identity" // registers the identity backend
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/server"
	grpcfront "github.com/nereid-project/nereid/server/grpc"
	httpfront "github.com/nereid-project/nereid/server/http"
)

// version is the Nereid release, reported in server metadata.
var version = "0.1.0"

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func newLogger(c *config, w io.Writer) zerolog.Logger {
	level := zerolog.Disabled
	switch {
	case c.logVerbose > 0:
		level = zerolog.DebugLevel
	case c.logInfo:
		level = zerolog.InfoLevel
	case c.logWarning:
		level = zerolog.WarnLevel
	case c.logError:
		level = zerolog.ErrorLevel
	}
	return zerolog.New(zerolog.ConsoleWriter{Out: w, NoColor: true, TimeFormat: time.RFC3339Nano}).
		Level(level).With().Timestamp().Logger()
}

// run wires the components, serves until SIGINT or SIGTERM, then shuts down
// in order: stop accepting, drain in-flight requests, unload models.
func run(args []string, stderr io.Writer) int {
	c, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, errHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "error:", err)
		return 2
	}
	log := newLogger(c, stderr)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	loader := server.NewLoader(server.LoaderOptions{BackendConfig: c.backendConfig, Logger: log})
	models, err := repository.New(repository.Options{
		Paths:           c.repositories,
		Mode:            c.controlMode,
		StartupModels:   c.loadModels,
		PollInterval:    c.pollInterval,
		AutoComplete:    c.autoComplete(),
		ModelConfigName: c.modelConfigName,
		Loader:          loader,
		Logger:          log,
	})
	if err != nil {
		log.Error().Err(err).Msg("cannot open the model repository")
		return 1
	}
	core := server.New(models, server.Options{
		ID:              c.id,
		Version:         version,
		StrictReadiness: c.strictReadiness,
		Logger:          log,
	})

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

	srv := &servers{log: log}
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

	exit := 0
	select {
	case <-ctx.Done():
		log.Info().Msg("signal received: shutting down")
	case err := <-srv.errc:
		log.Error().Err(err).Msg("server failed")
		exit = 1
	}
	stop()
	core.BeginShutdown()
	srv.shutdown(c.exitTimeout)
	<-pollDone
	shutdownModels()
	log.Info().Msg("stopped")
	return exit
}

// servers owns the network listeners and their serving goroutines.
type servers struct {
	log     zerolog.Logger
	http    *httpfront.Server
	grpc    *grpcfront.Server
	metrics *http.Server
	errc    chan error
	running int
}

func (s *servers) listen(c *config, core *server.Server) error {
	s.errc = make(chan error, 3)
	serve := func(what string, fn func() error) {
		s.running++
		go func() {
			if err := fn(); err != nil {
				s.errc <- fmt.Errorf("%s: %w", what, err)
			}
		}()
	}
	if c.allowHTTP {
		ln, err := net.Listen("tcp", hostPort(c.httpAddress, c.httpPort))
		if err != nil {
			return err
		}
		s.http = httpfront.New(core, httpfront.Options{MaxInputSize: c.httpMaxInputSize, Logger: s.log})
		serve("http", func() error { return s.http.Serve(ln) })
		s.log.Info().Str("address", ln.Addr().String()).Msg("started HTTP service")
	}
	if c.allowGRPC {
		ln, err := net.Listen("tcp", hostPort(c.grpcAddress, c.grpcPort))
		if err != nil {
			return err
		}
		s.grpc = grpcfront.New(core, grpcfront.Options{Logger: s.log})
		serve("grpc", func() error { return s.grpc.Serve(ln) })
		s.log.Info().Str("address", ln.Addr().String()).Msg("started gRPC service")
	}
	if c.allowMetrics {
		ln, err := net.Listen("tcp", hostPort(c.metricsAddress, c.metricsPort))
		if err != nil {
			return err
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		s.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		serve("metrics", func() error {
			if err := s.metrics.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		s.log.Info().Str("address", ln.Addr().String()).Msg("started metrics service")
	}
	return nil
}

// shutdown stops accepting and waits up to timeout for in-flight requests.
func (s *servers) shutdown(timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if s.http != nil {
		if err := s.http.Shutdown(ctx); err != nil {
			s.log.Warn().Err(err).Msg("HTTP shutdown")
		}
	}
	if s.grpc != nil {
		if err := s.grpc.Shutdown(ctx); err != nil {
			s.log.Warn().Err(err).Msg("gRPC shutdown: in-flight calls were cut off")
		}
	}
	if s.metrics != nil {
		if err := s.metrics.Shutdown(ctx); err != nil {
			s.log.Warn().Err(err).Msg("metrics shutdown")
		}
	}
}
