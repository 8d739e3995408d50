// Package warmup builds a model's model_warmup samples as Triton does —
// each input from zero data, random data or a file in <model>/warmup/ —
// and runs them on an instance before it serves. Any backend uses it.
package warmup

import (
	"context"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// Input is one input a sample must supply.
type Input struct {
	Name     string
	DataType inference.DataType
	Dims     []int64 // configured dims, without the batch dimension
	// Implicit: a sequence control or state, zero unless the sample says.
	Implicit bool
}

// Sample is one model_warmup entry, ready to run: Batch holds batch_size
// requests of batch 1, executed together Count times.
type Sample struct {
	Name  string
	Batch []*inference.Request
	Count int
}

// Samples builds the model_warmup samples of cfg for a model whose inputs
// are ins. BYTES random data is zero data (empty strings), as in Triton.
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
		case bs < 1:
			return nil, fail("batch_size must be at least 1")
		case maxBatch == 0 && bs != 1:
			return nil, fail("batch_size must be 1 for a model that does not batch")
		case maxBatch > 0 && bs > maxBatch:
			return nil, fail("batch_size %d exceeds max_batch_size %d", bs, maxBatch)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		var inputs []inference.Tensor
		for _, spec := range ins {
			in, ok := w.GetInputs()[spec.Name]
			if !ok && spec.Implicit {
				// A sequence control or state: zeros, as at a sequence's start.
				in = &inferencepb.ModelWarmup_Input{DataType: inferencepb.DataType(spec.DataType), Dims: spec.Dims,
					InputDataType: &inferencepb.ModelWarmup_Input_ZeroData{ZeroData: true}}
			} else if !ok {
				return nil, fail("no data for input '%s'", spec.Name)
			}
			if inference.DataType(in.GetDataType()) != spec.DataType {
				return nil, fail("input '%s' has data_type %s but the model expects %s", spec.Name, in.GetDataType(), inferencepb.DataType(spec.DataType))
			}
			dims := in.GetDims()
			n := inference.ElementCount(dims)
			if n < 0 {
				return nil, fail("input '%s' has invalid dims %v", spec.Name, dims)
			}
			var data []byte
			switch {
			case in.GetInputDataFile() != "":
				if !filepath.IsLocal(in.GetInputDataFile()) {
					return nil, fail("input '%s': input_data_file '%s' must be a path inside the model's warmup directory", spec.Name, in.GetInputDataFile())
				}
				b, err := os.ReadFile(filepath.Join(modelDir, "warmup", in.GetInputDataFile()))
				if err != nil {
					return nil, fail("input '%s': %v", spec.Name, err)
				}
				data = b
			case in.GetRandomData() && spec.DataType != inference.Bytes:
				data = randomData(rng, spec.DataType, n)
			default: // zero_data
				size := 4 * n // BYTES: n empty strings
				if spec.DataType != inference.Bytes {
					size = inference.ByteSize(spec.DataType, dims)
				}
				data = make([]byte, size)
			}
			shape := dims
			if maxBatch > 0 {
				shape = append([]int64{1}, dims...)
			}
			t := inference.Tensor{Name: spec.Name, DataType: spec.DataType, Shape: shape, Data: data}
			if err := t.ValidateData(); err != nil {
				return nil, fail("input '%s': %v", spec.Name, err)
			}
			inputs = append(inputs, t)
		}
		sample := Sample{Name: w.GetName(), Count: max(int(w.GetCount()), 1)}
		for range bs {
			sample.Batch = append(sample.Batch, &inference.Request{ModelName: name, Inputs: inputs, BatchSize: 1})
		}
		out = append(out, sample)
	}
	return out, nil
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

// Run executes each sample Count times with exec, the instance's
// execution of a batch whose responses are discarded. model names the
// model in the error of a failing sample.
func Run(ctx context.Context, model string, samples []Sample, exec func(context.Context, []*inference.Request) error) error {
	for _, s := range samples {
		for range s.Count {
			if err := exec(ctx, s.Batch); err != nil {
				return inference.Errorf(inference.CodeOf(err), "model '%s': warm-up sample '%s' failed: %w", model, s.Name, err)
			}
		}
	}
	return nil
}
