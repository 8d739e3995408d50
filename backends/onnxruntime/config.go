//go:build cgo

package onnxruntime

import (
	"fmt"
	"strings"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// needsCompletion is Triton's test: a configuration that names both inputs
// (or batch inputs) and outputs is left alone.
func needsCompletion(cfg *inferencepb.ModelConfig) bool {
	return len(cfg.GetInput())+len(cfg.GetBatchInput()) == 0 || len(cfg.GetOutput()) == 0
}

// autoComplete fills cfg from the model's inputs and outputs as Triton's
// onnxruntime backend does (AutoCompleteMaxBatch, then AutoCompleteIO for
// whichever of inputs and outputs is missing). Tensors keep the model's
// order, where Triton's follow a hash map.
func autoComplete(cfg *inferencepb.ModelConfig, ins, outs []tensorInfo, defaultMaxBatch int) error {
	if !needsCompletion(cfg) {
		return nil
	}
	name := cfg.GetName()
	for _, list := range [][]tensorInfo{ins, outs} {
		for _, t := range list {
			if _, ok := dataTypeOf(t.onnxType); !ok {
				return inference.Unsupported("unable to auto-complete the configuration of model '%s': tensor '%s' has type %s, which Nereid does not support",
					name, t.name, onnxTypeName(t.onnxType))
			}
		}
	}

	// A model can batch when every input and output has a variable first
	// dimension.
	canBatch := true
	for _, list := range [][]tensorInfo{ins, outs} {
		for _, t := range list {
			if len(t.dims) == 0 || t.dims[0] != -1 {
				canBatch = false
			}
		}
	}
	switch {
	case canBatch && cfg.GetMaxBatchSize() == 0:
		cfg.MaxBatchSize = int32(max(defaultMaxBatch, 0))
		if cfg.MaxBatchSize > 1 && cfg.GetDynamicBatching() == nil && cfg.GetSequenceBatching() == nil {
			cfg.SchedulingChoice = &inferencepb.ModelConfig_DynamicBatching{DynamicBatching: &inferencepb.ModelDynamicBatching{}}
		}
	case !canBatch && cfg.GetMaxBatchSize() != 0:
		return inference.InvalidArg("autofill failed for model '%s': model does not support batching while non-zero max_batch_size is specified", name)
	}

	if len(cfg.GetInput()) == 0 {
		for _, t := range ins {
			dt, dims, reshape := completedIO(t, cfg.GetMaxBatchSize())
			cfg.Input = append(cfg.Input, &inferencepb.ModelInput{Name: t.name, DataType: dt, Dims: dims, Reshape: reshape})
		}
	}
	if len(cfg.GetOutput()) == 0 {
		for _, t := range outs {
			dt, dims, reshape := completedIO(t, cfg.GetMaxBatchSize())
			cfg.Output = append(cfg.Output, &inferencepb.ModelOutput{Name: t.name, DataType: dt, Dims: dims, Reshape: reshape})
		}
	}
	return nil
}

// completedIO is one tensor's data type and dims; the batch dimension is
// left out when the model batches, and a tensor with no other dimension
// becomes dims [1] with an empty reshape, as in Triton.
func completedIO(t tensorInfo, maxBatch int32) (inferencepb.DataType, []int64, *inferencepb.ModelTensorReshape) {
	dt, _ := dataTypeOf(t.onnxType)
	dims := t.dims
	if maxBatch > 0 && len(dims) > 0 {
		dims = dims[1:]
	}
	dims = append([]int64(nil), dims...)
	if len(dims) == 0 {
		return configType(dt), []int64{1}, &inferencepb.ModelTensorReshape{Shape: []int64{}}
	}
	return configType(dt), dims, nil
}

// configured is a tensor the configuration gives the model.
type configured struct {
	name    string
	dt      inferencepb.DataType
	dims    []int64
	reshape *inferencepb.ModelTensorReshape
	// state: an implicit state output, produced whether asked for or not.
	state bool
	// implicit: a sequence control or state input.
	implicit bool
}

// configuredInputs lists the model's inputs as the configuration has them:
// its inputs, then the sequence batcher's control tensors (shape [1],
// INT32, FP32 or BOOL as their true/false values say; the CORRID tensor's
// data_type) and implicit state inputs, which the scheduler supplies.
func configuredInputs(cfg *inferencepb.ModelConfig) []configured {
	var out []configured
	for _, in := range cfg.GetInput() {
		out = append(out, configured{name: in.GetName(), dt: in.GetDataType(), dims: in.GetDims(), reshape: in.GetReshape()})
	}
	sb := cfg.GetSequenceBatching()
	for _, ci := range sb.GetControlInput() {
		// A tensor carries one control; the repository rejects more.
		for _, c := range ci.GetControl()[:min(1, len(ci.GetControl()))] {
			dt := c.GetDataType()
			switch {
			case len(c.GetInt32FalseTrue()) > 0:
				dt = inferencepb.DataType_TYPE_INT32
			case len(c.GetFp32FalseTrue()) > 0:
				dt = inferencepb.DataType_TYPE_FP32
			case len(c.GetBoolFalseTrue()) > 0:
				dt = inferencepb.DataType_TYPE_BOOL
			}
			out = append(out, configured{name: ci.GetName(), dt: dt, dims: []int64{1}, implicit: true})
		}
	}
	for _, st := range sb.GetState() {
		out = append(out, configured{name: st.GetInputName(), dt: st.GetDataType(), dims: st.GetDims(), implicit: true})
	}
	return out
}

// configuredOutputs lists the configured outputs, then the implicit state
// outputs.
func configuredOutputs(cfg *inferencepb.ModelConfig) []configured {
	var out []configured
	for _, o := range cfg.GetOutput() {
		out = append(out, configured{name: o.GetName(), dt: o.GetDataType(), dims: o.GetDims(), reshape: o.GetReshape()})
	}
	for _, st := range cfg.GetSequenceBatching().GetState() {
		out = append(out, configured{name: st.GetOutputName(), dt: st.GetDataType(), dims: st.GetDims(), state: true})
	}
	return out
}

// validateIO checks a configuration against the model's inputs and
// outputs, with Triton's rules and texts: every input the model has is
// configured (as an input, a sequence control or a state) and no other,
// each configured output exists, types agree and shapes are compatible (a
// fixed model dimension must be configured the same; a variable one
// accepts anything).
func validateIO(cfg *inferencepb.ModelConfig, ins, outs []tensorInfo) error {
	name := cfg.GetName()
	modelIns := map[string]tensorInfo{}
	var inNames []string
	for _, t := range ins {
		modelIns[t.name] = t
		inNames = append(inNames, t.name)
	}
	cfgIns := configuredInputs(cfg)
	if len(cfgIns) != len(ins) {
		return inference.InvalidArg("unable to load model '%s', configuration expects %d inputs, model provides %d",
			name, len(cfgIns), len(ins))
	}
	for _, in := range cfgIns {
		t, ok := modelIns[in.name]
		if !ok {
			return inference.InvalidArg("unexpected inference input '%s', allowed inputs are: %s", in.name, strings.Join(inNames, ", "))
		}
		if err := checkTensor(name, "input", t, in.dt, in.dims, in.reshape, cfg.GetMaxBatchSize()); err != nil {
			return err
		}
	}
	modelOuts := map[string]tensorInfo{}
	var outNames []string
	for _, t := range outs {
		modelOuts[t.name] = t
		outNames = append(outNames, t.name)
	}
	for _, out := range configuredOutputs(cfg) {
		t, ok := modelOuts[out.name]
		if !ok {
			return inference.InvalidArg("unexpected inference output '%s', allowed outputs are: %s", out.name, strings.Join(outNames, ", "))
		}
		if err := checkTensor(name, "output", t, out.dt, out.dims, out.reshape, cfg.GetMaxBatchSize()); err != nil {
			return err
		}
	}
	return nil
}

func checkTensor(model, kind string, t tensorInfo, cfgType inferencepb.DataType, dims []int64, reshape *inferencepb.ModelTensorReshape, maxBatch int32) error {
	dt := inference.DataType(cfgType)
	want, ok := toONNX(dt)
	if !ok {
		return inference.Unsupported("unsupported datatype %s for %s '%s' for model '%s'", cfgType, kind, t.name, model)
	}
	if _, ok := dataTypeOf(t.onnxType); !ok {
		return inference.Unsupported("model '%s': %s '%s' has type %s, which Nereid does not support",
			model, kind, t.name, onnxTypeName(t.onnxType))
	}
	if want != t.onnxType {
		got, _ := dataTypeOf(t.onnxType)
		return inference.InvalidArg("unable to load model '%s', configuration expects datatype %s for %s '%s', model provides %s",
			model, cfgType, kind, t.name, configType(got))
	}
	if reshape != nil {
		dims = reshape.GetShape()
	}
	return compareDims(model, t.name, t.dims, dims, maxBatch)
}

// compareDims is Triton's CompareDimsSupported (not exact).
func compareDims(model, tensor string, modelShape, dims []int64, maxBatch int32) error {
	if maxBatch > 0 {
		if len(modelShape) == 0 || modelShape[0] != -1 {
			return inference.InvalidArg("model '%s', tensor '%s': for the model to support batching the shape should have at least 1 dimension and the first dimension must be -1; but shape expected by the model is %s",
				model, tensor, shapeString(modelShape))
		}
		full := append([]int64{-1}, dims...)
		if !inference.DimsMatch(full, modelShape) {
			return inference.InvalidArg("model '%s', tensor '%s': the model expects %d dimensions (shape %s) but the model configuration specifies %d dimensions (an initial batch dimension because max_batch_size > 0 followed by the explicit tensor shape, making complete shape %s)",
				model, tensor, len(modelShape), shapeString(modelShape), len(full), shapeString(full))
		}
		return nil
	}
	if !inference.DimsMatch(dims, modelShape) {
		return inference.InvalidArg("model '%s', tensor '%s': the model expects %d dimensions (shape %s) but the model configuration specifies %d dimensions (shape %s)",
			model, tensor, len(modelShape), shapeString(modelShape), len(dims), shapeString(dims))
	}
	return nil
}

func shapeString(s []int64) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ",") + "]"
}
