package batch

import (
	"encoding/binary"
	"errors"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nereid-project/nereid/inference"
)

// Models of the tests.
var (
	// simpleModel is Triton's simple: two INT32 [16] inputs, batching.
	simpleModel = &Model{Name: "simple", MaxBatchSize: 8, Inputs: []Input{
		{Name: "INPUT0", DataType: inference.Int32, Dims: []int64{16}},
		{Name: "INPUT1", DataType: inference.Int32, Dims: []int64{16}},
	}}
	// vecModel has one FP32 [4] input and batches.
	vecModel = &Model{Name: "vec", MaxBatchSize: 4, Inputs: []Input{{Name: "X", DataType: inference.FP32, Dims: []int64{4}}}}
	// gridModel has one INT32 [2, 2] input and does not batch.
	gridModel = &Model{Name: "grid", Inputs: []Input{{Name: "G", DataType: inference.Int32, Dims: []int64{2, 2}}}}
	// textModel has one BYTES [-1] input and a FP32 [1] one.
	textModel = &Model{Name: "text", MaxBatchSize: 8, Inputs: []Input{
		{Name: "TEXT", DataType: inference.Bytes, Dims: []int64{-1}},
		{Name: "SCORE", DataType: inference.FP32, Dims: []int64{1}},
	}}
	// halfModel has one FP16 [2] input.
	halfModel = &Model{Name: "half", MaxBatchSize: 2, Inputs: []Input{{Name: "H", DataType: inference.FP16, Dims: []int64{2}}}}
)

func int32s(t *testing.T, data []byte) []int32 {
	t.Helper()
	out := make([]int32, len(data)/4)
	for i := range out {
		out[i] = int32(binary.LittleEndian.Uint32(data[4*i:]))
	}
	return out
}

func float32s(data []byte) []float32 {
	out := make([]float32, len(data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
	}
	return out
}

func seq16(from int) string {
	s := make([]string, 16)
	for i := range s {
		s[i] = strconv.Itoa(from + i)
	}
	return "[" + strings.Join(s, ",") + "]"
}

func TestParseJSONRecords(t *testing.T) {
	type want struct {
		shapes map[string][]int64
		batch  int64
	}
	tests := []struct {
		name  string
		model *Model
		line  string
		want  *want
		err   string // a part of the error; "" when the record is good
	}{
		{"names to lists", simpleModel, `{"INPUT0":` + seq16(0) + `,"INPUT1":` + seq16(100) + `}`,
			&want{map[string][]int64{"INPUT0": {1, 16}, "INPUT1": {1, 16}}, 1}, ""},
		{"several batch elements", vecModel, `{"X":[[1,2,3,4],[5,6,7,8]]}`, &want{map[string][]int64{"X": {2, 4}}, 2}, ""},
		{"a list for a one-input model", vecModel, `[1,2,3,4]`, &want{map[string][]int64{"X": {1, 4}}, 1}, ""},
		{"flat list fills fixed dims", gridModel, `{"G":[1,2,3,4]}`, &want{map[string][]int64{"G": {2, 2}}, 1}, ""},
		{"nested list of a non-batching model", gridModel, `{"G":[[1,2],[3,4]]}`, &want{map[string][]int64{"G": {2, 2}}, 1}, ""},
		{"scalar for dims [1]", textModel, `{"TEXT":["a","b"],"SCORE":0.5}`, &want{map[string][]int64{"TEXT": {1, 2}, "SCORE": {1, 1}}, 1}, ""},
		{"KServe v2 request", simpleModel,
			`{"id":"r1","inputs":[{"name":"INPUT1","datatype":"INT32","shape":[2,16],"data":[` + strings.Repeat("1,", 31) + `1]},` +
				`{"name":"INPUT0","datatype":"INT32","shape":[2,16],"data":[` + strings.Repeat("2,", 31) + `2]}],"outputs":[{"name":"OUTPUT0"}]}`,
			&want{map[string][]int64{"INPUT0": {2, 16}, "INPUT1": {2, 16}}, 2}, ""},
		{"FP16 from numbers", halfModel, `{"H":[1.5,-2]}`, &want{map[string][]int64{"H": {1, 2}}, 1}, ""},

		{"not JSON", simpleModel, `{"INPUT0": [1, 2`, nil, "failed to parse"},
		{"a number", simpleModel, `42`, nil, "a record must be"},
		{"unknown input", simpleModel, `{"INPUT9":[1]}`, nil, "unknown input 'INPUT9': model 'simple' has inputs 'INPUT0', 'INPUT1'"},
		{"input twice", vecModel, `{"X":[1,2,3,4],"X":[1,2,3,4]}`, nil, "given twice"},
		{"ragged", vecModel, `{"X":[[1,2,3,4],[5,6]]}`, nil, "ragged"},
		{"mixed depth", vecModel, `{"X":[1,[2],3,4]}`, nil, "ragged"},
		{"wrong rank", vecModel, `{"X":[[[1,2,3]]]}`, nil, "has shape [1 1 3]: model 'vec' takes [batch, 4] or [4]"},
		{"fixed dims from any rank", vecModel, `{"X":[[[1,2],[3,4]]]}`, &want{map[string][]int64{"X": {1, 4}}, 1}, ""},
		{"list for a two-input model", simpleModel, `[1,2]`, nil, "needs a model with one input"},
		{"batch sizes differ", simpleModel, `{"INPUT0":[` + seq16(0) + `,` + seq16(0) + `],"INPUT1":` + seq16(0) + `}`, nil, "different batch sizes"},
		{"string for a number", vecModel, `{"X":[1,"a",3,4]}`, nil, "expected a number for element 1 of FP32 input 'X'"},
		{"element count", vecModel, `{"X":[1,2,3]}`, nil, ""}, // the server's check: shape [1,3] passes here
		{"trailing garbage", vecModel, `[1,2,3,4] x`, nil, "must not be followed"},
		{"no inputs", vecModel, `{}`, nil, "gives no inputs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &parser{model: tt.model}
			rec := p.parseJSON([]byte(tt.line))
			if tt.want == nil && tt.err != "" {
				if rec.err == nil || !strings.Contains(rec.err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", rec.err, tt.err)
				}
				return
			}
			if rec.err != nil {
				t.Fatalf("unexpected error: %v", rec.err)
			}
			if tt.want == nil {
				return
			}
			if rec.batch != tt.want.batch {
				t.Errorf("batch %d, want %d", rec.batch, tt.want.batch)
			}
			if !slices.IsSortedFunc(rec.inputs, func(a, b inference.Tensor) int { return strings.Compare(a.Name, b.Name) }) {
				t.Errorf("inputs not sorted by name")
			}
			for _, in := range rec.inputs {
				if !slices.Equal(in.Shape, tt.want.shapes[in.Name]) {
					t.Errorf("input %s: shape %v, want %v", in.Name, in.Shape, tt.want.shapes[in.Name])
				}
				if err := in.ValidateData(); err != nil {
					t.Errorf("input %s: %v", in.Name, err)
				}
			}
			if len(rec.inputs) != len(tt.want.shapes) {
				t.Errorf("%d inputs, want %d", len(rec.inputs), len(tt.want.shapes))
			}
		})
	}
}

func TestParseJSONValues(t *testing.T) {
	p := &parser{model: simpleModel}
	rec := p.parseJSON([]byte(`{"INPUT1":` + seq16(100) + `,"INPUT0":` + seq16(-5) + `}`))
	if rec.err != nil {
		t.Fatal(rec.err)
	}
	if got := int32s(t, rec.inputs[0].Data); got[0] != -5 || got[15] != 10 {
		t.Errorf("INPUT0 = %v", got)
	}
	if got := int32s(t, rec.inputs[1].Data); got[0] != 100 || got[15] != 115 {
		t.Errorf("INPUT1 = %v", got)
	}

	// The v2 form keeps the id, the requested outputs and the parameters.
	p = &parser{model: vecModel}
	rec = p.parseJSON([]byte(`{"id":"x","parameters":{"k":"v"},"inputs":[{"name":"X","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}],"outputs":[{"name":"Y"}]}`))
	if rec.err != nil {
		t.Fatal(rec.err)
	}
	if rec.id != "x" || len(rec.outputs) != 1 || rec.outputs[0].Name != "Y" || rec.params["k"] != "v" {
		t.Errorf("record %+v", rec)
	}

	// FP16 values are converted from the numbers.
	p = &parser{model: halfModel}
	rec = p.parseJSON([]byte(`{"H":[1.5,-2]}`))
	if rec.err != nil {
		t.Fatal(rec.err)
	}
	if in := rec.inputs[0]; in.DataType != inference.FP16 || !slices.Equal(in.Data, []byte{0x00, 0x3e, 0x00, 0xc0}) {
		t.Errorf("FP16 input %v % x", in.DataType, in.Data)
	}
}

func TestNestedShape(t *testing.T) {
	for span, want := range map[string][]int64{
		`1`:                   {},
		`"a"`:                 {},
		`[]`:                  {0},
		`[[],[]]`:             {2, 0},
		`[1,2,3]`:             {3},
		`[[1,2],[3,4],[5,6]]`: {3, 2},
		`[[[1],[2]]]`:         {1, 2, 1},
	} {
		got, err := nestedShape([]byte(span))
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("nestedShape(%s) = %v, %v; want %v", span, got, err, want)
		}
	}
	for _, span := range []string{`[[1],2]`, `[[1,2],[3]]`, `[[],[1]]`} {
		if _, err := nestedShape([]byte(span)); err == nil {
			t.Errorf("nestedShape(%s): no error", span)
		}
	}
}

// readAll reads and parses every record of a source.
func readAll(t *testing.T, src source, m *Model) []*record {
	t.Helper()
	p := &parser{model: m}
	var recs []*record
	for {
		rec, err := src.next(true)
		if errors.Is(err, io.EOF) {
			return recs
		}
		if err != nil {
			t.Fatal(err)
		}
		p.parse(rec)
		recs = append(recs, rec)
	}
}

func TestJSONLSource(t *testing.T) {
	data := "[1,2,3,4]\n\n   \n{\"X\":[5,6,7,8]}\r\nnope\n" + "[" + strings.Repeat("1,", 40) + "1]\n[9,9,9,9]"
	src := newJSONLSource(strings.NewReader(data), 64)
	recs := readAll(t, src, vecModel)
	if len(recs) != 5 {
		t.Fatalf("%d records, want 5", len(recs))
	}
	lines := []int{1, 4, 5, 6, 7}
	var size int64
	for i, r := range recs {
		if r.line != lines[i] {
			t.Errorf("record %d: line %d, want %d", i, r.line, lines[i])
		}
		size += r.size
	}
	if size != int64(len(data)) { // blank lines count with the next record
		t.Errorf("sizes sum to %d, want %d", size, len(data))
	}
	if recs[0].err != nil || recs[1].err != nil || recs[4].err != nil {
		t.Errorf("good records failed: %v %v %v", recs[0].err, recs[1].err, recs[4].err)
	}
	if recs[2].err == nil {
		t.Error("line 5 is not JSON but read")
	}
	if recs[3].err == nil || !strings.Contains(recs[3].err.Error(), "longer than 64 bytes") {
		t.Errorf("long line: %v", recs[3].err)
	}
}

func TestCSVSource(t *testing.T) {
	t.Run("a column per input", func(t *testing.T) {
		data := "TEXT,SCORE\n" +
			"\"[\"\"a\"\",\"\"b, c\"\"]\",0.5\n" + // the BYTES cell is one element, as it is
			"hello,x\n" +
			"only one\n" +
			"\"multi\nline\",1\n" +
			"bye,2\n"
		src, err := newCSVSource(strings.NewReader(data), textModel)
		if err != nil {
			t.Fatal(err)
		}
		recs := readAll(t, src, textModel)
		if len(recs) != 5 {
			t.Fatalf("%d records, want 5", len(recs))
		}
		for i, want := range []struct {
			line int
			err  string
		}{{2, ""}, {3, "column 'SCORE': \"x\" is not a number"}, {4, "the row has 1 fields, the header 2"}, {5, ""}, {7, ""}} {
			r := recs[i]
			if r.line != want.line {
				t.Errorf("record %d: line %d, want %d", i, r.line, want.line)
			}
			if (want.err == "") != (r.err == nil) || (r.err != nil && !strings.Contains(r.err.Error(), want.err)) {
				t.Errorf("record %d: error %v, want %q", i, r.err, want.err)
			}
		}
		text := recs[0].inputs[1]
		if text.Name != "TEXT" || !slices.Equal(text.Shape, []int64{1, 1}) {
			t.Fatalf("TEXT input %+v", text)
		}
		if elems, _ := inference.SplitBytes("TEXT", text.Data); string(elems[0]) != `["a","b, c"]` {
			t.Errorf("TEXT element %q", elems[0])
		}
		if got := float32s(recs[0].inputs[0].Data); !slices.Equal(got, []float32{0.5}) {
			t.Errorf("SCORE = %v", got)
		}
	})
	t.Run("the row is the one input", func(t *testing.T) {
		data := "a,b,c,d\n1,2,3,4\n5,6,7,[8]\n"
		src, err := newCSVSource(strings.NewReader(data), vecModel)
		if err != nil {
			t.Fatal(err)
		}
		recs := readAll(t, src, vecModel)
		if len(recs) != 2 || recs[0].err != nil {
			t.Fatalf("records %+v", recs)
		}
		if got := float32s(recs[0].inputs[0].Data); !slices.Equal(got, []float32{1, 2, 3, 4}) || !slices.Equal(recs[0].inputs[0].Shape, []int64{1, 4}) {
			t.Errorf("X = %v %v", got, recs[0].inputs[0].Shape)
		}
		if recs[1].err == nil || !strings.Contains(recs[1].err.Error(), "column 'd'") {
			t.Errorf("a list cell in row mode: %v", recs[1].err)
		}
	})
	t.Run("a column per input with lists", func(t *testing.T) {
		data := "INPUT0,INPUT1\n\"" + seq16(0) + "\",\"" + seq16(1) + "\"\n"
		src, err := newCSVSource(strings.NewReader(data), simpleModel)
		if err != nil {
			t.Fatal(err)
		}
		recs := readAll(t, src, simpleModel)
		if len(recs) != 1 || recs[0].err != nil || !slices.Equal(recs[0].inputs[1].Shape, []int64{1, 16}) {
			t.Fatalf("records %+v", recs[0])
		}
	})
	t.Run("a header that names no input", func(t *testing.T) {
		_, err := newCSVSource(strings.NewReader("INPUT0,other\n"), simpleModel)
		if err == nil || !strings.Contains(err.Error(), "must name an input of model 'simple' in every column") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("empty file", func(t *testing.T) {
		src, err := newCSVSource(strings.NewReader(""), simpleModel)
		if err != nil {
			t.Fatal(err)
		}
		if recs := readAll(t, src, simpleModel); len(recs) != 0 {
			t.Fatalf("%d records", len(recs))
		}
	})
}

func TestHalf(t *testing.T) {
	for _, f := range []float32{0, 1, -2, 0.5, 1.5, 65504, 1e-5, 6.1035156e-05, 3.14159} {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], math.Float32bits(f))
		for _, dt := range []inference.DataType{inference.FP16, inference.BF16} {
			back := float32s(halfToFP32(dt, fp32ToHalf(dt, b[:])))[0]
			tol := float64(f) * 1e-3
			if dt == inference.BF16 {
				tol = float64(f) * 1e-2
			}
			if math.Abs(float64(back-f)) > math.Abs(tol)+1e-7 {
				t.Errorf("%v %g -> %g", dt, f, back)
			}
		}
	}
	if h := float32ToFP16(math.Float32bits(1e6)); h != 0x7c00 {
		t.Errorf("1e6 as FP16 = %#x, want infinity", h)
	}
	if h := float32ToFP16(math.Float32bits(float32(math.NaN()))); h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
		t.Errorf("NaN as FP16 = %#x", h)
	}
}
