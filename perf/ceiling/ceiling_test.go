package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"strconv"
	"testing"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nereid-project/nereid/proto/inferencepb"
)

func served(t testing.TB) map[string]*model {
	t.Helper()
	ms, err := selectModels("simple,identity_fp32")
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func int32s(v ...int32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, uint32(x))
	}
	return b
}

func seq(n int, f func(i int) int32) []int32 {
	v := make([]int32, n)
	for i := range v {
		v[i] = f(i)
	}
	return v
}

// do runs one HTTP request through the handler.
func do(h *httpFront, method, uri string, hdrLen int, body []byte) *fasthttp.Response {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(uri)
	if hdrLen >= 0 {
		req.Header.Set(headerLength, strconv.Itoa(hdrLen))
	}
	req.SetBody(body)
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, nil, nil)
	h.handle(&ctx)
	var resp fasthttp.Response
	ctx.Response.CopyTo(&resp)
	return &resp
}

func TestHTTPBinarySimple(t *testing.T) {
	h := newHTTPFront(served(t))
	a, b := seq(32, func(i int) int32 { return int32(i) }), seq(32, func(i int) int32 { return int32(-3 * i) })
	hdr := `{"id":"7","inputs":[` +
		`{"name":"INPUT1","shape":[2,16],"datatype":"INT32","parameters":{"binary_data_size":128}},` +
		`{"name":"INPUT0","shape":[2,16],"datatype":"INT32","parameters":{"binary_data_size":128}}],` +
		`"outputs":[{"name":"OUTPUT1","parameters":{"binary_data":true}},{"name":"OUTPUT0"}]}`
	body := append(append([]byte(hdr), int32s(b...)...), int32s(a...)...)
	resp := do(h, "POST", "/v2/models/simple/versions/1/infer", len(hdr), body)
	if resp.StatusCode() != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
	}
	hl, err := strconv.Atoi(string(resp.Header.Peek(headerLength)))
	if err != nil {
		t.Fatalf("no %s header: %v", headerLength, err)
	}
	var got struct {
		ID      string `json:"id"`
		Outputs []struct {
			Name       string
			Shape      []int64
			Data       []int32
			Parameters map[string]int
		}
	}
	out := resp.Body()
	if err := json.Unmarshal(out[:hl], &got); err != nil {
		t.Fatalf("%v: %s", err, out[:hl])
	}
	if got.ID != "7" || len(got.Outputs) != 2 || got.Outputs[0].Name != "OUTPUT1" || got.Outputs[1].Name != "OUTPUT0" {
		t.Fatalf("response %s", out[:hl])
	}
	wantDiff := int32s(seq(32, func(i int) int32 { return int32(4 * i) })...)
	if got.Outputs[0].Parameters["binary_data_size"] != 128 || string(out[hl:]) != string(wantDiff) {
		t.Errorf("OUTPUT1 binary %v, want %v", out[hl:], wantDiff)
	}
	for i, v := range got.Outputs[1].Data {
		if v != int32(-2*i) {
			t.Fatalf("OUTPUT0 JSON %v", got.Outputs[1].Data)
		}
	}
}

func TestHTTPJSONIdentity(t *testing.T) {
	h := newHTTPFront(served(t))
	body := `{"inputs":[{"name":"INPUT0","shape":[1,4],"datatype":"FP32","data":[[1.5,-2,NaN,3e-3]]}],"parameters":{"binary_data_output":false}}`
	resp := do(h, "POST", "/v2/models/identity_fp32/infer", -1, []byte(body))
	if resp.StatusCode() != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
	}
	want := `{"model_name":"identity_fp32","model_version":"1","outputs":[{"name":"OUTPUT0","datatype":"FP32","shape":[1,4],"data":[1.5,-2,NaN,0.003]}]}`
	if string(resp.Body()) != want {
		t.Errorf("got  %s\nwant %s", resp.Body(), want)
	}
}

func TestHTTPMetadataAndConfig(t *testing.T) {
	h := newHTTPFront(served(t))
	for _, uri := range []string{"/v2", "/v2/models/simple", "/v2/models/simple/config", "/v2/models/identity_fp32/versions/1/config"} {
		resp := do(h, "GET", uri, -1, nil)
		if resp.StatusCode() != 200 || !json.Valid(resp.Body()) {
			t.Errorf("GET %s: %d %s", uri, resp.StatusCode(), resp.Body())
		}
	}
	var cfg struct {
		MaxBatchSize int `json:"max_batch_size"`
		Input        []struct{ Name string }
	}
	if err := json.Unmarshal(do(h, "GET", "/v2/models/simple/config", -1, nil).Body(), &cfg); err != nil || cfg.MaxBatchSize != 8 || len(cfg.Input) != 2 {
		t.Errorf("config %+v %v", cfg, err)
	}
}

func TestHTTPErrors(t *testing.T) {
	h := newHTTPFront(served(t))
	ok := `{"name":"INPUT0","shape":[1,16],"datatype":"INT32","data":` + string(must(json.Marshal(seq(16, func(int) int32 { return 1 })))) + `}`
	for _, tc := range []struct {
		uri, body string
		status    int
	}{
		{"/v2/models/nope/infer", `{}`, 404},
		{"/v2/models/simple/versions/2/infer", `{}`, 404},
		{"/v2/models/simple/infer", `{"inputs":[`, 400},
		{"/v2/models/simple/infer", `{"inputs":[` + ok + `]}`, 400},
		{"/v2/models/simple/infer", `{"inputs":[` + ok + `,` + ok + `]}`, 400},
		{"/v2/models/simple/infer", `{"inputs":[{"name":"INPUT0","shape":[9,16],"datatype":"INT32","data":[]},{"name":"INPUT1","shape":[9,16],"datatype":"INT32","data":[]}]}`, 400},
		{"/v2/models/identity_fp32/infer", `{"inputs":[{"name":"INPUT0","shape":[1,2],"datatype":"INT32","data":[1,2]}]}`, 400},
		{"/v2/models/identity_fp32/infer", `{"inputs":[{"name":"INPUT0","shape":[1,2],"datatype":"FP32","data":[1]}]}`, 400},
		{"/v2/models/identity_fp32/infer", `{"inputs":[{"name":"INPUT0","shape":[1,2],"datatype":"FP32","data":[1,2]}],"outputs":[{"name":"X"}]}`, 400},
		{"/v2/models/identity_fp32/infer", `{"inputs":[{"name":"INPUT0","shape":[1,2],"datatype":"FP32","data":[1,2]}]} x`, 400},
	} {
		resp := do(h, "POST", tc.uri, -1, []byte(tc.body))
		if resp.StatusCode() != tc.status || !json.Valid(resp.Body()) {
			t.Errorf("POST %s %s: %d %s, want %d", tc.uri, tc.body, resp.StatusCode(), resp.Body(), tc.status)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestGRPC(t *testing.T) {
	g := &grpcFront{models: served(t)}
	ctx := context.Background()
	cfg, err := g.ModelConfig(ctx, &inferencepb.ModelConfigRequest{Name: "simple"})
	if err != nil || cfg.Config.MaxBatchSize != 8 {
		t.Fatalf("ModelConfig %v %v", cfg, err)
	}
	in := func(name string) *inferencepb.ModelInferRequest_InferInputTensor {
		return &inferencepb.ModelInferRequest_InferInputTensor{Name: name, Datatype: "INT32", Shape: []int64{1, 16}}
	}
	resp, err := g.ModelInfer(ctx, &inferencepb.ModelInferRequest{
		ModelName: "simple", Id: "a",
		Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{in("INPUT0"), in("INPUT1")},
		RawInputContents: [][]byte{int32s(seq(16, func(i int) int32 { return int32(i) })...), int32s(seq(16, func(int) int32 { return 1 })...)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Id != "a" || len(resp.Outputs) != 2 || resp.Outputs[1].Name != "OUTPUT1" ||
		binary.LittleEndian.Uint32(resp.RawOutputContents[0][60:]) != 16 || int32(binary.LittleEndian.Uint32(resp.RawOutputContents[1])) != -1 {
		t.Errorf("response %v", resp)
	}

	typed := &inferencepb.ModelInferRequest_InferInputTensor{Name: "INPUT0", Datatype: "FP32", Shape: []int64{1, 2},
		Contents: &inferencepb.InferTensorContents{Fp32Contents: []float32{0.5, -1}}}
	resp, err = g.ModelInfer(ctx, &inferencepb.ModelInferRequest{ModelName: "identity_fp32", Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{typed}})
	if err != nil || math.Float32frombits(binary.LittleEndian.Uint32(resp.RawOutputContents[0][4:])) != -1 {
		t.Errorf("typed contents: %v %v", resp, err)
	}

	_, err = g.ModelInfer(ctx, &inferencepb.ModelInferRequest{ModelName: "simple", Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{in("INPUT0")}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("one input: %v", err)
	}
	if _, err = g.ModelMetadata(ctx, &inferencepb.ModelMetadataRequest{Name: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown model: %v", err)
	}
}

// FuzzInferJSON: the request reader never panics and whatever it accepts
// decodes or fails cleanly.
func FuzzInferJSON(f *testing.F) {
	f.Add([]byte(`{"id":"x","inputs":[{"name":"INPUT0","shape":[1,2],"datatype":"FP32","data":[[1,2]],"parameters":{"a":[1,{"b":null}]}}],"outputs":[{"name":"OUTPUT0","parameters":{"binary_data":true}}],"parameters":{"binary_data_output":true}}`))
	f.Add([]byte(`{"inputs":[{"name":"INPUT0","shape":[1,1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}` + "\x00\x00\x80\x3f"))
	f.Add([]byte(`{"a":"\"\\"}`))
	h := newHTTPFront(served(f))
	f.Fuzz(func(t *testing.T, body []byte) {
		var r jsonRequest
		if r.parse(body) == nil {
			for _, in := range r.inputs {
				s := scanner{b: in.data}
				s.appendData(nil, "FP32", 0)
			}
		}
		do(h, "POST", "/v2/models/identity_fp32/infer", -1, body)
	})
}
