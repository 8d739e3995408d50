package v2wire

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/nereid-project/nereid/inference"
)

func TestGenerateShape(t *testing.T) {
	tests := []struct {
		dims    []int64
		batched bool
		n       int64
		want    []int64 // nil: refused
	}{
		{[]int64{1}, false, 1, []int64{1}},
		{[]int64{-1}, false, 4, []int64{4}},
		{[]int64{-1}, true, 4, []int64{1, 4}},
		{[]int64{2, -1}, false, 6, []int64{2, 3}},
		{[]int64{-1, -1}, false, 6, []int64{1, 6}},
		{[]int64{2, 2}, true, 4, []int64{1, 2, 2}},
		{[]int64{0}, false, 0, []int64{0}},
		{[]int64{1}, false, 2, nil},
		{[]int64{2, -1}, false, 3, nil},
		{[]int64{0}, false, 1, nil},
		{[]int64{4}, false, 0, nil},
	}
	for _, tc := range tests {
		got, err := generateShape("x", tc.dims, tc.batched, tc.n)
		if tc.want == nil {
			if err == nil || !strings.Contains(err.Error(), "The schema can not convert input 'x' to tensor with proper shape") {
				t.Errorf("%v batched=%v n=%d: %v, %v; want refused", tc.dims, tc.batched, tc.n, got, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%v batched=%v n=%d: %v, %v; want %v", tc.dims, tc.batched, tc.n, got, err, tc.want)
		}
	}
}

func TestGenerateResponseJSON(t *testing.T) {
	le := binary.LittleEndian
	req := &inference.Request{ModelName: "m", ID: "req-id"}
	resp := &inference.Response{
		ModelName: "m", ModelVersion: "3",
		Parameters: inference.Parameters{"count": int64(2), "done": true, "ratio": 0.25, "note": "n", "model_name": "hidden"},
		Outputs: []inference.Tensor{
			bytesTensor("text_output", []int64{1, 1}, "one \"quoted\"\n"),
			bytesTensor("words", []int64{2}, "a", "b"),
			{Name: "ids", DataType: inference.Int32, Shape: []int64{1, 3}, Data: le.AppendUint32(le.AppendUint32(le.AppendUint32(nil, 1), 2), math.MaxUint32)},
			{Name: "flag", DataType: inference.Bool, Shape: []int64{1}, Data: []byte{1}},
			{Name: "score", DataType: inference.FP32, Shape: []int64{}, Data: appendF32(nil, 1.5)},
			{Name: "empty", DataType: inference.FP64, Shape: []int64{0}, Data: []byte{}},
			{Name: "note", DataType: inference.Bool, Shape: []int64{1}, Data: []byte{0}},
		},
	}
	got, err := AppendGenerateJSON(nil, req, resp)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"count":2,"done":true,"empty":[],"flag":true,"id":"req-id","ids":[1,2,-1],"model_name":"m","model_version":"3",` +
		`"note":"n","ratio":0.25,"score":1.5,"text_output":"one \"quoted\"\n","words":["a","b"]}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if !json.Valid(got) {
		t.Errorf("invalid JSON %s", got)
	}

	resp.ID = "resp-id"
	resp.Parameters = nil
	resp.Outputs = []inference.Tensor{{Name: "h", DataType: inference.FP16, Shape: []int64{1}, Data: []byte{0, 0x3c}}}
	if _, err := AppendGenerateJSON(nil, req, resp); err == nil || !strings.Contains(err.Error(), "sending FP16 data via JSON is not supported") {
		t.Errorf("FP16 output: %v", err)
	}
	resp.Outputs = nil
	resp.Parameters = inference.Parameters{"raw": []byte("x")}
	if _, err := AppendGenerateJSON(nil, req, resp); inference.CodeOf(err) != inference.CodeUnsupported {
		t.Errorf("bytes parameter: %v", err)
	}
	resp.Parameters = nil
	if got, _ := AppendGenerateJSON(nil, req, resp); string(got) != `{"id":"resp-id","model_name":"m","model_version":"3"}` {
		t.Errorf("response id: %s", got)
	}
}
