//go:build cgo

package onnxruntime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/backends/modelio"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// Name is the backend name config.pbtxt uses; platform onnxruntime_onnx
// maps to it.
const Name = "onnxruntime"

// DefaultMaxBatchSize is the max_batch_size auto-complete gives a model
// that can batch, unless --backend-config=default-max-batch-size says
// otherwise (Triton's default).
const DefaultMaxBatchSize = 4

// Options configures the backend. cmd/nereid fills it from the flags and
// the environment; the package reads neither.
type Options struct {
	// LibraryPaths are the candidate paths of the ONNX Runtime shared
	// library, in order of preference: the first that exists is loaded.
	LibraryPaths []string
	// LibrarySource says where LibraryPaths came from, for messages
	// (a flag, an environment variable, the default locations).
	LibrarySource string
	// DefaultMaxBatchSize is the max_batch_size auto-complete gives a
	// model whose inputs and outputs all have a variable first dimension.
	// Negative means DefaultMaxBatchSize.
	DefaultMaxBatchSize int
	// RuntimeWarnings lets ONNX Runtime print its own warnings to stderr;
	// otherwise it prints only fatal errors (Nereid reports the others).
	RuntimeWarnings bool
	Logger          zerolog.Logger
}

// Backend loads ONNX models. It loads the ONNX Runtime library on first use.
type Backend struct {
	mu   sync.Mutex // guards opts
	opts Options
}

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

// Configure replaces the options. Models loaded before keep theirs; a
// library already loaded stays loaded.
func (b *Backend) Configure(opts Options) {
	if opts.DefaultMaxBatchSize < 0 {
		opts.DefaultMaxBatchSize = DefaultMaxBatchSize
	}
	if opts.LibrarySource == "" {
		opts.LibrarySource = "the backend options"
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

// The ONNX Runtime environment is process-wide (capi.go keeps it in C
// statics).
var runtimeEnv struct {
	mu   sync.Mutex // guards path
	path string     // the library loaded, "" before
}

// fixHint says how to give the server a library.
const fixHint = "run `make ort` to install ONNX Runtime into .ort/, or pass " +
	"--backend-config=onnxruntime,library=/path/to/libonnxruntime.so.1 (or set NEREID_ORT_LIBRARY)"

// ensureRuntime loads the library on first use and returns its path. A
// failure is returned each time, so that installing the library and
// loading a model again works without a restart.
func (b *Backend) ensureRuntime() (string, error) {
	opts := b.options()
	var path string
	for _, p := range opts.LibraryPaths {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		return "", inference.Unavailable("ONNX Runtime library not found (looked for %s, from %s): %s",
			strings.Join(opts.LibraryPaths, ", "), opts.LibrarySource, fixHint)
	}
	abs, err := filepath.Abs(path)
	if err == nil {
		path = abs
	}
	runtimeEnv.mu.Lock()
	defer runtimeEnv.mu.Unlock()
	if runtimeEnv.path != "" {
		if !sameFile(runtimeEnv.path, path) {
			return "", inference.Unavailable("ONNX Runtime is already loaded from %s; restart the server to use %s", runtimeEnv.path, path)
		}
		return runtimeEnv.path, nil
	}
	level := ortLogFatal
	if opts.RuntimeWarnings {
		level = ortLogWarning
	}
	version, err := loadLibrary(path, level)
	if err != nil {
		return "", inference.Unavailable("cannot load the ONNX Runtime library %s (from %s): %v. Nereid needs ONNX Runtime 1.24 or later (C API %d): %s",
			path, opts.LibrarySource, err, 24, fixHint)
	}
	runtimeEnv.path = path
	opts.Logger.Info().Str("library", path).Str("version", version).Msg("ONNX Runtime loaded")
	return path, nil
}

func sameFile(a, b string) bool {
	if a == b {
		return true
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

// modelPath returns the model file of a version directory: the
// default_model_filename (model.onnx), or model.onnx inside it when it is a
// directory (a model with external data).
func modelPath(versionDir string, cfg *inferencepb.ModelConfig) (string, error) {
	name := cfg.GetDefaultModelFilename()
	if name == "" {
		name = "model.onnx"
	}
	if !filepath.IsLocal(name) {
		return "", inference.InvalidArg("default_model_filename '%s' of model '%s' must name a file inside the version directory", name, cfg.GetName())
	}
	p := filepath.Join(versionDir, name)
	st, err := os.Stat(p)
	if err != nil {
		return "", inference.Unavailable("unable to find '%s' for model '%s'", p, cfg.GetName())
	}
	if st.IsDir() {
		p = filepath.Join(p, "model.onnx")
		if _, err := os.Stat(p); err != nil {
			return "", inference.Unavailable("unable to find '%s' for model '%s'", p, cfg.GetName())
		}
	}
	return p, nil
}

// latestModelPath returns the model file of the highest-numbered version
// directory that has one: the version the default policy serves.
func latestModelPath(modelDir string, cfg *inferencepb.ModelConfig) (string, error) {
	entries, err := os.ReadDir(modelDir)
	if err != nil {
		return "", err
	}
	best, bestPath := int64(-1), ""
	for _, e := range entries {
		v, err := strconv.ParseInt(e.Name(), 10, 64)
		if err != nil || v < 0 || v <= best || strconv.FormatInt(v, 10) != e.Name() {
			continue
		}
		if p, err := modelPath(filepath.Join(modelDir, e.Name()), cfg); err == nil {
			best, bestPath = v, p
		}
	}
	if bestPath == "" {
		name := cfg.GetDefaultModelFilename()
		if name == "" {
			name = "model.onnx"
		}
		return "", inference.Unavailable("unable to auto-complete the configuration of model '%s': no version directory of %s holds '%s'",
			cfg.GetName(), modelDir, name)
	}
	return bestPath, nil
}

// Complete fills in the configuration from the model when auto-complete is
// on, following Triton's onnxruntime backend: nothing when inputs and
// outputs are both given; otherwise max_batch_size, then the missing
// inputs or outputs. With auto-complete off the configuration is only
// checked, at load.
func (b *Backend) Complete(_ context.Context, modelDir string, cfg *inferencepb.ModelConfig, autoComplete bool) error {
	if !autoComplete || !modelio.NeedsCompletion(cfg) {
		return nil
	}
	if _, err := b.ensureRuntime(); err != nil {
		return err
	}
	path, err := latestModelPath(modelDir, cfg)
	if err != nil {
		return err
	}
	return b.completeFrom(path, cfg)
}

// completeFrom auto-completes cfg from the model file at path.
func (b *Backend) completeFrom(path string, cfg *inferencepb.ModelConfig) error {
	ins, outs, err := readModelIO(path)
	if err != nil {
		return inference.InvalidArg("unable to auto-complete the configuration of model '%s': %v", cfg.GetName(), err)
	}
	return modelio.AutoComplete(cfg, modelTensors(ins), modelTensors(outs), b.options().DefaultMaxBatchSize, rules)
}

// readModelIO opens the model once, without graph optimisation, to read
// its inputs and outputs.
func readModelIO(path string) (ins, outs []tensorInfo, err error) {
	s, err := openSession(path, sessionConfig{intraOp: 1, interOp: 1, level: ortDisableAll})
	if err == nil {
		ins, outs, err = s.io()
		s.close()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("failed to read the model %s: %s", path, ortMessage(err))
	}
	return ins, outs, nil
}
