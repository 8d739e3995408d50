//go:build cgo

package tensorflow

import (
	"context"
	"os"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/backends/batching"
	"github.com/nereid-project/nereid/backends/modelio"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// opened is a model loaded into a graph with a session on it: one
// instance's worth.
type opened struct {
	g    *graph
	s    *session
	sig  *signature // nil for a GraphDef
	path string
}

func (o *opened) close() {
	if o.s != nil {
		_ = o.s.close()
		o.s = nil
	}
	if o.g != nil {
		o.g.close()
		o.g = nil
	}
}

// openSavedModel loads the MetaGraph tagged p.tag of the SavedModel at
// path and finds the signature p.signature in it, every tensor of which
// must be in the graph.
func openSavedModel(path string, p params, model string) (*opened, error) {
	opts, err := newSessionOptions(p.config.marshal())
	if err != nil {
		return nil, inference.Internal("model '%s': %v", model, err)
	}
	defer opts.close()
	g := newGraph()
	s, metaBytes, err := loadSavedModel(opts, path, []string{p.tag}, g)
	if err != nil {
		g.close()
		return nil, inference.Errorf(inference.CodeInvalidArg, "model '%s': unable to load the SavedModel %s with tag '%s': %w", model, path, p.tag, err)
	}
	o := &opened{g: g, s: s, path: path}
	meta, err := parseMetaGraph(metaBytes)
	if err != nil {
		o.close()
		return nil, inference.InvalidArg("model '%s': the SavedModel %s: %v", model, path, err)
	}
	sig, ok := meta.signatures[p.signature]
	if !ok {
		o.close()
		names := meta.signatureNames()
		if len(names) == 0 {
			names = []string{"none"}
		}
		return nil, inference.InvalidArg("model '%s': the SavedModel %s (tag '%s') has no signature '%s'; its signatures are: %s (parameter TF_SIGNATURE_DEF picks one)",
			model, path, p.tag, p.signature, strings.Join(names, ", "))
	}
	for _, list := range [][]signatureTensor{sig.inputs, sig.outputs} {
		for _, t := range list {
			if _, err := o.resolve(t.name); err != nil {
				o.close()
				return nil, inference.InvalidArg("model '%s': the SavedModel %s: signature '%s', tensor '%s': %v", model, path, p.signature, t.key, err)
			}
		}
	}
	o.sig = sig
	return o, nil
}

// openGraphDef imports the GraphDef at path and opens a session on it.
func openGraphDef(path string, p params, model string) (*opened, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, inference.Unavailable("model '%s': %v", model, err)
	}
	g := newGraph()
	if err := g.importGraphDef(data); err != nil {
		g.close()
		return nil, inference.Errorf(inference.CodeInvalidArg, "model '%s': unable to load the GraphDef %s: %w", model, path, err)
	}
	if len(g.operations()) == 0 {
		g.close()
		return nil, inference.InvalidArg("model '%s': the GraphDef %s has an empty network", model, path)
	}
	opts, err := newSessionOptions(p.config.marshal())
	if err != nil {
		g.close()
		return nil, inference.Internal("model '%s': %v", model, err)
	}
	defer opts.close()
	s, err := newSession(g, opts)
	if err != nil {
		g.close()
		return nil, inference.Errorf(inference.CodeInternal, "model '%s': %w", model, err)
	}
	return &opened{g: g, s: s, path: path}, nil
}

// resolve finds a graph tensor by its name, "op" or "op:index".
func (o *opened) resolve(name string) (output, error) {
	op, index, err := splitTensorName(name)
	if err != nil {
		return output{}, err
	}
	t, ok := o.g.tensor(op, index)
	if !ok {
		return output{}, inference.InvalidArg("the graph has no tensor '%s'", name)
	}
	return t, nil
}

// graphTensor describes a graph tensor for modelio, named as the
// configuration names it.
func (o *opened) graphTensor(configName string, t output) (modelio.Tensor, error) {
	typ := outputType(t)
	dt, _ := dataTypeOf(typ)
	dims, known, err := o.g.outputShape(t)
	if err != nil {
		return modelio.Tensor{}, err
	}
	if !known {
		dims = nil
	}
	return modelio.Tensor{Name: configName, DataType: dt, TypeName: tfTypeName(typ), Dims: dims}, nil
}

// tensorSpec is one configured input or output, resolved for execution.
type tensorSpec struct {
	name   string // as configured
	graph  string // the graph tensor it is fed to or fetched from
	dt     inference.DataType
	tfType int
	dims   []int64 // configured dims, without the batch dimension
	// reshape is the shape the model sees instead of dims, or nil.
	reshape  []int64
	state    bool
	implicit bool
}

// model is one loaded version of a TensorFlow model.
type model struct {
	name       string
	path       string
	savedModel bool
	params     params
	maxBatch   int
	inputs     []*tensorSpec
	outputs    []*tensorSpec
	inputIdx   map[string]int
	wanted     []batching.Output // outputs, for batching.Wanted
	log        zerolog.Logger

	mu sync.Mutex // guards spare
	// spare is the session Load opened to check the model, handed to the
	// first instance.
	spare *opened
}

var (
	_ backends.Model  = (*model)(nil)
	_ backends.Closer = (*model)(nil)
)

// Load opens the model once and checks the configuration against it.
// Each instance has its own session.
func (b *Backend) Load(_ context.Context, spec backends.ModelSpec) (backends.Model, error) {
	if err := b.ensureLibrary(); err != nil {
		return nil, err
	}
	cfg := spec.Config
	switch {
	case len(cfg.GetBatchInput()) > 0:
		return nil, inference.Unsupported("model '%s': batch_input is not supported by the tensorflow backend yet", spec.Name)
	case len(cfg.GetBatchOutput()) > 0:
		return nil, inference.Unsupported("model '%s': batch_output is not supported by the tensorflow backend yet", spec.Name)
	}
	savedModel, err := isSavedModel(cfg)
	if err != nil {
		return nil, err
	}
	path, err := modelPath(spec.VersionDir, cfg, savedModel)
	if err != nil {
		return nil, err
	}
	p, err := parseParams(cfg, b.options().AllowSoftPlacement)
	if err != nil {
		return nil, err
	}
	m := &model{
		name:       spec.Name,
		path:       path,
		savedModel: savedModel,
		params:     p,
		maxBatch:   int(cfg.GetMaxBatchSize()),
		inputIdx:   map[string]int{},
		log:        spec.Logger,
	}
	o, err := m.open()
	if err != nil {
		return nil, err
	}
	m.spare = o
	if err := m.resolveConfig(cfg, o); err != nil {
		_ = m.Close()
		return nil, err
	}
	return m, nil
}

func (m *model) open() (*opened, error) {
	if m.savedModel {
		return openSavedModel(m.path, m.params, m.name)
	}
	return openGraphDef(m.path, m.params, m.name)
}

// resolveConfig checks the configuration against the opened model and
// builds the tensor specs: by signature key for a SavedModel, by graph
// tensor name for a GraphDef.
func (m *model) resolveConfig(cfg *inferencepb.ModelConfig, o *opened) error {
	cfgIns, cfgOuts := modelio.ConfiguredInputs(cfg), modelio.ConfiguredOutputs(cfg)
	graphName := map[string]string{}
	if o.sig != nil {
		ins, outs := o.sig.modelTensors()
		if err := modelio.Validate(cfg, ins, outs, rules); err != nil {
			return err
		}
		for _, t := range o.sig.inputs {
			graphName[t.key] = t.name
		}
		for _, t := range o.sig.outputs {
			graphName[t.key] = t.name
		}
	} else if err := m.validateGraphDef(cfg, o, cfgIns, cfgOuts); err != nil {
		return err
	}
	for _, c := range cfgIns {
		t := newTensorSpec(c, graphName)
		m.inputIdx[t.name] = len(m.inputs)
		m.inputs = append(m.inputs, t)
	}
	for _, c := range cfgOuts {
		t := newTensorSpec(c, graphName)
		m.outputs = append(m.outputs, t)
		m.wanted = append(m.wanted, batching.Output{Name: t.name, State: t.state})
	}
	return nil
}

// validateGraphDef checks a GraphDef's configuration with Triton's naming
// rules: an input names a Placeholder of the graph, an output any tensor
// ("op" for op:0, or "op:index"), and every Placeholder is configured.
func (m *model) validateGraphDef(cfg *inferencepb.ModelConfig, o *opened, ins, outs []modelio.Configured) error {
	configured := map[string]bool{}
	for kind, list := range map[string][]modelio.Configured{"input": ins, "output": outs} {
		for _, c := range list {
			t, err := o.resolve(c.Name)
			if err != nil {
				return inference.InvalidArg("model '%s': the GraphDef %s has no tensor '%s' for the configured %s: %v", m.name, m.path, c.Name, kind, err)
			}
			if kind == "input" {
				op, _, _ := splitTensorName(c.Name)
				if typ := opTypeOf(o, op); typ != "Placeholder" {
					return inference.InvalidArg("model '%s': the configured input '%s' of the GraphDef %s is a %s operation, not a Placeholder", m.name, c.Name, m.path, typ)
				}
				configured[op] = true
			}
			mt, err := o.graphTensor(c.Name, t)
			if err != nil {
				return inference.InvalidArg("model '%s': the GraphDef %s, tensor '%s': %v", m.name, m.path, c.Name, err)
			}
			if err := modelio.CheckTensor(cfg, kind, mt, c, rules); err != nil {
				return err
			}
		}
	}
	for _, op := range o.g.operations() {
		if op.opType == "Placeholder" && !configured[op.name] {
			return inference.InvalidArg("model '%s': the GraphDef %s has the Placeholder '%s', which the configuration does not name as an input", m.name, m.path, op.name)
		}
	}
	return nil
}

func opTypeOf(o *opened, op string) string {
	for _, x := range o.g.operations() {
		if x.name == op {
			return x.opType
		}
	}
	return ""
}

func newTensorSpec(c modelio.Configured, graphName map[string]string) *tensorSpec {
	dt := inference.DataType(c.Type)
	t := &tensorSpec{name: c.Name, graph: c.Name, dt: dt, tfType: tfTypes[dt], dims: c.Dims, state: c.State, implicit: c.Implicit}
	if g, ok := graphName[c.Name]; ok {
		t.graph = g
	}
	if c.Reshape != nil {
		t.reshape = append([]int64{}, c.Reshape.GetShape()...)
	}
	return t
}

// Close releases the session Load opened if no instance took it.
func (m *model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.spare != nil {
		m.spare.close()
		m.spare = nil
	}
	return nil
}

// NewInstance opens a session for the instance (the one Load opened, for
// the first). The server's loader runs the model_warmup samples on it
// before it serves.
func (m *model) NewInstance(ctx context.Context, spec backends.InstanceSpec) (backends.Instance, error) {
	switch spec.Kind {
	case inferencepb.ModelInstanceGroup_KIND_CPU, inferencepb.ModelInstanceGroup_KIND_MODEL:
	case inferencepb.ModelInstanceGroup_KIND_GPU:
		return nil, inference.Unsupported("model '%s', instance %s: KIND_GPU is not supported by Nereid's tensorflow backend, which loads the CPU build of TensorFlow: use KIND_CPU",
			m.name, spec.Name)
	default:
		return nil, inference.Unsupported("model '%s', instance %s: instance group kind %s is not supported by the tensorflow backend", m.name, spec.Name, spec.Kind)
	}
	m.mu.Lock()
	o := m.spare
	m.spare = nil
	m.mu.Unlock()
	if o == nil {
		var err error
		if o, err = m.open(); err != nil {
			return nil, err
		}
	}
	inst, err := newInstance(m, o)
	if err != nil {
		o.close()
		return nil, inference.Errorf(inference.CodeOf(err), "model '%s', instance %s: %w", m.name, spec.Name, err)
	}
	return backends.Unary(inst), nil
}
