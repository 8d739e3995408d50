package modelio

import (
	"strings"
	"testing"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

func TestAutoCompleteUnknownRank(t *testing.T) {
	ins := []Tensor{{Name: "X", DataType: inference.FP32, Dims: nil}}
	outs := []Tensor{{Name: "Y", DataType: inference.FP32, Dims: []int64{-1, 3}}}
	cfg := &inferencepb.ModelConfig{Name: "m"}
	if err := AutoComplete(cfg, ins, outs, 4, Rules{UnknownRank: true}); err != nil {
		t.Fatal(err)
	}
	if cfg.GetMaxBatchSize() != 4 || cfg.GetInput()[0].GetDims()[0] != -1 || cfg.GetOutput()[0].GetDims()[0] != 3 {
		t.Fatalf("%v", cfg)
	}
	// Without the rule a tensor of unknown rank cannot batch.
	cfg = &inferencepb.ModelConfig{Name: "m", MaxBatchSize: 8}
	err := AutoComplete(cfg, ins, outs, 4, Rules{})
	if err == nil || !strings.Contains(err.Error(), "does not support batching") {
		t.Fatalf("%v", err)
	}
}

func TestValidate(t *testing.T) {
	ins := []Tensor{{Name: "X", DataType: inference.Int32, Dims: []int64{-1, 16}}}
	outs := []Tensor{{Name: "Y", DataType: inference.Int32, Dims: nil}, {Name: "Z", DataType: inference.Invalid, TypeName: "DT_COMPLEX64", Dims: []int64{-1}}}
	cfg := func(in, out string, dt inferencepb.DataType, dims ...int64) *inferencepb.ModelConfig {
		return &inferencepb.ModelConfig{Name: "m", MaxBatchSize: 4,
			Input:  []*inferencepb.ModelInput{{Name: in, DataType: dt, Dims: dims}},
			Output: []*inferencepb.ModelOutput{{Name: out, DataType: inferencepb.DataType_TYPE_INT32, Dims: []int64{5}}}}
	}
	if err := Validate(cfg("X", "Y", inferencepb.DataType_TYPE_INT32, 16), ins, outs, Rules{}); err != nil {
		t.Fatalf("unknown rank output: %v", err)
	}
	for _, c := range []struct {
		cfg  *inferencepb.ModelConfig
		want string
	}{
		{cfg("W", "Y", inferencepb.DataType_TYPE_INT32, 16), "unexpected inference input 'W'"},
		{cfg("X", "Q", inferencepb.DataType_TYPE_INT32, 16), "unexpected inference output 'Q', allowed outputs are: Y, Z"},
		{cfg("X", "Y", inferencepb.DataType_TYPE_FP32, 16), "expects datatype TYPE_FP32 for input 'X', model provides TYPE_INT32"},
		{cfg("X", "Y", inferencepb.DataType_TYPE_INT32, 8), "[-1,8]"},
		{cfg("X", "Z", inferencepb.DataType_TYPE_INT32, 16), "DT_COMPLEX64"},
	} {
		if err := Validate(c.cfg, ins, outs, Rules{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: want %q", err, c.want)
		}
	}
}
