package asyncinfer

import (
	"compress/gzip"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/jsonw"
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/server/frontend"
	"github.com/nereid-project/nereid/server/restricted"
)

// Request headers the service reads.
const (
	// HeaderNotifyURL names the webhook told of the request's outcome.
	HeaderNotifyURL         = "X-Nereid-Notify-Url"
	headerInferHeaderLength = "Inference-Header-Content-Length"
	maxWebhookURL           = 2048
	lingerMaxBytes          = 256 << 20
	receiveBufferSize       = 256 << 10
)

// allowedMethods are the methods of each endpoint.
var allowedMethods = map[routeKind][]string{
	routeSubmit:  {http.MethodPost},
	routeRequest: {http.MethodGet, http.MethodDelete},
	routeResult:  {http.MethodGet},
}

// ServeHTTP serves the service's endpoints.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, errStopping.Error())
		return
	}
	s.handlers.Add(1)
	s.mu.Unlock()
	defer s.handlers.Done()
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler { //nolint:errorlint // net/http's sentinel panic value
				panic(p)
			}
			s.log.Error().Interface("panic", p).Str("path", r.URL.Path).Msg("asynchronous inference handler panicked")
			writeError(w, http.StatusInternalServerError, fmt.Sprintf("internal error: %v", p))
		}
	}()
	rt := parseRoute(r.URL.EscapedPath())
	if rt.kind == routeNotFound {
		writeError(w, http.StatusNotFound, "unknown asynchronous inference endpoint: "+r.Method+" "+r.URL.Path)
		return
	}
	allow := allowedMethods[rt.kind]
	if !slices.Contains(allow, r.Method) {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed on "+r.URL.Path)
		return
	}
	if !s.allowed(w, r) {
		return
	}
	switch {
	case rt.kind == routeSubmit:
		s.submit(w, r, rt)
	case rt.kind == routeRequest && r.Method == http.MethodGet:
		s.status(w, rt.id)
	case rt.kind == routeRequest:
		s.remove(w, rt.id)
	default:
		s.result(w, r, rt.id)
	}
}

// allowed checks the restricted inference category, answering 403 when
// the request lacks the header it needs.
func (s *Service) allowed(w http.ResponseWriter, r *http.Request) bool {
	if err := s.opts.Restricted.CheckRequest(restricted.Inference, r); err != nil {
		writeError(w, frontend.HTTPStatus(err), err.Error())
		return false
	}
	return true
}

// submit serves POST /v2/models/{m}[/versions/{v}]/infer: it streams the
// body to disk, records the request as pending and answers 202.
func (s *Service) submit(w http.ResponseWriter, r *http.Request, rt route) {
	if rt.version != "" {
		n, err := strconv.ParseInt(rt.version, 10, 64)
		if err != nil {
			s.respondErr(w, inference.InvalidArg("failed to get model version from specified version string '%s': "+
				"version should be an integral value in [0, %d]", rt.version, int64(1<<63-1)))
			return
		}
		rt.version = strconv.FormatInt(n, 10)
	}
	webhook, err := checkWebhook(r.Header.Get(HeaderNotifyURL))
	if err != nil {
		s.respondErr(w, err)
		return
	}
	enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding")))
	switch enc {
	case "", "identity", "gzip", "deflate":
	default:
		w.Header().Set("Accept-Encoding", "gzip, deflate")
		writeError(w, http.StatusUnsupportedMediaType, "Unsupported compression type")
		return
	}
	hdrLen := int64(-1)
	if v, ok := r.Header[headerInferHeaderLength]; ok {
		n, err := strconv.ParseInt(strings.TrimSpace(strings.Join(v, "")), 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "inference header size should be in range (0, body size), got: "+strings.Join(v, ""))
			return
		}
		hdrLen = n
	}
	params, err := s.forwarded(r)
	if err != nil {
		s.respondErr(w, err)
		return
	}
	if err := s.checkModel(r.Context(), rt.model, rt.version); err != nil {
		s.respondErr(w, err)
		return
	}
	if r.ContentLength > s.opts.MaxRequestBytes {
		s.tooLarge(w, r)
		return
	}
	if err := s.reserve(); err != nil {
		s.respondErr(w, err)
		return
	}
	accepted := false
	defer func() {
		if !accepted {
			s.unreserve()
		}
	}()

	id := newID()
	path := s.store.requestPath(id)
	inline, size, err := s.receive(w, r, path, enc)
	if err != nil {
		os.Remove(path)
		if errors.Is(err, errTooLarge) {
			s.tooLarge(w, r)
			return
		}
		s.log.Debug().Err(err).Str("model", rt.model).Msg("asynchronous request body not received")
		s.respondErr(w, err)
		return
	}
	if hdrLen > size {
		os.Remove(path)
		writeError(w, http.StatusBadRequest, fmt.Sprintf("inference header size should be in range (0, %d), got: %d", size, hdrLen))
		return
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	rec := &Record{
		ID: id, Model: rt.model, Version: rt.version,
		ContentType: r.Header.Get("Content-Type"), HeaderLength: hdrLen, BodyBytes: size, Params: params,
		ResultURL: scheme + "://" + r.Host + resultsPath + id, Webhook: webhook,
		State: StatePending, Created: time.Now(), BodyInline: inline != nil,
	}
	if err := s.store.insert(rec, inline); err != nil {
		os.Remove(path)
		s.log.Error().Err(err).Str("model", rt.model).Msg("cannot record an asynchronous request")
		s.respondErr(w, inference.Internal("the request cannot be queued: %v", err))
		return
	}
	accepted = true
	s.met.accepted(rec.Model)
	s.accept(rec)
	w.Header().Set("Location", rec.ResultURL)
	buf := make([]byte, 0, 160)
	buf = append(buf, `{"id":`...)
	buf = jsonw.AppendString(buf, id)
	buf = append(buf, `,"status":"pending","result_url":`...)
	buf = jsonw.AppendString(buf, rec.ResultURL)
	buf = append(buf, '}')
	writeJSON(w, http.StatusAccepted, buf)
}

// checkModel refuses a request for a model the core does not know, or
// that answers 0..N times. A model that is not loaded but loads on
// demand is known when it is in a repository.
func (s *Service) checkModel(ctx context.Context, model, version string) error {
	cfg, err := s.core.ModelConfig(ctx, model, version)
	if err == nil {
		if cfg.GetModelTransactionPolicy().GetDecoupled() {
			return errDecoupled
		}
		return nil
	}
	if code := inference.CodeOf(err); s.opts.LoadOnDemand && (code == inference.CodeNotFound || code == inference.CodeUnavailable) {
		index, ierr := s.core.RepositoryIndex(ctx, false)
		if ierr == nil && slices.ContainsFunc(index, func(e repository.IndexEntry) bool { return e.Name == model }) {
			return nil
		}
	}
	return err
}

// forwarded returns the request headers --http-header-forward-pattern
// forwards as parameters.
func (s *Service) forwarded(r *http.Request) (map[string]string, error) {
	re := s.opts.HeaderForwardPattern
	if re == nil {
		return nil, nil
	}
	var params map[string]string
	for k, v := range r.Header {
		if !re.MatchString(k) {
			continue
		}
		if inference.ReservedForwardedParam(k) {
			return nil, inference.InvalidArg("header '%s' names a parameter reserved for Triton usage and should not be specified", k)
		}
		if params == nil {
			params = map[string]string{}
		}
		params[k] = strings.Join(v, ",")
	}
	return params, nil
}

// checkWebhook validates the X-Nereid-Notify-Url header: an absolute
// http or https URL, or empty.
func checkWebhook(raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", nil
	}
	if len(raw) > maxWebhookURL {
		return "", inference.InvalidArg("%s is longer than %d bytes", HeaderNotifyURL, maxWebhookURL)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", inference.InvalidArg("%s must be an absolute http or https URL, got '%s'", HeaderNotifyURL, raw)
	}
	return u.String(), nil
}

var errTooLarge = errors.New("request body too large")

// receive reads the request body, decompressed as enc says. A body of
// up to inlineMax bytes is returned, to be kept in the database; a larger
// one is streamed into a new file at path, which is synced. errTooLarge
// when it passes the cap.
func (s *Service) receive(w http.ResponseWriter, r *http.Request, path, enc string) (inline []byte, size int64, err error) {
	limit := s.opts.MaxRequestBytes
	var src io.Reader = &progressReader{r: r.Body, rc: http.NewResponseController(w), idle: s.opts.ReadTimeout}
	switch enc {
	case "gzip", "deflate":
		// The compressed body counts against the cap too.
		src = io.LimitReader(src, limit+1)
		var zr io.ReadCloser
		if enc == "gzip" {
			zr, err = gzip.NewReader(src)
		} else {
			zr, err = zlib.NewReader(src)
		}
		if err != nil {
			return nil, 0, bodyError(enc, err)
		}
		defer zr.Close()
		src = zr
	}
	src = io.LimitReader(src, limit+1)
	head := make([]byte, min(inlineMax, limit)+1)
	n, err := io.ReadFull(src, head)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		if int64(n) > limit {
			return nil, int64(n), errTooLarge
		}
		return head[:n], int64(n), nil
	case err != nil:
		return nil, int64(n), bodyError(enc, err)
	case int64(n) > limit:
		return nil, int64(n), errTooLarge
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, 0, inference.Internal("the request body cannot be stored: %v", err)
	}
	defer f.Close()
	if _, err := f.Write(head); err != nil {
		return nil, 0, inference.Internal("the request body cannot be stored: %v", err)
	}
	buf := receiveBuffers.Get().(*[]byte)
	defer receiveBuffers.Put(buf)
	m, err := io.CopyBuffer(onlyWriter{f}, src, *buf)
	size = int64(len(head)) + m
	if err != nil {
		return nil, size, bodyError(enc, err)
	}
	if size > limit {
		return nil, size, errTooLarge
	}
	if err := f.Sync(); err != nil {
		return nil, size, inference.Internal("the request body cannot be stored: %v", err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return nil, size, inference.Internal("the request body cannot be stored: %v", err)
	}
	return nil, size, nil
}

// bodyError says which side a receive error came from: the client's
// connection, the file, or (otherwise) the decompressor.
func bodyError(enc string, err error) error {
	var re *bodyReadError
	var we *fileWriteError
	switch {
	case errors.As(err, &re):
		return inference.InvalidArg("failed to read the request body: %v", re.err)
	case errors.As(err, &we):
		return inference.Internal("the request body cannot be stored: %v", we.err)
	default:
		return inference.InvalidArg("failed to decompress the %s request body: %v", enc, err)
	}
}

var receiveBuffers = sync.Pool{New: func() any {
	b := make([]byte, receiveBufferSize)
	return &b
}}

// onlyWriter hides the file's ReadFrom, so that io.CopyBuffer uses the
// pooled buffer, and marks write errors.
type onlyWriter struct{ f *os.File }

func (w onlyWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil {
		return n, &fileWriteError{err}
	}
	return n, nil
}

type fileWriteError struct{ err error }

func (e *fileWriteError) Error() string { return e.err.Error() }
func (e *fileWriteError) Unwrap() error { return e.err }

type bodyReadError struct{ err error }

func (e *bodyReadError) Error() string { return e.err.Error() }
func (e *bodyReadError) Unwrap() error { return e.err }

// progressReader reads a request body, giving the client idle to send
// each next part: a large body may take longer than that in all, but a
// client that stops sending is cut off. It marks read errors.
type progressReader struct {
	r    io.Reader
	rc   *http.ResponseController
	idle time.Duration
}

func (p *progressReader) Read(b []byte) (int, error) {
	if p.idle > 0 {
		_ = p.rc.SetReadDeadline(time.Now().Add(p.idle))
	}
	n, err := p.r.Read(b)
	if err != nil && !errors.Is(err, io.EOF) {
		err = &bodyReadError{err}
	}
	return n, err
}

// tooLarge answers 413 and then reads (up to a bound) what the client
// still sends, so that it sees the answer instead of a reset connection.
func (s *Service) tooLarge(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	_ = rc.EnableFullDuplex()
	w.Header().Set("Connection", "close")
	writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf(
		"request body exceeds the maximum allowed value of %d bytes; use --async-max-request-bytes to increase the limit", s.opts.MaxRequestBytes))
	_ = rc.Flush()
	if s.opts.ReadTimeout > 0 {
		_ = rc.SetReadDeadline(time.Now().Add(s.opts.ReadTimeout))
	}
	_, _ = io.CopyN(io.Discard, r.Body, lingerMaxBytes)
}

// status serves GET /v2/async/requests/{id}.
func (s *Service) status(w http.ResponseWriter, id string) {
	rec, err := s.lookup(id)
	if err != nil {
		s.respondErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, appendStatus(nil, rec))
}

// result serves GET /v2/async/results/{id}: the response when done, the
// status while pending or running, the error when failed.
func (s *Service) result(w http.ResponseWriter, r *http.Request, id string) {
	rec, err := s.lookup(id)
	if err != nil {
		s.respondErr(w, err)
		return
	}
	switch rec.State {
	case StateFailed:
		writeError(w, rec.Status, rec.Reason)
		return
	case StateDone:
	default:
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusAccepted, appendStatus(nil, rec))
		return
	}
	if rec.ResultInline {
		body, err := s.store.blob(bucketResults, id)
		if err != nil {
			s.respondErr(w, notFound(id)) // expired or deleted since the lookup
			return
		}
		setResultHeaders(w, rec)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
		return
	}
	f, err := os.Open(s.store.resultPath(id))
	if err != nil {
		s.respondErr(w, notFound(id)) // expired or deleted since the lookup
		return
	}
	defer f.Close()
	setResultHeaders(w, rec)
	// ServeContent streams the file (with Range requests, so that a large
	// result can be fetched in parts).
	http.ServeContent(w, r, "", time.Time{}, f)
}

func setResultHeaders(w http.ResponseWriter, rec *Record) {
	w.Header().Set("Content-Type", rec.ResultType)
	if rec.ResultHeaderLength >= 0 && rec.ResultType == contentTypeBinary {
		w.Header().Set(headerInferHeaderLength, strconv.FormatInt(rec.ResultHeaderLength, 10))
	}
}

// remove serves DELETE /v2/async/requests/{id}: a pending request is
// cancelled, a finished one deleted with its result; a running one
// cannot be.
func (s *Service) remove(w http.ResponseWriter, id string) {
	pending, running := s.cancelPending(id)
	if running {
		writeError(w, http.StatusConflict, "request '"+id+"' is running and cannot be cancelled")
		return
	}
	rec, err := s.lookup(id)
	if err != nil {
		s.respondErr(w, err)
		return
	}
	if !pending && !rec.State.finished() {
		// Pending in the store but not queued: accepted while the
		// service was stopping. Running again at the next start.
		writeError(w, http.StatusConflict, "request '"+id+"' cannot be deleted now")
		return
	}
	if err := s.store.remove(id); err != nil {
		s.respondErr(w, inference.Internal("deleting request '%s': %v", id, err))
		return
	}
	status := "deleted"
	if pending {
		status = "cancelled"
		s.met.cancelled(rec.Model)
	}
	buf := append([]byte(`{"id":`), jsonw.AppendString(nil, id)...)
	buf = append(buf, `,"status":"`+status+`"}`...)
	writeJSON(w, http.StatusOK, buf)
}

// lookup reads a request's record: NotFound when there is none.
func (s *Service) lookup(id string) (*Record, error) {
	rec, err := s.store.get(id)
	if errors.Is(err, errNoRecord) {
		return nil, notFound(id)
	}
	if err != nil {
		return nil, inference.Internal("reading request '%s': %v", id, err)
	}
	return rec, nil
}

func notFound(id string) error {
	return inference.NotFound("asynchronous request '%s' is not found (never accepted, deleted, or expired)", id)
}

// appendStatus writes a request's status object.
func appendStatus(dst []byte, rec *Record) []byte {
	dst = append(dst, `{"id":`...)
	dst = jsonw.AppendString(dst, rec.ID)
	dst = append(dst, `,"model_name":`...)
	dst = jsonw.AppendString(dst, rec.Model)
	if rec.Version != "" {
		dst = append(dst, `,"model_version":`...)
		dst = jsonw.AppendString(dst, rec.Version)
	}
	dst = append(dst, `,"status":`...)
	dst = jsonw.AppendString(dst, string(rec.State))
	if rec.Reason != "" {
		dst = append(dst, `,"error":`...)
		dst = jsonw.AppendString(dst, rec.Reason)
	}
	dst = append(dst, `,"result_url":`...)
	dst = jsonw.AppendString(dst, rec.ResultURL)
	for _, t := range []struct {
		name string
		at   time.Time
	}{{"created", rec.Created}, {"started", rec.Started}, {"finished", rec.Finished}} {
		if !t.at.IsZero() {
			dst = append(dst, `,"`+t.name+`":"`...)
			dst = t.at.UTC().AppendFormat(dst, time.RFC3339Nano)
			dst = append(dst, '"')
		}
	}
	dst = append(dst, `,"attempts":`...)
	dst = strconv.AppendInt(dst, int64(rec.Attempts), 10)
	dst = append(dst, '}')
	return dst
}

// respondErr writes err as {"error": "..."} with its mapped status.
func (s *Service) respondErr(w http.ResponseWriter, err error) {
	writeError(w, httpStatus(err), err.Error())
}

// writeError writes a Triton-style JSON error body.
func writeError(w http.ResponseWriter, status int, msg string) {
	buf := append([]byte(`{"error":`), jsonw.AppendString(nil, msg)...)
	writeJSON(w, status, append(buf, '}'))
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentTypeJSON)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
