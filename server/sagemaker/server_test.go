package sagemaker

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp/fasthttputil"
	"go.uber.org/goleak"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/payload"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/server/restricted"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreTopFunction("github.com/valyala/fasthttp/stackless.funcWorker"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
	)
}

// fakeCore serves identity models: every config in models echoes its
// inputs (INPUTn as OUTPUTn). Repositories registered at run time make
// their mapped names loadable; a load of a name in loadErrs fails with
// that error. An unload takes unloadPolls index reads to finish.
type fakeCore struct {
	mu          sync.Mutex
	ready       bool
	models      map[string]*inferencepb.ModelConfig
	repos       map[string]map[string]string // path → subdir → name
	loaded      map[string]bool
	unloading   map[string]int // name → index reads left
	unloadPolls int            // < 0: never finishes
	loadErrs    map[string]error
	unloads     []string
	inferFn     func(context.Context, *inference.Request) (*inference.Response, error)
	streamFn    func(context.Context, *inference.Request, inference.ResponseFunc) error
}

func newFakeCore() *fakeCore {
	cfg := func(name string, decoupled bool) *inferencepb.ModelConfig {
		c := &inferencepb.ModelConfig{
			Name: name, Backend: "identity",
			Input:  []*inferencepb.ModelInput{{Name: "INPUT0", DataType: inferencepb.DataType_TYPE_FP32, Dims: []int64{-1}}},
			Output: []*inferencepb.ModelOutput{{Name: "OUTPUT0", DataType: inferencepb.DataType_TYPE_FP32, Dims: []int64{-1}}},
		}
		if decoupled {
			c.ModelTransactionPolicy = &inferencepb.ModelTransactionPolicy{Decoupled: true}
		}
		return c
	}
	text := &inferencepb.ModelConfig{
		Name: "text", Backend: "python",
		Input: []*inferencepb.ModelInput{{Name: "text_input", DataType: inferencepb.DataType_TYPE_STRING, Dims: []int64{1}}},
	}
	return &fakeCore{
		ready: true,
		models: map[string]*inferencepb.ModelConfig{
			"single": cfg("single", false), "target": cfg("target", false), "hash1": cfg("hash1", false),
			"decoupled": cfg("decoupled", true), "text": text,
		},
		repos: map[string]map[string]string{}, loaded: map[string]bool{"single": true, "text": true, "decoupled": true},
		unloading: map[string]int{}, loadErrs: map[string]error{},
	}
}

func (f *fakeCore) Live() bool  { return true }
func (f *fakeCore) Ready() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.ready }

func (f *fakeCore) ModelReady(_ context.Context, name, _ string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loaded[name], nil
}

func (f *fakeCore) ModelConfig(_ context.Context, name, _ string) (*inferencepb.ModelConfig, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.loaded[name] {
		return nil, inference.NotFound("Request for unknown model: '%s' is not found", name)
	}
	return f.models[name], nil
}

func (f *fakeCore) RepositoryIndex(context.Context, bool) ([]repository.IndexEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []repository.IndexEntry
	for name := range f.models {
		switch left, unloading := f.unloading[name]; {
		case unloading && left != 0:
			out = append(out, repository.IndexEntry{Name: name, Version: "1", State: repository.StateUnloading})
			if left > 0 {
				f.unloading[name]--
			}
		case unloading:
			delete(f.unloading, name)
			delete(f.loaded, name)
			out = append(out, repository.IndexEntry{Name: name, Version: "1", State: repository.StateUnavailable, Reason: "unloaded"})
		case f.loaded[name]:
			out = append(out, repository.IndexEntry{Name: name, Version: "1", State: repository.StateReady})
		default:
			out = append(out, repository.IndexEntry{Name: name})
		}
	}
	return out, nil
}

func (f *fakeCore) RegisterRepository(path string, names map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.repos[path]; ok {
		return inference.Errorf(inference.CodeAlreadyExists, "model repository '%s' has already been registered", path)
	}
	f.repos[path] = names
	return nil
}

func (f *fakeCore) UnregisterRepository(path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.repos[path]; !ok {
		return inference.NotFound("failed to unregister '%s'", path)
	}
	delete(f.repos, path)
	return nil
}

func (f *fakeCore) LoadModel(_ context.Context, name string, _ repository.LoadOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.loadErrs[name]; err != nil {
		return err
	}
	for _, names := range f.repos {
		for _, n := range names {
			if n == name {
				f.loaded[name] = true
				return nil
			}
		}
	}
	return inference.NotFound("failed to load '%s', no version is available", name)
}

func (f *fakeCore) UnloadModel(_ context.Context, name string, dependents bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !dependents {
		return inference.Internal("the SageMaker unload must unload dependents")
	}
	f.unloads = append(f.unloads, name)
	f.unloading[name] = f.unloadPolls
	return nil
}

func (f *fakeCore) Infer(ctx context.Context, req *inference.Request) (*inference.Response, error) {
	f.mu.Lock()
	ok, cfg, fn := f.loaded[req.ModelName], f.models[req.ModelName], f.inferFn
	f.mu.Unlock()
	if !ok {
		return nil, inference.NotFound("Request for unknown model: '%s' is not found", req.ModelName)
	}
	if cfg.GetModelTransactionPolicy().GetDecoupled() {
		return nil, inference.Errorf(inference.CodeUnsupported, "decoupled: %w", inference.ErrDecoupled)
	}
	if fn != nil {
		return fn(ctx, req)
	}
	resp := &inference.Response{ModelName: req.ModelName, ModelVersion: "1"}
	for _, in := range req.Inputs {
		out := in
		out.Name = strings.Replace(in.Name, "INPUT", "OUTPUT", 1)
		resp.Outputs = append(resp.Outputs, out)
	}
	return resp, nil
}

func (f *fakeCore) InferStream(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error {
	f.mu.Lock()
	fn := f.streamFn
	f.mu.Unlock()
	if fn != nil {
		return fn(ctx, req, out)
	}
	resp, err := f.Infer(ctx, req)
	if err != nil {
		return err
	}
	return out(resp, true)
}

type harness struct {
	t      *testing.T
	core   *fakeCore
	srv    *Server
	root   string
	client *http.Client
}

func newHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	core := newFakeCore()
	root := t.TempDir()
	opts.Logger = zerolog.Nop()
	if opts.ModelRoot == "" {
		opts.ModelRoot = root
	}
	if opts.UnloadPoll == 0 {
		opts.UnloadPoll = time.Millisecond
	}
	srv := New(core, opts)
	ln := fasthttputil.NewInmemoryListener()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	tr := &http.Transport{
		DialContext:        func(context.Context, string, string) (net.Conn, error) { return ln.Dial() },
		DisableCompression: true,
	}
	h := &harness{t: t, core: core, srv: srv, root: opts.ModelRoot, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return h
}

type result struct {
	status int
	header http.Header
	body   []byte
}

func (h *harness) do(method, path string, body []byte, headers ...string) result {
	h.t.Helper()
	req, err := http.NewRequest(method, "http://sagemaker"+path, bytes.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return result{resp.StatusCode, resp.Header, b}
}

func (r result) expect(t *testing.T, status int, substr string) {
	t.Helper()
	if r.status != status || !strings.Contains(string(r.body), substr) {
		t.Errorf("got %d %s\nwant %d containing %q", r.status, r.body, status, substr)
	}
}

// artefact lays out <root>/<name>/model as SageMaker does for one model
// and returns its URL.
func (h *harness) artefact(name string) string {
	dir := filepath.Join(h.root, name, "model")
	writeConfig(h.t, dir, name, "")
	return dir
}

func loadBody(name, url string) []byte {
	b, _ := json.Marshal(map[string]string{"model_name": name, "url": url})
	return b
}

const inferJSON = `{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[2],"data":[1.5,-2]}]}`

func f32(vs ...float32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

func TestPing(t *testing.T) {
	h := newHarness(t, Options{})
	h.do("GET", "/ping", nil).expect(t, 200, "")
	h.core.mu.Lock()
	h.core.ready = false
	h.core.mu.Unlock()
	h.do("GET", "/ping", nil).expect(t, 400, "")
	live := newHarness(t, Options{PingMode: PingLive})
	live.core.mu.Lock()
	live.core.ready = false
	live.core.mu.Unlock()
	live.do("GET", "/ping", nil).expect(t, 200, "")
	h.do("POST", "/ping", nil).expect(t, 400, "unknown SageMaker endpoint: POST /ping")
}

func TestUnknownPaths(t *testing.T) {
	h := newHarness(t, Options{DefaultModel: "single"})
	for _, rq := range [][2]string{
		{"GET", "/"}, {"GET", "/v2/health/ready"}, {"GET", "/invocations"}, {"PUT", "/models"},
		{"POST", "/models/x"}, {"GET", "/models/x/invoke"}, {"POST", "/models/x/y"}, {"GET", "/models/"},
		{"DELETE", "/models"},
	} {
		h.do(rq[0], rq[1], nil).expect(t, 400, `{"error":"unknown SageMaker endpoint: `+rq[0]+" "+rq[1])
	}
}

func TestInvocations(t *testing.T) {
	h := newHarness(t, Options{DefaultModel: "single"})
	r := h.do("POST", "/invocations", []byte(inferJSON), "Content-Type", "application/json")
	r.expect(t, 200, `{"model_name":"single","model_version":"1","outputs":[{"name":"OUTPUT0","datatype":"FP32","shape":[2],"data":[1.5,-2.0]}]}`)
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}

	// The binary form: the JSON header's length in the Content-Type, both ways.
	hdr := `{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}}],"outputs":[{"name":"OUTPUT0","parameters":{"binary_data":true}}]}`
	body := append([]byte(hdr), f32(1, 2)...)
	r = h.do("POST", "/invocations", body, "Content-Type", binaryContentType(len(hdr)))
	if r.status != 200 {
		t.Fatalf("binary: %d %s", r.status, r.body)
	}
	n, binary, err := jsonHeaderSize([]byte(r.header.Get("Content-Type")))
	if err != nil || !binary || n > len(r.body) {
		t.Fatalf("binary response Content-Type %q: %v", r.header.Get("Content-Type"), err)
	}
	if !bytes.Equal(r.body[n:], f32(1, 2)) || !json.Valid(r.body[:n]) || r.header.Get(headerInferHeaderLength) != "" {
		t.Errorf("binary response %q (header %d bytes)", r.body, n)
	}
	// The raw form: json-header-size=0, the body is the model's one input.
	r = h.do("POST", "/invocations", f32(3, 4, 5), "Content-Type", binaryContentType(0))
	if r.status != 200 || !bytes.HasSuffix(r.body, f32(3, 4, 5)) {
		t.Errorf("raw: %d %q", r.status, r.body)
	}
	// gzip in, gzip out.
	r = h.do("POST", "/invocations", gzipped([]byte(inferJSON)), "Content-Encoding", "gzip", "Accept-Encoding", "gzip")
	if r.status != 200 || r.header.Get("Content-Encoding") != "gzip" || !strings.Contains(string(gunzip(t, r.body)), `"data":[1.5,-2.0]`) {
		t.Errorf("gzip: %d %v", r.status, r.header)
	}

	h.do("POST", "/invocations", body, "Content-Type", binaryContentType(len(body)+1)).
		expect(t, 400, "inference header size should be in range (0, "+strconv.Itoa(len(body))+"), got: "+strconv.Itoa(len(body)+1))
	h.do("POST", "/invocations", body, "Content-Type", binaryMediaType).expect(t, 400, "needs a json-header-size parameter")
	h.do("POST", "/invocations", []byte(`not json`)).expect(t, 400, "failed to parse the request JSON buffer")
	h.do("POST", "/invocations", []byte(`{"inputs":[`)).expect(t, 400, "Unable to parse 'inputs'")
	h.do("POST", "/invocations", []byte(inferJSON), "Content-Encoding", "br").expect(t, 501, "Unsupported compression type")

	none := newHarness(t, Options{DefaultModel: "nosuch"})
	none.do("POST", "/invocations", []byte(inferJSON)).expect(t, 404, "Request for unknown model: 'nosuch' is not found")
	dec := newHarness(t, Options{DefaultModel: "decoupled"})
	dec.do("POST", "/invocations", []byte(inferJSON)).expect(t, 501, "doesn't support models with decoupled transaction policy")
	unset := newHarness(t, Options{})
	unset.do("POST", "/invocations", []byte(inferJSON)).expect(t, 400, "no default model")

	h.core.inferFn = func(context.Context, *inference.Request) (*inference.Response, error) {
		return nil, inference.Internal("Failed to allocate memory for requested buffer of size 123")
	}
	h.do("POST", "/invocations", []byte(inferJSON)).expect(t, 507, "Failed to allocate memory")
	h.core.inferFn = func(context.Context, *inference.Request) (*inference.Response, error) {
		return nil, inference.Internal("the model raised ValueError")
	}
	h.do("POST", "/invocations", []byte(inferJSON)).expect(t, 400, "the model raised ValueError")
}

func TestInvocationsGenerate(t *testing.T) {
	h := newHarness(t, Options{DefaultModel: "text", InferenceType: Generate})
	text := func(s string) *inference.Response {
		return &inference.Response{ModelName: "text", ModelVersion: "1", Outputs: []inference.Tensor{{
			Name: "text_output", DataType: inference.Bytes, Shape: []int64{1}, Data: inference.AppendBytesElement(nil, []byte(s)),
		}}}
	}
	h.core.streamFn = func(_ context.Context, req *inference.Request, out inference.ResponseFunc) error {
		in := req.Input("text_input")
		if in == nil || !bytes.HasSuffix(in.Data, []byte("hi")) {
			return inference.InvalidArg("text_input missing")
		}
		return out(text("hello"), true)
	}
	h.do("POST", "/invocations", []byte(`{"text_input":"hi"}`)).expect(t, 200, `{"model_name":"text","model_version":"1","text_output":"hello"}`)
	h.do("POST", "/invocations", []byte(`{"nothing":1}`)).expect(t, 400, "Missing required input(s) ['text_input']")

	st := newHarness(t, Options{DefaultModel: "text", InferenceType: GenerateStream})
	st.core.streamFn = func(_ context.Context, _ *inference.Request, out inference.ResponseFunc) error {
		if err := out(text("a"), false); err != nil {
			return err
		}
		return out(text("b"), true)
	}
	r := st.do("POST", "/invocations", []byte(`{"text_input":"hi"}`))
	if r.status != 200 || r.header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		t.Fatalf("stream: %d %v", r.status, r.header)
	}
	var events []string
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	for sc.Scan() {
		if line := sc.Text(); line != "" {
			events = append(events, line)
		}
	}
	want := []string{`data: {"model_name":"text","model_version":"1","text_output":"a"}`, `data: {"model_name":"text","model_version":"1","text_output":"b"}`}
	if strings.Join(events, "\n") != strings.Join(want, "\n") {
		t.Errorf("events %q", events)
	}
}

func TestMultiModelLifecycle(t *testing.T) {
	h := newHarness(t, Options{})
	url := h.artefact("hash1")
	h.do("POST", "/models", loadBody("hash1", url)).expect(t, 200, "")
	h.do("POST", "/models", loadBody("hash1", url)).expect(t, 409, "model 'hash1' is already loaded")
	h.do("GET", "/models", nil).expect(t, 200, `{"models":[{"modelName":"hash1","modelUrl":"`+url+`"}]}`)
	h.do("GET", "/models/hash1", nil).expect(t, 200, `{"modelName":"hash1","modelUrl":"`+url+`"}`)
	h.do("POST", "/models/hash1/invoke", []byte(inferJSON)).expect(t, 200, `"model_name":"hash1"`)
	h.do("POST", "/models/hash1/invoke", []byte(inferJSON), "Content-Encoding", "br").expect(t, 415, "Unsupported compression type")
	h.core.inferFn = func(context.Context, *inference.Request) (*inference.Response, error) {
		return nil, inference.Unavailable("the queue is full")
	}
	h.do("POST", "/models/hash1/invoke", []byte(inferJSON)).expect(t, 400, "the queue is full")
	h.core.inferFn = nil

	h.do("DELETE", "/models/hash1", nil).expect(t, 200, "")
	if len(h.core.repos) != 0 || len(h.core.unloads) != 1 {
		t.Errorf("after unload: repos %v, unloads %v", h.core.repos, h.core.unloads)
	}
	r := h.do("GET", "/models/hash1", nil)
	if r.status != 404 || len(r.body) != 0 {
		t.Errorf("describe after unload: %d %q", r.status, r.body)
	}
	h.do("DELETE", "/models/hash1", nil).expect(t, 404, "model 'hash1' is not loaded")
	h.do("POST", "/models/hash1/invoke", []byte(inferJSON)).expect(t, 404, "model 'hash1' is not loaded")
	h.do("GET", "/models", nil).expect(t, 200, `{"models":[]}`)
	// Loaded again after the unload.
	h.do("POST", "/models", loadBody("hash1", url)).expect(t, 200, "")
}

func TestMultiModelTargetModel(t *testing.T) {
	h := newHarness(t, Options{})
	url := h.artefact("0ddc2d4d")
	h.do("POST", "/models", loadBody("0ddc2d4d", url), headerTargetModel, "target").expect(t, 200, "")
	want := map[string]string{"model": "target"}
	if got := h.core.repos[filepath.Dir(url)]; len(got) != 1 || got["model"] != want["model"] {
		t.Errorf("registered %v", h.core.repos)
	}
	h.do("POST", "/models/0ddc2d4d/invoke", []byte(inferJSON), headerTargetModel, "target").expect(t, 200, `"model_name":"target"`)
	// The same repository under another hash: already registered.
	h.do("POST", "/models", loadBody("other", url)).expect(t, 409, "has already been registered")
	h.do("POST", "/models", loadBody("x", url), headerTargetModel, "a/b").expect(t, 400, "must not contain a path separator")
}

func TestMultiModelLoadErrors(t *testing.T) {
	h := newHarness(t, Options{})
	url := h.artefact("hash1")
	for _, tc := range []struct {
		body   string
		status int
		want   string
	}{
		{``, 400, "must be a JSON object"},
		{`{"model_name":"hash1"`, 400, "failed to parse the request JSON buffer"},
		{`[]`, 400, "expected an object"},
		{`{"url":"` + url + `"}`, 400, "has no 'model_name'"},
		{`{"model_name":"hash1"}`, 400, "has no 'url'"},
		{`{"model_name":1,"url":"` + url + `"}`, 400, "'model_name' must be a string"},
		{`{"model_name":"a/b","url":"` + url + `"}`, 400, "must not contain a path separator"},
		{`{"model_name":"..","url":"` + url + `"}`, 400, "must not contain '..'"},
		{`{"model_name":"hash1","url":"/etc/passwd"}`, 400, "is not of the form"},
		{`{"model_name":"hash1","url":"` + h.root + `/hash1/../hash1/model"}`, 400, "must not contain '..'"},
		{`{"model_name":"hash1","url":"/proc/self/model"}`, 400, "must not point under /proc"},
	} {
		h.do("POST", "/models", []byte(tc.body)).expect(t, tc.status, tc.want)
	}

	h.core.loadErrs["hash1"] = inference.Internal("failed to load 'hash1': CUDA_OUT_OF_MEMORY")
	h.do("POST", "/models", loadBody("hash1", url)).expect(t, 507, "CUDA_OUT_OF_MEMORY")
	h.core.loadErrs["hash1"] = inference.ResourceExhausted("model 'hash1' does not fit in the model cache")
	h.do("POST", "/models", loadBody("hash1", url)).expect(t, 507, "does not fit")
	h.core.loadErrs["hash1"] = inference.Internal("failed to load 'hash1': bad config")
	h.do("POST", "/models", loadBody("hash1", url)).expect(t, 400, "bad config")
	if len(h.core.repos) != 0 {
		t.Errorf("a failed load left its repository registered: %v", h.core.repos)
	}
	delete(h.core.loadErrs, "hash1")
	h.do("POST", "/models", loadBody("hash1", url)).expect(t, 200, "")
}

func TestMultiModelNotReadyListsEmpty(t *testing.T) {
	h := newHarness(t, Options{})
	h.do("POST", "/models", loadBody("hash1", h.artefact("hash1"))).expect(t, 200, "")
	h.core.mu.Lock()
	h.core.loaded["hash1"] = false
	h.core.mu.Unlock()
	h.do("GET", "/models", nil).expect(t, 200, `{"models":[{}]}`)
}

func TestUnloadWaitsAndTimesOut(t *testing.T) {
	h := newHarness(t, Options{UnloadTimeout: 50 * time.Millisecond})
	h.core.unloadPolls = 3
	h.do("POST", "/models", loadBody("hash1", h.artefact("hash1"))).expect(t, 200, "")
	h.do("DELETE", "/models/hash1", nil).expect(t, 200, "")

	h.core.unloadPolls = -1 // never finishes
	h.do("POST", "/models", loadBody("hash1", h.artefact("hash1"))).expect(t, 200, "")
	h.do("DELETE", "/models/hash1", nil).expect(t, 400, "did not finish unloading within 50ms")
	// Still known, still registered: SageMaker may retry.
	h.do("GET", "/models/hash1", nil).expect(t, 200, `"modelName":"hash1"`)
	if len(h.core.repos) != 1 {
		t.Errorf("repositories after a timed-out unload: %v", h.core.repos)
	}
}

func TestRestricted(t *testing.T) {
	rules := restricted.Rules{}
	if err := rules.AddHTTP("model-repository,inference:key=secret"); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Options{DefaultModel: "single", Restricted: rules})
	const msg = "This API is restricted, expecting header 'key'"
	h.do("GET", "/ping", nil).expect(t, 200, "")
	h.do("GET", "/models", nil).expect(t, 403, msg)
	h.do("GET", "/models/x", nil).expect(t, 403, msg)
	h.do("DELETE", "/models/x", nil).expect(t, 403, msg)
	h.do("POST", "/models", nil).expect(t, 403, msg)
	h.do("POST", "/models/x/invoke", nil).expect(t, 403, msg)
	h.do("POST", "/invocations", []byte(inferJSON)).expect(t, 403, msg)
	h.do("POST", "/invocations", []byte(inferJSON), "key", "wrong").expect(t, 403, msg)
	h.do("POST", "/invocations", []byte(inferJSON), "key", "secret").expect(t, 200, "OUTPUT0")
	h.do("GET", "/models", nil, "Key", "secret").expect(t, 200, `{"models":[]}`)
}

// TestWorkersBound checks that Workers bounds the requests handled at
// once while /ping is still answered.
func TestWorkersBound(t *testing.T) {
	h := newHarness(t, Options{DefaultModel: "single", Workers: 1})
	started, release := make(chan struct{}), make(chan struct{})
	var calls sync.WaitGroup
	h.core.inferFn = func(_ context.Context, req *inference.Request) (*inference.Response, error) {
		started <- struct{}{}
		<-release
		return &inference.Response{ModelName: req.ModelName, ModelVersion: "1"}, nil
	}
	results := make(chan int, 2)
	for range 2 {
		calls.Go(func() { results <- h.do("POST", "/invocations", []byte(inferJSON)).status })
	}
	<-started
	h.do("GET", "/ping", nil).expect(t, 200, "")
	select {
	case <-started:
		t.Fatal("a second request ran while the only worker was busy")
	case <-time.After(50 * time.Millisecond):
	}
	release <- struct{}{}
	<-started
	release <- struct{}{}
	calls.Wait()
	if a, b := <-results, <-results; a != 200 || b != 200 {
		t.Errorf("statuses %d %d", a, b)
	}
}

func TestParseOptions(t *testing.T) {
	if m, err := ParsePingMode("live"); err != nil || m != PingLive {
		t.Errorf("live: %v %v", m, err)
	}
	if _, err := ParsePingMode("healthy"); err == nil {
		t.Error("healthy accepted")
	}
	if it, err := ParseInferenceType("generate_stream"); err != nil || it != GenerateStream {
		t.Errorf("generate_stream: %v %v", it, err)
	}
	if _, err := ParseInferenceType("predict"); err == nil {
		t.Error("predict accepted")
	}
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	r, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestInvocationsBomb sends a small gzip body that inflates past the input
// limit: it is refused with the limit named, nothing stays charged to the
// payload budget, and the next compressed request is served.
func TestInvocationsBomb(t *testing.T) {
	budget := payload.NewBudget(64<<20, nil)
	h := newHarness(t, Options{DefaultModel: "single", MaxInputSize: 1 << 20, PayloadBudget: budget})
	bomb := gzipped(bytes.Repeat([]byte{'0'}, 8<<20))
	h.do("POST", "/invocations", bomb, "Content-Encoding", "gzip").
		expect(t, 400, "decompressed request body exceeds the maximum allowed value of 1048576 bytes; use --http-max-input-size")
	if r := h.do("POST", "/invocations", gzipped([]byte(inferJSON)), "Content-Encoding", "gzip"); r.status != 200 {
		t.Fatalf("after the bomb: %d %s", r.status, r.body)
	}
	if n := budget.InUse(); n != 0 {
		t.Errorf("%d bytes still charged to the payload budget", n)
	}
}
