package tensorflow

import (
	"fmt"

	"github.com/nereid-project/nereid/inference"
)

// TensorFlow's TF_DataType values (tensorflow/c/tf_datatype.h, the same as
// the DataType enum of types.proto).
const (
	tfFloat    = 1
	tfDouble   = 2
	tfInt32    = 3
	tfUint8    = 4
	tfInt16    = 5
	tfInt8     = 6
	tfString   = 7
	tfInt64    = 9
	tfBool     = 10
	tfBfloat16 = 14
	tfUint16   = 17
	tfHalf     = 19
	tfUint32   = 22
	tfUint64   = 23
)

// tfTypes maps each protocol data type to its TensorFlow type, as Triton's
// tensorflow backend does (BYTES is DT_STRING).
var tfTypes = map[inference.DataType]int{
	inference.Bool:   tfBool,
	inference.Uint8:  tfUint8,
	inference.Uint16: tfUint16,
	inference.Uint32: tfUint32,
	inference.Uint64: tfUint64,
	inference.Int8:   tfInt8,
	inference.Int16:  tfInt16,
	inference.Int32:  tfInt32,
	inference.Int64:  tfInt64,
	inference.FP16:   tfHalf,
	inference.FP32:   tfFloat,
	inference.FP64:   tfDouble,
	inference.Bytes:  tfString,
	inference.BF16:   tfBfloat16,
}

var fromTF = func() map[int]inference.DataType {
	m := make(map[int]inference.DataType, len(tfTypes))
	for dt, t := range tfTypes {
		m[t] = dt
	}
	return m
}()

// dataTypeOf returns the protocol data type of a TensorFlow type.
func dataTypeOf(tfType int) (inference.DataType, bool) {
	dt, ok := fromTF[tfType]
	return dt, ok
}

// tfTypeName names a TensorFlow type as types.proto does (DT_FLOAT),
// including the ones Nereid cannot serve.
func tfTypeName(t int) string {
	names := map[int]string{
		tfFloat: "DT_FLOAT", tfDouble: "DT_DOUBLE", tfInt32: "DT_INT32", tfUint8: "DT_UINT8",
		tfInt16: "DT_INT16", tfInt8: "DT_INT8", tfString: "DT_STRING", 8: "DT_COMPLEX64",
		tfInt64: "DT_INT64", tfBool: "DT_BOOL", 11: "DT_QINT8", 12: "DT_QUINT8", 13: "DT_QINT32",
		tfBfloat16: "DT_BFLOAT16", 15: "DT_QINT16", 16: "DT_QUINT16", tfUint16: "DT_UINT16",
		18: "DT_COMPLEX128", tfHalf: "DT_HALF", 20: "DT_RESOURCE", 21: "DT_VARIANT",
		tfUint32: "DT_UINT32", tfUint64: "DT_UINT64",
	}
	if n, ok := names[t]; ok {
		return n
	}
	return fmt.Sprintf("DT_%d", t)
}
