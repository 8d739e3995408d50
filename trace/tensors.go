package trace

import (
	"encoding/binary"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/nereid-project/nereid/inference"
)

// tensorChunk is the JSON records of the tensors one activity reported,
// rendered when they were reported (their data may not outlive the call),
// comma-separated.
type tensorChunk struct {
	activity inference.TensorActivity
	records  []byte
}

// tensorAnchor is the timestamp Triton reports next to an activity's
// tensors: the queue inputs right after QUEUE_START, the backend's inputs
// once its batch started and its outputs as it produces them. The tensor
// records follow that timestamp record in the trace.
func tensorAnchor(a inference.TensorActivity) string {
	switch a {
	case inference.TensorQueueInput:
		return "QUEUE_START"
	case inference.TensorBackendInput:
		return "COMPUTE_START"
	case inference.TensorBackendOutput:
		return "COMPUTE_OUTPUT_START"
	}
	return ""
}

// appendTensorRecords appends one record per tensor, comma-separated, in
// the form of Triton's trace file (server src/tracer.cc,
// TraceTensorActivity):
//
//	{"id":1,"activity":"TENSOR_QUEUE_INPUT","tensor":{"name":"INPUT0","data":"1,2,3","shape":"1,3","dtype":"INT32"}}
//
// data lists the elements in row-major order as C++ streams print them:
// integers in decimal, BOOL as 1 or 0, FP32 and FP64 as "%g" (six
// significant digits, "nan", "inf"), BYTES elements each in double quotes
// (which the JSON string escapes), and FP16 and BF16 not at all (Triton
// writes an empty string for them). shape is the dims, comma-separated;
// dtype the protocol's type name.
//
// Where Triton writes bytes that are not valid JSON, Nereid escapes them:
// names and BYTES elements are JSON-escaped (invalid UTF-8 becomes
// U+FFFD), and INT8 and UINT8 elements are written as numbers where
// Triton's stream writes them as raw characters.
func appendTensorRecords(b []byte, id uint64, activity inference.TensorActivity, tensors []inference.Tensor) []byte {
	for i := range tensors {
		if i > 0 {
			b = append(b, ',')
		}
		t := &tensors[i]
		b = append(b, `{"id":`...)
		b = strconv.AppendUint(b, id, 10)
		b = append(b, `,"activity":"`...)
		b = append(b, activity.String()...)
		b = append(b, `","tensor":{"name":"`...)
		b = appendJSONText(b, []byte(t.Name))
		b = append(b, `","data":"`...)
		b = appendTensorData(b, t)
		b = append(b, `","shape":"`...)
		for j, d := range t.Shape {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, d, 10)
		}
		b = append(b, `","dtype":"`...)
		b = append(b, t.DataType.String()...)
		b = append(b, `"}}`...)
	}
	return b
}

// appendTensorData appends the elements of t, comma-separated. It writes
// no more elements than the shape holds and the data carries: a backend's
// malformed output is cut short rather than read past its end.
func appendTensorData(b []byte, t *inference.Tensor) []byte {
	n := inference.ElementCount(t.Shape)
	if n <= 0 {
		return b
	}
	data := t.Data
	if t.DataType == inference.Bytes {
		for e := int64(0); e < n && len(data) >= 4; e++ {
			l := binary.LittleEndian.Uint32(data)
			if uint64(l) > uint64(len(data)-4) {
				break
			}
			if e > 0 {
				b = append(b, ',')
			}
			b = append(b, `\"`...)
			b = appendJSONText(b, data[4:4+l])
			b = append(b, `\"`...)
			data = data[4+l:]
		}
		return b
	}
	size := t.DataType.Size()
	// FP16 and BF16 data are left empty, as Triton leaves them.
	if t.DataType == inference.FP16 || t.DataType == inference.BF16 || size == 0 {
		return b
	}
	n = min(n, int64(len(data)/size))
	le := binary.LittleEndian
	for e := range n {
		if e > 0 {
			b = append(b, ',')
		}
		v := data[e*int64(size):]
		switch t.DataType {
		case inference.Bool:
			if v[0] != 0 {
				b = append(b, '1')
			} else {
				b = append(b, '0')
			}
		case inference.Uint8:
			b = strconv.AppendUint(b, uint64(v[0]), 10)
		case inference.Uint16:
			b = strconv.AppendUint(b, uint64(le.Uint16(v)), 10)
		case inference.Uint32:
			b = strconv.AppendUint(b, uint64(le.Uint32(v)), 10)
		case inference.Uint64:
			b = strconv.AppendUint(b, le.Uint64(v), 10)
		case inference.Int8:
			b = strconv.AppendInt(b, int64(int8(v[0])), 10)
		case inference.Int16:
			b = strconv.AppendInt(b, int64(int16(le.Uint16(v))), 10)
		case inference.Int32:
			b = strconv.AppendInt(b, int64(int32(le.Uint32(v))), 10)
		case inference.Int64:
			b = strconv.AppendInt(b, int64(le.Uint64(v)), 10)
		case inference.FP32:
			b = appendStreamFloat(b, float64(math.Float32frombits(le.Uint32(v))))
		case inference.FP64:
			b = appendStreamFloat(b, math.Float64frombits(le.Uint64(v)))
		default:
		}
	}
	return b
}

// appendStreamFloat writes f as a C++ stream with default settings does
// (printf's "%g": six significant digits, trailing zeros dropped, an
// exponent of at least two digits; glibc's nan, -nan, inf and -inf).
// strconv's 'g' with precision 6 gives the same digits and layout.
func appendStreamFloat(b []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		if math.Signbit(f) {
			return append(b, "-nan"...)
		}
		return append(b, "nan"...)
	case math.IsInf(f, 1):
		return append(b, "inf"...)
	case math.IsInf(f, -1):
		return append(b, "-inf"...)
	}
	return strconv.AppendFloat(b, f, 'g', 6, 64)
}

// appendJSONText appends s escaped for the inside of a JSON string.
func appendJSONText(b []byte, s []byte) []byte {
	const hex = "0123456789abcdef"
	for len(s) > 0 {
		c := s[0]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, `\n`...)
			case c == '\r':
				b = append(b, `\r`...)
			case c == '\t':
				b = append(b, `\t`...)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			s = s[1:]
			continue
		}
		r, size := utf8.DecodeRune(s)
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[:size]...)
		}
		s = s[size:]
	}
	return b
}
