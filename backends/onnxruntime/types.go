//go:build cgo

package onnxruntime

import (
	"fmt"

	"github.com/nereid-project/nereid/inference"
)

// ONNX's TensorProto.DataType values (ONNXTensorElementDataType).
const (
	onnxUndefined = 0
	onnxFloat     = 1
	onnxUint8     = 2
	onnxInt8      = 3
	onnxUint16    = 4
	onnxInt16     = 5
	onnxInt32     = 6
	onnxInt64     = 7
	onnxString    = 8
	onnxBool      = 9
	onnxFloat16   = 10
	onnxDouble    = 11
	onnxUint32    = 12
	onnxUint64    = 13
	onnxBFloat16  = 16
)

// onnxTypes maps each protocol data type to its ONNX element type.
var onnxTypes = map[inference.DataType]int{
	inference.Bool:   onnxBool,
	inference.Uint8:  onnxUint8,
	inference.Uint16: onnxUint16,
	inference.Uint32: onnxUint32,
	inference.Uint64: onnxUint64,
	inference.Int8:   onnxInt8,
	inference.Int16:  onnxInt16,
	inference.Int32:  onnxInt32,
	inference.Int64:  onnxInt64,
	inference.FP16:   onnxFloat16,
	inference.FP32:   onnxFloat,
	inference.FP64:   onnxDouble,
	inference.Bytes:  onnxString,
	inference.BF16:   onnxBFloat16,
}

// fromONNX is the inverse of onnxTypes.
var fromONNX = func() map[int]inference.DataType {
	m := make(map[int]inference.DataType, len(onnxTypes))
	for dt, o := range onnxTypes {
		m[o] = dt
	}
	return m
}()

// toONNX returns the ONNX element type of a protocol data type.
func toONNX(dt inference.DataType) (int, bool) {
	o, ok := onnxTypes[dt]
	return o, ok
}

// dataTypeOf returns the protocol data type of an ONNX element type.
func dataTypeOf(onnxType int) (inference.DataType, bool) {
	dt, ok := fromONNX[onnxType]
	return dt, ok
}

// onnxTypeName names an ONNX element type the way ONNX does
// (tensor(float16)), including the ones Nereid cannot serve.
func onnxTypeName(t int) string {
	names := map[int]string{
		onnxFloat: "float", onnxUint8: "uint8", onnxInt8: "int8", onnxUint16: "uint16",
		onnxInt16: "int16", onnxInt32: "int32", onnxInt64: "int64", onnxString: "string",
		onnxBool: "bool", onnxFloat16: "float16", onnxDouble: "double", onnxUint32: "uint32",
		onnxUint64: "uint64", 14: "complex64", 15: "complex128", onnxBFloat16: "bfloat16",
		17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2", 20: "float8e5m2fnuz",
		21: "uint4", 22: "int4", 23: "float4e2m1",
	}
	if n, ok := names[t]; ok {
		return "tensor(" + n + ")"
	}
	return fmt.Sprintf("tensor(type %d)", t)
}

// tensorInfo is what the model says about one of its inputs or outputs.
type tensorInfo struct {
	name     string
	onnxType int     // ONNX element type
	dims     []int64 // -1 for a symbolic or unknown dimension
	// symbols are the dimensions' names (dim_param), "" where one has
	// none; nil when none has one.
	symbols []string
}
