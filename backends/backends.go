// Package backends defines what a framework backend provides to Nereid — a
// loaded model version that builds execution instances — and a registry that
// finds a backend by the name a model configuration gives.
package backends

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// ModelSpec is everything a backend needs to load one version of a model.
type ModelSpec struct {
	Name       string
	Version    int64
	ModelDir   string // <repository>/<model>
	VersionDir string // <repository>/<model>/<version>
	// Config is the validated model configuration. Backends must treat it
	// as read-only.
	Config *inferencepb.ModelConfig
	// BackendConfig holds the --backend-config key/values for this backend.
	BackendConfig map[string]string
	Logger        zerolog.Logger
}

// InstanceSpec describes one execution instance of a loaded model.
type InstanceSpec struct {
	Name     string // "<group name>_<index>", as Triton names instances
	Kind     inferencepb.ModelInstanceGroup_Kind
	DeviceID int32
}

// Backend loads model versions. Implementations register a Backend with
// Register under the name config.pbtxt uses in `backend` (or the platform
// alias the registry maps to it).
type Backend interface {
	// Load validates spec.Config against what the backend supports and
	// prepares the model version. Errors name the config field and reason.
	Load(ctx context.Context, spec ModelSpec) (Model, error)
}

// Model is one loaded version of a model.
type Model interface {
	// NewInstance builds one execution instance. The scheduler calls
	// Execute on an instance from one goroutine at a time.
	NewInstance(ctx context.Context, spec InstanceSpec) (Instance, error)
}

// Instance executes batches of requests.
//
// Contract: Execute receives the requests of one batch (one request when the
// model does not batch) whose inputs the server has already checked against
// the configuration. It returns one response per request, in the same
// order, or an error that fails the whole batch. Input tensor bytes belong
// to the caller and may alias received network buffers: Execute must not
// write to them, and output tensors must not alias them unless the backend
// documents that it copies (the caller does not keep requests alive past
// encoding the response, so aliasing an input for an identity output is
// allowed). Execute returns promptly once ctx is cancelled.
type Instance interface {
	Execute(ctx context.Context, batch []*inference.Request) ([]*inference.Response, error)
}

// Phases is how one execution spent its time, for the statistics extension's
// compute_input / compute_infer / compute_output split: Input is the time the
// backend took to gather the batch's inputs into the form the framework
// runs on, Output the time it took to turn the framework's results into
// response tensors. The rest of the execution counts as inference.
type Phases struct {
	Input  time.Duration
	Output time.Duration
}

// PhaseReporter is implemented by instances that measure the phases of an
// execution. ExecuteWithPhases has Execute's contract; the scheduler calls
// it instead of Execute when an instance implements it. Instances that do
// not implement it have their whole execution counted as inference.
type PhaseReporter interface {
	ExecuteWithPhases(ctx context.Context, batch []*inference.Request) ([]*inference.Response, Phases, error)
}

// Closer is implemented by models and instances that hold resources to free
// on unload.
type Closer interface {
	Close() error
}

var (
	mu       sync.RWMutex // guards registry
	registry = map[string]Backend{}
)

// Register makes a backend available under name. It panics on a duplicate
// name: registration happens in init functions and a clash is a build bug.
func Register(name string, b Backend) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := registry[name]; dup {
		panic(fmt.Sprintf("backends: %q registered twice", name))
	}
	registry[name] = b
}

// Lookup returns the backend registered under name.
func Lookup(name string) (Backend, bool) {
	mu.RLock()
	defer mu.RUnlock()
	b, ok := registry[name]
	return b, ok
}

// Names lists the registered backends, sorted.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]string, 0, len(registry))
	for n := range registry {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// platformBackends maps Triton's `platform` values to the backend that
// serves them.
var platformBackends = map[string]string{
	"onnxruntime_onnx":      "onnxruntime",
	"tensorflow_graphdef":   "tensorflow",
	"tensorflow_savedmodel": "tensorflow",
	"pytorch_libtorch":      "pytorch",
	"tensorrt_plan":         "tensorrt",
}

// BackendName returns the backend a configuration asks for: `backend` when
// set, else the backend behind `platform`. It returns "" when neither says.
func BackendName(cfg *inferencepb.ModelConfig) string {
	if cfg.GetBackend() != "" {
		return cfg.GetBackend()
	}
	return platformBackends[cfg.GetPlatform()]
}

// Completer is implemented by backends that can fill in a configuration
// from the model itself (Triton's auto-complete). Complete runs before the
// generic validation; autoComplete is false with --disable-auto-complete-config,
// in which case a backend only checks the config and may set nothing.
type Completer interface {
	Complete(ctx context.Context, modelDir string, cfg *inferencepb.ModelConfig, autoComplete bool) error
}
