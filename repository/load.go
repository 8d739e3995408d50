package repository

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// loadRequest names one model to bring up in a batch.
type loadRequest struct {
	name     string
	override *LoadOptions // parameters of an explicit load request, or nil
	implicit bool         // pulled in as a composing model of an ensemble
	onDemand bool         // an inference request asked for it
}

func (r loadRequest) hasOverride() bool {
	return r.override != nil && (r.override.Config != "" || len(r.override.Files) > 0)
}

// prepared is a model whose configuration is read, completed and checked
// and whose versions are chosen, or the reason it cannot load.
type prepared struct {
	req      loadRequest
	dir      string // model directory the versions load from
	files    string // private directory made from request files; "" if none
	cfg      *inferencepb.ModelConfig
	versions []int64
	fp       string
	deps     []string // composing models (ensembles)
	cache    cacheFacts

	err    error  // the error the load returns, classed
	reason string // why, for the index
	// noTrace marks a failure that says nothing about the model (it is
	// in no repository, or the request's parameters are bad): it is not
	// recorded, so it neither shows in the index nor counts against
	// readiness.
	noTrace bool
}

// cleanup removes the private directory of a load that did not happen.
func (p *prepared) cleanup() {
	if p.files != "" {
		os.RemoveAll(p.files)
		p.files = ""
	}
}

// pollError is Triton's error for a model whose directory or configuration
// could not be used ("failed to poll"), with the cause appended.
func pollError(name string, cause error) error {
	return inference.Errorf(inference.CodeInternal, "failed to load '%s', failed to poll from model repository: %w", name, cause)
}

// loadError is Triton's error for a model whose load failed once its
// configuration was accepted.
func loadError(name string, cause error) error {
	return inference.Errorf(inference.CodeInvalidArg, "load failed for model '%s': %w", name, cause)
}

// stateReason renders a load failure the way Triton's state reasons read:
// "<status class>: <message>".
func stateReason(err error) string {
	return fmt.Sprintf("%s: %s", inference.CodeOf(err), err.Error())
}

// prepare reads and checks a model's configuration and chooses its
// versions. It takes no lock: it only reads files (and writes a load
// request's private directory) and asks the loader to complete the
// configuration.
func (m *Manager) prepare(ctx context.Context, req loadRequest) (p *prepared) {
	p = &prepared{req: req}
	name := req.name
	fail := func(err error, reason string) *prepared {
		p.cleanup()
		p.err, p.reason = err, reason
		p.noTrace = p.noTrace || errors.Is(err, errModelNotFound)
		return p
	}

	var (
		cfg *inferencepb.ModelConfig
		src string // names the configuration in messages
	)
	if req.hasOverride() {
		o := req.override
		p.noTrace = true // until the request's own parameters are checked
		if len(o.Files) > 0 {
			if o.Config == "" {
				err := inference.InvalidArg("failed to load '%s', Load parameter 'config' must be specified for model file override", name)
				return fail(err, "Load parameter 'config' must be specified for model file override")
			}
			dir, err := writeOverrideFiles(name, o.Files)
			if err != nil {
				return fail(err, err.Error())
			}
			p.dir, p.files = dir, dir
		} else {
			dir, err := locateModel(m.sources.snapshot(), name)
			if err != nil {
				return fail(pollError(name, err), err.Error())
			}
			p.dir = dir
		}
		c, err := parseConfigJSON(o.Config)
		if err != nil {
			return fail(inference.InvalidArg("failed to load '%s', Invalid config override: %w", name, err), "Invalid config override: "+err.Error())
		}
		cfg, src = c, "load parameter 'config'"
		p.noTrace = false
		// A load with parameters always counts as a change, and so does
		// the next load without them.
		p.fp = "override-" + strconv.FormatUint(m.overrideSeq.Add(1), 10)
	} else {
		dir, err := locateModel(m.sources.snapshot(), name)
		if err != nil {
			return fail(pollError(name, err), err.Error())
		}
		p.dir = dir
		src = configPath(dir, m.opts.ModelConfigName)
		p.fp = fingerprint(dir, src)
		data, err := os.ReadFile(src)
		switch {
		case errors.Is(err, fs.ErrNotExist) && m.opts.AutoComplete:
			cfg = &inferencepb.ModelConfig{}
		case errors.Is(err, fs.ErrNotExist):
			err = fmt.Errorf("%s: model configuration file not found (it is required when auto-complete is disabled)", src)
			return fail(pollError(name, err), err.Error())
		case err != nil:
			err = fmt.Errorf("%s: %w", src, err)
			return fail(pollError(name, err), err.Error())
		default:
			if cfg, err = parseConfigText(src, data); err != nil {
				return fail(pollError(name, err), err.Error())
			}
		}
	}

	// A directory of a registered repository served under another name
	// (a SageMaker artefact under its target model's name) keeps its own
	// configuration's name out of the way: the model is the mapped name.
	if p.files == "" && filepath.Base(p.dir) != name {
		cfg.Name = name
	}
	complete := func(c *inferencepb.ModelConfig) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic in auto-complete: %v", r)
			}
		}()
		return m.opts.Loader.Complete(ctx, p.dir, c, m.opts.AutoComplete)
	}
	cfg, err := completeConfig(name, p.dir, cfg, m.gpus, complete)
	if err != nil {
		err = fmt.Errorf("%s: %w", src, err)
		if errors.As(err, new(configError)) {
			return fail(pollError(name, err), err.Error())
		}
		return fail(loadError(name, err), err.Error())
	}

	existing, err := versionDirs(p.dir)
	if err != nil {
		return fail(pollError(name, err), err.Error())
	}
	load, missing := versionsToLoad(cfg.VersionPolicy, existing)
	for _, v := range missing {
		m.log.Error().Str("model", name).Int64("version", v).
			Msgf("version %d is specified for model '%s', but the version directory is not present", v, name)
	}
	if len(load) == 0 {
		err := fmt.Errorf("at least one version must be available under the version policy of model '%s'", name)
		return fail(loadError(name, err), err.Error())
	}
	if err := runAgents(cfg, p.dir); err != nil {
		return fail(loadError(name, err), err.Error())
	}
	facts, err := readCacheFacts(cfg, p.dir, load)
	if err != nil {
		err = fmt.Errorf("%s: %w", src, err)
		return fail(loadError(name, err), err.Error())
	}
	p.cfg, p.versions, p.cache = cfg, load, facts
	for _, s := range cfg.GetEnsembleScheduling().GetStep() {
		if d := s.GetModelName(); d != name && !slices.Contains(p.deps, d) {
			p.deps = append(p.deps, d)
		}
	}
	slices.Sort(p.deps)
	return p
}

// loadBatch prepares and applies the requested loads. Models load in
// parallel, at most LoadThreads at a time, except that an ensemble waits
// for its composing models in the batch. With expand, composing models
// that are not READY are added to the batch (explicit mode). It returns
// the error of every model that failed, by name.
func (m *Manager) loadBatch(ctx context.Context, reqs []loadRequest, expand bool) map[string]error {
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	errs := map[string]error{}
	if closed {
		for _, r := range reqs {
			errs[r.name] = inference.Unavailable(msgClosed)
		}
		return errs
	}

	m.sources.invalidate() // a load may follow a change on disk
	plans := map[string]*prepared{}
	queue := dedupe(reqs)
	for len(queue) > 0 {
		var next []loadRequest
		for _, p := range m.prepareAll(ctx, queue) {
			plans[p.req.name] = p
			if !expand || p.err != nil {
				continue
			}
			for _, d := range p.deps {
				if _, ok := plans[d]; ok || slices.ContainsFunc(queue, func(r loadRequest) bool { return r.name == d }) ||
					slices.ContainsFunc(next, func(r loadRequest) bool { return r.name == d }) || m.hasReady(d) {
					continue
				}
				next = append(next, loadRequest{name: d, implicit: true})
			}
		}
		queue = next
	}

	cycles := findCycles(plans)
	done := make(map[string]chan struct{}, len(plans))
	for name := range plans {
		done[name] = make(chan struct{})
	}
	var (
		wg    sync.WaitGroup
		errMu sync.Mutex
		sem   = make(chan struct{}, m.opts.LoadThreads)
	)
	for name, p := range plans {
		if err, ok := cycles[name]; ok && p.err == nil {
			p.cleanup()
			p.err, p.reason = loadError(name, err), err.Error()
		}
		wg.Go(func() {
			defer close(done[name])
			if _, inCycle := cycles[name]; !inCycle {
				for _, d := range p.deps {
					if ch, ok := done[d]; ok {
						<-ch
					}
				}
			}
			sem <- struct{}{}
			defer func() { <-sem }()
			if p.noTrace {
				m.log.Error().Str("model", name).Msg(p.err.Error())
				errMu.Lock()
				errs[name] = p.err
				errMu.Unlock()
				return
			}
			md := m.modelFor(name)
			var err error
			if err = md.lock(ctx); err == nil {
				err = m.apply(ctx, md, p)
				md.unlock()
			} else {
				p.cleanup()
			}
			if err != nil {
				errMu.Lock()
				errs[name] = err
				errMu.Unlock()
			}
		})
	}
	wg.Wait()
	return errs
}

// prepareAll prepares a set of models in parallel.
func (m *Manager) prepareAll(ctx context.Context, reqs []loadRequest) []*prepared {
	out := make([]*prepared, len(reqs))
	sem := make(chan struct{}, m.opts.LoadThreads)
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i] = m.prepare(ctx, r)
		})
	}
	wg.Wait()
	return out
}

// apply brings the prepared versions of a model into service. The caller
// holds md's op lock.
func (m *Manager) apply(ctx context.Context, md *model, p *prepared) error {
	name := md.name
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		p.cleanup()
		return inference.Unavailable(msgClosed)
	}
	if md.requested {
		md.implicit = md.implicit && p.req.implicit
	} else {
		md.implicit = p.req.implicit
	}
	md.requested = true
	md.attemptFP = p.fp
	if p.err != nil {
		md.failure = p.reason
		m.mu.Unlock()
		m.log.Error().Str("model", name).Msg(p.err.Error())
		return p.err
	}
	if !p.req.hasOverride() && p.fp == md.loadedFP && md.highestReadyLocked() != nil {
		m.mu.Unlock()
		p.cleanup()
		return nil // unchanged and serving
	}
	if err := m.checkDepsLocked(p); err != nil {
		md.failure = err.Error()
		m.mu.Unlock()
		p.cleanup()
		m.log.Error().Str("model", name).Err(err).Msg("failed to load")
		return loadError(name, err)
	}
	md.pinned = p.cache.pinned || (m.opts.Mode == ModeExplicit && slices.Contains(m.opts.StartupModels, name))
	md.cacheOut = false
	need := m.estimateLocked(md, p)
	evicted, err := m.reserveLocked(ctx, md, need)
	if err == nil && m.closed {
		m.cacheUsed -= need
		err = inference.Unavailable(msgClosed)
	}
	if err != nil {
		if md.highestReadyLocked() == nil {
			md.failure = stateReason(err)
		}
		m.mu.Unlock()
		p.cleanup()
		m.log.Error().Str("model", name).Err(err).Msg("failed to load")
		return err
	}
	// A version that is serving reloads out of sight; any other shows
	// LOADING.
	fg := map[int64]*version{}
	for _, n := range p.versions {
		if cur := md.versions[n]; cur != nil && cur.state == StateReady {
			continue
		}
		v := &version{number: n, state: StateLoading, cfg: p.cfg}
		md.versions[n] = v
		fg[n] = v
	}
	m.mu.Unlock()

	var results []versionResult
	if err := waitClosed(ctx, evicted); err != nil {
		for _, n := range p.versions {
			results = append(results, versionResult{version: n, err: fmt.Errorf("waiting for evicted models to unload: %w", err)})
		}
	} else {
		results = m.loadVersions(ctx, name, p)
	}

	m.mu.Lock()
	m.cacheUsed -= need
	m.signalRoomLocked()
	failed := m.closed
	for _, r := range results {
		failed = failed || r.err != nil
	}
	if failed {
		var (
			msg     strings.Builder
			discard []Servable
		)
		for _, r := range results {
			v := fg[r.version]
			if r.err != nil {
				reason := stateReason(r.err)
				fmt.Fprintf(&msg, "version %d is at UNAVAILABLE state: %s;", r.version, reason)
				if v != nil {
					v.state, v.reason = StateUnavailable, reason
				}
				continue
			}
			discard = append(discard, r.servable)
			if v != nil {
				v.state, v.reason = StateUnavailable, reasonUnloaded
			}
		}
		closed := m.closed
		m.reportUsageLocked()
		m.mu.Unlock()
		for _, s := range discard {
			if err := s.Close(m.base); err != nil {
				m.log.Error().Err(err).Str("model", name).Msg("failed to unload")
			}
		}
		p.cleanup()
		if closed {
			return inference.Unavailable(msgClosed)
		}
		m.log.Error().Str("model", name).Msg(msg.String())
		return loadError(name, errors.New(msg.String()))
	}

	var files *overrideDir
	if p.files != "" {
		files = &overrideDir{path: p.files, users: len(results)}
	}
	for _, r := range results {
		v := fg[r.version]
		if v == nil {
			old := md.versions[r.version]
			v = &version{number: r.version}
			md.versions[r.version] = v
			m.retireLocked(md, old)
		}
		v.state, v.reason = StateReady, ""
		v.cfg, v.servable, v.files = p.cfg, r.servable, files
		v.bytes = r.bytes
		md.sizes[r.version] = r.bytes
		m.cacheUsed += r.bytes
	}
	m.resident[md] = struct{}{}
	for n, v := range md.versions {
		if slices.Contains(p.versions, n) {
			continue
		}
		switch v.state {
		case StateReady:
			m.retireLocked(md, v)
		case StateUnavailable:
			v.reason = reasonUnloaded // a failure of a version no longer wanted
		default: // UNLOADING: already draining
		}
	}
	md.failure, md.loadedFP, md.deps = "", p.fp, p.deps
	md.lastUse = time.Now()
	// Measured sizes may exceed the estimate: make room afterwards too.
	if _, _, err := m.makeRoomLocked(md, 0); err != nil {
		m.log.Warn().Str("model", name).Err(err).Msg("model cache is over its budget")
	}
	m.reportUsageLocked()
	m.kickLocked()
	m.mu.Unlock()
	m.log.Info().Str("model", name).Ints64("versions", p.versions).Msg("successfully loaded")
	return nil
}

// checkDepsLocked fails an ensemble whose composing models are not served,
// in Triton's words.
func (m *Manager) checkDepsLocked(p *prepared) error {
	name := p.req.name
	var missing []string
	for _, d := range p.deps {
		if md := m.models[d]; md == nil || !md.requested {
			missing = append(missing, d)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("ensemble %s contains models that are not available: %s", name, strings.Join(missing, ", "))
	}
	for _, s := range p.cfg.GetEnsembleScheduling().GetStep() {
		d := s.GetModelName()
		if d == name {
			continue
		}
		md := m.models[d]
		if md.highestReadyLocked() == nil {
			if md.failure != "" {
				return fmt.Errorf("ensemble '%s' depends on '%s' which has no loaded version. Model '%s' loading failed with error: %s",
					name, d, d, md.failure)
			}
			return tritonErrorf("ensemble '%s' depends on '%s' which has no loaded version.", name, d)
		}
		if want := s.GetModelVersion(); want != -1 {
			if v := md.versions[want]; v == nil || v.state != StateReady {
				return tritonErrorf("ensemble '%s' depends on '%s' whose required version %d is not loaded.", name, d, want)
			}
		}
	}
	return nil
}

type versionResult struct {
	version  int64
	servable Servable
	bytes    int64 // memory the version holds
	err      error
}

// loadVersions loads every chosen version in parallel and returns the
// results in version order. A loader that panics fails its version.
func (m *Manager) loadVersions(ctx context.Context, name string, p *prepared) []versionResult {
	results := make([]versionResult, len(p.versions))
	var wg sync.WaitGroup
	for i, n := range p.versions {
		wg.Go(func() {
			m.log.Info().Str("model", name).Int64("version", n).Msg("loading")
			spec := VersionSpec{
				Name:       name,
				Version:    n,
				ModelDir:   p.dir,
				VersionDir: filepath.Join(p.dir, strconv.FormatInt(n, 10)),
				Config:     p.cfg,
			}
			var before memoryMark
			if p.cache.declared == 0 { // a declared size needs no measure
				before = markMemory()
			}
			var (
				s   Servable
				err error
			)
			for try := 0; ; try++ { // --model-load-retry-count
				s, err = safeLoadVersion(ctx, m.opts.Loader, spec)
				if err == nil && s == nil {
					err = errors.New("loader returned no servable")
				}
				if err == nil || try >= m.opts.LoadRetries || ctx.Err() != nil {
					break
				}
				m.log.Warn().Str("model", name).Int64("version", n).Err(err).Int("retry", try+1).Msg("load failed: retrying")
			}
			results[i] = versionResult{version: n, servable: s, err: err}
			if err == nil {
				var grew int64
				if p.cache.declared == 0 {
					grew = before.grown()
				}
				results[i].bytes = measure(p, results[i], grew)
			}
		})
	}
	wg.Wait()
	return results
}

func safeLoadVersion(ctx context.Context, l Loader, spec VersionSpec) (s Servable, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("panic while loading: %v", r)
		}
	}()
	return l.LoadVersion(ctx, spec)
}

// findCycles returns, for each model of the batch that is part of a cycle
// of ensembles, the error to fail it with.
func findCycles(plans map[string]*prepared) map[string]error {
	out := map[string]error{}
	for _, start := range slices.Sorted(maps.Keys(plans)) {
		// Depth-first search for a path from start back to start.
		var path []string
		seen := map[string]bool{}
		var visit func(n string) bool
		visit = func(n string) bool {
			p := plans[n]
			if p == nil || p.err != nil {
				return false
			}
			for _, d := range p.deps {
				if d == start {
					path = append(path, n)
					return true
				}
				if seen[d] {
					continue
				}
				seen[d] = true
				if visit(d) {
					path = append(path, n)
					return true
				}
			}
			return false
		}
		if visit(start) {
			// path is in reverse: path[0] is the model that depends on start.
			out[start] = fmt.Errorf("circular dependency between ensembles: %s -> ... -> %s -> %s", start, path[0], start)
		}
	}
	return out
}

// dedupe drops repeated names, keeping the first request of each.
func dedupe(reqs []loadRequest) []loadRequest {
	seen := map[string]bool{}
	var out []loadRequest
	for _, r := range reqs {
		if !seen[r.name] {
			seen[r.name] = true
			out = append(out, r)
		}
	}
	return out
}

// errsInOrder returns the errors of a batch sorted by model name.
func errsInOrder(errs map[string]error) []error {
	out := make([]error, 0, len(errs))
	for _, n := range slices.Sorted(maps.Keys(errs)) {
		out = append(out, errs[n])
	}
	return out
}
