package repository

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

func TestNewValidatesOptions(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	mustWrite(t, file, "")
	loader := newFakeLoader()
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no loader", Options{Paths: []string{dir}}, "a Loader is required"},
		{"no path", Options{Loader: loader}, "--model-repository must be specified"},
		{"missing path", Options{Paths: []string{filepath.Join(dir, "nope")}, Loader: loader}, "failed to stat model repository"},
		{"file path", Options{Paths: []string{file}, Loader: loader}, "is not a directory"},
		{"bad mode", Options{Paths: []string{dir}, Loader: loader, Mode: 7}, "unknown model control mode"},
		{"wildcard among others", Options{Paths: []string{dir}, Loader: loader, Mode: ModeExplicit, StartupModels: []string{"*", "a"}},
			"Wildcard model name '*' must be the ONLY startup model if specified at all."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.opts)
			wantErr(t, err, inference.CodeInvalidArg, tt.want)
		})
	}
}

func TestStartNoneMode(t *testing.T) {
	repo := t.TempDir()
	writeModel(t, repo, "a", simpleConfig("a"), 1, 2)
	writeModel(t, repo, "b", simpleConfig(""), 3)
	writeModel(t, repo, "broken", `backend: "fake" input [ { name: "INPUT0" dims: [ 4 ] } ]`, 1)
	writeModel(t, repo, "noversions", simpleConfig("noversions"))
	mustMkdir(t, filepath.Join(repo, ".hidden"))
	mustWrite(t, filepath.Join(repo, "README"), "not a model")
	loader := newFakeLoader()
	m := newManager(t, loader, ModeNone, repo)

	err := m.Start(context.Background())
	if err == nil {
		t.Fatal("Start succeeded with a broken model")
	}
	for _, want := range []string{
		"failed to load 'broken', failed to poll from model repository: " + filepath.Join(repo, "broken", "config.pbtxt") +
			": model input 'INPUT0' must specify 'data_type' for broken",
		"load failed for model 'noversions': at least one version must be available under the version policy of model 'noversions'",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start error %q lacks %q", err, want)
		}
	}
	wantIndex := "a|2|READY|\n" +
		"b|3|READY|\n" +
		"broken||UNAVAILABLE|" + filepath.Join(repo, "broken", "config.pbtxt") + ": model input 'INPUT0' must specify 'data_type' for broken\n" +
		"noversions||UNAVAILABLE|at least one version must be available under the version policy of model 'noversions'\n"
	if got := indexOf(m, false); got != wantIndex {
		t.Errorf("index:\n%s\nwant:\n%s", got, wantIndex)
	}
	if got := indexOf(m, true); got != "a|2|READY|\nb|3|READY|\n" {
		t.Errorf("ready index:\n%s", got)
	}
	if m.AllReady() {
		t.Error("AllReady with failed models")
	}
	h, err := m.Acquire(context.Background(), "a", "")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	if h.Version != 2 || h.Config.GetName() != "a" || h.Servable != loader.servable(t, "a", 2) {
		t.Errorf("handle %+v", h)
	}
	// The default version policy serves only the latest version.
	if got, _ := m.ReadyVersions("a"); !slices.Equal(got, []int64{2}) {
		t.Errorf("ReadyVersions(a) = %v", got)
	}
	spec := loader.servable(t, "b", 3).spec
	if spec.ModelDir != filepath.Join(repo, "b") || spec.VersionDir != filepath.Join(repo, "b", "3") || spec.Config.GetName() != "b" {
		t.Errorf("spec %+v", spec)
	}
}

func TestControlModeRefusesLoadUnload(t *testing.T) {
	for _, mode := range []ControlMode{ModeNone, ModePoll} {
		m := newManager(t, newFakeLoader(), mode, t.TempDir())
		wantErr(t, m.Load(context.Background(), "a", LoadOptions{}), inference.CodeUnavailable,
			"explicit model load / unload is not allowed if polling is enabled")
		wantErr(t, m.Unload(context.Background(), "a", false), inference.CodeUnavailable,
			"explicit model load / unload is not allowed if polling is enabled")
	}
	m := newManager(t, newFakeLoader(), ModeExplicit, t.TempDir())
	wantErr(t, m.Poll(context.Background()), inference.CodeUnavailable, "polling is only allowed in POLL mode")
}

func TestExplicitStartupModels(t *testing.T) {
	repo := t.TempDir()
	writeModel(t, repo, "a", simpleConfig("a"), 1)
	writeModel(t, repo, "b", simpleConfig("b"), 1)
	loader := newFakeLoader()
	m, err := New(Options{Paths: []string{repo}, Mode: ModeExplicit, StartupModels: []string{"a"}, Loader: loader})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := indexOf(m, false); got != "a|1|READY|\nb|||\n" {
		t.Errorf("index:\n%s", got)
	}
	// Models never requested do not count against readiness.
	if !m.AllReady() {
		t.Error("not AllReady")
	}
	_, err = m.Acquire(context.Background(), "b", "")
	wantErr(t, err, inference.CodeNotFound, "Request for unknown model: 'b' is not found")

	all, err := New(Options{Paths: []string{repo}, Mode: ModeExplicit, StartupModels: []string{"*"}, Loader: loader})
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close(context.Background())
	if err := all.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := indexOf(all, false); got != "a|1|READY|\nb|1|READY|\n" {
		t.Errorf("index with '*':\n%s", got)
	}

	missing, err := New(Options{Paths: []string{repo}, Mode: ModeExplicit, StartupModels: []string{"nope"}, Loader: loader})
	if err != nil {
		t.Fatal(err)
	}
	defer missing.Close(context.Background())
	wantErr(t, missing.Start(context.Background()), inference.CodeInternal,
		"failed to load 'nope', failed to poll from model repository: model not found in any model repository")
}

func TestAcquireErrors(t *testing.T) {
	repo := t.TempDir()
	writeModel(t, repo, "m", simpleConfig("m")+`version_policy { all { } }`, 1, 2)
	loader := newFakeLoader()
	loader.setFail("m/2", errors.New("boom"))
	m := newManager(t, loader, ModeExplicit, repo)
	wantErr(t, m.Load(context.Background(), "m", LoadOptions{}), inference.CodeInvalidArg,
		"load failed for model 'm': version 2 is at UNAVAILABLE state: Internal: boom;")

	tests := []struct {
		name, version string
		code          inference.Code
		want          string
	}{
		{"nope", "", inference.CodeNotFound, "Request for unknown model: 'nope' is not found"},
		{"m", "", inference.CodeNotFound, "Request for unknown model: 'm' has no available versions"},
		{"m", "2", inference.CodeUnavailable, "Request for unknown model: 'm' version 2 is not at ready state"},
		{"m", "1", inference.CodeUnavailable, "Request for unknown model: 'm' version 1 is not at ready state"},
		{"m", "9", inference.CodeNotFound, "Request for unknown model: 'm' version 9 is not found"},
		{"m", "x", inference.CodeInvalidArg, "failed to get model version from specified version string 'x' (details: stol), version should be an integral value > 0"},
		{"m", "-1", inference.CodeInvalidArg, "invalid model version specified '-1' , version should be an integral value > 0"},
	}
	for _, tt := range tests {
		_, err := m.Acquire(context.Background(), tt.name, tt.version)
		wantErr(t, err, tt.code, tt.want)
		if !strings.HasSuffix(err.Error(), tt.want) || len(err.Error()) != len(tt.want) {
			t.Errorf("Acquire(%q, %q) = %q, want exactly %q", tt.name, tt.version, err, tt.want)
		}
	}
	// Version 1 loaded but the load as a whole failed: it was closed again.
	loader.servable(t, "m", 1).waitClosed(t)
	if got := indexOf(m, false); got != "m|1|UNAVAILABLE|unloaded\nm|2|UNAVAILABLE|Internal: boom\n" {
		t.Errorf("index:\n%s", got)
	}
	if m.AllReady() {
		t.Error("AllReady with a failed version")
	}
	_, err := m.ReadyVersions("nope")
	wantErr(t, err, inference.CodeNotFound, "Request for unknown model: 'nope' is not found")

	// Fixed: the retry loads both.
	loader.setFail("m/2", nil)
	if err := m.Load(context.Background(), "m", LoadOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.ReadyVersions("m"); !slices.Equal(got, []int64{1, 2}) {
		t.Errorf("ReadyVersions = %v", got)
	}
	h, err := m.Acquire(context.Background(), "m", "1")
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	h.Release() // harmless
	if !m.AllReady() {
		t.Error("not AllReady after a good load")
	}
}

func TestUnloadWaitsForHandles(t *testing.T) {
	repo := t.TempDir()
	writeModel(t, repo, "m", simpleConfig("m"), 1)
	loader := newFakeLoader()
	m := newManager(t, loader, ModeExplicit, repo)
	ctx := context.Background()
	if err := m.Load(ctx, "m", LoadOptions{}); err != nil {
		t.Fatal(err)
	}
	h, err := m.Acquire(context.Background(), "m", "")
	if err != nil {
		t.Fatal(err)
	}
	s := loader.servable(t, "m", 1)
	if err := m.Unload(ctx, "m", false); err != nil {
		t.Fatal(err)
	}
	if e, _ := entry(m, "m", "1"); e.State != StateUnloading {
		t.Errorf("state while a handle is held: %+v", e)
	}
	if s.isClosed() {
		t.Fatal("servable closed while a request holds it")
	}
	_, err = m.Acquire(context.Background(), "m", "")
	wantErr(t, err, inference.CodeNotFound, "has no available versions")
	// An unloaded model no longer counts against readiness.
	if !m.AllReady() {
		t.Error("not AllReady after unload")
	}
	h.Release()
	s.waitClosed(t)
	if err := m.waitDrained(ctx); err != nil {
		t.Fatal(err)
	}
	if got := indexOf(m, false); got != "m|1|UNAVAILABLE|unloaded\n" {
		t.Errorf("index:\n%s", got)
	}
	// Unloading again, or a model that is nowhere, succeeds.
	if err := m.Unload(ctx, "m", false); err != nil {
		t.Error(err)
	}
	if err := m.Unload(ctx, "nowhere", true); err != nil {
		t.Error(err)
	}
	// And it loads again.
	if err := m.Load(ctx, "m", LoadOptions{}); err != nil {
		t.Fatal(err)
	}
	if loader.loadCount("m") != 2 {
		t.Errorf("loads = %d", loader.loadCount("m"))
	}
}

// TestReloadSwapsAfterNewVersionsAreReady parks a reload at the loader's
// gate; virtual time makes "parked" exact (synctest.Wait).
func TestReloadSwapsAfterNewVersionsAreReady(t *testing.T) {
	synctest.Test(t, testReloadSwap)
}

func testReloadSwap(t *testing.T) {
	repo := t.TempDir()
	dir := writeModel(t, repo, "m", simpleConfig("m"), 1)
	loader := newFakeLoader()
	m := newManager(t, loader, ModeExplicit, repo)
	ctx := context.Background()
	if err := m.Load(ctx, "m", LoadOptions{}); err != nil {
		t.Fatal(err)
	}
	old := loader.servable(t, "m", 1)
	h, err := m.Acquire(context.Background(), "m", "1")
	if err != nil {
		t.Fatal(err)
	}

	// Unchanged: Load is a no-op.
	if err := m.Load(ctx, "m", LoadOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := loader.loadCount("m"); n != 1 {
		t.Fatalf("unchanged model loaded %d times", n)
	}

	// Reload version 1 with a new configuration and add version 2; hold
	// the new version 1 at the gate to look at the state mid-load.
	mustWrite(t, filepath.Join(dir, "config.pbtxt"), simpleConfig("m")+"version_policy { all { } }")
	addVersion(t, dir, 2)
	gate := make(chan struct{})
	loader.mu.Lock()
	loader.gate["m/1"] = gate
	loader.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- m.Load(ctx, "m", LoadOptions{}) }()
	synctest.Wait()
	if e, _ := entry(m, "m", "2"); e.State != StateLoading {
		t.Errorf("version 2 during reload: %+v", e)
	}
	// The serving version 1 keeps serving while its replacement loads.
	if e, _ := entry(m, "m", "1"); e.State != StateReady {
		t.Errorf("version 1 during reload: %+v", e)
	}
	if m.AllReady() {
		t.Error("AllReady while a new version is LOADING")
	}
	h2, err := m.Acquire(context.Background(), "m", "1")
	if err != nil {
		t.Fatal(err)
	}
	if h2.Servable != old {
		t.Error("acquired a version that is not serving yet")
	}
	h2.Release()
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, _ := m.ReadyVersions("m"); !slices.Equal(got, []int64{1, 2}) {
		t.Errorf("ReadyVersions = %v", got)
	}
	h3, err := m.Acquire(context.Background(), "m", "1")
	if err != nil {
		t.Fatal(err)
	}
	if h3.Servable == old || h3.Config.GetVersionPolicy().GetAll() == nil {
		t.Error("reload did not swap in the new version 1")
	}
	h3.Release()
	// The old version 1 drains: closed only after the held handle goes.
	if old.isClosed() {
		t.Fatal("old version closed while a request holds it")
	}
	h.Release()
	old.waitClosed(t)
	if e, _ := entry(m, "m", "1"); e.State != StateReady {
		t.Errorf("new version 1 after the old one drained: %+v", e)
	}
}

func TestFailedReloadKeepsServing(t *testing.T) {
	repo := t.TempDir()
	dir := writeModel(t, repo, "m", simpleConfig("m"), 1)
	loader := newFakeLoader()
	m := newManager(t, loader, ModeExplicit, repo)
	ctx := context.Background()
	if err := m.Load(ctx, "m", LoadOptions{}); err != nil {
		t.Fatal(err)
	}
	serving := loader.servable(t, "m", 1)

	// A broken configuration: the old version stays.
	mustWrite(t, filepath.Join(dir, "config.pbtxt"), "backend: \"fake\" max_batch_size: -3")
	wantErr(t, m.Load(ctx, "m", LoadOptions{}), inference.CodeInternal,
		"failed to load 'm', failed to poll from model repository: "+filepath.Join(dir, "config.pbtxt")+
			": 'max_batch_size' must be non-negative value for m")
	// A backend failure: the old version stays too.
	mustWrite(t, filepath.Join(dir, "config.pbtxt"), simpleConfig("m")+"# edited\n")
	loader.setFail("m/1", inference.Unsupported("no such device"))
	wantErr(t, m.Load(ctx, "m", LoadOptions{}), inference.CodeInvalidArg,
		"load failed for model 'm': version 1 is at UNAVAILABLE state: Unsupported: no such device;")

	h, err := m.Acquire(context.Background(), "m", "")
	if err != nil {
		t.Fatal(err)
	}
	if h.Servable != serving || serving.isClosed() {
		t.Error("failed reloads disturbed the serving version")
	}
	h.Release()
	if got := indexOf(m, false); got != "m|1|READY|\n" {
		t.Errorf("index:\n%s", got)
	}
}

func TestLoadErrors(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // where override directories go
	repo := t.TempDir()
	writeModel(t, repo, "m", simpleConfig("m"), 1)
	writeModel(t, repo, "renamed", simpleConfig("other"), 1)
	writeModel(t, repo, "noconfig", "-", 1)
	loader := newFakeLoader()
	m := newManager(t, loader, ModeExplicit, repo)
	ctx := context.Background()
	cfgJSON := `{"backend":"fake","input":[{"name":"I","data_type":"TYPE_FP32","dims":[1]}]}`
	tests := []struct {
		name string
		opts LoadOptions
		code inference.Code
		want []string
	}{
		{"", LoadOptions{}, inference.CodeInvalidArg, []string{"model name must not be empty"}},
		{"  ", LoadOptions{}, inference.CodeInvalidArg, []string{"model name must not contain only whitespace characters"}},
		{"../m", LoadOptions{}, inference.CodeInvalidArg, []string{"invalid model name '../m', model name must not contain path traversal characters"}},
		{"nope", LoadOptions{}, inference.CodeInternal, []string{"failed to load 'nope', failed to poll from model repository: model not found in any model repository"}},
		{"renamed", LoadOptions{}, inference.CodeInternal, []string{"unexpected directory name 'renamed' for model 'other', directory name must equal model name"}},
		{"noconfig", LoadOptions{}, inference.CodeInternal, []string{filepath.Join(repo, "noconfig", "config.pbtxt") + ": model configuration file not found"}},
		{"m", LoadOptions{Files: map[string][]byte{"1/model.fake": nil}}, inference.CodeInvalidArg,
			[]string{"failed to load 'm', Load parameter 'config' must be specified for model file override"}},
		{"m", LoadOptions{Config: `{"max_batch_size": "many"}`}, inference.CodeInvalidArg, []string{"failed to load 'm', Invalid config override: "}},
		{"m", LoadOptions{Config: cfgJSON, Files: map[string][]byte{"../escape": []byte("x")}}, inference.CodeInvalidArg,
			[]string{"failed to load 'm', Invalid file parameter 'file:../escape' with normalized path", "must stay within model directory."}},
		{"m", LoadOptions{Config: cfgJSON, Files: map[string][]byte{"/abs/x": []byte("x")}}, inference.CodeInvalidArg,
			[]string{"Invalid file parameter 'file:/abs/x'"}},
		{"m", LoadOptions{Config: cfgJSON, Files: map[string][]byte{"1": []byte("x"), "1/model.fake": []byte("y")}}, inference.CodeInvalidArg,
			[]string{"Invalid file parameter 'file:1/model.fake', directory has been created as a file"}},
	}
	for _, tt := range tests {
		wantErr(t, m.Load(ctx, tt.name, tt.opts), tt.code, tt.want...)
	}
	if n := len(loader.loadOrder()); n != 0 {
		t.Errorf("%d versions loaded by failing requests", n)
	}
	// A name that is in no repository leaves no trace.
	if strings.Contains(indexOf(m, false), "nope") {
		t.Errorf("index lists a model that is nowhere:\n%s", indexOf(m, false))
	}
	// No private directory is left behind by the failed file overrides.
	if leftovers, _ := filepath.Glob(filepath.Join(tmp, "nereid-model-*")); len(leftovers) > 0 {
		t.Errorf("leftover override directories %v", leftovers)
	}
}

func TestMissingConfigWithAutoComplete(t *testing.T) {
	repo := t.TempDir()
	dir := writeModel(t, repo, "auto", "-", 1)
	mustWrite(t, filepath.Join(dir, "1", "model.onnx"), "onnx")
	loader := newFakeLoader()
	var gotDir string
	var gotAuto bool
	loader.complete = func(d string, cfg *inferencepb.ModelConfig, auto bool) error {
		gotDir, gotAuto = d, auto
		// What an ONNX backend would learn from the model file.
		cfg.Input = []*inferencepb.ModelInput{{Name: "x", DataType: inferencepb.DataType_TYPE_FP32, Dims: []int64{3}}}
		cfg.Output = []*inferencepb.ModelOutput{{Name: "y", DataType: inferencepb.DataType_TYPE_FP32, Dims: []int64{3}}}
		return nil
	}
	m, err := New(Options{Paths: []string{repo}, Mode: ModeNone, AutoComplete: true, Loader: loader})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if gotDir != dir || !gotAuto {
		t.Errorf("Complete saw dir %q auto %v", gotDir, gotAuto)
	}
	h, err := m.Acquire(context.Background(), "auto", "")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	c := h.Config
	if c.Name != "auto" || c.Backend != "onnxruntime" || c.Platform != "onnxruntime_onnx" || len(c.Input) != 1 ||
		c.InstanceGroup[0].Count != 2 {
		t.Errorf("completed config %v", c)
	}

	// A loader error names the file and fails the load.
	loader2 := newFakeLoader()
	loader2.complete = func(string, *inferencepb.ModelConfig, bool) error {
		return inference.InvalidArg("unable to load model 'auto', configuration expects 2 inputs, model provides 1")
	}
	m2, err := New(Options{Paths: []string{repo}, Mode: ModeExplicit, AutoComplete: true, Loader: loader2})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close(context.Background())
	wantErr(t, m2.Load(context.Background(), "auto", LoadOptions{}), inference.CodeInvalidArg,
		"load failed for model 'auto': "+filepath.Join(dir, "config.pbtxt")+": unable to load model 'auto', configuration expects 2 inputs")
}

func TestLoadWithConfigAndFiles(t *testing.T) {
	repo := t.TempDir()
	writeModel(t, repo, "m", simpleConfig("m"), 1)
	loader := newFakeLoader()
	m := newManager(t, loader, ModeExplicit, repo)
	ctx := context.Background()

	// Config override over the repository's files; int64 as strings.
	cfg := `{"backend":"fake","max_batch_size":2,"input":[{"name":"A","data_type":"TYPE_INT64","dims":["-1"]}],
		"output":[{"name":"B","data_type":"TYPE_INT64","dims":[-1]}]}`
	if err := m.Load(ctx, "m", LoadOptions{Config: cfg}); err != nil {
		t.Fatal(err)
	}
	h, err := m.Acquire(context.Background(), "m", "")
	if err != nil {
		t.Fatal(err)
	}
	if h.Config.Input[0].Name != "A" || h.Config.Name != "m" || h.Config.MaxBatchSize != 2 {
		t.Errorf("config override not applied: %v", h.Config)
	}
	h.Release()
	// The same override again still reloads (parameters always do).
	if err := m.Load(ctx, "m", LoadOptions{Config: cfg}); err != nil {
		t.Fatal(err)
	}
	if n := loader.loadCount("m"); n != 2 {
		t.Errorf("loads = %d", n)
	}

	// Files form a private model directory.
	files := map[string][]byte{"3/model.fake": []byte("weights"), "3/sub/extra.txt": []byte("extra")}
	if err := m.Load(ctx, "fresh", LoadOptions{Config: `{"backend":"fake"}`, Files: files}); err != nil {
		t.Fatal(err)
	}
	s := loader.servable(t, "fresh", 3)
	tmp := s.spec.ModelDir
	if strings.HasPrefix(tmp, repo) {
		t.Fatalf("files were loaded from the repository: %s", tmp)
	}
	if data, err := os.ReadFile(filepath.Join(s.spec.VersionDir, "sub", "extra.txt")); err != nil || string(data) != "extra" {
		t.Errorf("extra.txt = %q, %v", data, err)
	}
	// A model loaded from files only is in the index while it is loaded.
	if e, ok := entry(m, "fresh", "3"); !ok || e.State != StateReady {
		t.Errorf("index entry %+v", e)
	}
	// Replacing it with other files closes the old version, then removes
	// its directory.
	if err := m.Load(ctx, "fresh", LoadOptions{Config: `{"backend":"fake"}`, Files: files}); err != nil {
		t.Fatal(err)
	}
	s.waitClosed(t)
	if err := m.waitDrained(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("old override directory still there: %v", err)
	}
	tmp2 := loader.servable(t, "fresh", 3).spec.ModelDir
	if err := m.Unload(ctx, "fresh", false); err != nil {
		t.Fatal(err)
	}
	if err := m.waitDrained(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp2); !os.IsNotExist(err) {
		t.Errorf("override directory still there after unload: %v", err)
	}
	if _, ok := entry(m, "fresh", "3"); ok {
		t.Error("unloaded files-only model still in the index")
	}

	// Loading from the repository again undoes the override.
	if err := m.Load(ctx, "m", LoadOptions{}); err != nil {
		t.Fatal(err)
	}
	h, err = m.Acquire(context.Background(), "m", "")
	if err != nil {
		t.Fatal(err)
	}
	if h.Config.Input[0].Name != "INPUT0" {
		t.Errorf("override not undone: %v", h.Config)
	}
	h.Release()
}

func TestDuplicateAcrossRepositories(t *testing.T) {
	r1, r2 := t.TempDir(), t.TempDir()
	writeModel(t, r1, "dup", simpleConfig("dup"), 1)
	writeModel(t, r2, "dup", simpleConfig("dup"), 1)
	writeModel(t, r2, "solo", simpleConfig("solo"), 1)
	loader := newFakeLoader()
	m := newManager(t, loader, ModeNone, r1, r2)
	wantErr(t, m.Start(context.Background()), inference.CodeInternal,
		"failed to load 'dup', failed to poll from model repository: model appears in two or more repositories")
	if got := indexOf(m, false); got != "dup||UNAVAILABLE|model appears in two or more repositories\nsolo|1|READY|\n" {
		t.Errorf("index:\n%s", got)
	}
	if m.AllReady() {
		t.Error("AllReady with a duplicate model")
	}
}

func TestModelConfigName(t *testing.T) {
	repo := t.TempDir()
	dir := writeModel(t, repo, "m", simpleConfig("m"), 1, 2)
	mustMkdir(t, filepath.Join(dir, "configs"))
	mustWrite(t, filepath.Join(dir, "configs", "custom.pbtxt"), simpleConfig("m")+"version_policy { all { } }")
	loader := newFakeLoader()
	m, err := New(Options{Paths: []string{repo}, ModelConfigName: "custom", Loader: loader})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.ReadyVersions("m"); !slices.Equal(got, []int64{1, 2}) {
		t.Errorf("configs/custom.pbtxt not used: %v", got)
	}
}

func TestSpecificPolicyWithMissingDirectory(t *testing.T) {
	repo := t.TempDir()
	writeModel(t, repo, "m", simpleConfig("m")+"version_policy { specific { versions: [ 1, 5 ] } }", 1, 2)
	writeModel(t, repo, "none", simpleConfig("none")+"version_policy { specific { versions: [ 5 ] } }", 1)
	m := newManager(t, newFakeLoader(), ModeNone, repo)
	wantErr(t, m.Start(context.Background()), inference.CodeInvalidArg,
		"load failed for model 'none': at least one version must be available under the version policy of model 'none'")
	// As in Triton, a listed version without a directory is skipped.
	if got, _ := m.ReadyVersions("m"); !slices.Equal(got, []int64{1}) {
		t.Errorf("ReadyVersions = %v", got)
	}
}

const ensembleConfig = `
name: "ens"
platform: "ensemble"
max_batch_size: 8
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
ensemble_scheduling {
  step [
    { model_name: "pre" model_version: -1 input_map { key: "INPUT0" value: "IN" } output_map { key: "OUTPUT0" value: "MID" } },
    { model_name: "post" model_version: 1 input_map { key: "INPUT0" value: "MID" } output_map { key: "OUTPUT0" value: "OUT" } }
  ]
}`

func TestEnsembleLoadsAfterComposingModels(t *testing.T) {
	repo := t.TempDir()
	writeModel(t, repo, "ens", ensembleConfig, 1)
	writeModel(t, repo, "pre", simpleConfig("pre"), 1)
	writeModel(t, repo, "post", simpleConfig("post"), 1)
	writeModel(t, repo, "other", simpleConfig("other"), 1)
	loader := newFakeLoader()
	m := newManager(t, loader, ModeNone, repo)
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	order := loader.loadOrder()
	ens := slices.Index(order, "ens")
	if ens < slices.Index(order, "pre") || ens < slices.Index(order, "post") {
		t.Errorf("load order %v", order)
	}
	if !m.AllReady() {
		t.Error("not AllReady")
	}
}

func TestEnsembleExplicitLoadAndUnloadDependents(t *testing.T) {
	repo := t.TempDir()
	writeModel(t, repo, "ens", ensembleConfig, 1)
	writeModel(t, repo, "pre", simpleConfig("pre"), 1)
	writeModel(t, repo, "post", simpleConfig("post"), 1)
	loader := newFakeLoader()
	m := newManager(t, loader, ModeExplicit, repo)
	ctx := context.Background()
	// "pre" is loaded on its own; "post" only for the ensemble.
	if err := m.Load(ctx, "pre", LoadOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := m.Load(ctx, "ens", LoadOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := indexOf(m, true); got != "ens|1|READY|\npost|1|READY|\npre|1|READY|\n" {
		t.Errorf("ready index:\n%s", got)
	}
	if err := m.Unload(ctx, "ens", true); err != nil {
		t.Fatal(err)
	}
	if err := m.waitDrained(ctx); err != nil {
		t.Fatal(err)
	}
	// "post" came with the ensemble and goes with it; "pre" was asked for.
	if got := indexOf(m, true); got != "pre|1|READY|\n" {
		t.Errorf("ready index after unload_dependents:\n%s", got)
	}

	// A composing model that cannot load fails the ensemble, naming it.
	mustWrite(t, filepath.Join(repo, "post", "config.pbtxt"), "backend: \"fake\" max_batch_size: -1")
	wantErr(t, m.Load(ctx, "ens", LoadOptions{}), inference.CodeInvalidArg,
		"load failed for model 'ens': ensemble 'ens' depends on 'post' which has no loaded version. Model 'post' loading failed with error: ")
	// A step that names a version the composing model does not serve.
	mustWrite(t, filepath.Join(repo, "post", "config.pbtxt"), simpleConfig("post"))
	mustWrite(t, filepath.Join(repo, "ens", "config.pbtxt"), strings.Replace(ensembleConfig, "model_version: 1", "model_version: 4", 1))
	wantErr(t, m.Load(ctx, "ens", LoadOptions{}), inference.CodeInvalidArg,
		"ensemble 'ens' depends on 'post' whose required version 4 is not loaded.")
}

func TestEnsembleCycle(t *testing.T) {
	repo := t.TempDir()
	cyc := func(name, dep string) string {
		return `name: "` + name + `" platform: "ensemble"
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 1 ] } ] output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] } ]
ensemble_scheduling { step [ { model_name: "` + dep + `" model_version: -1 input_map { key: "IN" value: "IN" } output_map { key: "OUT" value: "OUT" } } ] }`
	}
	writeModel(t, repo, "e1", cyc("e1", "e2"), 1)
	writeModel(t, repo, "e2", cyc("e2", "e1"), 1)
	m := newManager(t, newFakeLoader(), ModeNone, repo)
	err := m.Start(context.Background())
	wantErr(t, err, inference.CodeInvalidArg, "circular dependency between ensembles: e1 -> ... -> e2 -> e1",
		"circular dependency between ensembles: e2 -> ... -> e1 -> e2")
}

func TestLoaderPanicFailsTheVersion(t *testing.T) {
	repo := t.TempDir()
	writeModel(t, repo, "m", simpleConfig("m"), 1)
	m := newManager(t, panicLoader{}, ModeExplicit, repo)
	wantErr(t, m.Load(context.Background(), "m", LoadOptions{}), inference.CodeInvalidArg,
		"version 1 is at UNAVAILABLE state: Internal: panic while loading: kaboom;")
}

type panicLoader struct{}

func (panicLoader) Complete(context.Context, string, *inferencepb.ModelConfig, bool) error {
	return nil
}
func (panicLoader) LoadVersion(context.Context, VersionSpec) (Servable, error) { panic("kaboom") }

func TestCloseWaitsForHandles(t *testing.T) {
	repo := t.TempDir()
	writeModel(t, repo, "m", simpleConfig("m"), 1)
	loader := newFakeLoader()
	m, err := New(Options{Paths: []string{repo}, Loader: loader})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h, err := m.Acquire(context.Background(), "m", "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = m.Close(ctx)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "1 model versions still draining") {
		t.Errorf("Close with a held handle and no time: %v", err)
	}
	if loader.servable(t, "m", 1).isClosed() {
		t.Error("closed under a held handle")
	}
	h.Release()
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !loader.servable(t, "m", 1).isClosed() {
		t.Error("not closed")
	}
	if err := m.Start(context.Background()); !strings.Contains(err.Error(), msgClosed) {
		t.Errorf("Start after Close: %v", err)
	}
	// Run returns at once on a closed manager.
	m.Run(context.Background())
}

func TestConcurrentRequestsDuringReloads(t *testing.T) {
	repo := t.TempDir()
	writeModel(t, repo, "m", simpleConfig("m"), 1)
	loader := newFakeLoader()
	m := newManager(t, loader, ModeExplicit, repo)
	ctx := context.Background()
	if err := m.Load(ctx, "m", LoadOptions{}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				h, err := m.Acquire(context.Background(), "m", "")
				if err != nil {
					continue // between an unload and a load
				}
				if h.Servable.(*fakeServable).isClosed() {
					t.Error("acquired a closed servable")
				}
				m.Index(false)
				h.Release()
			}
		})
	}
	for i := range 20 {
		var err error
		if i%3 == 2 {
			err = m.Unload(ctx, "m", false)
		} else {
			err = m.Load(ctx, "m", LoadOptions{Config: `{"backend":"fake"}`})
		}
		if err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
}

func TestBadRequestsLeaveNoTrace(t *testing.T) {
	repo := t.TempDir()
	writeModel(t, repo, "m", simpleConfig("m"), 1)
	writeModel(t, repo, "broken", "backend: \"fake\" max_batch_size: -1", 1)
	m := newManager(t, newFakeLoader(), ModeExplicit, repo)
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		opts LoadOptions
	}{
		{"nope", LoadOptions{}},
		{"m", LoadOptions{Config: "{not json"}},
		{"m", LoadOptions{Config: `{"backend":"fake"}`, Files: map[string][]byte{"../x": nil}}},
	} {
		if err := m.Load(ctx, tt.name, tt.opts); err == nil {
			t.Fatalf("Load(%q) succeeded", tt.name)
		}
	}
	if !m.AllReady() {
		t.Error("bad requests made the server unready")
	}
	if got := indexOf(m, false); got != "broken|||\nm|||\n" {
		t.Errorf("index:\n%s", got)
	}
	// A model that is there but broken does count: the server tried.
	if err := m.Load(ctx, "broken", LoadOptions{}); err == nil {
		t.Fatal("broken model loaded")
	}
	if m.AllReady() {
		t.Error("AllReady with a model that failed to load")
	}
	if e, _ := entry(m, "broken", ""); e.State != StateUnavailable || !strings.Contains(e.Reason, "'max_batch_size' must be non-negative") {
		t.Errorf("index entry %+v", e)
	}
}
