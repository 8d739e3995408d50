package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/cache"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// loadedModel is one READY model version: its configuration, backend model,
// instances, scheduler and statistics. It implements repository.Servable.
type loadedModel struct {
	name      string
	version   int64
	versionID string
	cfg       *inferencepb.ModelConfig
	inputs    map[string]*inferencepb.ModelInput
	outputs   map[string]*inferencepb.ModelOutput
	required  int // inputs that are not optional

	model     backends.Model
	instances []backends.Instance
	sched     modelScheduler
	stats     *modelStats
	cache     *cache.Local        // response cache; nil when the model does not use one
	release   func()              // undoes what the scheduler registered (rate limiter); may be nil
	injected  map[string]bool     // inputs the sequence batcher supplies
	labels    map[string][]string // classification labels by output name (label_filename)
	decoupled bool                // model_transaction_policy.decoupled: served by streaming only
	// unaryOnly: every instance is a backends.Unary adapter, which sends
	// each request's one response before Execute returns.
	unaryOnly bool

	openMu sync.Mutex         // guards the fields below
	open   map[*sink]struct{} // requests executed but still answering
	closed bool               // Close has finished: nothing more is tracked
}

// track records a request that is still answering after its execution
// ended; it reports false once the version has closed.
func (lm *loadedModel) track(k *sink) bool {
	lm.openMu.Lock()
	defer lm.openMu.Unlock()
	if lm.closed {
		return false
	}
	if lm.open == nil {
		lm.open = map[*sink]struct{}{}
	}
	lm.open[k] = struct{}{}
	return true
}

func (lm *loadedModel) untrack(k *sink) {
	lm.openMu.Lock()
	delete(lm.open, k)
	lm.openMu.Unlock()
}

// failOpen completes with an error every request whose model never sent
// its final flag before the version closed (after its instances closed, so
// that a backend that ends its streams on Close has done so).
func (lm *loadedModel) failOpen() {
	lm.openMu.Lock()
	lm.closed = true
	open := lm.open
	lm.open = nil
	lm.openMu.Unlock()
	for k := range open {
		if k.isFinal() {
			continue
		}
		k.log.Error().Str("model", lm.name).Int64("version", lm.version).Str("request_id", k.id).
			Msg("the model was unloaded before it sent the request's final response; the request fails")
		k.Fail(inference.Unavailable("model '%s' version %d was unloaded before it finished answering the request", lm.name, lm.version))
	}
}

func newLoadedModel(name string, version int64, cfg *inferencepb.ModelConfig, m backends.Model) *loadedModel {
	lm := &loadedModel{
		name:      name,
		version:   version,
		versionID: strconv.FormatInt(version, 10),
		cfg:       cfg,
		inputs:    make(map[string]*inferencepb.ModelInput, len(cfg.GetInput())),
		outputs:   make(map[string]*inferencepb.ModelOutput, len(cfg.GetOutput())),
		model:     m,
		stats:     newModelStats(),
		decoupled: cfg.GetModelTransactionPolicy().GetDecoupled(),
	}
	if isEnsemble(cfg) {
		lm.stats.failAs = FailureOther
	}
	lm.injected = injectedInputs(cfg)
	for _, in := range cfg.GetInput() {
		lm.inputs[in.GetName()] = in
		if !in.GetOptional() && !lm.injected[in.GetName()] {
			lm.required++
		}
	}
	for _, out := range cfg.GetOutput() {
		lm.outputs[out.GetName()] = out
	}
	return lm
}

// Close stops the scheduler and frees the backend. The repository calls it
// once no request holds this version.
func (lm *loadedModel) Close(context.Context) error {
	if lm.sched != nil {
		lm.sched.Close()
	}
	if lm.release != nil {
		lm.release()
	}
	if lm.stats.metrics != nil {
		lm.stats.metrics.Close()
	}
	err := lm.closeBackend()
	lm.failOpen()
	return err
}

func (lm *loadedModel) closeBackend() error {
	var errs []error
	for _, in := range lm.instances {
		if c, ok := in.(backends.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	if c, ok := lm.model.(backends.Closer); ok {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// check validates a request against the configuration and sets its batch
// size. Messages follow Triton's where clients or users recognise them.
func (lm *loadedModel) check(req *inference.Request) error {
	if err := lm.checkSequence(req); err != nil {
		return err
	}
	maxBatch := int64(lm.cfg.GetMaxBatchSize())
	batch := int64(-1)
	present, requiredPresent := 0, 0
	for i := range req.Inputs {
		t := &req.Inputs[i]
		in := lm.inputs[t.Name]
		if in == nil {
			return inference.InvalidArg("unexpected inference input '%s' for model '%s'", t.Name, lm.name)
		}
		for j := range i {
			if req.Inputs[j].Name == t.Name {
				return inference.InvalidArg("input '%s' was specified more than once for model '%s'", t.Name, lm.name)
			}
		}
		if !lm.injected[t.Name] {
			present++
			if !in.GetOptional() {
				requiredPresent++
			}
		}
		if want := inference.DataType(in.GetDataType()); t.DataType != want {
			return inference.DataTypeMismatch(t.Name, t.DataType, lm.name, want)
		}
		shape := t.Shape
		if maxBatch > 0 {
			if len(shape) == 0 {
				return inference.InvalidArg("inference input '%s' for model '%s' has no batch dimension: the model batches (max_batch_size %d), so the first dimension of every input is the batch size", t.Name, lm.name, maxBatch)
			}
			b := shape[0]
			if b < 1 || b > maxBatch {
				return inference.InvalidArg("inference request batch-size must be <= %d for '%s', got %d", maxBatch, lm.name, b)
			}
			if batch >= 0 && b != batch {
				return inference.InvalidArg("inference input '%s' for model '%s' has batch size %d but other inputs have %d", t.Name, lm.name, b, batch)
			}
			batch = b
			shape = shape[1:]
		}
		if !inference.DimsMatch(shape, in.GetDims()) {
			return inference.InvalidArg("unexpected shape for input '%s' for model '%s'. Expected %s, got %s",
				t.Name, lm.name, formatShape(lm.fullDims(in.GetDims())), formatShape(t.Shape))
		}
		if err := t.ValidateData(); err != nil {
			return err
		}
	}
	if requiredPresent < lm.required {
		var missing []string
		for _, in := range lm.cfg.GetInput() {
			if !in.GetOptional() && !lm.injected[in.GetName()] && req.Input(in.GetName()) == nil {
				missing = append(missing, "'"+in.GetName()+"'")
			}
		}
		return inference.InvalidArg("expected %d inputs but got %d inputs for model '%s'. Missing required input(s) [%s]",
			lm.required, present, lm.name, strings.Join(missing, ", "))
	}
	for i, o := range req.Outputs {
		if lm.outputs[o.Name] == nil {
			return inference.InvalidArg("unexpected inference output '%s' for model '%s'", o.Name, lm.name)
		}
		for j := range i {
			if req.Outputs[j].Name == o.Name {
				return inference.InvalidArg("output '%s' was requested more than once for model '%s'", o.Name, lm.name)
			}
		}
	}
	req.BatchSize = 1
	if batch > 0 {
		req.BatchSize = int(batch)
	}
	return nil
}

// finish keeps the requested outputs, in the order asked, and stamps the
// response with the request id and model identity.
func (lm *loadedModel) finish(req *inference.Request, resp *inference.Response) (*inference.Response, error) {
	resp.ID = req.ID
	resp.ModelName = lm.name
	resp.ModelVersion = lm.versionID
	if len(req.Outputs) == 0 {
		return resp, nil
	}
	if inRequestedOrder(req, resp) {
		// The common case (the outputs asked for are the ones produced, in
		// that order): nothing to rearrange.
		if err := lm.classify(req, resp); err != nil {
			return nil, err
		}
		return resp, nil
	}
	kept := make([]inference.Tensor, 0, len(req.Outputs))
	for _, o := range req.Outputs {
		t := resp.Output(o.Name)
		if t == nil {
			return nil, inference.Internal("model '%s' did not produce requested output '%s'", lm.name, o.Name)
		}
		kept = append(kept, *t)
	}
	resp.Outputs = kept
	if err := lm.classify(req, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// inRequestedOrder reports whether resp's outputs are exactly req's
// requested outputs, in the requested order.
func inRequestedOrder(req *inference.Request, resp *inference.Response) bool {
	if len(resp.Outputs) != len(req.Outputs) {
		return false
	}
	for i := range req.Outputs {
		if resp.Outputs[i].Name != req.Outputs[i].Name {
			return false
		}
	}
	return true
}

// fullDims is the shape a client sends: dims with the batch dimension first
// when the model batches.
func (lm *loadedModel) fullDims(dims []int64) []int64 {
	if lm.cfg.GetMaxBatchSize() > 0 {
		return append([]int64{-1}, dims...)
	}
	return dims
}

func formatShape(s []int64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, d := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, d)
	}
	b.WriteByte(']')
	return b.String()
}

// memoryReporter is a backend model or instance that knows the memory it
// holds outside this process (a stub process, a device).
type memoryReporter interface{ MemoryBytes() int64 }

// MemoryBytes sums what the model and its instances report holding
// outside this process: the repository's Sizer, for the model cache.
func (lm *loadedModel) MemoryBytes() int64 {
	var n int64
	if r, ok := lm.model.(memoryReporter); ok {
		n += r.MemoryBytes()
	}
	for _, in := range lm.instances {
		if r, ok := in.(memoryReporter); ok {
			n += r.MemoryBytes()
		}
	}
	return n
}
