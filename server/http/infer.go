package httpfront

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/payload"
	"github.com/nereid-project/nereid/server/v2wire"
)

const headerInferHeaderLength = "Inference-Header-Content-Length"

// inferHeaders are the request headers the infer endpoint reads, found in
// one pass and case-insensitively (header names are not normalised, so
// that forwarded headers keep the client's spelling).
type inferHeaders struct {
	hdrLen          []byte
	hasHdrLen       bool
	contentEncoding []byte
	acceptEncoding  []byte
}

func scanInferHeaders(ctx *fasthttp.RequestCtx) inferHeaders {
	var h inferHeaders
	for k, v := range ctx.Request.Header.All() {
		switch {
		case len(k) == len(headerInferHeaderLength) && bytes.EqualFold(k, []byte(headerInferHeaderLength)):
			h.hdrLen, h.hasHdrLen = v, true
		case bytes.EqualFold(k, []byte("Content-Encoding")):
			h.contentEncoding = v
		case bytes.EqualFold(k, []byte("Accept-Encoding")):
			h.acceptEncoding = v
		}
	}
	return h
}

// errDecoupled is Triton's answer to /infer for a decoupled model, which
// only generate and gRPC streaming serve.
var errDecoupled = inference.Unsupported("HTTP end point doesn't support models with decoupled transaction policy")

func (s *Server) getCall() *inferCall {
	if c, ok := s.callPool.Get().(*inferCall); ok {
		return c
	}
	return &inferCall{}
}

func (s *Server) putCall(c *inferCall) {
	if c.abandoned {
		return
	}
	c.Reset()
	s.callPool.Put(c)
}

// inflate decompresses a gzip or deflate request body within
// --http-max-input-size and the payload budget (payload.Inflate).
func (s *Server) inflate(enc string, body []byte) (*payload.Inflated, error) {
	f := payload.Gzip
	if enc == "deflate" {
		f = payload.Zlib
	}
	d, err := payload.Inflate(s.baseCtx, f, body, s.opts.MaxInputSize, s.opts.PayloadBudget)
	if errors.Is(err, payload.ErrInflateLimit) {
		return nil, inference.InvalidArg("decompressed request body exceeds the maximum allowed value of %d bytes; use --http-max-input-size to increase the limit", s.opts.MaxInputSize)
	}
	return d, err
}

// infer serves POST /v2/models/{m}[/versions/{v}]/infer.
func (s *Server) infer(ctx *fasthttp.RequestCtx, rt route) {
	arrival := time.Now()
	version, err := modelVersion(rt.version)
	if err != nil {
		respondErr(ctx, err)
		return
	}
	h := scanInferHeaders(ctx)
	body := ctx.PostBody()
	if len(body) > s.opts.MaxInputSize {
		respondErr(ctx, tooLarge(len(body), s.opts.MaxInputSize))
		return
	}
	switch enc := string(h.contentEncoding); enc {
	case "", "identity":
	case "gzip", "deflate":
		d, err := s.inflate(enc, body)
		if err != nil {
			respondErr(ctx, err)
			return
		}
		defer d.Release()
		body = d.Bytes
	default:
		ctx.Response.Header.Set("Accept-Encoding", "gzip, deflate")
		respondErr(ctx, inference.Unsupported("Unsupported compression type"))
		return
	}

	hdrLen := len(body)
	if h.hasHdrLen {
		n, err := strconv.Atoi(strings.TrimSpace(string(h.hdrLen)))
		if err != nil || n < 0 || n > len(body) {
			respondErr(ctx, inference.InvalidArg("inference header size should be in range (0, %d), got: %s", len(body), h.hdrLen))
			return
		}
		hdrLen = n
	}

	c := s.getCall()
	defer s.putCall(c)
	c.Req.ModelName = rt.model
	c.Req.ModelVersion = version
	c.Req.Arrival = arrival
	if h.hasHdrLen && hdrLen == 0 {
		// Only the raw form needs the configuration, for the shape and
		// datatype of the model's one input. The core refuses unknown
		// and decoupled models for the other forms.
		cfg, cerr := s.core.ModelConfig(s.baseCtx, rt.model, version)
		if err = cerr; err == nil {
			err = v2wire.DecodeRaw(&c.Call, body, cfg)
		}
	} else {
		err = v2wire.DecodeJSON(&c.Call, body[:hdrLen], body[hdrLen:])
		if err != nil && inference.CodeOf(err) == inference.CodeInvalidArg {
			err = s.preferDataTypeError(rt.model, version, body[:hdrLen], err)
		}
	}
	if err == nil && s.opts.HeaderForwardPattern != nil {
		err = s.forwardHeaders(ctx, c)
	}
	if err != nil {
		s.log.Debug().Err(err).Str("model", rt.model).Msg("HTTP infer request refused")
		respondErr(ctx, err)
		return
	}

	tr := s.sampleTrace(rt.model)
	defer tr.Finish()
	tr.Attach(&c.Req)
	tr.Record("HTTP_RECV_START", arrival)
	start := time.Now()
	tr.Record("HTTP_RECV_END", start)
	resp, err := s.runInfer(ctx, c)
	tr.Request(&c.Req, resp, start, time.Now())
	if err == nil && resp == nil {
		err = inference.Internal("model '%s' returned no response", rt.model)
	}
	if err != nil {
		resp.Done()
		s.log.Debug().Err(err).Str("model", rt.model).Str("id", c.Req.ID).Msg("infer failed")
		respondErr(ctx, err)
		return
	}
	tr.Record("HTTP_SEND_START", time.Now())
	s.writeInferResponse(ctx, c, resp, v2wire.ResponseEncoding(h.acceptEncoding))
	resp.Done() // written into the response body
	tr.Record("HTTP_SEND_END", time.Now())
}

// runInfer hands the decoded request to the core under a context that
// the disconnect watch cancels if the client goes away while it runs.
func (s *Server) runInfer(ctx *fasthttp.RequestCtx, c *inferCall) (*inference.Response, error) {
	rctx := c.context(s.requestParent)
	c.watch.start(s.baseCtx, ctx.Conn(), c.cancel, s.watchHook)
	resp, err := s.core.Infer(rctx, &c.Req)
	c.watch.stop()
	if err != nil && rctx.Err() != nil {
		// Cancelled: the core returned without waiting for the
		// backend, which may still read the request and its inputs.
		// Leave both to it: the call object is not reused, nor is the
		// body buffer the inputs alias.
		c.abandoned = true
		ctx.Request.SwapBody(nil)
	}
	if err != nil && errors.Is(err, inference.ErrDecoupled) {
		err = errDecoupled // Triton's text for HTTP
	}
	return resp, err
}

// declaredInputs is what preferDataTypeError reads of a request header.
type declaredInputs struct {
	Inputs []struct {
		Name     string `json:"name"`
		Datatype string `json:"datatype"`
	} `json:"inputs"`
}

// preferDataTypeError returns, for a request refused while its data was
// decoded (a byte size that disagrees with its datatype and shape, data
// that does not parse as its datatype), the datatype mismatch behind it
// when an input's declared datatype is not the model's: the core checks
// datatypes before data, and that is the problem to report. Otherwise, or
// when the header does not parse, it returns err. Only refused requests
// pay for the second look at the header.
func (s *Server) preferDataTypeError(model, version string, header []byte, err error) error {
	var decl declaredInputs
	if json.Unmarshal(header, &decl) != nil || len(decl.Inputs) == 0 {
		return err
	}
	cfg, cerr := s.core.ModelConfig(s.baseCtx, model, version)
	if cerr != nil {
		return err
	}
	for _, in := range decl.Inputs {
		got, ok := inference.ParseDataType(in.Datatype)
		if !ok {
			continue
		}
		for _, ci := range cfg.GetInput() {
			if ci.GetName() == in.Name {
				if want := inference.DataType(ci.GetDataType()); got != want {
					return inference.DataTypeMismatch(in.Name, got, model, want)
				}
				break
			}
		}
	}
	return err
}

// forwardHeaders adds the headers matching --http-header-forward-pattern as
// string parameters.
func (s *Server) forwardHeaders(ctx *fasthttp.RequestCtx, c *inferCall) error {
	re := s.opts.HeaderForwardPattern
	for k, v := range ctx.Request.Header.All() {
		if !re.Match(k) {
			continue
		}
		if inference.ReservedForwardedParam(string(k)) {
			return inference.InvalidArg("header '%s' names a parameter reserved for Triton usage and should not be specified", k)
		}
		c.Param(string(k), string(v))
	}
	return nil
}

var scratchPool sync.Pool // *[]byte, for compressed bodies

// writeInferResponse encodes resp into the response body, compressing it
// when the client asked for it.
func (s *Server) writeInferResponse(ctx *fasthttp.RequestCtx, c *inferCall, resp *inference.Response, encoding string) {
	buf := ctx.Response.SwapBody(nil)[:0]
	buf, hdrLen, binary, err := v2wire.AppendResponse(buf, &c.Call, resp)
	if err != nil {
		ctx.Response.SwapBody(buf)
		respondErr(ctx, err)
		return
	}
	if encoding != "" {
		zp, _ := scratchPool.Get().(*[]byte)
		if zp == nil {
			zp = new([]byte)
		}
		z := *zp
		if encoding == "gzip" {
			z = fasthttp.AppendGzipBytesLevel(z[:0], buf, fasthttp.CompressDefaultCompression)
		} else {
			z = fasthttp.AppendDeflateBytesLevel(z[:0], buf, fasthttp.CompressDefaultCompression)
		}
		*zp = buf
		scratchPool.Put(zp)
		buf = z
		ctx.Response.Header.Set("Content-Encoding", encoding)
	}
	if binary {
		ctx.SetContentType(contentTypeBinary)
		ctx.Response.Header.Set(headerInferHeaderLength, strconv.Itoa(hdrLen))
	} else {
		ctx.SetContentType(contentTypeJSON)
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.SwapBody(buf)
}

// keptBodyLimit is the largest request or response body buffer a
// connection keeps for its next request, which then reads or writes into
// it instead of a new one (set in New with fasthttp.SetBodySizePoolLimit).
// Larger ones go back to the heap once the response is written, so that a
// connection does not hold a large payload's memory for as long as it
// stays open.
const keptBodyLimit = payload.LargeSize
