// Package httpfront is Nereid's HTTP/REST front end: the KServe v2 protocol
// with Triton's extensions (binary tensor data, model repository,
// configuration, statistics, generate), served with fasthttp and answering
// with the same paths, status codes, JSON shapes and error texts as
// Triton's src/http_server.cc, so that tritonclient and perf_analyzer work
// unchanged.
//
// The package only translates between the wire and the inference types; the
// work is done by a Core (in production *server.Server).
//
// Cancellation: each inference request gets a context derived from the
// front end's base context, which Shutdown cancels once it gives up
// waiting. fasthttp gives a handler no signal when its client goes away,
// so a request still running after disconnectWatchDelay has its
// connection watched (disconnect.go): when the client closes it or resets
// it, the request's context is cancelled, as Triton cancels the request
// of a connection that closes; the core then drops the request if it is
// still queued, or tells the backend.
package httpfront

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/jsonw"
	"github.com/nereid-project/nereid/payload"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/server/frontend"
	"github.com/nereid-project/nereid/server/restricted"
)

// Core is what the front end needs from the server core. *server.Server
// satisfies it.
//
// Contract for Infer: the request's tensor Data may alias the HTTP request
// body, which is reused once the handler returns, so the core must not keep
// the request, its tensors or their Data after Infer returns. The response's
// tensors are read (and copied to the wire) before the handler returns; the
// core may hand back Data that aliases the request's inputs. The front end
// calls the response's Done once it has written the data. A model with a
// decoupled transaction policy is refused with an error wrapping
// inference.ErrDecoupled.
//
// Contract for InferStream (generate): out receives the responses one at
// a time and in order, final true on the last or alone (resp nil); it
// copies what it needs and calls Done before returning, blocks while the
// client reads slowly, and returns promptly once ctx is done. InferStream
// returns once the final flag was delivered, or with the error that ended
// the request.
//
// Both return promptly once ctx is cancelled (the client went away, or
// Shutdown stopped waiting).
type Core interface {
	Live() bool
	Ready() bool
	Metadata() *inferencepb.ServerMetadataResponse
	ModelReady(ctx context.Context, name, version string) (bool, error)
	ModelMetadata(ctx context.Context, name, version string) (*inferencepb.ModelMetadataResponse, error)
	// ModelConfig returns a configuration the caller must not modify.
	ModelConfig(ctx context.Context, name, version string) (*inferencepb.ModelConfig, error)
	ModelStatistics(ctx context.Context, name, version string) (*inferencepb.ModelStatisticsResponse, error)
	RepositoryIndex(ctx context.Context, readyOnly bool) ([]repository.IndexEntry, error)
	LoadModel(ctx context.Context, name string, opts repository.LoadOptions) error
	UnloadModel(ctx context.Context, name string, unloadDependents bool) error
	Infer(ctx context.Context, req *inference.Request) (*inference.Response, error)
	InferStream(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error
	frontend.SharedMemoryCore
}

// DefaultMaxInputSize is Triton's default --http-max-input-size (64 MiB).
const DefaultMaxInputSize = 64 << 20

// Options configures the front end. Zero values select the defaults.
type Options struct {
	// Addr is the listen address for ListenAndServe (--http-address and
	// --http-port); default ":8000".
	Addr string
	// MaxInputSize caps the request body, and the decompressed body of a
	// gzip or deflate request, in bytes (--http-max-input-size).
	MaxInputSize int
	// PayloadBudget, when set, caps the bytes of request bodies held at once
	// (--payload-budget-bytes): a body that does not fit is answered 503,
	// naming the budget, before it is read when its Content-Length says its
	// size, after it is read otherwise.
	PayloadBudget *payload.Budget
	// HeaderForwardPattern, when set, forwards every request header whose
	// name it matches into the inference request as a string parameter
	// (--http-header-forward-pattern). Compile it with
	// inference.CompileForwardPattern to get Triton's case-insensitive default.
	HeaderForwardPattern *regexp.Regexp
	// ReadTimeout and IdleTimeout bound slow clients; zero means none.
	ReadTimeout time.Duration
	IdleTimeout time.Duration
	// Concurrency caps the connections served at once; 0 is fasthttp's
	// default (256 * 1024).
	Concurrency int
	// MaxConnsPerIP caps the connections one client address holds open;
	// 0: no cap.
	MaxConnsPerIP int
	Logger        zerolog.Logger
	// Logging serves the logging extension (/v2/logging); nil answers 503
	// as a Triton built without it.
	Logging frontend.LogSettings
	// Tracer samples requests for tracing and serves the trace settings;
	// nil answers the settings endpoints with 503.
	Tracer frontend.Tracer
	// Restricted holds --http-restricted-api: endpoints that need a header.
	Restricted restricted.Rules
}

// Server is the HTTP front end.
type Server struct {
	core Core
	opts Options
	log  zerolog.Logger
	srv  *fasthttp.Server

	// baseCtx is the parent of every request context (fasthttp has none
	// per request); cancel ends it once Shutdown stops waiting. Request
	// contexts are made from requestParent, which carries baseCtx's
	// values but not its cancellation: a short request then costs no lock
	// on baseCtx, and the disconnect watch ties a longer one to baseCtx
	// (disconnectWatch.fire).
	baseCtx       context.Context //nolint:containedctx // server-lifetime parent context
	cancel        context.CancelFunc
	requestParent context.Context //nolint:containedctx // baseCtx without its cancellation

	callPool sync.Pool // *inferCall

	draining atomic.Bool // BeginDrain: responses close their connections

	// watchHook, when set, learns when each disconnect watch of a
	// connection begins and how it ends: a test seam.
	watchHook func(watchEvent)
}

// New returns a front end over core. It does not listen until Serve.
func New(core Core, opts Options) *Server {
	if opts.Addr == "" {
		opts.Addr = ":8000"
	}
	if opts.MaxInputSize <= 0 {
		opts.MaxInputSize = DefaultMaxInputSize
	}
	// Process-wide in fasthttp; one HTTP front end per process sets it.
	fasthttp.SetBodySizePoolLimit(keptBodyLimit, keptBodyLimit)
	s := &Server{core: core, opts: opts, log: opts.Logger}
	s.baseCtx, s.cancel = context.WithCancel(context.Background())
	s.requestParent = context.WithoutCancel(s.baseCtx)
	s.srv = &fasthttp.Server{
		Handler:                       s.Handler(),
		ErrorHandler:                  s.handleTransportError,
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		DisablePreParseMultipartForm:  true,
		DisableHeaderNamesNormalizing: true, // forwarded headers keep the client's spelling
		MaxRequestBodySize:            opts.MaxInputSize,
		HeaderReceived:                s.headerReceived,
		ReadBufferSize:                16 << 10, // room for forwarded headers
		ReadTimeout:                   opts.ReadTimeout,
		IdleTimeout:                   opts.IdleTimeout,
		Concurrency:                   opts.Concurrency,
		MaxConnsPerIP:                 opts.MaxConnsPerIP,
		Logger:                        fasthttpLogger{opts.Logger},
	}
	return s
}

// Serve accepts connections on ln until Shutdown. It returns nil after a
// clean shutdown. It logs nothing: the caller, which knows how the
// listener was set up (TLS), logs the one "started HTTP service" line.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.srv.Serve(lingerListener{ln}); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// ListenAndServe listens on Options.Addr and serves until Shutdown.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("http: listen on %s: %w", s.opts.Addr, err)
	}
	return s.Serve(ln)
}

// BeginDrain starts a graceful shutdown's first phase: requests are still
// served, on the connections they arrive on, but every response closes
// its connection (Connection: close), so that keep-alive clients move
// away before Shutdown closes the connections that are idle.
func (s *Server) BeginDrain() { s.draining.Store(true) }

// Shutdown stops accepting connections and waits for in-flight requests
// until ctx ends; then it cancels the requests still running.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.ShutdownWithContext(ctx)
	s.cancel()
	return err
}

// Handler returns the request handler, for tests and for embedding.
func (s *Server) Handler() fasthttp.RequestHandler {
	return s.handle
}

// handleTransportError answers requests fasthttp could not read, notably
// bodies larger than MaxInputSize, with Triton's JSON error shape.
func (s *Server) handleTransportError(ctx *fasthttp.RequestCtx, err error) {
	// fasthttp closes the connection after this response, possibly with
	// the request body unread.
	if lc, ok := ctx.Conn().(*lingerConn); ok {
		lc.linger.Store(true)
	}
	var small *fasthttp.ErrSmallBuffer
	var timeout interface{ Timeout() bool }
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		if n := ctx.Request.Header.ContentLength(); n > 0 && n <= s.opts.MaxInputSize {
			// Within the size limit: headerReceived refused it for the
			// payload budget.
			respondErr(ctx, s.opts.PayloadBudget.Refusal(int64(n)))
			return
		}
		// fasthttp read up to the limit (a chunked body grows its buffer
		// by doubling) before it gave up.
		s.opts.PayloadBudget.Discarded(int64(s.opts.MaxInputSize))
		respondErr(ctx, tooLarge(-1, s.opts.MaxInputSize))
	case errors.As(err, &small):
		writeError(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, "request header too large")
	case errors.As(err, &timeout) && timeout.Timeout():
		writeError(ctx, fasthttp.StatusRequestTimeout, "request timeout")
	default:
		respondErr(ctx, inference.InvalidArg("error when parsing request: %v", err))
	}
}

// headerReceived refuses, before it is read, a body whose Content-Length
// does not fit in the payload budget: fasthttp stops at its first byte and
// handleTransportError answers 503 naming the budget. A chunked body is
// read first (up to MaxInputSize) and refused by the handler.
func (s *Server) headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	if n := h.ContentLength(); n > 0 && n <= s.opts.MaxInputSize && !s.opts.PayloadBudget.Fits(int64(n)) {
		return fasthttp.RequestConfig{MaxRequestBodySize: 1}
	}
	return fasthttp.RequestConfig{}
}

// tooLarge refuses a body over --http-max-input-size; size < 0 when it
// is not known (a chunked body).
func tooLarge(size, limit int) error {
	if size < 0 {
		return inference.InvalidArg("request body exceeds the maximum allowed value of %d bytes; use --http-max-input-size to increase the limit", limit)
	}
	return inference.InvalidArg("request body size of %d bytes exceeds the maximum allowed value of %d bytes; use --http-max-input-size to increase the limit", size, limit)
}

// httpStatus maps an error to the HTTP status Triton answers with
// (frontend.HTTPStatus): the one place this front end does so.
func httpStatus(err error) int { return frontend.HTTPStatus(err) }

// respondErr writes err as {"error": "..."} with its mapped status.
func respondErr(ctx *fasthttp.RequestCtx, err error) {
	writeError(ctx, httpStatus(err), err.Error())
}

// writeError writes a JSON error body with the given status; the text is
// bounded (inference.Truncate), since error texts echo what clients sent.
// Handlers answer errors through respondErr; only what has no class in
// the protocol writes a status here directly: the router's 405 and the
// transport's 431 and 408.
func writeError(ctx *fasthttp.RequestCtx, status int, msg string) {
	ctx.Response.Header.Del(headerInferHeaderLength)
	ctx.Response.Header.Del("Content-Encoding")
	ctx.SetStatusCode(status)
	ctx.SetContentType(contentTypeJSON)
	buf := ctx.Response.SwapBody(nil)
	buf = append(buf[:0], `{"error":`...)
	buf = jsonw.AppendString(buf, inference.Truncate(msg, inference.MaxMessageBytes))
	buf = append(buf, '}')
	ctx.Response.SwapBody(buf)
}

// fasthttpLogger routes fasthttp's own messages to zerolog.
type fasthttpLogger struct{ log zerolog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug().Msgf(format, args...)
}

// Lingering close. When fasthttp refuses a request before reading its body
// (notably a body over MaxInputSize) it answers and closes the connection.
// Closing a socket with unread input makes the kernel send a reset, which
// can destroy the answer before the client has read it, so such a
// connection first stops writing and drains its input for a moment, as web
// servers do.
const (
	lingerTimeout  = 2 * time.Second
	lingerMaxBytes = 256 << 20
)

type lingerListener struct{ net.Listener }

func (l lingerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &lingerConn{Conn: c}, nil
}

type lingerConn struct {
	net.Conn
	linger atomic.Bool // set when the connection closes after an error

	// A disconnect watch waits on the socket's read side while a request
	// runs. It clears the read deadline for that time (fasthttp's
	// ReadTimeout would otherwise end the watch) and interrupts itself
	// with a deadline in the past; the deadline fasthttp set is recorded
	// here and put back when the watch ends.
	mu           sync.Mutex // guards the fields below
	readDeadline time.Time  // the read deadline last asked for
	watching     bool       // a watch holds the read deadline
}

// SetReadDeadline records t and applies it unless a watch holds the read
// side, which applies it when it ends.
func (c *lingerConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDeadline = t
	if c.watching {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline is SetReadDeadline and the write deadline together.
func (c *lingerConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDeadline = t
	if c.watching {
		return c.SetWriteDeadline(t)
	}
	return c.Conn.SetDeadline(t)
}

// beginWatch hands the read side to a disconnect watch.
func (c *lingerConn) beginWatch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watching = true
	_ = c.Conn.SetReadDeadline(time.Time{})
}

// interruptWatch makes the watch's wait return.
func (c *lingerConn) interruptWatch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.Conn.SetReadDeadline(aLongTimeAgo)
}

// endWatch gives the read side back with the deadline fasthttp asked for.
func (c *lingerConn) endWatch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watching = false
	_ = c.Conn.SetReadDeadline(c.readDeadline)
}

// aLongTimeAgo is a deadline that has passed: it wakes a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

func (c *lingerConn) Close() error {
	if c.linger.Load() {
		if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		if c.SetReadDeadline(time.Now().Add(lingerTimeout)) == nil {
			_, _ = io.CopyN(io.Discard, c.Conn, lingerMaxBytes)
		}
	}
	return c.Conn.Close()
}
