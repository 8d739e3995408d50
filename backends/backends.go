// Package backends defines what a framework backend provides to Nereid — a
// loaded model version that builds execution instances — and a registry that
// finds a backend by the name a model configuration gives.
package backends

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
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
	// Inferer reaches the server that loads the model, for models that
	// send requests of their own; it is never nil.
	Inferer Inferer
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
// the configuration, each with its response path set (inference.Request.Send,
// inference.ResponseSender has the rules). The instance answers every
// request through it: any number of responses, then exactly one final flag —
// for a model that is not decoupled, exactly one response carrying the final
// flag. It may answer after Execute has returned, from other goroutines (a
// decoupled model streaming its answers); the scheduler hands the instance
// its next batch as soon as Execute returns. An error from Execute fails
// every request of the batch that has not had its final flag.
//
// Input tensor bytes belong to the caller and may alias received network
// buffers: the instance must not write to them. Once Execute has returned
// it must not touch the request at all — the front end may reuse it — so a
// decoupled instance copies the inputs it still needs and keeps
// req.Sender() to answer through (Streams owns the goroutines it does it
// on). Output
// tensors may alias a request's inputs only in responses sent before
// Execute returns. Execute returns promptly once ctx is cancelled (every
// request of the batch was cancelled); a request cancelled on its own is
// reported by its Send errors and Cancelled.
type Instance interface {
	Execute(ctx context.Context, batch []*inference.Request) error
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

// UnaryInstance is an instance of a model that is not decoupled, written as
// a function of its batch: it returns one response per request, in the same
// order, or an error that fails the whole batch, and measures its phases.
// Unary turns it into an Instance. Its input rules are Instance's; an output
// may alias an input of its own request.
type UnaryInstance interface {
	ExecuteWithPhases(ctx context.Context, batch []*inference.Request) ([]*inference.Response, Phases, error)
}

// Unary adapts a UnaryInstance to Instance: each response is sent as its
// request's final response, after the requests' Timing has been stamped
// with the execution's phases. Close is forwarded when u implements Closer.
func Unary(u UnaryInstance) Instance { return unary{u} }

type unary struct{ u UnaryInstance }

var (
	_ Instance = unary{}
	_ Closer   = unary{}
)

func (x unary) Execute(ctx context.Context, batch []*inference.Request) error {
	start := time.Now()
	resps, ph, err := x.u.ExecuteWithPhases(ctx, batch)
	if err != nil {
		return err
	}
	StampPhases(batch, start, time.Now(), ph)
	return SendUnary(batch, resps)
}

// StampPhases sets the Timing of every request of a batch that ran from
// start to end with the phases ph (clamped to the execution).
func StampPhases(batch []*inference.Request, start, end time.Time, ph Phases) {
	total := end.Sub(start)
	in := min(max(ph.Input, 0), total)
	out := min(max(ph.Output, 0), total-in)
	for _, r := range batch {
		r.Timing.ComputeStart = start
		r.Timing.ComputeInputEnd = start.Add(in)
		r.Timing.ComputeOutputStart = end.Add(-out)
		r.Timing.ComputeEnd = end
	}
}

// SendUnary sends each response of a unary execution as its request's
// final response.
func SendUnary(batch []*inference.Request, resps []*inference.Response) error {
	if len(resps) != len(batch) {
		return inference.Internal("backend returned %d responses for a batch of %d requests", len(resps), len(batch))
	}
	for i, r := range batch {
		if resps[i] == nil {
			r.Fail(inference.Internal("backend returned no response for request %d of its batch", i))
			continue
		}
		// An error here means the request was cancelled meanwhile; the
		// final flag is delivered (and counted) all the same.
		_ = r.Send(resps[i], true)
	}
	return nil
}

func (x unary) Close() error {
	if c, ok := x.u.(Closer); ok {
		return c.Close()
	}
	return nil
}

// Inferer runs inference requests on the server that loaded a model: the
// way ensemble steps and a model's own requests to other models (Python
// BLS) reach the server. out receives every response of req in order, with
// the final flag on the last (or alone, resp nil); InferStream returns once
// the final flag was delivered, or with the error that ended the request.
type Inferer interface {
	InferStream(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error
}

// LateInferer is an Inferer bound after it is handed out: the loader gives
// it to every model it loads, and the server, which is built after the
// repository, binds itself once it exists. Until then requests fail with
// UNAVAILABLE.
type LateInferer struct {
	target atomic.Pointer[inferBox]
}

type inferBox struct{ i Inferer }

var _ Inferer = (*LateInferer)(nil)

// Bind makes l forward to i.
func (l *LateInferer) Bind(i Inferer) { l.target.Store(&inferBox{i}) }

// ModelConfig forwards to the bound Inferer when it also answers the
// configuration of a loaded model version (version "" is the one its policy
// serves by default), as the server does: an ensemble checks its steps
// against its composing models' configurations when it loads.
func (l *LateInferer) ModelConfig(ctx context.Context, name, version string) (*inferencepb.ModelConfig, error) {
	if b := l.target.Load(); b != nil {
		if c, ok := b.i.(interface {
			ModelConfig(ctx context.Context, name, version string) (*inferencepb.ModelConfig, error)
		}); ok {
			return c.ModelConfig(ctx, name, version)
		}
	}
	return nil, inference.Unavailable("the configuration of model '%s' cannot be read yet: the server is still starting", name)
}

// Target returns the bound Inferer, nil before Bind: a model that needs
// more of the server than inference (Python's model control) asks it for
// what it implements.
func (l *LateInferer) Target() Inferer {
	if b := l.target.Load(); b != nil {
		return b.i
	}
	return nil
}

// InferStream forwards to the bound Inferer.
func (l *LateInferer) InferStream(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error {
	b := l.target.Load()
	if b == nil {
		return inference.Unavailable("model '%s' cannot be called yet: the server is still starting", req.ModelName)
	}
	return b.i.InferStream(ctx, req, out)
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

// UnwrapUnary returns the UnaryInstance behind an instance made by Unary.
func UnwrapUnary(i Instance) (UnaryInstance, bool) {
	x, ok := i.(unary)
	return x.u, ok
}
