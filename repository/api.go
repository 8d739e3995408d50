// Package repository serves models from Triton-layout model repositories:
// it scans <repo>/<model>/config.pbtxt and numeric version directories,
// parses and validates configurations, applies version policies, runs the
// model control modes (none, poll, explicit) and keeps every model
// version's state (UNKNOWN, READY, UNAVAILABLE, LOADING, UNLOADING).
package repository

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/proto/inferencepb"
)

// ControlMode is Triton's --model-control-mode.
type ControlMode int

// The model control modes.
const (
	ModeNone ControlMode = iota
	ModePoll
	ModeExplicit
)

// State is the lifecycle state of a model version, with Triton's names.
type State string

// Model version states.
const (
	StateUnknown     State = "UNKNOWN"
	StateReady       State = "READY"
	StateUnavailable State = "UNAVAILABLE"
	StateLoading     State = "LOADING"
	StateUnloading   State = "UNLOADING"
)

// VersionSpec is one model version to bring up.
type VersionSpec struct {
	Name       string
	Version    int64
	ModelDir   string
	VersionDir string
	Config     *inferencepb.ModelConfig // validated, defaults filled
}

// Servable is what a Loader builds for a loaded model version: the backend
// model, its instances and scheduler. Close drains and frees it; the manager
// calls it only once no request holds the version any more.
type Servable interface {
	Close(ctx context.Context) error
}

// Loader turns a validated version into a Servable. The server implements
// it; tests use a fake.
type Loader interface {
	// Complete may fill in what a backend can learn from the model file
	// (auto-complete) and checks backend-specific rules. It is called once
	// per model load, before any version is loaded, with a copy of the
	// configuration it may modify. It returns an error naming the field
	// and reason when the backend cannot serve the configuration.
	Complete(ctx context.Context, modelDir string, cfg *inferencepb.ModelConfig, autoComplete bool) error
	// LoadVersion builds the servable for one version.
	LoadVersion(ctx context.Context, spec VersionSpec) (Servable, error)
}

// Options configures a Manager.
type Options struct {
	Paths           []string // --model-repository, in flag order; s3:// URLs are copied into CloudCacheDir
	Mode            ControlMode
	StartupModels   []string      // --load-model (explicit mode); "*" loads all
	PollInterval    time.Duration // --repository-poll-secs; 0 disables periodic polling
	AutoComplete    bool          // false with --disable-auto-complete-config / --strict-model-config
	ModelConfigName string        // --model-config-name: use configs/<name>.pbtxt when present
	Loader          Loader
	Logger          zerolog.Logger
	// LoadThreads bounds how many model versions load at once
	// (--model-load-thread-count); 0 means Triton's default, 4.
	LoadThreads int
	// LoadRetries is how many times a version whose load failed is tried
	// again (--model-load-retry-count).
	LoadRetries int

	// OnDemand loads a model of the repositories that is not loaded on
	// its first inference request (--model-load-on-demand).
	OnDemand bool
	// MemoryBudget caps the bytes the loaded model versions hold
	// (--model-cache-memory); idle models are evicted, least recently
	// used first, to make room for a load. 0: no cap.
	MemoryBudget int64
	// IdleUnload unloads a model no inference request used for this long
	// (--model-idle-unload-secs); its next request loads it again. 0:
	// never.
	IdleUnload time.Duration
	// CacheMetrics, when set, receives the model cache's events.
	CacheMetrics CacheMetrics
	// GPUs returns the ordinals of the machine's GPUs, which KIND_GPU
	// instance groups are checked against (and filled with, when they name
	// none). It is called once, at the first configuration that needs it;
	// nil means the machine has none.
	GPUs func() []int32
	// CloudCacheDir is where the cloud repositories (s3:// Paths) are
	// copied; "" makes a directory under the OS temporary directory.
	// Close removes the copies.
	CloudCacheDir string
}

// LoadOptions are the parameters of a repository load request.
type LoadOptions struct {
	// Config, when non-empty, is a ModelConfig in JSON that replaces
	// config.pbtxt.
	Config string
	// Files maps "<version>/<path>" to file contents; they form the model
	// directory for this load and require Config.
	Files map[string][]byte
}

// IndexEntry is one row of the repository index.
type IndexEntry struct {
	Name    string
	Version string // empty for a model that was never loaded
	State   State  // empty for a model that was never loaded
	Reason  string
}

// Handle is a reference to a READY model version, held for the duration of
// one request. The version is not closed while a handle is held.
type Handle struct {
	Name     string
	Version  int64
	Config   *inferencepb.ModelConfig // read-only
	Servable Servable
	// MemoryBytes is the memory the version holds, as the model cache
	// counts it (measured while it loaded, or declared).
	MemoryBytes int64
	// mgr, md and rec are the reference to return; nil once returned (and
	// in handles built outside the manager).
	mgr  *Manager
	md   *model
	rec  *version
	used bool // held by an inference request
}

// Release returns the reference. It is safe to call more than once.
func (h *Handle) Release() {
	if h.mgr != nil {
		h.mgr.release(h.md, h.rec, h.used)
		h.mgr, h.md, h.rec = nil, nil, nil
	}
}
