package main

import (
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/nereid-project/nereid/proto/inferencepb"
)

// tensorSpec is one input or output of a model: its name, protocol data
// type and dims without the batch dimension (-1: any size).
type tensorSpec struct {
	name     string
	datatype string
	dims     []int64
}

// model is one of the models the ceiling serves. Output i has the shape of
// input i and is computed in place in input i's buffer.
type model struct {
	name     string
	maxBatch int64
	inputs   []tensorSpec
	outputs  []tensorSpec
	// compute overwrites the input buffers with the outputs. The buffers
	// have been checked: one per input, each of the size its shape says.
	compute func(bufs [][]byte)

	// Answers to the metadata and configuration calls, built once.
	metadataJSON []byte
	configJSON   []byte
	metadataPB   *inferencepb.ModelMetadataResponse
	configPB     *inferencepb.ModelConfig
}

// models are the models of model_repo_examples that the ceiling can serve,
// with the same tensors and semantics.
var models = map[string]*model{
	// Triton's `simple`: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1.
	"simple": {
		name: "simple", maxBatch: 8,
		inputs:  []tensorSpec{{"INPUT0", "INT32", []int64{16}}, {"INPUT1", "INT32", []int64{16}}},
		outputs: []tensorSpec{{"OUTPUT0", "INT32", []int64{16}}, {"OUTPUT1", "INT32", []int64{16}}},
		compute: addSub,
	},
	// identity_fp32: OUTPUT0 = INPUT0.
	"identity_fp32": {
		name: "identity_fp32", maxBatch: 8,
		inputs:  []tensorSpec{{"INPUT0", "FP32", []int64{-1}}},
		outputs: []tensorSpec{{"OUTPUT0", "FP32", []int64{-1}}},
		compute: func([][]byte) {},
	},
}

// addSub computes simple's sum and difference of two INT32 tensors in place.
func addSub(bufs [][]byte) {
	a, b := bufs[0], bufs[1]
	le := binary.LittleEndian
	for i := 0; i+4 <= len(a); i += 4 {
		x, y := le.Uint32(a[i:]), le.Uint32(b[i:])
		le.PutUint32(a[i:], x+y)
		le.PutUint32(b[i:], x-y)
	}
}

// elemSize is the byte size of one element of the data types the models use.
func elemSize(datatype string) int {
	switch datatype {
	case "INT32", "FP32":
		return 4
	default:
		return 0
	}
}

var dataTypes = map[string]inferencepb.DataType{
	"INT32": inferencepb.DataType_TYPE_INT32,
	"FP32":  inferencepb.DataType_TYPE_FP32,
}

// init fills in the metadata and configuration answers.
func (m *model) init() {
	meta := func(ts []tensorSpec) []*inferencepb.ModelMetadataResponse_TensorMetadata {
		out := make([]*inferencepb.ModelMetadataResponse_TensorMetadata, len(ts))
		for i, t := range ts {
			out[i] = &inferencepb.ModelMetadataResponse_TensorMetadata{Name: t.name, Datatype: t.datatype, Shape: m.fullShape(t)}
		}
		return out
	}
	m.metadataPB = &inferencepb.ModelMetadataResponse{
		Name: m.name, Versions: []string{"1"}, Platform: "ceiling",
		Inputs: meta(m.inputs), Outputs: meta(m.outputs),
	}
	m.configPB = &inferencepb.ModelConfig{Name: m.name, Platform: "ceiling", MaxBatchSize: int32(m.maxBatch)}
	for _, t := range m.inputs {
		m.configPB.Input = append(m.configPB.Input, &inferencepb.ModelInput{Name: t.name, DataType: dataTypes[t.datatype], Dims: t.dims})
	}
	for _, t := range m.outputs {
		m.configPB.Output = append(m.configPB.Output, &inferencepb.ModelOutput{Name: t.name, DataType: dataTypes[t.datatype], Dims: t.dims})
	}

	b := fmt.Appendf(nil, `{"name":%q,"versions":["1"],"platform":"ceiling","inputs":`, m.name)
	b = m.appendMetadataTensors(b, m.inputs)
	b = append(b, `,"outputs":`...)
	b = m.appendMetadataTensors(b, m.outputs)
	m.metadataJSON = append(b, '}')

	b = fmt.Appendf(nil, `{"name":%q,"platform":"ceiling","max_batch_size":%d,"input":`, m.name, m.maxBatch)
	b = appendConfigTensors(b, m.inputs)
	b = append(b, `,"output":`...)
	b = appendConfigTensors(b, m.outputs)
	m.configJSON = append(b, '}')
}

// appendMetadataTensors appends the JSON metadata of tensors (datatype and
// full shape).
func (m *model) appendMetadataTensors(b []byte, ts []tensorSpec) []byte {
	b = append(b, '[')
	for i, t := range ts {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"name":%q,"datatype":%q,"shape":`, t.name, t.datatype)
		b = append(appendInts(b, m.fullShape(t)), '}')
	}
	return append(b, ']')
}

// appendConfigTensors appends tensors as model configuration JSON (data_type
// and dims, as Triton's /config shows them).
func appendConfigTensors(b []byte, ts []tensorSpec) []byte {
	b = append(b, '[')
	for i, t := range ts {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"name":%q,"data_type":"TYPE_%s","dims":`, t.name, t.datatype)
		b = append(appendInts(b, t.dims), '}')
	}
	return append(b, ']')
}

// fullShape is a tensor's shape as clients see it: with a leading -1 for
// the batch dimension when the model batches.
func (m *model) fullShape(t tensorSpec) []int64 {
	if m.maxBatch == 0 {
		return t.dims
	}
	return append([]int64{-1}, t.dims...)
}

func appendInts(b []byte, v []int64) []byte {
	b = append(b, '[')
	for i, x := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, x, 10)
	}
	return append(b, ']')
}

// inputIndex is the index of the model input with this name, or -1.
func (m *model) inputIndex(name []byte) int {
	for i := range m.inputs {
		if m.inputs[i].name == string(name) {
			return i
		}
	}
	return -1
}

// outputIndex is the index of the model output with this name, or -1.
func (m *model) outputIndex(name []byte) int {
	for i := range m.outputs {
		if m.outputs[i].name == string(name) {
			return i
		}
	}
	return -1
}

// checkInput checks input i's data type and shape and returns the byte size
// its data must have.
func (m *model) checkInput(i int, datatype []byte, shape []int64) (int, error) {
	t := &m.inputs[i]
	if string(datatype) != t.datatype {
		return 0, fmt.Errorf("unexpected datatype %s for input '%s', expecting %s", datatype, t.name, t.datatype)
	}
	dims := shape
	if m.maxBatch > 0 {
		if len(shape) == 0 || shape[0] < 1 || shape[0] > m.maxBatch {
			return 0, fmt.Errorf("inference request batch-size must be in [1, %d] for '%s'", m.maxBatch, m.name)
		}
		dims = shape[1:]
	}
	if len(dims) != len(t.dims) {
		return 0, fmt.Errorf("unexpected shape for input '%s' for model '%s'", t.name, m.name)
	}
	for j, d := range dims {
		if t.dims[j] >= 0 && t.dims[j] != d {
			return 0, fmt.Errorf("unexpected shape for input '%s' for model '%s'", t.name, m.name)
		}
	}
	n := 1
	for _, d := range shape {
		if d < 0 || d > 1<<30 {
			return 0, fmt.Errorf("unexpected shape for input '%s' for model '%s'", t.name, m.name)
		}
		if n *= int(d); n > 1<<30 {
			return 0, fmt.Errorf("input '%s' is too large", t.name)
		}
	}
	return n * elemSize(t.datatype), nil
}
