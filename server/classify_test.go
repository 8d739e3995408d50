package server

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
)

func fp32s(v ...float32) []byte {
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

func splitBytes(t *testing.T, data []byte) []string {
	t.Helper()
	elems, err := inference.SplitBytes("out", data)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(elems))
	for i, e := range elems {
		out[i] = string(e)
	}
	return out
}

func TestClassifyTensor(t *testing.T) {
	labels := []string{"cat", "", "dog"}
	for _, tc := range []struct {
		name     string
		t        inference.Tensor
		n        int
		batching bool
		shape    []int64
		want     []string
	}{
		{"fp32 top 2 with labels", inference.Tensor{DataType: inference.FP32, Shape: []int64{4}, Data: fp32s(0.1, 0.5, 0.75, 0.25)}, 2, false,
			[]int64{2}, []string{"0.750000:2:dog", "0.500000:1"}},
		// Ties keep index order; an empty label line means no label.
		{"ties", inference.Tensor{DataType: inference.FP32, Shape: []int64{4}, Data: fp32s(1, 3, 3, 1)}, 4, false,
			[]int64{4}, []string{"3.000000:1", "3.000000:2:dog", "1.000000:0:cat", "1.000000:3"}},
		{"count beyond classes", inference.Tensor{DataType: inference.FP32, Shape: []int64{2}, Data: fp32s(-1.5, 2e10)}, 5, false,
			[]int64{2}, []string{"20000000000.000000:1", "-1.500000:0:cat"}},
		{"batched", inference.Tensor{DataType: inference.FP32, Shape: []int64{2, 3}, Data: fp32s(1, 2, 3, 9, 8, 7)}, 1, true,
			[]int64{2, 1}, []string{"3.000000:2:dog", "9.000000:0:cat"}},
		{"batched 2-d entries", inference.Tensor{DataType: inference.FP64, Shape: []int64{1, 2, 2}, Data: func() []byte {
			var b []byte
			for _, v := range []float64{0.125, 1e-7, math.Inf(1), math.NaN()} {
				b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
			}
			return b
		}()}, 3, true, []int64{1, 3}, []string{"inf:2:dog", "0.125000:0:cat", "0.000000:1"}},
		{"int8", inference.Tensor{DataType: inference.Int8, Shape: []int64{3}, Data: []byte{0xff, 0x80, 0x7f}}, 3, false,
			[]int64{3}, []string{"127:2:dog", "-1:0:cat", "-128:1"}},
		{"uint64", inference.Tensor{DataType: inference.Uint64, Shape: []int64{2}, Data: binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, 1), math.MaxUint64)}, 1, false,
			[]int64{1}, []string{"18446744073709551615:1"}},
		{"int64 precision", inference.Tensor{DataType: inference.Int64, Shape: []int64{2}, Data: binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, 1<<62+1), 1<<62)}, 1, false,
			[]int64{1}, []string{"4611686018427387905:0:cat"}},
		{"non-batching model keeps first dim", inference.Tensor{DataType: inference.Int32, Shape: []int64{2, 2}, Data: int32s(1, 4, 3, 2)}, 2, false,
			[]int64{2}, []string{"4:1", "3:2:dog"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.t.Name = "out"
			got, err := classifyTensor(&tc.t, tc.n, tc.batching, labels)
			if err != nil {
				t.Fatal(err)
			}
			if got.DataType != inference.Bytes || !reflect.DeepEqual(got.Shape, tc.shape) {
				t.Errorf("type %v shape %v; want BYTES %v", got.DataType, got.Shape, tc.shape)
			}
			if s := splitBytes(t, got.Data); !reflect.DeepEqual(s, tc.want) {
				t.Errorf("classes %q; want %q", s, tc.want)
			}
		})
	}
}

func TestClassifyTensorRefusals(t *testing.T) {
	for _, dt := range []inference.DataType{inference.Bytes, inference.Bool, inference.FP16, inference.BF16} {
		_, err := classifyTensor(&inference.Tensor{Name: "o", DataType: dt, Shape: []int64{1}, Data: []byte{0, 0}}, 1, false, nil)
		if inference.CodeOf(err) != inference.CodeInvalidArg || err.Error() != "class result not available for output due to unsupported type '"+dt.String()+"'" {
			t.Errorf("%v: %v", dt, err)
		}
	}
	_, err := classifyTensor(&inference.Tensor{Name: "o", DataType: inference.FP32, Shape: []int64{2}, Data: []byte{1}}, 1, false, nil)
	if inference.CodeOf(err) != inference.CodeInternal {
		t.Errorf("short data: %v", err)
	}
	for _, p := range []inference.Parameters{{"classification": int64(-1)}, {"classification": "2"}} {
		if _, err := classCount("o", p); inference.CodeOf(err) != inference.CodeInvalidArg {
			t.Errorf("%v: %v", p, err)
		}
	}
	if n, err := classCount("o", inference.Parameters{"classification": uint64(math.MaxUint64)}); err != nil || n != math.MaxUint32 {
		t.Errorf("huge count: %d %v", n, err)
	}
}

func TestFormatCFloat(t *testing.T) {
	for v, want := range map[float64]string{
		0: "0.000000", -0.5: "-0.500000", 1.0 / 3: "0.333333", 2.0 / 3: "0.666667", 1e-7: "0.000000",
		float64(float32(0.1)): "0.100000", 123456789.125: "123456789.125000",
		math.Inf(1): "inf", math.Inf(-1): "-inf",
	} {
		if got := formatCFloat(v); got != want {
			t.Errorf("formatCFloat(%v) = %q; want %q", v, got, want)
		}
	}
	if formatCFloat(math.NaN()) != "nan" || formatCFloat(math.Copysign(math.NaN(), -1)) != "-nan" {
		t.Error("NaN")
	}
}

func TestParseLabels(t *testing.T) {
	for text, want := range map[string][]string{
		"":             nil,
		"a\nb\n":       {"a", "b"},
		"a\nb":         {"a", "b"},
		"a\r\n\r\nc\n": {"a", "", "c"},
		"\n":           {""},
	} {
		if got := parseLabels(text); !reflect.DeepEqual(got, want) {
			t.Errorf("parseLabels(%q) = %q; want %q", text, got, want)
		}
	}
}

const classifyConfig = `
name: "cls"
backend: "identity"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] label_filename: "labels.txt" } ]
instance_group [ { name: "cls" count: 1 kind: KIND_CPU } ]
`

// newModelServer loads one identity model from config text in a model
// directory holding files.
func newModelServer(t *testing.T, configText string, files map[string]string, opts Options) *Server {
	t.Helper()
	cfg := &inferencepb.ModelConfig{}
	if err := prototext.Unmarshal([]byte(configText), cfg); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	l := NewLoader(LoaderOptions{})
	if err := l.Complete(context.Background(), dir, cfg, true); err != nil {
		t.Fatal(err)
	}
	sv, err := l.LoadVersion(context.Background(), repository.VersionSpec{Name: cfg.GetName(), Version: 1, Config: cfg, ModelDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sv.Close(context.Background()) })
	models := &fakeModels{versions: map[string]map[int64]*loadedModel{cfg.GetName(): {1: sv.(*loadedModel)}}, allReady: true}
	s := New(models, opts)
	t.Cleanup(func() { _ = s.CloseSharedMemory() })
	return s
}

func TestInferClassification(t *testing.T) {
	s := newModelServer(t, classifyConfig, map[string]string{"labels.txt": "zero\none\ntwo\n"}, Options{})
	req := &inference.Request{ModelName: "cls",
		Inputs:  []inference.Tensor{{Name: "INPUT0", DataType: inference.FP32, Shape: []int64{2, 3}, Data: fp32s(0.2, 0.7, 0.1, 0.9, 0.05, 0.05)}},
		Outputs: []inference.RequestedOutput{{Name: "OUTPUT0", Parameters: inference.Parameters{"classification": int64(2)}}},
	}
	resp, err := s.Infer(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	out := resp.Outputs[0]
	if out.DataType != inference.Bytes || !reflect.DeepEqual(out.Shape, []int64{2, 2}) {
		t.Fatalf("output %v %v", out.DataType, out.Shape)
	}
	want := []string{"0.700000:1:one", "0.200000:0:zero", "0.900000:0:zero", "0.050000:1:one"}
	if got := splitBytes(t, out.Data); !reflect.DeepEqual(got, want) {
		t.Errorf("classes %q; want %q", got, want)
	}

	// classification 0 asks for nothing.
	req.Outputs[0].Parameters = inference.Parameters{"classification": int64(0)}
	resp, err = s.Infer(context.Background(), req)
	if err != nil || resp.Outputs[0].DataType != inference.FP32 {
		t.Fatalf("classification 0: %v %v", resp, err)
	}
}

func TestLabelFileMissing(t *testing.T) {
	cfg := &inferencepb.ModelConfig{}
	if err := prototext.Unmarshal([]byte(classifyConfig), cfg); err != nil {
		t.Fatal(err)
	}
	l := NewLoader(LoaderOptions{})
	dir := t.TempDir()
	if err := l.Complete(context.Background(), dir, cfg, true); err != nil {
		t.Fatal(err)
	}
	_, err := l.LoadVersion(context.Background(), repository.VersionSpec{Name: "cls", Version: 1, Config: cfg, ModelDir: dir})
	if err == nil || !strings.Contains(err.Error(), "label file 'labels.txt' of output 'OUTPUT0'") {
		t.Fatalf("err = %v", err)
	}
}

func TestLabelFileOutsideModelRefused(t *testing.T) {
	cfg := &inferencepb.ModelConfig{}
	text := strings.Replace(classifyConfig, `label_filename: "labels.txt"`, `label_filename: "../labels.txt"`, 1)
	if err := prototext.Unmarshal([]byte(text), cfg); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	dir := filepath.Join(root, "cls")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The file exists, but outside the model directory.
	if err := os.WriteFile(filepath.Join(root, "labels.txt"), []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l := NewLoader(LoaderOptions{})
	if err := l.Complete(context.Background(), dir, cfg, true); err != nil {
		t.Fatal(err)
	}
	sv, err := l.LoadVersion(context.Background(), repository.VersionSpec{Name: "cls", Version: 1, Config: cfg, ModelDir: dir})
	if err == nil {
		_ = sv.Close(context.Background())
	}
	if err == nil || !strings.Contains(err.Error(), "must be a relative path inside the model directory") {
		t.Fatalf("err = %v", err)
	}
}
