//go:build cgo

package onnxruntime

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/backends/batching"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/payload"
)

// instance is one ONNX Runtime session. The scheduler calls Execute from
// one goroutine at a time, so the scratch fields need no lock.
type instance struct {
	m    *model
	sess *session
	// x describes each run to C, which makes the values, runs and
	// releases them in one call.
	x  *execArgs
	ro *runOptions
	// shrink, made at the first large run, shrinks the memory arena at the
	// end of a run (newShrinkingRunOptions). A run with LargeSize of input
	// or more uses it, and so does the run after it, which frees the
	// regions that held the large run's outputs until they were copied.
	shrink     *runOptions
	shrinkNext bool
	// cancelling counts a cancellation callback that may still be
	// setting the terminate flag; the next run waits for it first.
	// onCancel is that callback, made once; it terminates cancelRO.
	cancelling sync.WaitGroup
	onCancel   func()
	cancelRO   *runOptions

	// outShapes remembers, by the shapes of a run's inputs, the shapes of
	// the outputs whose size the configuration leaves open (indexed like
	// model.outputs), so that the next run with the same input shapes has
	// ONNX Runtime write them straight into response buffers instead of
	// its own. dynamic marks outputs whose shape turned out to depend on
	// the data: they are never guessed again.
	outShapes map[string][][]int64
	dynamic   []bool
	keyBuf    []byte
	// shortRuns remembers, by the same key, whether the last Run with
	// these input shapes took less than cancelArmFrom: such a run is not
	// worth arming the cancellation hook for.
	shortRuns map[string]bool
	// Scratch of one run, indexed like its wanted outputs, and the model
	// shapes of its inputs, indexed like model.inputs (nil for one the
	// request leaves out).
	bufs     [][]byte
	shapes   [][]int64
	guessed  []bool
	wanted   []*tensorSpec
	inShapes [][]int64
	// copied counts the outputs copied out of ONNX Runtime's memory, the
	// ones whose size was not known before their run.
	copied int
}

// maxShapeCache bounds outShapes and shortRuns; past it a cache starts
// over.
const maxShapeCache = 256

// cancelArmFrom is the Run time from which a run's cancellation hook is
// armed (runOnce). Arming it (context.AfterFunc, and its stop) costs about
// as much as a tenth of the shortest Run; a Run shorter than this ends
// before a cancellation would have saved anything worth that.
const cancelArmFrom = 200 * time.Microsecond

var (
	_ backends.UnaryInstance = (*instance)(nil)
	_ backends.Closer        = (*instance)(nil)
)

func newInstance(m *model, sess *session) (*instance, error) {
	nin, nout, err := sess.counts()
	if err != nil {
		return nil, err
	}
	if nin != len(m.modelInputs) || nout != len(m.modelOutputs) {
		return nil, fmt.Errorf("the session has %d inputs and %d outputs, the model had %d and %d at load: was %s replaced?",
			nin, nout, len(m.modelInputs), len(m.modelOutputs), m.path)
	}
	newRO := newRunOptions
	if arenas := m.params.shrinkArenas; arenas != "" {
		// Triton's memory.enable_memory_arena_shrinkage: every run.
		newRO = func() (*runOptions, error) { return newShrinkingRunOptions(arenas) }
	}
	ro, err := newRO()
	if err != nil {
		return nil, err
	}
	x, err := newExecArgs(sess, len(m.inputs), len(m.outputs))
	if err != nil {
		ro.close()
		return nil, err
	}
	i := &instance{
		m: m, sess: sess, x: x, ro: ro,
		outShapes: map[string][][]int64{},
		shortRuns: map[string]bool{},
		dynamic:   make([]bool, len(m.outputs)),
		bufs:      make([][]byte, len(m.outputs)),
		shapes:    make([][]int64, len(m.outputs)),
		guessed:   make([]bool, len(m.outputs)),
		inShapes:  make([][]int64, len(m.inputs)),
	}
	i.onCancel = func() {
		defer i.cancelling.Done()
		i.cancelRO.terminate()
	}
	return i, nil
}

// Close releases the session.
func (i *instance) Close() error {
	for _, ro := range []**runOptions{&i.ro, &i.shrink} {
		if *ro != nil {
			(*ro).close()
			*ro = nil
		}
	}
	if i.x != nil {
		i.x.free()
		i.x = nil
	}
	i.sess.close()
	return nil
}

// Execute runs a batch. Requests whose inputs have the same shapes beyond
// the batch dimension run as one: their inputs are concatenated along the
// batch dimension and the outputs split back. Others run one by one.
//
// The input tensors of a request that runs alone are handed to ONNX
// Runtime without a copy. Outputs are written once, into buffers the
// responses own: by ONNX Runtime itself when their size is known before
// the run (from the configuration, or from an earlier run with the same
// input shapes), else copied once out of ONNX Runtime's buffer. Output
// tensors never alias inputs. An error fails the whole batch and names the
// model.
func (i *instance) Execute(ctx context.Context, batch []*inference.Request) ([]*inference.Response, error) {
	resps, _, err := i.ExecuteWithPhases(ctx, batch)
	return resps, err
}

// ExecuteWithPhases is Execute that also reports its phases: building the
// input values (and the output buffers) is the input phase, reading the
// outputs into responses the output phase, ONNX Runtime's Run the rest.
// The values are made and released inside the same C call as Run, which
// times those parts itself (execArgs.phases).
func (i *instance) ExecuteWithPhases(ctx context.Context, batch []*inference.Request) ([]*inference.Response, backends.Phases, error) {
	var ph backends.Phases
	if len(batch) == 0 {
		return nil, ph, nil
	}
	if len(batch) == 1 || batching.Batchable(batch, i.m.maxBatch) {
		resps, err := i.runGroup(ctx, batch, &ph)
		return resps, ph, err
	}
	out := make([]*inference.Response, 0, len(batch))
	for _, req := range batch {
		resps, err := i.runGroup(ctx, []*inference.Request{req}, &ph)
		if err != nil {
			return nil, ph, err
		}
		out = append(out, resps...)
	}
	return out, ph, nil
}

// wantedOutputs returns the outputs any request of the group asked for, in
// configuration order, and the implicit state outputs; all of them when
// one asked for none in particular. The slice is the model's or the
// instance's scratch: the caller does not keep it.
func (i *instance) wantedOutputs(group []*inference.Request) []*tensorSpec {
	all := false
	for _, req := range group {
		if len(req.Outputs) == 0 {
			all = true
			break
		}
	}
	if all {
		return i.m.outputs
	}
	idx := batching.Wanted(group, i.m.wanted)
	i.wanted = i.wanted[:0]
	for _, j := range idx {
		i.wanted = append(i.wanted, i.m.outputs[j])
	}
	return i.wanted
}

func (i *instance) fail(err error) error {
	var ie *inference.Error
	if errors.As(err, &ie) {
		return inference.Errorf(ie.Code, "onnxruntime model '%s': %w", i.m.name, err)
	}
	return inference.Internal("onnxruntime model '%s': %v", i.m.name, err)
}

// runGroup runs requests that share their shapes as one ONNX Runtime call.
// It adds the time of its input and output phases to ph.
func (i *instance) runGroup(ctx context.Context, group []*inference.Request, ph *backends.Phases) ([]*inference.Response, error) {
	start := time.Now()
	if err := ctx.Err(); err != nil {
		return nil, inference.Errorf(inference.CodeCancelled, "request cancelled before execution")
	}
	first := group[0]
	if len(first.Inputs) == 0 {
		return nil, i.fail(inference.InvalidArg("the request has no inputs"))
	}
	wanted := i.wantedOutputs(group)
	if len(wanted) == 0 {
		return nil, i.fail(inference.InvalidArg("the request asks for no output of the model"))
	}
	x := i.x
	if err := x.begin(len(first.Inputs), len(wanted)); err != nil {
		return nil, i.fail(err)
	}
	defer x.release()

	batchSize := int64(0)
	for _, req := range group {
		batchSize += int64(max(req.BatchSize, 1))
	}
	key := i.keyBuf[:0]
	inBytes := 0
	defer clear(i.inShapes)
	for k := range first.Inputs {
		t := &first.Inputs[k]
		idx, ok := i.m.inputIdx[t.Name]
		if !ok {
			return nil, i.fail(inference.InvalidArg("unexpected inference input '%s'", t.Name))
		}
		spec := i.m.inputs[idx]
		shape, n, err := i.setInput(k, spec, group, t)
		if err != nil {
			return nil, i.fail(err)
		}
		inBytes += n
		i.inShapes[idx] = shape
		key = binary.AppendUvarint(key, uint64(idx))
		key = binary.AppendUvarint(key, uint64(len(shape)))
		for _, d := range shape {
			key = binary.AppendVarint(key, d)
		}
	}
	i.keyBuf = key

	bufs, shapes, guesses := i.bufs[:len(wanted)], i.shapes[:len(wanted)], i.guessed[:len(wanted)] // of the preallocated outputs
	defer func() {
		clear(bufs)
		clear(shapes)
		clear(guesses)
	}()
	known := i.outShapes[string(key)]

	// The first attempt writes the outputs of known shape (from the
	// configuration, from the last run with these input shapes, or
	// predicted from the dimension names of the model) into our buffers.
	// If a remembered or predicted shape was wrong, the run fails and a
	// second attempt lets ONNX Runtime allocate them.
	var err error
	retried := false
	for attempt := 0; attempt < 2; attempt++ {
		guessed := false
		x.outputsNext()
		for k, o := range wanted {
			var shape []int64
			switch {
			case o.fixed:
				shape = i.fullShape(o, batchSize)
			case attempt > 0 || i.dynamic[o.index]:
			case known != nil && known[o.index] != nil:
				shape = known[o.index]
			default:
				shape = i.predictShape(o, batchSize)
			}
			if attempt == 0 {
				guesses[k] = !o.fixed && shape != nil
				guessed = guessed || guesses[k]
			}
			var buf []byte
			if shape != nil {
				buf = make([]byte, max(inference.ByteSize(o.dt, shape), 0))
			}
			if err := x.setOutput(k, o.cname, buf, shape, o.onnxType); err != nil {
				return nil, i.fail(err)
			}
			bufs[k], shapes[k] = buf, shape // nil: ONNX Runtime allocates, we copy once
		}
		if attempt == 0 {
			ph.Input += time.Since(start)
		}
		var cancelled bool
		short, seen := i.shortRuns[string(key)]
		arm := !seen || !short || inBytes >= payload.LargeSize
		cancelled, err = i.runOnce(ctx, arm, inBytes >= payload.LargeSize)
		cin, cout, took := x.phases() // inside the C call: making and releasing the values
		ph.Input += cin
		ph.Output += cout
		if isShort := took > 0 && took < cancelArmFrom; !seen || isShort != short {
			if len(i.shortRuns) >= maxShapeCache {
				clear(i.shortRuns)
			}
			i.shortRuns[string(key)] = isShort
		}
		if cancelled && err != nil {
			return nil, inference.Errorf(inference.CodeCancelled, "request cancelled during execution")
		}
		if err == nil || !guessed {
			break
		}
		// A remembered shape may have been wrong: try again with ONNX
		// Runtime allocating.
		delete(i.outShapes, string(key))
		retried = true
	}
	if err != nil {
		return nil, i.fail(err)
	}
	if retried {
		// The same input shapes gave other output shapes than remembered
		// or predicted: they depend on the data.
		for k, o := range wanted {
			if guesses[k] {
				i.dynamic[o.index] = true
			}
		}
		known = nil
	}

	outStart := time.Now()
	defer func() { ph.Output += time.Since(outStart) }()
	resps := make([]*inference.Response, len(group))
	for r := range resps {
		resps[r] = &inference.Response{Outputs: make([]inference.Tensor, 0, len(wanted))}
	}
	var learned [][]int64
	for k, o := range wanted {
		data, modelShape, shape, err := i.outputData(o, k, bufs[k], shapes[k])
		if err != nil {
			return nil, i.fail(err)
		}
		if !o.fixed && o.predict == nil && o.dt != inference.Bytes && !i.dynamic[o.index] && (known == nil || known[o.index] == nil) {
			if learned == nil {
				learned = make([][]int64, len(i.m.outputs))
				copy(learned, known)
			}
			learned[o.index] = slices.Clone(modelShape)
		}
		if err := batching.Split(inference.Tensor{Name: o.name, DataType: o.dt, Shape: shape, Data: data}, group, resps); err != nil {
			return nil, i.fail(err)
		}
	}
	if learned != nil {
		if len(i.outShapes) >= maxShapeCache {
			clear(i.outShapes)
		}
		i.outShapes[string(key)] = learned
	}
	return resps, nil
}

// runOnce runs the session once, as i.x describes. With arm, a cancelled
// context sets the terminate flag of the run options, which stops the
// Run; if the callback started, runOnce waits for it, since it must not
// set the flag after the next run has cleared it. Without arm (a run whose
// input shapes last ran in less than cancelArmFrom), a cancellation during
// the Run is seen when it ends.
func (i *instance) runOnce(ctx context.Context, arm, large bool) (cancelled bool, err error) {
	ro, err := i.runOptions(large)
	if err != nil {
		return false, err
	}
	if err := ro.reset(); err != nil {
		return false, err
	}
	if !arm || ctx.Done() == nil { // not worth it, or cannot be cancelled
		return false, i.x.run(ro)
	}
	i.cancelRO = ro
	i.cancelling.Add(1)
	stop := backends.AfterFunc(ctx, i.onCancel)
	err = i.x.run(ro)
	if stop() {
		i.cancelling.Done()
	} else {
		i.cancelling.Wait()
		ro.terminated, cancelled = true, true
	}
	return cancelled, err
}

// runOptions picks the options of the next run: the shrinking ones for a
// large run and the one after it.
func (i *instance) runOptions(large bool) (*runOptions, error) {
	shrink := large || i.shrinkNext
	i.shrinkNext = large
	if !shrink || i.m.params.shrinkArenas != "" || (i.m.params.memArena != nil && !*i.m.params.memArena) {
		return i.ro, nil // shrinking every run already, or no arena
	}
	if i.shrink == nil {
		ro, err := newShrinkingRunOptions("cpu:0")
		if err != nil {
			return nil, err
		}
		i.shrink = ro
	}
	return i.shrink, nil
}

// predictShape is output o's model shape for this run's inputs by its
// prediction rule, or nil when it has none or an input it names is absent.
func (i *instance) predictShape(o *tensorSpec, batchSize int64) []int64 {
	if o.predict == nil {
		return nil
	}
	shape := make([]int64, len(o.predict))
	for j, src := range o.predict {
		switch {
		case src.size > 0:
			shape[j] = src.size
		case src.input < 0:
			shape[j] = batchSize
		default:
			in := i.inShapes[src.input]
			if src.dim >= len(in) {
				return nil
			}
			shape[j] = in[src.dim]
		}
	}
	return shape
}

// fullShape is the shape of a fixed-size tensor for a batch, as the
// model sees it (its reshape when it has one).
func (i *instance) fullShape(t *tensorSpec, batchSize int64) []int64 {
	dims := t.dims
	if t.reshape != nil {
		dims = t.reshape
	}
	if i.m.maxBatch == 0 {
		return slices.Clone(dims)
	}
	return append([]int64{batchSize}, dims...)
}

// modelShape turns a request shape into the shape the model sees (its
// reshape, when configured).
func (i *instance) modelShape(t *tensorSpec, shape []int64) []int64 {
	return batching.ModelShape(t.dims, t.reshape, shape, i.m.maxBatch > 0)
}

// setInput describes input k of the run for the group — over the
// request's own bytes when the group has one request, over a
// concatenation along the batch dimension otherwise — and returns the
// shape the model sees and the input's bytes.
func (i *instance) setInput(k int, spec *tensorSpec, group []*inference.Request, t *inference.Tensor) ([]int64, int, error) {
	shape, data := t.Shape, t.Data
	if len(group) > 1 {
		var parts [][]byte
		shape, parts = batching.Input(group, t.Name)
		data = batching.Concat(parts)
	}
	shape = i.modelShape(spec, shape)
	var err error
	if spec.dt == inference.Bytes {
		err = i.x.setStringInput(k, spec.cname, data, shape, inference.ElementCount(shape))
	} else {
		// Kernels may assume aligned elements; a network buffer need not be.
		if sz := spec.dt.Size(); sz > 1 && len(data) > 0 && uintptr(unsafe.Pointer(&data[0]))%uintptr(sz) != 0 {
			data = slices.Clone(data)
		}
		err = i.x.setInput(k, spec.cname, data, shape, spec.onnxType)
	}
	if err != nil {
		return nil, 0, inference.Errorf(inference.CodeOf(err), "input '%s': %w", t.Name, err)
	}
	return shape, len(data), nil
}

// outputData reads wanted output k after the run: its bytes in protocol
// form, its shape as the model made it and as the client sees it. A
// preallocated output has the type and shape it was given: ONNX Runtime
// fails a run rather than write another.
func (i *instance) outputData(o *tensorSpec, k int, prealloc []byte, preShape []int64) (data []byte, modelShape, shape []int64, err error) {
	if prealloc != nil {
		shape := preShape // fresh for a fixed output, the shape memory's for another
		if !o.fixed {
			shape = slices.Clone(preShape)
		}
		return prealloc, preShape, i.clientShape(o, shape), nil
	}
	typ, modelShape, err := i.x.allocated(k)
	if err != nil {
		return nil, nil, nil, err
	}
	if typ != o.onnxType {
		return nil, nil, nil, inference.Internal("output '%s' has type %s but the configuration says %s", o.name, onnxTypeName(typ), o.dt)
	}
	n := inference.ElementCount(modelShape)
	if n < 0 {
		return nil, nil, nil, inference.Internal("output '%s' has an invalid shape %v", o.name, modelShape)
	}
	if o.dt == inference.Bytes {
		data, err = i.x.stringAllocated(k, int(n))
		if err != nil {
			return nil, nil, nil, err
		}
	} else {
		data = i.x.copyAllocated(k, int(n)*o.dt.Size())
		i.copied++
	}
	return data, modelShape, i.clientShape(o, modelShape), nil
}

// clientShape undoes an output's reshape.
func (i *instance) clientShape(o *tensorSpec, shape []int64) []int64 {
	return batching.ClientShape(o.dims, o.reshape, shape, i.m.maxBatch > 0)
}
