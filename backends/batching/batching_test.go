package batching

import (
	"slices"
	"testing"

	"github.com/nereid-project/nereid/inference"
)

func req(rows int, outputs ...string) *inference.Request {
	r := &inference.Request{BatchSize: rows, Inputs: []inference.Tensor{{
		Name: "IN", DataType: inference.Int8, Shape: []int64{int64(rows), 2}, Data: make([]byte, 2*rows),
	}}}
	for _, o := range outputs {
		r.Outputs = append(r.Outputs, inference.RequestedOutput{Name: o})
	}
	return r
}

func TestGroupsAndInput(t *testing.T) {
	a, b := req(1), req(2)
	a.Inputs[0].Data = []byte{1, 2}
	b.Inputs[0].Data = []byte{3, 4, 5, 6}
	if g := Groups([]*inference.Request{a, b}, 4); len(g) != 1 || len(g[0]) != 2 {
		t.Fatalf("batchable: %v", g)
	}
	if g := Groups([]*inference.Request{a, b}, 0); len(g) != 2 {
		t.Fatalf("not batching: %d groups", len(g))
	}
	c := req(1)
	c.Inputs[0].Shape = []int64{1, 3}
	if Batchable([]*inference.Request{a, c}, 4) {
		t.Fatal("other shapes batched")
	}
	shape, parts := Input([]*inference.Request{a, b}, "IN")
	if !slices.Equal(shape, []int64{3, 2}) || !slices.Equal(Concat(parts), []byte{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("shape %v parts %v", shape, parts)
	}
	if Size([]*inference.Request{a, b}) != 3 {
		t.Fatal("size")
	}
}

func TestWanted(t *testing.T) {
	outs := []Output{{Name: "A"}, {Name: "B"}, {Name: "S", State: true}}
	if got := Wanted([]*inference.Request{req(1, "B")}, outs); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("B: %v", got)
	}
	if got := Wanted([]*inference.Request{req(1, "B"), req(1)}, outs); !slices.Equal(got, []int{0, 1, 2}) {
		t.Fatalf("all: %v", got)
	}
}

func TestSplit(t *testing.T) {
	group := []*inference.Request{req(1), req(2)}
	resps := []*inference.Response{{}, {}}
	data := inference.AppendBytesElement(nil, []byte("a"))
	data = inference.AppendBytesElement(data, []byte("bb"))
	data = inference.AppendBytesElement(data, []byte(""))
	if err := Split(inference.Tensor{Name: "O", DataType: inference.Bytes, Shape: []int64{3, 1}, Data: data}, group, resps); err != nil {
		t.Fatal(err)
	}
	if got := resps[1].Outputs[0]; !slices.Equal(got.Shape, []int64{2, 1}) || len(got.Data) != 4+2+4 {
		t.Fatalf("second: %+v", got)
	}
	resps = []*inference.Response{{}, {}}
	bad := []byte{9, 0, 0, 0, 'x'}
	if err := Split(inference.Tensor{Name: "O", DataType: inference.Bytes, Shape: []int64{3, 1}, Data: bad}, group, resps); err == nil {
		t.Fatal("a malformed string was split")
	}
	resps = []*inference.Response{{}, {}}
	if err := Split(inference.Tensor{Name: "O", DataType: inference.Int32, Shape: []int64{3}, Data: make([]byte, 8)}, group, resps); err == nil {
		t.Fatal("a short output was split")
	}
}

func TestShapes(t *testing.T) {
	// dims [-1, 4] reshaped to [4, -1, 1]: the variable dimension moves.
	dims, reshape := []int64{-1, 4}, []int64{4, -1, 1}
	m := ModelShape(dims, reshape, []int64{8, 7, 4}, true)
	if !slices.Equal(m, []int64{8, 4, 7, 1}) {
		t.Fatalf("model shape %v", m)
	}
	if c := ClientShape(dims, reshape, m, true); !slices.Equal(c, []int64{8, 7, 4}) {
		t.Fatalf("client shape %v", c)
	}
	if s := ModelShape(dims, nil, []int64{1, 2}, true); !slices.Equal(s, []int64{1, 2}) {
		t.Fatalf("no reshape %v", s)
	}
}
