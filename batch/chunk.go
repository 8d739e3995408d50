package batch

import (
	"encoding/binary"
	"slices"
	"strconv"
	"strings"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/jsonw"
	"github.com/nereid-project/nereid/server/v2wire"
)

// batcher groups consecutive records of a shard into requests: at most
// size records, at most maxBatch batch elements, all with the same
// signature (input names, datatypes, and shapes after the batch
// dimension; requested outputs). A record with parameters, and any
// record of a model that does not batch, goes alone.
type batcher struct {
	size     int
	maxBatch int64 // 0: the model does not batch
	pending  []*record
	key      string
	elements int64
}

// add takes the next record and returns the groups that are complete:
// the pending records when rec does not fit with them, rec alone when it
// cannot be batched, and the pending records with rec when they are full.
func (b *batcher) add(rec *record) (groups [][]*record) {
	key, ok := b.signature(rec)
	if len(b.pending) > 0 && (!ok || key != b.key || b.elements+rec.batch > b.maxBatch) {
		groups = append(groups, b.flush())
	}
	if !ok {
		return append(groups, []*record{rec})
	}
	b.pending = append(b.pending, rec)
	b.key = key
	b.elements += rec.batch
	if len(b.pending) >= b.size || b.elements >= b.maxBatch {
		groups = append(groups, b.flush())
	}
	return groups
}

// flush returns the pending records, if any.
func (b *batcher) flush() []*record {
	if len(b.pending) == 0 {
		return nil
	}
	g := b.pending
	b.pending, b.key, b.elements = nil, "", 0
	return g
}

// signature is the batching key of rec; false when rec must go alone.
func (b *batcher) signature(rec *record) (string, bool) {
	if b.maxBatch <= 0 || b.size <= 1 || len(rec.params) > 0 || rec.id != "" || rec.batch < 1 {
		return "", false
	}
	var k strings.Builder
	for i := range rec.inputs {
		t := &rec.inputs[i]
		if len(t.Shape) == 0 || len(t.Parameters) > 0 {
			return "", false
		}
		k.WriteString(t.Name)
		k.WriteByte(0)
		k.WriteString(t.DataType.String())
		for _, d := range t.Shape[1:] {
			k.WriteByte(',')
			k.WriteString(strconv.FormatInt(d, 10))
		}
		k.WriteByte(0)
	}
	k.WriteByte(1)
	for _, o := range rec.outputs {
		if len(o.Parameters) > 0 {
			return "", false
		}
		k.WriteString(o.Name)
		k.WriteByte(0)
	}
	return k.String(), true
}

// request builds the request of a group of records: their inputs
// concatenated along the batch dimension.
func request(m *Model, recs []*record) *inference.Request {
	first := recs[0]
	req := &inference.Request{ModelName: m.Name, ModelVersion: m.Version, ID: first.id, Outputs: first.outputs, Parameters: first.params}
	if len(recs) == 1 {
		req.Inputs = first.inputs
		return req
	}
	req.Inputs = make([]inference.Tensor, len(first.inputs))
	for i := range first.inputs {
		n, batch := 0, int64(0)
		for _, r := range recs {
			n += len(r.inputs[i].Data)
			batch += r.inputs[i].Shape[0]
		}
		data := make([]byte, 0, n)
		for _, r := range recs {
			data = append(data, r.inputs[i].Data...)
		}
		shape := slices.Clone(first.inputs[i].Shape)
		shape[0] = batch
		req.Inputs[i] = inference.Tensor{Name: first.inputs[i].Name, DataType: first.inputs[i].DataType, Shape: shape, Data: data}
	}
	return req
}

// split cuts the outputs of a group's response back into each record's
// outputs, aliasing the response's data.
func split(resp *inference.Response, recs []*record) ([][]inference.Tensor, error) {
	out := make([][]inference.Tensor, len(recs))
	if len(recs) == 1 {
		out[0] = resp.Outputs
		return out, nil
	}
	var total int64
	for _, r := range recs {
		total += r.batch
	}
	for i := range out {
		out[i] = make([]inference.Tensor, len(resp.Outputs))
	}
	for j := range resp.Outputs {
		t := &resp.Outputs[j]
		if len(t.Shape) == 0 || t.Shape[0] != total {
			return nil, inference.Internal("output '%s' has shape %v, which is not a batch of %d: the records cannot be told apart", t.Name, t.Shape, total)
		}
		per := inference.ElementCount(t.Shape[1:])
		if per < 0 {
			return nil, inference.Internal("output '%s' has an invalid shape %v", t.Name, t.Shape)
		}
		off := 0
		for i, r := range recs {
			end, err := rowsEnd(t, off, per*r.batch)
			if err != nil {
				return nil, err
			}
			shape := slices.Clone(t.Shape)
			shape[0] = r.batch
			out[i][j] = inference.Tensor{Name: t.Name, DataType: t.DataType, Shape: shape, Data: t.Data[off:end:end]}
			off = end
		}
		if off != len(t.Data) {
			return nil, inference.Internal("output '%s' holds %d bytes more than its shape %v", t.Name, len(t.Data)-off, t.Shape)
		}
	}
	return out, nil
}

// rowsEnd returns where n elements of t's data that start at off end.
func rowsEnd(t *inference.Tensor, off int, n int64) (int, error) {
	if t.DataType != inference.Bytes {
		end := int64(off) + n*int64(t.DataType.Size())
		if !t.DataType.Valid() || end > int64(len(t.Data)) {
			return 0, inference.Internal("output '%s' holds fewer bytes than its shape %v", t.Name, t.Shape)
		}
		return int(end), nil
	}
	for ; n > 0; n-- {
		if len(t.Data)-off < 4 {
			return 0, inference.Internal("output '%s' holds fewer elements than its shape %v", t.Name, t.Shape)
		}
		l := int(binary.LittleEndian.Uint32(t.Data[off:]))
		if l > len(t.Data)-off-4 {
			return 0, inference.Internal("output '%s' has a BYTES element that runs past its data", t.Name)
		}
		off += 4 + l
	}
	return off, nil
}

// appendOutputLine writes a record's line of the output file:
// {"line":N,"id":…,"outputs":[KServe v2 output tensors, data flat]}.
func appendOutputLine(dst []byte, rec *record, outs []inference.Tensor) ([]byte, error) {
	dst = append(dst, `{"line":`...)
	dst = strconv.AppendInt(dst, int64(rec.line), 10)
	if rec.id != "" {
		dst = append(dst, `,"id":`...)
		dst = jsonw.AppendString(dst, rec.id)
	}
	dst = append(dst, `,"outputs":[`...)
	for i := range outs {
		t := outs[i]
		if isHalf(t.DataType) {
			t.Data = halfToFP32(t.DataType, t.Data)
			t.DataType = inference.FP32
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"name":`...)
		dst = jsonw.AppendString(dst, t.Name)
		// The datatype is the model's; FP16 and BF16 data are written as
		// the numbers they are.
		dst = append(dst, `,"datatype":"`...)
		dst = append(dst, outs[i].DataType.String()...)
		dst = append(dst, `","shape":`...)
		dst = v2wire.AppendInt64Array(dst, t.Shape)
		dst = append(dst, `,"data":[`...)
		var err error
		if dst, err = v2wire.AppendTensorData(dst, &t); err != nil {
			return dst, err
		}
		dst = append(dst, "]}"...)
	}
	return append(dst, "]}\n"...), nil
}

// appendErrorLine writes a record's line of the errors file.
func appendErrorLine(dst []byte, line int, err error) []byte {
	dst = append(dst, `{"line":`...)
	dst = strconv.AppendInt(dst, int64(line), 10)
	dst = append(dst, `,"error":`...)
	dst = jsonw.AppendString(dst, err.Error())
	return append(dst, "}\n"...)
}
