package httpfront

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
)

func TestParseRoute(t *testing.T) {
	tests := []struct {
		path string
		want route
	}{
		{"/v2", route{kind: routeServerMetadata}},
		{"/v2/", route{}},
		{"/v2/health/live", route{kind: routeHealthLive}},
		{"/v2/health/ready", route{kind: routeHealthReady}},
		{"/v2/health/ready/", route{}},
		{"/v2/health", route{}},
		{"/v2/models/stats", route{kind: routeStatsAll}},
		{"/v2/models/stats/ready", route{kind: routeModelReady, model: "stats"}},
		{"/v2/models/m", route{kind: routeModelMetadata, model: "m"}},
		{"/v2/models/m/versions/3", route{kind: routeModelMetadata, model: "m", version: "3"}},
		{"/v2/models/m/versions/x", route{}},
		{"/v2/models/m/versions", route{}},
		{"/v2/models/m/versions/3/infer", route{kind: routeModelInfer, model: "m", version: "3"}},
		{"/v2/models/m/infer", route{kind: routeModelInfer, model: "m"}},
		{"/v2/models/m/ready", route{kind: routeModelReady, model: "m"}},
		{"/v2/models/m/config", route{kind: routeModelConfig, model: "m"}},
		{"/v2/models/m/stats", route{kind: routeModelStats, model: "m"}},
		{"/v2/models/m/versions/12/stats", route{kind: routeModelStats, model: "m", version: "12"}},
		{"/v2/models/m/generate", route{kind: routeModelGenerate, model: "m"}},
		{"/v2/models/m/generate_stream", route{kind: routeModelGenerateStream, model: "m"}},
		{"/v2/models/m/trace/setting", route{kind: routeModelTrace, model: "m"}},
		{"/v2/models/m/versions/1/trace/setting", route{}},
		{"/v2/models/m/unknown", route{}},
		{"/v2/models//infer", route{}},
		{"/v2/models/my%20model/infer", route{kind: routeModelInfer, model: "my model"}},
		{"/v2/models/a%2Fb/ready", route{kind: routeModelReady, model: "a/b"}},
		{"/v2/models/bad%zzname", route{kind: routeModelMetadata, model: "bad%zzname"}},
		{"/v2/repository/index", route{kind: routeRepoIndex}},
		{"/v2/repository/r1/index", route{kind: routeRepoIndex, repo: "r1"}},
		{"/v2/repository/models/m/load", route{kind: routeRepoLoad, model: "m"}},
		{"/v2/repository/models/m/unload", route{kind: routeRepoUnload, model: "m"}},
		{"/v2/repository/r1/models/m/load", route{kind: routeRepoLoad, model: "m", repo: "r1"}},
		{"/v2/repository/models/m/reload", route{}},
		{"/v2/systemsharedmemory/status", route{kind: routeSystemShm, action: "status"}},
		{"/v2/systemsharedmemory/region/r/register", route{kind: routeSystemShm, region: "r", action: "register"}},
		{"/v2/cudasharedmemory/region/r/unregister", route{kind: routeCudaShm, region: "r", action: "unregister"}},
		{"/v2/cudasharedmemory/region/r", route{}},
		{"/v2/trace/setting", route{kind: routeTrace}},
		{"/v2/logging", route{kind: routeLogging}},
		{"/v1/models", route{}},
		{"", route{}},
		{"/v2/a/b/c/d/e/f/g/h/i", route{}},
	}
	for _, tc := range tests {
		if got := parseRoute([]byte(tc.path)); got != tc.want {
			t.Errorf("parseRoute(%q) = %+v, want %+v", tc.path, got, tc.want)
		}
	}
}

func TestHealth(t *testing.T) {
	h := newHarness(t, Options{})
	h.do("GET", "/v2/health/live", nil).expect(t, 200, "")
	h.do("GET", "/v2/health/ready", nil).expect(t, 200, "")
	h.core.live, h.core.ready = false, false
	h.do("GET", "/v2/health/live", nil).expect(t, 400, "")
	h.do("GET", "/v2/health/ready", nil).expect(t, 400, "")
	h.do("POST", "/v2/health/live", nil).expect(t, 405, `{"error":"Method Not Allowed"}`)
}

func TestServerMetadata(t *testing.T) {
	h := newHarness(t, Options{})
	r := h.do("GET", "/v2", nil)
	r.expect(t, 200, `{"name":"nereid","version":"0.1.0","extensions":["model_repository","binary_tensor_data","statistics"]}`)
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	h.do("PUT", "/v2", nil).expect(t, 405, `{"error":"Method Not Allowed"}`)
}

func TestNotFound(t *testing.T) {
	h := newHarness(t, Options{})
	for _, p := range []string{"/", "/v2/", "/v2/nothing", "/v2/models/simple/versions/x", "/v2/health/live/", "/v2/models/simple/versions/1/trace/setting"} {
		h.do("GET", p, nil).expect(t, 404, `{"error":"Not Found"}`)
	}
}

func TestModelMetadata(t *testing.T) {
	h := newHarness(t, Options{})
	h.do("GET", "/v2/models/simple", nil).expect(t, 200,
		`{"name":"simple","versions":["1","3"],"platform":"onnxruntime_onnx","inputs":[{"name":"INPUT0","datatype":"INT32","shape":[-1,16]},{"name":"INPUT1","datatype":"INT32","shape":[-1,16]}],"outputs":[{"name":"OUTPUT0","datatype":"INT32","shape":[-1,16]},{"name":"OUTPUT1","datatype":"INT32","shape":[-1,16]}]}`)
	h.do("GET", "/v2/models/simple/versions/007", nil)
	if h.core.lastVersion != "7" {
		t.Errorf("version passed to core %q, want 7", h.core.lastVersion)
	}
	h.do("GET", "/v2/models/nope", nil).expect(t, 404, `{"error":"Request for unknown model: 'nope' is not found"}`)
	h.do("GET", "/v2/models/my%20model", nil).expect(t, 200,
		`{"name":"my model","versions":["1","3"],"platform":"identity","inputs":[],"outputs":[]}`)
	h.do("GET", "/v2/models/simple/versions/99999999999999999999", nil).expectError(t, 400, "failed to get model version")
	h.do("POST", "/v2/models/simple", nil).expect(t, 405, `{"error":"Method Not Allowed"}`)
}

func TestModelReady(t *testing.T) {
	h := newHarness(t, Options{})
	h.do("GET", "/v2/models/simple/ready", nil).expect(t, 200, "")
	h.do("GET", "/v2/models/simple/versions/1/ready", nil).expect(t, 200, "")
	h.core.notRdy["simple"] = true
	h.do("GET", "/v2/models/simple/ready", nil).expect(t, 400, `{"error":"Model version not ready"}`)
	// Unknown, unloaded or not at ready state: "not ready", as Triton
	// answers, not the core's error.
	h.do("GET", "/v2/models/nope/ready", nil).expect(t, 400, `{"error":"Model version not ready"}`)
	h.core.errs["ready"] = inference.Unavailable("model 'simple' version 2 is not at ready state")
	h.do("GET", "/v2/models/simple/versions/2/ready", nil).expect(t, 400, `{"error":"Model version not ready"}`)
	h.core.errs["ready"] = inference.Internal("broken")
	h.do("GET", "/v2/models/simple/ready", nil).expect(t, 500, `{"error":"broken"}`)
	delete(h.core.errs, "ready")
	h.do("POST", "/v2/models/simple/ready", nil).expect(t, 405, `{"error":"Method Not Allowed"}`)
}

func TestModelConfigJSON(t *testing.T) {
	h := newHarness(t, Options{})
	cfg := &inferencepb.ModelConfig{
		Name: "big", Backend: "onnxruntime", MaxBatchSize: 8,
		VersionPolicy: &inferencepb.ModelVersionPolicy{PolicyChoice: &inferencepb.ModelVersionPolicy_Specific_{
			Specific: &inferencepb.ModelVersionPolicy_Specific{Versions: []int64{1, 9007199254740993}}}},
		Input: []*inferencepb.ModelInput{{
			Name: "IN", DataType: inferencepb.DataType_TYPE_FP32, Format: inferencepb.ModelInput_FORMAT_NCHW,
			Dims: []int64{3, -1, 224}, Reshape: &inferencepb.ModelTensorReshape{Shape: []int64{1, 3}},
		}},
		Output: []*inferencepb.ModelOutput{{Name: "OUT", DataType: inferencepb.DataType_TYPE_STRING, Dims: []int64{1}}},
		SchedulingChoice: &inferencepb.ModelConfig_DynamicBatching{DynamicBatching: &inferencepb.ModelDynamicBatching{
			PreferredBatchSize:        []int32{4, 8},
			MaxQueueDelayMicroseconds: 18446744073709551615,
			PriorityLevels:            2,
			PriorityQueuePolicy: map[uint64]*inferencepb.ModelQueuePolicy{
				10: {MaxQueueSize: 3},
				2:  {TimeoutAction: inferencepb.ModelQueuePolicy_DELAY, DefaultTimeoutMicroseconds: 100},
			},
		}},
		InstanceGroup: []*inferencepb.ModelInstanceGroup{{Name: "g", Kind: inferencepb.ModelInstanceGroup_KIND_CPU, Count: 2}},
		Parameters:    map[string]*inferencepb.ModelParameter{"b": {StringValue: "2"}, "a": {StringValue: "1\"quoted\""}},
		ModelWarmup: []*inferencepb.ModelWarmup{{Name: "w", BatchSize: 1, Inputs: map[string]*inferencepb.ModelWarmup_Input{
			"IN": {DataType: inferencepb.DataType_TYPE_FP32, Dims: []int64{3, 4, 224}, InputDataType: &inferencepb.ModelWarmup_Input_ZeroData{ZeroData: true}},
		}}},
		ModelMetrics: &inferencepb.ModelMetrics{MetricControl: []*inferencepb.ModelMetrics_MetricControl{{
			MetricIdentifier: &inferencepb.ModelMetrics_MetricControl_MetricIdentifier{Family: "nv_inference_first_response_histogram_ms"},
			MetricOptions: &inferencepb.ModelMetrics_MetricControl_HistogramOptions_{HistogramOptions: &inferencepb.ModelMetrics_MetricControl_HistogramOptions{
				Buckets: []float64{0.5, 1, 2.5e10},
			}},
		}}},
	}
	h.core.models["big"] = cfg
	r := h.do("GET", "/v2/models/big/config", nil)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	golden(t, "config_big.json", r.body)

	// Structural checks that the golden file could hide.
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("config is not JSON: %v", err)
	}
	for _, key := range []string{"platform", "runtime", "batch_input", "batch_output", "cc_model_filenames", "metric_tags", "default_model_filename"} {
		if _, ok := m[key]; !ok {
			t.Errorf("default field %q missing", key)
		}
	}
	for _, key := range []string{"optimization", "sequence_batching", "ensemble_scheduling", "model_transaction_policy"} {
		if _, ok := m[key]; ok {
			t.Errorf("unset message field %q printed", key)
		}
	}
	if got := fmt.Sprint(m["input"].([]any)[0].(map[string]any)["dims"]); got != "[3 -1 224]" {
		t.Errorf("dims %s, want numbers", got)
	}

	small := h.do("GET", "/v2/models/raw_fp32/config", nil)
	small.expect(t, 200, `{"name":"raw_fp32","platform":"","backend":"identity","runtime":"","max_batch_size":0,`+
		`"input":[{"name":"INPUT0","data_type":"TYPE_FP32","format":"FORMAT_NONE","dims":[-1],"is_shape_tensor":false,"allow_ragged_batch":false,"optional":false,"is_non_linear_format_io":false}],`+
		`"output":[{"name":"OUTPUT0","data_type":"TYPE_FP32","dims":[-1],"label_filename":"","is_shape_tensor":false,"is_non_linear_format_io":false}],`+
		`"batch_input":[],"batch_output":[],"instance_group":[],"default_model_filename":"","cc_model_filenames":{},"metric_tags":{},"parameters":{},"model_warmup":[]}`)
	h.do("GET", "/v2/models/nope/config", nil).expectError(t, 404, "unknown model")
}

func TestModelStatistics(t *testing.T) {
	h := newHarness(t, Options{})
	h.core.stats = &inferencepb.ModelStatisticsResponse{ModelStats: []*inferencepb.ModelStatistics{
		{
			Name: "simple", Version: "1", LastInference: 1700000000123, InferenceCount: 18446744073709551615, ExecutionCount: 7,
			InferenceStats: &inferencepb.InferStatistics{
				Success: &inferencepb.StatisticDuration{Count: 7, Ns: 123456789},
				Queue:   &inferencepb.StatisticDuration{Count: 7, Ns: 1000},
			},
			BatchStats: []*inferencepb.InferBatchStatistics{{
				BatchSize: 1, ComputeInput: &inferencepb.StatisticDuration{Count: 7, Ns: 10},
			}},
			MemoryUsage: []*inferencepb.MemoryUsage{{Type: "GPU", Id: 0, ByteSize: 1 << 40}},
			ResponseStats: map[string]*inferencepb.InferResponseStatistics{
				"10": {Success: &inferencepb.StatisticDuration{Count: 1, Ns: 2}},
				"2":  {Fail: &inferencepb.StatisticDuration{Count: 3, Ns: 4}},
			},
		},
		{Name: "empty"},
	}}
	r := h.do("GET", "/v2/models/stats", nil)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	golden(t, "stats_all.json", r.body)
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("stats is not JSON: %v", err)
	}
	h.do("GET", "/v2/models/simple/versions/1/stats", nil)
	if h.core.lastVersion != "1" {
		t.Errorf("stats version %q", h.core.lastVersion)
	}
	h.do("GET", "/v2/models/nope/stats", nil).expectError(t, 404, "unknown model")
	h.do("POST", "/v2/models/stats", nil).expect(t, 405, `{"error":"Method Not Allowed"}`)
}

func TestRepositoryIndex(t *testing.T) {
	h := newHarness(t, Options{})
	h.core.index = []repository.IndexEntry{
		{Name: "a", Version: "1", State: repository.StateReady},
		{Name: "b", Version: "1", State: repository.StateUnavailable, Reason: "unloaded"},
		{Name: "never"},
	}
	want := `[{"name":"a","version":"1","state":"READY"},{"name":"b","version":"1","state":"UNAVAILABLE","reason":"unloaded"},{"name":"never"}]`
	h.do("POST", "/v2/repository/index", nil).expect(t, 200, want)
	if h.core.indexReady {
		t.Error("readyOnly without a body")
	}
	h.do("POST", "/v2/repository/index", []byte(`{"ready":true}`)).expect(t, 200, want)
	if !h.core.indexReady {
		t.Error("ready:true not passed")
	}
	h.do("POST", "/v2/repository/myrepo/index", []byte(` {"ready": false, "other": [1]} `)).expect(t, 200, want)
	h.do("POST", "/v2/repository/index", []byte(`{"ready":"yes"}`)).expectError(t, 400, "Unable to parse 'ready'")
	h.do("POST", "/v2/repository/index", []byte(`{"ready":`)).expectError(t, 400, "failed to parse the request JSON buffer")
	h.do("GET", "/v2/repository/index", nil).expect(t, 405, `{"error":"Method Not Allowed"}`)
	h.core.index = nil
	h.do("POST", "/v2/repository/index", nil).expect(t, 200, `[]`)
}

func TestRepositoryLoadUnload(t *testing.T) {
	h := newHarness(t, Options{})
	h.do("POST", "/v2/repository/models/simple/load", nil).expect(t, 200, "")
	body := fmt.Sprintf(`{"parameters":{"config":"{\"backend\":\"identity\"}","file:1/model.onnx":%q}}`,
		base64.StdEncoding.EncodeToString([]byte{0, 1, 2, 255}))
	h.do("POST", "/v2/repository/models/my%20model/load", []byte(body)).expect(t, 200, "")
	if len(h.core.loads) != 2 {
		t.Fatalf("loads %+v", h.core.loads)
	}
	got := h.core.loads[1]
	if got.name != "my model" || got.opts.Config != `{"backend":"identity"}` || string(got.opts.Files["1/model.onnx"]) != "\x00\x01\x02\xff" {
		t.Errorf("load call %+v", got)
	}
	h.do("POST", "/v2/repository/models/simple/load", []byte(`{"parameters":{"file:1/x":"!!!"}}`)).expectError(t, 400, "unable to decode 'file:1/x'")
	h.do("POST", "/v2/repository/models/simple/load", []byte(`{"parameters":{"config":5}}`)).expectError(t, 400, "must be a string")
	h.do("POST", "/v2/repository/models/simple/load", []byte(`{"parameters":{"other":"x"}}`)).expectError(t, 400, "unrecognized load parameter 'other'")
	h.do("POST", "/v2/repository/models/simple/load", []byte(`nope`)).expectError(t, 400, "failed to parse the request JSON buffer")
	h.do("POST", "/v2/repository/r/models/simple/load", nil).expect(t, 501, `{"error":"'repository_name' specification is not supported"}`)
	h.do("GET", "/v2/repository/models/simple/load", nil).expect(t, 405, `{"error":"Method Not Allowed"}`)
	h.core.errs["load"] = inference.Unavailable("explicit model load / unload is not allowed if polling is enabled")
	h.do("POST", "/v2/repository/models/simple/load", nil).expect(t, 503, `{"error":"explicit model load / unload is not allowed if polling is enabled"}`)
	h.core.errs["load"] = inference.Internal("failed to load 'simple'")
	h.do("POST", "/v2/repository/models/simple/load", nil).expect(t, 500, `{"error":"failed to load 'simple'"}`)

	h.do("POST", "/v2/repository/models/simple/unload", nil).expect(t, 200, "")
	h.do("POST", "/v2/repository/models/simple/unload", []byte(`{"parameters":{"unload_dependents":true}}`)).expect(t, 200, "")
	if len(h.core.unloads) != 2 || h.core.unloads[0].dependents || !h.core.unloads[1].dependents {
		t.Errorf("unloads %+v", h.core.unloads)
	}
	h.do("POST", "/v2/repository/models/simple/unload", []byte(`{"parameters":{"unload_dependents":1}}`)).expectError(t, 400, "Unable to parse 'unload_dependents'")
	h.do("POST", "/v2/repository/r/models/simple/unload", nil).expect(t, 501, `{"error":"'repository_name' specification is not supported"}`)
}

func TestSharedMemoryTraceLogging(t *testing.T) {
	h := newHarness(t, Options{})
	// Shared memory: sharedmem_test.go.
	// Without a tracer or log controls, Triton built without them answers 503.
	h.do("GET", "/v2/trace/setting", nil).expect(t, 503, `{"error":"the server does not support tracing"}`)
	h.do("POST", "/v2/models/simple/trace/setting", []byte(`{}`)).expect(t, 503, `{"error":"the server does not support tracing"}`)
	h.do("GET", "/v2/logging", nil).expect(t, 503, `{"error":"the server does not support dynamic logging"}`)
	h.do("DELETE", "/v2/logging", nil).expect(t, 405, `{"error":"Method Not Allowed"}`)
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		err    error
		status int
	}{
		{inference.Internal("x"), 500},
		{inference.NotFound("x"), 404},
		{inference.Unavailable("x"), 503},
		{inference.Unsupported("x"), 501},
		{inference.InvalidArg("x"), 400},
		{inference.Errorf(inference.CodeAlreadyExists, "x"), 400},
		{inference.Errorf(inference.CodeCancelled, "x"), 400},
		{inference.Errorf(inference.CodeUnknown, "x"), 400},
		{fmt.Errorf("wrapped: %w", inference.NotFound("x")), 404},
		{errPlain, 500},
	}
	h := newHarness(t, Options{})
	for _, tc := range tests {
		if got := httpStatus(tc.err); got != tc.status {
			t.Errorf("httpStatus(%v) = %d, want %d", tc.err, got, tc.status)
		}
		h.core.errs["infer"] = tc.err
		r := h.do("POST", "/v2/models/any/infer", []byte(`{"inputs":[]}`))
		r.expect(t, tc.status, fmt.Sprintf(`{"error":%q}`, tc.err.Error()))
	}
}

func TestPanicIsInternalError(t *testing.T) {
	h := newHarness(t, Options{})
	h.core.inferFn = func(context.Context, *inference.Request) (*inference.Response, error) { panic("boom") }
	h.do("POST", "/v2/models/any/infer", []byte(`{"inputs":[]}`)).expect(t, 500, `{"error":"internal error: boom"}`)
	h.do("GET", "/v2/health/live", nil).expect(t, 200, "")
}

func TestTransportErrors(t *testing.T) {
	h := newHarness(t, Options{})
	conn, err := h.ln.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	huge := strings.Repeat("x", 20<<10)
	if _, err := io.WriteString(conn, "GET /v2 HTTP/1.1\r\nhost: x\r\nx-big: "+huge+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(conn)
	if !strings.HasPrefix(string(got), "HTTP/1.1 431") || !strings.Contains(string(got), `{"error":"request header too large"}`) {
		t.Errorf("oversized header: %s", got)
	}
}

// TestOversizedBodyOverTCP sends a body far over MaxInputSize on a real
// socket: the client must read the 400, not a connection reset.
func TestOversizedBodyOverTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no loopback TCP: %v", err)
	}
	srv := New(newFakeCore(), Options{MaxInputSize: 1 << 10, Logger: zerolog.Nop()})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := strings.Repeat("x", 8<<20)
	go func() {
		_, _ = io.WriteString(conn, "POST /v2/models/any/infer HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
	}()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("reading the answer: %v (got %q)", err, got)
	}
	if !strings.HasPrefix(string(got), "HTTP/1.1 400") || !strings.Contains(string(got), "exceeds the maximum allowed value of 1024 bytes") {
		t.Errorf("answer: %s", got)
	}
}
