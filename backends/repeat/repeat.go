// Package repeat is a decoupled example backend with the semantics of
// Triton's repeat backend: a request answers with one response per element
// of its input, each after its own delay, so clients and front ends can be
// tested against a model that streams zero, one or many responses.
package repeat

import (
	"bytes"
	"context"
	"encoding/binary"
	"slices"
	"time"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// Name is the backend name config.pbtxt uses.
const Name = "repeat"

func init() { backends.Register(Name, Backend{}) }

// Backend loads repeat models.
//
// A model has inputs IN (a vector of any fixed-width datatype, INT32 in
// Triton's example), DELAY (UINT32, IN's dims) and WAIT (UINT32 [1]), and
// outputs OUT (IN's datatype, [1]) and IDX (UINT32 [1]). For element i of
// IN the model waits DELAY[i] milliseconds, then sends OUT = [IN[i]],
// IDX = [i]; after the last element it sends the final flag alone. Execute
// returns WAIT[0] milliseconds after it started the request, whether or
// not its responses are all sent: a WAIT shorter than the sum of DELAY
// lets one instance stream several requests at once.
type Backend struct{}

var (
	_ backends.Backend  = Backend{}
	_ backends.Instance = (*instance)(nil)
	_ backends.Closer   = (*instance)(nil)
)

type model struct {
	name string
	dt   inference.DataType // of IN and OUT
}

// Load checks that the configuration is the one the backend serves: not
// batching, decoupled (the model sends any number of responses per
// request), and the tensors described on Backend.
func (Backend) Load(_ context.Context, spec backends.ModelSpec) (backends.Model, error) {
	cfg := spec.Config
	if !cfg.GetModelTransactionPolicy().GetDecoupled() {
		return nil, inference.InvalidArg("repeat model '%s' sends one response per element of IN, so it must be decoupled: set model_transaction_policy { decoupled: true }", spec.Name)
	}
	if cfg.GetMaxBatchSize() != 0 {
		return nil, inference.InvalidArg("repeat model '%s': max_batch_size must be 0, got %d: the repeat backend does not batch", spec.Name, cfg.GetMaxBatchSize())
	}
	if len(cfg.GetInput()) != 3 || len(cfg.GetOutput()) != 2 {
		return nil, inference.InvalidArg("repeat model '%s' must have exactly the inputs IN, DELAY, WAIT and the outputs OUT, IDX; got %d inputs and %d outputs",
			spec.Name, len(cfg.GetInput()), len(cfg.GetOutput()))
	}
	in := findInput(cfg, "IN")
	if in == nil {
		return nil, missing(spec.Name, "input", "IN")
	}
	dt := inference.DataType(in.GetDataType())
	if dt.Size() == 0 {
		return nil, inference.InvalidArg("repeat model '%s': input 'IN' data_type %s is not a fixed-width type", spec.Name, in.GetDataType())
	}
	if len(in.GetDims()) != 1 {
		return nil, inference.InvalidArg("repeat model '%s': input 'IN' must be a vector (dims [ -1 ] or [ n ]), got dims %v", spec.Name, in.GetDims())
	}
	for _, want := range []struct {
		name string
		dt   inferencepb.DataType
		dims []int64
	}{
		{"DELAY", inferencepb.DataType_TYPE_UINT32, in.GetDims()},
		{"WAIT", inferencepb.DataType_TYPE_UINT32, []int64{1}},
	} {
		t := findInput(cfg, want.name)
		if t == nil {
			return nil, missing(spec.Name, "input", want.name)
		}
		if err := check(spec.Name, "input", want.name, t.GetDataType(), t.GetDims(), want.dt, want.dims); err != nil {
			return nil, err
		}
	}
	for _, want := range []struct {
		name string
		dt   inferencepb.DataType
	}{
		{"OUT", in.GetDataType()},
		{"IDX", inferencepb.DataType_TYPE_UINT32},
	} {
		i := slices.IndexFunc(cfg.GetOutput(), func(o *inferencepb.ModelOutput) bool { return o.GetName() == want.name })
		if i < 0 {
			return nil, missing(spec.Name, "output", want.name)
		}
		o := cfg.GetOutput()[i]
		if err := check(spec.Name, "output", want.name, o.GetDataType(), o.GetDims(), want.dt, []int64{1}); err != nil {
			return nil, err
		}
	}
	return &model{name: spec.Name, dt: dt}, nil
}

func findInput(cfg *inferencepb.ModelConfig, name string) *inferencepb.ModelInput {
	i := slices.IndexFunc(cfg.GetInput(), func(in *inferencepb.ModelInput) bool { return in.GetName() == name })
	if i < 0 {
		return nil
	}
	return cfg.GetInput()[i]
}

func missing(model, kind, name string) error {
	return inference.InvalidArg("repeat model '%s' has no %s '%s'", model, kind, name)
}

func check(model, kind, name string, dt inferencepb.DataType, dims []int64, wantDT inferencepb.DataType, wantDims []int64) error {
	if dt != wantDT {
		return inference.InvalidArg("repeat model '%s': %s '%s' data_type must be %s, got %s", model, kind, name, wantDT, dt)
	}
	if !slices.Equal(dims, wantDims) {
		return inference.InvalidArg("repeat model '%s': %s '%s' dims must be %v, got %v", model, kind, name, wantDims, dims)
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

// job is what a request's goroutine needs, copied out of the request's
// inputs, which it may not read once Execute has returned.
type job struct {
	in    []byte // IN's elements, m.dt.Size() bytes each
	delay []time.Duration
	wait  time.Duration
}

// Execute starts each request's responses, then waits the longest WAIT of
// the batch (the non-batching model's batches hold one request) before it
// returns. It returns early when ctx ends or the instance closes; the
// requests' goroutines still send each request its final flag.
func (i *instance) Execute(ctx context.Context, batch []*inference.Request) error {
	var wait time.Duration
	for _, req := range batch {
		j, err := i.m.parse(req)
		if err != nil {
			req.Fail(err)
			continue
		}
		out := req.Sender() // the request itself is not touched after Execute
		if !i.streams.Go(func() { i.respond(out, j) }) {
			return inference.Unavailable("repeat model '%s': the instance is closed", i.m.name)
		}
		wait = max(wait, j.wait)
	}
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-i.streams.Done():
	}
	return nil
}

// parse copies a request's inputs into a job.
func (m *model) parse(req *inference.Request) (job, error) {
	in, err := m.input(req, "IN", m.dt)
	if err != nil {
		return job{}, err
	}
	delay, err := m.input(req, "DELAY", inference.Uint32)
	if err != nil {
		return job{}, err
	}
	wait, err := m.input(req, "WAIT", inference.Uint32)
	if err != nil {
		return job{}, err
	}
	n := len(in.Data) / m.dt.Size()
	if len(delay.Data)/4 != n {
		return job{}, inference.InvalidArg("repeat model '%s': inputs IN and DELAY must have the same number of elements, got shapes %v and %v",
			m.name, in.Shape, delay.Shape)
	}
	if len(wait.Data) != 4 {
		return job{}, inference.InvalidArg("repeat model '%s': input WAIT must hold one element, got shape %v", m.name, wait.Shape)
	}
	j := job{
		in:    bytes.Clone(in.Data),
		delay: make([]time.Duration, n),
		wait:  millis(wait.Data),
	}
	for k := range j.delay {
		j.delay[k] = millis(delay.Data[4*k:])
	}
	return j, nil
}

// input returns the named input once it is known to hold whole elements
// of type dt (the server has checked it against the configuration; this
// keeps parse from slicing past the data all the same).
func (m *model) input(req *inference.Request, name string, dt inference.DataType) (*inference.Tensor, error) {
	t := req.Input(name)
	if t == nil {
		return nil, inference.InvalidArg("repeat model '%s': request has no input '%s'", m.name, name)
	}
	if t.DataType != dt || inference.ByteSize(dt, t.Shape) != int64(len(t.Data)) {
		return nil, inference.InvalidArg("repeat model '%s': input '%s' must be a %s tensor whose data fills its shape %v", m.name, name, dt, t.Shape)
	}
	return t, nil
}

func millis(le []byte) time.Duration {
	return time.Duration(binary.LittleEndian.Uint32(le)) * time.Millisecond
}

// respond sends req's responses in order. It stops early when the request
// is cancelled (then sends the final flag, which nobody may receive) or
// the instance closes (then fails the request: the stream is incomplete).
func (i *instance) respond(out inference.ResponseSender, j job) {
	size := i.m.dt.Size()
	for k, d := range j.delay {
		if out.Cancelled() {
			break
		}
		if !i.sleep(d) {
			out.Fail(inference.Unavailable("repeat model '%s' was unloaded after %d of %d responses", i.m.name, k, len(j.delay)))
			return
		}
		if out.Cancelled() {
			break // during the delay
		}
		resp := &inference.Response{Outputs: []inference.Tensor{
			{Name: "OUT", DataType: i.m.dt, Shape: []int64{1}, Data: j.in[k*size : (k+1)*size : (k+1)*size]},
			{Name: "IDX", DataType: inference.Uint32, Shape: []int64{1}, Data: binary.LittleEndian.AppendUint32(nil, uint32(k))},
		}}
		if err := out.Send(resp, false); err != nil {
			break // cancelled: stop producing
		}
	}
	// An error here means the request was cancelled meanwhile; the final
	// flag still ends it.
	_ = out.Send(nil, true)
}

// sleep waits d, or less if the instance closes; it reports whether the
// instance is still open.
func (i *instance) sleep(d time.Duration) bool {
	if d <= 0 {
		select {
		case <-i.streams.Done():
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-i.streams.Done():
		return false
	}
}

// Close stops the instance's streams, failing their requests, and waits
// for their goroutines. Later Executes fail with UNAVAILABLE.
func (i *instance) Close() error {
	i.streams.Close()
	return nil
}
