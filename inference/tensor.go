package inference

import (
	"encoding/binary"
	"math"
)

// Tensor is a named, typed, shaped block of elements.
//
// Data is always in the protocol's raw form: little-endian, row-major, no
// padding; BOOL is one byte per element; BYTES is, per element, a 4-byte
// little-endian length followed by that many bytes. Data may alias a
// received buffer (an HTTP body, a gRPC message): whoever holds a Tensor
// must not write into Data it did not allocate.
type Tensor struct {
	Name       string
	DataType   DataType
	Shape      []int64
	Data       []byte
	Parameters Parameters
}

// ElementCount is the product of the shape; 1 for a scalar shape []; -1 if
// a dimension is negative or the product overflows.
func ElementCount(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return -1
		}
		if d != 0 && n > math.MaxInt64/d {
			return -1
		}
		n *= d
	}
	return n
}

// ByteSize is the number of bytes a fixed-width tensor of this type and
// shape occupies; -1 for BYTES, negative shapes or overflow.
func ByteSize(dt DataType, shape []int64) int64 {
	n := ElementCount(shape)
	if n < 0 || dt == Bytes || !dt.Valid() {
		return -1
	}
	sz := int64(dt.Size())
	if n > math.MaxInt64/sz {
		return -1
	}
	return n * sz
}

// CountBytesElements walks a BYTES buffer and returns how many elements it
// holds, or an error naming the tensor if a length prefix runs past the end.
func CountBytesElements(name string, data []byte) (int64, error) {
	var n int64
	for off := 0; off < len(data); {
		if len(data)-off < 4 {
			return 0, InvalidArg("unexpected end of data for BYTES tensor '%s': %d trailing bytes cannot hold a 4-byte length", name, len(data)-off)
		}
		l := binary.LittleEndian.Uint32(data[off:])
		off += 4
		if uint64(l) > uint64(len(data)-off) {
			return 0, InvalidArg("BYTES tensor '%s' element %d claims %d bytes but only %d remain", name, n, l, len(data)-off)
		}
		off += int(l)
		n++
	}
	return n, nil
}

// SplitBytes returns the elements of a BYTES buffer as sub-slices of data.
func SplitBytes(name string, data []byte) ([][]byte, error) {
	n, err := CountBytesElements(name, data)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, n)
	for off := 0; off < len(data); {
		l := int(binary.LittleEndian.Uint32(data[off:]))
		off += 4
		out = append(out, data[off:off+l:off+l])
		off += l
	}
	return out, nil
}

// AppendBytesElement appends one length-prefixed BYTES element to dst.
func AppendBytesElement(dst, elem []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(elem)))
	return append(dst, elem...)
}

// ValidateData checks that Data agrees with DataType and Shape: the exact
// byte size for fixed-width types, and for BYTES well-formed length prefixes
// and as many elements as the shape holds.
func (t *Tensor) ValidateData() error {
	if !t.DataType.Valid() {
		return InvalidArg("invalid datatype for input '%s'", t.Name)
	}
	want := ElementCount(t.Shape)
	if want < 0 {
		return InvalidArg("invalid shape %v for input '%s'", t.Shape, t.Name)
	}
	if t.DataType == Bytes {
		got, err := CountBytesElements(t.Name, t.Data)
		if err != nil {
			return err
		}
		if got != want {
			return InvalidArg("unexpected number of string elements %d for inference input '%s', expecting %d", got, t.Name, want)
		}
		return nil
	}
	size := ByteSize(t.DataType, t.Shape)
	if size < 0 {
		return InvalidArg("invalid shape %v for input '%s': byte size overflows", t.Shape, t.Name)
	}
	if int64(len(t.Data)) != size {
		return InvalidArg("unexpected total byte size %d for input '%s', expecting %d", len(t.Data), t.Name, size)
	}
	return nil
}

// DimsMatch reports whether shape fits dims, a configuration's dimensions
// in which -1 matches any size.
func DimsMatch(shape, dims []int64) bool {
	if len(shape) != len(dims) {
		return false
	}
	for i, d := range dims {
		if d != -1 && shape[i] != d {
			return false
		}
	}
	return true
}
