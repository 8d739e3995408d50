// Package square is a decoupled example backend with the semantics of
// Triton's square backend: a request IN = [N] answers with N responses,
// each OUT = [N], so clients can be tested against a model whose number
// of responses the request chooses.
package square

import (
	"context"
	"encoding/binary"
	"slices"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// Name is the backend name config.pbtxt uses.
const Name = "square"

func init() { backends.Register(Name, Backend{}) }

// Backend loads square models: input IN and output OUT, both INT32 [1],
// decoupled. For IN = [N] the model sends N responses with OUT = [N], then
// the final flag alone; N = 0 gives the final flag only, a negative N
// fails the request. As in Triton the model may batch, each request then
// being one batch element (IN [1, 1], OUT [1, 1]).
type Backend struct{}

var (
	_ backends.Backend  = Backend{}
	_ backends.Instance = (*instance)(nil)
	_ backends.Closer   = (*instance)(nil)
)

type model struct {
	name  string
	batch bool // max_batch_size > 0: tensors carry a batch dimension
}

// Load checks that the configuration is the one the backend serves.
func (Backend) Load(_ context.Context, spec backends.ModelSpec) (backends.Model, error) {
	cfg := spec.Config
	if !cfg.GetModelTransactionPolicy().GetDecoupled() {
		return nil, inference.InvalidArg("square model '%s' sends IN responses per request, so it must be decoupled: set model_transaction_policy { decoupled: true }", spec.Name)
	}
	ins, outs := cfg.GetInput(), cfg.GetOutput()
	if len(ins) != 1 || len(outs) != 1 {
		return nil, inference.InvalidArg("square model '%s' must have exactly the input IN and the output OUT; got %d inputs and %d outputs", spec.Name, len(ins), len(outs))
	}
	if err := check(spec.Name, "input", "IN", ins[0].GetName(), ins[0].GetDataType(), ins[0].GetDims()); err != nil {
		return nil, err
	}
	if err := check(spec.Name, "output", "OUT", outs[0].GetName(), outs[0].GetDataType(), outs[0].GetDims()); err != nil {
		return nil, err
	}
	return &model{name: spec.Name, batch: cfg.GetMaxBatchSize() > 0}, nil
}

func check(model, kind, want, name string, dt inferencepb.DataType, dims []int64) error {
	switch {
	case name != want:
		return inference.InvalidArg("square model '%s': the %s must be named '%s', got '%s'", model, kind, want, name)
	case dt != inferencepb.DataType_TYPE_INT32:
		return inference.InvalidArg("square model '%s': %s '%s' data_type must be TYPE_INT32, got %s", model, kind, name, dt)
	case !slices.Equal(dims, []int64{1}):
		return inference.InvalidArg("square model '%s': %s '%s' dims must be [1], got %v", model, kind, name, dims)
	}
	return nil
}

func (m *model) NewInstance(context.Context, backends.InstanceSpec) (backends.Instance, error) {
	return &instance{m: m}, nil
}

// instance starts one goroutine per request, which sends the request's
// responses and exits after its final flag; Close stops and waits for them.
type instance struct {
	m       *model
	streams backends.Streams // the requests' goroutines
}

// Execute starts each request's responses and returns: like Triton's
// square backend it releases the requests at once, their goroutines
// streaming the responses.
func (i *instance) Execute(_ context.Context, batch []*inference.Request) error {
	for _, req := range batch {
		n, err := i.m.count(req)
		if err != nil {
			req.Fail(err)
			continue
		}
		out := req.Sender() // the request itself is not touched after Execute
		if !i.streams.Go(func() { i.respond(out, n) }) {
			return inference.Unavailable("square model '%s': the instance is closed", i.m.name)
		}
	}
	return nil
}

// count returns the number of responses a request asks for.
func (m *model) count(req *inference.Request) (int32, error) {
	in := req.Input("IN")
	if in == nil {
		return 0, inference.InvalidArg("square model '%s': request has no input 'IN'", m.name)
	}
	shape := m.shape()
	if in.DataType != inference.Int32 || !slices.Equal(in.Shape, shape) || len(in.Data) != 4 {
		return 0, inference.InvalidArg("square model '%s': input 'IN' must be an INT32 tensor of shape %v, got %s %v", m.name, shape, in.DataType, in.Shape)
	}
	n := int32(binary.LittleEndian.Uint32(in.Data))
	if n < 0 {
		return 0, inference.InvalidArg("square model '%s': input 'IN' is the number of responses to send and cannot be negative, got %d", m.name, n)
	}
	return n, nil
}

// shape is the shape of IN and OUT in a request: [1], or [1, 1] with the
// batch dimension.
func (m *model) shape() []int64 {
	if m.batch {
		return []int64{1, 1}
	}
	return []int64{1}
}

// respond sends req's n responses. It stops early when the request is
// cancelled (then sends the final flag, which nobody may receive) or the
// instance closes (then fails the request: the stream is incomplete).
func (i *instance) respond(out inference.ResponseSender, n int32) {
	for k := range n {
		select {
		case <-i.streams.Done():
			out.Fail(inference.Unavailable("square model '%s' was unloaded after %d of %d responses", i.m.name, k, n))
			return
		default:
		}
		if out.Cancelled() {
			break
		}
		resp := &inference.Response{Outputs: []inference.Tensor{{
			Name: "OUT", DataType: inference.Int32, Shape: i.m.shape(),
			Data: binary.LittleEndian.AppendUint32(nil, uint32(n)),
		}}}
		if err := out.Send(resp, false); err != nil {
			break // cancelled: stop producing
		}
	}
	// An error here means the request was cancelled meanwhile; the final
	// flag still ends it.
	_ = out.Send(nil, true)
}

// Close stops the instance's streams, failing their requests, and waits
// for their goroutines. Later Executes fail with UNAVAILABLE.
func (i *instance) Close() error {
	i.streams.Close()
	return nil
}
