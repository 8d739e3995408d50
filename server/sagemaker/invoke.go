package sagemaker

import (
	"bufio"
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/payload"
	"github.com/nereid-project/nereid/server/v2wire"
)

const headerInferHeaderLength = "Inference-Header-Content-Length"

// errDecoupled answers an inference request for a decoupled model, which
// only generate_stream serves on this port.
var errDecoupled = inference.Unsupported("SageMaker inference doesn't support models with decoupled transaction policy")

// invocations serves POST /invocations: the default model, read as the
// configured inference type says.
func (s *Server) invocations(ctx *fasthttp.RequestCtx) {
	if s.opts.DefaultModel == "" {
		writeError(ctx, fasthttp.StatusBadRequest, "no default model for /invocations: set SAGEMAKER_TRITON_DEFAULT_MODEL_NAME (nereid serve) or --sagemaker-default-model")
		return
	}
	switch s.opts.InferenceType {
	case Generate, GenerateStream:
		s.generate(ctx, s.opts.DefaultModel, s.opts.InferenceType == GenerateStream)
	default:
		s.infer(ctx, s.opts.DefaultModel, epInvocations)
	}
}

// invoke serves POST /models/{name}/invoke: inference on a model that a
// multi-model load made, under the name that load served it as (the
// X-Amzn-SageMaker-Target-Model value it came with, else the name).
func (s *Server) invoke(ctx *fasthttp.RequestCtx, name string) {
	m, ok := s.models.servable(name)
	if !ok {
		writeError(ctx, fasthttp.StatusNotFound, "model '"+name+"' is not loaded")
		return
	}
	s.infer(ctx, m.served, epInvoke)
}

// requestBody returns the request body, decompressed as its
// Content-Encoding says, within --http-max-input-size and the payload
// budget, through the bounded reader the KServe front end uses
// (payload.Inflate). ok is false once an error has been answered.
func (s *Server) requestBody(ctx *fasthttp.RequestCtx, ep endpoint) (body []byte, release func(), ok bool) {
	body = ctx.PostBody()
	f := payload.Gzip
	switch enc := strings.ToLower(strings.TrimSpace(string(header(ctx, "Content-Encoding")))); enc {
	case "", "identity":
		return body, func() {}, true
	case "gzip":
	case "deflate":
		f = payload.Zlib
	default:
		ctx.Response.Header.Set("Accept-Encoding", "gzip, deflate")
		status := fasthttp.StatusUnsupportedMediaType
		if ep == epInvocations {
			status = fasthttp.StatusNotImplemented // as /v2/models/{m}/infer
		}
		writeError(ctx, status, "Unsupported compression type")
		return nil, nil, false
	}
	d, err := payload.Inflate(s.baseCtx, f, body, s.opts.MaxInputSize, s.opts.PayloadBudget)
	if errors.Is(err, payload.ErrInflateLimit) {
		err = inference.InvalidArg("decompressed request body exceeds the maximum allowed value of %d bytes; "+
			"use --http-max-input-size to increase the limit", s.opts.MaxInputSize)
	}
	if err != nil {
		s.respondErr(ctx, ep, err)
		return nil, nil, false
	}
	return d.Bytes, d.Release, true
}

// headerLength returns where the JSON header of a body of size bytes
// ends, and whether a length was given at all (0 given: the raw binary
// form). The binary Content-Type says it; Inference-Header-Content-Length,
// which SageMaker does not pass on, is read too for clients of the HTTP
// port.
func headerLength(ctx *fasthttp.RequestCtx, size int) (int, bool, error) {
	n, given, err := jsonHeaderSize(ctx.Request.Header.ContentType())
	if err != nil {
		return 0, false, err
	}
	if !given {
		if v := header(ctx, headerInferHeaderLength); v != nil {
			n, err = strconv.Atoi(strings.TrimSpace(string(v)))
			if err != nil {
				n = -1
			}
			given = true
		}
	}
	if !given {
		return size, false, nil
	}
	if n < 0 || n > size {
		return 0, false, inference.InvalidArg("inference header size should be in range (0, %d), got: %d", size, n)
	}
	return n, true, nil
}

// infer serves a KServe v2 inference request for model.
func (s *Server) infer(ctx *fasthttp.RequestCtx, model string, ep endpoint) {
	arrival := time.Now()
	body, release, ok := s.requestBody(ctx, ep)
	if !ok {
		return
	}
	defer release()
	hdrLen, given, err := headerLength(ctx, len(body))
	if err != nil {
		s.respondErr(ctx, ep, err)
		return
	}
	c := &v2wire.Call{}
	c.Req.ModelName = model
	c.Req.Arrival = arrival
	if given && hdrLen == 0 {
		cfg, cerr := s.core.ModelConfig(s.baseCtx, model, "")
		if err = cerr; err == nil {
			err = v2wire.DecodeRaw(c, body, cfg)
		}
	} else {
		err = v2wire.DecodeJSON(c, body[:hdrLen], body[hdrLen:])
	}
	if err != nil {
		s.log.Debug().Err(err).Str("model", model).Msg("SageMaker infer request refused")
		s.respondErr(ctx, ep, err)
		return
	}
	rctx, cancel := context.WithCancel(s.baseCtx)
	resp, err := s.core.Infer(rctx, &c.Req)
	if err != nil && rctx.Err() != nil {
		// Cancelled (shutdown): the backend may still read the inputs,
		// which alias the body buffer; leave that buffer to it.
		ctx.Request.SwapBody(nil)
	}
	cancel()
	if err == nil && resp == nil {
		err = inference.Internal("model '%s' returned no response", model)
	}
	if err != nil {
		resp.Done()
		if errors.Is(err, inference.ErrDecoupled) {
			err = errDecoupled
		}
		s.log.Debug().Err(err).Str("model", model).Str("id", c.Req.ID).Msg("SageMaker infer failed")
		s.respondErr(ctx, ep, err)
		return
	}
	s.writeResponse(ctx, ep, c, resp)
	resp.Done() // written into the response body
}

// writeResponse encodes resp, compressed when Accept-Encoding asks for
// it; binary outputs follow the JSON, whose length the Content-Type says.
func (s *Server) writeResponse(ctx *fasthttp.RequestCtx, ep endpoint, c *v2wire.Call, resp *inference.Response) {
	buf := ctx.Response.SwapBody(nil)[:0]
	buf, hdrLen, binary, err := v2wire.AppendResponse(buf, c, resp)
	if err != nil {
		ctx.Response.SwapBody(buf)
		s.respondErr(ctx, ep, err)
		return
	}
	switch enc := v2wire.ResponseEncoding(header(ctx, "Accept-Encoding")); enc {
	case "gzip":
		buf = fasthttp.AppendGzipBytesLevel(nil, buf, fasthttp.CompressDefaultCompression)
		ctx.Response.Header.Set("Content-Encoding", enc)
	case "deflate":
		buf = fasthttp.AppendDeflateBytesLevel(nil, buf, fasthttp.CompressDefaultCompression)
		ctx.Response.Header.Set("Content-Encoding", enc)
	}
	if binary {
		ctx.SetContentType(binaryContentType(hdrLen))
	} else {
		ctx.SetContentType(contentTypeJSON)
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.SwapBody(buf)
}

// generate serves /invocations with the generate inference types: the
// generate extension's request and response mapping (v2wire), one JSON
// response or a stream of Server-Sent Events.
func (s *Server) generate(ctx *fasthttp.RequestCtx, model string, stream bool) {
	arrival := time.Now()
	// The model's inputs decide which keys are tensors.
	cfg, err := s.core.ModelConfig(s.baseCtx, model, "")
	if err != nil {
		s.respondErr(ctx, epInvocations, err)
		return
	}
	if enc := string(header(ctx, "Content-Encoding")); enc != "" && enc != "identity" {
		s.respondErr(ctx, epInvocations, v2wire.ErrGenerateEncoding)
		return
	}
	// The decoded inputs are buffers of their own: a stream may outlive
	// the handler and its body.
	c := &v2wire.Call{}
	c.Req.ModelName = model
	c.Req.Arrival = arrival
	if err := v2wire.DecodeGenerate(c, ctx.PostBody(), cfg); err != nil {
		s.respondErr(ctx, epInvocations, err)
		return
	}
	rctx, cancel := context.WithCancel(s.baseCtx)
	if !stream {
		buf, err := v2wire.GenerateOne(rctx, s.core.InferStream, &c.Req, ctx.Response.SwapBody(nil)[:0])
		cancel()
		ctx.Response.SwapBody(buf)
		if err != nil {
			s.respondErr(ctx, epInvocations, err)
			return
		}
		ctx.SetStatusCode(fasthttp.StatusOK)
		ctx.SetContentType(contentTypeJSON)
		return
	}
	st := v2wire.StartEventStream(rctx, cancel, &c.Req, s.core.InferStream, nil, nil)
	first, ok := st.Next()
	if !ok {
		st.Close()
		if err := st.Err(); err != nil {
			s.respondErr(ctx, epInvocations, err)
			return
		}
		ctx.SetStatusCode(fasthttp.StatusOK)
		ctx.SetContentType(v2wire.ContentTypeEventStream)
		return // only the final flag: an empty stream
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType(v2wire.ContentTypeEventStream)
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) { st.Write(w, first) })
}
