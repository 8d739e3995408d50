package httpfront

import (
	"bufio"
	"context"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/nereid-project/nereid/server/v2wire"
	"github.com/nereid-project/nereid/trace"
)

// The generate extension (Triton's provisional
// docs/protocol/extension_generate.md): the request and response mapping
// is v2wire's (DecodeGenerate, AppendGenerateJSON); this file serves it.
// Unlike infer, generate serves decoupled models: /generate wants exactly
// one response from them, /generate_stream sends each response as a
// Server-Sent Event.

const contentTypeSSE = v2wire.ContentTypeEventStream

// generateCall is one generate request. Unlike an inferCall it is not
// pooled: its inputs are decoded into buffers of its own, so it does not
// alias the HTTP body, and a streamed request outlives the handler.
type generateCall struct {
	call  inferCall // the request and its disconnect watch
	tr    *trace.Trace
	start time.Time // when the request went to the core
}

// finish records the core's part of the request in its trace.
func (g *generateCall) finish() {
	g.tr.Request(&g.call.Req, nil, g.start, time.Now())
	g.tr.Finish()
}

// generate serves POST /v2/models/{m}[/versions/{v}]/generate and
// generate_stream.
func (s *Server) generate(ctx *fasthttp.RequestCtx, rt route, stream bool) {
	arrival := time.Now()
	version, err := modelVersion(rt.version)
	if err != nil {
		respondErr(ctx, err)
		return
	}
	// As in Triton, the model's inputs decide which keys are tensors, and
	// an unknown model is refused before the body is read.
	cfg, err := s.core.ModelConfig(s.baseCtx, rt.model, version)
	if err != nil {
		respondErr(ctx, err)
		return
	}
	if enc := string(scanInferHeaders(ctx).contentEncoding); enc != "" && enc != "identity" {
		respondErr(ctx, v2wire.ErrGenerateEncoding)
		return
	}
	g := &generateCall{}
	g.call.Req.ModelName = rt.model
	g.call.Req.ModelVersion = version
	g.call.Req.Arrival = arrival
	if err := v2wire.DecodeGenerate(&g.call.Call, ctx.PostBody(), cfg); err != nil {
		s.log.Debug().Err(err).Str("model", rt.model).Msg("HTTP generate request refused")
		respondErr(ctx, err)
		return
	}
	g.tr = s.sampleTrace(rt.model)
	g.tr.Attach(&g.call.Req)
	g.tr.Record("HTTP_RECV_START", arrival)
	g.start = time.Now()
	g.tr.Record("HTTP_RECV_END", g.start)
	if stream {
		s.generateStream(ctx, g)
	} else {
		s.generateOnce(ctx, g)
	}
}

// generateOnce runs a /generate request and answers with its one
// response.
func (s *Server) generateOnce(ctx *fasthttp.RequestCtx, g *generateCall) {
	defer g.finish()
	rctx, cancel := context.WithCancel(s.requestParent)
	g.call.watch.start(s.baseCtx, ctx.Conn(), cancel, s.watchHook)
	buf, err := v2wire.GenerateOne(rctx, s.core.InferStream, &g.call.Req, startJSON(ctx))
	g.call.watch.stop()
	cancel()
	if err != nil {
		ctx.Response.SwapBody(buf)
		s.log.Debug().Err(err).Str("model", g.call.Req.ModelName).Str("id", g.call.Req.ID).Msg("generate failed")
		respondErr(ctx, err)
		return
	}
	finishJSON(ctx, buf)
}

// generateStream runs a /generate_stream request. The status is decided
// by how the request starts, as in Triton: an error before the first
// response takes the error's status, and is a plain JSON error when the
// core refused the request before its model ran, or else (the model
// failed it) an event stream holding the one {"error": ...} event; after
// the first response the answer is 200 and the events follow as the model
// sends them, an error among them as a last {"error": ...} event. Either
// way a client reading events sees every failure of the model's as one.
func (s *Server) generateStream(ctx *fasthttp.RequestCtx, g *generateCall) {
	rctx, cancel := context.WithCancel(s.requestParent)
	g.call.watch.start(s.baseCtx, ctx.Conn(), cancel, s.watchHook)
	// The watch is stopped first when the stream closes, so that the
	// connection's read side is fasthttp's again before the stream ends.
	st := v2wire.StartEventStream(rctx, cancel, &g.call.Req, s.core.InferStream, g.call.watch.stop, g.finish)
	handedOff := false
	defer func() {
		if !handedOff { // an early answer, or a panic
			st.Close()
		}
	}()
	first, ok := st.Next()
	if err := st.Err(); !ok && err != nil {
		s.log.Debug().Err(err).Str("model", g.call.Req.ModelName).Str("id", g.call.Req.ID).Msg("generate failed")
		respondErr(ctx, err)
		if g.call.Req.Timing.Executed() {
			asErrorEvent(ctx)
		}
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType(contentTypeSSE)
	if !ok {
		return // only the final flag: an empty stream
	}
	handedOff = true
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) { st.Write(w, first) })
}

// asErrorEvent turns the JSON error answer respondErr wrote into an event
// stream of that one event, under the same status.
func asErrorEvent(ctx *fasthttp.RequestCtx) {
	body := ctx.Response.SwapBody(nil)
	ev := make([]byte, 0, len("data: ")+len(body)+len("\n\n"))
	ev = append(ev, "data: "...)
	ev = append(ev, body...)
	ev = append(ev, "\n\n"...)
	ctx.Response.SwapBody(ev)
	ctx.SetContentType(contentTypeSSE)
}
