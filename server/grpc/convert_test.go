package grpcfront

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

func le16(v ...uint16) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint16(b, x)
	}
	return b
}

func le32(v ...uint32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, x)
	}
	return b
}

func le64(v ...uint64) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint64(b, x)
	}
	return b
}

func bytesElems(elems ...string) []byte {
	var b []byte
	for _, e := range elems {
		b = inference.AppendBytesElement(b, []byte(e))
	}
	return b
}

func input(name, dt string, shape ...int64) *inferencepb.ModelInferRequest_InferInputTensor {
	return &inferencepb.ModelInferRequest_InferInputTensor{Name: name, Datatype: dt, Shape: shape}
}

func withContents(in *inferencepb.ModelInferRequest_InferInputTensor, c *inferencepb.InferTensorContents) *inferencepb.ModelInferRequest_InferInputTensor {
	in.Contents = c
	return in
}

// typedCases are, per datatype, typed contents and the raw bytes they stand
// for; each holds 3 elements (a [3] tensor).
var typedCases = []struct {
	dt       string
	contents *inferencepb.InferTensorContents
	raw      []byte
}{
	{"BOOL", &inferencepb.InferTensorContents{BoolContents: []bool{true, false, true}}, []byte{1, 0, 1}},
	{"INT8", &inferencepb.InferTensorContents{IntContents: []int32{-1, 2, 127}}, []byte{0xff, 2, 127}},
	{"INT16", &inferencepb.InferTensorContents{IntContents: []int32{-2, 300, 32767}}, le16(0xfffe, 300, 32767)},
	{"INT32", &inferencepb.InferTensorContents{IntContents: []int32{-3, 70000, math.MaxInt32}}, le32(0xfffffffd, 70000, math.MaxInt32)},
	{"INT64", &inferencepb.InferTensorContents{Int64Contents: []int64{-4, 1 << 40, math.MaxInt64}}, le64(0xfffffffffffffffc, 1<<40, math.MaxInt64)},
	{"UINT8", &inferencepb.InferTensorContents{UintContents: []uint32{0, 200, 255}}, []byte{0, 200, 255}},
	{"UINT16", &inferencepb.InferTensorContents{UintContents: []uint32{1, 60000, 65535}}, le16(1, 60000, 65535)},
	{"UINT32", &inferencepb.InferTensorContents{UintContents: []uint32{2, 1 << 31, math.MaxUint32}}, le32(2, 1<<31, math.MaxUint32)},
	{"UINT64", &inferencepb.InferTensorContents{Uint64Contents: []uint64{3, 1 << 63, math.MaxUint64}}, le64(3, 1<<63, math.MaxUint64)},
	{"FP32", &inferencepb.InferTensorContents{Fp32Contents: []float32{1.5, -2, float32(math.Inf(1))}},
		le32(math.Float32bits(1.5), math.Float32bits(-2), math.Float32bits(float32(math.Inf(1))))},
	{"FP64", &inferencepb.InferTensorContents{Fp64Contents: []float64{0.25, -1e300, math.SmallestNonzeroFloat64}},
		le64(math.Float64bits(0.25), math.Float64bits(-1e300), math.Float64bits(math.SmallestNonzeroFloat64))},
	{"BYTES", &inferencepb.InferTensorContents{BytesContents: [][]byte{[]byte("ab"), {}, []byte("\x00\xff")}}, bytesElems("ab", "", "\x00\xff")},
}

func TestDecodeTypedContents(t *testing.T) {
	for _, tc := range typedCases {
		t.Run(tc.dt, func(t *testing.T) {
			req, err := decodeRequest(&inferencepb.ModelInferRequest{
				ModelName: "m",
				Inputs:    []*inferencepb.ModelInferRequest_InferInputTensor{withContents(input("IN", tc.dt, 3), tc.contents)},
			})
			if err != nil {
				t.Fatal(err)
			}
			got := req.Inputs[0]
			if got.DataType.String() != tc.dt || !bytes.Equal(got.Data, tc.raw) {
				t.Errorf("decoded %s %x, want %s %x", got.DataType, got.Data, tc.dt, tc.raw)
			}
		})
	}
}

func TestDecodeRawContentsWithoutCopy(t *testing.T) {
	for _, tc := range typedCases {
		t.Run(tc.dt, func(t *testing.T) {
			raw := bytes.Clone(tc.raw)
			in := &inferencepb.ModelInferRequest{
				ModelName:        "m",
				Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{input("A", tc.dt, 1, 3), input("B", "FP16", 2)},
				RawInputContents: [][]byte{raw, le16(0x3c00, 0xc000)},
			}
			req, err := decodeRequest(in)
			if err != nil {
				t.Fatal(err)
			}
			if &req.Inputs[0].Data[0] != &raw[0] {
				t.Error("raw input was copied")
			}
			if req.Inputs[1].DataType != inference.FP16 || len(req.Inputs[1].Data) != 4 {
				t.Errorf("second input = %+v", req.Inputs[1])
			}
		})
	}
	for _, dt := range []string{"FP16", "BF16"} {
		req, err := decodeRequest(&inferencepb.ModelInferRequest{
			Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{input("H", dt, 2, 2)},
			RawInputContents: [][]byte{le16(1, 2, 3, 4)},
		})
		if err != nil || req.Inputs[0].DataType.String() != dt {
			t.Errorf("%s raw: %v, %v", dt, req, err)
		}
	}
}

func TestDecodeRequestFields(t *testing.T) {
	req, err := decodeRequest(&inferencepb.ModelInferRequest{
		ModelName: "simple", ModelVersion: "3", Id: "req-7",
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{
			Name: "IN", Datatype: "INT32", Shape: []int64{2},
			Parameters: map[string]*inferencepb.InferParameter{"custom": {ParameterChoice: &inferencepb.InferParameter_Uint64Param{Uint64Param: 9}}},
		}},
		Outputs: []*inferencepb.ModelInferRequest_InferRequestedOutputTensor{
			{Name: "OUT0", Parameters: map[string]*inferencepb.InferParameter{"binary_data": {ParameterChoice: &inferencepb.InferParameter_BoolParam{BoolParam: true}}}},
			{Name: "OUT1", Parameters: map[string]*inferencepb.InferParameter{"classification": {ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: 3}}}},
		},
		RawInputContents: [][]byte{le32(1, 2)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if req.ID != "req-7" || req.ModelName != "simple" || req.ModelVersion != "3" {
		t.Errorf("request header = %q %q %q", req.ID, req.ModelName, req.ModelVersion)
	}
	if v, ok := req.Inputs[0].Parameters["custom"].(uint64); !ok || v != 9 {
		t.Errorf("input parameters = %v", req.Inputs[0].Parameters)
	}
	if len(req.Outputs) != 2 || req.Outputs[0].Name != "OUT0" || req.Outputs[0].Parameters["binary_data"] != true {
		t.Errorf("outputs = %+v", req.Outputs)
	}
	if n, ok := req.Outputs[1].Parameters.Int("classification"); !ok || n != 3 {
		t.Errorf("classification = %v", req.Outputs[1].Parameters)
	}
}

func TestDecodeRejects(t *testing.T) {
	raw4 := le32(1)
	for _, tc := range []struct {
		name string
		req  *inferencepb.ModelInferRequest
		code inference.Code
		msg  string
	}{
		{"mixed typed and raw", &inferencepb.ModelInferRequest{ModelName: "m",
			Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{
				input("RAW", "INT32", 1),
				withContents(input("TYPED", "INT32", 1), &inferencepb.InferTensorContents{IntContents: []int32{1}}),
			},
			RawInputContents: [][]byte{raw4, raw4}},
			inference.CodeInvalidArg, "contents field must not be specified when using raw_input_contents for 'TYPED' for model 'm'"},
		{"empty contents with raw", &inferencepb.ModelInferRequest{ModelName: "m",
			Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{withContents(input("X", "INT32", 1), &inferencepb.InferTensorContents{})},
			RawInputContents: [][]byte{raw4}},
			inference.CodeInvalidArg, "contents field must not be specified when using raw_input_contents for 'X'"},
		{"too few raw", &inferencepb.ModelInferRequest{ModelName: "m",
			Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{input("A", "INT32", 1), input("B", "INT32", 1)},
			RawInputContents: [][]byte{raw4}},
			inference.CodeInvalidArg, "unable to find data for input tensor 'B' for model 'm' in request."},
		{"no data at all", &inferencepb.ModelInferRequest{ModelName: "m",
			Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{input("A", "INT32", 1)}},
			inference.CodeInvalidArg, "unable to find data for input tensor 'A'"},
		{"too many raw", &inferencepb.ModelInferRequest{ModelName: "m",
			Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{input("A", "INT32", 1)},
			RawInputContents: [][]byte{raw4, raw4}},
			inference.CodeInvalidArg, "expected 1 raw_input_contents entries for model 'm', one per input tensor, but got 2"},
		{"raw without inputs", &inferencepb.ModelInferRequest{ModelName: "m", RawInputContents: [][]byte{raw4}},
			inference.CodeInvalidArg, "expected 0 raw_input_contents"},
		{"raw size mismatch", &inferencepb.ModelInferRequest{ModelName: "m",
			Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{input("A", "INT32", 2)},
			RawInputContents: [][]byte{raw4}},
			inference.CodeInvalidArg, "'A'"},
		{"typed count mismatch", &inferencepb.ModelInferRequest{ModelName: "m",
			Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{withContents(input("A", "FP32", 2, 2), &inferencepb.InferTensorContents{Fp32Contents: []float32{1, 2, 3}})}},
			inference.CodeInvalidArg, "'A'"},
		{"bytes count mismatch", &inferencepb.ModelInferRequest{ModelName: "m",
			Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{withContents(input("S", "BYTES", 3), &inferencepb.InferTensorContents{BytesContents: [][]byte{[]byte("x")}})}},
			inference.CodeInvalidArg, "'S'"},
		{"malformed raw bytes", &inferencepb.ModelInferRequest{ModelName: "m",
			Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{input("S", "BYTES", 1)},
			RawInputContents: [][]byte{{9, 0, 0, 0, 'a'}}},
			inference.CodeInvalidArg, "'S'"},
		{"wrong typed field", &inferencepb.ModelInferRequest{ModelName: "m",
			Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{withContents(input("A", "FP32", 1), &inferencepb.InferTensorContents{IntContents: []int32{1}})}},
			inference.CodeInvalidArg, "unexpected explicit tensor data for input tensor 'A' for model 'm' of type 'INT32', expected datatype 'FP32'"},
		{"uint field for int8", &inferencepb.ModelInferRequest{ModelName: "m",
			Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{withContents(input("A", "INT8", 1), &inferencepb.InferTensorContents{UintContents: []uint32{1}})}},
			inference.CodeInvalidArg, "of type 'UINT32', expected datatype 'INT8'"},
		{"two typed fields", &inferencepb.ModelInferRequest{ModelName: "m",
			Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{withContents(input("A", "INT64", 1),
				&inferencepb.InferTensorContents{Int64Contents: []int64{1}, Fp32Contents: []float32{1}})}},
			inference.CodeInvalidArg, "unexpected explicit tensor data for input tensor 'A' for model 'm', binary data was already supplied."},
		{"typed FP16", &inferencepb.ModelInferRequest{ModelName: "m",
			Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{withContents(input("H", "FP16", 1), &inferencepb.InferTensorContents{Fp32Contents: []float32{1}})}},
			inference.CodeInvalidArg, "expected datatype 'FP16'"},
		{"typed BF16", &inferencepb.ModelInferRequest{ModelName: "m",
			Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{withContents(input("H", "BF16", 1), &inferencepb.InferTensorContents{UintContents: []uint32{1}})}},
			inference.CodeInvalidArg, "expected datatype 'BF16'"},
		{"unknown datatype", &inferencepb.ModelInferRequest{ModelName: "m",
			Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{input("A", "FLOAT", 1)},
			RawInputContents: [][]byte{raw4}},
			inference.CodeInvalidArg, "invalid datatype 'FLOAT' for input tensor 'A' for model 'm'"},
		{"INVALID datatype", &inferencepb.ModelInferRequest{ModelName: "m",
			Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{input("A", "INVALID", 1)},
			RawInputContents: [][]byte{raw4}},
			inference.CodeInvalidArg, "invalid datatype 'INVALID'"},
		{"negative shape", &inferencepb.ModelInferRequest{ModelName: "m",
			Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{input("A", "INT32", -1)},
			RawInputContents: [][]byte{raw4}},
			inference.CodeInvalidArg, "'A'"},
		{"overflowing shape", &inferencepb.ModelInferRequest{ModelName: "m",
			Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{input("A", "INT32", 1<<62, 1<<62)},
			RawInputContents: [][]byte{raw4}},
			inference.CodeInvalidArg, "'A'"},
		{"byte size overflow", &inferencepb.ModelInferRequest{ModelName: "m",
			Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{input("A", "FP64", 1<<61)},
			RawInputContents: [][]byte{raw4}},
			inference.CodeInvalidArg, "'A'"},
		{"classification not int64", &inferencepb.ModelInferRequest{ModelName: "m",
			Outputs: []*inferencepb.ModelInferRequest_InferRequestedOutputTensor{{Name: "O",
				Parameters: map[string]*inferencepb.InferParameter{"classification": {ParameterChoice: &inferencepb.InferParameter_StringParam{StringParam: "3"}}}}}},
			inference.CodeInvalidArg, "invalid value type for 'classification' parameter, expected int64_param"},
		{"classification zero", &inferencepb.ModelInferRequest{ModelName: "m",
			Outputs: []*inferencepb.ModelInferRequest_InferRequestedOutputTensor{{Name: "O",
				Parameters: map[string]*inferencepb.InferParameter{"classification": {ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: 0}}}}}},
			inference.CodeInvalidArg, "invalid value for 'classification' parameter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeRequest(tc.req)
			if err == nil {
				t.Fatal("accepted")
			}
			if got := inference.CodeOf(err); got != tc.code {
				t.Errorf("code = %v, want %v (%v)", got, tc.code, err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not contain %q", err, tc.msg)
			}
		})
	}
}

func TestDecodeEmptyTensors(t *testing.T) {
	// Zero-element tensors: empty typed contents of any kind, or an empty
	// raw entry.
	req, err := decodeRequest(&inferencepb.ModelInferRequest{Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{
		withContents(input("A", "FP16", 0), &inferencepb.InferTensorContents{}),
		withContents(input("B", "BYTES", 2, 0), &inferencepb.InferTensorContents{}),
	}})
	if err != nil || len(req.Inputs[0].Data) != 0 || len(req.Inputs[1].Data) != 0 {
		t.Fatalf("typed empty: %v, %v", req, err)
	}
	req, err = decodeRequest(&inferencepb.ModelInferRequest{
		Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{input("A", "INT32", 0, 5)},
		RawInputContents: [][]byte{{}},
	})
	if err != nil || len(req.Inputs[0].Data) != 0 {
		t.Fatalf("raw empty: %v, %v", req, err)
	}
	// A scalar (shape []) holds one element.
	if _, err := decodeRequest(&inferencepb.ModelInferRequest{
		Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{input("S", "INT32")},
		RawInputContents: [][]byte{le32(5)},
	}); err != nil {
		t.Fatalf("scalar: %v", err)
	}
}

func p(v any) *inferencepb.InferParameter {
	switch x := v.(type) {
	case bool:
		return &inferencepb.InferParameter{ParameterChoice: &inferencepb.InferParameter_BoolParam{BoolParam: x}}
	case int64:
		return &inferencepb.InferParameter{ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: x}}
	case uint64:
		return &inferencepb.InferParameter{ParameterChoice: &inferencepb.InferParameter_Uint64Param{Uint64Param: x}}
	case float64:
		return &inferencepb.InferParameter{ParameterChoice: &inferencepb.InferParameter_DoubleParam{DoubleParam: x}}
	case string:
		return &inferencepb.InferParameter{ParameterChoice: &inferencepb.InferParameter_StringParam{StringParam: x}}
	case nil:
		return &inferencepb.InferParameter{}
	}
	panic(v)
}

func TestRequestParameters(t *testing.T) {
	ok := map[string]*inferencepb.InferParameter{
		"sequence_id":                        p(int64(42)),
		"sequence_start":                     p(true),
		"sequence_end":                       p(false),
		"priority":                           p(uint64(2)),
		"timeout":                            p(int64(1000)),
		"custom_int":                         p(int64(-1)),
		"custom_bool":                        p(true),
		"custom_str":                         p("x"),
		"custom_double":                      p(0.5),
		"triton_enable_empty_final_response": p(true),
	}
	got, err := requestParameters(ok)
	if err != nil {
		t.Fatal(err)
	}
	want := inference.Parameters{
		"sequence_id": int64(42), "sequence_start": true, "sequence_end": false, "priority": uint64(2),
		"timeout": int64(1000), "custom_int": int64(-1), "custom_bool": true, "custom_str": "x", "custom_double": 0.5,
	}
	if len(got) != len(want) {
		t.Errorf("parameters = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	if _, err := requestParameters(map[string]*inferencepb.InferParameter{"sequence_id": p("corr-1"), "priority": p(int64(0))}); err != nil {
		t.Errorf("string sequence id / int64 priority: %v", err)
	}

	for _, tc := range []struct {
		key string
		val any
		msg string
	}{
		{"sequence_id", uint64(1), "invalid value type for 'sequence_id' parameter, expected int64_param or string_param."},
		{"sequence_id", true, "invalid value type for 'sequence_id' parameter, expected int64_param or string_param."},
		{"sequence_start", int64(1), "invalid value type for 'sequence_start' parameter, expected bool_param."},
		{"sequence_end", "true", "invalid value type for 'sequence_end' parameter, expected bool_param."},
		{"priority", int64(-1), "invalid value for 'priority', expected value >= 0."},
		{"priority", "high", "invalid value type for 'priority' parameter, expected int64_param or uint64_param."},
		{"timeout", uint64(5), "invalid value type for 'timeout' parameter, expected int64_param."},
		{"custom", uint64(5), "invalid value type for 'custom' parameter, expected int64_param, bool_param, or string_param."},
		{"custom", nil, "invalid value type for 'custom' parameter, expected int64_param, bool_param, or string_param."},
		{"triton_other", true, "parameter keys starting with 'triton_' are reserved for Triton usage. Only the following keys starting with 'triton_' are allowed: triton_enable_empty_final_response"},
		{"triton_enable_empty_final_response", int64(1), "invalid value type for 'triton_enable_empty_final_response' parameter, expected bool_param."},
	} {
		_, err := requestParameters(map[string]*inferencepb.InferParameter{tc.key: p(tc.val)})
		if err == nil || inference.CodeOf(err) != inference.CodeInvalidArg || err.Error() != tc.msg {
			t.Errorf("%s=%#v: error %v, want InvalidArg %q", tc.key, tc.val, err, tc.msg)
		}
	}
}

func TestEncodeResponse(t *testing.T) {
	outData := le32(math.Float32bits(1), math.Float32bits(2))
	resp := &inference.Response{
		ModelName: "m", ModelVersion: "4",
		Parameters: inference.Parameters{"b": true, "i": int64(-1), "u": uint64(7), "d": 1.5, "s": "x", "n": 3, "bad": []int{1}},
		Outputs: []inference.Tensor{
			{Name: "F", DataType: inference.FP32, Shape: []int64{1, 2}, Data: outData, Parameters: inference.Parameters{"k": "v"}},
			{Name: "S", DataType: inference.Bytes, Shape: []int64{1}, Data: bytesElems("hello")},
			{Name: "E", DataType: inference.Int8, Shape: []int64{0}},
		},
	}
	out := encodeResponse(&inferencepb.ModelInferRequest{Id: "id-1", ModelName: "m"}, resp)
	if out.GetId() != "id-1" || out.GetModelName() != "m" || out.GetModelVersion() != "4" {
		t.Errorf("header = %q %q %q", out.GetId(), out.GetModelName(), out.GetModelVersion())
	}
	if len(out.GetOutputs()) != 3 || len(out.GetRawOutputContents()) != 3 {
		t.Fatalf("outputs %d raw %d", len(out.GetOutputs()), len(out.GetRawOutputContents()))
	}
	for i, want := range []struct {
		name, dt string
		raw      []byte
	}{{"F", "FP32", outData}, {"S", "BYTES", bytesElems("hello")}, {"E", "INT8", nil}} {
		o := out.GetOutputs()[i]
		if o.GetName() != want.name || o.GetDatatype() != want.dt || o.GetContents() != nil || !bytes.Equal(out.GetRawOutputContents()[i], want.raw) {
			t.Errorf("output %d = %v raw %x", i, o, out.GetRawOutputContents()[i])
		}
	}
	if &out.GetRawOutputContents()[0][0] != &outData[0] {
		t.Error("output bytes were copied")
	}
	if out.GetOutputs()[0].GetParameters()["k"].GetStringParam() != "v" {
		t.Errorf("output parameters = %v", out.GetOutputs()[0].GetParameters())
	}
	ps := out.GetParameters()
	if !ps["b"].GetBoolParam() || ps["i"].GetInt64Param() != -1 || ps["u"].GetUint64Param() != 7 ||
		ps["d"].GetDoubleParam() != 1.5 || ps["s"].GetStringParam() != "x" || ps["n"].GetInt64Param() != 3 {
		t.Errorf("response parameters = %v", ps)
	}
	if _, ok := ps["bad"]; ok {
		t.Error("a value the protocol cannot carry was encoded")
	}
}

// TestModelInferRoundTrip sends every datatype both ways over gRPC and
// checks the client gets raw outputs only.
func TestModelInferRoundTrip(t *testing.T) {
	var seen *inference.Request
	core := &fakeCore{infer: func(_ context.Context, req *inference.Request) (*inference.Response, error) {
		seen = req
		return identity(req), nil
	}}
	c := start(t, core, Options{})
	ctx := testCtx(t)
	for _, tc := range typedCases {
		for _, typed := range []bool{false, true} {
			in := &inferencepb.ModelInferRequest{ModelName: "id", Id: "x-" + tc.dt,
				Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{input("IN", tc.dt, 3)}}
			if typed {
				in.Inputs[0].Contents = tc.contents
			} else {
				in.RawInputContents = [][]byte{tc.raw}
			}
			resp, err := c.infer.ModelInfer(ctx, in)
			if err != nil {
				t.Fatalf("%s typed=%v: %v", tc.dt, typed, err)
			}
			if seen.Arrival.IsZero() {
				t.Error("arrival time not set")
			}
			if resp.GetId() != "x-"+tc.dt || resp.GetModelName() != "id" || resp.GetModelVersion() != "1" {
				t.Errorf("response header = %v", resp)
			}
			o := resp.GetOutputs()[0]
			if o.GetName() != "OUTIN" || o.GetDatatype() != tc.dt || len(o.GetShape()) != 1 || o.GetShape()[0] != 3 || o.GetContents() != nil {
				t.Errorf("%s typed=%v output = %v", tc.dt, typed, o)
			}
			if !bytes.Equal(resp.GetRawOutputContents()[0], tc.raw) {
				t.Errorf("%s typed=%v raw output %x, want %x", tc.dt, typed, resp.GetRawOutputContents()[0], tc.raw)
			}
		}
	}

	_, err := c.infer.ModelInfer(ctx, &inferencepb.ModelInferRequest{ModelName: "id",
		Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{withContents(input("TYPED", "INT32", 1), &inferencepb.InferTensorContents{IntContents: []int32{1}})},
		RawInputContents: [][]byte{le32(1)}})
	wantCode(t, err, codes.InvalidArgument, "'TYPED'")

	_, err = c.infer.ModelInfer(ctx, &inferencepb.ModelInferRequest{ModelName: "id",
		Parameters: map[string]*inferencepb.InferParameter{"triton_x": p(true)}})
	wantCode(t, err, codes.InvalidArgument, "reserved")

	core.infer = func(context.Context, *inference.Request) (*inference.Response, error) {
		return nil, inference.Unsupported("ModelInfer RPC doesn't support models with decoupled transaction policy")
	}
	_, err = c.infer.ModelInfer(ctx, &inferencepb.ModelInferRequest{ModelName: "dec"})
	wantCode(t, err, codes.Unimplemented, "decoupled transaction policy")
}
