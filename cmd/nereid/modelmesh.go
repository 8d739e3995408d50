package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"time"

	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/server"
	"github.com/nereid-project/nereid/server/modelmesh"
)

// modelmeshConfig is ModelMesh's model-runtime service (Nereid only:
// Triton needs ModelMesh's adapter container for it).
type modelmeshConfig struct {
	allow            bool
	address          string
	port             int
	defaultModelSize int64
	loadTimeoutSecs  int
}

func (c *modelmeshConfig) register(fs *flag.FlagSet) {
	fs.BoolVar(&c.allow, "allow-modelmesh", false,
		"serve ModelMesh's model-runtime gRPC API (mmesh.ModelRuntime), so that Nereid is a ModelMesh serving runtime without an adapter; "+
			"needs --model-control-mode=explicit and --model-cache-memory (Nereid only)")
	fs.StringVar(&c.address, "modelmesh-address", "127.0.0.1", "ModelMesh model-runtime listen address: ModelMesh calls it from its container in the same pod (Nereid only)")
	fs.IntVar(&c.port, "modelmesh-port", 8085, "ModelMesh model-runtime port: the ServingRuntime's grpcEndpoint (Nereid only)")
	fs.Int64Var(&c.defaultModelSize, "modelmesh-default-model-size", modelmesh.DefaultModelSize,
		"bytes ModelMesh assumes for a model before its size is known; conservative: most models should be smaller (Nereid only)")
	fs.IntVar(&c.loadTimeoutSecs, "modelmesh-load-timeout-secs", int(modelmesh.DefaultLoadTimeout/time.Second),
		"seconds a ModelMesh model load may take, reported to ModelMesh (Nereid only)")
}

// finish checks the flags against the ones the service relies on.
func (c *modelmeshConfig) finish(cfg *config) error {
	switch {
	case c.port < 0 || c.port > 65535:
		return fmt.Errorf("--modelmesh-port: %d is not a port number", c.port)
	case c.defaultModelSize <= 0:
		return fmt.Errorf("--modelmesh-default-model-size: %d must be positive", c.defaultModelSize)
	case c.loadTimeoutSecs <= 0 || c.loadTimeoutSecs > math.MaxUint32/1000:
		return fmt.Errorf("--modelmesh-load-timeout-secs: %d must be between 1 and %d", c.loadTimeoutSecs, math.MaxUint32/1000)
	case !c.allow:
		return nil
	case cfg.controlMode != repository.ModeExplicit:
		return fmt.Errorf("--allow-modelmesh=true needs --model-control-mode=explicit: ModelMesh loads and unloads the models")
	case cfg.cache.budget <= 0:
		return fmt.Errorf("--allow-modelmesh=true needs --model-cache-memory: it is the capacity ModelMesh fills with models")
	case !cfg.allowGRPC:
		return fmt.Errorf("--allow-modelmesh=true needs the gRPC port (--allow-grpc=true): ModelMesh sends inference there")
	}
	return nil
}

// listenModelMesh starts the ModelMesh model-runtime listener when
// --allow-modelmesh is set; servers.shutdown stops it with the others.
func (s *servers) listenModelMesh(c *config, core *server.Server, serve func(string, func() error)) error {
	mc := &c.modelmesh
	if !mc.allow {
		return nil
	}
	ln, err := net.Listen("tcp", hostPort(mc.address, mc.port))
	if err != nil {
		return err
	}
	mm, err := modelmesh.New(core, modelmesh.Options{
		Capacity:         c.cache.budget,
		DefaultModelSize: mc.defaultModelSize,
		LoadConcurrency:  c.cache.loadThreads,
		LoadTimeout:      time.Duration(mc.loadTimeoutSecs) * time.Second,
		Version:          version,
		WorkDir:          os.TempDir(),
		Logger:           s.log,
	})
	if err != nil {
		ln.Close()
		return err
	}
	s.modelmesh = mm
	gln := guardListener(ln, "modelmesh", auxiliaryListenerCap, s.log)
	serve("modelmesh", func() error { return mm.Serve(gln) })
	s.log.Info().Str("address", ln.Addr().String()).Int64("capacity_bytes", c.cache.budget).
		Int("inference_grpc_port", c.grpcPort).Msg("started ModelMesh model-runtime service")
	return nil
}

// shutdownModelMesh drains the ModelMesh listener until ctx ends.
func (s *servers) shutdownModelMesh(ctx context.Context) {
	if s.modelmesh == nil {
		return
	}
	if err := s.modelmesh.Shutdown(ctx); err != nil {
		s.log.Warn().Err(err).Msg("ModelMesh model-runtime shutdown")
	}
}
