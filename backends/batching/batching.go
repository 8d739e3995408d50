// Package batching is what every framework backend does to run the requests
// of a batch as one framework call: decide whether they can, lay their
// inputs end to end along the batch dimension, pick the outputs any of them
// asked for, and hand each request its rows of the outputs, BYTES
// included.
package batching

import (
	"encoding/binary"
	"slices"

	"github.com/nereid-project/nereid/inference"
)

// Batchable reports whether the requests can run as one: a batching model
// (maxBatch > 0), the same inputs with the same shapes past the batch
// dimension.
func Batchable(batch []*inference.Request, maxBatch int) bool {
	if maxBatch == 0 || len(batch) == 0 {
		return false
	}
	first := batch[0]
	for _, req := range batch[1:] {
		if len(req.Inputs) != len(first.Inputs) {
			return false
		}
		for k := range req.Inputs {
			a := &req.Inputs[k]
			b := first.Input(a.Name)
			if b == nil || len(a.Shape) == 0 || len(b.Shape) == 0 || !slices.Equal(a.Shape[1:], b.Shape[1:]) {
				return false
			}
		}
	}
	return true
}

// Groups splits a batch into the groups that run as one framework call:
// the whole batch when it is Batchable, else one request per group.
func Groups(batch []*inference.Request, maxBatch int) [][]*inference.Request {
	if len(batch) <= 1 || Batchable(batch, maxBatch) {
		return [][]*inference.Request{batch}
	}
	out := make([][]*inference.Request, len(batch))
	for i := range batch {
		out[i] = batch[i : i+1 : i+1]
	}
	return out
}

// Size is the number of batch rows of a group: the sum of its requests'
// batch sizes (a request of a model that does not batch counts one).
func Size(group []*inference.Request) int64 {
	n := int64(0)
	for _, req := range group {
		n += int64(max(req.BatchSize, 1))
	}
	return n
}

// Input returns one input of a group as the framework sees it: its shape
// with the group's batch size first (the request's own shape for a group
// of one) and its bytes as parts, one per request, to be laid end to end.
// The parts alias the requests' inputs.
func Input(group []*inference.Request, name string) (shape []int64, parts [][]byte) {
	first := group[0].Input(name)
	if len(group) == 1 {
		return first.Shape, [][]byte{first.Data}
	}
	shape = append([]int64{Size(group)}, first.Shape[1:]...)
	parts = make([][]byte, len(group))
	for i, req := range group {
		parts[i] = req.Input(name).Data
	}
	return shape, parts
}

// Concat lays parts end to end in one new buffer.
func Concat(parts [][]byte) []byte {
	if len(parts) == 1 {
		return parts[0]
	}
	total := 0
	for _, p := range parts {
		total += len(p)
	}
	out := make([]byte, 0, total)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// Output is a model output as Wanted sees it.
type Output struct {
	Name string
	// State: an implicit state output, which every run produces for the
	// sequence batcher.
	State bool
}

// Wanted returns the indexes in outputs of the outputs any request of the
// group asked for, in the given order, and of the state outputs; all of
// them when a request asked for none in particular.
func Wanted(group []*inference.Request, outputs []Output) []int {
	all := false
	for _, req := range group {
		if len(req.Outputs) == 0 {
			all = true
			break
		}
	}
	var out []int
	for k, o := range outputs {
		if all || o.State {
			out = append(out, k)
			continue
		}
		for _, req := range group {
			if slices.ContainsFunc(req.Outputs, func(r inference.RequestedOutput) bool { return r.Name == o.Name }) {
				out = append(out, k)
				break
			}
		}
	}
	return out
}

// Split hands each request of the group its part of an output tensor t
// (the group's rows, batch dimension first): the whole tensor for a group
// of one, consecutive batch rows otherwise. The parts share t's buffer.
func Split(t inference.Tensor, group []*inference.Request, resps []*inference.Response) error {
	if len(group) == 1 {
		resps[0].Outputs = append(resps[0].Outputs, t)
		return nil
	}
	if len(t.Shape) == 0 {
		return inference.Internal("output '%s' has no batch dimension", t.Name)
	}
	rowElems := inference.ElementCount(t.Shape[1:])
	data := t.Data
	off := 0
	for r, req := range group {
		rows := int64(max(req.BatchSize, 1))
		var part []byte
		if t.DataType == inference.Bytes {
			end := off
			for range rows * rowElems {
				if len(data)-end < 4 {
					return inference.Internal("output '%s' holds fewer strings than its shape", t.Name)
				}
				n := int(binary.LittleEndian.Uint32(data[end:]))
				if n > len(data)-end-4 {
					return inference.Internal("output '%s' holds a malformed string", t.Name)
				}
				end += 4 + n
			}
			part = data[off:end:end]
			off = end
		} else {
			n := int(rows*rowElems) * t.DataType.Size()
			if off+n > len(data) {
				return inference.Internal("output '%s' is smaller than its shape", t.Name)
			}
			part = data[off : off+n : off+n]
			off += n
		}
		s := append([]int64{rows}, t.Shape[1:]...)
		resps[r].Outputs = append(resps[r].Outputs, inference.Tensor{Name: t.Name, DataType: t.DataType, Shape: s, Data: part})
	}
	return nil
}

// ModelShape turns a request shape into the shape the model sees under a
// configured reshape: the reshape, whose variable dimensions take the
// request's variable dimensions (those that are -1 in dims) in order, after
// the batch dimension when batched. A nil reshape leaves the shape alone.
func ModelShape(dims, reshape, shape []int64, batched bool) []int64 {
	if reshape == nil {
		return shape
	}
	var batch, rest []int64
	if batched && len(shape) > 0 {
		batch, rest = shape[:1], shape[1:]
	} else {
		rest = shape
	}
	return remap(batch, rest, dims, reshape)
}

// ClientShape undoes ModelShape for an output: the configured dims, whose
// variable dimensions take the model's values where the reshape has its
// variable ones.
func ClientShape(dims, reshape, shape []int64, batched bool) []int64 {
	if reshape == nil {
		return shape
	}
	var batch, rest []int64
	if batched && len(shape) > 0 {
		batch, rest = shape[:1], shape[1:]
	} else {
		rest = shape
	}
	return remap(batch, rest, reshape, dims)
}

// remap builds batch + to, whose -1 entries take in order the values of
// rest where from has its -1 entries.
func remap(batch, rest, from, to []int64) []int64 {
	var vars []int64
	for k, d := range from {
		if d == -1 && k < len(rest) {
			vars = append(vars, rest[k])
		}
	}
	out := append([]int64{}, batch...)
	for _, d := range to {
		if d == -1 && len(vars) > 0 {
			d, vars = vars[0], vars[1:]
		}
		out = append(out, d)
	}
	return out
}
