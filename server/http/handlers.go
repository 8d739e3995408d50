package httpfront

import (
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/jsonw"
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/server/v2wire"
)

const (
	contentTypeJSON   = "application/json"
	contentTypeBinary = "application/octet-stream"

	msgMethodNotAllowed = "Method Not Allowed"
)

// errNotFound answers a path no route matches.
var errNotFound = inference.NotFound("Not Found")

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error().Interface("panic", p).Bytes("path", ctx.URI().PathOriginal()).Msg("HTTP handler panicked")
			respondErr(ctx, inference.Internal("internal error: %v", p))
		}
	}()
	if s.draining.Load() {
		// Shutting down: answer, then close, so that the client's next
		// request goes elsewhere instead of meeting a closed connection.
		ctx.SetConnectionClose()
	}
	// The request's body is held until the handler returns: it is what
	// the payload budget counts (the response is built from it).
	if n := int64(len(ctx.Request.Body())); n > 0 {
		if err := s.opts.PayloadBudget.Acquire(n); err != nil {
			respondErr(ctx, err)
			return
		}
		defer s.opts.PayloadBudget.Release(n)
	}
	r := parseRoute(ctx.URI().PathOriginal())
	if !s.allowed(ctx, r.kind) {
		return
	}
	switch r.kind {
	case routeServerMetadata:
		if methodIs(ctx, "GET") {
			s.serverMetadata(ctx)
		}
	case routeHealthLive, routeHealthReady:
		if methodIs(ctx, "GET") {
			ok := s.core.Live()
			if r.kind == routeHealthReady {
				ok = s.core.Ready()
			}
			if ok {
				ctx.SetStatusCode(fasthttp.StatusOK)
			} else {
				ctx.SetStatusCode(fasthttp.StatusBadRequest)
			}
		}
	case routeModelReady:
		if methodIs(ctx, "GET") {
			s.modelReady(ctx, r)
		}
	case routeModelMetadata:
		if methodIs(ctx, "GET") {
			s.modelMetadata(ctx, r)
		}
	case routeModelConfig:
		if methodIs(ctx, "GET") {
			s.modelConfig(ctx, r)
		}
	case routeStatsAll, routeModelStats:
		if methodIs(ctx, "GET") {
			s.modelStats(ctx, r)
		}
	case routeModelInfer:
		if methodIs(ctx, "POST") {
			s.infer(ctx, r)
		}
	case routeModelGenerate, routeModelGenerateStream:
		if methodIs(ctx, "POST") {
			s.generate(ctx, r, r.kind == routeModelGenerateStream)
		}
	case routeRepoIndex:
		if methodIs(ctx, "POST") {
			s.repositoryIndex(ctx)
		}
	case routeRepoLoad, routeRepoUnload:
		if methodIs(ctx, "POST") {
			s.repositoryControl(ctx, r)
		}
	case routeSystemShm, routeCudaShm:
		want := "POST"
		if r.action == "status" {
			want = "GET"
		}
		if methodIs(ctx, want) {
			s.sharedMemory(ctx, r)
		}
	case routeTrace, routeModelTrace:
		if methodIs(ctx, "GET", "POST") {
			s.traceSetting(ctx, r.model)
		}
	case routeLogging:
		if methodIs(ctx, "GET", "POST") {
			s.logging(ctx)
		}
	default:
		respondErr(ctx, errNotFound)
	}
}

// methodIs reports whether the request uses one of the methods, answering
// 405 when it does not.
func methodIs(ctx *fasthttp.RequestCtx, methods ...string) bool {
	m := ctx.Method()
	for _, want := range methods {
		if string(m) == want {
			return true
		}
	}
	writeError(ctx, fasthttp.StatusMethodNotAllowed, msgMethodNotAllowed)
	return false
}

// modelVersion normalises the digits of a /versions/{v} segment ("007" is
// version 7); "" selects the version the model's policy serves.
func modelVersion(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return "", inference.InvalidArg("failed to get model version from specified version string '%s': version should be an integral value in [0, %d]", v, int64(1<<63-1))
	}
	return strconv.FormatInt(n, 10), nil
}

// startJSON hands out the response body buffer for appending.
func startJSON(ctx *fasthttp.RequestCtx) []byte {
	return ctx.Response.SwapBody(nil)[:0]
}

// finishJSON installs buf as a 200 JSON response.
func finishJSON(ctx *fasthttp.RequestCtx, buf []byte) {
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType(contentTypeJSON)
	ctx.Response.SwapBody(buf)
}

func (s *Server) serverMetadata(ctx *fasthttp.RequestCtx) {
	md := s.core.Metadata()
	if md == nil {
		respondErr(ctx, inference.Internal("server metadata is not available"))
		return
	}
	finishJSON(ctx, appendServerMetadata(startJSON(ctx), md))
}

func (s *Server) modelReady(ctx *fasthttp.RequestCtx, r route) {
	version, err := modelVersion(r.version)
	if err != nil {
		respondErr(ctx, err)
		return
	}
	// As in Triton, a model or version the core cannot serve (unknown,
	// unloaded, not at ready state) is "not ready", not an error.
	ready, err := s.core.ModelReady(s.baseCtx, r.model, version)
	if err != nil && !inference.MeansNotReady(err) {
		respondErr(ctx, err)
		return
	}
	if !ready || err != nil {
		respondErr(ctx, inference.InvalidArg("Model version not ready"))
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
}

func (s *Server) modelMetadata(ctx *fasthttp.RequestCtx, r route) {
	version, err := modelVersion(r.version)
	if err != nil {
		respondErr(ctx, err)
		return
	}
	md, err := s.core.ModelMetadata(s.baseCtx, r.model, version)
	if err != nil {
		respondErr(ctx, err)
		return
	}
	finishJSON(ctx, appendModelMetadata(startJSON(ctx), md))
}

func (s *Server) modelConfig(ctx *fasthttp.RequestCtx, r route) {
	version, err := modelVersion(r.version)
	if err != nil {
		respondErr(ctx, err)
		return
	}
	cfg, err := s.core.ModelConfig(s.baseCtx, r.model, version)
	if err != nil {
		respondErr(ctx, err)
		return
	}
	finishJSON(ctx, jsonw.AppendModelConfig(startJSON(ctx), cfg))
}

func (s *Server) modelStats(ctx *fasthttp.RequestCtx, r route) {
	version, err := modelVersion(r.version)
	if err != nil {
		respondErr(ctx, err)
		return
	}
	st, err := s.core.ModelStatistics(s.baseCtx, r.model, version)
	if err != nil {
		respondErr(ctx, err)
		return
	}
	finishJSON(ctx, appendModelStatistics(startJSON(ctx), st))
}

// repositoryIndex serves POST /v2/repository[/{repo}]/index with an
// optional {"ready": bool} body. The repository name is ignored, as Triton
// does.
func (s *Server) repositoryIndex(ctx *fasthttp.RequestCtx) {
	readyOnly := false
	if body := ctx.PostBody(); len(v2wire.TrimSpace(body)) > 0 {
		r := v2wire.NewReader(body)
		err := r.Object(func(key []byte) error {
			if string(key) != "ready" {
				return r.SkipValue()
			}
			b, err := r.ReadBoolField("ready")
			readyOnly = b
			return err
		})
		if err == nil {
			err = r.End()
		}
		if err != nil {
			respondErr(ctx, err)
			return
		}
	}
	entries, err := s.core.RepositoryIndex(s.baseCtx, readyOnly)
	if err != nil {
		respondErr(ctx, err)
		return
	}
	finishJSON(ctx, appendRepositoryIndex(startJSON(ctx), entries))
}

// repositoryControl serves POST /v2/repository/models/{m}/load and
// /unload. A repository name in the path is refused as Triton refuses it.
func (s *Server) repositoryControl(ctx *fasthttp.RequestCtx, r route) {
	ctx.SetContentType(contentTypeJSON)
	if r.repo != "" {
		respondErr(ctx, inference.Unsupported("'repository_name' specification is not supported"))
		return
	}
	var err error
	if r.kind == routeRepoLoad {
		var opts repository.LoadOptions
		opts, err = parseLoadBody(r.model, ctx.PostBody())
		if err == nil {
			err = s.core.LoadModel(s.baseCtx, r.model, opts)
		}
	} else {
		var dependents bool
		dependents, err = parseUnloadBody(ctx.PostBody())
		if err == nil {
			err = s.core.UnloadModel(s.baseCtx, r.model, dependents)
		}
	}
	if err != nil {
		respondErr(ctx, err)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
}

// parseLoadBody reads {"parameters": {"config": "<json>", "file:<v>/<path>":
// "<base64>"}}; every parameter value is a string. model names the model
// in errors.
func parseLoadBody(model string, body []byte) (repository.LoadOptions, error) {
	var opts repository.LoadOptions
	if len(v2wire.TrimSpace(body)) == 0 {
		return opts, nil
	}
	r := v2wire.NewReader(body)
	err := r.Object(func(key []byte) error {
		if string(key) != "parameters" {
			return r.SkipValue()
		}
		return r.Object(func(pkey []byte) error {
			name := string(pkey)
			if r.Peek() != '"' {
				return inference.InvalidArg("load parameter '%s' must be a string", name)
			}
			val, err := r.ReadString()
			if err != nil {
				return err
			}
			switch {
			case name == "config":
				opts.Config = string(val)
			case strings.HasPrefix(name, "file:"):
				data, err := decodeBase64(val)
				if err != nil {
					return inference.InvalidArg("unable to decode '%s': %v", name, err)
				}
				if opts.Files == nil {
					opts.Files = make(map[string][]byte)
				}
				key := strings.TrimPrefix(name, "file:")
				if err := inference.CheckFileParam(model, key); err != nil {
					return err
				}
				opts.Files[key] = data
			default:
				return inference.InvalidArg("unrecognized load parameter '%s': expected 'config' or 'file:<version>/<path>'", name)
			}
			return nil
		})
	})
	if err == nil {
		err = r.End()
	}
	return opts, err
}

func decodeBase64(s []byte) ([]byte, error) {
	out := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Decode(out, s)
	if err != nil {
		// Accept unpadded input too.
		n, err = base64.RawStdEncoding.Decode(out, s)
		if err != nil {
			return nil, err
		}
	}
	return out[:n], nil
}

// parseUnloadBody reads {"parameters": {"unload_dependents": bool}}.
func parseUnloadBody(body []byte) (bool, error) {
	dependents := false
	if len(v2wire.TrimSpace(body)) == 0 {
		return false, nil
	}
	r := v2wire.NewReader(body)
	err := r.Object(func(key []byte) error {
		if string(key) != "parameters" {
			return r.SkipValue()
		}
		return r.Object(func(pkey []byte) error {
			if string(pkey) != "unload_dependents" {
				return r.SkipValue()
			}
			b, err := r.ReadBoolField("unload_dependents")
			dependents = b
			return err
		})
	})
	if err == nil {
		err = r.End()
	}
	return dependents, err
}
