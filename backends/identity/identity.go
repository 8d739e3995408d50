// Package identity is a backend that returns its inputs: output OUTPUTn is a
// copy of input INPUTn. Triton's QA and performance tooling rely on such a
// model, and Nereid's scheduler tests use its optional execution delay.
package identity

import (
	"context"
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
	_ backends.Backend  = Backend{}
	_ backends.Instance = (*instance)(nil)
)

type model struct {
	// outputs maps each output name to the input it copies.
	outputs map[string]string
	order   []string // output names in config order
	delay   time.Duration
}

// Load checks that every output OUTPUTn has an input INPUTn of the same
// data type and reads the optional execute_delay_ms parameter.
func (Backend) Load(_ context.Context, spec backends.ModelSpec) (backends.Model, error) {
	cfg := spec.Config
	inputs := map[string]*inferencepb.ModelInput{}
	for _, in := range cfg.GetInput() {
		inputs[in.GetName()] = in
	}
	m := &model{outputs: map[string]string{}}
	for _, out := range cfg.GetOutput() {
		suffix, ok := strings.CutPrefix(out.GetName(), "OUTPUT")
		if !ok {
			return nil, inference.InvalidArg("identity model '%s': output '%s' must be named OUTPUT<n> to match an input INPUT<n>", spec.Name, out.GetName())
		}
		inName := "INPUT" + suffix
		in, ok := inputs[inName]
		if !ok {
			return nil, inference.InvalidArg("identity model '%s': output '%s' has no matching input '%s'", spec.Name, out.GetName(), inName)
		}
		if in.GetDataType() != out.GetDataType() {
			return nil, inference.InvalidArg("identity model '%s': output '%s' data_type %s differs from input '%s' data_type %s",
				spec.Name, out.GetName(), out.GetDataType(), inName, in.GetDataType())
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

func (m *model) NewInstance(context.Context, backends.InstanceSpec) (backends.Instance, error) {
	return &instance{m: m}, nil
}

type instance struct{ m *model }

// Execute answers each request with its own inputs under the output names.
// Output data aliases the input bytes, which the Instance contract allows:
// the identity backend never writes to either.
func (i *instance) Execute(ctx context.Context, batch []*inference.Request) ([]*inference.Response, error) {
	if i.m.delay > 0 {
		t := time.NewTimer(i.m.delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, inference.Errorf(inference.CodeCancelled, "request cancelled during execution")
		}
	}
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
	return out, nil
}
