package v2wire

import (
	"encoding/binary"
	"math"
	"strconv"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

const allTypesJSON = `{"id":"r1","inputs":[` +
	`{"name":"INPUT_BOOL","datatype":"BOOL","shape":[2],"data":[true,false]},` +
	`{"name":"INPUT_U8","datatype":"UINT8","shape":[2],"data":[0,255]},` +
	`{"name":"INPUT_U16","datatype":"UINT16","shape":[2],"data":[0,65535]},` +
	`{"name":"INPUT_U32","datatype":"UINT32","shape":[2],"data":[0,4294967295]},` +
	`{"name":"INPUT_U64","datatype":"UINT64","shape":[2],"data":[0,18446744073709551615]},` +
	`{"name":"INPUT_I8","datatype":"INT8","shape":[2],"data":[-128,127]},` +
	`{"name":"INPUT_I16","datatype":"INT16","shape":[2],"data":[-32768,32767]},` +
	`{"name":"INPUT_I32","datatype":"INT32","shape":[2,2],"data":[[-2147483648,2147483647],[0,-1]]},` +
	`{"name":"INPUT_I64","datatype":"INT64","shape":[2],"data":[-9223372036854775808,9223372036854775807]},` +
	`{"name":"INPUT_FP32","datatype":"FP32","shape":[4],"data":[1,0.1,-2.5e-7,3.4028234663852886e38]},` +
	`{"name":"INPUT_FP64","datatype":"FP64","shape":[3,2],"data":[[1,0.1],[1e21,1.5e300],[-0.0,123456789012]]},` +
	`{"name":"INPUT_BYTES","datatype":"BYTES","shape":[3],"data":["hello","","\u00e9\n\"q\"\\"]}` +
	`]}`

// binaryBody joins a JSON header and binary tensor data.
func binaryBody(header string, blobs ...[]byte) ([]byte, string) {
	b := []byte(header)
	for _, x := range blobs {
		b = append(b, x...)
	}
	return b, strconv.Itoa(len(header))
}

func appendF32(dst []byte, vs ...float32) []byte {
	for _, v := range vs {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
	}
	return dst
}

// bytesTensor is a BYTES tensor of the given shape holding elems.
func bytesTensor(name string, shape []int64, elems ...string) inference.Tensor {
	var data []byte
	for _, e := range elems {
		data = inference.AppendBytesElement(data, []byte(e))
	}
	return inference.Tensor{Name: name, DataType: inference.Bytes, Shape: shape, Data: data}
}

// testConfigs are model configurations for the decoders that need one
// (the raw binary form, generate).
func testConfigs() map[string]*inferencepb.ModelConfig {
	tensor := func(name string, dt inferencepb.DataType, dims ...int64) *inferencepb.ModelInput {
		return &inferencepb.ModelInput{Name: name, DataType: dt, Dims: dims}
	}
	out := func(name string, dt inferencepb.DataType, dims ...int64) *inferencepb.ModelOutput {
		return &inferencepb.ModelOutput{Name: name, DataType: dt, Dims: dims}
	}
	optional := func(in *inferencepb.ModelInput) *inferencepb.ModelInput {
		in.Optional = true
		return in
	}
	return map[string]*inferencepb.ModelConfig{"simple": {
		Name: "simple", Platform: "onnxruntime_onnx", Backend: "onnxruntime", MaxBatchSize: 8,
		Input:  []*inferencepb.ModelInput{tensor("INPUT0", inferencepb.DataType_TYPE_INT32, 16), tensor("INPUT1", inferencepb.DataType_TYPE_INT32, 16)},
		Output: []*inferencepb.ModelOutput{out("OUTPUT0", inferencepb.DataType_TYPE_INT32, 16), out("OUTPUT1", inferencepb.DataType_TYPE_INT32, 16)},
	},
		"raw_batched": {
			Name: "raw_batched", Backend: "identity", MaxBatchSize: 4,
			Input:  []*inferencepb.ModelInput{tensor("INPUT0", inferencepb.DataType_TYPE_UINT8, 2, -1)},
			Output: []*inferencepb.ModelOutput{out("OUTPUT0", inferencepb.DataType_TYPE_UINT8, 2, -1)},
		},
		"raw_bytes": {
			Name: "raw_bytes", Backend: "identity",
			Input:  []*inferencepb.ModelInput{tensor("INPUT0", inferencepb.DataType_TYPE_STRING, 1)},
			Output: []*inferencepb.ModelOutput{out("OUTPUT0", inferencepb.DataType_TYPE_STRING, 1)},
		},
		"gen_text": {
			Name: "gen_text", Backend: "python",
			Input: []*inferencepb.ModelInput{
				tensor("text_input", inferencepb.DataType_TYPE_STRING, 1),
				tensor("max_tokens", inferencepb.DataType_TYPE_INT32, 1),
				optional(tensor("temperature", inferencepb.DataType_TYPE_FP32, 1)),
				optional(tensor("stream", inferencepb.DataType_TYPE_BOOL, 1)),
				optional(tensor("stop_ids", inferencepb.DataType_TYPE_UINT16, -1)),
				optional(tensor("pair", inferencepb.DataType_TYPE_INT8, 2)),
				optional(tensor("half", inferencepb.DataType_TYPE_FP16, 1)),
			},
			Output: []*inferencepb.ModelOutput{out("text_output", inferencepb.DataType_TYPE_STRING, -1)},
		},
		"gen_batched": {
			Name: "gen_batched", Backend: "python", MaxBatchSize: 8,
			Input: []*inferencepb.ModelInput{
				tensor("text_input", inferencepb.DataType_TYPE_STRING, 1),
				optional(tensor("tokens", inferencepb.DataType_TYPE_INT64, -1)),
				optional(tensor("grid", inferencepb.DataType_TYPE_FP64, 2, -1)),
			},
			Output: []*inferencepb.ModelOutput{out("text_output", inferencepb.DataType_TYPE_STRING, -1)},
		},
		"gen_sequence": {
			Name: "gen_sequence", Backend: "python",
			Input: []*inferencepb.ModelInput{
				tensor("text_input", inferencepb.DataType_TYPE_STRING, 1),
				tensor("START", inferencepb.DataType_TYPE_BOOL, 1),
			},
			SchedulingChoice: &inferencepb.ModelConfig_SequenceBatching{SequenceBatching: &inferencepb.ModelSequenceBatching{
				ControlInput: []*inferencepb.ModelSequenceBatching_ControlInput{{Name: "START"}},
			}},
		},
	}
}
