// Package server is Nereid's core: it finds the model version a request
// names, checks the request against the model configuration, hands it to the
// model's scheduler and keeps statistics. Front ends in server/http and
// server/grpc translate the wire to and from the calls here.
package server

import (
	"context"
	"sort"
	"strconv"
	"sync/atomic"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/sharedmem"
	"github.com/nereid-project/nereid/traffic"
)

// Models is what the server needs from the model repository.
type Models interface {
	// Acquire never loads: metadata, configuration, readiness and
	// statistics see only what is loaded.
	Acquire(ctx context.Context, name, version string) (*repository.Handle, error)
	// AcquireOnDemand is Acquire for inference: with
	// --model-load-on-demand a model that is not loaded is loaded first.
	AcquireOnDemand(ctx context.Context, name, version string) (*repository.Handle, error)
	ReadyVersions(name string) ([]int64, error)
	Index(readyOnly bool) []repository.IndexEntry
	Load(ctx context.Context, name string, opts repository.LoadOptions) error
	Unload(ctx context.Context, name string, unloadDependents bool) error
	AllReady() bool
	RegisterRepository(path string, names map[string]string) error
	UnregisterRepository(path string) error
}

// Extensions lists the protocol extensions Nereid implements, in the order
// Triton reports them.
var Extensions = []string{
	"classification",
	"sequence",
	"model_repository",
	"model_repository(unload_dependents)",
	"schedule_policy",
	"model_configuration",
	"system_shared_memory",
	"cuda_shared_memory",
	"binary_tensor_data",
	"parameters",
	"statistics",
	"trace",
	"logging",
}

// Options configures a Server.
type Options struct {
	ID              string // --id, the name in server metadata
	Version         string
	StrictReadiness bool
	Logger          zerolog.Logger
	// AllowClientShm enables the shared-memory extensions
	// (--allow-client-shm); when false they answer UNSUPPORTED.
	AllowClientShm bool
	// MaxShmRegions caps the shared-memory regions registered at once
	// (--shared-memory-max-regions); 0: no cap.
	MaxShmRegions int
	// Traffic, when set, splits the requests for its routes between
	// variants and mirrors some to a shadow (--traffic-config).
	Traffic *traffic.Router
}

// Server is the protocol-independent inference server.
type Server struct {
	opts     Options
	models   Models
	stopping atomic.Bool
	shm      *sharedmem.Table // nil when client shared memory is disabled
}

// New returns a server over models.
func New(models Models, opts Options) *Server {
	if opts.ID == "" {
		opts.ID = "triton"
	}
	s := &Server{opts: opts, models: models}
	if opts.AllowClientShm {
		s.shm = sharedmem.New(sharedmem.Options{MaxRegions: opts.MaxShmRegions})
	}
	return s
}

// BeginShutdown makes the server report not ready, so that load balancers
// stop sending traffic while in-flight requests finish.
func (s *Server) BeginShutdown() { s.stopping.Store(true) }

// Live reports whether the server is live. It stays live while draining.
func (s *Server) Live() bool { return true }

// Ready reports server readiness with Triton's --strict-readiness rules: not
// while shutting down, and with strict readiness only when every model the
// server tried to load is READY.
func (s *Server) Ready() bool {
	if s.stopping.Load() {
		return false
	}
	return !s.opts.StrictReadiness || s.models.AllReady()
}

// Metadata is the server metadata (name, version, extensions).
func (s *Server) Metadata() *inferencepb.ServerMetadataResponse {
	return &inferencepb.ServerMetadataResponse{
		Name:       s.opts.ID,
		Version:    s.opts.Version,
		Extensions: Extensions,
	}
}

// acquire returns the loaded model version a request names. The caller
// must Release the handle.
func (s *Server) acquire(ctx context.Context, name, version string) (*repository.Handle, *loadedModel, error) {
	return s.loaded(s.models.Acquire(ctx, name, version))
}

// acquireForInfer is acquire for an inference request, which loads a
// model on demand.
func (s *Server) acquireForInfer(ctx context.Context, name, version string) (*repository.Handle, *loadedModel, error) {
	return s.loaded(s.models.AcquireOnDemand(ctx, name, version))
}

func (s *Server) loaded(h *repository.Handle, err error) (*repository.Handle, *loadedModel, error) {
	if err != nil {
		return nil, nil, err
	}
	lm, ok := h.Servable.(*loadedModel)
	if !ok {
		h.Release()
		return nil, nil, inference.Internal("model '%s' is not servable", h.Name)
	}
	return h, lm, nil
}

// ModelReady reports whether a model version is ready. Unknown models are a
// NotFound error, versions not READY an Unavailable error.
func (s *Server) ModelReady(ctx context.Context, name, version string) (bool, error) {
	h, lm, err := s.acquire(ctx, name, version)
	if err != nil {
		return false, err
	}
	defer h.Release()
	if r, ok := lm.sched.(readiness); ok {
		return r.Ready(ctx), nil
	}
	if r, ok := lm.model.(readiness); ok {
		return r.Ready(ctx), nil
	}
	return true, nil
}

// readiness is implemented by schedulers whose version is ready only while
// other models are (an ensemble's, while its composing models are served),
// and by backend models that ask the model itself (a Python model's
// is_ready).
type readiness interface {
	Ready(ctx context.Context) bool
}

// ModelMetadata describes a model version's tensors (shapes carry a leading
// -1 when the model batches).
func (s *Server) ModelMetadata(ctx context.Context, name, version string) (*inferencepb.ModelMetadataResponse, error) {
	h, lm, err := s.acquire(ctx, name, version)
	if err != nil {
		return nil, err
	}
	defer h.Release()
	versions, err := s.models.ReadyVersions(name)
	if err != nil {
		return nil, err
	}
	cfg := lm.cfg
	md := &inferencepb.ModelMetadataResponse{Name: name, Platform: cfg.GetPlatform()}
	if md.Platform == "" {
		md.Platform = cfg.GetBackend()
	}
	for _, v := range versions {
		md.Versions = append(md.Versions, strconv.FormatInt(v, 10))
	}
	for _, in := range cfg.GetInput() {
		md.Inputs = append(md.Inputs, &inferencepb.ModelMetadataResponse_TensorMetadata{
			Name:     in.GetName(),
			Datatype: inference.DataType(in.GetDataType()).String(),
			Shape:    lm.fullDims(in.GetDims()),
		})
	}
	for _, out := range cfg.GetOutput() {
		md.Outputs = append(md.Outputs, &inferencepb.ModelMetadataResponse_TensorMetadata{
			Name:     out.GetName(),
			Datatype: inference.DataType(out.GetDataType()).String(),
			Shape:    lm.fullDims(out.GetDims()),
		})
	}
	return md, nil
}

// ModelConfig returns the (completed) configuration of a model version. The
// caller must not modify it.
func (s *Server) ModelConfig(ctx context.Context, name, version string) (*inferencepb.ModelConfig, error) {
	h, lm, err := s.acquire(ctx, name, version)
	if err != nil {
		return nil, err
	}
	defer h.Release()
	return lm.cfg, nil
}

// ModelStatistics returns statistics for one version, all ready versions of
// one model (version ""), or every ready model (name "").
func (s *Server) ModelStatistics(ctx context.Context, name, version string) (*inferencepb.ModelStatisticsResponse, error) {
	out := &inferencepb.ModelStatisticsResponse{}
	add := func(n, v string) error {
		h, lm, err := s.acquire(ctx, n, v)
		if err != nil {
			return err
		}
		defer h.Release()
		st := lm.stats.snapshot(lm.name, lm.version)
		if h.MemoryBytes > 0 { // as the model cache counts it
			st.MemoryUsage = []*inferencepb.MemoryUsage{{Type: "CPU", Id: 0, ByteSize: uint64(h.MemoryBytes)}}
		}
		out.ModelStats = append(out.ModelStats, st)
		return nil
	}
	switch {
	case name == "":
		for _, e := range s.models.Index(true) {
			// A version may unload between the index and the read; skip it.
			_ = add(e.Name, e.Version)
		}
	case version == "":
		versions, err := s.models.ReadyVersions(name)
		if err != nil || len(versions) == 0 {
			return nil, s.statsUnavailable(name, "", err)
		}
		for _, v := range versions {
			if err := add(name, strconv.FormatInt(v, 10)); err != nil {
				return nil, s.statsUnavailable(name, "", err)
			}
		}
	default:
		if err := add(name, version); err != nil {
			return nil, s.statsUnavailable(name, version, err)
		}
	}
	sort.SliceStable(out.ModelStats, func(i, j int) bool {
		a, b := out.ModelStats[i], out.ModelStats[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return len(a.Version) < len(b.Version) || (len(a.Version) == len(b.Version) && a.Version < b.Version)
	})
	return out, nil
}

// statsUnavailable is Triton's answer to statistics of a model or version
// that is not there to serve (INVALID_ARG, its texts); other errors pass
// through.
func (s *Server) statsUnavailable(name, version string, err error) error {
	if err != nil && !inference.MeansNotReady(err) {
		return err
	}
	if version != "" {
		if vs, verr := s.models.ReadyVersions(name); verr == nil && len(vs) > 0 {
			return inference.InvalidArg("requested model version is not available for model '%s'", name)
		}
	}
	return inference.InvalidArg("requested model '%s' is not available", name)
}

// RepositoryIndex lists the models of every repository.
func (s *Server) RepositoryIndex(_ context.Context, readyOnly bool) ([]repository.IndexEntry, error) {
	return s.models.Index(readyOnly), nil
}

// LoadModel loads or reloads a model (explicit mode only), synchronously.
func (s *Server) LoadModel(ctx context.Context, name string, opts repository.LoadOptions) error {
	return s.models.Load(ctx, name, opts)
}

// UnloadModel starts unloading a model (explicit mode only) and returns
// before the unload completes.
func (s *Server) UnloadModel(ctx context.Context, name string, unloadDependents bool) error {
	return s.models.Unload(ctx, name, unloadDependents)
}

// RegisterRepository adds a model repository at run time. names maps a
// model subdirectory of path to the name it is served under; a
// subdirectory not in names keeps its own name. AlreadyExists when path is
// already registered or a name it maps to is served from another
// repository.
func (s *Server) RegisterRepository(path string, names map[string]string) error {
	return s.models.RegisterRepository(path, names)
}

// UnregisterRepository removes a repository added by RegisterRepository.
func (s *Server) UnregisterRepository(path string) error {
	return s.models.UnregisterRepository(path)
}
