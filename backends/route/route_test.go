package route

import (
	"context"
	"encoding/binary"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/backends/backendtest"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

const io = `
input [ { name: "SEL" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "X" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "A" data_type: TYPE_FP32 dims: [ 2 ] }, { name: "B" data_type: TYPE_FP32 dims: [ 2 ] } ]
`

func param(k, v string) string {
	return `parameters { key: "` + k + `" value: { string_value: "` + v + `" } }` + "\n"
}

func config(t *testing.T, text string) *inferencepb.ModelConfig {
	t.Helper()
	cfg := &inferencepb.ModelConfig{}
	if err := prototext.Unmarshal([]byte(`name: "r" backend: "route" max_batch_size: 8`+"\n"+text), cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func run(t *testing.T, cfg *inferencepb.ModelConfig, sel inference.Tensor) (*inference.Response, error) {
	t.Helper()
	inst := backendtest.Instance(t, Backend{}, cfg)
	sel.Name = "SEL"
	payload := inference.Tensor{Name: "X", DataType: inference.FP32, Shape: []int64{1, 2}, Data: backendtest.Float32s(1.5, 2.5)}
	req := &inference.Request{ModelName: "r", Inputs: []inference.Tensor{sel, payload}}
	resps, err := backendtest.Collect(context.Background(), inst, []*inference.Request{req})
	if err != nil {
		return nil, err
	}
	if len(resps[0]) != 1 {
		t.Fatalf("%d responses", len(resps[0]))
	}
	resp := resps[0][0]
	if len(resp.Outputs) != 1 || &resp.Outputs[0].Data[0] != &payload.Data[0] {
		t.Fatalf("the chosen output is not the payload itself: %+v", resp.Outputs)
	}
	return resp, nil
}

func sel32(v ...int32) inference.Tensor {
	return inference.Tensor{DataType: inference.Int32, Shape: []int64{int64(len(v)), 1}, Data: backendtest.Int32s(v...)}
}

func TestRules(t *testing.T) {
	table := config(t, io+param("selector", "SEL")+param("table", "0:A, 1:B"))
	withDefault := config(t, io+param("selector", "SEL")+param("table", "7:A")+param("default", "B"))
	threshold := config(t, `input [ { name: "SEL" data_type: TYPE_FP32 dims: [ 1 ] }, { name: "X" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "LOW" data_type: TYPE_FP32 dims: [ 2 ] }, { name: "HIGH" data_type: TYPE_FP32 dims: [ 2 ] } ]`+param("selector", "SEL")+param("threshold", "0.5"))
	words := config(t, `input [ { name: "SEL" data_type: TYPE_STRING dims: [ 1 ] }, { name: "X" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "A" data_type: TYPE_FP32 dims: [ 2 ] }, { name: "B" data_type: TYPE_FP32 dims: [ 2 ] } ]`+param("selector", "SEL")+param("table", "orange:A,apple:B"))
	word := func(s ...string) inference.Tensor {
		var b []byte
		for _, w := range s {
			b = binary.LittleEndian.AppendUint32(b, uint32(len(w)))
			b = append(b, w...)
		}
		return inference.Tensor{DataType: inference.Bytes, Shape: []int64{int64(len(s)), 1}, Data: b}
	}
	for _, tc := range []struct {
		name string
		cfg  *inferencepb.ModelConfig
		sel  inference.Tensor
		want string // the output, or the error's start
	}{
		{"table 0", table, sel32(0), "A"},
		{"table 1", table, sel32(1), "B"},
		{"batch agreeing", table, sel32(1, 1), "B"},
		{"batch disagreeing", table, sel32(0, 1), "route model 'r': the items of one request select different outputs ('A' and 'B')"},
		{"not in table", table, sel32(2), "route model 'r': selector value 2 is not in its table and it has no default"},
		{"default", withDefault, sel32(3), "B"},
		{"table with default", withDefault, sel32(7), "A"},
		{"below threshold", threshold, inference.Tensor{DataType: inference.FP32, Shape: []int64{1, 1}, Data: backendtest.Float32s(0.25)}, "LOW"},
		{"at threshold", threshold, inference.Tensor{DataType: inference.FP32, Shape: []int64{1, 1}, Data: backendtest.Float32s(0.5)}, "HIGH"},
		{"bytes", words, word("apple"), "B"},
		{"bytes unknown", words, word("pear"), "route model 'r': selector value pear is not in its table"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := run(t, tc.cfg, tc.sel)
			switch {
			case err != nil:
				if !strings.HasPrefix(err.Error(), tc.want) || inference.CodeOf(err) != inference.CodeInvalidArg {
					t.Fatalf("error %v, want %q", err, tc.want)
				}
			case resp.Outputs[0].Name != tc.want:
				t.Fatalf("chose %s, want %s", resp.Outputs[0].Name, tc.want)
			}
		})
	}
}

func TestLoadRefusals(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{io + param("table", "0:A"), "route model 'r': parameter selector must name the input"},
		{io + param("selector", "NOPE") + param("table", "0:A"), "route model 'r': parameter selector: 'NOPE' is not one of its two inputs"},
		{io + param("selector", "SEL"), "route model 'r': set exactly one rule"},
		{io + param("selector", "SEL") + param("table", "0:A") + param("threshold", "1"), "route model 'r': set exactly one rule"},
		{io + param("selector", "SEL") + param("table", "0:C"), `route model 'r': parameter table: entry "0:C" is not value:OUTPUT`},
		{io + param("selector", "SEL") + param("table", "x:A"), `route model 'r': parameter table: value "x" is not a number`},
		{io + param("selector", "SEL") + param("table", "0:A,0.0:B"), `route model 'r': parameter table: value "0.0" appears twice`},
		{io + param("selector", "SEL") + param("table", "0:A") + param("default", "Z"), "route model 'r': parameter default: 'Z' is not one of the outputs"},
		{io + param("selector", "SEL") + param("threshold", "high"), `route model 'r': parameter threshold: "high" is not a number`},
		{io + param("selector", "SEL") + param("table", "0:A") + param("colour", "red"), "route model 'r': unknown parameter 'colour'"},
		{`input [ { name: "SEL" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "X" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "A" data_type: TYPE_FP32 dims: [ 2 ] }, { name: "B" data_type: TYPE_INT32 dims: [ 2 ] } ]` + param("selector", "SEL") + param("table", "0:A"),
			"route model 'r': output 'B' must have the payload 'X''s data_type FP32 and dims [2]"},
		{`input [ { name: "SEL" data_type: TYPE_FP16 dims: [ 1 ] }, { name: "X" data_type: TYPE_FP32 dims: [ 2 ] } ]` + io[strings.Index(io, "output"):] + param("selector", "SEL") + param("table", "0:A"),
			"route model 'r': selector input 'SEL' is FP16: it must be a number or BYTES"},
	} {
		_, err := Backend{}.Load(context.Background(), backends.ModelSpec{Name: "r", Config: config(t, tc.text)})
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("config\n%s\nerror %v\nwant %q", tc.text, err, tc.want)
		}
	}
}
