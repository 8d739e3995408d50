package aggregate

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// Name is the backend name config.pbtxt uses.
const Name = "aggregate"

func init() { backends.Register(Name, Backend{}) }

// Backend loads aggregate models; the package documentation has the
// configurations it serves.
type Backend struct{}

var _ backends.Backend = Backend{}

// method is a way of combining the inputs.
type method int

const (
	mean method = iota
	weightedMean
	maximum
	minimum
	vote
	argmax
	concat
)

// methodNames are the values of the method parameter, in the order error
// messages list them.
var methodNames = [...]string{
	mean:         "mean",
	weightedMean: "weighted_mean",
	maximum:      "max",
	minimum:      "min",
	vote:         "vote",
	argmax:       "argmax",
	concat:       "concat",
}

func (m method) String() string { return methodNames[m] }

// elementwise reports whether the method combines the inputs element by
// element, the output shaped like them.
func (m method) elementwise() bool {
	return m == mean || m == weightedMean || m == maximum || m == minimum
}

// takesWeights reports whether the weights parameter means something to
// the method.
func (m method) takesWeights() bool { return m == weightedMean || m == vote || m == argmax }

// Parameter keys.
const (
	paramMethod  = "method"
	paramWeights = "weights"
)

// supported lists the element types the backend computes on, in the order
// error messages list them.
var supported = []inferencepb.DataType{
	inferencepb.DataType_TYPE_FP32, inferencepb.DataType_TYPE_FP64,
	inferencepb.DataType_TYPE_INT8, inferencepb.DataType_TYPE_INT16,
	inferencepb.DataType_TYPE_INT32, inferencepb.DataType_TYPE_INT64,
	inferencepb.DataType_TYPE_UINT8, inferencepb.DataType_TYPE_UINT16,
	inferencepb.DataType_TYPE_UINT32, inferencepb.DataType_TYPE_UINT64,
}

// model is a loaded aggregate model; it is read-only once loaded.
type model struct {
	name    string
	method  method
	inputs  []string // input names, in config order
	inType  inference.DataType
	rank    int // dimensions of a request's tensors, the batch one included
	output  string
	outType inference.DataType
	// weights holds one weight per input, or is nil when every input
	// counts once.
	weights []float64
	// scores is set for a vote whose inputs are rows of class scores
	// rather than class indices.
	scores bool
}

// loadError makes the errors of Load for one model, in one status class.
type loadError struct {
	model string
	code  inference.Code
}

func (e loadError) errorf(format string, args ...any) error {
	return inference.Errorf(e.code, "aggregate model '%s': %s", e.model, fmt.Sprintf(format, args...))
}

// Load checks the configuration against the contract of the package
// documentation and prepares the model.
func (Backend) Load(_ context.Context, spec backends.ModelSpec) (backends.Model, error) {
	cfg := spec.Config
	bad := loadError{model: spec.Name, code: inference.CodeInvalidArg}
	unsupported := loadError{model: spec.Name, code: inference.CodeUnsupported}

	meth, weightsText, hasWeights, err := parameters(bad, cfg.GetParameters())
	if err != nil {
		return nil, err
	}

	ins := cfg.GetInput()
	if len(ins) == 0 {
		return nil, bad.errorf("needs at least one input to aggregate")
	}
	first := ins[0]
	for _, in := range ins {
		if err := checkTensor(unsupported, "input", in.GetName(), in.GetDataType(), in.GetReshape()); err != nil {
			return nil, err
		}
		switch {
		case in.GetOptional():
			return nil, unsupported.errorf("input '%s' is optional, but every input must be present to be aggregated", in.GetName())
		case in.GetAllowRaggedBatch():
			return nil, unsupported.errorf("input '%s' allows ragged batches, but the inputs of a request must all have the same shape", in.GetName())
		case in.GetDataType() != first.GetDataType() || !slices.Equal(in.GetDims(), first.GetDims()):
			return nil, bad.errorf("input '%s' is %s %s, but input '%s' is %s %s: all inputs must have the same data_type and dims",
				in.GetName(), in.GetDataType(), formatDims(in.GetDims()), first.GetName(), first.GetDataType(), formatDims(first.GetDims()))
		}
	}

	outs := cfg.GetOutput()
	if len(outs) != 1 {
		return nil, bad.errorf("needs exactly one output, got %d", len(outs))
	}
	out := outs[0]
	if err := checkTensor(unsupported, "output", out.GetName(), out.GetDataType(), out.GetReshape()); err != nil {
		return nil, err
	}

	m := &model{
		name:    spec.Name,
		method:  meth,
		inType:  inference.DataType(first.GetDataType()),
		rank:    len(first.GetDims()),
		output:  out.GetName(),
		outType: inference.DataType(out.GetDataType()),
	}
	if cfg.GetMaxBatchSize() > 0 {
		m.rank++
	}
	for _, in := range ins {
		m.inputs = append(m.inputs, in.GetName())
	}

	switch {
	case hasWeights && !meth.takesWeights():
		return nil, bad.errorf("parameter weights: method %q takes no weights", meth)
	case hasWeights:
		if m.weights, err = parseWeights(bad, weightsText, len(ins)); err != nil {
			return nil, err
		}
	case meth == weightedMean:
		return nil, bad.errorf("parameter weights is required by method %q: one non-negative number per input, in config order", meth)
	}

	if err := m.checkShapes(bad, first.GetName(), first.GetDims(), out.GetDims()); err != nil {
		return nil, err
	}
	return m, nil
}

// parameters reads the method and weights parameters and refuses any other.
func parameters(bad loadError, params map[string]*inferencepb.ModelParameter) (meth method, weights string, hasWeights bool, err error) {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if k != paramMethod && k != paramWeights {
			return 0, "", false, bad.errorf("unknown parameter %q: the aggregate backend takes %s and %s", k, paramMethod, paramWeights)
		}
	}
	all := strings.Join(methodNames[:], ", ")
	p, ok := params[paramMethod]
	if !ok {
		return 0, "", false, bad.errorf("parameter method is required: one of %s", all)
	}
	i := slices.Index(methodNames[:], strings.TrimSpace(p.GetStringValue()))
	if i < 0 {
		return 0, "", false, bad.errorf("parameter method: %q is not one of %s", p.GetStringValue(), all)
	}
	w, hasWeights := params[paramWeights]
	return method(i), w.GetStringValue(), hasWeights, nil
}

// checkTensor refuses an input or output the backend cannot compute on.
func checkTensor(unsupported loadError, kind, name string, dt inferencepb.DataType, reshape *inferencepb.ModelTensorReshape) error {
	if !slices.Contains(supported, dt) {
		names := make([]string, len(supported))
		for i, s := range supported {
			names[i] = s.String()
		}
		return unsupported.errorf("%s '%s' data_type %s is not supported: the aggregate backend takes %s", kind, name, dt, strings.Join(names, ", "))
	}
	if reshape != nil {
		return unsupported.errorf("%s '%s' has a reshape, which the aggregate backend does not support", kind, name)
	}
	return nil
}

// parseWeights reads the weights parameter of a model with n inputs.
func parseWeights(bad loadError, text string, n int) ([]float64, error) {
	if strings.TrimSpace(text) == "" {
		return nil, bad.errorf("parameter weights is empty: want %d non-negative numbers (one per input, in config order)", n)
	}
	fields := strings.Split(text, ",")
	if len(fields) != n {
		return nil, bad.errorf("parameter weights: %q has %d values, want %d (one per input, in config order)", text, len(fields), n)
	}
	weights := make([]float64, n)
	var total float64
	for i, f := range fields {
		f = strings.TrimSpace(f)
		w, err := strconv.ParseFloat(f, 64)
		if err != nil || math.IsInf(w, 0) || math.IsNaN(w) {
			return nil, bad.errorf("parameter weights: %q is not a finite number", f)
		}
		if w < 0 {
			return nil, bad.errorf("parameter weights: %q is negative", f)
		}
		weights[i] = w
		total += w
	}
	if total == 0 {
		return nil, bad.errorf("parameter weights: %q are all zero", text)
	}
	if math.IsInf(total, 0) {
		return nil, bad.errorf("parameter weights: %q add up to more than a float64 holds", text)
	}
	return weights, nil
}

// checkShapes checks the output's data_type and dims against what the
// method makes of inputs of the given dims, and settles which form a vote
// takes.
func (m *model) checkShapes(bad loadError, input string, in, out []int64) error {
	want := slices.Clone(in)
	if len(in) > 0 {
		// The dims of a method that reduces the last dimension to one class.
		want[len(want)-1] = 1
	}
	switch {
	case m.method.elementwise():
		if !slices.Equal(out, in) {
			return bad.errorf("output '%s' dims %s must be the inputs' dims %s for method %q", m.output, formatDims(out), formatDims(in), m.method)
		}
		return nil
	case len(in) == 0 && m.method != vote:
		return bad.errorf("method %q works along the last dimension, but input '%s' has dims []", m.method, input)
	case m.method == concat:
		if m.outType != m.inType {
			return bad.errorf("output '%s' data_type %s must be the inputs' data_type %s for method %q",
				m.output, inferencepb.DataType(m.outType), inferencepb.DataType(m.inType), m.method)
		}
		if last := in[len(in)-1]; last > 0 {
			if int64(len(m.inputs)) > math.MaxInt64/last {
				return bad.errorf("output '%s': %d inputs of last dimension %d overflow for method %q", m.output, len(m.inputs), last, m.method)
			}
			want[len(want)-1] = int64(len(m.inputs)) * last
		} else {
			want[len(want)-1] = last
		}
		if !slices.Equal(out, want) {
			return bad.errorf("output '%s' dims %s must be %s for method %q (the inputs' dims with the last one %d times as large)",
				m.output, formatDims(out), formatDims(want), m.method, len(m.inputs))
		}
		return nil
	case !isInteger(m.outType):
		return bad.errorf("output '%s' data_type %s must be an integer type for method %q", m.output, inferencepb.DataType(m.outType), m.method)
	case m.method == argmax:
		if !slices.Equal(out, want) {
			return bad.errorf("output '%s' dims %s must be %s for method %q (the inputs' dims with the last one 1)", m.output, formatDims(out), formatDims(want), m.method)
		}
		return m.checkClasses(bad, in[len(in)-1])
	}
	// A vote: on rows of scores, or on class indices.
	scoresPossible := len(in) > 0 && (in[len(in)-1] > 1 || in[len(in)-1] == -1)
	switch {
	case scoresPossible && slices.Equal(out, want):
		m.scores = true
		return m.checkClasses(bad, in[len(in)-1])
	case slices.Equal(out, in):
		if !isInteger(m.inType) {
			return bad.errorf("method %q on class indices (output dims equal to the input dims) needs integer inputs, but input '%s' is %s",
				m.method, input, inferencepb.DataType(m.inType))
		}
		if !holds(m.outType, m.inType) {
			return bad.errorf("output '%s' data_type %s cannot hold every class index of the inputs' data_type %s for method %q",
				m.output, inferencepb.DataType(m.outType), inferencepb.DataType(m.inType), m.method)
		}
		return nil
	case scoresPossible:
		return bad.errorf("output '%s' dims %s fit neither form of method %q: %s to vote with rows of scores, or %s to vote with class indices",
			m.output, formatDims(out), m.method, formatDims(want), formatDims(in))
	default:
		return bad.errorf("output '%s' dims %s must be %s for method %q on class indices (a vote on scores needs a last input dimension larger than 1)",
			m.output, formatDims(out), formatDims(in), m.method)
	}
}

// checkClasses refuses an output type too narrow for the class indices of
// a last dimension of size c (-1: known at run time).
func (m *model) checkClasses(bad loadError, c int64) error {
	if c > 0 && !fitsInt(m.outType, c-1) {
		return bad.errorf("output '%s' data_type %s cannot hold class index %d for method %q",
			m.output, inferencepb.DataType(m.outType), c-1, m.method)
	}
	return nil
}

// formatDims writes a shape as Triton does: [1,-1,3].
func formatDims(dims []int64) string {
	parts := make([]string, len(dims))
	for i, d := range dims {
		parts[i] = strconv.FormatInt(d, 10)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func (m *model) NewInstance(context.Context, backends.InstanceSpec) (backends.Instance, error) {
	return backends.Unary(&instance{m: m}), nil
}
