package asyncinfer

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeCore serves identity models: each copies INPUTn to OUTPUTn. Infer
// records the order of requests by their id, and while gate is set waits
// for it to be closed (or the context to end).
type fakeCore struct {
	mu      sync.Mutex
	models  map[string]*inferencepb.ModelConfig
	index   []repository.IndexEntry // models in the repositories, loaded or not
	gate    chan struct{}
	failFn  func(*inference.Request) error
	order   []string // request ids, in the order Infer started them
	running map[string]int
	peak    map[string]int // most requests of a model running at once
	started chan string    // when set, gets each request id as Infer starts it
}

func newFakeCore() *fakeCore {
	cfg := func(name string, batch int32, decoupled bool) *inferencepb.ModelConfig {
		c := &inferencepb.ModelConfig{
			Name: name, Backend: "identity", MaxBatchSize: batch,
			Input:  []*inferencepb.ModelInput{{Name: "INPUT0", DataType: inferencepb.DataType_TYPE_FP32, Dims: []int64{-1}}},
			Output: []*inferencepb.ModelOutput{{Name: "OUTPUT0", DataType: inferencepb.DataType_TYPE_FP32, Dims: []int64{-1}}},
		}
		if decoupled {
			c.ModelTransactionPolicy = &inferencepb.ModelTransactionPolicy{Decoupled: true}
		}
		return c
	}
	return &fakeCore{
		models: map[string]*inferencepb.ModelConfig{
			"ident": cfg("ident", 8, false), "other": cfg("other", 0, false), "stream": cfg("stream", 0, true),
		},
		running: map[string]int{}, peak: map[string]int{},
	}
}

func (f *fakeCore) ModelConfig(_ context.Context, name, _ string) (*inferencepb.ModelConfig, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.models[name]; ok {
		return c, nil
	}
	return nil, inference.NotFound("Request for unknown model: '%s' is not found", name)
}

func (f *fakeCore) RepositoryIndex(context.Context, bool) ([]repository.IndexEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]repository.IndexEntry(nil), f.index...), nil
}

func (f *fakeCore) Infer(ctx context.Context, req *inference.Request) (*inference.Response, error) {
	f.mu.Lock()
	if _, ok := f.models[req.ModelName]; !ok {
		f.mu.Unlock()
		return nil, inference.NotFound("Request for unknown model: '%s' is not found", req.ModelName)
	}
	f.order = append(f.order, req.ID)
	f.running[req.ModelName]++
	f.peak[req.ModelName] = max(f.peak[req.ModelName], f.running[req.ModelName])
	gate, failFn, started := f.gate, f.failFn, f.started
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running[req.ModelName]--
		f.mu.Unlock()
	}()
	if started != nil {
		started <- req.ID
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, inference.Errorf(inference.CodeCancelled, "cancelled: %v", ctx.Err())
		}
	}
	if failFn != nil {
		if err := failFn(req); err != nil {
			return nil, err
		}
	}
	resp := &inference.Response{ID: req.ID, ModelName: req.ModelName, ModelVersion: "1"}
	for _, in := range req.Inputs {
		resp.Outputs = append(resp.Outputs, inference.Tensor{
			Name: strings.Replace(in.Name, "INPUT", "OUTPUT", 1), DataType: in.DataType,
			Shape: append([]int64(nil), in.Shape...), Data: bytes.Clone(in.Data),
		})
	}
	return resp, nil
}

func (f *fakeCore) setGate(g chan struct{}) {
	f.mu.Lock()
	f.gate = g
	f.mu.Unlock()
}

func (f *fakeCore) ran() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.order...)
}

// newService opens a service on dir with test defaults.
func newService(t *testing.T, core Core, dir string, edit func(*Options)) *Service {
	t.Helper()
	opts := Options{Dir: dir, Logger: zerolog.Nop()}
	if edit != nil {
		edit(&opts)
	}
	s, err := New(core, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func shutdown(t *testing.T, s *Service) {
	t.Helper()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// call runs one request through the handler.
func call(s *Service, method, path string, body []byte, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	return w
}

// jsonBody is a v2 request for the ident model carrying values as FP32.
func jsonBody(id string, values ...float32) []byte {
	b, _ := json.Marshal(map[string]any{
		"id":     id,
		"inputs": []any{map[string]any{"name": "INPUT0", "datatype": "FP32", "shape": []int{1, len(values)}, "data": values}},
	})
	return b
}

// binaryBody is the same request with the tensor as binary data; it
// returns the body and the length of its JSON part.
func binaryBody(id string, values ...float32) ([]byte, int) {
	hdr, _ := json.Marshal(map[string]any{
		"id": id,
		"inputs": []any{map[string]any{"name": "INPUT0", "datatype": "FP32", "shape": []int{1, len(values)},
			"parameters": map[string]any{"binary_data_size": 4 * len(values)}}},
		"outputs": []any{map[string]any{"name": "OUTPUT0", "parameters": map[string]any{"binary_data": true}}},
	})
	body := append([]byte(nil), hdr...)
	for _, v := range values {
		body = binary.LittleEndian.AppendUint32(body, math.Float32bits(v))
	}
	return body, len(hdr)
}

// submitted is the 202 answer of a submission.
type submitted struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	ResultURL string `json:"result_url"`
}

func submit(t *testing.T, s *Service, model string, body []byte, header map[string]string) submitted {
	t.Helper()
	w := call(s, http.MethodPost, "/v2/models/"+model+"/infer", body, header)
	if w.Code != http.StatusAccepted {
		t.Fatalf("submit to %s: %d %s", model, w.Code, w.Body)
	}
	var sub submitted
	if err := json.Unmarshal(w.Body.Bytes(), &sub); err != nil {
		t.Fatal(err)
	}
	if sub.Status != "pending" || !validID(sub.ID) || sub.ResultURL != "http://example.com/v2/async/results/"+sub.ID ||
		w.Header().Get("Location") != sub.ResultURL {
		t.Fatalf("submit answer %+v, Location %q", sub, w.Header().Get("Location"))
	}
	return sub
}

// statusOf reads a request's status object.
func statusOf(t *testing.T, s *Service, id string) map[string]any {
	t.Helper()
	w := call(s, http.MethodGet, requestsPath+id, nil, nil)
	if w.Code != http.StatusOK {
		t.Fatalf("status of %s: %d %s", id, w.Code, w.Body)
	}
	var st map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// resultValues decodes the FP32 OUTPUT0 of a JSON result.
func resultValues(t *testing.T, body []byte) []float32 {
	t.Helper()
	var resp struct {
		Outputs []struct {
			Name string    `json:"name"`
			Data []float32 `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(body, &resp); err != nil || len(resp.Outputs) != 1 {
		t.Fatalf("result %s: %v", body, err)
	}
	return resp.Outputs[0].Data
}
