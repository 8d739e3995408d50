package server

import (
	"context"
	"encoding/binary"
	"math"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"

	_ "github.com/nereid-project/nereid/backends/identity"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
)

// fakeModels serves fixed, already loaded versions.
type fakeModels struct {
	versions map[string]map[int64]*loadedModel
	allReady bool
}

func (f *fakeModels) Acquire(_ context.Context, name, version string) (*repository.Handle, error) {
	vs, ok := f.versions[name]
	if !ok {
		return nil, inference.NotFound("Request for unknown model: '%s' is not found", name)
	}
	var v int64
	if version == "" {
		for k := range vs {
			v = max(v, k)
		}
	} else {
		var err error
		if v, err = strconv.ParseInt(version, 10, 64); err != nil {
			return nil, inference.InvalidArg("bad version")
		}
	}
	lm, ok := vs[v]
	if !ok {
		return nil, inference.Unavailable("Request for unknown model: '%s' version %d is not at ready state", name, v)
	}
	return &repository.Handle{Name: name, Version: v, Config: lm.cfg, Servable: lm}, nil
}

func (f *fakeModels) ReadyVersions(name string) ([]int64, error) {
	var out []int64
	for v := range f.versions[name] {
		out = append(out, v)
	}
	return out, nil
}

func (f *fakeModels) Index(bool) []repository.IndexEntry {
	var out []repository.IndexEntry
	for n, vs := range f.versions {
		for v := range vs {
			out = append(out, repository.IndexEntry{Name: n, Version: strconv.FormatInt(v, 10), State: repository.StateReady})
		}
	}
	return out
}

func (f *fakeModels) Load(context.Context, string, repository.LoadOptions) error { return nil }
func (f *fakeModels) Unload(context.Context, string, bool) error                 { return nil }
func (f *fakeModels) AcquireOnDemand(ctx context.Context, name, version string) (*repository.Handle, error) {
	return f.Acquire(ctx, name, version)
}
func (f *fakeModels) RegisterRepository(string, map[string]string) error { return nil }
func (f *fakeModels) UnregisterRepository(string) error                  { return nil }
func (f *fakeModels) AllReady() bool                                     { return f.allReady }

const batchingConfig = `
name: "ident"
backend: "identity"
max_batch_size: 4
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 2 ] },
  { name: "INPUT1" data_type: TYPE_STRING dims: [ -1 ] optional: true }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 2 ] },
  { name: "OUTPUT1" data_type: TYPE_STRING dims: [ -1 ] }
]
instance_group [ { name: "ident" count: 2 kind: KIND_CPU } ]
`

func newTestServer(t *testing.T) *Server {
	t.Helper()
	cfg := &inferencepb.ModelConfig{}
	if err := prototext.Unmarshal([]byte(batchingConfig), cfg); err != nil {
		t.Fatal(err)
	}
	l := NewLoader(LoaderOptions{})
	if err := l.Complete(context.Background(), t.TempDir(), cfg, true); err != nil {
		t.Fatal(err)
	}
	s, err := l.LoadVersion(context.Background(), repository.VersionSpec{Name: "ident", Version: 3, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	models := &fakeModels{versions: map[string]map[int64]*loadedModel{"ident": {3: s.(*loadedModel)}}, allReady: true}
	return New(models, Options{StrictReadiness: true})
}

func int32s(v ...int32) []byte {
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, uint32(x))
	}
	return b
}

func TestInferIdentityAndStatistics(t *testing.T) {
	s := newTestServer(t)
	ctx := context.Background()
	req := &inference.Request{
		ID: "r1", ModelName: "ident",
		Inputs:  []inference.Tensor{{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{2, 2}, Data: int32s(1, 2, 3, 4)}},
		Outputs: []inference.RequestedOutput{{Name: "OUTPUT0"}},
	}
	resp, err := s.Infer(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ID != "r1" || resp.ModelName != "ident" || resp.ModelVersion != "3" || len(resp.Outputs) != 1 {
		t.Fatalf("response header %+v", resp)
	}
	if o := resp.Outputs[0]; o.Name != "OUTPUT0" || string(o.Data) != string(int32s(1, 2, 3, 4)) {
		t.Fatalf("output %+v", o)
	}
	// A request refused by validation is not counted at all, as in Triton:
	// it never reaches the scheduler.
	bad := &inference.Request{ModelName: "ident", Inputs: []inference.Tensor{{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{5, 2}, Data: make([]byte, 40)}}}
	if _, err := s.Infer(ctx, bad); inference.CodeOf(err) != inference.CodeInvalidArg {
		t.Fatalf("batch 5 > 4: %v", err)
	}
	st, err := s.ModelStatistics(ctx, "ident", "")
	if err != nil {
		t.Fatal(err)
	}
	ms := st.ModelStats[0]
	if ms.InferenceCount != 2 || ms.ExecutionCount != 1 || ms.InferenceStats.Success.Count != 1 || ms.InferenceStats.Fail.Count != 0 {
		t.Errorf("stats %v", ms)
	}
	is := ms.InferenceStats
	for name, d := range map[string]*inferencepb.StatisticDuration{
		"queue": is.Queue, "compute_input": is.ComputeInput, "compute_infer": is.ComputeInfer, "compute_output": is.ComputeOutput,
	} {
		if d.Count != 1 {
			t.Errorf("%s count %d, want the success count 1", name, d.Count)
		}
	}
	if r := ms.ResponseStats["0"]; r == nil || r.Success.Count != 1 || r.ComputeInfer.Count != 1 || r.ComputeOutput.Count != 1 {
		t.Errorf("response_stats %v", ms.ResponseStats)
	}
	if len(ms.BatchStats) != 1 || ms.BatchStats[0].BatchSize != 2 || ms.LastInference == 0 {
		t.Errorf("batch stats %v last %d", ms.BatchStats, ms.LastInference)
	}
}

func TestInferValidation(t *testing.T) {
	s := newTestServer(t)
	in0 := func(shape []int64, data []byte) inference.Tensor {
		return inference.Tensor{Name: "INPUT0", DataType: inference.Int32, Shape: shape, Data: data}
	}
	cases := []struct {
		name string
		req  inference.Request
		code inference.Code
		text string
	}{
		{"unknown model", inference.Request{ModelName: "nope"}, inference.CodeNotFound, "unknown model"},
		{"version not ready", inference.Request{ModelName: "ident", ModelVersion: "7"}, inference.CodeUnavailable, "not at ready state"},
		{"missing input", inference.Request{ModelName: "ident"}, inference.CodeInvalidArg, "expected 1 inputs but got 0"},
		{"unexpected input", inference.Request{ModelName: "ident", Inputs: []inference.Tensor{in0([]int64{1, 2}, int32s(1, 2)), {Name: "X", DataType: inference.Int32, Shape: []int64{1}, Data: int32s(1)}}}, inference.CodeInvalidArg, "unexpected inference input 'X'"},
		{"wrong type", inference.Request{ModelName: "ident", Inputs: []inference.Tensor{{Name: "INPUT0", DataType: inference.FP32, Shape: []int64{1, 2}, Data: make([]byte, 8)}}}, inference.CodeInvalidArg, "data-type is 'FP32'"},
		{"wrong shape", inference.Request{ModelName: "ident", Inputs: []inference.Tensor{in0([]int64{1, 3}, int32s(1, 2, 3))}}, inference.CodeInvalidArg, "Expected [-1,2], got [1,3]"},
		{"no batch dim", inference.Request{ModelName: "ident", Inputs: []inference.Tensor{in0(nil, int32s(1))}}, inference.CodeInvalidArg, "no batch dimension"},
		{"zero batch", inference.Request{ModelName: "ident", Inputs: []inference.Tensor{in0([]int64{0, 2}, nil)}}, inference.CodeInvalidArg, "batch-size must be <= 4"},
		{"data size", inference.Request{ModelName: "ident", Inputs: []inference.Tensor{in0([]int64{1, 2}, int32s(1))}}, inference.CodeInvalidArg, "unexpected total byte size"},
		{"duplicate input", inference.Request{ModelName: "ident", Inputs: []inference.Tensor{in0([]int64{1, 2}, int32s(1, 2)), in0([]int64{1, 2}, int32s(1, 2))}}, inference.CodeInvalidArg, "more than once"},
		{"unknown output", inference.Request{ModelName: "ident", Inputs: []inference.Tensor{in0([]int64{1, 2}, int32s(1, 2))}, Outputs: []inference.RequestedOutput{{Name: "NOPE"}}}, inference.CodeInvalidArg, "unexpected inference output 'NOPE'"},
		{"batch mismatch", inference.Request{ModelName: "ident", Inputs: []inference.Tensor{in0([]int64{1, 2}, int32s(1, 2)), {Name: "INPUT1", DataType: inference.Bytes, Shape: []int64{2, 1}, Data: append(inference.AppendBytesElement(nil, nil), inference.AppendBytesElement(nil, nil)...)}}}, inference.CodeInvalidArg, "batch size 2 but other inputs have 1"},
		{"overflowing shape", inference.Request{ModelName: "ident", Inputs: []inference.Tensor{in0([]int64{1, math.MaxInt64}, nil)}}, inference.CodeInvalidArg, "Expected"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := c.req
			_, err := s.Infer(context.Background(), &req)
			if inference.CodeOf(err) != c.code || err == nil || !strings.Contains(err.Error(), c.text) {
				t.Errorf("got %v (%v), want %v containing %q", err, inference.CodeOf(err), c.code, c.text)
			}
		})
	}
}

func TestMetadataAndReadiness(t *testing.T) {
	s := newTestServer(t)
	md, err := s.ModelMetadata(context.Background(), "ident", "")
	if err != nil {
		t.Fatal(err)
	}
	if md.Platform != "identity" || len(md.Versions) != 1 || md.Versions[0] != "3" {
		t.Errorf("metadata %v", md)
	}
	if got := md.Inputs[0].Shape; len(got) != 2 || got[0] != -1 || got[1] != 2 {
		t.Errorf("input shape %v, want [-1 2]", got)
	}
	if md.Inputs[1].Datatype != "BYTES" {
		t.Errorf("TYPE_STRING should be BYTES, got %s", md.Inputs[1].Datatype)
	}
	if !s.Ready() || !s.Live() {
		t.Error("want live and ready")
	}
	s.BeginShutdown()
	if s.Ready() || !s.Live() {
		t.Error("draining server must be live but not ready")
	}
	if ok, err := s.ModelReady(context.Background(), "ident", "3"); !ok || err != nil {
		t.Errorf("ModelReady = %v, %v", ok, err)
	}
}

func TestLoaderRejectsUnknownBackend(t *testing.T) {
	l := NewLoader(LoaderOptions{})
	for _, c := range []struct {
		cfg  *inferencepb.ModelConfig
		code inference.Code
	}{
		{&inferencepb.ModelConfig{Name: "m", Backend: "tensorrt_llm"}, inference.CodeUnsupported},
		{&inferencepb.ModelConfig{Name: "m", Platform: "caffe2"}, inference.CodeUnsupported},
		{&inferencepb.ModelConfig{Name: "m"}, inference.CodeInvalidArg},
	} {
		err := l.Complete(context.Background(), t.TempDir(), c.cfg, true)
		if inference.CodeOf(err) != c.code {
			t.Errorf("%v: %v, want %v", c.cfg, err, c.code)
		}
	}
}

func TestOptionalInputDoesNotStandInForRequired(t *testing.T) {
	s := newTestServer(t)
	// INPUT1 is optional; sending it alone must still fail for INPUT0.
	only := &inference.Request{ModelName: "ident", Inputs: []inference.Tensor{{
		Name: "INPUT1", DataType: inference.Bytes, Shape: []int64{1, 1}, Data: inference.AppendBytesElement(nil, []byte("x")),
	}}}
	_, err := s.Infer(context.Background(), only)
	if inference.CodeOf(err) != inference.CodeInvalidArg || !strings.Contains(err.Error(), "Missing required input(s) ['INPUT0']") {
		t.Fatalf("got %v", err)
	}
}
