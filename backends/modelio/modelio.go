// Package modelio holds what every framework backend does with the tensors
// a model declares: Triton's auto-complete of a configuration from them,
// and the check of a configuration against them at load. A backend reads
// its model's inputs and outputs in its framework's terms and hands them
// over as Tensors.
package modelio

import (
	"fmt"
	"strings"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// Tensor is what a model says about one of its inputs or outputs.
type Tensor struct {
	Name string
	// DataType is the protocol type of the tensor, inference.Invalid when
	// Nereid cannot serve the framework's type.
	DataType inference.DataType
	// TypeName is the framework's name of the type, for messages
	// ("tensor(float16)", "DT_HALF").
	TypeName string
	// Dims is the model's shape, -1 for a variable or unknown dimension.
	// Nil means even the rank is unknown: any configured shape fits.
	Dims []int64
}

// Rules are a backend's variations on Triton's rules.
type Rules struct {
	// UnknownRank: a tensor with nil Dims may batch (its first dimension
	// is taken as variable).
	UnknownRank bool
}

// NeedsCompletion is Triton's test: a configuration that names both inputs
// (or batch inputs) and outputs is left alone.
func NeedsCompletion(cfg *inferencepb.ModelConfig) bool {
	return len(cfg.GetInput())+len(cfg.GetBatchInput()) == 0 || len(cfg.GetOutput()) == 0
}

// AutoComplete fills cfg from the model's inputs and outputs as Triton's
// backends do (AutoCompleteMaxBatch, then AutoCompleteIO for whichever of
// inputs and outputs is missing). Tensors keep the given order.
func AutoComplete(cfg *inferencepb.ModelConfig, ins, outs []Tensor, defaultMaxBatch int, rules Rules) error {
	if !NeedsCompletion(cfg) {
		return nil
	}
	name := cfg.GetName()
	for _, list := range [][]Tensor{ins, outs} {
		for _, t := range list {
			if !t.DataType.Valid() {
				return inference.Unsupported("unable to auto-complete the configuration of model '%s': tensor '%s' has type %s, which Nereid does not support",
					name, t.Name, t.TypeName)
			}
		}
	}

	// A model can batch when every input and output has a variable first
	// dimension.
	canBatch := true
	for _, list := range [][]Tensor{ins, outs} {
		for _, t := range list {
			switch {
			case t.Dims == nil && rules.UnknownRank:
			case len(t.Dims) == 0 || t.Dims[0] != -1:
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
			dims, reshape := completedDims(t, cfg.GetMaxBatchSize())
			cfg.Input = append(cfg.Input, &inferencepb.ModelInput{Name: t.Name, DataType: inferencepb.DataType(t.DataType), Dims: dims, Reshape: reshape})
		}
	}
	if len(cfg.GetOutput()) == 0 {
		for _, t := range outs {
			dims, reshape := completedDims(t, cfg.GetMaxBatchSize())
			cfg.Output = append(cfg.Output, &inferencepb.ModelOutput{Name: t.Name, DataType: inferencepb.DataType(t.DataType), Dims: dims, Reshape: reshape})
		}
	}
	return nil
}

// completedDims is one tensor's dims; the batch dimension is left out when
// the model batches, a tensor of unknown rank gets [-1], and a tensor with
// no other dimension becomes dims [1] with an empty reshape, as in Triton.
func completedDims(t Tensor, maxBatch int32) ([]int64, *inferencepb.ModelTensorReshape) {
	if t.Dims == nil {
		return []int64{-1}, nil
	}
	dims := t.Dims
	if maxBatch > 0 && len(dims) > 0 {
		dims = dims[1:]
	}
	dims = append([]int64(nil), dims...)
	if len(dims) == 0 {
		return []int64{1}, &inferencepb.ModelTensorReshape{Shape: []int64{}}
	}
	return dims, nil
}

// Configured is a tensor the configuration gives the model.
type Configured struct {
	Name    string
	Type    inferencepb.DataType
	Dims    []int64
	Reshape *inferencepb.ModelTensorReshape
	// State: an implicit state output, produced whether asked for or not.
	State bool
	// Implicit: a sequence control or state input, which the scheduler
	// supplies rather than the client.
	Implicit bool
}

// ConfiguredInputs lists the model's inputs as the configuration has them:
// its inputs, then the sequence batcher's control tensors (shape [1],
// INT32, FP32 or BOOL as their true/false values say; the CORRID tensor's
// data_type) and implicit state inputs, which the scheduler supplies.
func ConfiguredInputs(cfg *inferencepb.ModelConfig) []Configured {
	var out []Configured
	for _, in := range cfg.GetInput() {
		out = append(out, Configured{Name: in.GetName(), Type: in.GetDataType(), Dims: in.GetDims(), Reshape: in.GetReshape()})
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
			out = append(out, Configured{Name: ci.GetName(), Type: dt, Dims: []int64{1}, Implicit: true})
		}
	}
	for _, st := range sb.GetState() {
		out = append(out, Configured{Name: st.GetInputName(), Type: st.GetDataType(), Dims: st.GetDims(), Implicit: true})
	}
	return out
}

// ConfiguredOutputs lists the configured outputs, then the implicit state
// outputs.
func ConfiguredOutputs(cfg *inferencepb.ModelConfig) []Configured {
	var out []Configured
	for _, o := range cfg.GetOutput() {
		out = append(out, Configured{Name: o.GetName(), Type: o.GetDataType(), Dims: o.GetDims(), Reshape: o.GetReshape()})
	}
	for _, st := range cfg.GetSequenceBatching().GetState() {
		out = append(out, Configured{Name: st.GetOutputName(), Type: st.GetDataType(), Dims: st.GetDims(), State: true})
	}
	return out
}

// Validate checks a configuration against the model's inputs and outputs,
// with Triton's rules and texts: every input the model has is configured
// (as an input, a sequence control or a state) and no other, each
// configured output exists, types agree and shapes are compatible (a fixed
// model dimension must be configured the same; a variable one accepts
// anything).
func Validate(cfg *inferencepb.ModelConfig, ins, outs []Tensor, rules Rules) error {
	name := cfg.GetName()
	modelIns := map[string]Tensor{}
	var inNames []string
	for _, t := range ins {
		modelIns[t.Name] = t
		inNames = append(inNames, t.Name)
	}
	cfgIns := ConfiguredInputs(cfg)
	if len(cfgIns) != len(ins) {
		return inference.InvalidArg("unable to load model '%s', configuration expects %d inputs, model provides %d",
			name, len(cfgIns), len(ins))
	}
	for _, in := range cfgIns {
		t, ok := modelIns[in.Name]
		if !ok {
			return inference.InvalidArg("unexpected inference input '%s', allowed inputs are: %s", in.Name, strings.Join(inNames, ", "))
		}
		if err := checkTensor(name, "input", t, in, cfg.GetMaxBatchSize(), rules); err != nil {
			return err
		}
	}
	return ValidateOutputs(cfg, outs, rules)
}

// ValidateOutputs is Validate's check of the configured outputs alone, for
// a backend whose every model tensor can be an output (a GraphDef).
func ValidateOutputs(cfg *inferencepb.ModelConfig, outs []Tensor, rules Rules) error {
	modelOuts := map[string]Tensor{}
	var outNames []string
	for _, t := range outs {
		modelOuts[t.Name] = t
		outNames = append(outNames, t.Name)
	}
	for _, out := range ConfiguredOutputs(cfg) {
		t, ok := modelOuts[out.Name]
		if !ok {
			return inference.InvalidArg("unexpected inference output '%s', allowed outputs are: %s", out.Name, strings.Join(outNames, ", "))
		}
		if err := checkTensor(cfg.GetName(), "output", t, out, cfg.GetMaxBatchSize(), rules); err != nil {
			return err
		}
	}
	return nil
}

// CheckTensor checks one configured tensor against the model's.
func CheckTensor(cfg *inferencepb.ModelConfig, kind string, t Tensor, c Configured, rules Rules) error {
	return checkTensor(cfg.GetName(), kind, t, c, cfg.GetMaxBatchSize(), rules)
}

func checkTensor(model, kind string, t Tensor, c Configured, maxBatch int32, rules Rules) error {
	dt := inference.DataType(c.Type)
	if !dt.Valid() {
		return inference.Unsupported("unsupported datatype %s for %s '%s' for model '%s'", c.Type, kind, t.Name, model)
	}
	if !t.DataType.Valid() {
		return inference.Unsupported("model '%s': %s '%s' has type %s, which Nereid does not support",
			model, kind, t.Name, t.TypeName)
	}
	if dt != t.DataType {
		return inference.InvalidArg("unable to load model '%s', configuration expects datatype %s for %s '%s', model provides %s",
			model, c.Type, kind, t.Name, inferencepb.DataType(t.DataType))
	}
	dims := c.Dims
	if c.Reshape != nil {
		dims = c.Reshape.GetShape()
	}
	if t.Dims == nil {
		return nil // the model does not say
	}
	return CompareDims(model, t.Name, t.Dims, dims, maxBatch)
}

// CompareDims is Triton's CompareDimsSupported (not exact).
func CompareDims(model, tensor string, modelShape, dims []int64, maxBatch int32) error {
	if maxBatch > 0 {
		if len(modelShape) == 0 || modelShape[0] != -1 {
			return inference.InvalidArg("model '%s', tensor '%s': for the model to support batching the shape should have at least 1 dimension and the first dimension must be -1; but shape expected by the model is %s",
				model, tensor, ShapeString(modelShape))
		}
		full := append([]int64{-1}, dims...)
		if !inference.DimsMatch(full, modelShape) {
			return inference.InvalidArg("model '%s', tensor '%s': the model expects %d dimensions (shape %s) but the model configuration specifies %d dimensions (an initial batch dimension because max_batch_size > 0 followed by the explicit tensor shape, making complete shape %s)",
				model, tensor, len(modelShape), ShapeString(modelShape), len(full), ShapeString(full))
		}
		return nil
	}
	if !inference.DimsMatch(dims, modelShape) {
		return inference.InvalidArg("model '%s', tensor '%s': the model expects %d dimensions (shape %s) but the model configuration specifies %d dimensions (shape %s)",
			model, tensor, len(modelShape), ShapeString(modelShape), len(dims), ShapeString(dims))
	}
	return nil
}

// ShapeString writes a shape as Triton does: [-1,16].
func ShapeString(s []int64) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ",") + "]"
}
