//go:build cgo

package onnxruntime

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// identityModel encodes an ONNX model whose output is its input (Identity),
// of the given element type and rank with every dimension symbolic.
func identityModel(elemType, rank int) []byte {
	msg := func(num protowire.Number, body []byte) func([]byte) []byte {
		return func(b []byte) []byte {
			b = protowire.AppendTag(b, num, protowire.BytesType)
			return protowire.AppendBytes(b, body)
		}
	}
	str := func(b []byte, num protowire.Number, s string) []byte {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		return protowire.AppendString(b, s)
	}
	varint := func(b []byte, num protowire.Number, v uint64) []byte {
		b = protowire.AppendTag(b, num, protowire.VarintType)
		return protowire.AppendVarint(b, v)
	}
	valueInfo := func(name string) []byte {
		var shape []byte
		for d := range rank {
			shape = msg(1, str(nil, 2, fmt.Sprintf("d%d", d)))(shape) // dim { dim_param }
		}
		tensor := msg(2, shape)(varint(nil, 1, uint64(elemType))) // elem_type, shape
		typ := msg(1, tensor)(nil)                                // tensor_type
		return msg(2, typ)(str(nil, 1, name))                     // name, type
	}
	node := str(str(str(nil, 1, "INPUT0"), 2, "OUTPUT0"), 4, "Identity")
	graph := msg(1, node)(nil)
	graph = str(graph, 2, "identity")
	graph = msg(11, valueInfo("INPUT0"))(graph)
	graph = msg(12, valueInfo("OUTPUT0"))(graph)
	opset := varint(str(nil, 1, ""), 2, 13)
	model := varint(nil, 1, 8) // ir_version
	model = msg(8, opset)(model)
	return msg(7, graph)(model)
}

// TestHighRank runs tensors of a rank beyond what the C side keeps inline,
// for inputs, for outputs ONNX Runtime allocates (the first run) and for
// outputs written into response buffers (the next, with the shape
// remembered).
func TestHighRank(t *testing.T) {
	b := testBackend(t)
	const rank = maxRank + 3
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "1", "model.onnx"), identityModel(onnxFloat, rank), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := &inferencepb.ModelConfig{Name: "high_rank", Backend: Name}
	if err := b.Complete(context.Background(), dir, cfg, true); err != nil {
		t.Fatal(err)
	}
	got := len(cfg.GetInput()[0].GetDims())
	if cfg.GetMaxBatchSize() > 0 {
		got++ // the batch dimension
	}
	if got != rank {
		t.Fatalf("auto-complete read rank %d, want %d", got, rank)
	}
	_, inst := loadModel(t, b, dir, cfg)
	shape := make([]int64, rank)
	for k := range shape {
		shape[k] = 1
	}
	shape[rank-1] = 3
	for run := range 3 {
		data := make([]byte, 12)
		for k := range data {
			data[k] = byte(run*16 + k)
		}
		req := request(inference.Tensor{Name: "INPUT0", DataType: inference.FP32, Shape: shape, Data: data})
		resps, err := inst.Execute(context.Background(), []*inference.Request{req})
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		out := resps[0].Output("OUTPUT0")
		if out == nil || !slices.Equal(out.Shape, shape) || !bytes.Equal(out.Data, data) {
			t.Fatalf("run %d: got %+v, want shape %v data %v", run, out, shape, data)
		}
	}
}

// TestManyTensorsRepeated runs all_types (14 inputs, 14 outputs) three
// times with the same shapes: more buffers than the C call takes as
// arguments, so some are pinned, and from the second run on ONNX Runtime
// writes the outputs into response buffers.
func TestManyTensorsRepeated(t *testing.T) {
	b := testBackend(t)
	dir := modelDirWith(t, "all_types")
	cfg := &inferencepb.ModelConfig{Name: "all_types", Backend: Name}
	if err := b.Complete(context.Background(), dir, cfg, true); err != nil {
		t.Fatal(err)
	}
	_, inst := loadModel(t, b, dir, cfg)
	for run := range 3 {
		req := &inference.Request{BatchSize: 1}
		for i, in := range cfg.GetInput() {
			dt := inference.DataType(in.GetDataType())
			var data []byte
			if dt == inference.Bytes {
				data = bytesElems("a", fmt.Sprint(run), "", "\x00")
			} else {
				data = make([]byte, 4*dt.Size())
				for k := range data {
					data[k] = byte(k*5 + i + run)
				}
				if dt == inference.Bool {
					for k := range data {
						data[k] &= 1
					}
				}
			}
			req.Inputs = append(req.Inputs, inference.Tensor{Name: in.GetName(), DataType: dt, Shape: []int64{1, 4}, Data: data})
		}
		resps, err := inst.Execute(context.Background(), []*inference.Request{req})
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		for i, in := range req.Inputs {
			out := resps[0].Output(fmt.Sprintf("OUTPUT%d", i))
			if out == nil || out.DataType != in.DataType || !slices.Equal(out.Shape, in.Shape) || !bytes.Equal(out.Data, in.Data) {
				t.Fatalf("run %d %s: got %+v, want %+v", run, in.DataType, out, in)
			}
		}
	}
}

// TestRunErrorReleases fails runs after some of their values are built (a
// malformed BYTES input among valid ones) and checks that the instance
// keeps serving, with other shapes in between.
func TestRunErrorReleases(t *testing.T) {
	b := testBackend(t)
	dir := modelDirWith(t, "all_types")
	cfg := &inferencepb.ModelConfig{Name: "all_types", Backend: Name}
	if err := b.Complete(context.Background(), dir, cfg, true); err != nil {
		t.Fatal(err)
	}
	_, inst := loadModel(t, b, dir, cfg)
	good := func(n int64) *inference.Request {
		req := &inference.Request{BatchSize: 1}
		for _, in := range cfg.GetInput() {
			dt := inference.DataType(in.GetDataType())
			data := make([]byte, int(n)*dt.Size())
			if dt == inference.Bytes {
				data = nil
				for range n {
					data = inference.AppendBytesElement(data, []byte("x"))
				}
			}
			req.Inputs = append(req.Inputs, inference.Tensor{Name: in.GetName(), DataType: dt, Shape: []int64{1, n}, Data: data})
		}
		return req
	}
	for k := range 20 {
		bad := good(4)
		for j := range bad.Inputs {
			if bad.Inputs[j].DataType == inference.Bytes {
				bad.Inputs[j].Data = bad.Inputs[j].Data[:len(bad.Inputs[j].Data)-1] // a truncated element
			}
		}
		if _, err := inst.Execute(context.Background(), []*inference.Request{bad}); inference.CodeOf(err) != inference.CodeInvalidArg {
			t.Fatalf("round %d: truncated BYTES: %v", k, err)
		}
		if _, err := inst.Execute(context.Background(), []*inference.Request{good(int64(1 + k%3))}); err != nil {
			t.Fatalf("round %d: %v", k, err)
		}
	}
}
