package inference

import (
	"encoding/binary"
	"math"
)

// Int64At returns element i of data holding a signed integer type dt
// (INT8, INT16, INT32, INT64), little-endian as tensors are.
func Int64At(dt DataType, data []byte, i int) int64 {
	switch dt {
	case Int8:
		return int64(int8(data[i]))
	case Int16:
		return int64(int16(binary.LittleEndian.Uint16(data[2*i:])))
	case Int32:
		return int64(int32(binary.LittleEndian.Uint32(data[4*i:])))
	default:
		return int64(binary.LittleEndian.Uint64(data[8*i:]))
	}
}

// Uint64At returns element i of data holding an unsigned integer type dt
// (UINT8..UINT64, or BOOL as 0 or 1).
func Uint64At(dt DataType, data []byte, i int) uint64 {
	switch dt {
	case Uint8, Bool:
		return uint64(data[i])
	case Uint16:
		return uint64(binary.LittleEndian.Uint16(data[2*i:]))
	case Uint32:
		return uint64(binary.LittleEndian.Uint32(data[4*i:]))
	default:
		return binary.LittleEndian.Uint64(data[8*i:])
	}
}

// Float64At returns element i of data of a numeric type dt other than FP16
// and BF16 as a float64.
func Float64At(dt DataType, data []byte, i int) float64 {
	switch dt {
	case FP32:
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:])))
	case FP64:
		return math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:]))
	case Int8, Int16, Int32, Int64:
		return float64(Int64At(dt, data, i))
	case Invalid, Bool, Uint8, Uint16, Uint32, Uint64, FP16, BF16, Bytes:
	}
	return float64(Uint64At(dt, data, i))
}
