//go:build cgo

package onnxruntime

import "github.com/nereid-project/nereid/backends/modelio"

// rules are Triton's rules as its onnxruntime backend applies them.
var rules = modelio.Rules{}

// modelTensors describes the model's tensors for modelio, which holds
// Triton's auto-complete and validation rules for every backend.
func modelTensors(ts []tensorInfo) []modelio.Tensor {
	out := make([]modelio.Tensor, len(ts))
	for i, t := range ts {
		dt, _ := dataTypeOf(t.onnxType)
		out[i] = modelio.Tensor{Name: t.name, DataType: dt, TypeName: onnxTypeName(t.onnxType), Dims: t.dims}
	}
	return out
}
