package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/repository"
)

// config is every setting of the process, parsed from Triton-compatible
// flags. No other package reads flags or the environment.
type config struct {
	repositories        []string
	cloudMountDir       string // s3:// copies: --cloud-mount-directory, else TRITON_AWS_MOUNT_DIRECTORY; "": a temporary directory
	controlMode         repository.ControlMode
	loadModels          []string
	pollInterval        time.Duration
	strictModelConfig   bool
	disableAutoComplete bool
	modelConfigName     string
	exitOnError         bool
	strictReadiness     bool
	exitTimeout         time.Duration
	id                  string

	allowHTTP        bool
	httpAddress      string
	httpPort         int
	httpMaxInputSize int

	// conns holds the connection caps and timeouts (Nereid's flags).
	conns connConfig
	mem   memConfig
	cache cacheConfig
	grpc  grpcConfig
	// traffic is --traffic-config.
	traffic trafficConfig
	// httpTLS and metricsTLS are Nereid's TLS flags for the HTTP and
	// metrics ports (gRPC's are Triton's, in grpc).
	httpTLS, metricsTLS tlsFlags
	// sagemaker holds the SageMaker listener's flags.
	sagemaker sagemakerConfig
	async     asyncConfig // asynchronous inference (async.go)
	// modelmesh is ModelMesh's model-runtime service (modelmesh.go).
	modelmesh modelmeshConfig

	allowGRPC   bool
	grpcAddress string
	grpcPort    int

	// allowClientShm enables the system and CUDA shared-memory extensions.
	allowClientShm bool
	// maxShmRegions caps the registered shared-memory regions (Nereid's
	// --shared-memory-max-regions; 0: no cap).
	maxShmRegions int

	allowMetrics   bool
	metricsAddress string
	metricsPort    int

	// pprofAddress, when set, serves Go's runtime profiles (net/http/pprof)
	// on that address: a Nereid flag, off by default.
	pprofAddress string

	logVerbose int
	logInfo    bool
	logWarning bool
	logError   bool

	// obs holds the logging, metrics, trace and restricted-API flags.
	obs observabilityConfig

	// sched holds the rate limiter and response cache flags.
	sched schedulingConfig

	// warnedFlags are the Triton flags given that change nothing in
	// Nereid, logged once at start.
	warnedFlags []string
	// httpForward and grpcForward are the header-forward patterns; nil
	// forwards nothing.
	httpForward, grpcForward *regexp.Regexp
	loadRetries              int

	// backendConfig holds --backend-config=<backend>,<key>=<value>; the
	// global form without a backend name is stored under "".
	backendConfig map[string]map[string]string
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// errHelp is returned when --help was asked for.
var errHelp = errors.New("help requested")

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{backendConfig: map[string]map[string]string{}}
	fs := flag.NewFlagSet("nereid", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: nereid --model-repository=DIR [flags]   serve the repository (Triton's flags)
       nereid serve                              SageMaker's entry point: SAGEMAKER_* variables to flags
       nereid batch --help                       run a data set through a model (batch transform)
       nereid analyze --help                     sweep a model's configurations and recommend one
flags:
`)
		fs.PrintDefaults()
	}

	var repos, loads, backendCfg stringList
	fs.Var(&repos, "model-repository", "model repository: a directory, or s3://[http[s]://host:port/]bucket/path (repeatable)")
	fs.Var(&repos, "model-store", "alias of --model-repository")
	fs.StringVar(&c.cloudMountDir, "cloud-mount-directory", "", "existing directory that s3:// model repositories are copied into "+
		"(default $TRITON_AWS_MOUNT_DIRECTORY, else a new one under the OS temporary directory; the copies are removed at exit; Nereid only)")
	mode := fs.String("model-control-mode", "none", "model control mode: none, poll or explicit")
	fs.Var(&loads, "load-model", "model to load at start in explicit mode (repeatable; * loads all)")
	pollSecs := fs.Int("repository-poll-secs", 15, "seconds between repository scans in poll mode")
	fs.BoolVar(&c.strictModelConfig, "strict-model-config", false, "require complete config.pbtxt files (disables auto-complete)")
	fs.BoolVar(&c.disableAutoComplete, "disable-auto-complete-config", false, "do not complete configurations from the model files")
	fs.StringVar(&c.modelConfigName, "model-config-name", "", "use configs/<name>.pbtxt instead of config.pbtxt when present")
	fs.BoolVar(&c.exitOnError, "exit-on-error", true, "exit when a model fails to load at start")
	fs.BoolVar(&c.strictReadiness, "strict-readiness", true, "ready only when every model is ready")
	exitSecs := fs.Int("exit-timeout-secs", 30, "seconds to wait for in-flight requests at shutdown")
	fs.StringVar(&c.id, "id", "triton", "server name reported in server metadata (Triton's default, which clients may expect)")

	fs.BoolVar(&c.allowHTTP, "allow-http", true, "serve the HTTP/REST protocol")
	fs.StringVar(&c.httpAddress, "http-address", "0.0.0.0", "HTTP listen address")
	fs.IntVar(&c.httpPort, "http-port", 8000, "HTTP port")
	fs.IntVar(&c.httpMaxInputSize, "http-max-input-size", 64<<20, "largest HTTP request body in bytes")
	fs.BoolVar(&c.allowGRPC, "allow-grpc", true, "serve the gRPC protocol")
	fs.StringVar(&c.grpcAddress, "grpc-address", "0.0.0.0", "gRPC listen address")
	fs.IntVar(&c.grpcPort, "grpc-port", 8001, "gRPC port")
	fs.BoolVar(&c.allowClientShm, "allow-client-shm", false, "allow clients to register and use shared-memory regions")
	fs.IntVar(&c.maxShmRegions, "shared-memory-max-regions", 1024, "shared-memory regions registered at once, each holding a descriptor or a device mapping (0: no cap; Nereid only)")
	fs.BoolVar(&c.allowMetrics, "allow-metrics", true, "serve Prometheus metrics")
	fs.StringVar(&c.metricsAddress, "metrics-address", "", "metrics listen address (default: --http-address)")
	fs.IntVar(&c.metricsPort, "metrics-port", 8002, "metrics port")
	fs.StringVar(&c.pprofAddress, "pprof-address", "", "serve Go runtime profiles (/debug/pprof/) on host:port; off when empty (Nereid only)")

	fs.IntVar(&c.logVerbose, "log-verbose", 0, "verbose logging level (0 = off)")
	fs.BoolVar(&c.logInfo, "log-info", true, "log informational messages")
	fs.BoolVar(&c.logWarning, "log-warning", true, "log warnings")
	fs.BoolVar(&c.logError, "log-error", true, "log errors")
	fs.Var(&backendCfg, "backend-config", "<backend>,<key>=<value> (repeatable)")

	c.obs.register(fs)
	c.sched.register(fs)
	c.conns.register(fs)
	c.mem.register(fs)
	c.cache.register(fs)
	c.grpc.register(fs)
	c.traffic.register(fs)
	c.httpTLS = tlsFlags{prefix: "http"}
	c.httpTLS.register(fs, "HTTP", true)
	c.metricsTLS = tlsFlags{prefix: "metrics"}
	c.metricsTLS.register(fs, "metrics", true)
	c.sagemaker.register(fs)
	c.modelmesh.register(fs)
	c.async.register(fs)

	compatFlags(fs)
	httpForward := fs.String("http-header-forward-pattern", "", "forward HTTP request headers whose names match this regular expression (case-insensitive) as inference request parameters")
	grpcForward := fs.String("grpc-header-forward-pattern", "", "forward gRPC request metadata whose keys match this regular expression (case-insensitive) as inference request parameters")
	loadRetries := fs.Int("model-load-retry-count", 0, "times a model version whose load failed is tried again")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, errHelp
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	warned, err := checkCompatFlags(fs)
	if err != nil {
		return nil, err
	}
	c.warnedFlags = warned
	if c.httpForward, err = inference.CompileForwardPattern("http-header-forward-pattern", *httpForward); err != nil {
		return nil, err
	}
	if c.grpcForward, err = inference.CompileForwardPattern("grpc-header-forward-pattern", *grpcForward); err != nil {
		return nil, err
	}
	if *loadRetries < 0 {
		return nil, fmt.Errorf("--model-load-retry-count: %d must not be negative", *loadRetries)
	}
	c.loadRetries = *loadRetries
	if len(repos) == 0 {
		return nil, errors.New("--model-repository must be given at least once")
	}
	c.repositories = repos
	if c.cloudMountDir == "" {
		c.cloudMountDir = os.Getenv("TRITON_AWS_MOUNT_DIRECTORY")
	}
	c.loadModels = loads
	switch *mode {
	case "none":
		c.controlMode = repository.ModeNone
	case "poll":
		c.controlMode = repository.ModePoll
	case "explicit":
		c.controlMode = repository.ModeExplicit
	default:
		return nil, fmt.Errorf("--model-control-mode: %q is not one of none, poll, explicit", *mode)
	}
	if *pollSecs < 1 && c.controlMode == repository.ModePoll {
		return nil, fmt.Errorf("--repository-poll-secs: %d must be at least 1", *pollSecs)
	}
	c.pollInterval = time.Duration(*pollSecs) * time.Second
	if *exitSecs < 0 {
		return nil, fmt.Errorf("--exit-timeout-secs: %d must not be negative", *exitSecs)
	}
	c.exitTimeout = time.Duration(*exitSecs) * time.Second
	if c.metricsAddress == "" {
		c.metricsAddress = c.httpAddress
	}
	for _, port := range []struct {
		name string
		v    int
	}{{"http-port", c.httpPort}, {"grpc-port", c.grpcPort}, {"metrics-port", c.metricsPort}} {
		if port.v < 0 || port.v > 65535 {
			return nil, fmt.Errorf("--%s: %d is not a port number", port.name, port.v)
		}
	}
	if c.maxShmRegions < 0 {
		return nil, fmt.Errorf("--shared-memory-max-regions: %d must not be negative", c.maxShmRegions)
	}
	if c.httpMaxInputSize <= 0 {
		return nil, fmt.Errorf("--http-max-input-size: %d must be positive", c.httpMaxInputSize)
	}
	if err := c.grpc.finish(); err != nil {
		return nil, err
	}
	if err := c.httpTLS.finish(); err != nil {
		return nil, err
	}
	if err := c.metricsTLS.finish(); err != nil {
		return nil, err
	}
	if err := c.cache.finish(); err != nil {
		return nil, err
	}
	if err := c.mem.finish(); err != nil {
		return nil, err
	}
	if err := c.conns.finish(); err != nil {
		return nil, err
	}
	if err := c.obs.finish(); err != nil {
		return nil, err
	}
	if err := c.async.finish(c); err != nil {
		return nil, err
	}
	if err := c.modelmesh.finish(c); err != nil {
		return nil, err
	}
	if err := c.sched.finish(); err != nil {
		return nil, err
	}
	for _, bc := range backendCfg {
		if err := c.addBackendConfig(bc); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// addBackendConfig parses "<backend>,<key>=<value>" or the global
// "<key>=<value>".
func (c *config) addBackendConfig(s string) error {
	backend, kv, hasBackend := strings.Cut(s, ",")
	if !hasBackend {
		backend, kv = "", s
	}
	key, value, ok := strings.Cut(kv, "=")
	if !ok || key == "" {
		return fmt.Errorf("--backend-config: %q is not <backend>,<key>=<value>", s)
	}
	if c.backendConfig[backend] == nil {
		c.backendConfig[backend] = map[string]string{}
	}
	c.backendConfig[backend][key] = value
	return nil
}

func (c *config) autoComplete() bool { return !c.strictModelConfig && !c.disableAutoComplete }

// hostPort joins a listen address and port. Triton's IPv6 form
// "ipv6:[::1]" is accepted as well as a bare "::1".
func hostPort(addr string, port int) string {
	addr = strings.TrimPrefix(addr, "ipv6:")
	if strings.Contains(addr, ":") && !strings.HasPrefix(addr, "[") {
		addr = "[" + addr + "]"
	}
	return addr + ":" + strconv.Itoa(port)
}
