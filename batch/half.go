package batch

import (
	"encoding/binary"
	"math"

	"github.com/nereid-project/nereid/inference"
)

// JSON has no half-precision numbers and the KServe v2 JSON form refuses
// FP16 and BF16 data, so a job reads such inputs as FP32 and writes such
// outputs as FP32 numbers.

func isHalf(dt inference.DataType) bool { return dt == inference.FP16 || dt == inference.BF16 }

// fp32ToHalf converts little-endian FP32 data to FP16 or BF16, rounding
// to nearest even.
func fp32ToHalf(dt inference.DataType, data []byte) []byte {
	out := make([]byte, len(data)/2)
	for i := 0; i+4 <= len(data); i += 4 {
		bits := binary.LittleEndian.Uint32(data[i:])
		var h uint16
		if dt == inference.BF16 {
			h = float32ToBF16(bits)
		} else {
			h = float32ToFP16(bits)
		}
		binary.LittleEndian.PutUint16(out[i/2:], h)
	}
	return out
}

// halfToFP32 converts little-endian FP16 or BF16 data to FP32.
func halfToFP32(dt inference.DataType, data []byte) []byte {
	out := make([]byte, len(data)*2)
	for i := 0; i+2 <= len(data); i += 2 {
		h := binary.LittleEndian.Uint16(data[i:])
		var bits uint32
		if dt == inference.BF16 {
			bits = uint32(h) << 16
		} else {
			bits = fp16ToFloat32(h)
		}
		binary.LittleEndian.PutUint32(out[i*2:], bits)
	}
	return out
}

func float32ToBF16(bits uint32) uint16 {
	if bits&0x7fffffff > 0x7f800000 { // NaN: keep it a quiet NaN
		return uint16(bits>>16) | 0x40
	}
	// Round to nearest even on the 16 dropped bits.
	return uint16((bits + 0x7fff + (bits>>16)&1) >> 16)
}

func float32ToFP16(bits uint32) uint16 {
	sign := uint16(bits>>16) & 0x8000
	f := math.Float32frombits(bits &^ 0x80000000)
	switch {
	case f != f: // NaN
		return sign | 0x7e00
	case f >= 65520: // rounds to infinity
		return sign | 0x7c00
	case f < 0x1p-25: // rounds to zero
		return sign
	case f < 0x1p-14: // subnormal: a multiple of 2^-24
		return sign | uint16(math.RoundToEven(float64(f)*(1<<24)))
	}
	exp := int((bits>>23)&0xff) - 127 + 15
	mant := bits & 0x7fffff
	// Round the 23-bit mantissa to 10 bits, to nearest even; a carry
	// into the exponent is what the addition gives.
	h := uint32(exp)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
		h++
	}
	return sign | uint16(h)
}

func fp16ToFloat32(h uint16) uint32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch exp {
	case 0:
		if mant == 0 {
			return sign
		}
		f := float32(mant) / (1 << 24)
		return sign | math.Float32bits(f)
	case 0x1f:
		return sign | 0x7f800000 | mant<<13
	}
	return sign | (exp+127-15)<<23 | mant<<13
}
