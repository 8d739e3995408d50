package sagemaker

import (
	"context"
	"slices"
	"sync"

	"github.com/valyala/fasthttp"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/jsonw"
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/server/v2wire"
)

// headerTargetModel carries the name SageMaker's client gave the model
// (InvokeEndpoint's TargetModel); the model_name of the API is a hash.
const headerTargetModel = "X-Amzn-SageMaker-Target-Model"

// mmeState is where a multi-model load is in its life.
type mmeState uint8

const (
	mmeLoading   mmeState = iota // POST /models is running
	mmeLoaded                    // served
	mmeUnloading                 // DELETE /models/{name} is running
)

// mmeModel is one model a multi-model load made.
type mmeModel struct {
	name   string // the model_name of the API (SageMaker's hash)
	url    string // as the load gave it
	repo   string // the repository registered for it
	served string // the name the core serves it under
	state  mmeState
}

// modelTable is the multi-model loads, by API name. An entry exists from
// the start of its load to the end of its unload, so that a second load
// or unload of the same name meets it instead of racing it.
type modelTable struct {
	mu     sync.Mutex // guards byName and the entries' state
	byName map[string]*mmeModel
}

// reserve adds an entry for a load that is starting, or fails with
// AlreadyExists.
func (t *modelTable) reserve(m *mmeModel) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.byName[m.name]; ok {
		if old.state == mmeLoading {
			return inference.Errorf(inference.CodeAlreadyExists, "model '%s' is already being loaded", m.name)
		}
		return inference.Errorf(inference.CodeAlreadyExists, "model '%s' is already loaded", m.name)
	}
	m.state = mmeLoading
	t.byName[m.name] = m
	return nil
}

func (t *modelTable) remove(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.byName, name)
}

func (t *modelTable) setState(m *mmeModel, st mmeState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m.state = st
}

// servable returns a copy of a loaded model's entry.
func (t *modelTable) servable(name string) (mmeModel, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m, ok := t.byName[name]
	if !ok || m.state != mmeLoaded {
		return mmeModel{}, false
	}
	return *m, true
}

// beginUnload marks a loaded model as unloading.
func (t *modelTable) beginUnload(name string) (*mmeModel, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m, ok := t.byName[name]
	switch {
	case !ok:
		return nil, inference.NotFound("model '%s' is not loaded", name)
	case m.state == mmeLoading:
		return nil, inference.Unavailable("model '%s' is still being loaded", name)
	case m.state == mmeUnloading:
		return nil, inference.Unavailable("model '%s' is already being unloaded", name)
	}
	m.state = mmeUnloading
	return m, nil
}

// loaded returns copies of the loaded models' entries, by name.
func (t *modelTable) loaded() []mmeModel {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]mmeModel, 0, len(t.byName))
	for _, m := range t.byName {
		if m.state == mmeLoaded {
			out = append(out, *m)
		}
	}
	slices.SortFunc(out, func(a, b mmeModel) int {
		switch {
		case a.name < b.name:
			return -1
		case a.name > b.name:
			return 1
		}
		return 0
	})
	return out
}

// loadRequest is the body of POST /models.
type loadRequest struct {
	name, url string
}

// parseLoadRequest reads {"model_name": "...", "url": "..."}; other keys
// are ignored.
func parseLoadRequest(body []byte) (loadRequest, error) {
	var req loadRequest
	if len(v2wire.TrimSpace(body)) == 0 {
		return req, inference.InvalidArg("failed to load model: the request body must be a JSON object with 'model_name' and 'url'")
	}
	var hasName, hasURL bool
	r := v2wire.NewReader(body)
	err := r.Object(func(key []byte) error {
		var dst *string
		switch string(key) {
		case "model_name":
			dst, hasName = &req.name, true
		case "url":
			dst, hasURL = &req.url, true
		default:
			return r.SkipValue()
		}
		if c := r.Peek(); c != '"' && c != 0 {
			return inference.InvalidArg("'%s' must be a string", key)
		}
		v, err := r.ReadString()
		*dst = string(v)
		return err
	})
	if err == nil {
		err = r.End()
	}
	switch {
	case err != nil:
		return req, inference.Errorf(inference.CodeOf(err), "failed to load model: %w", err)
	case !hasName:
		return req, inference.InvalidArg("failed to load model: the request body has no 'model_name'")
	case !hasURL:
		return req, inference.InvalidArg("failed to load model: the request body has no 'url'")
	}
	return req, nil
}

// loadModel serves POST /models: it registers the artefact's repository,
// serving its model under the TargetModel header's name (else the
// model_name), and loads that model. A failed load unregisters the
// repository again.
func (s *Server) loadModel(ctx *fasthttp.RequestCtx) {
	req, err := parseLoadRequest(ctx.PostBody())
	if err == nil {
		err = checkModelName("model_name", req.name)
	}
	served := req.name
	if t := string(header(ctx, headerTargetModel)); t != "" && err == nil {
		served = t
		err = checkModelName(headerTargetModel, t)
	}
	var loc modelLocation
	if err == nil {
		loc, err = resolveModelURL(s.opts.ModelRoot, req.url)
	}
	if err != nil {
		s.respondErr(ctx, epLoad, err)
		return
	}
	m := &mmeModel{name: req.name, url: req.url, repo: loc.repo, served: served}
	if err := s.models.reserve(m); err != nil {
		s.respondErr(ctx, epLoad, err)
		return
	}
	log := s.log.With().Str("model_name", m.name).Str("served_as", served).Str("repository", loc.repo).Logger()
	if err := s.core.RegisterRepository(loc.repo, map[string]string{loc.subdir: served}); err != nil {
		s.models.remove(m.name)
		log.Info().Err(err).Msg("SageMaker load refused")
		s.respondErr(ctx, epLoad, err)
		return
	}
	if err := s.core.LoadModel(s.baseCtx, served, repository.LoadOptions{}); err != nil {
		if uerr := s.core.UnregisterRepository(loc.repo); uerr != nil {
			log.Warn().Err(uerr).Msg("unregistering the repository of a failed SageMaker load")
		}
		s.models.remove(m.name)
		log.Info().Err(err).Msg("SageMaker load failed")
		s.respondErr(ctx, epLoad, err)
		return
	}
	s.models.setState(m, mmeLoaded)
	log.Info().Msg("SageMaker model loaded")
	ctx.SetStatusCode(fasthttp.StatusOK)
}

// listModels serves GET /models. A model that is not ready shows as an
// empty object, as in Triton; SageMaker's pagination is not implemented
// (every model is listed at once).
func (s *Server) listModels(ctx *fasthttp.RequestCtx) {
	buf := ctx.Response.SwapBody(nil)[:0]
	buf = append(buf, `{"models":[`...)
	for i, m := range s.models.loaded() {
		if i > 0 {
			buf = append(buf, ',')
		}
		if ready, err := s.core.ModelReady(s.baseCtx, m.served, ""); err != nil || !ready {
			buf = append(buf, "{}"...)
			continue
		}
		buf = appendModelEntry(buf, m)
	}
	buf = append(buf, "]}"...)
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType(contentTypeJSON)
	ctx.Response.SwapBody(buf)
}

func appendModelEntry(dst []byte, m mmeModel) []byte {
	dst = append(dst, `{"modelName":`...)
	dst = jsonw.AppendString(dst, m.name)
	dst = append(dst, `,"modelUrl":`...)
	dst = jsonw.AppendString(dst, m.url)
	return append(dst, '}')
}

// describeModel serves GET /models/{name}; an unknown name is 404 with an
// empty body.
func (s *Server) describeModel(ctx *fasthttp.RequestCtx, name string) {
	m, ok := s.models.servable(name)
	if !ok {
		ctx.SetStatusCode(fasthttp.StatusNotFound)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType(contentTypeJSON)
	ctx.SetBody(appendModelEntry(nil, m))
}

// unloadModel serves DELETE /models/{name}: it unloads the model and the
// models it depends on, waits until the repository index shows it
// unloaded (requests in flight finish first), then unregisters its
// repository.
func (s *Server) unloadModel(ctx *fasthttp.RequestCtx, name string) {
	m, err := s.models.beginUnload(name)
	if err != nil {
		s.respondErr(ctx, epUnload, err)
		return
	}
	log := s.log.With().Str("model_name", m.name).Str("served_as", m.served).Logger()
	err = s.core.UnloadModel(s.baseCtx, m.served, true)
	if err == nil {
		err = s.awaitUnloaded(s.baseCtx, m.served)
	}
	if err != nil {
		// Still registered and perhaps still loaded: a retry unloads it.
		s.models.setState(m, mmeLoaded)
		log.Warn().Err(err).Msg("SageMaker unload failed")
		s.respondErr(ctx, epUnload, err)
		return
	}
	if err := s.core.UnregisterRepository(m.repo); err != nil {
		// Unloaded, but the repository stays: a load of the same
		// artefact would meet it. Forget the model all the same.
		s.models.remove(m.name)
		log.Warn().Err(err).Msg("SageMaker unload: unregistering the repository")
		s.respondErr(ctx, epUnload, err)
		return
	}
	s.models.remove(m.name)
	log.Info().Msg("SageMaker model unloaded")
	ctx.SetStatusCode(fasthttp.StatusOK)
}

// awaitUnloaded returns once the repository index shows no version of
// the model loaded, loading or unloading, or fails after UnloadTimeout.
func (s *Server) awaitUnloaded(ctx context.Context, model string) error {
	return repository.AwaitUnloaded(ctx, s.core.RepositoryIndex, []string{model}, s.opts.UnloadTimeout, s.opts.UnloadPoll)
}
