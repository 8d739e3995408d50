package analyze

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// bytesElementLen is the length of each random BYTES element.
const bytesElementLen = 16

// makeInputs builds one request's inputs from a model configuration:
// random data of each input's type and shape, a leading batch dimension of
// batch when the model batches, and dimSize for every variable (-1)
// dimension. Numbers are small and non-negative (integers below 64, floats
// in [0, 1)), so that inputs used as indices or lengths stay in range.
func makeInputs(cfg *inferencepb.ModelConfig, batch int, dimSize int64, rng *rand.Rand) ([]inference.Tensor, error) {
	var out []inference.Tensor
	for _, in := range cfg.GetInput() {
		dt := inference.DataType(in.GetDataType())
		if !dt.Valid() {
			return nil, fmt.Errorf("input '%s' has no data type", in.GetName())
		}
		var shape []int64
		if cfg.GetMaxBatchSize() > 0 {
			shape = append(shape, int64(batch))
		}
		for _, d := range in.GetDims() {
			if d < 0 {
				d = dimSize
			}
			shape = append(shape, d)
		}
		n := inference.ElementCount(shape)
		if n < 0 {
			return nil, fmt.Errorf("input '%s' has an invalid shape %v", in.GetName(), shape)
		}
		out = append(out, inference.Tensor{Name: in.GetName(), DataType: dt, Shape: shape, Data: randomData(dt, int(n), rng)})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("model '%s' has no inputs", cfg.GetName())
	}
	return out, nil
}

// randomData returns n random elements of type dt in the protocol's raw
// form.
func randomData(dt inference.DataType, n int, rng *rand.Rand) []byte {
	if dt == inference.Bytes {
		buf := make([]byte, 0, n*(4+bytesElementLen))
		for range n {
			buf = binary.LittleEndian.AppendUint32(buf, bytesElementLen)
			for range bytesElementLen {
				buf = append(buf, byte('a'+rng.IntN(26)))
			}
		}
		return buf
	}
	size := dt.Size()
	buf := make([]byte, n*size)
	for i := range n {
		e := buf[i*size : (i+1)*size]
		switch dt {
		case inference.Bool:
			e[0] = byte(rng.IntN(2))
		case inference.Uint8, inference.Int8:
			e[0] = byte(rng.IntN(64))
		case inference.Uint16, inference.Int16:
			binary.LittleEndian.PutUint16(e, uint16(rng.IntN(64)))
		case inference.Uint32, inference.Int32:
			binary.LittleEndian.PutUint32(e, uint32(rng.IntN(64)))
		case inference.Uint64, inference.Int64:
			binary.LittleEndian.PutUint64(e, uint64(rng.IntN(64)))
		case inference.FP16:
			// A positive half below 1: exponent 0..14, any mantissa.
			binary.LittleEndian.PutUint16(e, uint16(rng.IntN(15))<<10|uint16(rng.IntN(1024)))
		case inference.BF16:
			binary.LittleEndian.PutUint16(e, uint16(math.Float32bits(rng.Float32())>>16))
		case inference.FP32:
			binary.LittleEndian.PutUint32(e, math.Float32bits(rng.Float32()))
		case inference.FP64:
			binary.LittleEndian.PutUint64(e, math.Float64bits(rng.Float64()))
		default:
			// Invalid and Bytes are handled above; their size is 0.
		}
	}
	return buf
}
