package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/logging"
	"github.com/nereid-project/nereid/metrics"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/server"
	"github.com/nereid-project/nereid/server/restricted"
	"github.com/nereid-project/nereid/trace"
)

// observabilityConfig holds the flags of logging, metrics, tracing and the
// restricted APIs.
type observabilityConfig struct {
	logFormat logging.Format
	logFile   string

	allowGPUMetrics bool
	allowCPUMetrics bool
	metricsInterval time.Duration
	metricsConfig   metrics.Config

	trace trace.Settings

	httpRestricted restricted.Rules
	grpcRestricted restricted.Rules

	// raw flag values, parsed by finish
	rawLogFormat      string
	rawIntervalMS     int
	rawMetricsConfig  stringList
	rawTraceConfig    stringList
	rawHTTPRestricted stringList
	rawGRPCRestricted stringList
	deprecatedTrace   map[string]*string
}

// register declares the flags on fs.
func (o *observabilityConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&o.rawLogFormat, "log-format", "default", "log line format: default or ISO8601")
	fs.StringVar(&o.logFile, "log-file", "", "write the log to this file instead of standard error")
	fs.BoolVar(&o.allowGPUMetrics, "allow-gpu-metrics", true, "serve GPU metrics when a GPU and its driver are found")
	fs.BoolVar(&o.allowCPUMetrics, "allow-cpu-metrics", true, "serve CPU utilization and memory metrics")
	fs.IntVar(&o.rawIntervalMS, "metrics-interval-ms", 2000, "milliseconds between refreshes of the CPU and GPU metrics")
	fs.Var(&o.rawMetricsConfig, "metrics-config", "<setting>=<value>: counter_latencies, summary_latencies, summary_quantiles (repeatable)")
	fs.Var(&o.rawTraceConfig, "trace-config", "<setting>=<value> or <mode>,<setting>=<value> (repeatable)")
	fs.Var(&o.rawHTTPRestricted, "http-restricted-api", "<category>[,<category>...]:<header>=<value> (repeatable)")
	fs.Var(&o.rawGRPCRestricted, "grpc-restricted-protocol", "<category>[,<category>...]:<header>=<value> (repeatable)")
	// Triton's deprecated trace flags, folded into --trace-config.
	o.deprecatedTrace = map[string]*string{}
	for _, name := range []string{"trace-file", "trace-level", "trace-rate", "trace-count", "trace-log-frequency"} {
		o.deprecatedTrace[name] = fs.String(name, "", "deprecated: use --trace-config")
	}
}

// finish validates and converts the raw flag values.
func (o *observabilityConfig) finish() error {
	f, ok := logging.ParseFormat(o.rawLogFormat)
	if !ok {
		return fmt.Errorf("invalid argument for --log-format, got: %s", o.rawLogFormat)
	}
	o.logFormat = f
	if o.rawIntervalMS <= 0 {
		return fmt.Errorf("--metrics-interval-ms: %d must be positive", o.rawIntervalMS)
	}
	o.metricsInterval = time.Duration(o.rawIntervalMS) * time.Millisecond
	var err error
	if o.metricsConfig, err = metrics.ParseConfig(o.rawMetricsConfig); err != nil {
		return err
	}
	var traceCfg []string
	for name, prefix := range map[string]string{"trace-level": "level=", "trace-rate": "rate=", "trace-count": "count="} {
		if v := *o.deprecatedTrace[name]; v != "" {
			traceCfg = append(traceCfg, prefix+v)
		}
	}
	if v := *o.deprecatedTrace["trace-file"]; v != "" {
		traceCfg = append(traceCfg, "triton,file="+v)
	}
	if v := *o.deprecatedTrace["trace-log-frequency"]; v != "" {
		traceCfg = append(traceCfg, "triton,log-frequency="+v)
	}
	if o.trace, err = trace.ParseConfig(append(traceCfg, o.rawTraceConfig...)); err != nil {
		return err
	}
	o.httpRestricted, o.grpcRestricted = restricted.Rules{}, restricted.Rules{}
	for _, v := range o.rawHTTPRestricted {
		if err := o.httpRestricted.AddHTTP(v); err != nil {
			return err
		}
	}
	for _, v := range o.rawGRPCRestricted {
		if err := o.grpcRestricted.AddGRPC(v); err != nil {
			return err
		}
	}
	return nil
}

// newLogger builds the process logger and its run-time controls from the
// logging flags.
func newLogger(c *config, w io.Writer) (*logging.Control, zerolog.Logger, error) {
	return logging.New(logging.Options{
		Info: c.logInfo, Warning: c.logWarning, Error: c.logError, Verbose: c.logVerbose,
		Format: c.obs.logFormat, File: c.obs.logFile, Out: w,
	})
}

// observability owns the metrics registry and collectors, the metrics
// poller's goroutine and the tracer; close stops them in order.
type observability struct {
	registry *prometheus.Registry
	models   *metrics.Models // nil without --allow-metrics
	cache    *metrics.Cache  // nil without --allow-metrics
	tracer   *trace.Tracer

	stopPoller context.CancelFunc
	pollerDone chan struct{}
}

func newObservability(c *config, log zerolog.Logger) (*observability, error) {
	o := &observability{registry: prometheus.NewRegistry()}
	tracer, err := trace.New(trace.Options{Settings: c.obs.trace, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("--trace-config: %w", err)
	}
	o.tracer = tracer
	if !c.allowMetrics {
		return o, nil
	}
	o.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if o.cache, err = metrics.NewCache(o.registry); err != nil {
		return nil, err
	}
	if o.models, err = metrics.NewModels(o.registry, c.obs.metricsConfig); err != nil {
		return nil, err
	}
	poller, err := metrics.NewPoller(o.registry, metrics.PollerOptions{
		Interval: c.obs.metricsInterval, CPU: c.obs.allowCPUMetrics, GPU: c.obs.allowGPUMetrics, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	o.stopPoller, o.pollerDone = cancel, make(chan struct{})
	go func() {
		defer close(o.pollerDone)
		poller.Run(ctx)
	}()
	return o, nil
}

// metricsFactory is what the loader calls for each version that loads.
func (o *observability) metricsFactory() server.MetricsFactory {
	if o.models == nil {
		return nil
	}
	return func(name string, version int64, cfg *inferencepb.ModelConfig) server.ModelMetrics {
		opts := metrics.ReporterOptions{
			Tags:          cfg.GetMetricTags(),
			ResponseCache: cfg.GetResponseCache().GetEnable(),
			Decoupled:     cfg.GetModelTransactionPolicy().GetDecoupled(),
		}
		for _, mc := range cfg.GetModelMetrics().GetMetricControl() {
			if mc.GetMetricIdentifier().GetFamily() == metrics.FirstResponseHistogram {
				opts.FirstResponseBuckets = mc.GetHistogramOptions().GetBuckets()
			}
		}
		return o.models.Reporter(name, version, opts)
	}
}

// cacheMetrics receives the model cache's events; nil without
// --allow-metrics.
func (o *observability) cacheMetrics() repository.CacheMetrics {
	if o.cache == nil {
		return nil
	}
	return o.cache
}

// registerer is where models register metric families of their own; nil
// without --allow-metrics.
func (o *observability) registerer() prometheus.Registerer {
	if o.models == nil {
		return nil
	}
	return o.registry
}

// handler serves the registry on /metrics.
func (o *observability) handler() http.Handler { return metrics.Handler(o.registry) }

// close stops the poller and writes the traces still held.
func (o *observability) close(ctx context.Context) error {
	if o.stopPoller != nil {
		o.stopPoller()
		<-o.pollerDone
	}
	return errors.Join(o.tracer.Close(ctx))
}
