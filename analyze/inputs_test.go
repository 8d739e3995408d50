package analyze

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

func TestMakeInputs(t *testing.T) {
	cfg := &inferencepb.ModelConfig{Name: "m", MaxBatchSize: 8, Input: []*inferencepb.ModelInput{
		{Name: "F", DataType: inferencepb.DataType_TYPE_FP32, Dims: []int64{-1, 3}},
		{Name: "H", DataType: inferencepb.DataType_TYPE_FP16, Dims: []int64{5}},
		{Name: "S", DataType: inferencepb.DataType_TYPE_STRING, Dims: []int64{2}},
		{Name: "I", DataType: inferencepb.DataType_TYPE_INT64, Dims: []int64{4}},
		{Name: "B", DataType: inferencepb.DataType_TYPE_BOOL, Dims: []int64{}},
	}}
	in, err := makeInputs(cfg, 2, 7, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]int64{"F": {2, 7, 3}, "H": {2, 5}, "S": {2, 2}, "I": {2, 4}, "B": {2}}
	for _, x := range in {
		if !slices.Equal(x.Shape, want[x.Name]) {
			t.Errorf("%s: shape %v, want %v", x.Name, x.Shape, want[x.Name])
		}
		if x.DataType != inference.Bytes && int64(len(x.Data)) != inference.ByteSize(x.DataType, x.Shape) {
			t.Errorf("%s: %d bytes for %v %s", x.Name, len(x.Data), x.Shape, x.DataType)
		}
	}
	if n, err := inference.CountBytesElements("S", in[2].Data); err != nil || n != 4 {
		t.Errorf("BYTES input: %d elements, %v", n, err)
	}
	for i := 0; i < len(in[0].Data); i += 4 {
		if v := math.Float32frombits(binary.LittleEndian.Uint32(in[0].Data[i:])); v < 0 || v >= 1 {
			t.Fatalf("FP32 element %g outside [0, 1)", v)
		}
	}
	for i := 0; i < len(in[1].Data); i += 2 {
		if h := binary.LittleEndian.Uint16(in[1].Data[i:]); h>>10 >= 15 {
			t.Fatalf("FP16 element %#04x is not below 1", h)
		}
	}
	for i := 0; i < len(in[3].Data); i += 8 {
		if v := binary.LittleEndian.Uint64(in[3].Data[i:]); v >= 64 {
			t.Fatalf("INT64 element %d not below 64", v)
		}
	}
	// The same seed makes the same data.
	again, _ := makeInputs(cfg, 2, 7, rand.New(rand.NewPCG(1, 2)))
	if !bytes.Equal(again[0].Data, in[0].Data) {
		t.Error("not deterministic for a seed")
	}

	// A model that does not batch has no batch dimension.
	cfg.MaxBatchSize = 0
	in, _ = makeInputs(cfg, 2, 7, rand.New(rand.NewPCG(1, 2)))
	if !slices.Equal(in[0].Shape, []int64{7, 3}) {
		t.Errorf("shape %v, want [7 3]", in[0].Shape)
	}
	if _, err := makeInputs(&inferencepb.ModelConfig{Name: "none"}, 1, 1, rand.New(rand.NewPCG(1, 2))); err == nil {
		t.Error("a model without inputs is accepted")
	}
}
