package aggregate

import (
	"encoding/binary"
	"math"

	"github.com/nereid-project/nereid/inference"
)

// The element codecs below read and write element i of little-endian
// tensor data of one of the supported types. Integers are converted with
// saturation: a value beyond the destination's range becomes its nearest
// bound, never a wrapped-around one.

func isSigned(dt inference.DataType) bool {
	return dt == inference.Int8 || dt == inference.Int16 || dt == inference.Int32 || dt == inference.Int64
}

func isUnsigned(dt inference.DataType) bool {
	return dt == inference.Uint8 || dt == inference.Uint16 || dt == inference.Uint32 || dt == inference.Uint64
}

func isInteger(dt inference.DataType) bool { return isSigned(dt) || isUnsigned(dt) }

// bounds is the range of an integer type.
func bounds(dt inference.DataType) (lo int64, hi uint64) {
	switch dt {
	case inference.Int8:
		return math.MinInt8, math.MaxInt8
	case inference.Int16:
		return math.MinInt16, math.MaxInt16
	case inference.Int32:
		return math.MinInt32, math.MaxInt32
	case inference.Int64:
		return math.MinInt64, math.MaxInt64
	case inference.Uint8:
		return 0, math.MaxUint8
	case inference.Uint16:
		return 0, math.MaxUint16
	case inference.Uint32:
		return 0, math.MaxUint32
	default:
		return 0, math.MaxUint64
	}
}

// fitsInt reports whether integer type dt holds v.
func fitsInt(dt inference.DataType, v int64) bool {
	lo, hi := bounds(dt)
	return v >= lo && (v < 0 || uint64(v) <= hi)
}

// holds reports whether integer type out holds every value of integer
// type in.
func holds(out, in inference.DataType) bool {
	loOut, hiOut := bounds(out)
	loIn, hiIn := bounds(in)
	return loOut <= loIn && hiOut >= hiIn
}

// putBits writes the low bytes of v as element i of an integer type.
func putBits(dt inference.DataType, b []byte, i int, v uint64) {
	switch dt.Size() {
	case 1:
		b[i] = byte(v)
	case 2:
		binary.LittleEndian.PutUint16(b[2*i:], uint16(v))
	case 4:
		binary.LittleEndian.PutUint32(b[4*i:], uint32(v))
	default:
		binary.LittleEndian.PutUint64(b[8*i:], v)
	}
}

// putFloat writes f as element i of a float type.
func putFloat(dt inference.DataType, b []byte, i int, f float64) {
	if dt == inference.FP32 {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(f)))
		return
	}
	binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(f))
}

// putI writes a signed value as element i of any supported type.
func putI(dt inference.DataType, b []byte, i int, v int64) {
	if !isInteger(dt) {
		putFloat(dt, b, i, float64(v))
		return
	}
	lo, hi := bounds(dt)
	switch {
	case v < lo:
		v = lo
	case v > 0 && uint64(v) > hi:
		putBits(dt, b, i, hi)
		return
	}
	putBits(dt, b, i, uint64(v))
}

// putU writes an unsigned value as element i of any supported type.
func putU(dt inference.DataType, b []byte, i int, v uint64) {
	if !isInteger(dt) {
		putFloat(dt, b, i, float64(v))
		return
	}
	_, hi := bounds(dt)
	putBits(dt, b, i, min(v, hi))
}

// putF writes f as element i of any supported type: as it is for a float
// type; rounded to the nearest integer (halves away from zero) and clamped
// to the type's range for an integer type, NaN becoming 0.
func putF(dt inference.DataType, b []byte, i int, f float64) {
	switch {
	case !isInteger(dt):
		putFloat(dt, b, i, f)
	case math.IsNaN(f):
		putBits(dt, b, i, 0)
	case isSigned(dt):
		f = math.Round(f)
		switch {
		case f >= 0x1p63:
			putI(dt, b, i, math.MaxInt64)
		case f <= -0x1p63:
			putI(dt, b, i, math.MinInt64)
		default:
			putI(dt, b, i, int64(f))
		}
	default:
		f = math.Round(f)
		switch {
		case f <= 0:
			putBits(dt, b, i, 0)
		case f >= 0x1p64:
			putU(dt, b, i, math.MaxUint64)
		default:
			putU(dt, b, i, uint64(f))
		}
	}
}
