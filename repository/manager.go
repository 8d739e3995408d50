package repository

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// Error texts clients see, in Triton's words.
const (
	msgExplicitOnly = "explicit model load / unload is not allowed if polling is enabled"
	msgPollOnly     = "polling is only allowed in POLL mode"
	msgClosed       = "the model repository is shutting down"
)

const defaultLoadThreads = 4

// Manager owns the models of the repositories: it loads, reloads and
// unloads them following the model control mode, keeps each version's
// state, and hands out references to READY versions.
//
// Locking: mu guards the model map and every field marked "guarded by mu"
// in model and version. A model's op channel serializes its loads and
// unloads; it is taken before mu, never while holding mu, and a goroutine
// holds at most one model's op at a time.
type Manager struct {
	opts Options
	log  zerolog.Logger

	// base is the context servables are closed with: a request's context
	// ends long before a drained version is closed. Close cancels it when
	// its deadline passes.
	base       context.Context //nolint:containedctx // the Manager's lifetime, not a request's
	cancelBase context.CancelFunc
	done       chan struct{} // closed by Close; stops Run
	closeOnce  sync.Once
	pollMu     sync.Mutex // one Poll at a time

	overrideSeq atomic.Uint64 // makes every load with request parameters a change
	sources     *sourceSet
	remotes     *remoteRepositories // the cloud repositories' local copies; nil when none
	remotesOnce sync.Once           // Close removes the copies once, after their versions closed
	gpus        func() []int32      // Options.GPUs, asked once

	loadSem chan struct{}  // bounds the versions loading at once (--model-load-thread-count)
	flights sync.WaitGroup // on-demand loads running
	kick    chan struct{}  // capacity 1: wakes Run to arm the idle timer

	mu        sync.Mutex // guards the fields below
	models    map[string]*model
	closed    bool
	draining  int           // versions waiting for their last handle or being closed
	idle      chan struct{} // closed when draining drops to zero; nil while zero
	cacheUsed int64         // bytes of the serving versions, and of the loads reserving room
	idleArmed bool          // Run's idle timer is armed (or about to be)
	room      chan struct{} // closed at the next event that may make room; nil when none waits
	// resident holds the models with a serving version: what the cache
	// may evict or idle out, without walking every model ever known.
	resident map[*model]struct{}
}

// model is everything known about one model name.
type model struct {
	name string
	op   chan struct{} // capacity 1: held for a whole load or unload

	// guarded by Manager.mu
	versions  map[int64]*version
	failure   string // why the last load failed before any version was tried
	requested bool   // the server tried to load it and has not unloaded it since
	implicit  bool   // loaded only as a composing model of an ensemble
	loadedFP  string // fingerprint of the serving load; "" when none
	attemptFP string // fingerprint of the last load attempt (polling)
	deps      []string

	// the model cache's view, guarded by Manager.mu
	lastUse  time.Time       // last inference request's acquire or release
	pinned   bool            // never evicted or idle-unloaded
	cacheOut bool            // the cache took it out: the next request loads it
	flight   *flight         // on-demand load in progress, or nil
	waiters  int             // requests waiting for flight that have not acquired yet
	sizes    map[int64]int64 // bytes each version took when it last loaded
}

func (md *model) lock(ctx context.Context) error {
	select { // a free model is taken even when ctx is done
	case md.op <- struct{}{}:
		return nil
	default:
	}
	select {
	case md.op <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (md *model) unlock() { <-md.op }

// version is one loaded (or failed, or unloaded) version of a model. A
// reload replaces the record in model.versions; the old record then drains
// out of sight.
type version struct {
	number int64

	// guarded by Manager.mu
	state    State
	reason   string
	cfg      *inferencepb.ModelConfig
	servable Servable
	files    *overrideDir // request files the version was loaded from, or nil
	refs     int          // handles held
	retired  bool
	drained  chan struct{} // closed once retired and refs is zero
	closed   chan struct{} // closed once retired and its servable is closed
	bytes    int64         // memory the version holds, counted in Manager.cacheUsed
	// unloadReason replaces "unloaded" in the index once the version is
	// closed (the cache's evictions and idle unloads).
	unloadReason string
}

// overrideDir is a private directory made from load-request files, removed
// once every version loaded from it is closed.
type overrideDir struct {
	path  string
	users int // guarded by Manager.mu
}

// New checks opts and returns a Manager that has loaded nothing yet.
func New(opts Options) (*Manager, error) {
	if opts.Loader == nil {
		return nil, inference.InvalidArg("repository: a Loader is required")
	}
	if len(opts.Paths) == 0 {
		return nil, inference.InvalidArg("--model-repository must be specified")
	}
	for _, p := range opts.Paths {
		if isRemotePath(p) {
			continue // checked by openRemoteRepositories
		}
		st, err := os.Stat(p)
		if err != nil {
			return nil, inference.InvalidArg("failed to stat model repository '%s': %w", p, err)
		}
		if !st.IsDir() {
			return nil, inference.InvalidArg("model repository '%s' is not a directory", p)
		}
	}
	switch opts.Mode {
	case ModeNone, ModePoll, ModeExplicit:
	default:
		return nil, inference.InvalidArg("unknown model control mode %d", opts.Mode)
	}
	if len(opts.StartupModels) > 1 && slices.Contains(opts.StartupModels, "*") {
		return nil, inference.InvalidArg("Wildcard model name '*' must be the ONLY startup model if specified at all.")
	}
	if opts.LoadThreads <= 0 {
		opts.LoadThreads = defaultLoadThreads
	}
	if opts.MemoryBudget < 0 || opts.IdleUnload < 0 {
		return nil, inference.InvalidArg("repository: the model cache budget and idle time must not be negative")
	}
	opts.Paths = slices.Clone(opts.Paths)
	opts.StartupModels = slices.Clone(opts.StartupModels)
	paths, remotes, err := openRemoteRepositories(opts.Paths, opts.CloudCacheDir, opts.Logger)
	if err != nil {
		return nil, err
	}
	base, cancel := context.WithCancel(context.Background())
	return &Manager{
		opts:       opts,
		log:        opts.Logger,
		base:       base,
		cancelBase: cancel,
		done:       make(chan struct{}),
		models:     map[string]*model{},
		resident:   map[*model]struct{}{},
		sources:    newSourceSet(paths),
		remotes:    remotes,
		gpus:       sync.OnceValue(func() []int32 { return gpusOf(opts.GPUs) }),
		loadSem:    make(chan struct{}, opts.LoadThreads),
		kick:       make(chan struct{}, 1),
	}, nil
}

// Start performs the initial loads: in none and poll mode every model of
// every repository, in explicit mode the startup models ("*" alone: all).
// The error joins one error per model that failed; those models stay
// UNAVAILABLE with a reason, and whether to go on is the caller's choice
// (--exit-on-error).
func (m *Manager) Start(ctx context.Context) error {
	fetchErr := m.remotes.fetch(ctx)
	scanned, scanErr := m.sources.scan(true)
	scanErr = errors.Join(fetchErr, scanErr)
	var names []string
	loadAll := m.opts.Mode != ModeExplicit || (len(m.opts.StartupModels) == 1 && m.opts.StartupModels[0] == "*")
	if !loadAll {
		names = m.opts.StartupModels
		for _, n := range names {
			if err := validateModelName(n); err != nil {
				return err
			}
		}
	} else {
		names = slices.Sorted(maps.Keys(scanned))
	}
	reqs := make([]loadRequest, 0, len(names))
	for _, n := range names {
		reqs = append(reqs, loadRequest{name: n})
	}
	errs := m.loadBatch(ctx, reqs, m.opts.Mode == ModeExplicit)
	return errors.Join(append([]error{scanErr}, errsInOrder(errs)...)...)
}

// Load loads or reloads a model (explicit mode only) and returns once the
// load has finished or failed. A model already serving is reloaded only
// when its files changed or the request carries parameters; the new
// versions are ready before they replace the old ones, which then drain.
func (m *Manager) Load(ctx context.Context, name string, opts LoadOptions) error {
	if m.opts.Mode != ModeExplicit {
		return inference.Unavailable(msgExplicitOnly)
	}
	if err := validateModelName(name); err != nil {
		return err
	}
	if len(opts.Files) > 0 && opts.Config == "" {
		return inference.InvalidArg("failed to load '%s', Load parameter 'config' must be specified for model file override", name)
	}
	if err := m.remotes.fetch(ctx); err != nil {
		return inference.Errorf(inference.CodeOf(err), "failed to load '%s': %w", name, err)
	}
	errs := m.loadBatch(ctx, []loadRequest{{name: name, override: &opts}}, true)
	return errs[name]
}

// Unload starts unloading a model (explicit mode only) and returns before
// its versions are closed: each closes once its last handle is released.
// Unloading a model that is not loaded, or not known at all, succeeds. With
// unloadDependents, composing models that were loaded only for this
// ensemble and serve no other are unloaded too.
func (m *Manager) Unload(ctx context.Context, name string, unloadDependents bool) error {
	if m.opts.Mode != ModeExplicit {
		return inference.Unavailable(msgExplicitOnly)
	}
	return m.unload(ctx, name, unloadDependents, map[string]bool{})
}

func (m *Manager) unload(ctx context.Context, name string, cascade bool, seen map[string]bool) error {
	seen[name] = true
	m.mu.Lock()
	md := m.models[name]
	m.mu.Unlock()
	if md == nil {
		return nil
	}
	if err := md.lock(ctx); err != nil {
		return err
	}
	m.mu.Lock()
	deps := md.deps
	m.unloadLocked(md)
	m.mu.Unlock()
	md.unlock()
	if cm := m.opts.CacheMetrics; cm != nil {
		cm.Forget(name)
	}
	m.log.Info().Str("model", name).Msg("unloading")
	if !cascade {
		return nil
	}
	var errs []error
	for _, d := range deps {
		if seen[d] {
			continue
		}
		m.mu.Lock()
		dmd := m.models[d]
		drop := dmd != nil && dmd.requested && dmd.implicit && !m.neededLocked(d)
		m.mu.Unlock()
		if drop {
			errs = append(errs, m.unload(ctx, d, true, seen))
		}
	}
	return errors.Join(errs...)
}

// unloadLocked retires every serving version of md and forgets that it
// was requested.
func (m *Manager) unloadLocked(md *model) {
	md.requested, md.implicit, md.cacheOut, md.pinned = false, false, false, false
	md.failure, md.loadedFP, md.attemptFP = "", "", ""
	md.deps = nil
	for _, v := range md.versions {
		switch v.state {
		case StateReady:
			m.retireLocked(md, v)
		case StateUnavailable:
			v.reason = reasonUnloaded
		default: // LOADING cannot be (the caller holds op); UNLOADING is draining
		}
	}
}

// neededLocked reports whether a requested model other than name lists
// name among its composing models.
func (m *Manager) neededLocked(name string) bool {
	for _, md := range m.models {
		if md.requested && slices.Contains(md.deps, name) {
			return true
		}
	}
	return false
}

// retireLocked takes a version out of service: it is UNLOADING (when it is
// the version's current record) until its last handle is released and its
// servable closed, then UNAVAILABLE "unloaded".
func (m *Manager) retireLocked(md *model, v *version) {
	if v == nil || v.servable == nil || v.retired {
		return
	}
	v.retired = true
	if md.versions[v.number] == v {
		v.state, v.reason = StateUnloading, ""
	}
	m.cacheUsed -= v.bytes
	v.bytes = 0
	m.reportUsageLocked()
	m.signalRoomLocked()
	if md.highestReadyLocked() == nil {
		delete(m.resident, md)
	}
	v.drained = make(chan struct{})
	v.closed = make(chan struct{})
	if v.refs == 0 {
		close(v.drained)
	}
	if m.draining == 0 {
		m.idle = make(chan struct{})
	}
	m.draining++
	go m.drain(md, v)
}

// drain waits for a retired version's handles, closes its servable and
// records the outcome. Its owner is the Manager: Close waits for it.
func (m *Manager) drain(md *model, v *version) {
	<-v.drained
	if err := v.servable.Close(m.base); err != nil {
		m.log.Error().Err(err).Str("model", md.name).Int64("version", v.number).Msg("failed to unload")
	} else {
		m.log.Info().Str("model", md.name).Int64("version", v.number).Msg("successfully unloaded")
	}
	m.mu.Lock()
	v.servable = nil
	if md.versions[v.number] == v {
		v.state, v.reason = StateUnavailable, cmp.Or(v.unloadReason, reasonUnloaded)
	}
	close(v.closed)
	dir := m.releaseFilesLocked(v.files)
	v.files = nil
	m.mu.Unlock()
	if dir != "" {
		if err := os.RemoveAll(dir); err != nil {
			m.log.Warn().Err(err).Str("model", md.name).Msg("failed to remove the model's files")
		}
	}
	m.mu.Lock()
	m.draining--
	if m.draining == 0 {
		close(m.idle)
		m.idle = nil
	}
	m.mu.Unlock()
}

// releaseFilesLocked drops one user of an override directory and returns
// its path when it is no longer used.
func (m *Manager) releaseFilesLocked(d *overrideDir) string {
	if d == nil {
		return ""
	}
	d.users--
	if d.users > 0 {
		return ""
	}
	return d.path
}

// waitDrained waits until no version is draining.
func (m *Manager) waitDrained(ctx context.Context) error {
	m.mu.Lock()
	idle := m.idle
	n := m.draining
	m.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%d model versions still draining: %w", n, ctx.Err())
	}
}

// Close stops polling, unloads every model and waits, within ctx, until
// every version has drained and closed. When ctx ends first, servables
// still closing see a cancelled context and Close returns the error.
func (m *Manager) Close(ctx context.Context) error {
	m.closeOnce.Do(func() { close(m.done) })
	m.mu.Lock()
	m.closed = true
	models := make([]*model, 0, len(m.models))
	for _, md := range m.models {
		models = append(models, md)
	}
	m.mu.Unlock()

	var errs []error
	for _, md := range models {
		if err := md.lock(ctx); err != nil {
			errs = append(errs, fmt.Errorf("model '%s' is still loading: %w", md.name, err))
			continue
		}
		m.mu.Lock()
		m.unloadLocked(md)
		m.mu.Unlock()
		md.unlock()
	}
	if err := m.waitDrained(ctx); err != nil {
		errs = append(errs, err)
	}
	m.cancelBase()
	m.flights.Wait() // each sees the Manager closed and ends
	m.remotesOnce.Do(m.remotes.close)
	return errors.Join(errs...)
}

// Acquire returns a reference to a READY version of a model; version ""
// means the highest READY version. The caller must Release it. It never
// loads: inference requests use AcquireOnDemand.
func (m *Manager) Acquire(_ context.Context, name, ver string) (*Handle, error) {
	h, _, err := m.acquire(name, ver, false)
	return h, err
}

// acquire finds and references a READY version. use marks an inference
// request, which counts as a use of the model for the cache. On failure,
// load says whether an inference request may load the model.
func (m *Manager) acquire(name, ver string, use bool) (*Handle, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.acquireLocked(name, ver, use)
}

func (m *Manager) acquireLocked(name, ver string, use bool) (_ *Handle, load bool, _ error) {
	want, err := parseVersion(ver)
	if err != nil {
		return nil, false, err
	}
	md := m.models[name]
	// A request may load a model that serves no version at all.
	mayLoad := func() bool { return use && (md == nil || md.highestReadyLocked() == nil) && m.mayLoadLocked(md) }
	if md == nil || len(md.versions) == 0 {
		return nil, mayLoad(), inference.NotFound("Request for unknown model: '%s' is not found", name)
	}
	var rec *version
	if want < 0 {
		rec = md.highestReadyLocked()
		if rec == nil {
			return nil, mayLoad(), inference.NotFound("Request for unknown model: '%s' has no available versions", name)
		}
	} else {
		rec = md.versions[want]
		if rec == nil {
			return nil, mayLoad(), inference.NotFound("Request for unknown model: '%s' version %d is not found", name, want)
		}
		if rec.state != StateReady {
			return nil, mayLoad(), inference.Unavailable("Request for unknown model: '%s' version %d is not at ready state", name, want)
		}
	}
	rec.refs++
	if use && m.tracksUse() {
		md.lastUse = time.Now()
	}
	return &Handle{
		Name:        name,
		Version:     rec.number,
		Config:      rec.cfg,
		Servable:    rec.servable,
		MemoryBytes: rec.bytes,
		mgr:         m,
		md:          md,
		rec:         rec,
		used:        use,
	}, false, nil
}

func (md *model) highestReadyLocked() *version {
	var best *version
	for _, v := range md.versions {
		if v.state == StateReady && (best == nil || v.number > best.number) {
			best = v
		}
	}
	return best
}

func (m *Manager) release(md *model, v *version, used bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if used && m.tracksUse() {
		md.lastUse = time.Now()
	}
	v.refs--
	if v.refs == 0 && v.retired {
		close(v.drained)
	}
	if v.refs == 0 {
		m.signalRoomLocked()
	}
}

// parseVersion reads a request's version string: "" is -1 (the policy's
// choice), anything else a non-negative integer.
func parseVersion(s string) (int64, error) {
	if s == "" {
		return -1, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, inference.InvalidArg("failed to get model version from specified version string '%s' (details: stol), "+
			"version should be an integral value > 0", s)
	}
	if v < 0 {
		return 0, inference.InvalidArg("invalid model version specified '%s' , version should be an integral value > 0", s)
	}
	return v, nil
}

// ReadyVersions lists the READY versions of a model, ascending.
func (m *Manager) ReadyVersions(name string) ([]int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	md := m.models[name]
	if md == nil || len(md.versions) == 0 {
		return nil, inference.NotFound("Request for unknown model: '%s' is not found", name)
	}
	var out []int64
	for n, v := range md.versions {
		if v.state == StateReady {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// AllReady is Triton's strict readiness: every model the server tried to
// load (and did not unload since) has versions, and each is READY or was
// unloaded.
func (m *Manager) AllReady() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, md := range m.models {
		if !md.requested {
			continue
		}
		if len(md.versions) == 0 {
			return false
		}
		for _, v := range md.versions {
			if v.state != StateReady && v.reason != reasonUnloaded {
				return false
			}
		}
	}
	return true
}

// Index lists the models of the repositories, and any other model that
// still has versions, one entry per version, sorted by name and version.
// A model never loaded has its name only; one that failed before any
// version was tried is UNAVAILABLE with the reason and no version.
func (m *Manager) Index(readyOnly bool) []IndexEntry {
	scanned, err := m.sources.scan(false)
	if err != nil {
		m.log.Warn().Err(err).Msg("model repository index is incomplete")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	names := map[string]bool{}
	for n := range scanned {
		names[n] = true
	}
	for n, md := range m.models {
		if md.requested {
			names[n] = true
			continue
		}
		for _, v := range md.versions {
			if v.reason != reasonUnloaded {
				names[n] = true
				break
			}
		}
	}
	var out []IndexEntry
	for _, name := range slices.Sorted(maps.Keys(names)) {
		md := m.models[name]
		switch {
		case scanned[name].duplicate:
			if !readyOnly {
				out = append(out, IndexEntry{Name: name, State: StateUnavailable, Reason: reasonDuplicate})
			}
		case md != nil && len(md.versions) > 0:
			nums := make([]int64, 0, len(md.versions))
			for n := range md.versions {
				nums = append(nums, n)
			}
			slices.Sort(nums)
			for _, n := range nums {
				v := md.versions[n]
				if readyOnly && v.state != StateReady {
					continue
				}
				out = append(out, IndexEntry{Name: name, Version: strconv.FormatInt(n, 10), State: v.state, Reason: v.reason})
			}
		case md != nil && md.failure != "":
			if !readyOnly {
				out = append(out, IndexEntry{Name: name, State: StateUnavailable, Reason: md.failure})
			}
		default:
			if !readyOnly {
				out = append(out, IndexEntry{Name: name})
			}
		}
	}
	return out
}

// modelFor returns the record of a model name, creating it.
func (m *Manager) modelFor(name string) *model {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.modelForLocked(name)
}

func (m *Manager) modelForLocked(name string) *model {
	md := m.models[name]
	if md == nil {
		md = &model{name: name, op: make(chan struct{}, 1), versions: map[int64]*version{}, sizes: map[int64]int64{}}
		m.models[name] = md
	}
	return md
}

// hasReady reports whether a model has a READY version.
func (m *Manager) hasReady(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	md := m.models[name]
	return md != nil && md.highestReadyLocked() != nil
}

// validateModelName applies Triton's rules for names given to load.
func validateModelName(name string) error {
	switch {
	case name == "":
		return inference.InvalidArg("model name must not be empty")
	case strings.TrimSpace(name) == "":
		return inference.InvalidArg("model name must not contain only whitespace characters")
	case strings.Contains(name, "..") || strings.ContainsAny(name, "/\\\x00"):
		return inference.InvalidArg("invalid model name '%s', model name must not contain path traversal characters", name)
	}
	return nil
}

// gpusOf asks Options.GPUs for the machine's GPUs; nil asks nothing.
func gpusOf(find func() []int32) []int32 {
	if find == nil {
		return nil
	}
	return find()
}
