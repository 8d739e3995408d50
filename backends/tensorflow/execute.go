//go:build cgo

package tensorflow

import (
	"context"
	"errors"
	"time"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/backends/batching"
	"github.com/nereid-project/nereid/inference"
)

// instance is one TensorFlow session. The scheduler calls Execute from one
// goroutine at a time.
type instance struct {
	m *model
	o *opened
	// in and out are the graph tensors of m.inputs and m.outputs in this
	// instance's graph.
	in, out []output
}

var (
	_ backends.UnaryInstance = (*instance)(nil)
	_ backends.Closer        = (*instance)(nil)
)

func newInstance(m *model, o *opened) (*instance, error) {
	i := &instance{m: m, o: o}
	for _, list := range []struct {
		specs []*tensorSpec
		dst   *[]output
	}{{m.inputs, &i.in}, {m.outputs, &i.out}} {
		for _, t := range list.specs {
			g, err := o.resolve(t.graph)
			if err != nil {
				return nil, err
			}
			*list.dst = append(*list.dst, g)
		}
	}
	return i, nil
}

// Close releases the session and its graph.
func (i *instance) Close() error {
	if i.o == nil {
		return nil
	}
	err := i.o.s.close()
	i.o.s = nil
	i.o.close()
	i.o = nil
	return err
}

func (i *instance) fail(err error) error {
	var ie *inference.Error
	if errors.As(err, &ie) {
		return inference.Errorf(ie.Code, "tensorflow model '%s': %w", i.m.name, err)
	}
	return inference.Internal("tensorflow model '%s': %v", i.m.name, err)
}

// ExecuteWithPhases runs a batch. Requests whose inputs have the same
// shapes beyond the batch dimension run as one session run: their inputs
// are laid end to end along the batch dimension, written once into
// TensorFlow's memory, and the outputs split back, each copied once out of
// TensorFlow's. Others run one by one. Building the input tensors is the
// input phase, reading the outputs the output phase, the run the rest. An
// error fails the whole batch and names the model; the session keeps
// serving.
//
// TensorFlow's C API cannot stop a run in progress: a batch cancelled
// while it runs finishes, and a cancellation before it starts is honoured.
func (i *instance) ExecuteWithPhases(ctx context.Context, batch []*inference.Request) ([]*inference.Response, backends.Phases, error) {
	var ph backends.Phases
	out := make([]*inference.Response, 0, len(batch))
	for _, group := range batching.Groups(batch, i.m.maxBatch) {
		resps, err := i.runGroup(ctx, group, &ph)
		if err != nil {
			return nil, ph, err
		}
		out = append(out, resps...)
	}
	return out, ph, nil
}

// runGroup runs requests that share their shapes as one session run. It
// adds the time of its input and output phases to ph.
func (i *instance) runGroup(ctx context.Context, group []*inference.Request, ph *backends.Phases) ([]*inference.Response, error) {
	start := time.Now()
	if ctx.Err() != nil {
		return nil, inference.Errorf(inference.CodeCancelled, "request cancelled before execution")
	}
	batched := i.m.maxBatch > 0
	first := group[0]
	feeds := make([]output, 0, len(first.Inputs))
	values := make([]tensor, 0, len(first.Inputs))
	defer func() { deleteTensors(values) }()
	for k := range first.Inputs {
		name := first.Inputs[k].Name
		idx, ok := i.m.inputIdx[name]
		if !ok {
			return nil, i.fail(inference.InvalidArg("unexpected inference input '%s'", name))
		}
		spec := i.m.inputs[idx]
		shape, parts := batching.Input(group, name)
		shape = batching.ModelShape(spec.dims, spec.reshape, shape, batched)
		v, err := inputTensor(spec, shape, parts)
		if err != nil {
			return nil, i.fail(inference.Errorf(inference.CodeOf(err), "input '%s': %w", name, err))
		}
		feeds = append(feeds, i.in[idx])
		values = append(values, v)
	}
	wanted := batching.Wanted(group, i.m.wanted)
	if len(wanted) == 0 {
		return nil, i.fail(inference.InvalidArg("the request asks for no output of the model"))
	}
	fetches := make([]output, len(wanted))
	for k, idx := range wanted {
		fetches[k] = i.out[idx]
	}
	outs := make([]tensor, len(wanted))
	defer func() { deleteTensors(outs) }()
	ph.Input += time.Since(start)

	if err := i.o.s.run(feeds, values, fetches, outs); err != nil {
		return nil, i.fail(err)
	}
	deleteTensors(values)

	outStart := time.Now()
	defer func() { ph.Output += time.Since(outStart) }()
	resps := make([]*inference.Response, len(group))
	for r := range resps {
		resps[r] = &inference.Response{Outputs: make([]inference.Tensor, 0, len(wanted))}
	}
	for k, idx := range wanted {
		spec := i.m.outputs[idx]
		t, err := outputTensor(spec, outs[k])
		if err != nil {
			return nil, i.fail(err)
		}
		t.Shape = batching.ClientShape(spec.dims, spec.reshape, t.Shape, batched)
		if len(group) > 1 && (len(t.Shape) == 0 || t.Shape[0] != batching.Size(group)) {
			return nil, i.fail(inference.Internal("output '%s' has shape %v, which does not keep the batch of %d rows", spec.name, t.Shape, batching.Size(group)))
		}
		if err := batching.Split(t, group, resps); err != nil {
			return nil, i.fail(err)
		}
	}
	return resps, nil
}

// inputTensor builds the TensorFlow tensor of one input of the given shape
// from parts laid end to end. The sizes are checked here, so that
// TensorFlow never reads past what a request holds.
func inputTensor(spec *tensorSpec, shape []int64, parts [][]byte) (tensor, error) {
	n := inference.ElementCount(shape)
	if n < 0 {
		return nil, inference.InvalidArg("invalid shape %v", shape)
	}
	if spec.dt == inference.Bytes {
		return newStringTensor(shape, parts, n)
	}
	total := int64(0)
	for _, p := range parts {
		total += int64(len(p))
	}
	if want := inference.ByteSize(spec.dt, shape); want < 0 || total != want {
		return nil, inference.InvalidArg("unexpected total byte size %d for shape %v of %s, expecting %d", total, shape, spec.dt, want)
	}
	return newTensor(spec.tfType, shape, parts)
}

// outputTensor reads a fetched tensor into a response tensor of its own
// memory, with the model's shape.
func outputTensor(spec *tensorSpec, t tensor) (inference.Tensor, error) {
	if t == nil {
		return inference.Tensor{}, inference.Internal("output '%s': TensorFlow returned no tensor", spec.name)
	}
	typ, shape, err := tensorInfo(t)
	if err != nil {
		return inference.Tensor{}, inference.Internal("output '%s': %v", spec.name, err)
	}
	if typ != spec.tfType {
		return inference.Tensor{}, inference.Internal("output '%s' has type %s but the configuration says %s", spec.name, tfTypeName(typ), spec.dt)
	}
	n := inference.ElementCount(shape)
	if n < 0 {
		return inference.Tensor{}, inference.Internal("output '%s' has an invalid shape %v", spec.name, shape)
	}
	var data []byte
	if spec.dt == inference.Bytes {
		data = stringTensorBytes(t, int(n))
	} else if data, err = tensorBytes(t, int(n)*spec.dt.Size()); err != nil {
		return inference.Tensor{}, inference.Internal("output '%s': %v", spec.name, err)
	}
	return inference.Tensor{Name: spec.name, DataType: spec.dt, Shape: shape, Data: data}, nil
}
