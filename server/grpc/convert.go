package grpcfront

import (
	"context"
	"encoding/binary"
	"maps"
	"math"
	"slices"
	"strings"

	"google.golang.org/grpc/metadata"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// Request parameters Triton's gRPC front end gives a meaning to.
const (
	paramEnableEmptyFinal = "triton_enable_empty_final_response"
	paramFinalResponse    = "triton_final_response"
	paramShmRegion        = "shared_memory_region"
	paramClassification   = "classification"
)

// decodeRequest turns a ModelInferRequest into an inference.Request with
// Triton's rules: request parameters are type-checked (reserved keys have
// fixed types, custom keys may not be uint64, "triton_" keys are reserved);
// each input carries its data either in typed contents or in the next entry
// of raw_input_contents, never both; every tensor's data must agree with its
// datatype and shape. Raw contents are not copied: the tensors' Data alias
// the message.
func decodeRequest(in *inferencepb.ModelInferRequest) (*inference.Request, error) {
	model := in.GetModelName()
	params, err := requestParameters(in.GetParameters())
	if err != nil {
		return nil, err
	}
	req := &inference.Request{
		ID:           in.GetId(),
		ModelName:    model,
		ModelVersion: in.GetModelVersion(),
		Parameters:   params,
	}

	raw := in.GetRawInputContents()
	next := 0
	if n := len(in.GetInputs()); n > 0 {
		req.Inputs = make([]inference.Tensor, n)
	}
	for i, pin := range in.GetInputs() {
		if err := decodeInput(model, pin, raw, &next, &req.Inputs[i]); err != nil {
			return nil, err
		}
	}
	if next != len(raw) {
		return nil, inference.InvalidArg("expected %d raw_input_contents entries for model '%s', one per input tensor, but got %d", next, model, len(raw))
	}

	if n := len(in.GetOutputs()); n > 0 {
		req.Outputs = make([]inference.RequestedOutput, n)
	}
	for i, po := range in.GetOutputs() {
		o := &req.Outputs[i]
		o.Name = po.GetName()
		o.Parameters = tensorParameters(po.GetParameters())
		if err := checkClassification(po); err != nil {
			return nil, err
		}
	}
	return req, nil
}

// decodeRequest is decodeRequest(in), except that a request refused for its
// data (a byte size that disagrees with its datatype and shape) whose
// declared datatypes disagree with the model's is refused for that, as the
// core would before it looks at the data: the datatype is the real problem.
func (s *service) decodeRequest(ctx context.Context, in *inferencepb.ModelInferRequest) (*inference.Request, error) {
	req, err := decodeRequest(in)
	if err == nil || inference.CodeOf(err) != inference.CodeInvalidArg {
		return req, err
	}
	cfg, cerr := s.core.ModelConfig(ctx, in.GetModelName(), in.GetModelVersion())
	if cerr != nil {
		return nil, err
	}
	for _, pin := range in.GetInputs() {
		got, ok := inference.ParseDataType(pin.GetDatatype())
		if !ok {
			continue
		}
		for _, ci := range cfg.GetInput() {
			if ci.GetName() == pin.GetName() {
				if want := inference.DataType(ci.GetDataType()); got != want {
					return nil, inference.DataTypeMismatch(pin.GetName(), got, in.GetModelName(), want)
				}
				break
			}
		}
	}
	return nil, err
}

func decodeInput(model string, pin *inferencepb.ModelInferRequest_InferInputTensor, raw [][]byte, next *int, t *inference.Tensor) error {
	t.Name = pin.GetName()
	dt, ok := inference.ParseDataType(pin.GetDatatype())
	if !ok {
		return inference.InvalidArg("invalid datatype '%s' for input tensor '%s' for model '%s'", pin.GetDatatype(), t.Name, model)
	}
	t.DataType = dt
	t.Shape = pin.GetShape()
	t.Parameters = tensorParameters(pin.GetParameters())
	if region, ok := t.Parameters[paramShmRegion]; ok {
		// The server core reads the data from the region; the input takes
		// no raw_input_contents entry.
		if pin.GetContents() != nil {
			return inference.InvalidArg("unexpected 'contents' for input tensor '%s' for model '%s': its data is in shared memory region '%v'", t.Name, model, region)
		}
		return nil
	}

	switch {
	case pin.GetContents() != nil && len(raw) > 0:
		return inference.InvalidArg("contents field must not be specified when using raw_input_contents for '%s' for model '%s'", t.Name, model)
	case pin.GetContents() != nil:
		data, err := typedToRaw(model, t.Name, dt, pin.GetContents())
		if err != nil {
			return err
		}
		t.Data = data
	case *next < len(raw):
		t.Data = raw[*next]
		*next++
	default:
		return inference.InvalidArg("unable to find data for input tensor '%s' for model '%s' in request.", t.Name, model)
	}
	return t.ValidateData()
}

// typedToRaw serializes typed contents into the protocol's raw form. Exactly
// one field may be filled, the one that belongs to the datatype (INT8 and
// INT16 travel in int_contents, UINT8 and UINT16 in uint_contents, keeping
// the low bytes of each element as Triton does). FP16 and BF16 have no typed
// field.
func typedToRaw(model, name string, dt inference.DataType, c *inferencepb.InferTensorContents) ([]byte, error) {
	var out []byte
	supplied := false
	claim := func(field inference.DataType) error {
		if supplied {
			return inference.InvalidArg("unexpected explicit tensor data for input tensor '%s' for model '%s', binary data was already supplied.", name, model)
		}
		if field != dt {
			return inference.InvalidArg("unexpected explicit tensor data for input tensor '%s' for model '%s' of type '%s', expected datatype '%s'", name, model, field, dt)
		}
		supplied = true
		return nil
	}

	if v := c.GetBoolContents(); len(v) > 0 {
		if err := claim(inference.Bool); err != nil {
			return nil, err
		}
		out = make([]byte, len(v))
		for i, b := range v {
			if b {
				out[i] = 1
			}
		}
	}
	if v := c.GetIntContents(); len(v) > 0 {
		field := inference.Int32
		if dt == inference.Int8 || dt == inference.Int16 {
			field = dt
		}
		if err := claim(field); err != nil {
			return nil, err
		}
		out = make([]byte, 0, len(v)*field.Size())
		for _, x := range v {
			out = appendLow(out, uint32(x), field.Size())
		}
	}
	if v := c.GetInt64Contents(); len(v) > 0 {
		if err := claim(inference.Int64); err != nil {
			return nil, err
		}
		out = make([]byte, 0, len(v)*8)
		for _, x := range v {
			out = binary.LittleEndian.AppendUint64(out, uint64(x))
		}
	}
	if v := c.GetUintContents(); len(v) > 0 {
		field := inference.Uint32
		if dt == inference.Uint8 || dt == inference.Uint16 {
			field = dt
		}
		if err := claim(field); err != nil {
			return nil, err
		}
		out = make([]byte, 0, len(v)*field.Size())
		for _, x := range v {
			out = appendLow(out, x, field.Size())
		}
	}
	if v := c.GetUint64Contents(); len(v) > 0 {
		if err := claim(inference.Uint64); err != nil {
			return nil, err
		}
		out = make([]byte, 0, len(v)*8)
		for _, x := range v {
			out = binary.LittleEndian.AppendUint64(out, x)
		}
	}
	if v := c.GetFp32Contents(); len(v) > 0 {
		if err := claim(inference.FP32); err != nil {
			return nil, err
		}
		out = make([]byte, 0, len(v)*4)
		for _, x := range v {
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(x))
		}
	}
	if v := c.GetFp64Contents(); len(v) > 0 {
		if err := claim(inference.FP64); err != nil {
			return nil, err
		}
		out = make([]byte, 0, len(v)*8)
		for _, x := range v {
			out = binary.LittleEndian.AppendUint64(out, math.Float64bits(x))
		}
	}
	if v := c.GetBytesContents(); len(v) > 0 {
		if err := claim(inference.Bytes); err != nil {
			return nil, err
		}
		size := 0
		for _, e := range v {
			size += 4 + len(e)
		}
		out = make([]byte, 0, size)
		for _, e := range v {
			out = inference.AppendBytesElement(out, e)
		}
	}
	return out, nil
}

// appendLow appends the low width bytes of x, little-endian.
func appendLow(dst []byte, x uint32, width int) []byte {
	switch width {
	case 1:
		return append(dst, byte(x))
	case 2:
		return binary.LittleEndian.AppendUint16(dst, uint16(x))
	default:
		return binary.LittleEndian.AppendUint32(dst, x)
	}
}

// requestParameters checks request-level parameters the way Triton's gRPC
// front end does and converts them. Keys are visited in sorted order so that
// the error reported for several bad keys does not depend on map order.
func requestParameters(in map[string]*inferencepb.InferParameter) (inference.Parameters, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make(inference.Parameters, len(in))
	for _, k := range slices.Sorted(maps.Keys(in)) {
		v := paramValue(in[k])
		switch {
		case k == "sequence_id":
			switch v.(type) {
			case int64, string:
			default:
				return nil, inference.InvalidArg("invalid value type for 'sequence_id' parameter, expected int64_param or string_param.")
			}
		case k == "sequence_start" || k == "sequence_end":
			if _, ok := v.(bool); !ok {
				return nil, inference.InvalidArg("invalid value type for '%s' parameter, expected bool_param.", k)
			}
		case k == "priority":
			switch x := v.(type) {
			case int64:
				if x < 0 {
					return nil, inference.InvalidArg("invalid value for 'priority', expected value >= 0.")
				}
			case uint64:
			default:
				return nil, inference.InvalidArg("invalid value type for 'priority' parameter, expected int64_param or uint64_param.")
			}
		case k == "timeout":
			if _, ok := v.(int64); !ok {
				return nil, inference.InvalidArg("invalid value type for 'timeout' parameter, expected int64_param.")
			}
		case strings.HasPrefix(k, "triton_"):
			if k != paramEnableEmptyFinal {
				return nil, inference.InvalidArg("parameter keys starting with 'triton_' are reserved for Triton usage. Only the following keys starting with 'triton_' are allowed: %s", paramEnableEmptyFinal)
			}
			if _, ok := v.(bool); !ok {
				return nil, inference.InvalidArg("invalid value type for '%s' parameter, expected bool_param.", k)
			}
			// A front-end setting for decoupled streams, not passed to the
			// model (Triton does not pass it either).
			continue
		default:
			switch v.(type) {
			case int64, bool, string, float64:
			default:
				// Triton accepts double_param too but its text still
				// names only these three.
				return nil, inference.InvalidArg("invalid value type for '%s' parameter, expected int64_param, bool_param, or string_param.", k)
			}
		}
		out[k] = v
	}
	return out, nil
}

// tensorParameters converts input or requested-output parameters; Triton
// puts no type rules on them beyond the ones of shared memory and
// classification. A parameter with no value set is dropped.
func tensorParameters(in map[string]*inferencepb.InferParameter) inference.Parameters {
	if len(in) == 0 {
		return nil
	}
	out := make(inference.Parameters, len(in))
	for k, p := range in {
		if v := paramValue(p); v != nil {
			out[k] = v
		}
	}
	return out
}

func checkClassification(po *inferencepb.ModelInferRequest_InferRequestedOutputTensor) error {
	p, ok := po.GetParameters()[paramClassification]
	if !ok {
		return nil
	}
	v, ok := p.GetParameterChoice().(*inferencepb.InferParameter_Int64Param)
	if !ok {
		return inference.InvalidArg("invalid value type for 'classification' parameter, expected int64_param")
	}
	if v.Int64Param <= 0 {
		return inference.InvalidArg("invalid value for 'classification' parameter, expected >= 0")
	}
	return nil
}

// paramValue is the Go value of an InferParameter: bool, int64, string,
// float64 or uint64; nil when no value is set.
func paramValue(p *inferencepb.InferParameter) any {
	switch v := p.GetParameterChoice().(type) {
	case *inferencepb.InferParameter_BoolParam:
		return v.BoolParam
	case *inferencepb.InferParameter_Int64Param:
		return v.Int64Param
	case *inferencepb.InferParameter_StringParam:
		return v.StringParam
	case *inferencepb.InferParameter_DoubleParam:
		return v.DoubleParam
	case *inferencepb.InferParameter_Uint64Param:
		return v.Uint64Param
	default:
		return nil
	}
}

// protoParameter is the InferParameter for a Go value; ok is false for a
// type the protocol cannot carry.
func protoParameter(v any) (p *inferencepb.InferParameter, ok bool) {
	switch x := v.(type) {
	case bool:
		return &inferencepb.InferParameter{ParameterChoice: &inferencepb.InferParameter_BoolParam{BoolParam: x}}, true
	case int64:
		return &inferencepb.InferParameter{ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: x}}, true
	case int:
		return &inferencepb.InferParameter{ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: int64(x)}}, true
	case int32:
		return &inferencepb.InferParameter{ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: int64(x)}}, true
	case uint64:
		return &inferencepb.InferParameter{ParameterChoice: &inferencepb.InferParameter_Uint64Param{Uint64Param: x}}, true
	case uint32:
		return &inferencepb.InferParameter{ParameterChoice: &inferencepb.InferParameter_Uint64Param{Uint64Param: uint64(x)}}, true
	case float64:
		return &inferencepb.InferParameter{ParameterChoice: &inferencepb.InferParameter_DoubleParam{DoubleParam: x}}, true
	case float32:
		return &inferencepb.InferParameter{ParameterChoice: &inferencepb.InferParameter_DoubleParam{DoubleParam: float64(x)}}, true
	case string:
		return &inferencepb.InferParameter{ParameterChoice: &inferencepb.InferParameter_StringParam{StringParam: x}}, true
	default:
		return nil, false
	}
}

// protoParameters converts response or output parameters, dropping values
// the protocol cannot carry.
func protoParameters(in inference.Parameters) map[string]*inferencepb.InferParameter {
	if len(in) == 0 {
		return nil
	}
	out := make(map[string]*inferencepb.InferParameter, len(in))
	for k, v := range in {
		if p, ok := protoParameter(v); ok {
			out[k] = p
		}
	}
	return out
}

// encodeResponse builds the ModelInferResponse for resp. Output metadata goes
// in outputs and the bytes, in the same order, always in raw_output_contents
// (never typed contents), as Triton does; the bytes are not copied. The id and
// model name fall back to the request's when the core left them empty.
func encodeResponse(in *inferencepb.ModelInferRequest, resp *inference.Response) *inferencepb.ModelInferResponse {
	out := &inferencepb.ModelInferResponse{
		ModelName:    resp.ModelName,
		ModelVersion: resp.ModelVersion,
		Id:           resp.ID,
		Parameters:   protoParameters(resp.Parameters),
	}
	if out.Id == "" {
		out.Id = in.GetId()
	}
	if out.ModelName == "" {
		out.ModelName = in.GetModelName()
	}
	if n := len(resp.Outputs); n > 0 {
		tensors := make([]inferencepb.ModelInferResponse_InferOutputTensor, n)
		out.Outputs = make([]*inferencepb.ModelInferResponse_InferOutputTensor, n)
		out.RawOutputContents = make([][]byte, n)
		for i := range resp.Outputs {
			t := &resp.Outputs[i]
			ot := &tensors[i]
			ot.Name = t.Name
			ot.Datatype = t.DataType.String()
			ot.Shape = t.Shape
			ot.Parameters = protoParameters(t.Parameters)
			out.Outputs[i] = ot
			out.RawOutputContents[i] = t.Data
		}
	}
	return out
}

// forwardMetadata adds the request metadata matching
// --grpc-header-forward-pattern as string parameters (the last value of a
// repeated key).
func (s *service) forwardMetadata(ctx context.Context, req *inference.Request) error {
	if s.forward == nil {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for k, vs := range md {
		if len(vs) == 0 || !s.forward.MatchString(k) {
			continue
		}
		if inference.ReservedForwardedParam(k) {
			return inference.InvalidArg("header '%s' names a parameter reserved for Triton usage and should not be specified", k)
		}
		if req.Parameters == nil {
			req.Parameters = inference.Parameters{}
		}
		req.Parameters[k] = vs[len(vs)-1]
	}
	return nil
}
