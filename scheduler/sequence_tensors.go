package scheduler

import (
	"encoding/binary"
	"slices"
	"strconv"

	"github.com/nereid-project/nereid/inference"
)

// CorrelationID identifies a sequence: an unsigned integer or a string, as
// the "sequence_id" request parameter carries it. The zero value (0 or "")
// means the request belongs to no sequence. IDs of different kinds never
// match: 5 and "5" are two sequences.
type CorrelationID struct {
	Num   uint64
	Str   string
	IsStr bool
}

// IsZero reports whether the ID names no sequence.
func (c CorrelationID) IsZero() bool {
	if c.IsStr {
		return c.Str == ""
	}
	return c.Num == 0
}

func (c CorrelationID) String() string {
	if c.IsStr {
		return c.Str
	}
	return strconv.FormatUint(c.Num, 10)
}

// SequenceParams reads the sequence extension's request parameters:
// sequence_id (uint64 from HTTP, int64 from gRPC, or a string),
// sequence_start and sequence_end.
func SequenceParams(p inference.Parameters) (id CorrelationID, start, end bool) {
	switch v := p["sequence_id"].(type) {
	case uint64:
		id.Num = v
	case int64:
		id.Num = uint64(v) // Triton converts gRPC's int64_param the same way
	case string:
		id.Str, id.IsStr = v, true
	}
	start, _ = p.Bool("sequence_start")
	end, _ = p.Bool("sequence_end")
	return id, start, end
}

// ControlKind is what a sequence control tensor tells the model.
type ControlKind int

// The control kinds of config.pbtxt's sequence_batching.control_input.
const (
	ControlStart  ControlKind = iota // the request starts its sequence
	ControlReady                     // the batch row holds a request (false on padding rows)
	ControlEnd                       // the request ends its sequence
	ControlCorrID                    // the request's correlation ID
)

// SequenceControl is one control tensor the batcher adds to every request.
type SequenceControl struct {
	Name     string
	Kind     ControlKind
	DataType inference.DataType
	// False and True are the encoded element for a false and a true value
	// (START, READY, END); unused for CORRID.
	False, True []byte
}

// SequenceState is one implicit state: the output OutputName of a request
// is fed back as the input InputName of the next request of its sequence.
type SequenceState struct {
	InputName  string
	OutputName string
	DataType   inference.DataType
	// Shape and Data are the state a sequence starts with: Shape without
	// the batch dimension; nil Data means zeros (empty strings for BYTES).
	Shape []int64
	Data  []byte
}

// setInput adds t to req's inputs, replacing an input of the same name.
func setInput(req *inference.Request, t inference.Tensor) {
	for i := range req.Inputs {
		if req.Inputs[i].Name == t.Name {
			req.Inputs[i] = t
			return
		}
	}
	req.Inputs = append(req.Inputs, t)
}

// controlShape is the shape of a control tensor: one element, with the
// batch dimension when the model batches.
func (s *SequenceBatcher) controlShape() []int64 {
	if s.opts.MaxBatchSize > 0 {
		return []int64{1, 1}
	}
	return []int64{1}
}

// controlTensors returns the control inputs of one batch row.
func (s *SequenceBatcher) controlTensors(start, end, ready bool, id CorrelationID) []inference.Tensor {
	out := make([]inference.Tensor, 0, len(s.opts.Controls))
	for _, c := range s.opts.Controls {
		t := inference.Tensor{Name: c.Name, DataType: c.DataType, Shape: s.controlShape()}
		switch c.Kind {
		case ControlStart:
			t.Data = pick(c, start)
		case ControlEnd:
			t.Data = pick(c, end)
		case ControlReady:
			t.Data = pick(c, ready)
		case ControlCorrID:
			t.Data = corrIDData(c.DataType, id)
		}
		out = append(out, t)
	}
	return out
}

func pick(c SequenceControl, v bool) []byte {
	if v {
		return c.True
	}
	return c.False
}

// corrIDData encodes a correlation ID as one element of dt. Integer types
// take the ID's low bytes, as Triton copies them.
func corrIDData(dt inference.DataType, id CorrelationID) []byte {
	switch dt {
	case inference.Bytes:
		s := id.Str
		if !id.IsStr && id.Num != 0 {
			s = id.String()
		}
		return inference.AppendBytesElement(nil, []byte(s))
	case inference.Uint32, inference.Int32:
		return binary.LittleEndian.AppendUint32(nil, uint32(id.Num))
	default:
		return binary.LittleEndian.AppendUint64(nil, id.Num)
	}
}

// zeroData is a tensor's worth of zeros: zero numbers, false booleans, or
// empty strings.
func zeroData(dt inference.DataType, shape []int64) []byte {
	n := max(inference.ElementCount(shape), 0)
	if dt == inference.Bytes {
		return make([]byte, 4*n)
	}
	return make([]byte, n*int64(dt.Size()))
}

// initialState is state i as a sequence starts it.
func (s *SequenceBatcher) initialState(i int) inference.Tensor {
	st := s.opts.States[i]
	shape := st.Shape
	if s.opts.MaxBatchSize > 0 {
		shape = append([]int64{1}, shape...)
	}
	data := st.Data
	if data == nil {
		data = zeroData(st.DataType, shape)
	}
	return inference.Tensor{Name: st.InputName, DataType: st.DataType, Shape: shape, Data: data}
}

// nullRequest is a padding row for a slot without a request: the shapes
// of rep, zero data, READY false and correlation ID 0, so that the other
// requests keep their batch rows.
func (s *SequenceBatcher) nullRequest(rep *inference.Request, clientInputs []inference.Tensor) *inference.Request {
	req := &inference.Request{ID: "", ModelName: rep.ModelName, BatchSize: 1}
	req.SetSender(discard{})
	for _, t := range clientInputs {
		req.Inputs = append(req.Inputs, inference.Tensor{
			Name: t.Name, DataType: t.DataType, Shape: slices.Clone(t.Shape), Data: zeroData(t.DataType, t.Shape),
		})
	}
	for _, t := range s.controlTensors(false, false, false, CorrelationID{}) {
		setInput(req, t)
	}
	for i, st := range s.opts.States {
		shape := slices.Clone(s.initialState(i).Shape)
		if t := rep.Input(st.InputName); t != nil {
			shape = slices.Clone(t.Shape)
		}
		setInput(req, inference.Tensor{Name: st.InputName, DataType: st.DataType, Shape: shape, Data: zeroData(st.DataType, shape)})
	}
	return req
}

// sameShapes reports whether b can share a batch with a: the same inputs,
// types and shapes past the batch dimension, except ragged inputs.
func sameShapes(a, b []inference.Tensor, ragged map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x := &a[i]
		var y *inference.Tensor
		for j := range b {
			if b[j].Name == x.Name {
				y = &b[j]
				break
			}
		}
		if y == nil || x.DataType != y.DataType {
			return false
		}
		if ragged[x.Name] {
			continue
		}
		if len(x.Shape) != len(y.Shape) || (len(x.Shape) > 0 && !slices.Equal(x.Shape[1:], y.Shape[1:])) {
			return false
		}
	}
	return true
}
