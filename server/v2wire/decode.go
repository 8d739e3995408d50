package v2wire

import (
	"encoding/binary"
	"math"
	"strconv"
	"strings"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// outKind is how one output travels back: in the JSON "data" field or as
// binary tensor data after the JSON.
type outKind uint8

const (
	kindDefault outKind = iota // as the request's binary_data_output says
	kindJSON
	kindBinary
	kindShm // written to a shared-memory region by the core: no data
)

// Call is one decoded inference request and what the encoder needs to
// answer it (which outputs go back as binary data). A front end may reuse
// a Call for its next request after Reset: the slices keep their capacity,
// which is safe once the core no longer holds the request (its tensors
// alias the received body and the Call's buffers).
type Call struct {
	// Req is the request handed to the core. The front end sets its model
	// name, version and arrival time; the decoders fill in the rest.
	Req inference.Request
	// binaryOutput is the request's binary_data_output parameter: the
	// default kind of every output.
	binaryOutput bool
	outKinds     []outKind // parallel to Req.Outputs
	shapes       []int64   // backing store of the inputs' shapes
	binOuts      []int     // scratch for the encoder
	// inputNames and outputNames hold the tensor names once a request has
	// more than linearNameScan of them, so that duplicate checks stay
	// linear in the number of tensors a client sends.
	inputNames, outputNames map[string]struct{}
}

// linearNameScan is how many tensors a request may have before duplicate
// names are looked up in a set rather than by scanning.
const linearNameScan = 16

// Reset makes c ready for the next request, keeping its buffers.
func (c *Call) Reset() {
	clear(c.Req.Inputs)
	clear(c.Req.Outputs)
	c.Req = inference.Request{Inputs: c.Req.Inputs[:0], Outputs: c.Req.Outputs[:0]}
	c.binaryOutput = false
	c.outKinds = c.outKinds[:0]
	c.shapes = c.shapes[:0]
	c.binOuts = c.binOuts[:0]
	clear(c.inputNames)
	clear(c.outputNames)
}

// seenName reports whether name is among the n names that name(i) returns,
// and otherwise records it in *set once n reaches linearNameScan. The
// caller appends the tensor when it returns false (or fails the request).
func seenName(set *map[string]struct{}, n int, nameAt func(int) string, name []byte) bool {
	if n < linearNameScan {
		for i := range n {
			if nameAt(i) == string(name) {
				return true
			}
		}
		return false
	}
	if *set == nil {
		*set = make(map[string]struct{}, 2*n)
	}
	if len(*set) == 0 {
		for i := range n {
			(*set)[nameAt(i)] = struct{}{}
		}
	}
	if _, ok := (*set)[string(name)]; ok {
		return true
	}
	(*set)[string(name)] = struct{}{}
	return false
}

// kindFor returns how the named output is returned.
func (c *Call) kindFor(name string) outKind {
	for i := range c.Req.Outputs {
		if c.Req.Outputs[i].Name == name {
			if k := c.outKinds[i]; k != kindDefault {
				return k
			}
			break
		}
	}
	if c.binaryOutput {
		return kindBinary
	}
	return kindJSON
}

// Param sets a request parameter, making the map on first use.
func (c *Call) Param(key string, v any) {
	if c.Req.Parameters == nil {
		c.Req.Parameters = make(inference.Parameters, 4)
	}
	c.Req.Parameters[key] = v
}

// DecodeJSON decodes an inference request whose JSON header is header and
// whose binary tensor data (the body after the header's length, which
// Inference-Header-Content-Length or SageMaker's json-header-size gives)
// is bin. Binary inputs alias bin.
func DecodeJSON(c *Call, header, bin []byte) error {
	r := Reader{buf: header}
	sawInputs := false
	binOff := 0
	err := r.Object(func(key []byte) error {
		switch string(key) {
		case "id":
			if r.Peek() != '"' {
				return inference.InvalidArg("Unable to parse 'id': expected a string")
			}
			id, err := r.ReadString()
			if err != nil {
				return err
			}
			c.Req.ID = string(id)
			return nil
		case "parameters":
			return c.decodeRequestParams(&r)
		case "inputs":
			if r.Peek() != '[' {
				return inference.InvalidArg("Unable to parse 'inputs': expected an array")
			}
			sawInputs = true
			return r.Array(func() error { return c.decodeInput(&r, header, bin, &binOff) })
		case "outputs":
			if r.Peek() != '[' {
				return inference.InvalidArg("Unable to parse 'outputs': expected an array")
			}
			return r.Array(func() error { return c.decodeOutput(&r) })
		default:
			return r.SkipValue()
		}
	})
	if err == nil {
		err = r.End()
	}
	if err != nil {
		return err
	}
	if !sawInputs {
		return inference.InvalidArg("Unable to parse 'inputs': the request has no 'inputs'")
	}
	if binOff != len(bin) {
		return inference.InvalidArg("unexpected additional input data for model '%s'", c.Req.ModelName)
	}
	return nil
}

// Errors shared by every request (an *inference.Error is immutable), so
// that decoding allocates nothing for them up front.
var (
	errShape      = inference.InvalidArg("Unable to parse 'shape': expected an array of non-negative integers")
	errName       = inference.InvalidArg("Unable to parse 'name': expected a string")
	errOutputName = inference.InvalidArg("Unable to parse 'name' of an output: expected a string")
	errDatatype   = inference.InvalidArg("Unable to parse 'datatype': expected a string")
	errBinarySize = inference.InvalidArg("Unable to parse 'binary_data_size': expected an unsigned integer")
)

const reservedPrefixMsg = "parameter keys starting with 'triton_' are reserved for Triton usage and should not be specified."

// decodeRequestParams reads the request "parameters" object; see
// decodeRequestParam.
func (c *Call) decodeRequestParams(r *Reader) error {
	if r.Peek() != '{' {
		return inference.InvalidArg("failed to get request params: 'parameters' must be an object")
	}
	return r.Object(func(k []byte) error { return c.decodeRequestParam(r, string(k)) })
}

// decodeRequestParam reads the value of one request parameter: Triton's
// own keys are type-checked and passed on (sequence_id, sequence_start,
// sequence_end, priority, timeout) or consumed (binary_data_output); keys
// starting with "triton_" are refused; the rest pass through.
func (c *Call) decodeRequestParam(r *Reader, key string) error {
	switch key {
	case "sequence_id":
		// An unsigned integer or a string.
		if r.Peek() == '"' {
			s, err := r.ReadString()
			if err != nil {
				return err
			}
			c.Param(key, string(s))
			return nil
		}
		u, err := ReadUint(r)
		if err != nil {
			return inference.InvalidArg("Unable to parse 'sequence_id': expected an unsigned integer or a string")
		}
		c.Param(key, uintParam(u))
	case "sequence_start", "sequence_end":
		b, err := r.ReadBoolField(key)
		if err != nil {
			return err
		}
		c.Param(key, b)
	case "priority", "timeout":
		u, err := ReadUint(r)
		if err != nil {
			return inference.InvalidArg("Unable to parse '%s': expected an unsigned integer", key)
		}
		c.Param(key, uintParam(u))
	case "binary_data_output":
		b, err := r.ReadBoolField(key)
		if err != nil {
			return err
		}
		c.binaryOutput = b
	default:
		if strings.HasPrefix(key, "triton_") {
			return inference.InvalidArg(reservedPrefixMsg)
		}
		v, err := readParamValue(r, key)
		if err != nil {
			return err
		}
		c.Param(key, v)
	}
	return nil
}

// uintParam stores an unsigned value as int64 when it fits, the form the
// other front ends use for integer parameters.
func uintParam(u uint64) any {
	if u <= math.MaxInt64 {
		return int64(u)
	}
	return u
}

// ReadUint reads a non-negative integral number.
func ReadUint(r *Reader) (uint64, error) {
	if c := r.Peek(); c != '-' && (c < '0' || c > '9') {
		return 0, r.syntaxErr("expected an unsigned integer")
	}
	tok, isInt, err := r.ReadNumber()
	if err != nil {
		return 0, err
	}
	u, ok := parseUintTok(tok)
	if !isInt || !ok {
		return 0, r.syntaxErr("expected an unsigned integer")
	}
	return u, nil
}

// readParamValue reads a custom parameter: a bool, an int64, a float64 (any
// other number) or a string.
func readParamValue(r *Reader, key string) (any, error) {
	switch c := r.Peek(); {
	case c == '"':
		s, err := r.ReadString()
		if err != nil {
			return nil, err
		}
		return string(s), nil
	case c == 't' || c == 'f':
		return r.ReadBool()
	case c == '-' || (c >= '0' && c <= '9'):
		tok, isInt, err := r.ReadNumber()
		if err != nil {
			return nil, err
		}
		if isInt {
			if i, ok := ParseInt(tok); ok {
				return i, nil
			}
		}
		// Like Triton, a number that is not an int64 is a double.
		f, err := strconv.ParseFloat(string(tok), 64)
		if err != nil {
			return nil, inference.InvalidArg("parameter '%s' is out of range for a double", key)
		}
		return f, nil
	}
	return nil, inference.InvalidArg("parameter '%s' has invalid type. It should be either 'int', 'bool', 'double' or 'string'.", key)
}

// decodeInput reads one element of "inputs" and appends the tensor.
func (c *Call) decodeInput(r *Reader, header, bin []byte, binOff *int) error {
	if r.Peek() != '{' {
		return inference.InvalidArg("Unable to parse 'inputs': each input must be an object")
	}
	var (
		name, dtype               []byte
		hasName, hasDtype, hasShp bool
		hasData, hasBin, hasShm   bool
		dataStart, dataEnd        int
		binSize                   uint64
		params                    inference.Parameters
		shapeStart                = len(c.shapes)
		shapeEnd                  = shapeStart
		err                       error
	)
	err = r.Object(func(key []byte) error {
		var err error
		switch string(key) {
		case "name":
			if r.Peek() != '"' {
				return errName
			}
			name, err = r.ReadString()
			hasName = true
		case "datatype":
			if r.Peek() != '"' {
				return errDatatype
			}
			dtype, err = r.ReadString()
			hasDtype = true
		case "shape":
			if r.Peek() != '[' {
				return errShape
			}
			c.shapes = c.shapes[:shapeStart]
			err = r.Array(func() error {
				u, err := ReadUint(r)
				if err != nil || u > math.MaxInt64 {
					return errShape
				}
				c.shapes = append(c.shapes, int64(u))
				return nil
			})
			shapeEnd = len(c.shapes)
			hasShp = true
		case "data":
			dataStart, dataEnd, err = r.Span()
			hasData = true
		case "parameters":
			if r.Peek() != '{' {
				return inference.InvalidArg("Unable to parse 'parameters' of an input: expected an object")
			}
			err = r.Object(func(pk []byte) error {
				switch string(pk) {
				case "binary_data_size":
					u, err := ReadUint(r)
					if err != nil {
						return errBinarySize
					}
					binSize, hasBin = u, true
				case "shared_memory_region", "shared_memory_offset", "shared_memory_byte_size":
					v, err := readShmParam(r, pk)
					if err != nil {
						return err
					}
					hasShm = hasShm || string(pk) == "shared_memory_region"
					setParam(&params, string(pk), v)
				default:
					v, err := readParamValue(r, string(pk))
					if err != nil {
						return err
					}
					setParam(&params, string(pk), v)
				}
				return nil
			})
		default:
			err = r.SkipValue()
		}
		return err
	})
	if err != nil {
		return err
	}

	if n := b2i(hasData) + b2i(hasBin) + b2i(hasShm); n != 1 {
		var msg strings.Builder
		msg.WriteString("Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters', 'shared_memory_region' in 'parameters'. But")
		if n == 0 {
			msg.WriteString(" no field is set")
		} else {
			msg.WriteString(" set")
			if hasData {
				msg.WriteString(" 'data'")
			}
			if hasBin {
				msg.WriteString(" 'binary_data_size'")
			}
			if hasShm {
				msg.WriteString(" 'shared_memory_region'")
			}
		}
		return inference.InvalidArg("%s", msg.String())
	}
	if !hasName {
		return errName
	}
	if !hasDtype {
		return errDatatype
	}
	if !hasShp {
		return errShape
	}
	if seenName(&c.inputNames, len(c.Req.Inputs), func(i int) string { return c.Req.Inputs[i].Name }, name) {
		return inference.InvalidArg("input '%s' already exists in request", name)
	}
	dt, ok := parseDataType(dtype)
	if !ok {
		return inference.InvalidArg("invalid datatype '%s' for input '%s'", dtype, name)
	}
	t := inference.Tensor{
		Name:       string(name),
		DataType:   dt,
		Shape:      c.shapes[shapeStart:shapeEnd:shapeEnd],
		Parameters: params,
	}
	count := inference.ElementCount(t.Shape)
	if count < 0 {
		return inference.InvalidArg("invalid shape %v for input '%s': the element count overflows", t.Shape, t.Name)
	}
	switch {
	case hasShm:
		// The server core reads the data from the shared-memory region.
	case hasBin:
		avail := uint64(len(bin) - *binOff)
		if binSize > avail {
			return inference.InvalidArg("unexpected size for input '%s', expecting %d additional bytes for model '%s'", t.Name, binSize-avail, c.Req.ModelName)
		}
		end := *binOff + int(binSize)
		t.Data = bin[*binOff:end:end]
		*binOff = end
		if err := t.ValidateData(); err != nil {
			return err
		}
	default:
		if err := decodeData(&t, header[dataStart:dataEnd], count); err != nil {
			return err
		}
	}
	c.Req.Inputs = append(c.Req.Inputs, t)
	return nil
}

// decodeOutput reads one element of "outputs".
func (c *Call) decodeOutput(r *Reader) error {
	if r.Peek() != '{' {
		return inference.InvalidArg("Unable to parse 'outputs': each output must be an object")
	}
	var (
		name    []byte
		hasName bool
		hasShm  bool
		kind    outKind
		params  inference.Parameters
	)
	errName := errOutputName
	err := r.Object(func(key []byte) error {
		switch string(key) {
		case "name":
			if r.Peek() != '"' {
				return errName
			}
			var err error
			name, err = r.ReadString()
			hasName = true
			return err
		case "parameters":
			if r.Peek() != '{' {
				return inference.InvalidArg("Unable to parse 'parameters' of an output: expected an object")
			}
			return r.Object(func(pk []byte) error {
				switch string(pk) {
				case "binary_data":
					b, err := r.ReadBoolField("binary_data")
					if err != nil {
						return err
					}
					kind = kindJSON
					if b {
						kind = kindBinary
					}
				case "classification":
					u, err := ReadUint(r)
					if err != nil {
						return inference.InvalidArg("Unable to set 'classification': expected an unsigned integer")
					}
					setParam(&params, "classification", uintParam(u))
				case "shared_memory_region", "shared_memory_offset", "shared_memory_byte_size":
					v, err := readShmParam(r, pk)
					if err != nil {
						return err
					}
					hasShm = hasShm || string(pk) == "shared_memory_region"
					setParam(&params, string(pk), v)
				default:
					v, err := readParamValue(r, string(pk))
					if err != nil {
						return err
					}
					setParam(&params, string(pk), v)
				}
				return nil
			})
		default:
			return r.SkipValue()
		}
	})
	if err != nil {
		return err
	}
	if !hasName {
		return errName
	}
	if hasShm {
		// Triton's ValidateOutputParameter: the server core writes the
		// output into the region, so it can be neither classified nor
		// returned as binary data.
		if _, cls := params["classification"]; cls {
			return inference.InvalidArg("Output can't set both 'shared_memory_region' and 'classification'")
		}
		if kind == kindBinary {
			return inference.InvalidArg("Output can't set both 'shared_memory_region' and 'binary_data'")
		}
		kind = kindShm
	}
	if seenName(&c.outputNames, len(c.Req.Outputs), func(i int) string { return c.Req.Outputs[i].Name }, name) {
		return nil // Triton keeps one request per output name
	}
	c.Req.Outputs = append(c.Req.Outputs, inference.RequestedOutput{Name: string(name), Parameters: params})
	c.outKinds = append(c.outKinds, kind)
	return nil
}

// readShmParam reads a shared-memory parameter of an input or output:
// shared_memory_region is a string, the offset and byte size unsigned
// integers. The server core checks the combination.
func readShmParam(r *Reader, key []byte) (any, error) {
	if string(key) == "shared_memory_region" {
		if r.Peek() != '"' {
			return nil, inference.InvalidArg("Unable to parse 'shared_memory_region': expected a string")
		}
		v, err := r.ReadString()
		return string(v), err
	}
	u, err := ReadUint(r)
	if err != nil {
		return nil, inference.InvalidArg("Unable to parse '%s': expected an unsigned integer", key)
	}
	return uintParam(u), nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// parseDataType is inference.ParseDataType over bytes.
func parseDataType(b []byte) (inference.DataType, bool) {
	for dt := inference.Bool; dt <= inference.BF16; dt++ {
		if dt.String() == string(b) {
			return dt, true
		}
	}
	return inference.Invalid, false
}

// decodeData fills t.Data from the JSON "data" value span, nested or flat,
// for count elements.
func decodeData(t *inference.Tensor, span []byte, count int64) error {
	switch t.DataType {
	case inference.FP16, inference.BF16:
		return inference.InvalidArg("receiving %s data via JSON is not supported. Please use the binary data format for input %s", t.DataType, t.Name)
	default:
	}
	r := Reader{buf: span}
	if r.Peek() != '[' {
		return inference.InvalidArg("Unable to parse 'data' of input '%s': expected an array", t.Name)
	}
	if count == 0 {
		// Triton does not look at the data of an empty tensor.
		t.Data = []byte{}
		return nil
	}
	// Every element takes at least one byte of JSON text, which bounds the
	// allocation by the size of the request rather than by its shape.
	if count > int64(len(span)) {
		return dataCountErr(t, count, "fewer")
	}
	w := dataWalker{r: &r, t: t, want: count}
	if t.DataType == inference.Bytes {
		// Each element spends at least two quotes of the span on a 4-byte
		// length prefix.
		w.out = make([]byte, 0, len(span)+2*int(count))
	} else {
		w.out = make([]byte, 0, int(count)*t.DataType.Size())
	}
	if err := w.value(); err != nil {
		return err
	}
	if w.n != count {
		return dataCountErr(t, count, strconv.FormatInt(w.n, 10))
	}
	t.Data = w.out
	return nil
}

func dataCountErr(t *inference.Tensor, want int64, got string) error {
	return inference.InvalidArg("Unable to parse 'data': Shape does not match true shape of 'data' field: input '%s' with shape %v needs %d elements, 'data' has %s", t.Name, t.Shape, want, got)
}

// dataWalker decodes the leaves of a (possibly nested) JSON data array in
// row-major order.
type dataWalker struct {
	r    *Reader
	t    *inference.Tensor
	out  []byte
	n    int64
	want int64
}

func (w *dataWalker) value() error {
	r := w.r
	c := r.Peek()
	if c == '[' {
		return r.Array(w.value)
	}
	if w.n >= w.want {
		return dataCountErr(w.t, w.want, "more")
	}
	dt := w.t.DataType
	switch dt {
	case inference.Bool:
		b, err := r.ReadBool()
		if err != nil {
			return w.typeErr("a boolean")
		}
		w.out = append(w.out, byte(b2i(b)))
	case inference.Bytes:
		if c != '"' {
			return w.typeErr("a string")
		}
		s, err := r.ReadString()
		if err != nil {
			return err
		}
		w.out = inference.AppendBytesElement(w.out, s)
	case inference.FP32, inference.FP64:
		f, ok := r.readNaNInf()
		if !ok {
			if c != '-' && (c < '0' || c > '9') {
				return w.typeErr("a number")
			}
			tok, _, err := r.ReadNumber()
			if err != nil {
				return err
			}
			f, err = strconv.ParseFloat(string(tok), 64)
			if err != nil && !math.IsInf(f, 0) {
				return w.typeErr("a number")
			}
		}
		if dt == inference.FP32 {
			w.out = binary.LittleEndian.AppendUint32(w.out, math.Float32bits(float32(f)))
		} else {
			w.out = binary.LittleEndian.AppendUint64(w.out, math.Float64bits(f))
		}
	case inference.Uint8, inference.Uint16, inference.Uint32, inference.Uint64:
		if c != '-' && (c < '0' || c > '9') {
			return w.typeErr("an unsigned integer")
		}
		tok, isInt, err := r.ReadNumber()
		if err != nil {
			return err
		}
		u, ok := parseUintTok(tok)
		if !isInt || !ok {
			return w.typeErr("an unsigned integer")
		}
		if u > uintMax(dt) {
			return w.rangeErr(tok)
		}
		w.out = appendUint(w.out, dt, u)
	default: // signed integers
		if c != '-' && (c < '0' || c > '9') {
			return w.typeErr("an integer")
		}
		tok, isInt, err := r.ReadNumber()
		if err != nil {
			return err
		}
		i, ok := ParseInt(tok)
		if !isInt || !ok {
			return w.typeErr("an integer")
		}
		lo, hi := intRange(dt)
		if i < lo || i > hi {
			return w.rangeErr(tok)
		}
		w.out = appendUint(w.out, dt, uint64(i))
	}
	w.n++
	return nil
}

func (w *dataWalker) typeErr(what string) error {
	return inference.InvalidArg("Unable to parse 'data': expected %s for element %d of %s input '%s'", what, w.n, w.t.DataType, w.t.Name)
}

func (w *dataWalker) rangeErr(tok []byte) error {
	return inference.InvalidArg("Unable to parse 'data': value %s of element %d is out of range for %s input '%s'", tok, w.n, w.t.DataType, w.t.Name)
}

func uintMax(dt inference.DataType) uint64 {
	switch dt {
	case inference.Uint8:
		return math.MaxUint8
	case inference.Uint16:
		return math.MaxUint16
	case inference.Uint32:
		return math.MaxUint32
	default:
		return math.MaxUint64
	}
}

func intRange(dt inference.DataType) (int64, int64) {
	switch dt {
	case inference.Int8:
		return math.MinInt8, math.MaxInt8
	case inference.Int16:
		return math.MinInt16, math.MaxInt16
	case inference.Int32:
		return math.MinInt32, math.MaxInt32
	default:
		return math.MinInt64, math.MaxInt64
	}
}

// appendUint appends the low bytes of v, little-endian, for dt's width.
func appendUint(dst []byte, dt inference.DataType, v uint64) []byte {
	switch dt.Size() {
	case 1:
		return append(dst, byte(v))
	case 2:
		return binary.LittleEndian.AppendUint16(dst, uint16(v))
	case 4:
		return binary.LittleEndian.AppendUint32(dst, uint32(v))
	}
	return binary.LittleEndian.AppendUint64(dst, v)
}

// DecodeRaw builds the single input of a raw binary request
// (Inference-Header-Content-Length: 0): the whole body is the data of the
// model's only input, whose datatype and shape come from the configuration
// as Triton's core deduces them — a leading batch dimension of 1 when the
// model batches, and one variable dimension sized from the body.
func DecodeRaw(c *Call, body []byte, cfg *inferencepb.ModelConfig) error {
	if n := len(cfg.GetInput()); n != 1 {
		return inference.InvalidArg("a raw binary request (Inference-Header-Content-Length: 0) needs a model with exactly 1 input; model '%s' has %d", cfg.GetName(), n)
	}
	in := cfg.GetInput()[0]
	dt := inference.DataType(in.GetDataType())
	if !dt.Valid() {
		return inference.Internal("input '%s' of model '%s' has an invalid data type", in.GetName(), cfg.GetName())
	}
	shape := c.shapes[:0]
	if cfg.GetMaxBatchSize() > 0 {
		shape = append(shape, 1)
	}
	dynamic := -1
	fixed := int64(1)
	for _, d := range in.GetDims() {
		if d < 0 {
			if dynamic >= 0 {
				return inference.InvalidArg("The shape of the raw input '%s' can not be deduced because there are more than one variable-sized dimension", in.GetName())
			}
			dynamic = len(shape)
		} else {
			if d != 0 && fixed > math.MaxInt64/d {
				return inference.InvalidArg("the shape of the raw input '%s' overflows", in.GetName())
			}
			fixed *= d
		}
		shape = append(shape, d)
	}
	c.shapes = shape
	t := inference.Tensor{Name: in.GetName(), DataType: dt, Shape: shape[:len(shape):len(shape)]}
	if dt == inference.Bytes {
		if dynamic >= 0 || fixed != 1 {
			return inference.InvalidArg("For BYTE datatype raw input '%s', the model must have input shape [1]", in.GetName())
		}
		// The whole body is one element; give it its length prefix.
		t.Data = inference.AppendBytesElement(make([]byte, 0, 4+len(body)), body)
	} else {
		if dynamic >= 0 {
			per := fixed * int64(dt.Size())
			if per == 0 {
				t.Shape[dynamic] = 0
			} else {
				t.Shape[dynamic] = int64(len(body)) / per
			}
		}
		t.Data = body
	}
	if err := t.ValidateData(); err != nil {
		return err
	}
	c.Req.Inputs = append(c.Req.Inputs, t)
	c.binaryOutput = true
	return nil
}

// setParam records a tensor parameter, making the map on first use so
// that tensors without parameters allocate nothing.
func setParam(params *inference.Parameters, key string, v any) {
	if *params == nil {
		*params = make(inference.Parameters, 2)
	}
	(*params)[key] = v
}
