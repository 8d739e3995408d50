package aggregate

import (
	"cmp"
	"context"
	"math"
	"slices"
	"strings"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
)

var _ backends.UnaryInstance = (*instance)(nil)

// instance computes the output of each request of a batch on its own; it
// keeps no state between executions.
type instance struct{ m *model }

// ExecuteWithPhases answers each request of the batch with its aggregated
// output. A request the model cannot compute fails the batch: that happens
// only for shapes the configuration leaves open (inputs of different
// shapes, an empty class dimension, more classes than the output type
// holds), and the batchers only batch requests whose shapes agree, so its
// batch mates would fail alike. Reading the inputs is part of the
// computation, so the whole execution counts as inference.
func (i *instance) ExecuteWithPhases(ctx context.Context, batch []*inference.Request) ([]*inference.Response, backends.Phases, error) {
	out := make([]*inference.Response, len(batch))
	for r, req := range batch {
		if ctx.Err() != nil {
			return nil, backends.Phases{}, inference.Errorf(inference.CodeCancelled, "request cancelled during execution")
		}
		t, err := i.m.compute(req)
		if err != nil {
			return nil, backends.Phases{}, err
		}
		out[r] = &inference.Response{Outputs: []inference.Tensor{t}}
	}
	return out, backends.Phases{}, nil
}

// compute aggregates the inputs of one request into the output tensor.
func (m *model) compute(req *inference.Request) (inference.Tensor, error) {
	data, shape, err := m.inputsOf(req)
	if err != nil {
		return inference.Tensor{}, err
	}
	t := inference.Tensor{Name: m.output, DataType: m.outType}
	switch {
	case m.method.elementwise():
		t.Shape, t.Data = slices.Clone(shape), m.elementwise(data, int(inference.ElementCount(shape)))
		return t, nil
	case m.method == concat:
		t.Shape, t.Data = m.concat(data, shape)
		return t, nil
	case m.method == vote && !m.scores:
		t.Shape, t.Data = slices.Clone(shape), m.voteIndices(data, int(inference.ElementCount(shape)))
		return t, nil
	}
	// A reduction of the last dimension to the index of one class.
	last := len(shape) - 1
	outer, classes := int(inference.ElementCount(shape[:last])), shape[last]
	if outer > 0 && classes == 0 {
		return inference.Tensor{}, inference.InvalidArg("aggregate model '%s': method %q picks a class along the last dimension, but the inputs' shape %s has none",
			m.name, m.method, formatDims(shape))
	}
	if classes > 0 && !fitsInt(m.outType, classes-1) {
		return inference.Tensor{}, inference.InvalidArg("aggregate model '%s': output '%s' data_type %s cannot hold class index %d of inputs shaped %s",
			m.name, m.output, m.outType, classes-1, formatDims(shape))
	}
	t.Shape = slices.Clone(shape)
	t.Shape[last] = 1
	if m.method == argmax {
		t.Data = m.softVote(data, outer, int(classes))
	} else {
		t.Data = m.voteScores(data, outer, int(classes))
	}
	return t, nil
}

// inputsOf returns the data of the request's inputs, in config order, and
// their common shape. The server has checked the request against the
// configuration already; these checks keep the arithmetic in bounds
// whoever calls, and catch inputs whose variable dims disagree.
func (m *model) inputsOf(req *inference.Request) ([][]byte, []int64, error) {
	data := make([][]byte, len(m.inputs))
	var shape []int64
	same := true
	for k, name := range m.inputs {
		in := req.Input(name)
		switch {
		case in == nil:
			return nil, nil, inference.InvalidArg("aggregate model '%s': request has no input '%s'", m.name, name)
		case in.DataType != m.inType:
			return nil, nil, inference.InvalidArg("aggregate model '%s': input '%s' is %s, want %s", m.name, name, in.DataType, m.inType)
		case len(in.Shape) != m.rank:
			return nil, nil, inference.InvalidArg("aggregate model '%s': input '%s' has shape %s, want %d dimensions", m.name, name, formatDims(in.Shape), m.rank)
		}
		size := inference.ByteSize(in.DataType, in.Shape)
		if size < 0 || int64(len(in.Data)) != size {
			return nil, nil, inference.InvalidArg("aggregate model '%s': input '%s' has %d bytes, want %d for shape %s", m.name, name, len(in.Data), size, formatDims(in.Shape))
		}
		if k == 0 {
			shape = in.Shape
		} else if !slices.Equal(in.Shape, shape) {
			same = false
		}
		data[k] = in.Data
	}
	if !same {
		shapes := make([]string, len(m.inputs))
		for k, name := range m.inputs {
			shapes[k] = "'" + name + "' " + formatDims(req.Input(name).Shape)
		}
		return nil, nil, inference.InvalidArg("aggregate model '%s': inputs must all have the same shape, got %s", m.name, strings.Join(shapes, ", "))
	}
	return data, shape, nil
}

// weight is the weight of input k's vote or score.
func (m *model) weight(k int) float64 {
	if m.weights == nil {
		return 1
	}
	return m.weights[k]
}

// totalWeight is the sum of the inputs' weights.
func (m *model) totalWeight() float64 {
	if m.weights == nil {
		return float64(len(m.inputs))
	}
	var w float64
	for _, x := range m.weights {
		w += x
	}
	return w
}

// elementwise computes mean, weighted_mean, max or min over n elements.
func (m *model) elementwise(data [][]byte, n int) []byte {
	dst := make([]byte, n*m.outType.Size())
	if m.method == maximum || m.method == minimum {
		for e := range n {
			m.putPicked(dst, e, data[m.pick(data, e)])
		}
		return dst
	}
	total := m.totalWeight()
	for e := range n {
		var sum float64
		for k, d := range data {
			sum += m.weight(k) * inference.Float64At(m.inType, d, e)
		}
		putF(m.outType, dst, e, sum/total)
	}
	return dst
}

// pick returns the input whose element e is the largest (max) or smallest
// (min): the first among equals, or the first NaN where there is one.
func (m *model) pick(data [][]byte, e int) int {
	float := !isInteger(m.inType)
	if float && math.IsNaN(inference.Float64At(m.inType, data[0], e)) {
		return 0
	}
	best := 0
	for k := 1; k < len(data); k++ {
		var c int
		switch {
		case isSigned(m.inType):
			c = cmp.Compare(inference.Int64At(m.inType, data[k], e), inference.Int64At(m.inType, data[best], e))
		case isUnsigned(m.inType):
			c = cmp.Compare(inference.Uint64At(m.inType, data[k], e), inference.Uint64At(m.inType, data[best], e))
		default:
			x := inference.Float64At(m.inType, data[k], e)
			if math.IsNaN(x) {
				return k
			}
			c = cmp.Compare(x, inference.Float64At(m.inType, data[best], e))
		}
		if (m.method == maximum && c > 0) || (m.method == minimum && c < 0) {
			best = k
		}
	}
	return best
}

// putPicked writes element e of src, an input, as element e of the output:
// its bytes when the types agree, else converted.
func (m *model) putPicked(dst []byte, e int, src []byte) {
	switch sz := m.inType.Size(); {
	case m.outType == m.inType:
		copy(dst[e*sz:(e+1)*sz], src[e*sz:])
	case isSigned(m.inType):
		putI(m.outType, dst, e, inference.Int64At(m.inType, src, e))
	case isUnsigned(m.inType):
		putU(m.outType, dst, e, inference.Uint64At(m.inType, src, e))
	default:
		putF(m.outType, dst, e, inference.Float64At(m.inType, src, e))
	}
}

// concat joins the inputs along the last dimension of shape.
func (m *model) concat(data [][]byte, shape []int64) ([]int64, []byte) {
	last := len(shape) - 1
	outer := int(inference.ElementCount(shape[:last]))
	row := int(shape[last]) * m.inType.Size()
	n := len(data)
	dst := make([]byte, outer*n*row)
	for o := range outer {
		for k, d := range data {
			copy(dst[(o*n+k)*row:], d[o*row:(o+1)*row])
		}
	}
	out := slices.Clone(shape)
	out[last] = int64(n) * shape[last]
	return out, dst
}

// softVote averages the inputs' rows of scores and writes, per row, the
// index of the highest mean.
func (m *model) softVote(data [][]byte, outer, classes int) []byte {
	dst := make([]byte, outer*m.outType.Size())
	total := m.totalWeight()
	for o := range outer {
		best, bestScore := -1, 0.0
		for c := range classes {
			var sum float64
			for k, d := range data {
				sum += m.weight(k) * inference.Float64At(m.inType, d, o*classes+c)
			}
			if s := sum / total; !math.IsNaN(s) && (best < 0 || s > bestScore) {
				best, bestScore = c, s
			}
		}
		putI(m.outType, dst, o, int64(max(best, 0)))
	}
	return dst
}

// voteScores lets each input vote, per row, for its highest-scoring class
// and writes the class with the most votes.
func (m *model) voteScores(data [][]byte, outer, classes int) []byte {
	dst := make([]byte, outer*m.outType.Size())
	votes := make([]uint64, len(data))
	for o := range outer {
		for k, d := range data {
			votes[k] = uint64(rowArgmax(m.inType, d, o*classes, classes))
		}
		putI(m.outType, dst, o, int64(m.majority(votes)))
	}
	return dst
}

// rowArgmax is the index of the highest of n scores from element start on:
// the lowest among equals; NaN never wins, and a row of NaN gives 0.
func rowArgmax(dt inference.DataType, d []byte, start, n int) int {
	best, bestScore := 0, math.NaN()
	for c := range n {
		s := inference.Float64At(dt, d, start+c)
		if !math.IsNaN(s) && (math.IsNaN(bestScore) || s > bestScore) {
			best, bestScore = c, s
		}
	}
	return best
}

// signBit maps a signed value to an unsigned key of the same order.
const signBit = 1 << 63

// voteIndices writes, per element, the class index most inputs hold.
func (m *model) voteIndices(data [][]byte, n int) []byte {
	dst := make([]byte, n*m.outType.Size())
	votes := make([]uint64, len(data))
	signed := isSigned(m.inType)
	for e := range n {
		for k, d := range data {
			if signed {
				votes[k] = uint64(inference.Int64At(m.inType, d, e)) ^ signBit
			} else {
				votes[k] = inference.Uint64At(m.inType, d, e)
			}
		}
		if class := m.majority(votes); signed {
			putI(m.outType, dst, e, int64(class^signBit))
		} else {
			putU(m.outType, dst, e, class)
		}
	}
	return dst
}

// majority returns the vote with the largest total weight, the lowest
// among equals. Votes are keys ordered like the classes they stand for.
func (m *model) majority(votes []uint64) uint64 {
	best, bestWeight := uint64(0), -1.0
	for k, v := range votes {
		if slices.Contains(votes[:k], v) {
			continue // counted with its first occurrence
		}
		var w float64
		for j := k; j < len(votes); j++ {
			if votes[j] == v {
				w += m.weight(j)
			}
		}
		if w > bestWeight || (w == bestWeight && v < best) {
			best, bestWeight = v, w
		}
	}
	return best
}
