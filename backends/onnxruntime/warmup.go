//go:build cgo

package onnxruntime

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

// warmupSample is one model_warmup entry, ready to run: batch holds
// batch_size requests of batch 1, executed together count times.
type warmupSample struct {
	name  string
	batch []*inference.Request
	count int
}

// warmupSamples builds the model_warmup samples, as Triton does: each
// input from zero data, random data or a file in <model>/warmup/. BYTES
// random data is zero data (empty strings), as in Triton.
func (m *model) warmupSamples(cfg *inferencepb.ModelConfig, modelDir string) ([]warmupSample, error) {
	var out []warmupSample
	for _, w := range cfg.GetModelWarmup() {
		fail := func(format string, args ...any) error {
			return inference.Errorf(inference.CodeInvalidArg, "model '%s' warm-up sample '%s': "+format,
				append([]any{m.name, w.GetName()}, args...)...)
		}
		bs := int(w.GetBatchSize())
		switch {
		case bs < 1:
			return nil, fail("batch_size must be at least 1")
		case m.maxBatch == 0 && bs != 1:
			return nil, fail("batch_size must be 1 for a model that does not batch")
		case m.maxBatch > 0 && bs > m.maxBatch:
			return nil, fail("batch_size %d exceeds max_batch_size %d", bs, m.maxBatch)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		var inputs []inference.Tensor
		for _, spec := range m.inputs {
			in, ok := w.GetInputs()[spec.name]
			if !ok && spec.implicit {
				// A sequence control or state: zeros, as at a sequence's start.
				in = &inferencepb.ModelWarmup_Input{DataType: configType(spec.dt), Dims: spec.dims,
					InputDataType: &inferencepb.ModelWarmup_Input_ZeroData{ZeroData: true}}
			} else if !ok {
				return nil, fail("no data for input '%s'", spec.name)
			}
			if inference.DataType(in.GetDataType()) != spec.dt {
				return nil, fail("input '%s' has data_type %s but the model expects %s", spec.name, in.GetDataType(), configType(spec.dt))
			}
			dims := in.GetDims()
			n := inference.ElementCount(dims)
			if n < 0 {
				return nil, fail("input '%s' has invalid dims %v", spec.name, dims)
			}
			var data []byte
			switch {
			case in.GetInputDataFile() != "":
				if !filepath.IsLocal(in.GetInputDataFile()) {
					return nil, fail("input '%s': input_data_file '%s' must be a path inside the model's warmup directory", spec.name, in.GetInputDataFile())
				}
				p := filepath.Join(modelDir, "warmup", in.GetInputDataFile())
				b, err := os.ReadFile(p)
				if err != nil {
					return nil, fail("input '%s': %v", spec.name, err)
				}
				data = b
			case in.GetRandomData() && spec.dt != inference.Bytes:
				data = randomData(rng, spec.dt, n)
			default: // zero_data
				size := 4 * n // BYTES: n empty strings
				if spec.dt != inference.Bytes {
					size = inference.ByteSize(spec.dt, dims)
				}
				data = make([]byte, size)
			}
			shape := dims
			if m.maxBatch > 0 {
				shape = append([]int64{1}, dims...)
			}
			t := inference.Tensor{Name: spec.name, DataType: spec.dt, Shape: shape, Data: data}
			if err := t.ValidateData(); err != nil {
				return nil, fail("input '%s': %v", spec.name, err)
			}
			inputs = append(inputs, t)
		}
		sample := warmupSample{name: w.GetName(), count: max(int(w.GetCount()), 1)}
		for range bs {
			sample.batch = append(sample.batch, &inference.Request{ModelName: m.name, Inputs: inputs, BatchSize: 1})
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

// warmUp runs each sample on the instance before it serves.
func (i *instance) warmUp(ctx context.Context) error {
	for _, s := range i.m.warmup {
		for range s.count {
			if _, err := i.Execute(ctx, s.batch); err != nil {
				return inference.Errorf(inference.CodeOf(err), "model '%s': warm-up sample '%s' failed: %w", i.m.name, s.name, err)
			}
		}
	}
	if len(i.m.warmup) > 0 {
		i.m.log.Debug().Int("samples", len(i.m.warmup)).Msg("instance warmed up")
	}
	return nil
}
