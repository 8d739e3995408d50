package repository

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nereid-project/nereid/inference"
)

// sizedConfig is simpleConfig declaring the bytes a version takes, and
// optionally pinned.
func sizedConfig(name string, bytes int64, pinned bool) string {
	cfg := simpleConfig(name) + fmt.Sprintf("parameters { key: %q value { string_value: \"%d\" } }\n", ParamMemoryBytes, bytes)
	if pinned {
		cfg += fmt.Sprintf("parameters { key: %q value { string_value: \"true\" } }\n", ParamPinned)
	}
	return cfg
}

// cacheManager builds a Manager with cache options over repo and closes
// it at the end of the test (inside the bubble when run by synctest).
func cacheManager(t *testing.T, loader Loader, repo string, opts Options) *Manager {
	t.Helper()
	opts.Paths, opts.Loader = []string{repo}, loader
	if opts.Mode == ModeNone {
		opts.Mode = ModeExplicit
	}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

// use runs one inference-request acquire and release of a model.
func use(t *testing.T, m *Manager, name string) {
	t.Helper()
	h, err := m.AcquireOnDemand(context.Background(), name, "")
	if err != nil {
		t.Fatalf("AcquireOnDemand(%s): %v", name, err)
	}
	h.Release()
}

func (m *Manager) usedBytes() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cacheUsed
}

// recordingCache is a CacheMetrics that counts events.
type recordingCache struct {
	mu                      sync.Mutex
	hits, misses, coldLoads int
	evictions               []string
	used, budget            int64
}

func (r *recordingCache) Hit(string)  { r.mu.Lock(); r.hits++; r.mu.Unlock() }
func (r *recordingCache) Miss(string) { r.mu.Lock(); r.misses++; r.mu.Unlock() }
func (r *recordingCache) ColdLoad(string, time.Duration, error) {
	r.mu.Lock()
	r.coldLoads++
	r.mu.Unlock()
}

func (r *recordingCache) Evicted(model string, idle bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evictions = append(r.evictions, fmt.Sprintf("%s:%v", model, idle))
}

func (r *recordingCache) Forget(string) {}

func (r *recordingCache) Usage(used, budget int64) {
	r.mu.Lock()
	r.used, r.budget = used, budget
	r.mu.Unlock()
}

func TestOnDemandSingleFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		repo := t.TempDir()
		writeModel(t, repo, "a", simpleConfig("a"), 1)
		loader := newFakeLoader()
		gate := make(chan struct{})
		loader.gate["a/1"] = gate
		rec := &recordingCache{}
		m := cacheManager(t, loader, repo, Options{OnDemand: true, CacheMetrics: rec})

		// Metadata, readiness and statistics never load.
		_, err := m.Acquire(context.Background(), "a", "")
		wantErr(t, err, inference.CodeNotFound, "'a' is not found")

		const n = 1000
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				h, err := m.AcquireOnDemand(context.Background(), "a", "")
				if err == nil {
					h.Release()
				}
				errs[i] = err
			})
		}
		synctest.Wait() // every request waits on the one load
		if e, _ := entry(m, "a", "1"); e.State != StateLoading {
			t.Errorf("while loading, a/1 is %+v", e)
		}
		close(gate)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
		}
		if got := loader.loadCount("a"); got != 1 {
			t.Errorf("%d loads of a, want 1", got)
		}
		use(t, m, "a")
		if rec.misses != n || rec.hits != 1 || rec.coldLoads != 1 {
			t.Errorf("metrics: %d misses, %d hits, %d cold loads", rec.misses, rec.hits, rec.coldLoads)
		}
	})
}

func TestOnDemandUnknownAndOff(t *testing.T) {
	repo := t.TempDir()
	writeModel(t, repo, "a", simpleConfig("a"), 1)
	loader := newFakeLoader()
	m := cacheManager(t, loader, repo, Options{OnDemand: true})
	_, err := m.AcquireOnDemand(context.Background(), "nope", "")
	wantErr(t, err, inference.CodeNotFound, "Request for unknown model: 'nope' is not found")
	_, err = m.AcquireOnDemand(context.Background(), "../a", "")
	wantErr(t, err, inference.CodeNotFound, "Request for unknown model")
	if got := indexOf(m, false); got != "a|||\n" {
		t.Errorf("a request for an unknown name left a trace:\n%s", got)
	}

	off := cacheManager(t, loader, repo, Options{})
	_, err = off.AcquireOnDemand(context.Background(), "a", "")
	wantErr(t, err, inference.CodeNotFound, "'a' is not found")
	if loader.loadCount("a") != 0 {
		t.Error("loaded with on-demand loading off")
	}
}

func TestOnDemandLoadFailure(t *testing.T) {
	repo := t.TempDir()
	writeModel(t, repo, "bad", simpleConfig("bad"), 1)
	loader := newFakeLoader()
	loader.setFail("bad/1", errors.New("corrupt weights"))
	m := cacheManager(t, loader, repo, Options{OnDemand: true})
	_, err := m.AcquireOnDemand(context.Background(), "bad", "")
	wantErr(t, err, inference.CodeInvalidArg, "load failed for model 'bad'", "corrupt weights")
	// The next request tries again: the files may have been fixed.
	loader.setFail("bad/1", nil)
	use(t, m, "bad")
}

func TestOnDemandWaiterGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		repo := t.TempDir()
		writeModel(t, repo, "a", simpleConfig("a"), 1)
		loader := newFakeLoader()
		gate := make(chan struct{})
		loader.gate["a/1"] = gate
		m := cacheManager(t, loader, repo, Options{OnDemand: true})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := m.AcquireOnDemand(ctx, "a", "")
		wantErr(t, err, inference.CodeCancelled, "ended while the model was loading")
		// The load goes on for the requests after it.
		close(gate)
		synctest.Wait()
		if e, _ := entry(m, "a", "1"); e.State != StateReady {
			t.Errorf("a/1 after the load: %+v", e)
		}
		use(t, m, "a")
		if loader.loadCount("a") != 1 {
			t.Errorf("%d loads", loader.loadCount("a"))
		}
	})
}

func TestEvictionLeastRecentlyUsed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		repo := t.TempDir()
		for _, n := range []string{"a", "b", "c", "d"} {
			writeModel(t, repo, n, sizedConfig(n, 100, false), 1)
		}
		loader := newFakeLoader()
		rec := &recordingCache{}
		m := cacheManager(t, loader, repo, Options{OnDemand: true, MemoryBudget: 300, CacheMetrics: rec})
		for _, n := range []string{"a", "b", "c"} {
			use(t, m, n)
			time.Sleep(time.Second)
		}
		use(t, m, "a") // b is now the least recently used
		time.Sleep(time.Second)
		use(t, m, "d")
		if got := m.usedBytes(); got != 300 {
			t.Errorf("%d bytes in use, want 300", got)
		}
		loader.servable(t, "b", 1).waitClosed(t)
		e, _ := entry(m, "b", "1")
		if e.State != StateUnavailable || e.Reason != "evicted: least recently used, to make room for 'd'" {
			t.Errorf("b after eviction: %+v", e)
		}
		for _, n := range []string{"a", "c", "d"} {
			if loader.servable(t, n, 1).isClosed() {
				t.Errorf("%s was closed", n)
			}
		}
		// b's next request loads it again, and c (now the least recently
		// used) makes room.
		use(t, m, "b")
		loader.servable(t, "c", 1).waitClosed(t)
		if got := loader.loadCount("b"); got != 2 {
			t.Errorf("b loaded %d times, want 2", got)
		}
		if strings.Join(rec.evictions, ",") != "b:false,c:false" || rec.used != 300 || rec.budget != 300 {
			t.Errorf("metrics: evictions %v, used %d, budget %d", rec.evictions, rec.used, rec.budget)
		}
	})
}

func TestEvictionSparesModelsInUse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		repo := t.TempDir()
		for _, n := range []string{"a", "b", "c"} {
			writeModel(t, repo, n, sizedConfig(n, 100, false), 1)
		}
		writeModel(t, repo, "huge", sizedConfig("huge", 1000, false), 1)
		loader := newFakeLoader()
		m := cacheManager(t, loader, repo, Options{OnDemand: true, MemoryBudget: 200})
		ha, err := m.AcquireOnDemand(context.Background(), "a", "")
		if err != nil {
			t.Fatal(err)
		}
		hb, err := m.AcquireOnDemand(context.Background(), "b", "")
		if err != nil {
			t.Fatal(err)
		}
		// Both are held by requests: nothing can be evicted.
		_, err = m.AcquireOnDemand(context.Background(), "c", "")
		wantErr(t, err, inference.CodeResourceExhausted, "model 'c' needs 100 bytes", "budget of 200 bytes", "200 in use")
		if e, _ := entry(m, "c", ""); !strings.Contains(e.Reason, "Resource exhausted") {
			t.Errorf("index of c: %+v", e)
		}
		_, err = m.AcquireOnDemand(context.Background(), "huge", "")
		wantErr(t, err, inference.CodeResourceExhausted, "more than the whole model cache budget of 200 bytes")
		if loader.servable(t, "a", 1).isClosed() || loader.servable(t, "b", 1).isClosed() {
			t.Fatal("a model in use was evicted")
		}
		// Once a request ends, its model may go.
		hb.Release()
		use(t, m, "c")
		loader.servable(t, "b", 1).waitClosed(t)
		ha.Release()
		if got := m.usedBytes(); got != 200 {
			t.Errorf("%d bytes in use, want 200", got)
		}
	})
}

func TestPinnedModelsStay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		repo := t.TempDir()
		writeModel(t, repo, "start", sizedConfig("start", 100, false), 1)
		writeModel(t, repo, "param", sizedConfig("param", 100, true), 1)
		writeModel(t, repo, "x", sizedConfig("x", 100, false), 1)
		loader := newFakeLoader()
		m := cacheManager(t, loader, repo, Options{
			OnDemand: true, MemoryBudget: 250, IdleUnload: 10 * time.Second, StartupModels: []string{"start"},
		})
		if err := m.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { m.Run(ctx) })
		defer func() { cancel(); wg.Wait() }()
		use(t, m, "param")
		_, err := m.AcquireOnDemand(context.Background(), "x", "")
		wantErr(t, err, inference.CodeResourceExhausted, "model 'x' needs 100 bytes")
		time.Sleep(time.Minute)
		for _, n := range []string{"start", "param"} {
			if e, _ := entry(m, n, "1"); e.State != StateReady {
				t.Errorf("pinned %s: %+v", n, e)
			}
		}
	})
}

func TestIdleUnload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		repo := t.TempDir()
		writeModel(t, repo, "a", simpleConfig("a"), 1)
		writeModel(t, repo, "b", simpleConfig("b"), 1)
		loader := newFakeLoader()
		rec := &recordingCache{}
		// On-demand loading is off: only what the cache takes out comes
		// back by itself.
		m := cacheManager(t, loader, repo, Options{IdleUnload: 10 * time.Second, CacheMetrics: rec, StartupModels: []string{}})
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { m.Run(ctx) })
		defer func() { cancel(); wg.Wait() }()
		for _, n := range []string{"a", "b"} {
			if err := m.Load(context.Background(), n, LoadOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		hb, err := m.AcquireOnDemand(context.Background(), "b", "")
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Second)
		use(t, m, "a")
		time.Sleep(9 * time.Second) // a used 9 s ago, b held
		synctest.Wait()
		if loader.servable(t, "a", 1).isClosed() {
			t.Fatal("a unloaded before it was idle for 10 s")
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		loader.servable(t, "a", 1).waitClosed(t)
		if e, _ := entry(m, "a", "1"); e.State != StateUnavailable || e.Reason != "unloaded: idle for 10 s" {
			t.Errorf("a after idling: %+v", e)
		}
		if loader.servable(t, "b", 1).isClosed() {
			t.Fatal("b unloaded under a request")
		}
		hb.Release()
		time.Sleep(11 * time.Second)
		synctest.Wait()
		loader.servable(t, "b", 1).waitClosed(t)
		// The next request loads a again (scale to zero and back).
		use(t, m, "a")
		if loader.loadCount("a") != 2 {
			t.Errorf("a loaded %d times", loader.loadCount("a"))
		}
		if strings.Join(rec.evictions, ",") != "a:true,b:true" {
			t.Errorf("evictions %v", rec.evictions)
		}
		// An explicit unload is final: no request brings it back.
		if err := m.Unload(context.Background(), "a", false); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		_, err = m.AcquireOnDemand(context.Background(), "a", "")
		wantErr(t, err, inference.CodeNotFound, "'a' has no available versions")
	})
}

func TestEvictionThenLoadFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		repo := t.TempDir()
		for _, n := range []string{"a", "b", "bad"} {
			writeModel(t, repo, n, sizedConfig(n, 100, false), 1)
		}
		loader := newFakeLoader()
		loader.setFail("bad/1", errors.New("corrupt"))
		m := cacheManager(t, loader, repo, Options{OnDemand: true, MemoryBudget: 200})
		use(t, m, "a")
		time.Sleep(time.Second)
		use(t, m, "b")
		_, err := m.AcquireOnDemand(context.Background(), "bad", "")
		wantErr(t, err, inference.CodeInvalidArg, "corrupt")
		// a made room and is gone; its reservation is given back, b still
		// serves and a comes back on its next request.
		if got := m.usedBytes(); got != 100 {
			t.Errorf("%d bytes in use after the failed load, want 100", got)
		}
		use(t, m, "b")
		use(t, m, "a")
		if got := m.usedBytes(); got != 200 {
			t.Errorf("%d bytes in use, want 200", got)
		}
	})
}

type sizedServable struct {
	fakeServable
	n int64
}

func (s *sizedServable) MemoryBytes() int64 { return s.n }

type sizingLoader struct{ *fakeLoader }

func (l sizingLoader) LoadVersion(ctx context.Context, spec VersionSpec) (Servable, error) {
	s, err := l.fakeLoader.LoadVersion(ctx, spec)
	if err != nil {
		return nil, err
	}
	return &sizedServable{fakeServable: fakeServable{spec: spec, closed: s.(*fakeServable).closed}, n: 4096}, nil
}

func TestMeasuredSizes(t *testing.T) {
	repo := t.TempDir()
	writeModel(t, repo, "files", simpleConfig("files"), 1)
	writeModel(t, repo, "declared", sizedConfig("declared", 12345, false), 1)
	writeModel(t, repo, "sized", simpleConfig("sized"), 1)
	m := cacheManager(t, sizingLoader{newFakeLoader()}, repo, Options{OnDemand: true})
	want := map[string]int64{"declared": 12345, "sized": 4096}
	for _, n := range []string{"files", "declared", "sized"} {
		h, err := m.AcquireOnDemand(context.Background(), n, "")
		if err != nil {
			t.Fatal(err)
		}
		got := h.MemoryBytes
		h.Release()
		switch n {
		case "files":
			if got < int64(len("weights 1")) {
				t.Errorf("%s: %d bytes, less than its files", n, got)
			}
		case "declared":
			if got != want[n] {
				t.Errorf("%s: %d bytes, want %d", n, got, want[n])
			}
		default: // the report comes on top of the process's growth
			if got < want[n]+int64(len("weights 1")) {
				t.Errorf("%s: %d bytes, want at least its report %d and its files", n, got, want[n])
			}
		}
	}
	if err := m.Unload(context.Background(), "declared", false); err != nil {
		t.Fatal(err)
	}
	repoBad := t.TempDir()
	writeModel(t, repoBad, "neg", simpleConfig("neg")+`parameters { key: "nereid_memory_bytes" value { string_value: "-1" } }`, 1)
	bad := cacheManager(t, newFakeLoader(), repoBad, Options{OnDemand: true})
	_, err := bad.AcquireOnDemand(context.Background(), "neg", "")
	wantErr(t, err, inference.CodeInvalidArg, "parameter 'nereid_memory_bytes' must be a non-negative number of bytes")
}

func TestRegisterRepository(t *testing.T) {
	repo := t.TempDir()
	writeModel(t, repo, "a", simpleConfig("a"), 1)
	extra := t.TempDir()
	writeModel(t, extra, "model", simpleConfig("its_own_name"), 1)
	loader := newFakeLoader()
	m := cacheManager(t, loader, repo, Options{})

	wantErr(t, m.RegisterRepository("relative", nil), inference.CodeInvalidArg, "must be absolute")
	wantErr(t, m.RegisterRepository(filepath.Join(extra, "none"), nil), inference.CodeInvalidArg, "failed to register")
	wantErr(t, m.RegisterRepository(extra, map[string]string{"model": "a"}), inference.CodeAlreadyExists,
		"model 'a' is already served from repository")
	wantErr(t, m.RegisterRepository(extra, map[string]string{"model": "x/y"}), inference.CodeInvalidArg, "path traversal")
	if err := m.RegisterRepository(extra, map[string]string{"model": "renamed"}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, m.RegisterRepository(extra, nil), inference.CodeAlreadyExists, "has already been registered")
	wantErr(t, m.RegisterRepository(repo, nil), inference.CodeAlreadyExists, "has already been registered")
	if err := m.Load(context.Background(), "renamed", LoadOptions{}); err != nil {
		t.Fatal(err)
	}
	// The directory's own name is not served.
	wantErr(t, m.Load(context.Background(), "model", LoadOptions{}), inference.CodeInternal, "model not found")
	if got := indexOf(m, false); got != "a|||\nrenamed|1|READY|\n" {
		t.Errorf("index:\n%s", got)
	}
	if err := m.Unload(context.Background(), "renamed", false); err != nil {
		t.Fatal(err)
	}
	if err := m.UnregisterRepository(extra); err != nil {
		t.Fatal(err)
	}
	wantErr(t, m.UnregisterRepository(extra), inference.CodeNotFound, "not a registered model repository")
	wantErr(t, m.UnregisterRepository(repo), inference.CodeNotFound, "not a registered model repository")
	wantErr(t, m.Load(context.Background(), "renamed", LoadOptions{}), inference.CodeInternal, "model not found")
}

func TestOnDemandLoadWaitsForRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		repo := t.TempDir()
		for _, n := range []string{"a", "b"} {
			writeModel(t, repo, n, sizedConfig(n, 100, false), 1)
		}
		loader := newFakeLoader()
		m := cacheManager(t, loader, repo, Options{OnDemand: true, MemoryBudget: 100})
		ha, err := m.AcquireOnDemand(context.Background(), "a", "")
		if err != nil {
			t.Fatal(err)
		}
		var hb *Handle
		var wg sync.WaitGroup
		wg.Go(func() { hb, err = m.AcquireOnDemand(context.Background(), "b", "") })
		time.Sleep(3 * time.Second) // b waits for a's request to end
		synctest.Wait()
		if hb != nil || loader.loadCount("b") != 0 {
			t.Fatal("b loaded while a was in use")
		}
		ha.Release()
		wg.Wait()
		if err != nil {
			t.Fatalf("b: %v", err)
		}
		hb.Release()
		loader.servable(t, "a", 1).waitClosed(t)
	})
}

func TestPollLeavesEvictedModelsOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		repo := t.TempDir()
		for _, n := range []string{"a", "b", "c"} {
			writeModel(t, repo, n, sizedConfig(n, 100, false), 1)
		}
		loader := newFakeLoader()
		m := cacheManager(t, loader, repo, Options{Mode: ModePoll, MemoryBudget: 200})
		// Loading all three at start, the last to reserve waits for the
		// others and evicts the least recently loaded.
		if err := m.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		ready, evicted := 0, 0
		for _, e := range m.Index(false) {
			switch {
			case e.State == StateReady:
				ready++
			case strings.HasPrefix(e.Reason, reasonEvictedPrefix):
				evicted++
			}
		}
		if ready != 2 || evicted != 1 {
			t.Fatalf("%d models ready and %d evicted under a budget of two:\n%s", ready, evicted, indexOf(m, false))
		}
		loads := len(loader.loadOrder())
		if err := m.Poll(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := len(loader.loadOrder()); got != loads {
			t.Errorf("a poll reloaded the evicted model: %d loads, then %d", loads, got)
		}
	})
}

func TestLoadRetries(t *testing.T) {
	repo := t.TempDir()
	writeModel(t, repo, "flaky", simpleConfig("flaky"), 1)
	loader := &flakyLoader{fakeLoader: newFakeLoader(), failures: 2}
	m := cacheManager(t, loader, repo, Options{LoadRetries: 1})
	wantErr(t, m.Load(context.Background(), "flaky", LoadOptions{}), inference.CodeInvalidArg, "transient")
	loader.mu.Lock()
	loader.failures = 2
	loader.mu.Unlock()
	m2 := cacheManager(t, loader, repo, Options{LoadRetries: 2})
	if err := m2.Load(context.Background(), "flaky", LoadOptions{}); err != nil {
		t.Fatalf("two failures and two retries: %v", err)
	}
}

// flakyLoader fails its first LoadVersion calls.
type flakyLoader struct {
	*fakeLoader
	failures int
}

func (l *flakyLoader) LoadVersion(ctx context.Context, spec VersionSpec) (Servable, error) {
	l.mu.Lock()
	fail := l.failures > 0
	l.failures--
	l.mu.Unlock()
	if fail {
		return nil, errors.New("transient")
	}
	return l.fakeLoader.LoadVersion(ctx, spec)
}

func TestMeasuredAboveBudgetIsRetried(t *testing.T) {
	repo := t.TempDir()
	writeModel(t, repo, "sized", simpleConfig("sized"), 1)
	writeModel(t, repo, "small", sizedConfig("small", 10, false), 1)
	// sized reports 4096 bytes on top of its files: more than the budget.
	m := cacheManager(t, sizingLoader{newFakeLoader()}, repo, Options{OnDemand: true, MemoryBudget: 1000})
	use(t, m, "sized")
	use(t, m, "small") // evicts sized
	// Its last measure exceeds the whole budget; it is tried again with
	// the budget made free rather than refused for good.
	use(t, m, "sized")
	if e, _ := entry(m, "small", "1"); !strings.HasPrefix(e.Reason, reasonEvictedPrefix) {
		t.Errorf("small: %+v", e)
	}
}

func TestFilesLargerThanTheBudgetAreRefused(t *testing.T) {
	repo := t.TempDir()
	writeModel(t, repo, "big", simpleConfig("big"), 1) // its file is 9 bytes
	m := cacheManager(t, newFakeLoader(), repo, Options{OnDemand: true, MemoryBudget: 5})
	_, err := m.AcquireOnDemand(context.Background(), "big", "")
	wantErr(t, err, inference.CodeResourceExhausted, "more than the whole model cache budget of 5 bytes")
}

// An ensemble's composing models stay while it is loaded, so that the
// cache never takes a step's model out between two steps of a request; the
// ensemble itself is evicted like any model, and then its steps may be.
func TestEnsembleKeepsItsComposingModels(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		repo := t.TempDir()
		for _, n := range []string{"step", "x", "y"} {
			writeModel(t, repo, n, sizedConfig(n, 100, false), 1)
		}
		writeModel(t, repo, "ens", `name: "ens"
platform: "ensemble"
max_batch_size: 8
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
parameters { key: "`+ParamMemoryBytes+`" value { string_value: "10" } }
ensemble_scheduling { step [ { model_name: "step" model_version: -1
  input_map { key: "INPUT0" value: "IN" } output_map { key: "OUTPUT0" value: "OUT" } } ] }
`, 1)
		loader := newFakeLoader()
		m := cacheManager(t, loader, repo, Options{OnDemand: true, MemoryBudget: 220, IdleUnload: time.Minute})
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { m.Run(ctx) })
		defer func() { cancel(); wg.Wait() }()

		use(t, m, "ens") // loads step too
		time.Sleep(time.Second)
		use(t, m, "ens") // the ensemble is used; its step's last use is older
		time.Sleep(time.Second)
		use(t, m, "x")
		// 100 (step) + 10 (ens) + 100 (x) = 210: y needs room, and the
		// least recently used model, step, is composed by ens; the next
		// is ens itself.
		use(t, m, "y")
		loader.servable(t, "ens", 1).waitClosed(t)
		if loader.servable(t, "step", 1).isClosed() {
			t.Fatal("step was evicted while its ensemble was loaded")
		}
		if got := m.usedBytes(); got > 220 {
			t.Fatalf("%d bytes in use over the 220-byte budget", got)
		}

		// Idle unload: step is kept while ens is loaded again and used.
		use(t, m, "ens")
		for range 3 {
			time.Sleep(50 * time.Second)
			use(t, m, "ens")
		}
		synctest.Wait()
		if loader.servable(t, "step", 1).isClosed() {
			t.Fatal("step was idle-unloaded while its ensemble was loaded")
		}
		time.Sleep(2 * time.Minute) // both idle now
		synctest.Wait()
		if !loader.servable(t, "step", 1).isClosed() {
			t.Fatal("step stayed after its ensemble was unloaded for idling")
		}
	})
}
