package ensemble

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// Configs answers the configuration of a loaded model version; version ""
// is the one the model serves by default.
type Configs interface {
	ModelConfig(ctx context.Context, name, version string) (*inferencepb.ModelConfig, error)
}

// Plan is a validated ensemble.
type Plan struct {
	name    string
	version int64
	steps   []*step
	// inputs are the ensemble's inputs; outputs the tensors that make a
	// response, in the configuration's order.
	inputs  []string
	outputs []string
	// consumers lists, for each ensemble tensor, the steps that read it.
	consumers map[string][]int
	// decoupled: some step's model is, so the ensemble answers 0..N times.
	decoupled bool
	// scope is, for each step, the decoupled step whose responses start
	// the frames it runs in (-1: the root frame); answering, the one whose
	// frames hold the ensemble's outputs.
	scope     []int
	answering int
	// tensors counts the ensemble tensors, to size a frame: each has a
	// slot, its index in a frame's tensors; slots maps names to them, and
	// outputSlots are the outputs' slots in the order of outputs.
	tensors     int
	slots       map[string]int
	outputSlots []int
}

// step is one ensemble step, resolved against its model.
type step struct {
	index     int
	model     string
	version   string    // "" for -1, the model's default
	inputs    []binding // model input ← ensemble tensor
	outputs   []binding // model output → ensemble tensor
	decoupled bool
	// router: the step's model is a route model, which answers with one of
	// its outputs; the steps that read the others do not run.
	router bool
	// requested are the outputs the step's requests ask for (nil for a
	// router, which answers with the one it picks); shared by every
	// request, which the server only reads.
	requested []inference.RequestedOutput
}

// routeBackend is the built-in backend whose models pick a branch.
const routeBackend = "route"

// binding ties a tensor of a step's model to an ensemble tensor.
type binding struct {
	model    string // the tensor's name in the step's model
	ensemble string // the ensemble tensor
	slot     int    // the ensemble tensor's slot in a frame
}

// Decoupled reports whether the ensemble may answer other than once.
func (p *Plan) Decoupled() bool { return p.decoupled }

// tensorSpec is what validation knows about a tensor: its type, and its
// full shape (the batch dimension first, -1, when the model batches).
type tensorSpec struct {
	dt    inferencepb.DataType
	shape []int64
	where string // for messages: "ensemble input X", "output Y of model M (step 2)"
}

func fullShape(dims []int64, maxBatch int32) []int64 {
	if maxBatch > 0 {
		return append([]int64{-1}, dims...)
	}
	return slices.Clone(dims)
}

// compatible reports whether two full shapes can describe the same tensor:
// the same rank, and equal dimensions where neither is variable.
func compatible(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && a[i] != -1 && b[i] != -1 {
			return false
		}
	}
	return true
}

// Build validates the ensemble cfg (whose ensemble_scheduling the
// repository has checked for form) against its composing models, which
// must be loaded, and returns its Plan. Errors name the ensemble, the step
// and the tensor.
func Build(ctx context.Context, cfg *inferencepb.ModelConfig, version int64, models Configs) (*Plan, error) {
	name := cfg.GetName()
	p := &Plan{name: name, version: version, consumers: map[string][]int{}}
	fail := func(format string, args ...any) error {
		return inference.InvalidArg("ensemble '%s': "+format, append([]any{name}, args...)...)
	}

	// What each ensemble tensor is, as its producer says.
	produced := map[string]tensorSpec{}
	// The steps that produce each tensor: one, or several on exclusive
	// branches of a route step; nil for an ensemble input.
	producer := map[string][]int{}
	for _, in := range cfg.GetInput() {
		produced[in.GetName()] = tensorSpec{in.GetDataType(), fullShape(in.GetDims(), cfg.GetMaxBatchSize()), "ensemble input '" + in.GetName() + "'"}
		producer[in.GetName()] = nil
		p.inputs = append(p.inputs, in.GetName())
	}

	type stepModel struct {
		cfg     *inferencepb.ModelConfig
		inputs  map[string]*inferencepb.ModelInput
		outputs map[string]*inferencepb.ModelOutput
	}
	stepModels := make([]stepModel, len(cfg.GetEnsembleScheduling().GetStep()))
	for i, s := range cfg.GetEnsembleScheduling().GetStep() {
		st := &step{index: i, model: s.GetModelName()}
		if v := s.GetModelVersion(); v >= 0 {
			st.version = strconv.FormatInt(v, 10)
		}
		mc, err := models.ModelConfig(ctx, st.model, st.version)
		if err != nil {
			return nil, fail("step %d: composing model '%s' is not available: %v", i, st.model, err)
		}
		if mc.GetMaxBatchSize() < cfg.GetMaxBatchSize() {
			return nil, fail("allows maximum batch size %d, but it contains model '%s' (step %d) which only allows maximum batch size %d",
				cfg.GetMaxBatchSize(), st.model, i, mc.GetMaxBatchSize())
		}
		st.decoupled = mc.GetModelTransactionPolicy().GetDecoupled()
		st.router = mc.GetBackend() == routeBackend
		p.decoupled = p.decoupled || st.decoupled
		sm := stepModel{cfg: mc, inputs: map[string]*inferencepb.ModelInput{}, outputs: map[string]*inferencepb.ModelOutput{}}
		for _, in := range mc.GetInput() {
			sm.inputs[in.GetName()] = in
		}
		for _, out := range mc.GetOutput() {
			sm.outputs[out.GetName()] = out
		}
		stepModels[i] = sm
		for _, k := range slices.Sorted(maps.Keys(s.GetInputMap())) {
			if sm.inputs[k] == nil {
				return nil, fail("step %d: model '%s' has no input '%s' (input_map maps it from ensemble tensor '%s')", i, st.model, k, s.GetInputMap()[k])
			}
			st.inputs = append(st.inputs, binding{model: k, ensemble: s.GetInputMap()[k]})
		}
		for _, in := range mc.GetInput() {
			if _, ok := s.GetInputMap()[in.GetName()]; !ok && !in.GetOptional() && !isControl(mc, in.GetName()) {
				return nil, fail("step %d: input '%s' of model '%s' is not mapped from any ensemble tensor in input_map", i, in.GetName(), st.model)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(s.GetOutputMap())) {
			out := sm.outputs[k]
			if out == nil {
				return nil, fail("step %d: model '%s' has no output '%s' (output_map maps it to ensemble tensor '%s')", i, st.model, k, s.GetOutputMap()[k])
			}
			t := s.GetOutputMap()[k]
			spec := tensorSpec{out.GetDataType(), fullShape(out.GetDims(), mc.GetMaxBatchSize()),
				fmt.Sprintf("output '%s' of model '%s' (step %d)", k, st.model, i)}
			if prev, ok := producer[t]; ok {
				if prev == nil {
					return nil, fail("step %d: ensemble tensor '%s' is an input of the ensemble and cannot also be the output '%s' of model '%s'", i, t, k, st.model)
				}
				// Allowed on exclusive branches (checked below, once every
				// step is known), with the same type and shape.
				if first := produced[t]; first.dt != spec.dt || !compatible(first.shape, spec.shape) {
					return nil, fail("ensemble tensor '%s' is %s %v as %s but %s %v as %s", t, typeName(first.dt), first.shape, first.where, typeName(spec.dt), spec.shape, spec.where)
				}
			} else {
				produced[t] = spec
			}
			producer[t] = append(producer[t], i)
			st.outputs = append(st.outputs, binding{model: k, ensemble: t})
		}
		p.steps = append(p.steps, st)
	}

	// Every read tensor exists and agrees with its producer.
	for i, st := range p.steps {
		for _, b := range st.inputs {
			src, ok := produced[b.ensemble]
			if !ok {
				return nil, fail("step %d: ensemble tensor '%s' (input '%s' of model '%s') is neither an ensemble input nor any step's output", i, b.ensemble, b.model, st.model)
			}
			in := stepModels[i].inputs[b.model]
			want := tensorSpec{in.GetDataType(), fullShape(in.GetDims(), stepModels[i].cfg.GetMaxBatchSize()), ""}
			if src.dt != want.dt {
				return nil, fail("step %d: input '%s' of model '%s' is %s, but its ensemble tensor '%s' is %s (%s)",
					i, b.model, st.model, typeName(want.dt), b.ensemble, typeName(src.dt), src.where)
			}
			if len(in.GetReshape().GetShape()) == 0 && !compatible(src.shape, want.shape) {
				return nil, fail("step %d: input '%s' of model '%s' has shape %v, but its ensemble tensor '%s' has shape %v (%s)",
					i, b.model, st.model, want.shape, b.ensemble, src.shape, src.where)
			}
			p.consumers[b.ensemble] = append(p.consumers[b.ensemble], i)
		}
	}
	for _, out := range cfg.GetOutput() {
		src, ok := produced[out.GetName()]
		if !ok || producer[out.GetName()] == nil {
			return nil, fail("ensemble output '%s' is not produced by any step (no output_map maps to it)", out.GetName())
		}
		if src.dt != out.GetDataType() {
			return nil, fail("ensemble output '%s' is %s, but it is %s, which is %s", out.GetName(), typeName(out.GetDataType()), src.where, typeName(src.dt))
		}
		if want := fullShape(out.GetDims(), cfg.GetMaxBatchSize()); !compatible(src.shape, want) {
			return nil, fail("ensemble output '%s' has shape %v, but it is %s, with shape %v", out.GetName(), want, src.where, src.shape)
		}
		p.outputs = append(p.outputs, out.GetName())
	}
	for _, in := range p.inputs {
		if len(p.consumers[in]) == 0 {
			return nil, fail("ensemble input '%s' is not read by any step", in)
		}
	}
	p.tensors = len(produced)
	if err := p.checkAcyclic(producer); err != nil {
		return nil, fail("%v", err)
	}
	if err := p.checkExclusive(producer); err != nil {
		return nil, err
	}
	if err := p.resolveScopes(producer); err != nil {
		return nil, fail("%v", err)
	}
	p.assignSlots(produced)
	return p, nil
}

// assignSlots numbers the ensemble tensors, so that a request's frames
// hold them in slices indexed by slot rather than in maps by name.
func (p *Plan) assignSlots(produced map[string]tensorSpec) {
	names := make([]string, 0, len(produced))
	for n := range produced {
		names = append(names, n)
	}
	slices.Sort(names)
	p.slots = make(map[string]int, len(names))
	for i, n := range names {
		p.slots[n] = i
	}
	for _, s := range p.steps {
		for k := range s.inputs {
			s.inputs[k].slot = p.slots[s.inputs[k].ensemble]
		}
		for k := range s.outputs {
			s.outputs[k].slot = p.slots[s.outputs[k].ensemble]
		}
	}
	for _, s := range p.steps {
		if !s.router {
			s.requested = make([]inference.RequestedOutput, len(s.outputs))
			for k, b := range s.outputs {
				s.requested[k] = inference.RequestedOutput{Name: b.model}
			}
		}
	}
	p.outputSlots = make([]int, len(p.outputs))
	for k, o := range p.outputs {
		p.outputSlots[k] = p.slots[o]
	}
}

// resolveScopes works out, for a plan with decoupled steps, which frame
// each step runs in and which frames answer (see frame): a step runs in the
// frames its nearest decoupled ancestor starts (the root when it has none),
// and the ensemble answers from the frames of the nearest decoupled step
// above its outputs. The decoupled steps above any one step, and above the
// outputs, must therefore lie on one chain.
func (p *Plan) resolveScopes(producer map[string][]int) error {
	n := len(p.steps)
	anc := make([]map[int]bool, n) // the steps each step depends on
	var ancestors func(i int) map[int]bool
	ancestors = func(i int) map[int]bool {
		if anc[i] != nil {
			return anc[i]
		}
		a := map[int]bool{}
		for _, b := range p.steps[i].inputs {
			for _, j := range producer[b.ensemble] {
				a[j] = true
				for k := range ancestors(j) {
					a[k] = true
				}
			}
		}
		anc[i] = a
		return a
	}
	// nearest returns the decoupled step of set below all others in it
	// (-1 for none), or an error when two of them are independent.
	nearest := func(set map[int]bool, what string) (int, error) {
		best := -1
		for d := range set {
			if !p.steps[d].decoupled {
				continue
			}
			switch {
			case best < 0 || ancestors(d)[best]:
				best = d
			case ancestors(best)[d]:
			default:
				return 0, fmt.Errorf("%s depends on the decoupled steps %d and %d, neither of which feeds the other: their responses cannot be paired", what, min(best, d), max(best, d))
			}
		}
		return best, nil
	}
	p.scope = make([]int, n)
	for i := range p.steps {
		d, err := nearest(ancestors(i), fmt.Sprintf("step %d (model '%s')", i, p.steps[i].model))
		if err != nil {
			return err
		}
		p.scope[i] = d
	}
	above := map[int]bool{}
	for _, o := range p.outputs {
		for _, j := range producer[o] {
			above[j] = true
			for k := range ancestors(j) {
				above[k] = true
			}
		}
	}
	d, err := nearest(above, "the ensemble's outputs")
	if err != nil {
		return err
	}
	p.answering = d
	return nil
}

// inScope reports whether step i runs in the frames that step creator's
// responses start (-1: the root frame).
func (p *Plan) inScope(creator, i int) bool { return p.scope[i] == creator }

// emits reports whether the frames started by creator answer the request.
func (p *Plan) emits(creator int) bool { return p.answering == creator }

// checkAcyclic fails when a step needs, through other steps, its own
// output.
func (p *Plan) checkAcyclic(producer map[string][]int) error {
	const (
		unseen = iota
		active
		done
	)
	state := make([]int, len(p.steps))
	var visit func(i int, path []int) error
	visit = func(i int, path []int) error {
		switch state[i] {
		case done:
			return nil
		case active:
			return fmt.Errorf("steps %v form a cycle", append(path, i))
		}
		state[i] = active
		for _, b := range p.steps[i].inputs {
			for _, j := range producer[b.ensemble] {
				if err := visit(j, append(path, i)); err != nil {
					return err
				}
			}
		}
		state[i] = done
		return nil
	}
	for i := range p.steps {
		if err := visit(i, nil); err != nil {
			return err
		}
	}
	return nil
}

// isControl reports whether name is a sequence batcher's control or state
// input of mc, which the model's scheduler supplies.
func isControl(mc *inferencepb.ModelConfig, name string) bool {
	sb := mc.GetSequenceBatching()
	for _, c := range sb.GetControlInput() {
		if c.GetName() == name {
			return true
		}
	}
	for _, s := range sb.GetState() {
		if s.GetInputName() == name {
			return true
		}
	}
	return false
}

func typeName(dt inferencepb.DataType) string { return inference.DataType(dt).String() }

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// branch is one output of a route step.
type branch struct {
	step   int
	output string
}

// checkExclusive allows a tensor several producers only when, for each
// pair, one lies downstream of one output of a route step and the other
// downstream of another output of the same route step: one request then
// runs at most one of them.
func (p *Plan) checkExclusive(producer map[string][]int) error {
	deps := make([]map[branch]bool, len(p.steps)) // the branches each step lies on
	var on func(i int) map[branch]bool
	on = func(i int) map[branch]bool {
		if deps[i] != nil {
			return deps[i]
		}
		d := map[branch]bool{}
		deps[i] = d
		for _, b := range p.steps[i].inputs {
			for _, j := range producer[b.ensemble] {
				if p.steps[j].router {
					for _, o := range p.steps[j].outputs {
						if o.ensemble == b.ensemble {
							d[branch{j, o.model}] = true
						}
					}
				}
				for k := range on(j) {
					d[k] = true
				}
			}
		}
		return d
	}
	exclusive := func(a, b int) bool {
		for x := range on(a) {
			for y := range on(b) {
				if x.step == y.step && x.output != y.output {
					return true
				}
			}
		}
		return false
	}
	for _, t := range slices.Sorted(maps.Keys(producer)) {
		ps := producer[t]
		for x := range ps {
			for y := x + 1; y < len(ps); y++ {
				if !exclusive(ps[x], ps[y]) {
					// Triton's text; Nereid's exception is explained after it.
					return inference.InvalidArg("ensemble tensor '%s' can appear in an output map only once for ensemble '%s' step %d "+
						"(step %d writes it too; only steps on different branches of one '%s' step may write the same tensor)", t, p.name, ps[y], ps[x], routeBackend)
				}
			}
		}
	}
	return nil
}
