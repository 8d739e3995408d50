package ensemble

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
)

// Executor is an ensemble's scheduler: it runs each request through the
// Plan, sending the steps to their models through an Inferer (the server).
type Executor struct {
	plan    *Plan
	inferer backends.Inferer
	version string

	mu      sync.Mutex
	closed  bool
	running sync.WaitGroup
}

// NewExecutor returns the scheduler of an ensemble version.
func NewExecutor(p *Plan, inferer backends.Inferer) *Executor {
	return &Executor{plan: p, inferer: inferer, version: itoa(p.version)}
}

// Infer runs req and returns once every step has ended. The ensemble's
// responses go through req's sender: one, with the final flag, or, when a
// step is decoupled, one per complete set of outputs and then the final
// flag alone. A failure is returned (and the steps still running are
// cancelled); responses already sent stay sent.
func (e *Executor) Infer(ctx context.Context, req *inference.Request) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return inference.Unavailable("ensemble '%s' is unloading", e.plan.name)
	}
	e.running.Add(1)
	e.mu.Unlock()
	defer e.running.Done()

	r := newRun(ctx, e, req)
	return r.execute()
}

// Ready reports whether every composing model is served, so that the
// ensemble can run (its version is loaded, but a composing model may have
// been unloaded since).
func (e *Executor) Ready(ctx context.Context) bool {
	configs, ok := e.inferer.(Configs)
	if !ok {
		return true
	}
	for _, s := range e.plan.steps {
		if _, err := configs.ModelConfig(ctx, s.model, s.version); err != nil {
			return false
		}
	}
	return true
}

// Close refuses new requests and waits for the running ones.
func (e *Executor) Close() {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.running.Wait()
}

// run is one request going through the plan.
type run struct {
	e      *Executor
	req    *inference.Request
	ctx    context.Context //nolint:containedctx // the request's, cancelled on the first failure
	cancel context.CancelFunc
	steps  sync.WaitGroup
	sendMu sync.Mutex // held while a response is sent

	mu   sync.Mutex // guards the fields below
	root *frame
	err  error // the first failure
	// results holds the complete response of a plan that is not decoupled
	// (its root frame answers once), sent at the end; a decoupled plan's
	// responses are sent as they come.
	results []*inference.Response
	// held are the step responses whose tensors the frames use; memory is
	// their backends' until released, which happens when the run and every
	// response sent from it are done (refs).
	held []*inference.Response
	refs atomic.Int32
}

// frame is one set of ensemble tensors. The request's inputs start the
// root frame; every response of a decoupled step starts a child frame with
// its parent's tensors and that response's, in which the steps downstream
// of the decoupled step run.
type frame struct {
	creator int // the decoupled step whose response started it; -1: root
	// tensors holds the ensemble tensors by slot (Plan.slots); have marks
	// the slots filled.
	tensors  []inference.Tensor
	have     []bool
	started  []bool
	children []*frame
	emitted  bool
}

func newRun(ctx context.Context, e *Executor, req *inference.Request) *run {
	r := &run{e: e, req: req}
	r.ctx, r.cancel = context.WithCancel(ctx)
	r.refs.Store(1)
	return r
}

// newFrame returns a frame holding from's tensors (none when from is nil)
// with no step started.
func (r *run) newFrame(creator int, from *frame) *frame {
	p := r.e.plan
	f := &frame{creator: creator, tensors: make([]inference.Tensor, p.tensors), have: make([]bool, p.tensors), started: make([]bool, len(p.steps))}
	if from != nil {
		copy(f.tensors, from.tensors)
		copy(f.have, from.have)
	}
	return f
}

// slotted is an ensemble tensor with its slot.
type slotted struct {
	slot int
	t    inference.Tensor
}

func (r *run) execute() error {
	defer r.cancel()
	p := r.e.plan
	r.mu.Lock()
	r.root = r.newFrame(-1, nil)
	for _, t := range r.req.Inputs {
		if k, ok := p.slots[t.Name]; ok {
			r.root.tensors[k], r.root.have[k] = t, true
		}
	}
	ready := r.readyLocked(r.root)
	r.mu.Unlock()
	r.steps.Add(1)
	r.runChain(ready) // on this goroutine, which would only wait
	r.steps.Wait()

	r.mu.Lock()
	err, results := r.err, r.results
	r.mu.Unlock()
	defer r.unref()
	if err != nil {
		for _, resp := range results {
			resp.Done() // never sent
		}
		return err
	}
	if p.decoupled {
		return r.req.Send(nil, true)
	}
	if len(results) == 0 {
		r.mu.Lock()
		var missing []string
		for k, o := range p.outputs {
			if !r.root.have[p.outputSlots[k]] {
				missing = append(missing, "'"+o+"'")
			}
		}
		r.mu.Unlock()
		return inference.InvalidArg("ensemble '%s' produced no output %s for the request: no branch of its route steps that leads there was taken", p.name, strings.Join(missing, ", "))
	}
	// One frame, the root, answers a plan that is not decoupled, once.
	return r.req.Send(results[0], true)
}

// started is a step ready to run in a frame.
type started struct {
	f *frame
	s *step
}

// readyLocked marks and returns the steps of f's scope whose inputs all
// exist in f and that have not started there.
func (r *run) readyLocked(f *frame) []started {
	var out []started
	for i, s := range r.e.plan.steps {
		if f.started[i] || !r.e.plan.inScope(f.creator, i) {
			continue
		}
		all := true
		for _, b := range s.inputs {
			if !f.have[b.slot] {
				all = false
				break
			}
		}
		if all {
			f.started[i] = true
			out = append(out, started{f, s})
		}
	}
	return out
}

// runChain runs ready steps: all but the first on goroutines of their own,
// the first on this one, followed by the first of the steps it makes ready,
// and so on, so that a chain of steps runs on one goroutine (whose stack
// has grown already) without a hand-off per step. The caller has counted
// this goroutine in r.steps.
func (r *run) runChain(ready []started) {
	defer r.steps.Done()
	for len(ready) > 0 {
		r.spawn(ready[1:])
		ready = r.runStep(ready[0].f, ready[0].s)
	}
}

// spawn runs each of ready on a goroutine of its own.
func (r *run) spawn(ready []started) {
	for _, st := range ready {
		r.steps.Add(1)
		go r.runChain([]started{st})
	}
}

// runStep sends one step to its model, takes in its responses, and returns
// the steps they made ready that have not been started (those after a
// decoupled step's responses start at once, while it is still answering).
func (r *run) runStep(f *frame, s *step) []started {
	req := &inference.Request{
		ID:           r.req.ID,
		ModelName:    s.model,
		ModelVersion: s.version,
		Inputs:       make([]inference.Tensor, len(s.inputs)),
		Outputs:      s.requested,
		Parameters:   r.req.Parameters,
	}
	r.mu.Lock()
	for k, b := range s.inputs {
		t := f.tensors[b.slot]
		t.Name = b.model
		req.Inputs[k] = t
	}
	r.mu.Unlock()
	// A sampled ensemble request traces each step as its child.
	var (
		span  inference.Span
		start time.Time
		// What the responses leave, in one variable for the callback.
		got struct {
			next    []started
			version string // the answering version, for the trace
		}
	)
	if r.req.Span != nil {
		span = r.req.Span.Child(s.model)
		span.Attach(req)
		start = time.Now()
	}
	err := r.e.inferer.InferStream(r.ctx, req, func(resp *inference.Response, _ bool) error {
		if resp == nil {
			return nil
		}
		got.version = resp.ModelVersion
		ready, err := r.deliver(f, s, resp)
		if s.decoupled {
			r.spawn(ready)
		} else {
			got.next = append(got.next, ready...)
		}
		return err
	})
	if span != nil {
		span.Served(req, got.version, start, time.Now())
		span.Finish()
	}
	if err != nil {
		r.fail(s, err)
		return nil
	}
	return got.next
}

// deliver takes in one response of step s, run in frame f: its tensors join
// f (or, for a decoupled step, a new child frame), and the steps that now
// have their inputs are returned, to be started.
func (r *run) deliver(f *frame, s *step, resp *inference.Response) ([]started, error) {
	r.mu.Lock()
	r.held = append(r.held, resp)
	if r.err != nil {
		r.mu.Unlock()
		return nil, r.err
	}
	outs := make([]slotted, 0, len(s.outputs))
	for _, b := range s.outputs {
		var found bool
		for _, t := range resp.Outputs {
			if t.Name == b.model {
				t.Name = b.ensemble
				outs, found = append(outs, slotted{b.slot, t}), true
				break
			}
		}
		if !found && s.router {
			continue // a branch not taken: the steps that read it do not run
		}
		if !found {
			r.mu.Unlock()
			err := inference.Internal("ensemble '%s': model '%s' (step %d) answered without its output '%s'", r.e.plan.name, s.model, s.index, b.model)
			r.fail(nil, err)
			return nil, err
		}
	}
	target := f
	if s.decoupled {
		target = r.newFrame(s.index, f)
		copy(target.started, f.started)
		f.children = append(f.children, target)
	}
	ready := r.addLocked(target, outs)
	var emit []*inference.Response
	r.collectLocked(r.root, &emit)
	r.mu.Unlock()

	if len(emit) > 0 {
		// One Send at a time (the ResponseSender contract), in the order
		// the frames completed.
		r.sendMu.Lock()
		for k, resp := range emit {
			if err := r.req.Send(resp, false); err != nil {
				for _, rest := range emit[k:] {
					rest.Done()
				}
				r.sendMu.Unlock()
				r.fail(nil, err)
				return nil, err
			}
		}
		r.sendMu.Unlock()
	}
	return ready, nil
}

// addLocked puts tensors into f and the frames forked from it, and returns
// the steps that became ready.
func (r *run) addLocked(f *frame, tensors []slotted) []started {
	for _, st := range tensors {
		if !f.have[st.slot] {
			f.tensors[st.slot], f.have[st.slot] = st.t, true
		}
	}
	ready := r.readyLocked(f)
	for _, c := range f.children {
		ready = append(ready, r.addLocked(c, tensors)...)
	}
	return ready
}

// collectLocked makes the response of every frame that now holds all the
// ensemble's outputs and answers for them: a decoupled plan's are returned
// in emit to be sent at once; the one of a plan that is not is kept for the
// end.
func (r *run) collectLocked(f *frame, emit *[]*inference.Response) {
	p := r.e.plan
	if !f.emitted && p.emits(f.creator) {
		outs := make([]inference.Tensor, 0, len(p.outputs))
		for _, k := range p.outputSlots {
			if !f.have[k] {
				break
			}
			outs = append(outs, f.tensors[k])
		}
		if len(outs) == len(p.outputs) {
			f.emitted = true
			r.refs.Add(1)
			resp := &inference.Response{ID: r.req.ID, ModelName: p.name, ModelVersion: r.e.version, Outputs: outs, Release: r.unref}
			if p.decoupled {
				*emit = append(*emit, resp)
			} else {
				r.results = append(r.results, resp)
			}
		}
	}
	for _, c := range f.children {
		r.collectLocked(c, emit)
	}
}

// fail records the first failure and cancels the steps still running.
func (r *run) fail(s *step, err error) {
	if s != nil && inference.CodeOf(err) != inference.CodeCancelled {
		err = inference.Errorf(inference.CodeOf(err), "ensemble '%s' step %d (model '%s'): %w", r.e.plan.name, s.index, s.model, err)
	}
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
	r.cancel()
}

// unref drops one reference to the step responses; the last frees them.
func (r *run) unref() {
	if r.refs.Add(-1) != 0 {
		return
	}
	r.mu.Lock()
	held := r.held
	r.held = nil
	r.mu.Unlock()
	for _, resp := range held {
		resp.Done()
	}
}
