// Package grpcfront is Nereid's gRPC front end: it serves Triton's
// inference.GRPCInferenceService and grpc.health.v1.Health, translating the
// wire messages to and from the calls of the server core.
package grpcfront

import (
	"context"
	"errors"
	"maps"
	"math"
	"net"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/payload"
	"github.com/nereid-project/nereid/proto/healthpb"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/server/frontend"
	"github.com/nereid-project/nereid/server/restricted"
)

// Core is what the gRPC front end needs from the server core; *server.Server
// satisfies it.
//
// Contract: the returned protobuf messages (server metadata, model metadata,
// configuration, statistics) are only read, never modified, by the front end,
// so the core may return cached values. Infer must return promptly once ctx is
// cancelled (the client went away or cancelled the stream); it must not write
// into the Data of the request's input tensors, which alias the received gRPC
// message, nor keep them past its return. The front end only reads the Data
// of the response's outputs, and hands them to gRPC by reference, which
// writes them to the connection after Infer returned: they must not change
// from then on. An output may alias an input of its own request (the received
// bytes stay alive until the output is written), nothing else received.
type Core interface {
	Live() bool
	Ready() bool
	Metadata() *inferencepb.ServerMetadataResponse
	ModelReady(ctx context.Context, name, version string) (bool, error)
	ModelMetadata(ctx context.Context, name, version string) (*inferencepb.ModelMetadataResponse, error)
	ModelConfig(ctx context.Context, name, version string) (*inferencepb.ModelConfig, error)
	ModelStatistics(ctx context.Context, name, version string) (*inferencepb.ModelStatisticsResponse, error)
	RepositoryIndex(ctx context.Context, readyOnly bool) ([]repository.IndexEntry, error)
	LoadModel(ctx context.Context, name string, opts repository.LoadOptions) error
	UnloadModel(ctx context.Context, name string, unloadDependents bool) error
	Infer(ctx context.Context, req *inference.Request) (*inference.Response, error)
	// InferStream runs a request whose responses (0..N, then the final
	// flag) go to out as they are produced; see server.Server.InferStream.
	// Response Data may be handed to gRPC by reference until the message
	// is written, under the same rules as Infer's.
	InferStream(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error
	frontend.SharedMemoryCore
}

// Options configures the gRPC front end. The zero value gives Triton's
// defaults.
type Options struct {
	Logger zerolog.Logger

	// MaxMessageSize caps received and sent messages; 0 means
	// math.MaxInt32, Triton's MAX_GRPC_MESSAGE_SIZE.
	MaxMessageSize int

	// MaxStreamInFlight bounds how many requests of one ModelStreamInfer
	// stream run at the same time; 0 means 64. The stream stops reading
	// while that many responses are outstanding.
	MaxStreamInFlight int

	// Keepalive and KeepalivePolicy map Triton's --grpc-keepalive-* and
	// --grpc-max-connection-age[-grace] flags. Zero fields take grpc-go's
	// defaults, which equal Triton's (keepalive time 2 h, timeout 20 s,
	// minimum client ping interval 5 min, pings without calls refused,
	// two ping strikes).
	Keepalive       keepalive.ServerParameters
	KeepalivePolicy keepalive.EnforcementPolicy

	// PayloadBudget, when set, caps the bytes of inference messages held at
	// once (--payload-budget-bytes): a message larger than one HTTP/2 frame
	// that does not fit is answered UNAVAILABLE, naming the budget, without
	// being copied, and while the budget is full new inference RPCs are
	// refused before their messages are read.
	PayloadBudget *payload.Budget

	// HeaderForwardPattern, when set, forwards every request metadata key
	// it matches into inference requests as a string parameter
	// (--grpc-header-forward-pattern; inference.CompileForwardPattern).
	HeaderForwardPattern *regexp.Regexp

	// InferResponseCompression is --grpc-infer-response-compression-level:
	// none (or ""), low, medium or high.
	InferResponseCompression string

	// ServerOptions are appended to the options the front end sets
	// (transport credentials for --grpc-use-ssl, test hooks). Interceptors
	// and stats handlers among them must not keep inference requests or
	// responses past the RPC: their tensor bytes alias pooled buffers.
	ServerOptions []grpc.ServerOption

	// Logging serves LogSettings; nil answers UNAVAILABLE.
	Logging frontend.LogSettings
	// Tracer samples requests for tracing and serves TraceSetting; nil
	// answers TraceSetting with UNAVAILABLE.
	Tracer frontend.Tracer
	// Restricted holds --grpc-restricted-protocol.
	Restricted restricted.Rules
}

const defaultMaxStreamInFlight = 64

// Server is the gRPC listener side of Nereid.
type Server struct {
	grpc   *grpc.Server
	log    zerolog.Logger
	conns  connSet    // every accepted connection, for Shutdown's deadline
	frames *framePool // the transport's buffers
}

// handshakeTimeout bounds how long an accepted connection may take to
// complete its HTTP/2 handshake (grpc-go's default is 120 s): a client that
// connects and sends nothing holds a descriptor no longer than this.
const handshakeTimeout = 10 * time.Second

// streamWorkers is how many gRPC calls run on reused goroutines. A call
// on a fresh goroutine grows its stack from the minimum on every request;
// under perf_analyzer (simple, gRPC, concurrency 1) that stack copying was
// about 10 % of Nereid's CPU and fell to under 2 % with workers (see
// perf/profile.md), and an ensemble's deeper call path grows it further. A
// call that finds every worker busy still gets its own goroutine, so this
// bounds nothing.
const streamWorkers = 64

// New builds a gRPC server with GRPCInferenceService and Health registered
// over core. It does not listen until Serve.
func New(core Core, opts Options) *Server {
	if opts.MaxMessageSize <= 0 {
		opts.MaxMessageSize = math.MaxInt32
	}
	if opts.MaxStreamInFlight <= 0 {
		opts.MaxStreamInFlight = defaultMaxStreamInFlight
	}
	log := opts.Logger.With().Str("component", "grpc").Logger()
	svc := &service{core: core, log: log, maxInFlight: opts.MaxStreamInFlight,
		logging: opts.Logging, tracer: opts.Tracer, restricted: opts.Restricted}
	compressor, err := responseCompressor(opts.InferResponseCompression)
	if err != nil { // the flag was checked: a caller's mistake
		log.Error().Err(err).Msg("inference responses go out uncompressed")
	}
	svc.compressor = compressor
	svc.forward = opts.HeaderForwardPattern

	c := newCodec(nil)
	c.budget = opts.PayloadBudget
	frames := newFramePool()
	c.frames = frames
	opts.PayloadBudget.OnRelease(frames.trim)
	currentInflateLimits.Store(&inflateLimits{maxMessageSize: opts.MaxMessageSize, budget: opts.PayloadBudget})
	so := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(opts.MaxMessageSize),
		grpc.MaxSendMsgSize(opts.MaxMessageSize),
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.KeepaliveParams(opts.Keepalive),
		grpc.KeepaliveEnforcementPolicy(opts.KeepalivePolicy),
		grpc.ChainUnaryInterceptor(svc.recoverUnary, svc.restrictUnary),
		grpc.ChainStreamInterceptor(svc.recoverStream, svc.restrictStream),
		// For this server only: other servers in the process keep
		// grpc-go's codec.
		grpc.ForceServerCodecV2(c),
		experimental.BufferPool(frames),
		grpc.NumStreamWorkers(streamWorkers),
	}
	if opts.PayloadBudget != nil {
		so = append(so, grpc.InTapHandle(budgetTap(opts.PayloadBudget)))
	}
	so = append(so, opts.ServerOptions...)
	gs := grpc.NewServer(so...)
	gs.RegisterService(inferenceServiceDesc(), svc)
	healthpb.RegisterHealthServer(gs, &healthService{core: core})
	return &Server{grpc: gs, log: log, frames: frames}
}

// Serve accepts connections on ln until Shutdown. It returns nil after a
// Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.grpc.Serve(trackingListener{Listener: ln, set: &s.conns})
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections and waits for in-flight RPCs
// (streams included) to finish; when ctx ends first, it closes every
// connection, which cancels the RPCs still running, and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		// Stop closes the connections grpc-go serves, but waits for those
		// still in their handshake (a client that connected and sent
		// nothing) until it times out: close them all first.
		s.conns.closeAll()
		s.grpc.Stop()
		<-done
		return ctx.Err()
	}
}

// connSet is the set of open accepted connections.
type connSet struct {
	mu sync.Mutex
	m  map[*trackedConn]struct{}
}

func (cs *connSet) add(c *trackedConn) {
	cs.mu.Lock()
	if cs.m == nil {
		cs.m = map[*trackedConn]struct{}{}
	}
	cs.m[c] = struct{}{}
	cs.mu.Unlock()
}

func (cs *connSet) remove(c *trackedConn) {
	cs.mu.Lock()
	delete(cs.m, c)
	cs.mu.Unlock()
}

func (cs *connSet) closeAll() {
	cs.mu.Lock()
	open := make([]*trackedConn, 0, len(cs.m))
	for c := range cs.m {
		open = append(open, c)
	}
	cs.mu.Unlock()
	for _, c := range open {
		_ = c.Close()
	}
}

// trackingListener records every connection it accepts in set until the
// connection closes.
type trackingListener struct {
	net.Listener
	set *connSet
}

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, set: l.set}
	l.set.add(tc)
	return tc, nil
}

type trackedConn struct {
	net.Conn
	set  *connSet
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.set.remove(c) })
	return c.Conn.Close()
}

// toStatus maps an error of the core (or of request decoding) to its gRPC
// status: the code from its inference class, the message its text. It is the
// one place where Nereid errors become gRPC codes.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	// Texts are bounded (inference.Truncate): a status travels in the
	// trailers, and one over the client's header limit resets the stream
	// instead of reaching it.
	msg := inference.Truncate(err.Error(), inference.MaxMessageBytes)
	var ie *inference.Error
	if !errors.As(err, &ie) {
		if st, ok := status.FromError(err); ok {
			if len(st.Message()) <= inference.MaxMessageBytes {
				return st.Err()
			}
			return status.Error(st.Code(), inference.Truncate(st.Message(), inference.MaxMessageBytes))
		}
		switch {
		case errors.Is(err, context.Canceled):
			return status.Error(codes.Canceled, msg)
		case errors.Is(err, context.DeadlineExceeded):
			return status.Error(codes.DeadlineExceeded, msg)
		}
	}
	return status.Error(grpcCode(inference.CodeOf(err)), msg)
}

// grpcCode is Triton's CodeToStatus table.
func grpcCode(c inference.Code) codes.Code {
	switch c {
	case inference.CodeInternal:
		return codes.Internal
	case inference.CodeNotFound:
		return codes.NotFound
	case inference.CodeInvalidArg:
		return codes.InvalidArgument
	case inference.CodeUnavailable, inference.CodeResourceExhausted, inference.CodePermissionDenied:
		return codes.Unavailable
	case inference.CodeUnsupported:
		return codes.Unimplemented
	case inference.CodeAlreadyExists:
		return codes.AlreadyExists
	case inference.CodeCancelled:
		return codes.Canceled
	case inference.CodeUnknown:
		return codes.Unknown
	default:
		return codes.Unknown
	}
}

// errRepositoryName refuses a repository name, which Triton does not support.
var errRepositoryName = inference.Unsupported("'repository_name' specification is not supported")

// service implements inference.GRPCInferenceService.
type service struct {
	inferencepb.UnimplementedGRPCInferenceServiceServer

	core        Core
	log         zerolog.Logger
	maxInFlight int
	logging     frontend.LogSettings
	tracer      frontend.Tracer
	restricted  restricted.Rules
	compressor  string         // inference responses' compressor; "" for none
	forward     *regexp.Regexp // --grpc-header-forward-pattern, or nil
}

var _ inferencepb.GRPCInferenceServiceServer = (*service)(nil)

func (s *service) ServerLive(context.Context, *inferencepb.ServerLiveRequest) (*inferencepb.ServerLiveResponse, error) {
	return &inferencepb.ServerLiveResponse{Live: s.core.Live()}, nil
}

func (s *service) ServerReady(context.Context, *inferencepb.ServerReadyRequest) (*inferencepb.ServerReadyResponse, error) {
	return &inferencepb.ServerReadyResponse{Ready: s.core.Ready()}, nil
}

// ModelReady answers ready: false, as Triton does, for a model or version
// the core cannot serve (unknown, unloaded, not at ready state); other
// failures are errors.
func (s *service) ModelReady(ctx context.Context, in *inferencepb.ModelReadyRequest) (*inferencepb.ModelReadyResponse, error) {
	ready, err := s.core.ModelReady(ctx, in.GetName(), in.GetVersion())
	if inference.MeansNotReady(err) {
		return &inferencepb.ModelReadyResponse{Ready: false}, nil
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &inferencepb.ModelReadyResponse{Ready: ready}, nil
}

func (s *service) ServerMetadata(context.Context, *inferencepb.ServerMetadataRequest) (*inferencepb.ServerMetadataResponse, error) {
	md := s.core.Metadata()
	if md == nil {
		return nil, toStatus(inference.Internal("server metadata is not available"))
	}
	return md, nil
}

func (s *service) ModelMetadata(ctx context.Context, in *inferencepb.ModelMetadataRequest) (*inferencepb.ModelMetadataResponse, error) {
	md, err := s.core.ModelMetadata(ctx, in.GetName(), in.GetVersion())
	if err != nil {
		return nil, toStatus(err)
	}
	return md, nil
}

func (s *service) ModelConfig(ctx context.Context, in *inferencepb.ModelConfigRequest) (*inferencepb.ModelConfigResponse, error) {
	cfg, err := s.core.ModelConfig(ctx, in.GetName(), in.GetVersion())
	if err != nil {
		return nil, toStatus(err)
	}
	return &inferencepb.ModelConfigResponse{Config: cfg}, nil
}

func (s *service) ModelStatistics(ctx context.Context, in *inferencepb.ModelStatisticsRequest) (*inferencepb.ModelStatisticsResponse, error) {
	st, err := s.core.ModelStatistics(ctx, in.GetName(), in.GetVersion())
	if err != nil {
		return nil, toStatus(err)
	}
	if st == nil {
		st = &inferencepb.ModelStatisticsResponse{}
	}
	return st, nil
}

func (s *service) RepositoryIndex(ctx context.Context, in *inferencepb.RepositoryIndexRequest) (*inferencepb.RepositoryIndexResponse, error) {
	if in.GetRepositoryName() != "" {
		return nil, toStatus(errRepositoryName)
	}
	entries, err := s.core.RepositoryIndex(ctx, in.GetReady())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &inferencepb.RepositoryIndexResponse{
		Models: make([]*inferencepb.RepositoryIndexResponse_ModelIndex, len(entries)),
	}
	for i, e := range entries {
		out.Models[i] = &inferencepb.RepositoryIndexResponse_ModelIndex{
			Name:    e.Name,
			Version: e.Version,
			State:   string(e.State),
			Reason:  e.Reason,
		}
	}
	return out, nil
}

// RepositoryModelLoad is synchronous, as in Triton. The load goes on if the
// client gives up waiting, so the core gets a context without cancellation.
func (s *service) RepositoryModelLoad(ctx context.Context, in *inferencepb.RepositoryModelLoadRequest) (*inferencepb.RepositoryModelLoadResponse, error) {
	if in.GetRepositoryName() != "" {
		return nil, toStatus(errRepositoryName)
	}
	opts, err := loadOptions(in.GetModelName(), in.GetParameters())
	if err != nil {
		return nil, toStatus(err)
	}
	if err := s.core.LoadModel(context.WithoutCancel(ctx), in.GetModelName(), opts); err != nil {
		return nil, toStatus(err)
	}
	return &inferencepb.RepositoryModelLoadResponse{}, nil
}

// loadOptions applies Triton's rules for load parameters: "config" is a
// string_param, "file:<version>/<path>" a bytes_param, anything else is
// rejected. Keys are checked in sorted order so the first error reported
// does not depend on map order.
func loadOptions(model string, params map[string]*inferencepb.ModelRepositoryParameter) (repository.LoadOptions, error) {
	var opts repository.LoadOptions
	for _, k := range slices.Sorted(maps.Keys(params)) {
		p := params[k]
		switch {
		case k == "config":
			v, ok := p.GetParameterChoice().(*inferencepb.ModelRepositoryParameter_StringParam)
			if !ok {
				return opts, inference.InvalidArg("invalid value type for load parameter '%s', expected string_param.", k)
			}
			opts.Config = v.StringParam
		case strings.HasPrefix(k, "file:"):
			v, ok := p.GetParameterChoice().(*inferencepb.ModelRepositoryParameter_BytesParam)
			if !ok {
				return opts, inference.InvalidArg("invalid value type for load parameter '%s', expected bytes_param.", k)
			}
			if opts.Files == nil {
				opts.Files = make(map[string][]byte)
			}
			key := strings.TrimPrefix(k, "file:")
			if err := inference.CheckFileParam(model, key); err != nil {
				return opts, err
			}
			opts.Files[key] = v.BytesParam
		default:
			return opts, inference.InvalidArg("unrecognized load parameter '%s'.", k)
		}
	}
	return opts, nil
}

// RepositoryModelUnload only starts the unload (Triton's unload is
// asynchronous); like a load, it is not cancelled with the RPC.
func (s *service) RepositoryModelUnload(ctx context.Context, in *inferencepb.RepositoryModelUnloadRequest) (*inferencepb.RepositoryModelUnloadResponse, error) {
	if in.GetRepositoryName() != "" {
		return nil, toStatus(errRepositoryName)
	}
	dependents := false
	if p, ok := in.GetParameters()["unload_dependents"]; ok {
		v, ok := p.GetParameterChoice().(*inferencepb.ModelRepositoryParameter_BoolParam)
		if !ok {
			return nil, toStatus(inference.InvalidArg("invalid value type for 'unload_dependents' parameter, expected bool_param."))
		}
		dependents = v.BoolParam
	}
	if err := s.core.UnloadModel(context.WithoutCancel(ctx), in.GetModelName(), dependents); err != nil {
		return nil, toStatus(err)
	}
	return &inferencepb.RepositoryModelUnloadResponse{}, nil
}

// The shared-memory RPCs are in sharedmem.go.

// recoverUnary turns a panic in a handler or the core into an INTERNAL
// status instead of a crashed server.
func (s *service) recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = s.panicked(info.FullMethod, r)
		}
	}()
	return handler(ctx, req)
}

func (s *service) recoverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = s.panicked(info.FullMethod, r)
		}
	}()
	return handler(srv, ss)
}

func (s *service) panicked(method string, r any) error {
	s.log.Error().Str("method", method).Interface("panic", r).Bytes("stack", debug.Stack()).Msg("panic in gRPC handler")
	return toStatus(inference.Internal("internal error in %s: %v", method, r))
}

// healthService answers grpc.health.v1 Check from server readiness, as
// Triton does; the service name is ignored.
type healthService struct {
	healthpb.UnimplementedHealthServer
	core Core
}

func (h *healthService) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if h.core.Ready() {
		st = healthpb.HealthCheckResponse_SERVING
	}
	return &healthpb.HealthCheckResponse{Status: st}, nil
}

// budgetTap refuses new inference RPCs while the payload budget is full,
// before grpc-go reads their messages.
func budgetTap(b *payload.Budget) tap.ServerInHandle {
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		switch info.FullMethodName {
		case inferencepb.GRPCInferenceService_ModelInfer_FullMethodName,
			inferencepb.GRPCInferenceService_ModelStreamInfer_FullMethodName:
			if b.Full() {
				return ctx, toStatus(b.Refusal(0))
			}
		}
		return ctx, nil
	}
}
