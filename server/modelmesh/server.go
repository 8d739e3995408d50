// Package modelmesh serves ModelMesh's model-runtime gRPC service
// (mmesh.ModelRuntime) on a port of its own, so that Nereid runs as a
// ModelMesh serving runtime with no adapter container: loadModel registers
// the model's files as a repository, serving the model under its ModelMesh
// id, and loads it into the model cache; sizes are what the cache measured.
// ModelMesh then sends inference to Nereid's own gRPC port, writing the
// model id into the requests' model_name (the methodInfos of runtimeStatus).
package modelmesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/proto/modelmeshpb"
	"github.com/nereid-project/nereid/repository"
)

// Core is what the ModelMesh service needs from the server core;
// *server.Server satisfies it.
//
// RegisterRepository adds a repository at run time, serving each
// subdirectory named in names under the mapped name (AlreadyExists when
// the path or a name is taken); UnregisterRepository removes it again.
// LoadModel is synchronous and stops early when ctx ends; UnloadModel
// returns before the unload is complete: RepositoryIndex tells when it is.
// ModelStatistics reports each ready version's memory as the model cache
// counts it (memory_usage).
type Core interface {
	Ready() bool
	RegisterRepository(path string, names map[string]string) error
	UnregisterRepository(path string) error
	LoadModel(ctx context.Context, name string, opts repository.LoadOptions) error
	UnloadModel(ctx context.Context, name string, unloadDependents bool) error
	RepositoryIndex(ctx context.Context, readyOnly bool) ([]repository.IndexEntry, error)
	ModelStatistics(ctx context.Context, name, version string) (*inferencepb.ModelStatisticsResponse, error)
}

// Defaults of Options.
const (
	DefaultAddr = "127.0.0.1:8085"
	// DefaultModelSize is the size ModelMesh assumes for a model it knows
	// nothing of: the default of ModelMesh's own Triton adapter.
	DefaultModelSize = 1_000_000
	// DefaultLoadTimeout matches ModelMesh's Triton adapter.
	DefaultLoadTimeout = 30 * time.Second
	// DefaultUnloadTimeout bounds how long unloadModel waits for a model's
	// requests to finish; ModelMesh retries an unload that failed.
	DefaultUnloadTimeout = 5 * time.Minute
	// DefaultUnloadPoll is how often an unload looks at the repository
	// index while it waits: the core tells nobody when an unload is done.
	DefaultUnloadPoll = 100 * time.Millisecond
)

// InferenceService is the gRPC service ModelMesh forwards inference to.
const InferenceService = "inference.GRPCInferenceService"

// idMethods are the methods of InferenceService that name a model in
// field 1 of their request (ModelInferRequest.model_name, the name of the
// others): ModelMesh overwrites it with the model id. They are also the
// only methods ModelMesh forwards. ModelStreamInfer is left out: ModelMesh
// forwards unary calls only.
var idMethods = []string{"ModelInfer", "ModelMetadata", "ModelReady", "ModelConfig"}

// Options configures the service. Zero durations and sizes select the
// defaults; Capacity and WorkDir are required.
type Options struct {
	// Capacity is the memory for loaded models that runtimeStatus reports
	// (--model-cache-memory): ModelMesh places models to fill it.
	Capacity int64
	// DefaultModelSize is runtimeStatus's defaultModelSizeInBytes, and what
	// predictModelSize answers for files it cannot see.
	DefaultModelSize int64
	// LoadConcurrency is runtimeStatus's maxLoadingConcurrency
	// (--model-load-thread-count); 0 reports 1.
	LoadConcurrency int
	// LoadTimeout bounds each load, and is reported as
	// modelLoadingTimeoutMs.
	LoadTimeout time.Duration
	// UnloadTimeout and UnloadPoll: how long, and how often, an unload
	// looks for the model's versions to be closed.
	UnloadTimeout time.Duration
	UnloadPoll    time.Duration
	// Version is runtimeStatus's runtimeVersion.
	Version string
	// WorkDir is where the per-model repositories are made (in a
	// directory of their own, removed by Shutdown).
	WorkDir string
	// ServerOptions are added to the gRPC server's (tests).
	ServerOptions []grpc.ServerOption
	Logger        zerolog.Logger
}

// Server is the ModelMesh model-runtime service.
type Server struct {
	grpc *grpc.Server
	svc  *service
}

// New returns the service over core. It creates its working directory.
func New(core Core, opts Options) (*Server, error) {
	switch {
	case opts.Capacity <= 0:
		return nil, errors.New("modelmesh: the capacity must be positive (--model-cache-memory)")
	case opts.WorkDir == "":
		return nil, errors.New("modelmesh: no working directory")
	}
	if opts.DefaultModelSize <= 0 {
		opts.DefaultModelSize = DefaultModelSize
	}
	if opts.LoadConcurrency <= 0 {
		opts.LoadConcurrency = 1
	}
	if opts.LoadTimeout <= 0 {
		opts.LoadTimeout = DefaultLoadTimeout
	}
	if opts.UnloadTimeout <= 0 {
		opts.UnloadTimeout = DefaultUnloadTimeout
	}
	if opts.UnloadPoll <= 0 {
		opts.UnloadPoll = DefaultUnloadPoll
	}
	dir, err := os.MkdirTemp(opts.WorkDir, "nereid-modelmesh-")
	if err != nil {
		return nil, fmt.Errorf("modelmesh: working directory: %w", err)
	}
	svc := &service{core: core, opts: opts, dir: dir, log: opts.Logger, table: newModelTable()}
	gs := grpc.NewServer(opts.ServerOptions...)
	modelmeshpb.RegisterModelRuntimeServer(gs, svc)
	return &Server{grpc: gs, svc: svc}, nil
}

// Serve answers on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.grpc.Serve(ln) }

// Shutdown stops accepting calls, lets those in flight finish until ctx
// ends, then cuts them off and removes the working directory. The models
// stay loaded: the core unloads them when it closes.
func (s *Server) Shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.grpc.GracefulStop()
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
		err = fmt.Errorf("modelmesh: calls in flight were cut off: %w", ctx.Err())
	}
	if rerr := os.RemoveAll(s.svc.dir); rerr != nil {
		err = errors.Join(err, rerr)
	}
	return err
}

// service implements mmesh.ModelRuntime.
type service struct {
	modelmeshpb.UnimplementedModelRuntimeServer

	core  Core
	opts  Options
	dir   string // the working directory: one repository per load
	log   zerolog.Logger
	table *modelTable
	seq   atomic.Uint64 // names the per-load repositories
}

var _ modelmeshpb.ModelRuntimeServer = (*service)(nil)

// LoadModel loads modelPath's model under modelId and answers with the
// memory the model cache measured for it. A model already loaded from the
// same path is answered again; from another path it is ALREADY_EXISTS.
func (s *service) LoadModel(ctx context.Context, req *modelmeshpb.LoadModelRequest) (*modelmeshpb.LoadModelResponse, error) {
	id, path := req.GetModelId(), req.GetModelPath()
	if err := checkModelID(id); err != nil {
		return nil, toStatus(err)
	}
	if err := checkModelPath(path); err != nil {
		return nil, toStatus(err)
	}
	e, err := s.table.lock(ctx, id)
	if err != nil {
		return nil, toStatus(err)
	}
	defer s.table.unlock(e)
	if st := s.table.state(e); st.leftover {
		if err := s.unloadHeld(ctx, e); err != nil { // what an earlier failed load left
			return nil, toStatus(err)
		}
	} else if st.loaded {
		if st.path != path {
			return nil, toStatus(inference.Errorf(inference.CodeAlreadyExists,
				"model '%s' is already loaded from '%s'; unload it before loading it from '%s'", id, st.path, path))
		}
		return &modelmeshpb.LoadModelResponse{SizeInBytes: s.sizeOf(ctx, e)}, nil
	}
	lay, err := resolveLayout(id, path)
	if err != nil {
		return nil, toStatus(err)
	}
	repo, err := s.makeRepository(lay)
	if err != nil {
		return nil, toStatus(err)
	}
	log := s.log.With().Str("model_id", id).Str("model_path", path).Str("repository", repo).Logger()
	if err := s.core.RegisterRepository(repo, map[string]string{lay.served: id}); err != nil {
		s.removeRepository(repo, log)
		log.Info().Err(err).Msg("ModelMesh load refused")
		return nil, toStatus(err)
	}
	start := time.Now()
	lctx, cancel := context.WithTimeout(ctx, s.opts.LoadTimeout)
	err = s.core.LoadModel(lctx, id, repository.LoadOptions{})
	timedOut := ctx.Err() == nil && errors.Is(lctx.Err(), context.DeadlineExceeded)
	cancel()
	if err != nil {
		switch {
		case ctx.Err() != nil: // ModelMesh gave up: an unloadModel follows
			err = fmt.Errorf("load of model '%s' abandoned: %w", id, ctx.Err())
		case timedOut:
			err = fmt.Errorf("model '%s' did not load within %s: %w", id, s.opts.LoadTimeout, context.DeadlineExceeded)
		}
		s.abandonLoad(e, repo, lay.names(id), log)
		err = lay.ownPaths(err, repo)
		log.Info().Err(err).Msg("ModelMesh load failed")
		return nil, toStatus(err)
	}
	s.table.publish(e, modelState{loaded: true, path: path, repo: repo, names: lay.names(id)})
	size := s.sizeOf(ctx, e)
	log.Info().Uint64("size_bytes", size).Dur("took", time.Since(start)).Msg("ModelMesh model loaded")
	return &modelmeshpb.LoadModelResponse{SizeInBytes: size}, nil
}

// abandonLoad undoes a load that failed or was cancelled: whatever came
// up of its models is unloaded and the repository removed. When the
// unload fails the model stays recorded as loaded, so that the unloadModel
// ModelMesh sends after a failed load finishes the job.
func (s *service) abandonLoad(e *entry, repo string, names []string, log zerolog.Logger) {
	ctx := context.Background() // the load's own context may be over
	if err := s.unloadAndWait(ctx, names); err != nil {
		log.Warn().Err(err).Msg("ModelMesh: unloading what a failed load left")
		s.table.publish(e, modelState{loaded: true, leftover: true, repo: repo, names: names})
		return
	}
	s.dropRepository(repo, log)
}

// UnloadModel unloads a model and answers once its versions are closed
// (its requests in flight finish first). A model that is not loaded is
// answered at once, as ModelMesh asks.
func (s *service) UnloadModel(ctx context.Context, req *modelmeshpb.UnloadModelRequest) (*modelmeshpb.UnloadModelResponse, error) {
	if err := checkModelID(req.GetModelId()); err != nil {
		return nil, toStatus(err)
	}
	if !s.table.known(req.GetModelId()) {
		return &modelmeshpb.UnloadModelResponse{}, nil
	}
	e, err := s.table.lock(ctx, req.GetModelId())
	if err != nil {
		return nil, toStatus(err)
	}
	defer s.table.unlock(e)
	if err := s.unloadHeld(ctx, e); err != nil {
		return nil, toStatus(err)
	}
	return &modelmeshpb.UnloadModelResponse{}, nil
}

// unloadHeld unloads e's model, if loaded; the caller holds e's op.
func (s *service) unloadHeld(ctx context.Context, e *entry) error {
	st := s.table.state(e)
	if !st.loaded {
		return nil
	}
	log := s.log.With().Str("model_id", e.id).Str("repository", st.repo).Logger()
	if err := s.unloadAndWait(ctx, st.names); err != nil {
		log.Warn().Err(err).Msg("ModelMesh unload failed")
		return err
	}
	s.table.publish(e, modelState{})
	s.dropRepository(st.repo, log)
	log.Info().Msg("ModelMesh model unloaded")
	return nil
}

// unloadAndWait unloads the models of a load (the served one, with the
// composing models it brought up) and returns once the repository index
// shows none of their versions ready, loading or unloading; after
// UnloadTimeout it is UNAVAILABLE.
func (s *service) unloadAndWait(ctx context.Context, names []string) error {
	for _, name := range names {
		if err := s.core.UnloadModel(ctx, name, true); err != nil {
			return err
		}
	}
	return repository.AwaitUnloaded(ctx, s.core.RepositoryIndex, names, s.opts.UnloadTimeout, s.opts.UnloadPoll)
}

// ModelSize is the memory of a loaded model as the model cache measured
// it, its composing models included; NOT_FOUND for a model not loaded.
func (s *service) ModelSize(ctx context.Context, req *modelmeshpb.ModelSizeRequest) (*modelmeshpb.ModelSizeResponse, error) {
	id := req.GetModelId()
	if err := checkModelID(id); err != nil {
		return nil, toStatus(err)
	}
	e, ok := s.table.loaded(id)
	if !ok {
		return nil, toStatus(inference.NotFound("model '%s' is not loaded", id))
	}
	return &modelmeshpb.ModelSizeResponse{SizeInBytes: s.sizeOf(ctx, e)}, nil
}

// sizeOf sums the memory_usage of every ready version of e's models (the
// served one and the composing models its repository brought). A model
// that is not ready now (evicted by the cache and not reloaded yet)
// keeps the last size seen.
func (s *service) sizeOf(ctx context.Context, e *entry) uint64 {
	st := s.table.state(e)
	var total uint64
	for _, name := range st.names {
		resp, err := s.core.ModelStatistics(ctx, name, "")
		if err != nil {
			return st.size
		}
		for _, ms := range resp.GetModelStats() {
			for _, mu := range ms.GetMemoryUsage() {
				total += mu.GetByteSize()
			}
		}
	}
	s.table.setSize(e, total)
	return total
}

// PredictModelSize estimates a model's size from its files before it
// loads: the nereid_memory_bytes its configuration declares, else the
// bytes of the version directories it would load. When modelPath cannot
// be read yet (still to be pulled) it is modelKey's disk_size_bytes, else
// the default model size.
func (s *service) PredictModelSize(_ context.Context, req *modelmeshpb.PredictModelSizeRequest) (*modelmeshpb.PredictModelSizeResponse, error) {
	id, path := req.GetModelId(), req.GetModelPath()
	if err := checkModelID(id); err != nil {
		return nil, toStatus(err)
	}
	if checkModelPath(path) == nil {
		if lay, err := resolveLayout(id, path); err == nil {
			return &modelmeshpb.PredictModelSizeResponse{SizeInBytes: uint64(lay.predictSize())}, nil
		}
	}
	if n := parseModelKey(req.GetModelKey()).diskSize; n > 0 {
		return &modelmeshpb.PredictModelSizeResponse{SizeInBytes: uint64(n)}, nil
	}
	return &modelmeshpb.PredictModelSizeResponse{SizeInBytes: uint64(s.opts.DefaultModelSize)}, nil
}

// RuntimeStatus is STARTING until the server is ready; then it unloads
// every model loaded through ModelMesh (ModelMesh calls it when it starts,
// and may have restarted while Nereid kept its models) and is READY with
// the runtime's parameters.
func (s *service) RuntimeStatus(ctx context.Context, _ *modelmeshpb.RuntimeStatusRequest) (*modelmeshpb.RuntimeStatusResponse, error) {
	starting := &modelmeshpb.RuntimeStatusResponse{Status: modelmeshpb.RuntimeStatusResponse_STARTING}
	if !s.core.Ready() {
		return starting, nil
	}
	if err := s.purge(ctx); err != nil {
		s.log.Warn().Err(err).Msg("ModelMesh runtimeStatus: unloading the models of an earlier ModelMesh")
		return starting, nil
	}
	methods := make(map[string]*modelmeshpb.RuntimeStatusResponse_MethodInfo, len(idMethods))
	for _, m := range idMethods {
		methods[InferenceService+"/"+m] = &modelmeshpb.RuntimeStatusResponse_MethodInfo{IdInjectionPath: []uint32{1}}
	}
	return &modelmeshpb.RuntimeStatusResponse{
		Status:                  modelmeshpb.RuntimeStatusResponse_READY,
		CapacityInBytes:         uint64(s.opts.Capacity),
		MaxLoadingConcurrency:   uint32(min(s.opts.LoadConcurrency, 1<<20)),
		ModelLoadingTimeoutMs:   uint32(min(s.opts.LoadTimeout.Milliseconds(), 1<<32-1)),
		DefaultModelSizeInBytes: uint64(s.opts.DefaultModelSize),
		RuntimeVersion:          s.opts.Version,
		NumericRuntimeVersion:   numericVersion(s.opts.Version),
		MethodInfos:             methods,
	}, nil
}

// purge unloads every model loaded through the service.
func (s *service) purge(ctx context.Context) error {
	var errs []error
	for _, id := range s.table.ids() {
		e, err := s.table.lock(ctx, id)
		if err != nil {
			return err
		}
		errs = append(errs, s.unloadHeld(ctx, e))
		s.table.unlock(e)
	}
	return errors.Join(errs...)
}

// numericVersion is "MAJOR.MINOR.PATCH" as MAJOR*10^6 + MINOR*10^3 +
// PATCH; ModelMesh no longer reads it.
func numericVersion(v string) uint64 {
	var n uint64
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	for i := range 3 {
		var p uint64
		if i < len(parts) {
			digits := parts[i]
			if j := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }); j >= 0 {
				digits = digits[:j]
			}
			p, _ = strconv.ParseUint(digits, 10, 64)
		}
		n = n*1000 + min(p, 999)
	}
	return n
}
