//go:build cgo

package tensorflow

import (
	"context"
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

// Name is the backend name config.pbtxt uses; the platforms
// tensorflow_savedmodel and tensorflow_graphdef map to it.
const Name = "tensorflow"

// The platforms, and the model files Triton gives them by default.
const (
	platformSavedModel = "tensorflow_savedmodel"
	platformGraphDef   = "tensorflow_graphdef"
	fileSavedModel     = "model.savedmodel"
	fileGraphDef       = "model.graphdef"
)

// DefaultMaxBatchSize is the max_batch_size auto-complete gives a
// SavedModel that can batch, unless --backend-config=tensorflow,
// default-max-batch-size (or the global key) says otherwise (Triton's
// default).
const DefaultMaxBatchSize = 4

// Options configures the backend. cmd/nereid fills it from the flags and
// the environment; the package reads neither.
type Options struct {
	// LibraryPaths are the candidate paths of libtensorflow_cc.so.2, in
	// order of preference: the first that exists is loaded.
	LibraryPaths []string
	// LibrarySource says where LibraryPaths came from, for messages.
	LibrarySource string
	// DefaultMaxBatchSize is the max_batch_size auto-complete gives a
	// model whose inputs and outputs all have a variable first dimension.
	// Negative means DefaultMaxBatchSize.
	DefaultMaxBatchSize int
	// AllowSoftPlacement is Triton's allow-soft-placement backend setting.
	AllowSoftPlacement bool
	Logger             zerolog.Logger
}

// Backend loads TensorFlow models. It loads the library on first use.
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

// fixHint says how to give the server a library.
const fixHint = "run `make tf` to install TensorFlow into .tf/, or pass " +
	"--backend-config=tensorflow,library=/path/to/libtensorflow_cc.so.2 (or set NEREID_TF_LIBRARY)"

// ensureLibrary loads the library on first use. A failure is returned each
// time, so that installing the library and loading a model again works
// without a restart.
func (b *Backend) ensureLibrary() error {
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
		return inference.Unavailable("TensorFlow library not found (looked for %s, from %s): %s",
			strings.Join(opts.LibraryPaths, ", "), opts.LibrarySource, fixHint)
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	if resolved, err := filepath.EvalSymlinks(path); err == nil {
		path = resolved
	}
	library.mu.Lock()
	loaded := library.path
	library.mu.Unlock()
	if err := loadLibrary(path); err != nil {
		return inference.Unavailable("cannot load the TensorFlow library %s (from %s): %v. Nereid needs TensorFlow's C API (libtensorflow_cc.so.2 with libtensorflow_framework.so.2 beside it): %s",
			path, opts.LibrarySource, err, fixHint)
	}
	if loaded == "" {
		opts.Logger.Info().Str("library", path).Str("version", libraryVersion()).Msg("TensorFlow loaded")
	}
	return nil
}

// params are Triton's TF_* model parameters.
type params struct {
	config    sessionConfig
	tag       string // TF_GRAPH_TAG, "serve" by default
	signature string // TF_SIGNATURE_DEF, "serving_default" by default
}

// parseParams reads the parameters. The thread counts default to 1, not
// to TensorFlow's one thread per core: each instance runs one batch at a
// time, so instances add up to the cores without oversubscribing them. So
// that every model keeps its own counts, sessions have their own thread
// pools unless TF_USE_PER_SESSION_THREADS says otherwise.
func parseParams(cfg *inferencepb.ModelConfig, softPlacement bool) (params, error) {
	p := params{
		config:    sessionConfig{intraOp: 1, interOp: 1, perSessionThreads: true, allowSoftPlacement: softPlacement},
		tag:       "serve",
		signature: "serving_default",
	}
	get := func(key string) (string, bool) {
		v, ok := cfg.GetParameters()[key]
		return strings.TrimSpace(v.GetStringValue()), ok
	}
	threads := func(key string, dst *int, least int) error {
		s, ok := get(key)
		if !ok {
			return nil
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < least {
			return inference.InvalidArg("model '%s': parameter %s: %q is not an integer of at least %d", cfg.GetName(), key, s, least)
		}
		*dst = n // 0: TensorFlow's default, one thread per core
		return nil
	}
	if err := threads("TF_NUM_INTRA_THREADS", &p.config.intraOp, 0); err != nil {
		return p, err
	}
	// -1 runs every op on the thread that runs the session.
	if err := threads("TF_NUM_INTER_THREADS", &p.config.interOp, -1); err != nil {
		return p, err
	}
	flag := func(key string, dst *bool) error {
		s, ok := get(key)
		if !ok {
			return nil
		}
		switch strings.ToLower(s) {
		case "true", "on", "1", "yes":
			*dst = true
		case "false", "off", "0", "no":
			*dst = false
		default:
			return inference.InvalidArg("model '%s': parameter %s: %q is not a boolean", cfg.GetName(), key, s)
		}
		return nil
	}
	if err := flag("TF_USE_PER_SESSION_THREADS", &p.config.perSessionThreads); err != nil {
		return p, err
	}
	if s, ok := get("TF_GRAPH_TAG"); ok && s != "" {
		p.tag = s
	}
	if s, ok := get("TF_SIGNATURE_DEF"); ok && s != "" {
		p.signature = s
	}
	return p, nil
}

// modelPath returns the model of a version directory: the
// default_model_filename, a directory for a SavedModel and a file for a
// GraphDef.
func modelPath(versionDir string, cfg *inferencepb.ModelConfig, savedModel bool) (string, error) {
	name := cfg.GetDefaultModelFilename()
	if name == "" {
		name = fileGraphDef
		if savedModel {
			name = fileSavedModel
		}
	}
	if !filepath.IsLocal(name) {
		return "", inference.InvalidArg("default_model_filename '%s' of model '%s' must name a file inside the version directory", name, cfg.GetName())
	}
	p := filepath.Join(versionDir, name)
	st, err := os.Stat(p)
	if err != nil {
		return "", inference.Unavailable("unable to find '%s' for model '%s'", p, cfg.GetName())
	}
	if savedModel && !st.IsDir() {
		return "", inference.InvalidArg("model '%s': the SavedModel '%s' is not a directory", cfg.GetName(), p)
	}
	if !savedModel && st.IsDir() {
		return "", inference.InvalidArg("model '%s': the GraphDef '%s' is a directory, not a file", cfg.GetName(), p)
	}
	return p, nil
}

// isSavedModel reports whether cfg is a SavedModel (else a GraphDef);
// the repository has filled in the platform when the files say.
func isSavedModel(cfg *inferencepb.ModelConfig) (bool, error) {
	switch cfg.GetPlatform() {
	case platformSavedModel:
		return true, nil
	case platformGraphDef:
		return false, nil
	}
	return false, inference.InvalidArg("model '%s': the tensorflow backend needs platform '%s' or '%s' (or a version directory holding %s or %s)",
		cfg.GetName(), platformSavedModel, platformGraphDef, fileSavedModel, fileGraphDef)
}

// latestVersionDir returns the highest-numbered version directory that
// holds the model: the version the default policy serves.
func latestVersionDir(modelDir string, cfg *inferencepb.ModelConfig, savedModel bool) (string, error) {
	entries, err := os.ReadDir(modelDir)
	if err != nil {
		return "", err
	}
	best, bestDir := int64(-1), ""
	for _, e := range entries {
		v, err := strconv.ParseInt(e.Name(), 10, 64)
		if err != nil || v < 0 || v <= best || strconv.FormatInt(v, 10) != e.Name() {
			continue
		}
		dir := filepath.Join(modelDir, e.Name())
		if _, err := modelPath(dir, cfg, savedModel); err == nil {
			best, bestDir = v, dir
		}
	}
	if bestDir == "" {
		return "", inference.Unavailable("unable to auto-complete the configuration of model '%s': no version directory of %s holds '%s'",
			cfg.GetName(), modelDir, cfg.GetDefaultModelFilename())
	}
	return bestDir, nil
}

// Complete fills in a SavedModel's configuration from its signature when
// auto-complete is on, as Triton's tensorflow backend does: nothing when
// inputs and outputs are both given; otherwise max_batch_size, then the
// missing inputs or outputs. It reads saved_model.pb itself, so completing
// needs no TensorFlow library (the load does). A GraphDef carries too little to complete
// from: its configuration must be whole, as in Triton.
func (b *Backend) Complete(_ context.Context, modelDir string, cfg *inferencepb.ModelConfig, autoComplete bool) error {
	if !autoComplete || !modelio.NeedsCompletion(cfg) {
		return nil
	}
	savedModel, err := isSavedModel(cfg)
	if err != nil {
		return err
	}
	if !savedModel {
		return nil // Load names what is missing
	}
	dir, err := latestVersionDir(modelDir, cfg, true)
	if err != nil {
		return err
	}
	p, err := parseParams(cfg, false)
	if err != nil {
		return err
	}
	path, _ := modelPath(dir, cfg, true)
	sig, err := readSignature(path, p, cfg.GetName())
	if err != nil {
		return err
	}
	ins, outs := sig.modelTensors()
	return modelio.AutoComplete(cfg, ins, outs, b.options().DefaultMaxBatchSize, rules)
}

// readSignature reads the signature p.signature of the MetaGraph tagged
// p.tag from the SavedModel's saved_model.pb, without TensorFlow: the load
// checks it against the graph.
func readSignature(path string, p params, model string) (*signature, error) {
	file := filepath.Join(path, "saved_model.pb")
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, inference.Unavailable("unable to auto-complete the configuration of model '%s': %v", model, err)
	}
	meta, err := parseSavedModel(data, p.tag)
	if err != nil {
		return nil, inference.InvalidArg("unable to auto-complete the configuration of model '%s': %s: %v", model, file, err)
	}
	sig, ok := meta.signatures[p.signature]
	if !ok {
		return nil, inference.InvalidArg("unable to auto-complete the configuration of model '%s': the SavedModel %s (tag '%s') has no signature '%s'; its signatures are: %s (parameter TF_SIGNATURE_DEF picks one)",
			model, path, p.tag, p.signature, strings.Join(meta.signatureNames(), ", "))
	}
	return sig, nil
}

// rules are Triton's rules as its tensorflow backend applies them: a
// tensor of unknown rank may batch.
var rules = modelio.Rules{UnknownRank: true}

// modelTensors lists a signature's inputs and outputs as modelio sees them.
func (s *signature) modelTensors() (ins, outs []modelio.Tensor) {
	conv := func(ts []signatureTensor) []modelio.Tensor {
		out := make([]modelio.Tensor, len(ts))
		for i, t := range ts {
			dt, _ := dataTypeOf(t.tfType)
			out[i] = modelio.Tensor{Name: t.key, DataType: dt, TypeName: tfTypeName(t.tfType), Dims: t.dims}
		}
		return out
	}
	return conv(s.inputs), conv(s.outputs)
}
