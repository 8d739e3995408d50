package python

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/jsonw"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// Name is the backend name config.pbtxt uses.
const Name = "python"

//go:embed pysrc/nereid_stub.py pysrc/triton_python_backend_utils.py
var pysrc embed.FS

// Defaults of the backend-config keys (Triton's where it has the key).
const (
	DefaultShmBytes    = 1 << 20
	DefaultGrowthBytes = 1 << 20
	DefaultStubTimeout = 30 * time.Second
)

// Options configures the backend. cmd/nereid fills it from
// --backend-config=python,...; the package reads no flags.
type Options struct {
	// Python is the interpreter that runs the stubs of models without an
	// EXECUTION_ENV_PATH.
	Python string
	// ShmBytes is the size of the first shared-memory segment of each side
	// of a stub; GrowthBytes the least size of the next ones.
	ShmBytes, GrowthBytes int64
	// StubTimeout is how long a stub may leave a health check unanswered
	// before it is killed and restarted, and how long finalize may take.
	StubTimeout time.Duration
	// CacheDir holds the stub's own Python files and unpacked execution
	// environments; empty means the user's cache directory.
	CacheDir string
	Logger   zerolog.Logger
	// Metrics registers the metric families models create
	// (pb_utils.MetricFamily); nil (metrics off): they work but are not
	// exported.
	Metrics prometheus.Registerer
}

// backend-config keys: those Nereid implements, and Triton's that have no
// meaning here (its named shared-memory regions and message queues), which
// are accepted with a warning.
var (
	knownKeys   = []string{"python-executable", "shm-default-byte-size", "shm-growth-byte-size", "stub-timeout-seconds"}
	ignoredKeys = map[string]string{
		"shm-region-prefix-name": "Nereid's stubs share anonymous memory, never named /dev/shm regions",
		"shm-message-queue-size": "Nereid's stubs talk over a socket, not a shared-memory queue",
		"thread-pool-size":       "Nereid runs BLS calls on goroutines of their own",
	}
)

// ParseOptions reads --backend-config=python,KEY=VALUE values. It returns
// the warnings to log for the keys it accepts and ignores; unknown keys
// are an error.
func ParseOptions(kv map[string]string) (Options, []string, error) {
	o := Options{Python: "python3", ShmBytes: DefaultShmBytes, GrowthBytes: DefaultGrowthBytes, StubTimeout: DefaultStubTimeout}
	var warnings []string
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := kv[k]
		switch k {
		case "python-executable":
			if v == "" {
				return o, nil, errors.New("--backend-config=python,python-executable: empty path")
			}
			o.Python = v
		case "shm-default-byte-size", "shm-growth-byte-size":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 4096 || n > maxSegment {
				return o, nil, fmt.Errorf("--backend-config=python,%s: %q is not a byte count from 4096 to 2^40", k, v)
			}
			if k == "shm-default-byte-size" {
				o.ShmBytes = n
			} else {
				o.GrowthBytes = n
			}
		case "stub-timeout-seconds":
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return o, nil, fmt.Errorf("--backend-config=python,stub-timeout-seconds: %q is not a positive integer", v)
			}
			o.StubTimeout = time.Duration(n) * time.Second
		default:
			why, ok := ignoredKeys[k]
			if !ok {
				return o, nil, fmt.Errorf("--backend-config=python,%s: unknown key; the Python backend accepts %s", k, strings.Join(knownKeys, ", "))
			}
			warnings = append(warnings, fmt.Sprintf("--backend-config=python,%s has no effect: %s", k, why))
		}
	}
	return o, warnings, nil
}

// Backend loads Python models.
type Backend struct {
	mu      sync.Mutex // guards the fields below
	opts    Options
	scripts string // where the stub's Python files were written
	// parked holds, by model.py path, the stub that ran a model's
	// auto_complete_config: its first instance takes it over (one
	// interpreter start and one import fewer per model). A stub nobody
	// claims within parkFor is stopped.
	parked map[string]*parkedStub
}

type parkedStub struct {
	s     *stub
	cfg   *stubConfig
	timer *time.Timer
}

// parkFor is how long a stub that completed a configuration waits for its
// model's first instance.
const parkFor = time.Minute

var (
	_ backends.Backend   = (*Backend)(nil)
	_ backends.Completer = (*Backend)(nil)
)

// New returns a backend with opts.
func New(opts Options) *Backend {
	b := &Backend{}
	b.Configure(opts)
	return b
}

// Configure replaces the options; loaded models keep theirs.
func (b *Backend) Configure(opts Options) {
	if opts.Python == "" {
		opts.Python = "python3"
	}
	if strings.ContainsRune(opts.Python, filepath.Separator) {
		// A stub starts in its model's directory: a relative path means
		// the server's working directory.
		if abs, err := filepath.Abs(opts.Python); err == nil {
			opts.Python = abs
		}
	}
	if opts.ShmBytes <= 0 {
		opts.ShmBytes = DefaultShmBytes
	}
	if opts.GrowthBytes <= 0 {
		opts.GrowthBytes = DefaultGrowthBytes
	}
	if opts.StubTimeout <= 0 {
		opts.StubTimeout = DefaultStubTimeout
	}
	b.mu.Lock()
	b.opts = opts
	b.mu.Unlock()
}

func (b *Backend) options() Options {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.opts
}

// cacheDir is where the backend writes the files it needs.
func (o Options) cacheDir() string {
	if o.CacheDir != "" {
		return o.CacheDir
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "nereid")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("nereid-%d", os.Getuid()))
}

// stubScript writes the stub's Python files, once per content, into a
// directory named by their hash, and returns the path of nereid_stub.py.
func (b *Backend) stubScript() (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.scripts != "" {
		return filepath.Join(b.scripts, "nereid_stub.py"), nil
	}
	names := []string{"nereid_stub.py", "triton_python_backend_utils.py"}
	h := sha256.New()
	files := map[string][]byte{}
	for _, n := range names {
		data, err := pysrc.ReadFile("pysrc/" + n)
		if err != nil {
			return "", err
		}
		files[n] = data
		fmt.Fprintf(h, "%s %d\n", n, len(data))
		h.Write(data)
	}
	dir := filepath.Join(b.opts.cacheDir(), "python-stub-"+hex.EncodeToString(h.Sum(nil))[:16])
	if _, err := os.Stat(filepath.Join(dir, names[0])); err != nil {
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return "", fmt.Errorf("python backend: %w", err)
		}
		tmp, err := os.MkdirTemp(filepath.Dir(dir), ".python-stub-")
		if err != nil {
			return "", fmt.Errorf("python backend: %w", err)
		}
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(tmp, n), files[n], 0o644); err != nil {
				_ = os.RemoveAll(tmp)
				return "", fmt.Errorf("python backend: %w", err)
			}
		}
		if err := os.Rename(tmp, dir); err != nil {
			_ = os.RemoveAll(tmp) // another process won the race: its copy is the same
			if _, statErr := os.Stat(filepath.Join(dir, names[0])); statErr != nil {
				return "", fmt.Errorf("python backend: %w", err)
			}
		}
	}
	b.scripts = dir
	return filepath.Join(dir, names[0]), nil
}

// modelFile is the model.py a configuration names in dir.
func modelFile(dir string, cfg *inferencepb.ModelConfig) string {
	name := cfg.GetDefaultModelFilename()
	if name == "" {
		name = "model.py"
	}
	return absPath(filepath.Join(dir, name))
}

// absPath makes a repository path absolute: a stub runs in its model's
// directory, and a model reads the paths it is given as they are.
func absPath(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

// Complete runs the model's auto_complete_config, when it has one, in a
// stub of its own that exits after it.
func (b *Backend) Complete(ctx context.Context, modelDir string, cfg *inferencepb.ModelConfig, autoComplete bool) error {
	if !autoComplete || modelDir == "" {
		return nil
	}
	versionDir := firstVersionDir(modelDir)
	if versionDir == "" {
		return nil // nothing to import; loading reports the missing version
	}
	path := modelFile(versionDir, cfg)
	if _, err := os.Stat(path); err != nil {
		return nil // loading reports it, with Triton's text
	}
	opts := b.options()
	sc, err := b.stubConfig(opts, modelDir, cfg, opts.Logger.With().Str("model", cfg.GetName()).Logger(), nil)
	if err != nil {
		return err
	}
	s, err := startStub(sc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.StubTimeout)
	defer cancel()
	m, err := s.initialize(ctx, "autocomplete", path, nil, jsonw.AppendModelConfig(nil, cfg), false)
	if err != nil {
		s.stop(2 * time.Second)
		return fmt.Errorf("auto_complete_config of model '%s': %w", cfg.GetName(), err)
	}
	if len(m.Config) > 0 {
		completed := &inferencepb.ModelConfig{}
		if err := (protojson.UnmarshalOptions{}).Unmarshal(m.Config, completed); err != nil {
			s.stop(2 * time.Second)
			return inference.InvalidArg("auto_complete_config of model '%s' returned a configuration Nereid cannot read: %v", cfg.GetName(), err)
		}
		proto.Reset(cfg)
		proto.Merge(cfg, completed)
	}
	b.park(path, s, sc)
	return nil
}

// park keeps a stub that completed path's configuration for the model's
// first instance.
func (b *Backend) park(path string, s *stub, sc *stubConfig) {
	p := &parkedStub{s: s, cfg: sc}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.parked == nil {
		b.parked = map[string]*parkedStub{}
	}
	if old := b.parked[path]; old != nil {
		old.timer.Stop()
		go old.s.stop(2 * time.Second)
	}
	b.parked[path] = p
	p.timer = time.AfterFunc(parkFor, func() {
		if b.unpark(path, p) {
			p.s.stop(2 * time.Second)
		}
	})
}

// unpark removes p from the parked stubs; false when it was taken.
func (b *Backend) unpark(path string, p *parkedStub) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.parked[path] != p {
		return false
	}
	delete(b.parked, path)
	return true
}

// claim takes the stub parked for path when it runs as sc would start
// one (same interpreter and environment), and is still alive.
func (b *Backend) claim(path string, sc *stubConfig) *stub {
	b.mu.Lock()
	p := b.parked[path]
	if p != nil {
		delete(b.parked, path)
		p.timer.Stop()
	}
	b.mu.Unlock()
	if p == nil {
		return nil
	}
	select {
	case <-p.s.done:
		return nil
	default:
	}
	if p.cfg.python != sc.python || !slices.Equal(p.cfg.env, sc.env) || p.cfg.shmFirst != sc.shmFirst || p.cfg.shmGrowth != sc.shmGrowth {
		go p.s.stop(2 * time.Second)
		return nil
	}
	return p.s
}

// firstVersionDir returns the numerically smallest version directory.
func firstVersionDir(modelDir string) string {
	entries, err := os.ReadDir(modelDir)
	if err != nil {
		return ""
	}
	best := int64(-1)
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if v, err := strconv.ParseInt(e.Name(), 10, 64); err == nil && v >= 0 && (best < 0 || v < best) {
			best = v
		}
	}
	if best < 0 {
		return ""
	}
	return filepath.Join(modelDir, strconv.FormatInt(best, 10))
}

// stubConfig resolves how a model's stubs start: the interpreter (the
// model's EXECUTION_ENV_PATH or the backend's) and the environment.
func (b *Backend) stubConfig(opts Options, modelDir string, cfg *inferencepb.ModelConfig, log zerolog.Logger, h *callHandler) (*stubConfig, error) {
	script, err := b.stubScript()
	if err != nil {
		return nil, err
	}
	python, env, err := executionEnv(opts, modelDir, cfg)
	if err != nil {
		return nil, err
	}
	return &stubConfig{
		python: python, env: env, script: script, workDir: absPath(modelDir),
		shmFirst: opts.ShmBytes, shmGrowth: opts.GrowthBytes, timeout: opts.StubTimeout,
		logger: log, handler: h,
	}, nil
}

// Load checks that model.py exists and prepares the model's stubs.
func (b *Backend) Load(_ context.Context, spec backends.ModelSpec) (backends.Model, error) {
	path := modelFile(spec.VersionDir, spec.Config)
	if st, err := os.Stat(path); err != nil || st.IsDir() {
		return nil, inference.InvalidArg("unable to find '%s' for model '%s': a Python model needs the file its default_model_filename names (model.py by default) in its version directory", path, spec.Name)
	}
	opts := b.options()
	m := &model{
		backend: b, spec: spec, opts: opts, path: path,
		config:    jsonw.AppendModelConfig(nil, spec.Config),
		decoupled: spec.Config.GetModelTransactionPolicy().GetDecoupled(),
		rules:     newTensorRules(spec.Config),
	}
	m.handler = &callHandler{model: m, inferer: spec.Inferer, metrics: newModelMetrics(opts.Metrics, spec.Name)}
	sc, err := b.stubConfig(opts, spec.ModelDir, spec.Config, spec.Logger, m.handler)
	if err != nil {
		return nil, err
	}
	m.stubCfg = sc
	return m, nil
}

func newTensorRules(cfg *inferencepb.ModelConfig) *tensorRules {
	r := &tensorRules{model: cfg.GetName(), outputs: map[string]outputSpec{}, batching: cfg.GetMaxBatchSize() > 0}
	for _, o := range cfg.GetOutput() {
		dims := o.GetDims()
		if rs := o.GetReshape(); rs != nil {
			dims = rs.GetShape()
		}
		r.outputs[o.GetName()] = outputSpec{dt: inference.DataType(o.GetDataType()), dims: dims}
	}
	return r
}

// model is one loaded version of a Python model.
type model struct {
	backend   *Backend
	spec      backends.ModelSpec
	opts      Options
	path      string
	config    []byte // the configuration as Triton's JSON
	decoupled bool
	rules     *tensorRules
	stubCfg   *stubConfig
	handler   *callHandler

	mu        sync.Mutex // guards instances
	instances []*instance
}

var (
	_ backends.Model  = (*model)(nil)
	_ backends.Closer = (*model)(nil)
)

// initArgs are the args of initialize, with Triton's keys and values.
func (m *model) initArgs(is backends.InstanceSpec) map[string]string {
	kind := strings.TrimPrefix(is.Kind.String(), "KIND_")
	return map[string]string{
		"model_config":             string(m.config),
		"model_instance_kind":      kind,
		"model_instance_name":      is.Name,
		"model_instance_device_id": strconv.Itoa(int(is.DeviceID)),
		"model_repository":         absPath(m.spec.ModelDir),
		"model_version":            strconv.FormatInt(m.spec.Version, 10),
		"model_name":               m.spec.Name,
	}
}

// NewInstance starts the instance's stub and runs initialize in it.
func (m *model) NewInstance(ctx context.Context, is backends.InstanceSpec) (backends.Instance, error) {
	inst := &instance{model: m, spec: is, log: m.spec.Logger.With().Str("instance", is.Name).Logger(), closing: make(chan struct{})}
	s, err := inst.start(ctx)
	if err != nil {
		return nil, err
	}
	inst.cur = s
	inst.superviseDone = make(chan struct{})
	go inst.supervise(s)
	m.mu.Lock()
	m.instances = append(m.instances, inst)
	m.mu.Unlock()
	return inst, nil
}

// Ready is the model's is_ready(): every instance's stub answers true
// within 5 s (a model without is_ready is ready while its stubs run).
func (m *model) Ready(ctx context.Context) bool {
	m.mu.Lock()
	insts := append([]*instance(nil), m.instances...)
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, inst := range insts {
		s := inst.current()
		if s == nil {
			return false
		}
		if ok, err := s.ready(ctx); err != nil || !ok {
			return false
		}
	}
	return true
}

// Close is called after every instance closed.
func (m *model) Close() error {
	m.handler.metrics.close()
	return nil
}

// Close stops the stubs still parked after auto-complete (models whose
// load never came). Loaded models close through their instances.
func (b *Backend) Close() {
	b.mu.Lock()
	parked := b.parked
	b.parked = nil
	b.mu.Unlock()
	for _, p := range parked {
		p.timer.Stop()
		p.s.stop(2 * time.Second)
	}
}
