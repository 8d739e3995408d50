package batch

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/nereid-project/nereid/inference"
)

// vecRecord is a record of vecModel with n batch elements, valued v.
func vecRecord(t *testing.T, line int, n int, v float32) *record {
	t.Helper()
	row := "[" + strings.Repeat(ftoa(v)+",", 3) + ftoa(v) + "]"
	val := row
	if n != 1 {
		val = "[" + strings.Repeat(row+",", n-1) + row + "]"
	}
	rec := (&parser{model: vecModel}).parseJSON([]byte(`{"X":` + val + `}`))
	if rec.err != nil {
		t.Fatal(rec.err)
	}
	rec.line = line
	return rec
}

func ftoa(v float32) string { b, _ := json.Marshal(v); return string(b) }

func lines(groups [][]*record) [][]int {
	var out [][]int
	for _, g := range groups {
		var l []int
		for _, r := range g {
			l = append(l, r.line)
		}
		out = append(out, l)
	}
	return out
}

func TestBatcher(t *testing.T) {
	b := &batcher{size: 3, maxBatch: 4}
	var groups [][]*record
	add := func(r *record) { groups = append(groups, b.add(r)...) }
	add(vecRecord(t, 1, 1, 1))
	add(vecRecord(t, 2, 1, 1))
	add(vecRecord(t, 3, 1, 1)) // three records: full
	add(vecRecord(t, 4, 2, 1))
	add(vecRecord(t, 5, 2, 1)) // four elements: full
	add(vecRecord(t, 6, 3, 1))
	add(vecRecord(t, 7, 2, 1)) // 3+2 > 4: 6 goes alone
	withID := vecRecord(t, 8, 1, 1)
	withID.id = "mine" // an id is the record's: it goes alone
	add(withID)
	add(vecRecord(t, 9, 1, 1))
	if g := b.flush(); g != nil {
		groups = append(groups, g)
	}
	want := [][]int{{1, 2, 3}, {4, 5}, {6}, {7}, {8}, {9}}
	if got := lines(groups); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("groups %v, want %v", got, want)
	}

	// Another signature (here the element shape) starts a new group.
	b = &batcher{size: 8, maxBatch: 8}
	groups = nil
	add(vecRecord(t, 1, 1, 1))
	odd := vecRecord(t, 2, 1, 1)
	odd.inputs[0].Shape = []int64{1, 2}
	add(odd)
	add(vecRecord(t, 3, 1, 1))
	groups = append(groups, b.flush())
	if got := lines(groups); !slices.EqualFunc(got, [][]int{{1}, {2}, {3}}, slices.Equal) {
		t.Errorf("groups %v", got)
	}

	// A model that does not batch: every record alone.
	b = &batcher{size: 8, maxBatch: 0}
	if g := b.add(vecRecord(t, 1, 1, 1)); len(g) != 1 || b.flush() != nil {
		t.Errorf("non-batching groups %v", lines(g))
	}
}

func TestRequestAndSplit(t *testing.T) {
	recs := []*record{vecRecord(t, 1, 1, 1), vecRecord(t, 2, 2, 2), vecRecord(t, 3, 1, 3)}
	req := request(vecModel, recs)
	if len(req.Inputs) != 1 || !slices.Equal(req.Inputs[0].Shape, []int64{4, 4}) {
		t.Fatalf("request inputs %+v", req.Inputs)
	}
	if got := float32s(req.Inputs[0].Data); got[0] != 1 || got[4] != 2 || got[11] != 2 || got[12] != 3 {
		t.Errorf("concatenated data %v", got)
	}
	// An identity response, plus a BYTES output with one element per row.
	var text []byte
	for _, s := range []string{"a", "bb", "", "dddd"} {
		text = inference.AppendBytesElement(text, []byte(s))
	}
	resp := &inference.Response{Outputs: []inference.Tensor{
		{Name: "Y", DataType: inference.FP32, Shape: []int64{4, 4}, Data: req.Inputs[0].Data},
		{Name: "T", DataType: inference.Bytes, Shape: []int64{4, 1}, Data: text},
	}}
	outs, err := split(resp, recs)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(outs[1][0].Shape, []int64{2, 4}) || float32s(outs[1][0].Data)[7] != 2 || float32s(outs[2][0].Data)[0] != 3 {
		t.Errorf("split FP32 %+v", outs[1][0])
	}
	if e, _ := inference.SplitBytes("T", outs[1][1].Data); len(e) != 2 || string(e[0]) != "bb" || string(e[1]) != "" {
		t.Errorf("split BYTES %q", e)
	}
	line, err := appendOutputLine(nil, recs[2], outs[2])
	if err != nil {
		t.Fatal(err)
	}
	want := `{"line":3,"outputs":[{"name":"Y","datatype":"FP32","shape":[1,4],"data":[3.0,3.0,3.0,3.0]},{"name":"T","datatype":"BYTES","shape":[1,1],"data":["dddd"]}]}` + "\n"
	if string(line) != want {
		t.Errorf("line\n%s\nwant\n%s", line, want)
	}

	// An output without the batch dimension cannot be split.
	resp.Outputs[0].Shape = []int64{16}
	if _, err := split(resp, recs); err == nil || !strings.Contains(err.Error(), "not a batch of 4") {
		t.Errorf("split error %v", err)
	}
	resp.Outputs[0].Shape = []int64{4, 4}
	resp.Outputs[0].Data = resp.Outputs[0].Data[:60]
	if _, err := split(resp, recs); err == nil {
		t.Error("a short output was split")
	}
}

func TestOutputLineHalf(t *testing.T) {
	rec := &record{line: 7, id: "q"}
	out := inference.Tensor{Name: "H", DataType: inference.FP16, Shape: []int64{1, 2}, Data: []byte{0x00, 0x3e, 0x00, 0xc0}}
	line, err := appendOutputLine(nil, rec, []inference.Tensor{out})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"line":7,"id":"q","outputs":[{"name":"H","datatype":"FP16","shape":[1,2],"data":[1.5,-2.0]}]}` + "\n"; string(line) != want {
		t.Errorf("line %s", line)
	}
}
