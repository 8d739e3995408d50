// Package warmup is Nereid's model_warmup, as Triton's core has it: the
// server's loader builds a model's samples (Samples) — each input from zero
// data, random data or a file in <model>/warmup/ — and runs them on every
// execution instance it builds (Run), through the instance's Execute and
// consuming every response, before the model is READY. Backends have no
// part in it: whatever the backend, an instance is warmed the same way.
package warmup

import (
	"context"
	"encoding/binary"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// Dir is the folder next to config.pbtxt that input_data_file names a
// file in (Triton's kWarmupDataFolder).
const Dir = "warmup"

// Input is one input a sample must supply.
type Input struct {
	Name     string
	DataType inference.DataType
	// Dims are the configured dims, without the batch dimension; for an
	// implicit input, the shape of Default.
	Dims []int64
	// Implicit: an input the scheduler supplies to requests (a sequence
	// control or state). A sample may give it, as Triton's samples do;
	// where it does not, the input gets Default.
	Implicit bool
	// Default is an implicit input's value for one batch row, shape Dims;
	// nil means zeros (empty strings for BYTES).
	Default []byte
	// Optional: a sample may leave the input out, and its requests then
	// go without it.
	Optional bool
}

// Sample is one model_warmup entry, ready to run: an execution is a batch
// of BatchSize requests of batch 1 (of no batch dimension for a model
// that does not batch), each with Inputs and Parameters; it runs Count
// times on each instance.
type Sample struct {
	Name       string
	BatchSize  int
	Count      int
	Inputs     []inference.Tensor
	Parameters inference.Parameters
}

// Samples builds the model_warmup samples of cfg for a model whose inputs
// are ins; modelDir holds the warmup/ folder. A sample that gives a tensor
// the model does not have, or misses one it needs, is refused, as are bad
// batch sizes, types and files: the error names the sample. BYTES random
// data is zero data (empty strings), as in Triton.
func Samples(cfg *inferencepb.ModelConfig, modelDir string, ins []Input) ([]Sample, error) {
	name, maxBatch := cfg.GetName(), int(cfg.GetMaxBatchSize())
	var out []Sample
	for _, w := range cfg.GetModelWarmup() {
		fail := func(format string, args ...any) error {
			return inference.Errorf(inference.CodeInvalidArg, "model '%s' warm-up sample '%s': "+format,
				append([]any{name, w.GetName()}, args...)...)
		}
		bs := int(w.GetBatchSize())
		switch {
		case w.GetName() == "":
			return nil, inference.InvalidArg("model '%s': every model_warmup sample needs a name", name)
		case bs < 1:
			return nil, fail("batch_size must be at least 1")
		case maxBatch == 0 && bs != 1:
			return nil, fail("batch_size must be 1 for a model that does not batch")
		case maxBatch > 0 && bs > maxBatch:
			return nil, fail("batch_size %d exceeds max_batch_size %d", bs, maxBatch)
		}
		known := map[string]bool{}
		for _, spec := range ins {
			known[spec.Name] = true
		}
		for _, k := range slices.Sorted(maps.Keys(w.GetInputs())) {
			if !known[k] {
				return nil, fail("input '%s' is not an input of the model", k)
			}
		}
		rng := rand.New(rand.NewPCG(1, 2))
		var inputs []inference.Tensor
		for _, spec := range ins {
			in, ok := w.GetInputs()[spec.Name]
			var data []byte
			dims := spec.Dims
			switch {
			case !ok && spec.Implicit:
				data = spec.Default
				if data == nil {
					data = zeros(spec.DataType, dims)
				}
			case !ok && spec.Optional:
				continue
			case !ok:
				return nil, fail("no data for input '%s'", spec.Name)
			default:
				if inference.DataType(in.GetDataType()) != spec.DataType {
					return nil, fail("input '%s' has data_type %s but the model expects %s", spec.Name, in.GetDataType(), inferencepb.DataType(spec.DataType))
				}
				dims = in.GetDims()
				n := inference.ElementCount(dims)
				if n < 0 {
					return nil, fail("input '%s' has invalid dims %v: every dimension must be given and not negative", spec.Name, dims)
				}
				switch src := in.GetInputDataType().(type) {
				case *inferencepb.ModelWarmup_Input_InputDataFile:
					if !filepath.IsLocal(src.InputDataFile) {
						return nil, fail("input '%s': input_data_file '%s' must be a path inside the model's %s directory", spec.Name, src.InputDataFile, Dir)
					}
					b, err := os.ReadFile(filepath.Join(modelDir, Dir, src.InputDataFile))
					if err != nil {
						return nil, fail("input '%s': %v", spec.Name, err)
					}
					data = b
				case *inferencepb.ModelWarmup_Input_RandomData:
					if spec.DataType == inference.Bytes {
						data = zeros(spec.DataType, dims)
					} else {
						data = randomData(rng, spec.DataType, n)
					}
				case *inferencepb.ModelWarmup_Input_ZeroData:
					data = zeros(spec.DataType, dims)
				default:
					return nil, fail("input '%s' must set one of zero_data, random_data or input_data_file", spec.Name)
				}
			}
			shape := slices.Clone(dims)
			if maxBatch > 0 {
				shape = append([]int64{1}, dims...)
			}
			t := inference.Tensor{Name: spec.Name, DataType: spec.DataType, Shape: shape, Data: data}
			if err := t.ValidateData(); err != nil {
				return nil, fail("input '%s': %v", spec.Name, err)
			}
			inputs = append(inputs, t)
		}
		out = append(out, Sample{Name: w.GetName(), BatchSize: bs, Count: max(int(w.GetCount()), 1), Inputs: inputs})
	}
	return out, nil
}

// zeros is a tensor's worth of zero numbers, false booleans or empty
// strings.
func zeros(dt inference.DataType, dims []int64) []byte {
	n := max(inference.ElementCount(dims), 0)
	if dt == inference.Bytes {
		return make([]byte, 4*n)
	}
	return make([]byte, max(inference.ByteSize(dt, dims), 0))
}

// randomData draws n elements: uniform in [0, 1) for FP32, FP64 and BF16
// ([0.5, 1) for FP16), random bits for integers, true or false for BOOL.
func randomData(rng *rand.Rand, dt inference.DataType, n int64) []byte {
	size := dt.Size()
	out := make([]byte, int(n)*size)
	for k := range int(n) {
		b := out[k*size:]
		f := rng.Float64()
		switch dt {
		case inference.FP32:
			binary.LittleEndian.PutUint32(b, math.Float32bits(float32(f)))
		case inference.FP64:
			binary.LittleEndian.PutUint64(b, math.Float64bits(f))
		case inference.BF16:
			binary.LittleEndian.PutUint16(b, uint16(math.Float32bits(float32(f))>>16))
		case inference.FP16:
			// A half in [0.5, 1): exponent 14 and a random mantissa.
			binary.LittleEndian.PutUint16(b, 0x3800|uint16(rng.Uint32()&0x3ff))
		case inference.Bool:
			b[0] = byte(rng.Uint32() & 1)
		default:
			u := rng.Uint64()
			for j := range size {
				b[j] = byte(u >> (8 * j))
			}
		}
	}
	return out
}

// Result is what warming one instance took: the executions run and the
// responses they produced (a decoupled model's 0..N per request).
type Result struct {
	Executions int
	Responses  int
}

// Run executes each sample Count times on inst, one execution after the
// other, as the scheduler would hand it batches: every request of an
// execution has its own response path, and an execution is over when each
// of its requests has had its final flag (a decoupled instance may answer
// after Execute returned), so the next never overlaps it. Responses are
// counted and dropped. The first failure — Execute's error, or a request
// failed through its response path — ends the warm-up with an error that
// names the model, the instance and the sample, of the failure's class.
// A cancelled ctx ends it too (Execute is asked to stop through it).
func Run(ctx context.Context, model, instance string, samples []Sample, inst backends.Instance) (Result, error) {
	var res Result
	for _, s := range samples {
		for range s.Count {
			n, err := execute(ctx, model, inst, s)
			res.Executions++
			res.Responses += n
			if err != nil {
				return res, inference.Errorf(inference.CodeOf(err), "model '%s', instance %s: warm-up sample '%s' failed: %w", model, instance, s.Name, err)
			}
		}
	}
	return res, nil
}

// execute runs one execution of s and waits for every final flag.
func execute(ctx context.Context, model string, inst backends.Instance, s Sample) (int, error) {
	c := &collector{ctx: ctx, pending: s.BatchSize, done: make(chan struct{})}
	batch := make([]*inference.Request, s.BatchSize)
	for i := range batch {
		r := &inference.Request{
			ID:         "warmup:" + s.Name,
			ModelName:  model,
			Inputs:     slices.Clone(s.Inputs), // a backend may not write them, but keep each request's own
			Parameters: s.Parameters,
			BatchSize:  1,
		}
		r.SetSender(&sender{c: c})
		batch[i] = r
	}
	if err := inst.Execute(ctx, batch); err != nil {
		// The instance's error fails every request still open; none of
		// them is waited for.
		return c.responses(), err
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		return c.responses(), inference.Errorf(inference.CodeUnavailable, "the load was cancelled while the instance was still answering: %w", ctx.Err())
	}
	return c.responses(), c.failure()
}

// collector gathers the responses of one execution.
type collector struct {
	ctx  context.Context //nolint:containedctx // the load's context, for Cancelled
	done chan struct{}   // closed when pending reaches 0

	mu      sync.Mutex // guards the fields below
	pending int        // requests without their final flag
	n       int        // responses
	err     error      // the first failure
}

func (c *collector) responses() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (c *collector) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// sender is one warm-up request's response path.
type sender struct {
	c     *collector
	final bool // guarded by c.mu
}

var _ inference.ResponseSender = (*sender)(nil)

func (s *sender) Send(resp *inference.Response, final bool) error {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.final {
		return inference.Internal("warm-up request: a response after the final flag")
	}
	if resp != nil {
		c.n++
	}
	if final {
		s.finish()
	}
	if err := c.ctx.Err(); err != nil {
		return inference.Errorf(inference.CodeCancelled, "warm-up cancelled: %w", err)
	}
	return nil
}

func (s *sender) Fail(err error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.final {
		return
	}
	if c.err == nil {
		c.err = err
	}
	s.finish()
}

// finish records s's final flag; c.mu is held.
func (s *sender) finish() {
	s.final = true
	s.c.pending--
	if s.c.pending == 0 {
		close(s.c.done)
	}
}

func (s *sender) Cancelled() bool { return s.c.ctx.Err() != nil }
