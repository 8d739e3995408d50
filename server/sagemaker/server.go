// Package sagemaker is Nereid's Amazon SageMaker front end: GET /ping and
// POST /invocations for single-model endpoints, and the multi-model
// endpoint (MME) contract Triton's SageMaker server implements (POST,
// GET and DELETE /models, POST /models/{name}/invoke), with Triton's
// status codes. Inference bodies are KServe v2, decoded and encoded by
// server/v2wire as on the HTTP port; a body with binary tensor data
// carries the length of its JSON part in its Content-Type.
//
// The package translates between the wire and the core; models are
// loaded, served and unloaded by a Core (in production *server.Server).
package sagemaker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/jsonw"
	"github.com/nereid-project/nereid/payload"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/server/restricted"
)

// Core is what the SageMaker front end needs from the server core.
// *server.Server satisfies it.
//
// Infer and InferStream keep the contract of the HTTP front end's Core:
// the request's tensor Data may alias the request body, which is reused
// once the handler returns, so the core must not keep the request after
// Infer returns; the front end calls the response's Done once it has
// written it; a decoupled model is refused by Infer with an error wrapping
// inference.ErrDecoupled; both return promptly once ctx is cancelled.
//
// RegisterRepository adds a repository at run time, serving each
// sub-directory named in names under the mapped name (AlreadyExists when
// the path or a name is taken); UnregisterRepository removes it again.
// LoadModel is synchronous, UnloadModel returns before the unload is
// complete: RepositoryIndex tells when it is.
type Core interface {
	Live() bool
	Ready() bool
	ModelReady(ctx context.Context, name, version string) (bool, error)
	// ModelConfig returns a configuration the caller must not modify.
	ModelConfig(ctx context.Context, name, version string) (*inferencepb.ModelConfig, error)
	RepositoryIndex(ctx context.Context, readyOnly bool) ([]repository.IndexEntry, error)
	RegisterRepository(path string, names map[string]string) error
	UnregisterRepository(path string) error
	LoadModel(ctx context.Context, name string, opts repository.LoadOptions) error
	UnloadModel(ctx context.Context, name string, unloadDependents bool) error
	Infer(ctx context.Context, req *inference.Request) (*inference.Response, error)
	InferStream(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error
}

// PingMode is what GET /ping reports.
type PingMode string

// The ping modes (SAGEMAKER_TRITON_PING_MODE).
const (
	PingReady PingMode = "ready" // the server is ready (strict readiness applies)
	PingLive  PingMode = "live"  // the server is live: multi-model endpoints
)

// ParsePingMode checks a ping mode's spelling.
func ParsePingMode(s string) (PingMode, error) {
	switch m := PingMode(s); m {
	case PingReady, PingLive:
		return m, nil
	}
	return "", fmt.Errorf("SageMaker ping mode %q is not one of ready, live", s)
}

// InferenceType is how POST /invocations reads its body.
type InferenceType string

// The inference types (SAGEMAKER_TRITON_INFERENCE_TYPE).
const (
	InferTensors   InferenceType = "infer"           // a KServe v2 inference request
	Generate       InferenceType = "generate"        // Nereid's generate extension, one response
	GenerateStream InferenceType = "generate_stream" // generate, responses as Server-Sent Events
)

// ParseInferenceType checks an inference type's spelling.
func ParseInferenceType(s string) (InferenceType, error) {
	switch t := InferenceType(s); t {
	case InferTensors, Generate, GenerateStream:
		return t, nil
	}
	return "", fmt.Errorf("SageMaker inference type %q is not one of infer, generate, generate_stream", s)
}

// Defaults of Options.
const (
	DefaultAddr         = ":8080"
	DefaultModelRoot    = "/opt/ml/models"
	DefaultMaxInputSize = 64 << 20
	// DefaultUnloadTimeout is how long DELETE /models/{name} waits for the
	// unload: SageMaker gives up on an unload after 360 s.
	DefaultUnloadTimeout = 350 * time.Second
	// DefaultUnloadPoll is how often DELETE looks at the repository index
	// while it waits: the core has no unload notification.
	DefaultUnloadPoll = 500 * time.Millisecond
)

// Options configures the front end. Zero values select the defaults.
type Options struct {
	// Addr is the listen address for ListenAndServe; default ":8080".
	Addr string
	// PingMode is what /ping reports; default PingReady.
	PingMode PingMode
	// DefaultModel is the model POST /invocations serves (latest version).
	DefaultModel string
	// InferenceType is how /invocations reads its body; default infer.
	InferenceType InferenceType
	// ModelRoot is where multi-model artefacts are: a load's url must be
	// <ModelRoot>/<name>/model[/<subdir>]. Default /opt/ml/models.
	ModelRoot string
	// MaxInputSize caps request bodies, and decompressed ones, in bytes.
	MaxInputSize int
	// Workers bounds the requests handled at once (--sagemaker-thread-count):
	// others wait for one to finish. /ping is never held back. 0: no bound.
	Workers int
	// UnloadTimeout and UnloadPoll: how long, and how often, DELETE
	// /models/{name} looks for the model's unload to finish.
	UnloadTimeout time.Duration
	UnloadPoll    time.Duration
	// PayloadBudget, when set, caps the bytes of request bodies held at
	// once, shared with the other front ends.
	PayloadBudget *payload.Budget
	// Restricted holds --http-restricted-api: the model-repository and
	// inference categories apply here too.
	Restricted restricted.Rules
	Logger     zerolog.Logger
}

// Server is the SageMaker front end.
type Server struct {
	core Core
	opts Options
	log  zerolog.Logger
	srv  *fasthttp.Server

	// baseCtx is the parent of every request's context; cancel ends it
	// once Shutdown stops waiting for in-flight requests.
	baseCtx context.Context //nolint:containedctx // server-lifetime parent context
	cancel  context.CancelFunc

	// workers holds a token per request being handled when Workers bounds
	// them; nil otherwise.
	workers chan struct{}

	models modelTable
}

// New returns a front end over core. It does not listen until Serve.
func New(core Core, opts Options) *Server {
	if opts.Addr == "" {
		opts.Addr = DefaultAddr
	}
	if opts.PingMode == "" {
		opts.PingMode = PingReady
	}
	if opts.InferenceType == "" {
		opts.InferenceType = InferTensors
	}
	if opts.ModelRoot == "" {
		opts.ModelRoot = DefaultModelRoot
	}
	if opts.MaxInputSize <= 0 {
		opts.MaxInputSize = DefaultMaxInputSize
	}
	if opts.UnloadTimeout <= 0 {
		opts.UnloadTimeout = DefaultUnloadTimeout
	}
	if opts.UnloadPoll <= 0 {
		opts.UnloadPoll = DefaultUnloadPoll
	}
	// Process-wide in fasthttp, and the HTTP front end sets the same: a
	// connection keeps no body buffer larger than a large payload.
	fasthttp.SetBodySizePoolLimit(payload.LargeSize, payload.LargeSize)
	s := &Server{core: core, opts: opts, log: opts.Logger, models: modelTable{byName: map[string]*mmeModel{}}}
	if opts.Workers > 0 {
		s.workers = make(chan struct{}, opts.Workers)
	}
	s.baseCtx, s.cancel = context.WithCancel(context.Background())
	s.srv = &fasthttp.Server{
		Handler:                      s.handle,
		ErrorHandler:                 s.handleTransportError,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		MaxRequestBodySize:           opts.MaxInputSize,
		Logger:                       fasthttpLogger{opts.Logger},
	}
	return s
}

// Serve accepts connections on ln until Shutdown; nil after a clean one.
func (s *Server) Serve(ln net.Listener) error {
	s.log.Info().Str("addr", ln.Addr().String()).Msg("started SageMaker service")
	if err := s.srv.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// ListenAndServe listens on Options.Addr and serves until Shutdown.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("sagemaker: listen on %s: %w", s.opts.Addr, err)
	}
	return s.Serve(ln)
}

// Shutdown stops accepting connections and waits for in-flight requests
// (a DELETE waiting for its unload among them) until ctx ends; then it
// cancels those still running.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.ShutdownWithContext(ctx)
	s.cancel()
	return err
}

// Handler returns the request handler, for tests.
func (s *Server) Handler() fasthttp.RequestHandler { return s.handle }

const contentTypeJSON = "application/json"

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error().Interface("panic", p).Bytes("path", ctx.URI().PathOriginal()).Msg("SageMaker handler panicked")
			writeError(ctx, fasthttp.StatusInternalServerError, fmt.Sprintf("internal error: %v", p))
		}
	}()
	path := string(ctx.URI().PathOriginal())
	method := string(ctx.Method())
	if path == "/ping" && method == fasthttp.MethodGet {
		s.ping(ctx)
		return
	}
	// The request's body is held until the handler returns.
	if n := int64(len(ctx.Request.Body())); n > 0 {
		if err := s.opts.PayloadBudget.Acquire(n); err != nil {
			writeError(ctx, fasthttp.StatusServiceUnavailable, err.Error())
			return
		}
		defer s.opts.PayloadBudget.Release(n)
	}
	if s.workers != nil {
		s.workers <- struct{}{}
		defer func() { <-s.workers }()
	}
	switch {
	case path == "/invocations" && method == fasthttp.MethodPost:
		if s.allowed(ctx, restricted.Inference) {
			s.invocations(ctx)
		}
		return
	case path == "/models":
		switch method {
		case fasthttp.MethodPost:
			if s.allowed(ctx, restricted.ModelRepository) {
				s.loadModel(ctx)
			}
			return
		case fasthttp.MethodGet:
			if s.allowed(ctx, restricted.ModelRepository) {
				s.listModels(ctx)
			}
			return
		}
	case strings.HasPrefix(path, "/models/"):
		name, action, _ := strings.Cut(path[len("/models/"):], "/")
		name, err := url.PathUnescape(name)
		if err != nil || name == "" {
			break
		}
		switch {
		case action == "" && method == fasthttp.MethodGet:
			if s.allowed(ctx, restricted.ModelRepository) {
				s.describeModel(ctx, name)
			}
			return
		case action == "" && method == fasthttp.MethodDelete:
			if s.allowed(ctx, restricted.ModelRepository) {
				s.unloadModel(ctx, name)
			}
			return
		case action == "invoke" && method == fasthttp.MethodPost:
			if s.allowed(ctx, restricted.Inference) {
				s.invoke(ctx, name)
			}
			return
		}
	}
	// Triton's SageMaker server answers 400, not 404, to anything else.
	writeError(ctx, fasthttp.StatusBadRequest, "unknown SageMaker endpoint: "+method+" "+path)
}

// ping serves GET /ping: 200 when the server is ready (or live, in live
// mode), 400 otherwise.
func (s *Server) ping(ctx *fasthttp.RequestCtx) {
	ok := s.core.Ready()
	if s.opts.PingMode == PingLive {
		ok = s.core.Live()
	}
	if ok {
		ctx.SetStatusCode(fasthttp.StatusOK)
	} else {
		ctx.SetStatusCode(fasthttp.StatusBadRequest)
	}
}

// allowed checks a restricted category, answering 403 when the request
// lacks the header it needs.
func (s *Server) allowed(ctx *fasthttp.RequestCtx, c restricted.Category) bool {
	if len(s.opts.Restricted) == 0 {
		return true
	}
	rule, ok := s.opts.Restricted.Allowed(c, func(name string) (string, bool) {
		v := ctx.Request.Header.Peek(name)
		return string(v), v != nil
	})
	if !ok {
		writeError(ctx, fasthttp.StatusForbidden, "This API is restricted, expecting header '"+rule.Header+"'")
	}
	return ok
}

// handleTransportError answers requests fasthttp could not read.
func (s *Server) handleTransportError(ctx *fasthttp.RequestCtx, err error) {
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		writeError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf(
			"request body exceeds the maximum allowed value of %d bytes; use --http-max-input-size to increase the limit", s.opts.MaxInputSize))
		return
	}
	writeError(ctx, fasthttp.StatusBadRequest, "error when parsing request: "+err.Error())
}

// endpoint names the groups of SageMaker endpoints whose errors map to
// different status codes.
type endpoint uint8

const (
	epInvocations endpoint = iota // POST /invocations
	epInvoke                      // POST /models/{name}/invoke
	epLoad                        // POST /models
	epUnload                      // DELETE /models/{name}
)

// httpStatus maps an error to the status Triton's SageMaker server
// answers with: the one place this front end does so. Inference and load
// errors that say memory ran out (the core's ResourceExhausted, or a
// backend's out-of-memory text) are 507, which tells SageMaker to evict
// models and retry. Otherwise /invocations keeps the HTTP port's mapping
// for the errors found before the model runs, and answers errors of the
// model itself with 400; invoke answers 400 for everything; a load that
// finds the repository or model taken is 409; an unload of an unknown
// model 404.
func httpStatus(ep endpoint, err error) int {
	code := inference.CodeOf(err)
	if ep != epUnload && (code == inference.CodeResourceExhausted || outOfMemory(err.Error())) {
		return fasthttp.StatusInsufficientStorage
	}
	switch ep {
	case epInvocations:
		switch code {
		case inference.CodeNotFound:
			return fasthttp.StatusNotFound
		case inference.CodeUnavailable:
			return fasthttp.StatusServiceUnavailable
		case inference.CodeUnsupported:
			return fasthttp.StatusNotImplemented
		default: // invalid argument, the model's own errors (internal), cancelled
			return fasthttp.StatusBadRequest
		}
	case epLoad:
		if code == inference.CodeAlreadyExists {
			return fasthttp.StatusConflict
		}
	case epUnload:
		if code == inference.CodeNotFound {
			return fasthttp.StatusNotFound
		}
	case epInvoke:
	}
	return fasthttp.StatusBadRequest
}

// oomMarkers are the texts by which a failure says that memory (host,
// device or disk) ran out, as backends and frameworks word it.
// They are matched in lower case.
var oomMarkers = []string{
	"out of memory", "cuda_out_of_memory", "memoryerror", "outofmemory",
	"failed to allocate memory", "cublas_status_alloc_failed", "cudnn_status_alloc_failed",
	"cudaerrormemoryallocation", "std::bad_alloc", "cannot allocate memory", "no space left on device",
}

// outOfMemory reports whether msg carries an out-of-memory marker, in any
// case. "OOM" counts only in capitals and as a word of its own, so that a
// model named "BLOOM" does not make its every error look like one.
func outOfMemory(msg string) bool {
	lower := strings.ToLower(msg)
	for _, m := range oomMarkers {
		if strings.Contains(lower, m) {
			return true
		}
	}
	for i := 0; ; {
		j := strings.Index(msg[i:], "OOM")
		if j < 0 {
			return false
		}
		j += i
		end := j + len("OOM")
		if (j == 0 || !isWordByte(msg[j-1])) && (end == len(msg) || !isWordByte(msg[end])) {
			return true
		}
		i = end
	}
}

func isWordByte(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// respondErr writes err as {"error": "..."} with the status of ep.
func (s *Server) respondErr(ctx *fasthttp.RequestCtx, ep endpoint, err error) {
	writeError(ctx, httpStatus(ep, err), err.Error())
}

// writeError writes a JSON error body with the given status.
func writeError(ctx *fasthttp.RequestCtx, status int, msg string) {
	ctx.Response.Header.Del("Content-Encoding")
	ctx.SetStatusCode(status)
	ctx.SetContentType(contentTypeJSON)
	buf := ctx.Response.SwapBody(nil)
	buf = append(buf[:0], `{"error":`...)
	buf = jsonw.AppendString(buf, msg)
	buf = append(buf, '}')
	ctx.Response.SwapBody(buf)
}

// header returns a request header's value, matched case-insensitively.
func header(ctx *fasthttp.RequestCtx, name string) []byte {
	for k, v := range ctx.Request.Header.All() {
		if bytes.EqualFold(k, []byte(name)) {
			return v
		}
	}
	return nil
}

// fasthttpLogger routes fasthttp's own messages to zerolog.
type fasthttpLogger struct{ log zerolog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug().Msgf(format, args...)
}
