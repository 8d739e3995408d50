package repository

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/procmem"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// The model cache: which loaded models stay in memory. Models load on
// their first inference request (Options.OnDemand), a memory budget is
// kept by evicting the least recently used idle models before a load that
// would exceed it (Options.MemoryBudget), and models unused for a while
// are unloaded (Options.IdleUnload). A model the cache took out is loaded
// again by its next inference request. Every unload goes through the
// manager's retire-and-drain path, so a model with a request in flight is
// never taken out under it.

// Configuration parameters a model may carry for the cache.
const (
	// ParamMemoryBytes declares the bytes one loaded version of the model
	// takes, for backends whose memory Nereid cannot measure (a GPU, or
	// memory the backend only allocates at the first inference).
	ParamMemoryBytes = "nereid_memory_bytes"
	// ParamPinned "true" keeps the model out of eviction and idle unload.
	ParamPinned = "nereid_pinned"
)

// Reasons the index shows for models the cache took out.
const (
	reasonEvictedPrefix = "evicted: least recently used, to make room for "
	reasonIdlePrefix    = "unloaded: idle for "
)

// Sizer is implemented by a Servable that knows the memory it holds
// outside Nereid's process (stub processes, a device). Its report is added
// to what the process grew by while the version loaded, when the
// configuration declares no size.
type Sizer interface {
	MemoryBytes() int64
}

// CacheMetrics receives the model cache's events; metrics.Cache
// implements it. Its methods must not block.
type CacheMetrics interface {
	// Hit: an inference request found its model loaded.
	Hit(model string)
	// Miss: an inference request found its model not loaded and waited
	// for a load (its own or one already running).
	Miss(model string)
	// ColdLoad reports a finished load that inference requests waited
	// for (a cold start), and its error.
	ColdLoad(model string, took time.Duration, err error)
	// Evicted: the cache took a model out; idle for an idle unload,
	// otherwise to make room under the budget.
	Evicted(model string, idle bool)
	// Usage reports the bytes held by loaded versions and the budget
	// (0: none).
	Usage(used, budget int64)
	// Forget drops a model's series: it was unloaded on purpose.
	Forget(model string)
}

// cacheMetrics is where hits and misses go: nowhere unless a cache
// feature is on, so that a server without one keeps no per-model cache
// series and spends nothing per request on them.
func (m *Manager) cacheMetrics() CacheMetrics {
	if m.opts.OnDemand || m.opts.MemoryBudget > 0 || m.opts.IdleUnload > 0 {
		return m.opts.CacheMetrics
	}
	return nil
}

// flight is one on-demand load that every request for the model waits on.
type flight struct {
	done chan struct{}
	err  error // set before done is closed
}

// AcquireOnDemand is Acquire for an inference request. A model that is
// not loaded, and is in a repository, is loaded first when on-demand
// loading is on or when the cache took it out; concurrent requests share
// one load and each waits for it within its own context.
func (m *Manager) AcquireOnDemand(ctx context.Context, name, ver string) (*Handle, error) {
	h, load, err := m.acquire(name, ver, true)
	if err == nil {
		if cm := m.cacheMetrics(); cm != nil {
			cm.Hit(name)
		}
		return h, nil
	}
	if !load {
		return nil, err
	}
	if cm := m.cacheMetrics(); cm != nil {
		cm.Miss(name)
	}
	h, lerr := m.loadOnDemand(ctx, name, ver)
	if errors.Is(lerr, errModelNotFound) {
		return nil, err // in no repository: the request's own error
	}
	return h, lerr
}

// mayLoadLocked reports whether an inference request for a model that has
// no READY version may load it.
func (m *Manager) mayLoadLocked(md *model) bool {
	if m.closed {
		return false
	}
	if md != nil && md.cacheOut {
		return true
	}
	return m.opts.OnDemand
}

// loadOnDemand loads a model for waiting requests, or joins the load
// already running, and acquires the version asked for. The load itself
// runs under the Manager's lifetime: a request that gives up does not
// cancel it for the others. A model its waiters have not acquired yet is
// not evicted.
func (m *Manager) loadOnDemand(ctx context.Context, name, ver string) (*Handle, error) {
	if err := validateModelName(name); err != nil {
		return nil, errModelNotFound
	}
	m.mu.Lock()
	md := m.models[name]
	out := md != nil && md.cacheOut // guarded by mu, as every cache field
	m.mu.Unlock()
	if !out {
		// Only names with a directory get a record: a request for any
		// other name costs a stat, not memory.
		if _, err := locateModel(m.sources.snapshot(), name); err != nil {
			return nil, errModelNotFound
		}
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, inference.Unavailable(msgClosed)
	}
	md = m.modelForLocked(name)
	f := md.flight
	if f == nil {
		f = &flight{done: make(chan struct{})}
		md.flight = f
		m.flights.Go(func() { m.fly(md, f) })
	}
	md.waiters++
	m.mu.Unlock()
	var err error
	select {
	case <-f.done:
		err = f.err
	case <-ctx.Done():
		err = inference.Errorf(inference.CodeCancelled, "request for model '%s' ended while the model was loading: %v", name, ctx.Err())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	md.waiters--
	m.signalRoomLocked()
	if err != nil {
		return nil, err
	}
	h, _, err := m.acquireLocked(name, ver, true)
	return h, err
}

// fly runs one on-demand load. Its owner is the Manager: Close waits for
// it.
func (m *Manager) fly(md *model, f *flight) {
	start := time.Now()
	select { // at most --model-load-thread-count on-demand loads at once
	case m.loadSem <- struct{}{}:
		defer func() { <-m.loadSem }()
	case <-m.base.Done():
	}
	errs := m.loadBatch(m.base, []loadRequest{{name: md.name, onDemand: true}}, true)
	f.err = errs[md.name]
	m.mu.Lock()
	md.flight = nil
	m.signalRoomLocked()
	m.mu.Unlock()
	close(f.done)
	if cm := m.opts.CacheMetrics; cm != nil && !errors.Is(f.err, errModelNotFound) {
		cm.ColdLoad(md.name, time.Since(start), f.err)
	}
}

// cacheFacts are what prepare learns for the cache from a model's files
// and configuration.
type cacheFacts struct {
	declared  int64           // ParamMemoryBytes per version; 0 when absent
	pinned    bool            // ParamPinned
	diskBytes map[int64]int64 // bytes of each chosen version's directory
}

// readCacheFacts reads the cache parameters of a configuration and sizes
// the chosen version directories.
func readCacheFacts(cfg *inferencepb.ModelConfig, dir string, versions []int64) (cacheFacts, error) {
	var f cacheFacts
	params := cfg.GetParameters()
	if p, ok := params[ParamMemoryBytes]; ok {
		n, err := strconv.ParseInt(strings.TrimSpace(p.GetStringValue()), 10, 64)
		if err != nil || n < 0 {
			return f, fmt.Errorf("parameter '%s' must be a non-negative number of bytes, got '%s'", ParamMemoryBytes, p.GetStringValue())
		}
		f.declared = n
	}
	if p, ok := params[ParamPinned]; ok {
		b, err := strconv.ParseBool(strings.TrimSpace(p.GetStringValue()))
		if err != nil {
			return f, fmt.Errorf("parameter '%s' must be true or false, got '%s'", ParamPinned, p.GetStringValue())
		}
		f.pinned = b
	}
	f.diskBytes = make(map[int64]int64, len(versions))
	for _, v := range versions {
		f.diskBytes[v] = dirBytes(filepath.Join(dir, strconv.FormatInt(v, 10)))
	}
	return f, nil
}

// dirBytes is the size of the regular files under dir, within the walk
// limits of a fingerprint.
func dirBytes(dir string) int64 {
	var total int64
	entries := 0
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil //nolint:nilerr // an unreadable entry adds nothing
		}
		if entries++; entries > fingerprintMaxEntries {
			return filepath.SkipAll
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				total += info.Size()
			}
		}
		return nil
	})
	return total
}

// estimateLocked is the memory a load of p is expected to take: what the
// configuration declares, else what the model's versions took when they
// last loaded, else the size of their files. A measure that exceeded the
// whole budget is tried again with the whole budget made free, and
// measured anew; a declared size or files larger than the budget are not.
func (m *Manager) estimateLocked(md *model, p *prepared) int64 {
	var total, files int64
	for _, v := range p.versions {
		files += p.cache.diskBytes[v]
		switch {
		case p.cache.declared > 0:
			total += p.cache.declared
		case md.sizes[v] > 0:
			total += md.sizes[v]
		default:
			total += p.cache.diskBytes[v]
		}
	}
	// Files larger than the budget cannot fit; a measure larger than it
	// may have been charged for others' allocations.
	if b := m.opts.MemoryBudget; b > 0 && p.cache.declared == 0 && total > b {
		total = max(b, files)
	}
	return total
}

// memoryMark is the process's memory before a load: the C allocator's
// bytes in use where they can be read (frameworks allocate there; a
// library's mapped code and pages reused from freed memory do not mislead
// it), else the resident memory.
type memoryMark struct {
	malloc int64
	ok     bool
	rss    int64
}

func markMemory() memoryMark {
	n, ok := procmem.MallocInUse()
	if ok {
		return memoryMark{malloc: n, ok: true}
	}
	return memoryMark{rss: procmem.Resident(0)}
}

// grown is what the process took since the mark (0 when it shrank).
func (mk memoryMark) grown() int64 {
	if mk.ok {
		if n, ok := procmem.MallocInUse(); ok {
			return max(n-mk.malloc, 0)
		}
	}
	return max(procmem.Resident(0)-mk.rss, 0)
}

// measure is the memory one loaded version takes: declared, else what the
// process took while it loaded (never less than its files) plus what the
// servable reports it holds outside the process.
func measure(p *prepared, r versionResult, grew int64) int64 {
	if p.cache.declared > 0 {
		return p.cache.declared
	}
	n := max(grew, p.cache.diskBytes[r.version])
	if s, ok := r.servable.(Sizer); ok {
		n += max(s.MemoryBytes(), 0)
	}
	return n
}

// makeRoomLocked evicts idle models, least recently used first, until a
// load of need bytes for md fits the budget, and returns the closed
// signals of the versions it retired: the caller waits for them (without
// mu) so that their memory is freed before it loads. When the load cannot
// fit, nothing is evicted and the error says why; busy then says whether
// it would fit once the models in use or loading are idle.
func (m *Manager) makeRoomLocked(md *model, need int64) (_ []chan struct{}, busy bool, _ error) {
	budget := m.opts.MemoryBudget
	if budget <= 0 || m.cacheUsed+need <= budget {
		return nil, false, nil
	}
	if need > budget {
		return nil, false, inference.ResourceExhausted(
			"model '%s' needs %d bytes, more than the whole model cache budget of %d bytes (--model-cache-memory)",
			md.name, need, budget)
	}
	var (
		cands    []*model
		inUse    int64 // bytes of unpinned models that are busy now
		reserved = m.cacheUsed
		held     = m.composingLocked()
	)
	for c := range m.resident {
		b := c.bytesLocked()
		reserved -= b
		switch {
		case c == md || c.pinned:
		case m.evictableLocked(c, held):
			cands = append(cands, c)
		default:
			inUse += b
		}
	}
	slices.SortFunc(cands, func(a, b *model) int { return a.lastUse.Compare(b.lastUse) })
	free := budget - m.cacheUsed
	n := 0
	for ; n < len(cands) && free < need; n++ {
		free += cands[n].bytesLocked()
	}
	if free < need {
		// Loads in progress hold reservations that become their models'
		// bytes, which may then be evicted too.
		busy = free+inUse+max(reserved, 0) >= need
		return nil, busy, inference.ResourceExhausted(
			"model '%s' needs %d bytes but the model cache budget of %d bytes (--model-cache-memory) has %d in use "+
				"by models that cannot be evicted now (serving requests, loading or pinned)",
			md.name, need, budget, m.cacheUsed)
	}
	var waits []chan struct{}
	for _, c := range cands[:n] {
		waits = append(waits, m.evictLocked(c, reasonEvictedPrefix+"'"+md.name+"'", false)...)
	}
	return waits, false, nil
}

// roomWait bounds how long a load waits for models in use to become idle
// so that it can evict them.
const roomWait = 10 * time.Second

// roomSignalLocked returns a channel closed at the next event that may
// make room: a request releasing a model, a version retiring, a load or
// its waiters finishing.
func (m *Manager) roomSignalLocked() <-chan struct{} {
	if m.room == nil {
		m.room = make(chan struct{})
	}
	return m.room
}

func (m *Manager) signalRoomLocked() {
	if m.room != nil {
		close(m.room)
		m.room = nil
	}
}

// reserveLocked makes room for a load of need bytes for md and reserves
// it. A load whose room is held by models in use or loading waits, up to
// roomWait, for them to become idle; mu is released while it waits. It
// returns the closed signals of the evicted versions.
func (m *Manager) reserveLocked(ctx context.Context, md *model, need int64) ([]chan struct{}, error) {
	deadline := time.Now().Add(roomWait)
	for {
		evicted, busy, err := m.makeRoomLocked(md, need)
		if err == nil {
			m.cacheUsed += need // reserved until the versions are measured
			m.reportUsageLocked()
			return evicted, nil
		}
		left := time.Until(deadline)
		if !busy || left <= 0 || m.closed {
			return nil, err
		}
		sig := m.roomSignalLocked()
		m.mu.Unlock()
		t := time.NewTimer(left)
		select {
		case <-sig:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		m.mu.Lock()
		if ctx.Err() != nil {
			return nil, err
		}
	}
}

// evictableLocked reports whether the cache may take a model out now: it
// serves READY versions, none of them held by a request, it is not
// loading or pinned, and no loaded ensemble composes it (held, from
// composingLocked).
func (m *Manager) evictableLocked(c *model, held map[string]bool) bool {
	if c.pinned || held[c.name] || c.flight != nil || c.waiters > 0 || len(c.op) > 0 {
		return false
	}
	ready := false
	for _, v := range c.versions {
		switch {
		case v.state == StateLoading:
			return false
		case v.state == StateReady && !v.retired:
			if v.refs > 0 {
				return false
			}
			ready = true
		}
	}
	return ready
}

// bytesLocked is the memory a model's serving versions hold.
func (md *model) bytesLocked() int64 {
	var total int64
	for _, v := range md.versions {
		if v.state == StateReady && !v.retired {
			total += v.bytes
		}
	}
	return total
}

// evictLocked takes a model out of service for the cache, if its op lock
// is free (a load or unload in progress wins), and returns the drained
// signals of its versions. The model is loaded again by its next
// inference request.
func (m *Manager) evictLocked(c *model, reason string, idle bool) []chan struct{} {
	select {
	case c.op <- struct{}{}:
	default:
		return nil
	}
	defer c.unlock()
	var victims []*version
	for _, v := range c.versions {
		if v.state == StateReady && !v.retired {
			v.unloadReason = reason
			victims = append(victims, v)
		}
	}
	m.unloadLocked(c)
	c.cacheOut = true
	waits := make([]chan struct{}, 0, len(victims))
	for _, v := range victims {
		if v.closed != nil {
			waits = append(waits, v.closed)
		}
	}
	m.log.Info().Str("model", c.name).Str("reason", reason).Msg("model cache: unloading")
	if cm := m.opts.CacheMetrics; cm != nil {
		cm.Evicted(c.name, idle)
	}
	return waits
}

// waitClosed waits until the versions behind waits are closed, or ctx ends.
func waitClosed(ctx context.Context, waits []chan struct{}) error {
	for _, w := range waits {
		select {
		case <-w:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// reportUsageLocked tells the metrics what the cache holds.
func (m *Manager) reportUsageLocked() {
	if cm := m.opts.CacheMetrics; cm != nil {
		cm.Usage(m.cacheUsed, m.opts.MemoryBudget)
	}
}

// tracksUse reports whether a model's last use matters: to the LRU order
// of a memory budget or to idle unloading. Without either, requests do not
// read the clock for it.
func (m *Manager) tracksUse() bool { return m.opts.MemoryBudget > 0 || m.opts.IdleUnload > 0 }

// composingLocked returns the models that an ensemble serving now lists
// among its steps. The cache keeps them while it is loaded, so that no
// step of a running ensemble request finds its model taken out between
// two steps; the ensemble itself stays evictable, and its composing models
// become so once it is out. Nil when no resident model has steps.
func (m *Manager) composingLocked() map[string]bool {
	var held map[string]bool
	for md := range m.resident {
		for _, d := range md.deps {
			if held == nil {
				held = map[string]bool{}
			}
			held[d] = true
		}
	}
	return held
}

// nextIdleLocked is when the next idle unload is due; false when no model
// can become due.
func (m *Manager) nextIdleLocked() (time.Time, bool) {
	var next time.Time
	found := false
	held := m.composingLocked()
	for md := range m.resident {
		if md.pinned || held[md.name] || md.highestReadyLocked() == nil {
			continue
		}
		due := md.lastUse.Add(m.opts.IdleUnload)
		if !found || due.Before(next) {
			next, found = due, true
		}
	}
	return next, found
}

// unloadIdle takes out every model unused for IdleUnload. A model that is
// busy when it falls due counts as used now.
func (m *Manager) unloadIdle(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	idle := m.opts.IdleUnload
	reason := reasonIdlePrefix + strconv.FormatFloat(idle.Seconds(), 'f', -1, 64) + " s"
	held := m.composingLocked()
	for md := range m.resident {
		if md.pinned || held[md.name] || md.highestReadyLocked() == nil || md.lastUse.Add(idle).After(now) {
			continue
		}
		if !m.evictableLocked(md, held) {
			md.lastUse = now
			continue
		}
		m.evictLocked(md, reason, true)
	}
	m.reportUsageLocked()
}

// idleTimer returns the channel of Run's one idle-unload timer and the
// function that arms it for the next model to fall due. Run re-arms it
// after each firing and whenever a load finishes while none is armed.
func (m *Manager) idleTimer() (<-chan time.Time, func()) {
	if m.opts.IdleUnload <= 0 {
		return nil, func() {}
	}
	t := time.NewTimer(time.Hour)
	t.Stop()
	arm := func() {
		m.mu.Lock()
		next, ok := m.nextIdleLocked()
		m.idleArmed = ok
		m.mu.Unlock()
		if ok {
			t.Reset(max(time.Until(next), time.Millisecond))
		} else {
			t.Stop()
		}
	}
	return t.C, arm
}

// kickLocked wakes Run to arm the idle timer when none is armed.
func (m *Manager) kickLocked() {
	if m.opts.IdleUnload <= 0 || m.idleArmed {
		return
	}
	m.idleArmed = true
	select {
	case m.kick <- struct{}{}:
	default:
	}
}
