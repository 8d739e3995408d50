package identity

import (
	"context"
	"testing"
	"time"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/backends/backendtest"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

func spec(cfg *inferencepb.ModelConfig) backends.ModelSpec {
	return backends.ModelSpec{Name: cfg.GetName(), Config: cfg}
}

func tensorCfg(name string, dt inferencepb.DataType) *inferencepb.ModelInput {
	return &inferencepb.ModelInput{Name: name, DataType: dt, Dims: []int64{-1}}
}

func outCfg(name string, dt inferencepb.DataType) *inferencepb.ModelOutput {
	return &inferencepb.ModelOutput{Name: name, DataType: dt, Dims: []int64{-1}}
}

func TestRegistered(t *testing.T) {
	if b, ok := backends.Lookup(Name); !ok || b == nil {
		t.Fatal("identity backend not registered")
	}
}

func TestCopiesEveryDataType(t *testing.T) {
	cfg := &inferencepb.ModelConfig{Name: "all"}
	types := []inferencepb.DataType{
		inferencepb.DataType_TYPE_BOOL, inferencepb.DataType_TYPE_UINT8, inferencepb.DataType_TYPE_INT64,
		inferencepb.DataType_TYPE_FP16, inferencepb.DataType_TYPE_BF16, inferencepb.DataType_TYPE_FP64,
		inferencepb.DataType_TYPE_STRING,
	}
	req := &inference.Request{}
	for i, dt := range types {
		n := string(rune('0' + i))
		cfg.Input = append(cfg.Input, tensorCfg("INPUT"+n, dt))
		cfg.Output = append(cfg.Output, outCfg("OUTPUT"+n, dt))
		d := inference.DataType(dt)
		data := make([]byte, 3*d.Size())
		if d == inference.Bytes {
			for _, s := range []string{"a", "", "xyz"} {
				data = inference.AppendBytesElement(data, []byte(s))
			}
		}
		for j := range data {
			data[j] ^= byte(i + 1)
		}
		req.Inputs = append(req.Inputs, inference.Tensor{Name: "INPUT" + n, DataType: d, Shape: []int64{3}, Data: data})
	}
	m, err := Backend{}.Load(context.Background(), spec(cfg))
	if err != nil {
		t.Fatal(err)
	}
	inst, err := m.NewInstance(context.Background(), backends.InstanceSpec{})
	if err != nil {
		t.Fatal(err)
	}
	resps, err := execute(context.Background(), inst, []*inference.Request{req, cloneReq(req)})
	if err != nil || len(resps) != 2 {
		t.Fatalf("Execute: %v, %d responses", err, len(resps))
	}
	for i, in := range req.Inputs {
		out := resps[1].Outputs[i]
		if out.Name != "OUTPUT"+in.Name[len("INPUT"):] || out.DataType != in.DataType || string(out.Data) != string(in.Data) {
			t.Errorf("output %d = %+v, want copy of %+v", i, out, in)
		}
	}
}

func TestLoadRejectsMismatchedConfig(t *testing.T) {
	for name, cfg := range map[string]*inferencepb.ModelConfig{
		"bad output name": {Name: "m", Input: []*inferencepb.ModelInput{tensorCfg("INPUT0", inferencepb.DataType_TYPE_FP32)}, Output: []*inferencepb.ModelOutput{outCfg("RESULT", inferencepb.DataType_TYPE_FP32)}},
		"no input":        {Name: "m", Output: []*inferencepb.ModelOutput{outCfg("OUTPUT0", inferencepb.DataType_TYPE_FP32)}},
		"type mismatch":   {Name: "m", Input: []*inferencepb.ModelInput{tensorCfg("INPUT0", inferencepb.DataType_TYPE_FP32)}, Output: []*inferencepb.ModelOutput{outCfg("OUTPUT0", inferencepb.DataType_TYPE_INT32)}},
		"bad delay":       {Name: "m", Parameters: map[string]*inferencepb.ModelParameter{"execute_delay_ms": {StringValue: "soon"}}},
	} {
		if _, err := (Backend{}).Load(context.Background(), spec(cfg)); inference.CodeOf(err) != inference.CodeInvalidArg {
			t.Errorf("%s: err = %v, want invalid argument", name, err)
		}
	}
}

func TestDelayHonoursCancel(t *testing.T) {
	cfg := &inferencepb.ModelConfig{Name: "slow", Parameters: map[string]*inferencepb.ModelParameter{"execute_delay_ms": {StringValue: "60000"}}}
	m, err := Backend{}.Load(context.Background(), spec(cfg))
	if err != nil {
		t.Fatal(err)
	}
	inst, _ := m.NewInstance(context.Background(), backends.InstanceSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := execute(ctx, inst, []*inference.Request{{}}); inference.CodeOf(err) != inference.CodeCancelled {
		t.Errorf("err = %v, want cancelled", err)
	}
}

// execute runs a batch through the instance's response path and returns
// each request's one response.
func execute(ctx context.Context, inst backends.Instance, batch []*inference.Request) ([]*inference.Response, error) {
	all, err := backendtest.Collect(ctx, inst, batch)
	if err != nil {
		return nil, err
	}
	out := make([]*inference.Response, len(all))
	for i, r := range all {
		if len(r) != 1 {
			return nil, inference.Internal("request %d got %d responses", i, len(r))
		}
		out[i] = r[0]
	}
	return out, nil
}

func cloneReq(r *inference.Request) *inference.Request {
	c := *r
	c.SetSender(nil)
	return &c
}
