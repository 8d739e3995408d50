package inference

// DataType is a tensor element type. Its numeric values equal those of the
// model configuration's DataType enum (TYPE_BOOL = 1 … TYPE_BF16 = 14), so a
// config value converts with a plain conversion.
type DataType int32

// The element types of the protocol.
const (
	Invalid DataType = 0
	Bool    DataType = 1
	Uint8   DataType = 2
	Uint16  DataType = 3
	Uint32  DataType = 4
	Uint64  DataType = 5
	Int8    DataType = 6
	Int16   DataType = 7
	Int32   DataType = 8
	Int64   DataType = 9
	FP16    DataType = 10
	FP32    DataType = 11
	FP64    DataType = 12
	Bytes   DataType = 13
	BF16    DataType = 14
)

var dataTypeNames = [...]string{
	Invalid: "INVALID",
	Bool:    "BOOL",
	Uint8:   "UINT8",
	Uint16:  "UINT16",
	Uint32:  "UINT32",
	Uint64:  "UINT64",
	Int8:    "INT8",
	Int16:   "INT16",
	Int32:   "INT32",
	Int64:   "INT64",
	FP16:    "FP16",
	FP32:    "FP32",
	FP64:    "FP64",
	Bytes:   "BYTES",
	BF16:    "BF16",
}

var dataTypeSizes = [...]int{
	Bool: 1, Uint8: 1, Uint16: 2, Uint32: 4, Uint64: 8,
	Int8: 1, Int16: 2, Int32: 4, Int64: 8,
	FP16: 2, FP32: 4, FP64: 8, Bytes: 0, BF16: 2,
}

// String returns the protocol name of the type ("FP32", "BYTES", …).
func (d DataType) String() string {
	if d < 0 || int(d) >= len(dataTypeNames) {
		return "INVALID"
	}
	return dataTypeNames[d]
}

// Valid reports whether d names a real element type.
func (d DataType) Valid() bool { return d > Invalid && int(d) < len(dataTypeNames) }

// Size is the width of one element in bytes; 0 for BYTES, whose elements
// vary in length.
func (d DataType) Size() int {
	if !d.Valid() {
		return 0
	}
	return dataTypeSizes[d]
}

// ParseDataType maps a protocol name ("INT32") to its type.
func ParseDataType(s string) (DataType, bool) {
	for i, n := range dataTypeNames {
		if i != 0 && n == s {
			return DataType(i), true
		}
	}
	return Invalid, false
}
