package httpfront

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
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
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// fasthttp's worker-pool cleaner notices Stop only after its idle
		// period (10 s); its stackless (compression) workers are a global
		// pool.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreTopFunction("github.com/valyala/fasthttp/stackless.funcWorker"),
		// fasthttp refreshes its cached Date header once a second, forever.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
	)
}

// fakeCore is a Core over a fixed set of model configurations. Its default
// Infer echoes every input back as an output named with INPUT replaced by
// OUTPUT, filtered and ordered as requested, like the real core.
type fakeCore struct {
	mu      sync.Mutex
	live    bool
	ready   bool
	models  map[string]*inferencepb.ModelConfig
	notRdy  map[string]bool  // model -> loaded but not ready
	errs    map[string]error // method or "method:model" -> forced error
	index   []repository.IndexEntry
	stats   *inferencepb.ModelStatisticsResponse
	inferFn func(context.Context, *inference.Request) (*inference.Response, error)
	// streamFn serves InferStream; nil sends the echo as the one response.
	streamFn func(context.Context, *inference.Request, inference.ResponseFunc) error
	shm      *fakeShm // shared-memory calls; nil answers as with --allow-client-shm=false

	// Recorded calls; requests are deep copies, since their data aliases
	// the HTTP body.
	lastReq      *inference.Request
	lastVersion  string
	indexReady   bool
	loads        []loadCall
	unloads      []unloadCall
	respParams   inference.Parameters
	respID       string
	outputParams inference.Parameters
}

type loadCall struct {
	name string
	opts repository.LoadOptions
}

type unloadCall struct {
	name       string
	dependents bool
}

func newFakeCore() *fakeCore {
	return &fakeCore{
		live:   true,
		ready:  true,
		models: testModels(),
		notRdy: map[string]bool{},
		errs:   map[string]error{},
	}
}

func testModels() map[string]*inferencepb.ModelConfig {
	tensor := func(name string, dt inferencepb.DataType, dims ...int64) *inferencepb.ModelInput {
		return &inferencepb.ModelInput{Name: name, DataType: dt, Dims: dims}
	}
	out := func(name string, dt inferencepb.DataType, dims ...int64) *inferencepb.ModelOutput {
		return &inferencepb.ModelOutput{Name: name, DataType: dt, Dims: dims}
	}
	optional := func(in *inferencepb.ModelInput) *inferencepb.ModelInput {
		in.Optional = true
		return in
	}
	return map[string]*inferencepb.ModelConfig{
		"simple": {
			Name: "simple", Platform: "onnxruntime_onnx", Backend: "onnxruntime", MaxBatchSize: 8,
			Input:  []*inferencepb.ModelInput{tensor("INPUT0", inferencepb.DataType_TYPE_INT32, 16), tensor("INPUT1", inferencepb.DataType_TYPE_INT32, 16)},
			Output: []*inferencepb.ModelOutput{out("OUTPUT0", inferencepb.DataType_TYPE_INT32, 16), out("OUTPUT1", inferencepb.DataType_TYPE_INT32, 16)},
		},
		"any": {Name: "any", Backend: "identity"},
		"raw_fp32": {
			Name: "raw_fp32", Backend: "identity",
			Input:  []*inferencepb.ModelInput{tensor("INPUT0", inferencepb.DataType_TYPE_FP32, -1)},
			Output: []*inferencepb.ModelOutput{out("OUTPUT0", inferencepb.DataType_TYPE_FP32, -1)},
		},
		"raw_batched": {
			Name: "raw_batched", Backend: "identity", MaxBatchSize: 4,
			Input:  []*inferencepb.ModelInput{tensor("INPUT0", inferencepb.DataType_TYPE_UINT8, 2, -1)},
			Output: []*inferencepb.ModelOutput{out("OUTPUT0", inferencepb.DataType_TYPE_UINT8, 2, -1)},
		},
		"raw_bytes": {
			Name: "raw_bytes", Backend: "identity",
			Input:  []*inferencepb.ModelInput{tensor("INPUT0", inferencepb.DataType_TYPE_STRING, 1)},
			Output: []*inferencepb.ModelOutput{out("OUTPUT0", inferencepb.DataType_TYPE_STRING, 1)},
		},
		"raw_two_vars": {
			Name: "raw_two_vars", Backend: "identity",
			Input: []*inferencepb.ModelInput{tensor("INPUT0", inferencepb.DataType_TYPE_FP32, -1, -1)},
		},
		"decoupled": {
			Name: "decoupled", Backend: "python",
			ModelTransactionPolicy: &inferencepb.ModelTransactionPolicy{Decoupled: true},
		},
		"my model": {Name: "my model", Backend: "identity"},
		// Generate: a text model as TensorRT-LLM's ensembles declare one.
		"gen_text": {
			Name: "gen_text", Backend: "python",
			Input: []*inferencepb.ModelInput{
				tensor("text_input", inferencepb.DataType_TYPE_STRING, 1),
				tensor("max_tokens", inferencepb.DataType_TYPE_INT32, 1),
				optional(tensor("temperature", inferencepb.DataType_TYPE_FP32, 1)),
				optional(tensor("stream", inferencepb.DataType_TYPE_BOOL, 1)),
				optional(tensor("stop_ids", inferencepb.DataType_TYPE_UINT16, -1)),
				optional(tensor("pair", inferencepb.DataType_TYPE_INT8, 2)),
				optional(tensor("half", inferencepb.DataType_TYPE_FP16, 1)),
			},
			Output: []*inferencepb.ModelOutput{out("text_output", inferencepb.DataType_TYPE_STRING, -1)},
		},
		"gen_batched": {
			Name: "gen_batched", Backend: "python", MaxBatchSize: 8,
			Input: []*inferencepb.ModelInput{
				tensor("text_input", inferencepb.DataType_TYPE_STRING, 1),
				optional(tensor("tokens", inferencepb.DataType_TYPE_INT64, -1)),
				optional(tensor("grid", inferencepb.DataType_TYPE_FP64, 2, -1)),
			},
			Output: []*inferencepb.ModelOutput{out("text_output", inferencepb.DataType_TYPE_STRING, -1)},
		},
		"gen_decoupled": {
			Name: "gen_decoupled", Backend: "python",
			Input:                  []*inferencepb.ModelInput{tensor("text_input", inferencepb.DataType_TYPE_STRING, 1)},
			Output:                 []*inferencepb.ModelOutput{out("text_output", inferencepb.DataType_TYPE_STRING, 1)},
			ModelTransactionPolicy: &inferencepb.ModelTransactionPolicy{Decoupled: true},
		},
		"gen_sequence": {
			Name: "gen_sequence", Backend: "python",
			Input: []*inferencepb.ModelInput{
				tensor("text_input", inferencepb.DataType_TYPE_STRING, 1),
				tensor("START", inferencepb.DataType_TYPE_BOOL, 1),
			},
			SchedulingChoice: &inferencepb.ModelConfig_SequenceBatching{SequenceBatching: &inferencepb.ModelSequenceBatching{
				ControlInput: []*inferencepb.ModelSequenceBatching_ControlInput{{Name: "START"}},
			}},
		},
	}
}

func (f *fakeCore) forced(method, model string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errs[method+":"+model]; err != nil {
		return err
	}
	return f.errs[method]
}

func (f *fakeCore) lookup(method, name, version string) (*inferencepb.ModelConfig, error) {
	if err := f.forced(method, name); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastVersion = version
	cfg, ok := f.models[name]
	if !ok {
		return nil, inference.NotFound("Request for unknown model: '%s' is not found", name)
	}
	return cfg, nil
}

func (f *fakeCore) Live() bool  { f.mu.Lock(); defer f.mu.Unlock(); return f.live }
func (f *fakeCore) Ready() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.ready }

func (f *fakeCore) Metadata() *inferencepb.ServerMetadataResponse {
	return &inferencepb.ServerMetadataResponse{
		Name: "nereid", Version: "0.1.0",
		Extensions: []string{"model_repository", "binary_tensor_data", "statistics"},
	}
}

func (f *fakeCore) ModelReady(_ context.Context, name, version string) (bool, error) {
	if _, err := f.lookup("ready", name, version); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.notRdy[name], nil
}

func (f *fakeCore) ModelMetadata(_ context.Context, name, version string) (*inferencepb.ModelMetadataResponse, error) {
	cfg, err := f.lookup("metadata", name, version)
	if err != nil {
		return nil, err
	}
	md := &inferencepb.ModelMetadataResponse{Name: name, Versions: []string{"1", "3"}, Platform: cfg.GetPlatform()}
	if md.Platform == "" {
		md.Platform = cfg.GetBackend()
	}
	for _, in := range cfg.GetInput() {
		shape := append([]int64{}, in.GetDims()...)
		if cfg.GetMaxBatchSize() > 0 {
			shape = append([]int64{-1}, shape...)
		}
		md.Inputs = append(md.Inputs, &inferencepb.ModelMetadataResponse_TensorMetadata{
			Name: in.GetName(), Datatype: inference.DataType(in.GetDataType()).String(), Shape: shape,
		})
	}
	for _, out := range cfg.GetOutput() {
		shape := append([]int64{}, out.GetDims()...)
		if cfg.GetMaxBatchSize() > 0 {
			shape = append([]int64{-1}, shape...)
		}
		md.Outputs = append(md.Outputs, &inferencepb.ModelMetadataResponse_TensorMetadata{
			Name: out.GetName(), Datatype: inference.DataType(out.GetDataType()).String(), Shape: shape,
		})
	}
	return md, nil
}

func (f *fakeCore) ModelConfig(_ context.Context, name, version string) (*inferencepb.ModelConfig, error) {
	return f.lookup("config", name, version)
}

func (f *fakeCore) ModelStatistics(_ context.Context, name, version string) (*inferencepb.ModelStatisticsResponse, error) {
	if name != "" {
		if _, err := f.lookup("stats", name, version); err != nil {
			return nil, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastVersion = version
	return f.stats, nil
}

func (f *fakeCore) RepositoryIndex(_ context.Context, readyOnly bool) ([]repository.IndexEntry, error) {
	if err := f.forced("index", ""); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.indexReady = readyOnly
	return f.index, nil
}

func (f *fakeCore) LoadModel(_ context.Context, name string, opts repository.LoadOptions) error {
	if err := f.forced("load", name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loads = append(f.loads, loadCall{name, opts})
	return nil
}

func (f *fakeCore) UnloadModel(_ context.Context, name string, dependents bool) error {
	if err := f.forced("unload", name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unloads = append(f.unloads, unloadCall{name, dependents})
	return nil
}

// Infer refuses unknown and decoupled models as the real core does.
func (f *fakeCore) Infer(ctx context.Context, req *inference.Request) (*inference.Response, error) {
	cfg, err := f.lookup("infer", req.ModelName, req.ModelVersion)
	if err != nil {
		return nil, err
	}
	if cfg.GetModelTransactionPolicy().GetDecoupled() {
		return nil, inference.Errorf(inference.CodeUnsupported, "model '%s' is decoupled: %w", req.ModelName, inference.ErrDecoupled)
	}
	f.mu.Lock()
	f.lastReq = cloneRequest(req)
	fn := f.inferFn
	f.mu.Unlock()
	if fn != nil {
		return fn(ctx, req)
	}
	return f.echo(req)
}

func (f *fakeCore) InferStream(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error {
	if _, err := f.lookup("infer", req.ModelName, req.ModelVersion); err != nil {
		return err
	}
	f.mu.Lock()
	f.lastReq = cloneRequest(req)
	fn := f.streamFn
	f.mu.Unlock()
	if fn != nil {
		return fn(ctx, req, out)
	}
	resp, err := f.echo(req)
	if err != nil {
		return err
	}
	return out(resp, true)
}

func (f *fakeCore) echo(req *inference.Request) (*inference.Response, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &inference.Response{ID: f.respID, ModelName: req.ModelName, ModelVersion: "1", Parameters: f.respParams}
	var all []inference.Tensor
	for _, in := range req.Inputs {
		out := in
		out.Name = strings.Replace(in.Name, "INPUT", "OUTPUT", 1)
		out.Parameters = f.outputParams
		all = append(all, out)
	}
	if len(req.Outputs) == 0 {
		resp.Outputs = all
		return resp, nil
	}
	for _, ro := range req.Outputs {
		found := false
		for _, t := range all {
			if t.Name == ro.Name {
				resp.Outputs = append(resp.Outputs, t)
				found = true
			}
		}
		if !found {
			return nil, inference.InvalidArg("unexpected inference output '%s' for model '%s'", ro.Name, req.ModelName)
		}
	}
	return resp, nil
}

func cloneRequest(r *inference.Request) *inference.Request {
	c := *r
	c.Inputs = nil
	for _, t := range r.Inputs {
		t.Data = bytes.Clone(t.Data)
		t.Shape = append([]int64(nil), t.Shape...)
		c.Inputs = append(c.Inputs, t)
	}
	c.Outputs = append([]inference.RequestedOutput(nil), r.Outputs...)
	return &c
}

// harness runs a front end over a fakeCore (or, from newCoreHarness, any
// Core) on an in-memory listener and talks to it with net/http, a
// different HTTP implementation than the server's.
type harness struct {
	t      *testing.T
	core   *fakeCore // nil from newCoreHarness
	srv    *Server
	ln     *fasthttputil.InmemoryListener
	client *http.Client
}

func newHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	core := newFakeCore()
	h := newCoreHarness(t, core, opts)
	h.core = core
	return h
}

// newCoreHarness is newHarness over core.
func newCoreHarness(t *testing.T, core Core, opts Options) *harness {
	t.Helper()
	opts.Logger = zerolog.Nop()
	srv := New(core, opts)
	ln := fasthttputil.NewInmemoryListener()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	tr := &http.Transport{
		DialContext:        func(context.Context, string, string) (net.Conn, error) { return ln.Dial() },
		DisableCompression: true,
	}
	h := &harness{t: t, srv: srv, ln: ln, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
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
	req, err := http.NewRequest(method, "http://nereid"+path, bytes.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header[headers[i]] = []string{headers[i+1]} // keep the spelling
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
	return result{status: resp.StatusCode, header: resp.Header, body: b}
}

// expect checks a response's status and exact body.
func (r result) expect(t *testing.T, status int, body string) {
	t.Helper()
	if r.status != status || string(r.body) != body {
		t.Errorf("got %d %s\nwant %d %s", r.status, r.body, status, body)
	}
}

// expectError checks the status and that the JSON error contains substr.
func (r result) expectError(t *testing.T, status int, substr string) {
	t.Helper()
	if r.status != status || !bytes.HasPrefix(r.body, []byte(`{"error":"`)) || !bytes.Contains(r.body, []byte(substr)) {
		t.Errorf("got %d %s\nwant %d with an error containing %q", r.status, r.body, status, substr)
	}
	if ct := r.header.Get("Content-Type"); ct != contentTypeJSON {
		t.Errorf("error Content-Type %q, want %q", ct, contentTypeJSON)
	}
}

// golden compares got with testdata/name, rewriting it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\ngot  %s\nwant %s", name, got, want)
	}
}

// binaryBody joins a JSON header and binary tensor data.
func binaryBody(header string, blobs ...[]byte) ([]byte, string) {
	b := []byte(header)
	for _, x := range blobs {
		b = append(b, x...)
	}
	return b, strconv.Itoa(len(header))
}

var errPlain = errors.New("plain failure")
