package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/nereid-project/nereid/server"
	"github.com/nereid-project/nereid/server/sagemaker"
)

// sagemakerConfig is the SageMaker listener: Triton's --allow-sagemaker,
// --sagemaker-port, --sagemaker-safe-port-range and
// --sagemaker-thread-count, and Nereid's flags for what Triton's server
// reads from SAGEMAKER_TRITON_* variables (nereid serve sets them).
type sagemakerConfig struct {
	allow         bool
	address       string
	port          int
	safeRange     portRange
	threads       int
	pingMode      sagemaker.PingMode
	defaultModel  string
	inferenceType sagemaker.InferenceType
	modelRoot     string
}

// portRange is --sagemaker-safe-port-range=<lo>-<hi>; the zero value is
// unset.
type portRange struct{ lo, hi int }

func (r *portRange) String() string {
	if r.hi == 0 {
		return ""
	}
	return strconv.Itoa(r.lo) + "-" + strconv.Itoa(r.hi)
}

func (r *portRange) Set(v string) error {
	lo, hi, ok := strings.Cut(v, "-")
	l, err1 := strconv.Atoi(strings.TrimSpace(lo))
	h, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if !ok || err1 != nil || err2 != nil || l < 1 || h > 65535 || l > h {
		return fmt.Errorf("%q is not <lo>-<hi> with 1 <= lo <= hi <= 65535", v)
	}
	r.lo, r.hi = l, h
	return nil
}

func (r *portRange) contains(port int) bool { return r.hi == 0 || (port >= r.lo && port <= r.hi) }

func (c *sagemakerConfig) register(fs *flag.FlagSet) {
	c.pingMode, c.inferenceType = sagemaker.PingReady, sagemaker.InferTensors
	fs.BoolVar(&c.allow, "allow-sagemaker", false, "serve Amazon SageMaker's hosting API: /ping, /invocations and the multi-model /models endpoints")
	fs.StringVar(&c.address, "sagemaker-address", "0.0.0.0", "SageMaker listen address (Nereid only: Triton always listens on 0.0.0.0)")
	fs.IntVar(&c.port, "sagemaker-port", 8080, "SageMaker port")
	fs.Var(&c.safeRange, "sagemaker-safe-port-range", "<lo>-<hi>: refuse to start when another enabled listener (HTTP, gRPC, metrics) has a port outside it")
	fs.IntVar(&c.threads, "sagemaker-thread-count", 8,
		"SageMaker requests handled at once (inference and model load, list, unload); more wait for a free slot; /ping is always answered (0: no bound)")
	fs.Func("sagemaker-ping-mode", "what /ping reports: ready (the server is ready) or live (it is live; multi-model endpoints) (default ready; Nereid only, set by nereid serve)", func(v string) error {
		m, err := sagemaker.ParsePingMode(v)
		c.pingMode = m
		return err
	})
	fs.StringVar(&c.defaultModel, "sagemaker-default-model", "", "the model /invocations serves (Nereid only, set by nereid serve)")
	fs.Func("sagemaker-inference-type", "how /invocations reads its body: infer (KServe v2), generate or generate_stream (default infer; Nereid only, set by nereid serve)", func(v string) error {
		t, err := sagemaker.ParseInferenceType(v)
		c.inferenceType = t
		return err
	})
	fs.StringVar(&c.modelRoot, "sagemaker-model-root", sagemaker.DefaultModelRoot,
		"directory of multi-model artefacts: a load's url must be <root>/<name>/model[/<subdir>] (Nereid only)")
}

// checkSafePorts refuses a listener port outside --sagemaker-safe-port-range.
func (c *sagemakerConfig) checkSafePorts(cfg *config) error {
	if !c.allow || c.safeRange.hi == 0 {
		return nil
	}
	for _, l := range []struct {
		on   bool
		what string
		port int
	}{
		{cfg.allowHTTP, "http-port", cfg.httpPort},
		{cfg.allowGRPC, "grpc-port", cfg.grpcPort},
		{cfg.allowMetrics, "metrics-port", cfg.metricsPort},
	} {
		if l.on && !c.safeRange.contains(l.port) {
			return fmt.Errorf("--%s=%d is outside --sagemaker-safe-port-range=%s", l.what, l.port, c.safeRange.String())
		}
	}
	return nil
}

// listenSageMaker starts the SageMaker listener when --allow-sagemaker is
// set; servers.shutdown stops it with the others.
func (s *servers) listenSageMaker(c *config, core *server.Server, serve func(string, func() error)) error {
	sc := &c.sagemaker
	if !sc.allow {
		return nil
	}
	if err := sc.checkSafePorts(c); err != nil {
		return err
	}
	if sc.port < 0 || sc.port > 65535 {
		return fmt.Errorf("--sagemaker-port: %d is not a port number", sc.port)
	}
	if sc.threads < 0 {
		return fmt.Errorf("--sagemaker-thread-count: %d must not be negative", sc.threads)
	}
	ln, err := net.Listen("tcp", hostPort(sc.address, sc.port))
	if err != nil {
		return err
	}
	ln = guardListener(ln, "sagemaker", c.conns.httpMaxConns, s.log)
	s.sagemaker = sagemaker.New(core, sagemaker.Options{
		PingMode:      sc.pingMode,
		DefaultModel:  sc.defaultModel,
		InferenceType: sc.inferenceType,
		ModelRoot:     sc.modelRoot,
		MaxInputSize:  c.httpMaxInputSize,
		Workers:       sc.threads,
		PayloadBudget: s.budget,
		Restricted:    c.obs.httpRestricted,
		Logger:        s.log,
	})
	serve("sagemaker", func() error { return s.sagemaker.Serve(ln) })
	s.log.Info().Str("address", ln.Addr().String()).Str("ping_mode", string(sc.pingMode)).
		Str("default_model", sc.defaultModel).Msg("started SageMaker service")
	return nil
}

// shutdownSageMaker drains the SageMaker listener until ctx ends.
func (s *servers) shutdownSageMaker(ctx context.Context) {
	if s.sagemaker == nil {
		return
	}
	if err := s.sagemaker.Shutdown(ctx); err != nil {
		s.log.Warn().Err(err).Msg("SageMaker shutdown")
	}
}
