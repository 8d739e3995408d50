// Package identity is a backend that returns its inputs: output OUTPUTn is a
// copy of input INPUTn. Triton's QA and performance tooling rely on such a
// model, and Nereid's scheduler tests use its optional execution delay.
package identity

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// Name is the backend name config.pbtxt uses.
const Name = "identity"

func init() { backends.Register(Name, Backend{}) }

// Backend loads identity models.
type Backend struct{}

var (
	_ backends.Backend       = Backend{}
	_ backends.UnaryInstance = (*instance)(nil)
)

type model struct {
	// outputs maps each output name to the input it copies.
	outputs map[string]string
	order   []string // output names in config order
	delay   time.Duration
}

// Load checks that every output OUTPUTn has an input INPUTn of the same
// data type and reads the optional execute_delay_ms parameter. For a
// sequence model the control and state inputs the sequence batcher adds
// count as inputs, and state outputs are produced like any output, so a
// test model can echo what the batcher injected.
func (Backend) Load(_ context.Context, spec backends.ModelSpec) (backends.Model, error) {
	cfg := spec.Config
	inputs := sourceTypes(cfg)
	m := &model{outputs: map[string]string{}}
	for _, out := range outputsOf(cfg) {
		suffix, ok := strings.CutPrefix(out.GetName(), "OUTPUT")
		if !ok {
			return nil, inference.InvalidArg("identity model '%s': output '%s' must be named OUTPUT<n> to match an input INPUT<n>", spec.Name, out.GetName())
		}
		inName := "INPUT" + suffix
		inType, ok := inputs[inName]
		if !ok {
			return nil, inference.InvalidArg("identity model '%s': output '%s' has no matching input '%s'", spec.Name, out.GetName(), inName)
		}
		if inType != out.GetDataType() {
			return nil, inference.InvalidArg("identity model '%s': output '%s' data_type %s differs from input '%s' data_type %s",
				spec.Name, out.GetName(), out.GetDataType(), inName, inType)
		}
		m.outputs[out.GetName()] = inName
		m.order = append(m.order, out.GetName())
	}
	if p, ok := cfg.GetParameters()["execute_delay_ms"]; ok {
		ms, err := strconv.ParseUint(strings.TrimSpace(p.GetStringValue()), 10, 32)
		if err != nil {
			return nil, inference.InvalidArg("identity model '%s': parameter execute_delay_ms: %q is not a non-negative integer", spec.Name, p.GetStringValue())
		}
		m.delay = time.Duration(ms) * time.Millisecond
	}
	return m, nil
}

// sourceTypes lists the tensors a request reaches the model with: the
// configured inputs and, for a sequence model, the control and state
// inputs the sequence batcher adds.
func sourceTypes(cfg *inferencepb.ModelConfig) map[string]inferencepb.DataType {
	out := map[string]inferencepb.DataType{}
	for _, in := range cfg.GetInput() {
		out[in.GetName()] = in.GetDataType()
	}
	sb := cfg.GetSequenceBatching()
	for _, ci := range sb.GetControlInput() {
		for _, c := range ci.GetControl() {
			switch {
			case c.GetKind() == inferencepb.ModelSequenceBatching_Control_CONTROL_SEQUENCE_CORRID:
				out[ci.GetName()] = c.GetDataType()
			case len(c.GetInt32FalseTrue()) > 0:
				out[ci.GetName()] = inferencepb.DataType_TYPE_INT32
			case len(c.GetFp32FalseTrue()) > 0:
				out[ci.GetName()] = inferencepb.DataType_TYPE_FP32
			case len(c.GetBoolFalseTrue()) > 0:
				out[ci.GetName()] = inferencepb.DataType_TYPE_BOOL
			}
		}
	}
	for _, st := range sb.GetState() {
		out[st.GetInputName()] = st.GetDataType()
	}
	return out
}

// outputsOf lists the outputs the model produces: the configured ones and
// the state outputs of a sequence model.
func outputsOf(cfg *inferencepb.ModelConfig) []*inferencepb.ModelOutput {
	outs := cfg.GetOutput()
	for _, st := range cfg.GetSequenceBatching().GetState() {
		if !slices.ContainsFunc(outs, func(o *inferencepb.ModelOutput) bool { return o.GetName() == st.GetOutputName() }) {
			outs = append(slices.Clip(outs), &inferencepb.ModelOutput{Name: st.GetOutputName(), DataType: st.GetDataType()})
		}
	}
	return outs
}

func (m *model) NewInstance(context.Context, backends.InstanceSpec) (backends.Instance, error) {
	return backends.Unary(&instance{m: m}), nil
}

type instance struct{ m *model }

// Execute answers each request with its own inputs under the output names.
// Output data aliases the input bytes, which the Instance contract allows:
// the identity backend never writes to either.
func (i *instance) Execute(ctx context.Context, batch []*inference.Request) ([]*inference.Response, error) {
	resps, _, err := i.ExecuteWithPhases(ctx, batch)
	return resps, err
}

// ExecuteWithPhases is Execute that also reports its phases: building the
// responses from the inputs each output copies is the input phase, the
// configured delay is the inference, and the output phase is empty.
func (i *instance) ExecuteWithPhases(ctx context.Context, batch []*inference.Request) ([]*inference.Response, backends.Phases, error) {
	start := time.Now()
	out := make([]*inference.Response, len(batch))
	for r, req := range batch {
		resp := &inference.Response{Outputs: make([]inference.Tensor, 0, len(i.m.order))}
		for _, name := range i.m.order {
			in := req.Input(i.m.outputs[name])
			if in == nil {
				continue // an optional input the request left out
			}
			resp.Outputs = append(resp.Outputs, inference.Tensor{
				Name: name, DataType: in.DataType, Shape: in.Shape, Data: in.Data,
			})
		}
		out[r] = resp
	}
	inputEnd := time.Now()
	if i.m.delay > 0 {
		t := time.NewTimer(i.m.delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, backends.Phases{}, inference.Errorf(inference.CodeCancelled, "request cancelled during execution")
		}
	}
	return out, backends.Phases{Input: inputEnd.Sub(start)}, nil
}
