//go:build cgo

package onnxruntime

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/backends/batching"
	"github.com/nereid-project/nereid/backends/modelio"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// tensorSpec is one configured input or output, resolved for execution.
type tensorSpec struct {
	name     string
	cname    cName // C copy of name, for Run; freed by model.Close
	dt       inference.DataType
	onnxType int
	dims     []int64 // configured dims, without the batch dimension
	// reshape is the shape the model sees instead of dims, or nil.
	reshape []int64
	// fixed: every dimension known, so an output's size is known before
	// the run and ONNX Runtime can write into a buffer of ours.
	fixed bool
	// state: an implicit state output, which every run produces for the
	// sequence batcher.
	state bool
	// implicit: a sequence control or state input, which the scheduler
	// supplies rather than the client.
	implicit bool
	index    int // position in model.outputs
	// predict, for an output of open size, says where each dimension of
	// its model shape comes from, so that its size is known before the
	// first run with new input shapes; nil when the model does not say.
	predict []dimSource
}

// dimSource is where one dimension of an output's shape comes from before
// the run: a size the configuration or the model fixes, the batch size, or
// the dimension of an input that carries the same name (dim_param) in the
// model, as exporters name the batch and sequence axes an output shares
// with its inputs ("batch", "seq").
type dimSource struct {
	size  int64 // > 0: this size
	input int   // else dimension dim of model.inputs[input]; -1: the batch size
	dim   int
}

// sessionParams are the session options Triton's onnxruntime backend
// reads from the configuration.
type sessionParams struct {
	intraOp, interOp int
	parallel         bool
	level            int // ONNX Runtime's GraphOptimizationLevel
	// Triton's memory parameters: the CPU memory arena and memory pattern
	// (nil: ONNX Runtime's default, on), the arenas shrunk after every run
	// ("" none: Nereid then shrinks after large runs only), and whether
	// initializers bypass the arena.
	memArena, memPattern *bool
	shrinkArenas         string
	initializersOnDevice *bool
}

// model is one loaded version of an ONNX model.
type model struct {
	name     string
	path     string
	maxBatch int
	inputs   []*tensorSpec
	outputs  []*tensorSpec
	inputIdx map[string]int
	params   sessionParams
	// wanted lists outputs for batching.Wanted.
	wanted []batching.Output
	log    zerolog.Logger
	// modelInputs and modelOutputs are the model's own tensor names, in
	// its order, for the sessions.
	modelInputs, modelOutputs []string
}

var (
	_ backends.Model  = (*model)(nil)
	_ backends.Closer = (*model)(nil)
)

// Load checks the configuration against the model and the parameters.
// Sessions are made per instance.
func (b *Backend) Load(_ context.Context, spec backends.ModelSpec) (backends.Model, error) {
	if _, err := b.ensureRuntime(); err != nil {
		return nil, err
	}
	cfg := spec.Config
	switch {
	case len(cfg.GetBatchInput()) > 0:
		return nil, inference.Unsupported("model '%s': batch_input is not supported by the onnxruntime backend yet", spec.Name)
	case len(cfg.GetBatchOutput()) > 0:
		return nil, inference.Unsupported("model '%s': batch_output is not supported by the onnxruntime backend yet", spec.Name)
	}
	path, err := modelPath(spec.VersionDir, cfg)
	if err != nil {
		return nil, err
	}
	ins, outs, err := readModelIO(path)
	if err != nil {
		return nil, inference.InvalidArg("model '%s': %v", spec.Name, err)
	}
	if err := modelio.Validate(cfg, modelTensors(ins), modelTensors(outs), rules); err != nil {
		return nil, err
	}
	params, err := parseParams(cfg)
	if err != nil {
		return nil, inference.InvalidArg("model '%s': %v", spec.Name, err)
	}
	m := &model{
		name:     spec.Name,
		path:     path,
		maxBatch: int(cfg.GetMaxBatchSize()),
		inputIdx: map[string]int{},
		params:   params,
		log:      spec.Logger,
	}
	for _, t := range ins {
		m.modelInputs = append(m.modelInputs, t.name)
	}
	for _, t := range outs {
		m.modelOutputs = append(m.modelOutputs, t.name)
	}
	for _, in := range modelio.ConfiguredInputs(cfg) {
		t := newTensorSpec(in)
		m.inputIdx[in.Name] = len(m.inputs)
		m.inputs = append(m.inputs, t)
	}
	for k, out := range modelio.ConfiguredOutputs(cfg) {
		t := newTensorSpec(out)
		t.index = k
		m.outputs = append(m.outputs, t)
		m.wanted = append(m.wanted, batching.Output{Name: t.name, State: t.state})
	}
	m.setPredictions(ins, outs)
	if acc := cfg.GetOptimization().GetExecutionAccelerators(); len(acc.GetGpuExecutionAccelerator())+len(acc.GetCpuExecutionAccelerator()) > 0 {
		m.log.Warn().Msg("optimization.execution_accelerators (TensorRT, OpenVINO) are not supported by the onnxruntime backend yet: the model runs on the default execution provider")
	}
	return m, nil
}

// setPredictions gives each output of open size, other than BYTES, the
// rule that predicts its shape from the inputs' (tensorSpec.predict), when
// every dimension the configuration leaves open is fixed by the model or
// named after a dimension of an input. A prediction is checked by ONNX
// Runtime, which fails a run whose output does not fit the buffer it was
// given; the run is then made again without it (runGroup).
func (m *model) setPredictions(ins, outs []tensorInfo) {
	byName := func(ts []tensorInfo, name string) *tensorInfo {
		for k := range ts {
			if ts[k].name == name {
				return &ts[k]
			}
		}
		return nil
	}
	batched := m.maxBatch > 0
	for _, o := range m.outputs {
		info := byName(outs, o.name)
		if o.fixed || o.dt == inference.Bytes || info == nil {
			continue
		}
		declared := o.dims
		if o.reshape != nil {
			declared = o.reshape
		}
		if batched {
			declared = append([]int64{-1}, declared...)
		}
		if len(info.dims) != len(declared) {
			continue
		}
		rule := make([]dimSource, len(declared))
		for j := range declared {
			switch size := max(declared[j], info.dims[j]); {
			case batched && j == 0:
				rule[j] = dimSource{input: -1}
			case size > 0:
				rule[j] = dimSource{size: size}
			default:
				src, ok := m.namedInputDim(ins, info, j)
				if !ok {
					rule = nil
				}
				if rule != nil {
					rule[j] = src
				}
			}
			if rule == nil {
				break
			}
		}
		o.predict = rule
	}
}

// namedInputDim finds the first configured input with a dimension of the
// name the model gives dimension j of out.
func (m *model) namedInputDim(ins []tensorInfo, out *tensorInfo, j int) (dimSource, bool) {
	if j >= len(out.symbols) || out.symbols[j] == "" {
		return dimSource{}, false
	}
	for k, in := range m.inputs {
		for _, t := range ins {
			if t.name != in.name {
				continue
			}
			for d, name := range t.symbols {
				if name == out.symbols[j] {
					return dimSource{input: k, dim: d}, true
				}
			}
		}
	}
	return dimSource{}, false
}

func newTensorSpec(c modelio.Configured) *tensorSpec {
	dt := inference.DataType(c.Type)
	t := &tensorSpec{name: c.Name, cname: newCName(c.Name), dt: dt, dims: c.Dims, fixed: dt != inference.Bytes, state: c.State, implicit: c.Implicit}
	t.onnxType, _ = toONNX(dt)
	if c.Reshape != nil {
		t.reshape = append([]int64{}, c.Reshape.GetShape()...)
	}
	for _, d := range c.Dims {
		if d < 0 {
			t.fixed = false
		}
	}
	return t
}

// Close frees the C copies of the tensor names.
func (m *model) Close() error {
	for _, list := range [][]*tensorSpec{m.inputs, m.outputs} {
		for _, t := range list {
			freeCName(t.cname)
			t.cname = nil
		}
	}
	return nil
}

// parseParams reads Triton's session parameters. The thread counts default
// to 1: each instance runs one request at a time on one core, so instances
// add up to the cores without oversubscribing them (Triton leaves them to
// ONNX Runtime, which starts a thread per core for every session).
func parseParams(cfg *inferencepb.ModelConfig) (sessionParams, error) {
	p := sessionParams{intraOp: 1, interOp: 1, level: ortEnableAll}
	get := func(key string) (string, bool) {
		v, ok := cfg.GetParameters()[key]
		return strings.TrimSpace(v.GetStringValue()), ok
	}
	threads := func(key string, dst *int) error {
		s, ok := get(key)
		if !ok {
			return nil
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return fmt.Errorf("parameter %s: %q is not a non-negative integer", key, s)
		}
		*dst = n // 0: ONNX Runtime's default, one thread per core
		return nil
	}
	if err := threads("intra_op_thread_count", &p.intraOp); err != nil {
		return p, err
	}
	if err := threads("inter_op_thread_count", &p.interOp); err != nil {
		return p, err
	}
	flag := func(key string, dst **bool) error {
		s, ok := get(key)
		if !ok {
			return nil
		}
		var v bool
		switch strings.ToLower(s) {
		case "1", "true":
			v = true
		case "0", "false":
		default:
			return fmt.Errorf("parameter %s: %q must be 0 or 1", key, s)
		}
		*dst = &v
		return nil
	}
	if err := errors.Join(flag("enable_mem_arena", &p.memArena), flag("enable_mem_pattern", &p.memPattern),
		flag("session.use_device_allocator_for_initializers", &p.initializersOnDevice)); err != nil {
		return p, err
	}
	p.shrinkArenas, _ = get("memory.enable_memory_arena_shrinkage")
	if s, ok := get("execution_mode"); ok {
		switch s {
		case "0":
		case "1":
			p.parallel = true
		default:
			return p, fmt.Errorf("parameter execution_mode: %q must be 0 (sequential) or 1 (parallel)", s)
		}
	}
	// Triton's levels: -1 basic, 1 extended, 2 none, anything else all.
	switch cfg.GetOptimization().GetGraph().GetLevel() {
	case -1:
		p.level = ortEnableBasic
	case 1:
		p.level = ortEnableExtended
	case 2:
		p.level = ortDisableAll
	}
	return p, nil
}

// sessionConfig builds the options of one instance's session.
func (m *model) sessionConfig(spec backends.InstanceSpec) (sessionConfig, error) {
	c := sessionConfig{
		intraOp: m.params.intraOp, interOp: m.params.interOp, level: m.params.level, parallel: m.params.parallel,
		memArena: m.params.memArena, memPattern: m.params.memPattern,
	}
	if p := m.params.initializersOnDevice; p != nil {
		v := "0"
		if *p {
			v = "1"
		}
		c.entries = append(c.entries, [2]string{"session.use_device_allocator_for_initializers", v})
	}
	switch spec.Kind {
	case inferencepb.ModelInstanceGroup_KIND_CPU, inferencepb.ModelInstanceGroup_KIND_MODEL:
	case inferencepb.ModelInstanceGroup_KIND_GPU:
		c.cuda, c.device = true, spec.DeviceID
	default:
		return c, inference.Unsupported("model '%s', instance %s: instance group kind %s is not supported by the onnxruntime backend", m.name, spec.Name, spec.Kind)
	}
	return c, nil
}

// openSession opens the session of one instance.
func (m *model) openSession(spec backends.InstanceSpec) (*session, error) {
	c, err := m.sessionConfig(spec)
	if err != nil {
		return nil, err
	}
	sess, err := openSession(m.path, c)
	var noCUDA *errNoCUDA
	switch {
	case errors.As(err, &noCUDA):
		return nil, inference.Unsupported("model '%s', instance %s: KIND_GPU needs ONNX Runtime's CUDA execution provider on GPU %d, which is not available: %s. "+
			"Use KIND_CPU, or a GPU build of ONNX Runtime (the PyPI package onnxruntime-gpu carries one) with --backend-config=onnxruntime,library=PATH",
			m.name, spec.Name, spec.DeviceID, ortMessage(err))
	case err != nil:
		return nil, inference.InvalidArg("model '%s': failed to create an ONNX Runtime session for %s: %s", m.name, m.path, ortMessage(err))
	}
	return sess, nil
}

// NewInstance opens a session for the instance. The server's loader runs
// the model_warmup samples on it before it serves.
func (m *model) NewInstance(ctx context.Context, spec backends.InstanceSpec) (backends.Instance, error) {
	sess, err := m.openSession(spec)
	if err != nil {
		return nil, err
	}
	inst, err := newInstance(m, sess)
	if err != nil {
		sess.close()
		return nil, inference.Internal("model '%s', instance %s: %v", m.name, spec.Name, err)
	}
	return backends.Unary(inst), nil
}
