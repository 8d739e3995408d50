//go:build cgo

package onnxruntime

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/nereid-project/nereid/backends/backendtest"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/autocomplete")

func TestTypeMapping(t *testing.T) {
	want := map[inference.DataType]int{
		inference.Bool: onnxBool, inference.Uint8: onnxUint8, inference.Uint16: onnxUint16,
		inference.Uint32: onnxUint32, inference.Uint64: onnxUint64, inference.Int8: onnxInt8,
		inference.Int16: onnxInt16, inference.Int32: onnxInt32, inference.Int64: onnxInt64,
		inference.FP16: onnxFloat16, inference.FP32: onnxFloat, inference.FP64: onnxDouble,
		inference.Bytes: onnxString, inference.BF16: onnxBFloat16,
	}
	for dt := inference.Bool; dt <= inference.BF16; dt++ {
		o, ok := toONNX(dt)
		if !ok || o != want[dt] {
			t.Errorf("toONNX(%s) = %d, %v; want %d", dt, o, ok, want[dt])
		}
		back, ok := dataTypeOf(o)
		if !ok || back != dt {
			t.Errorf("dataTypeOf(%d) = %s, %v; want %s", o, back, ok, dt)
		}
	}
	if _, ok := toONNX(inference.Invalid); ok {
		t.Error("toONNX(INVALID) is ok")
	}
	// complex64, complex128, float8 and int4 types have no protocol type.
	for _, o := range []int{onnxUndefined, 14, 15, 17, 18, 19, 20, 21, 22, 23} {
		if dt, ok := dataTypeOf(o); ok {
			t.Errorf("dataTypeOf(%s) = %s, want unsupported", onnxTypeName(o), dt)
		}
	}
	if got := onnxTypeName(14); got != "tensor(complex64)" {
		t.Errorf("onnxTypeName(14) = %q", got)
	}
}

// TestAutoComplete runs the cases of testdata/autocomplete: each has
// case.txt (the model and default max batch size), optionally
// config.pbtxt (the partial configuration), and want.pbtxt or want.err.
// go test -update rewrites the want files.
func TestAutoComplete(t *testing.T) {
	b := testBackend(t)
	dirs, err := filepath.Glob(filepath.Join("testdata", "autocomplete", "*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			var modelFile string
			defaultMax := DefaultMaxBatchSize
			caseText, err := os.ReadFile(filepath.Join(dir, "case.txt"))
			if err != nil {
				t.Fatal(err)
			}
			for line := range strings.Lines(string(caseText)) {
				k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
				switch k {
				case "model":
					modelFile = filepath.Join(dir, v)
				case "default-max-batch-size":
					if _, err := fmt.Sscan(v, &defaultMax); err != nil {
						t.Fatal(err)
					}
				}
			}
			cfg := &inferencepb.ModelConfig{Name: filepath.Base(dir)}
			if data, err := os.ReadFile(filepath.Join(dir, "config.pbtxt")); err == nil {
				cfg = parseConfig(t, string(data))
			}
			cb := New(b.options())
			opts := cb.options()
			opts.DefaultMaxBatchSize = defaultMax
			cb.Configure(opts)
			err = cb.completeFrom(modelFile, cfg)

			wantPB, wantErr := filepath.Join(dir, "want.pbtxt"), filepath.Join(dir, "want.err")
			if *update {
				os.Remove(wantPB)
				os.Remove(wantErr)
				if err != nil {
					writeFile(t, wantErr, err.Error()+"\n")
				} else {
					out, merr := prototext.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(cfg)
					if merr != nil {
						t.Fatal(merr)
					}
					writeFile(t, wantPB, string(out))
				}
				return
			}
			if data, rerr := os.ReadFile(wantErr); rerr == nil {
				if err == nil || err.Error() != strings.TrimSpace(string(data)) {
					t.Fatalf("error = %v\nwant %s", err, data)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := parseConfig(t, string(must(os.ReadFile(wantPB))))
			if !proto.Equal(cfg, want) {
				t.Errorf("completed config:\n%s\nwant:\n%s", prototext.Format(cfg), prototext.Format(want))
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCompleteFromRepositoryLayout(t *testing.T) {
	b := testBackend(t)
	dir := modelDirWith(t, "batch_only")
	// A higher version without the model file is passed over.
	if err := os.MkdirAll(filepath.Join(dir, "7"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := &inferencepb.ModelConfig{Name: "m", Backend: Name}
	if err := b.Complete(context.Background(), dir, cfg, true); err != nil {
		t.Fatal(err)
	}
	if cfg.GetMaxBatchSize() != DefaultMaxBatchSize || len(cfg.GetInput()) != 1 || len(cfg.GetOutput()) != 1 {
		t.Fatalf("completed: %v", cfg)
	}
	// Auto-complete off: nothing changes.
	cfg = &inferencepb.ModelConfig{Name: "m", Backend: Name}
	if err := b.Complete(context.Background(), dir, cfg, false); err != nil || len(cfg.GetInput()) != 0 {
		t.Fatalf("with auto-complete off: %v, %v", err, cfg)
	}
	// No model file anywhere.
	cfg = &inferencepb.ModelConfig{Name: "m", Backend: Name}
	err := b.Complete(context.Background(), t.TempDir(), cfg, true)
	if err == nil || !strings.Contains(err.Error(), "model.onnx") {
		t.Fatalf("error = %v", err)
	}
}

func TestSimple(t *testing.T) {
	b := testBackend(t)
	_, inst := loadModel(t, b, filepath.Join(examples, "simple"), exampleConfig(t, "simple"))
	in0 := make([]int32, 16)
	in1 := make([]int32, 16)
	for i := range in0 {
		in0[i], in1[i] = int32(i), 1
	}
	req := request(
		inference.Tensor{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 16}, Data: backendtest.Int32s(in0...)},
		inference.Tensor{Name: "INPUT1", DataType: inference.Int32, Shape: []int64{1, 16}, Data: backendtest.Int32s(in1...)},
	)
	resps, err := inst.Execute(context.Background(), []*inference.Request{req})
	if err != nil {
		t.Fatal(err)
	}
	sum, diff := resps[0].Output("OUTPUT0"), resps[0].Output("OUTPUT1")
	if sum == nil || diff == nil || !slices.Equal(sum.Shape, []int64{1, 16}) {
		t.Fatalf("outputs: %+v", resps[0].Outputs)
	}
	for i, v := range backendtest.ReadInt32s(sum.Data) {
		if v != in0[i]+in1[i] {
			t.Fatalf("OUTPUT0[%d] = %d", i, v)
		}
	}
	for i, v := range backendtest.ReadInt32s(diff.Data) {
		if v != in0[i]-in1[i] {
			t.Fatalf("OUTPUT1[%d] = %d", i, v)
		}
	}

	// Only the requested output comes back.
	req.Outputs = []inference.RequestedOutput{{Name: "OUTPUT1"}}
	resps, err = inst.Execute(context.Background(), []*inference.Request{req})
	if err != nil || len(resps[0].Outputs) != 1 || resps[0].Outputs[0].Name != "OUTPUT1" {
		t.Fatalf("requested OUTPUT1: %v, %+v", err, resps)
	}
}

// TestBatchConcatenation runs three requests of batch 1, 2 and 3 as one
// batch of 6 and checks each gets its own rows.
func TestBatchConcatenation(t *testing.T) {
	b := testBackend(t)
	_, inst := loadModel(t, b, filepath.Join(examples, "simple"), exampleConfig(t, "simple"))
	var batch []*inference.Request
	for r, rows := range []int{1, 2, 3} {
		a := make([]int32, 16*rows)
		c := make([]int32, 16*rows)
		for i := range a {
			a[i], c[i] = int32(100*r+i), int32(r)
		}
		batch = append(batch, request(
			inference.Tensor{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{int64(rows), 16}, Data: backendtest.Int32s(a...)},
			inference.Tensor{Name: "INPUT1", DataType: inference.Int32, Shape: []int64{int64(rows), 16}, Data: backendtest.Int32s(c...)},
		))
	}
	resps, err := inst.Execute(context.Background(), batch)
	if err != nil {
		t.Fatal(err)
	}
	for r, resp := range resps {
		rows := r + 1
		sum := resp.Output("OUTPUT0")
		if !slices.Equal(sum.Shape, []int64{int64(rows), 16}) {
			t.Fatalf("request %d: shape %v", r, sum.Shape)
		}
		for i, v := range backendtest.ReadInt32s(sum.Data) {
			if want := int32(100*r+i) + int32(r); v != want {
				t.Fatalf("request %d: OUTPUT0[%d] = %d, want %d", r, i, v, want)
			}
		}
	}
	// Outputs do not alias the inputs.
	if &resps[0].Outputs[0].Data[0] == &batch[0].Inputs[0].Data[0] {
		t.Fatal("output aliases input")
	}
}

// TestAllTypes echoes every protocol type through an ONNX Identity, with a
// variable dimension so that ONNX Runtime allocates every output, and as
// a batch of two requests with different shapes (run one by one).
func TestAllTypes(t *testing.T) {
	b := testBackend(t)
	dir := modelDirWith(t, "all_types")
	cfg := &inferencepb.ModelConfig{Name: "all_types", Backend: Name}
	if err := b.Complete(context.Background(), dir, cfg, true); err != nil {
		t.Fatal(err)
	}
	_, inst := loadModel(t, b, dir, cfg)
	samples := map[inference.DataType][]byte{
		inference.Bytes: bytesElems("hello", "", "nul\x00inside", "\xff\xfe"),
	}
	mk := func(rows int64) *inference.Request {
		req := &inference.Request{BatchSize: int(rows)}
		for i, in := range cfg.GetInput() {
			dt := inference.DataType(in.GetDataType())
			data := samples[dt]
			n := int64(4)
			if data == nil {
				data = make([]byte, int(n)*dt.Size())
				for k := range data {
					data[k] = byte(k*7 + i)
				}
				if dt == inference.Bool {
					for k := range data {
						data[k] &= 1
					}
				}
			}
			shape := []int64{1, n}
			if rows == 2 {
				shape = []int64{2, n / 2}
			}
			req.Inputs = append(req.Inputs, inference.Tensor{Name: in.GetName(), DataType: dt, Shape: shape, Data: data})
		}
		return req
	}
	batch := []*inference.Request{mk(1), mk(2)}
	resps, err := inst.Execute(context.Background(), batch)
	if err != nil {
		t.Fatal(err)
	}
	for r, req := range batch {
		for i, in := range req.Inputs {
			out := resps[r].Output(fmt.Sprintf("OUTPUT%d", i))
			if out == nil || out.DataType != in.DataType || !slices.Equal(out.Shape, in.Shape) || !bytes.Equal(out.Data, in.Data) {
				t.Errorf("request %d %s: got %+v, want %+v", r, in.DataType, out, in)
			}
		}
	}
}

func TestSimpleString(t *testing.T) {
	b := testBackend(t)
	_, inst := loadModel(t, b, filepath.Join(examples, "simple_string"), exampleConfig(t, "simple_string"))
	a, c := make([]string, 16), make([]string, 16)
	for i := range a {
		a[i], c[i] = fmt.Sprint(i), fmt.Sprint(-2*i)
	}
	req := request(
		inference.Tensor{Name: "INPUT0", DataType: inference.Bytes, Shape: []int64{1, 16}, Data: bytesElems(a...)},
		inference.Tensor{Name: "INPUT1", DataType: inference.Bytes, Shape: []int64{1, 16}, Data: bytesElems(c...)},
	)
	resps, err := inst.Execute(context.Background(), []*inference.Request{req})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := inference.SplitBytes("OUTPUT0", resps[0].Output("OUTPUT0").Data)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range sum {
		if want := fmt.Sprint(-i); string(s) != want {
			t.Fatalf("OUTPUT0[%d] = %q, want %q", i, s, want)
		}
	}

	// A string that is no number fails at run time with ONNX Runtime's
	// reason; the next request still works.
	c[3] = "three"
	bad := request(req.Inputs[0], inference.Tensor{Name: "INPUT1", DataType: inference.Bytes, Shape: []int64{1, 16}, Data: bytesElems(c...)})
	_, err = inst.Execute(context.Background(), []*inference.Request{bad})
	if err == nil || !strings.Contains(err.Error(), "simple_string") {
		t.Fatalf("bad input: error %v", err)
	}
	if _, err := inst.Execute(context.Background(), []*inference.Request{req}); err != nil {
		t.Fatalf("after a failed run: %v", err)
	}
}

func TestReshapeBatchOnly(t *testing.T) {
	b := testBackend(t)
	dir := modelDirWith(t, "batch_only")
	cfg := &inferencepb.ModelConfig{Name: "batch_only", Backend: Name}
	if err := b.Complete(context.Background(), dir, cfg, true); err != nil {
		t.Fatal(err)
	}
	_, inst := loadModel(t, b, dir, cfg)
	req := request(inference.Tensor{Name: "INPUT0", DataType: inference.FP32, Shape: []int64{3, 1}, Data: backendtest.Float32s(1, 2, 3)})
	resps, err := inst.Execute(context.Background(), []*inference.Request{req})
	if err != nil {
		t.Fatal(err)
	}
	out := resps[0].Output("OUTPUT0")
	if !slices.Equal(out.Shape, []int64{3, 1}) || !bytes.Equal(out.Data, req.Inputs[0].Data) {
		t.Fatalf("output %+v", out)
	}
}

func TestLoadErrors(t *testing.T) {
	b := testBackend(t)
	simple := exampleConfig(t, "simple")
	cases := []struct {
		name string
		edit func(*inferencepb.ModelConfig)
		want string
	}{
		{"unknown input", func(c *inferencepb.ModelConfig) { c.Input[1].Name = "INPUTX" },
			"unexpected inference input 'INPUTX', allowed inputs are: INPUT0, INPUT1"},
		{"missing input", func(c *inferencepb.ModelConfig) { c.Input = c.Input[:1] },
			"unable to load model 'simple', configuration expects 1 inputs, model provides 2"},
		{"unknown output", func(c *inferencepb.ModelConfig) { c.Output[0].Name = "SUM" },
			"unexpected inference output 'SUM', allowed outputs are: OUTPUT0, OUTPUT1"},
		{"wrong type", func(c *inferencepb.ModelConfig) { c.Input[0].DataType = inferencepb.DataType_TYPE_FP32 },
			"unable to load model 'simple', configuration expects datatype TYPE_FP32 for input 'INPUT0', model provides TYPE_INT32"},
		{"wrong dims", func(c *inferencepb.ModelConfig) { c.Output[1].Dims = []int64{8} },
			"model 'simple', tensor 'OUTPUT1': the model expects 2 dimensions (shape [-1,16]) but the model configuration specifies 2 dimensions (an initial batch dimension because max_batch_size > 0 followed by the explicit tensor shape, making complete shape [-1,8])"},
		{"no batching", func(c *inferencepb.ModelConfig) { c.MaxBatchSize = 0 },
			"model 'simple', tensor 'INPUT0': the model expects 2 dimensions (shape [-1,16]) but the model configuration specifies 1 dimensions (shape [16])"},
		{"bad parameter", func(c *inferencepb.ModelConfig) {
			c.Parameters = map[string]*inferencepb.ModelParameter{"intra_op_thread_count": {StringValue: "many"}}
		}, `model 'simple': parameter intra_op_thread_count: "many" is not a non-negative integer`},
		{"gpu", func(c *inferencepb.ModelConfig) {
			c.InstanceGroup = []*inferencepb.ModelInstanceGroup{{Kind: inferencepb.ModelInstanceGroup_KIND_GPU, Count: 1}}
		}, "KIND_GPU needs ONNX Runtime's CUDA execution provider"},
		{"missing file", func(c *inferencepb.ModelConfig) { c.DefaultModelFilename = "other.onnx" },
			"unable to find '../../model_repo_examples/simple/1/other.onnx' for model 'simple'"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := proto.Clone(simple).(*inferencepb.ModelConfig)
			tc.edit(cfg)
			_, _, err := tryLoad(b, filepath.Join(examples, "simple"), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestCorruptModel(t *testing.T) {
	b := testBackend(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "1", "model.onnx"), "this is not a protobuf")
	cfg := exampleConfig(t, "simple")
	_, _, err := tryLoad(b, dir, cfg)
	if err == nil || !strings.Contains(err.Error(), "model 'simple'") || !strings.Contains(err.Error(), "model.onnx") {
		t.Fatalf("error = %v", err)
	}
	if inference.CodeOf(err) != inference.CodeInvalidArg {
		t.Errorf("code %v", inference.CodeOf(err))
	}
	// The same in auto-complete.
	err = b.Complete(context.Background(), dir, &inferencepb.ModelConfig{Name: "corrupt", Backend: Name}, true)
	if err == nil || !strings.Contains(err.Error(), "'corrupt'") {
		t.Fatalf("auto-complete error = %v", err)
	}
}

func TestUnsupportedType(t *testing.T) {
	b := testBackend(t)
	dir := modelDirWith(t, "complex")
	cfg := parseConfig(t, `name: "complex" backend: "onnxruntime" max_batch_size: 4
		input { name: "INPUT0" data_type: TYPE_FP32 dims: [4] }
		output { name: "OUTPUT0" data_type: TYPE_FP32 dims: [4] }`)
	_, _, err := tryLoad(b, dir, cfg)
	if err == nil || !strings.Contains(err.Error(), "tensor(complex64)") {
		t.Fatalf("error = %v", err)
	}
}

// TestModelFilenameStaysInside: a path from a configuration stays inside
// the version directory. (Warm-up is the loader's: server/warmup_backends_test.go.)
func TestModelFilenameStaysInside(t *testing.T) {
	b := testBackend(t)
	dir := t.TempDir()
	src := filepath.Join(examples, "simple", "1", "model.onnx")
	if err := os.MkdirAll(filepath.Join(dir, "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "1", "model.onnx"), string(must(os.ReadFile(src))))
	cfg := exampleConfig(t, "simple")
	cfg.DefaultModelFilename = "../../model.onnx"
	if _, _, err := tryLoad(b, dir, cfg); err == nil || !strings.Contains(err.Error(), "inside the version directory") {
		t.Fatalf("escaping default_model_filename: error = %v", err)
	}
}

func TestCancelledBeforeRun(t *testing.T) {
	b := testBackend(t)
	_, inst := loadModel(t, b, filepath.Join(examples, "identity_fp32"), exampleConfig(t, "identity_fp32"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := request(inference.Tensor{Name: "INPUT0", DataType: inference.FP32, Shape: []int64{1, 2}, Data: backendtest.Float32s(1, 2)})
	if _, err := inst.Execute(ctx, []*inference.Request{req}); inference.CodeOf(err) != inference.CodeCancelled {
		t.Fatalf("error = %v", err)
	}
	if _, err := inst.Execute(context.Background(), []*inference.Request{req}); err != nil {
		t.Fatal(err)
	}
}

func TestLibraryMissing(t *testing.T) {
	testBackend(t) // the library is loaded in this process: not found still wins
	b := New(Options{LibraryPaths: []string{"/nonexistent/libonnxruntime.so.1"}, LibrarySource: "a test", Logger: zerolog.Nop()})
	_, _, err := tryLoad(b, filepath.Join(examples, "simple"), exampleConfig(t, "simple"))
	if err == nil || !strings.Contains(err.Error(), "ONNX Runtime library not found") || !strings.Contains(err.Error(), "make ort") ||
		!strings.Contains(err.Error(), "--backend-config=onnxruntime,library=") {
		t.Fatalf("error = %v", err)
	}
	if inference.CodeOf(err) != inference.CodeUnavailable {
		t.Errorf("code %v", inference.CodeOf(err))
	}
}

func TestSimpleInt8Wraps(t *testing.T) {
	b := testBackend(t)
	_, inst := loadModel(t, b, filepath.Join(examples, "simple_int8"), exampleConfig(t, "simple_int8"))
	a, c := make([]byte, 16), make([]byte, 16)
	for i := range a {
		a[i], c[i] = byte(int8(120)), byte(int8(i))
	}
	req := request(
		inference.Tensor{Name: "INPUT0", DataType: inference.Int8, Shape: []int64{1, 16}, Data: a},
		inference.Tensor{Name: "INPUT1", DataType: inference.Int8, Shape: []int64{1, 16}, Data: c},
	)
	resps, err := inst.Execute(context.Background(), []*inference.Request{req})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range resps[0].Output("OUTPUT0").Data {
		if want := int8(120) + int8(i); int8(v) != want {
			t.Fatalf("OUTPUT0[%d] = %d, want %d", i, int8(v), want)
		}
	}
}

func TestMLP(t *testing.T) {
	b := testBackend(t)
	_, inst := loadModel(t, b, filepath.Join(examples, "mlp_fp32"), exampleConfig(t, "mlp_fp32"))
	in := make([]float32, 5*64)
	for i := range in {
		in[i] = float32(i%7) / 7
	}
	req := request(inference.Tensor{Name: "INPUT0", DataType: inference.FP32, Shape: []int64{5, 64}, Data: backendtest.Float32s(in...)})
	resps, err := inst.Execute(context.Background(), []*inference.Request{req})
	if err != nil {
		t.Fatal(err)
	}
	out := resps[0].Output("OUTPUT0")
	if !slices.Equal(out.Shape, []int64{5, 16}) || len(out.Data) != 5*16*4 {
		t.Fatalf("output %v, %d bytes", out.Shape, len(out.Data))
	}
}

// TestCancelDuringRuns cancels requests at random points around their runs
// and checks that no cancellation leaks into a later run.
func TestCancelDuringRuns(t *testing.T) {
	b := testBackend(t)
	_, inst := loadModel(t, b, filepath.Join(examples, "mlp_fp32"), exampleConfig(t, "mlp_fp32"))
	in := backendtest.Float32s(make([]float32, 64*64)...)
	req := request(inference.Tensor{Name: "INPUT0", DataType: inference.FP32, Shape: []int64{64, 64}, Data: in})
	for k := range 100 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range k % 10 * 50 {
				runtime.Gosched()
			}
			cancel()
		}()
		_, err := inst.Execute(ctx, []*inference.Request{req})
		if err != nil && inference.CodeOf(err) != inference.CodeCancelled {
			t.Fatalf("run %d: %v", k, err)
		}
		<-done
		if _, err := inst.Execute(context.Background(), []*inference.Request{req}); err != nil {
			t.Fatalf("run %d after a cancellation: %v", k, err)
		}
	}
}

// TestSequenceControlsAndState loads a model whose START control and
// implicit state the sequence batcher supplies as inputs, and checks that
// the state output comes back even when the client asked only for OUTPUT0.
func TestSequenceControlsAndState(t *testing.T) {
	b := testBackend(t)
	dir := modelDirWith(t, "sequence_acc")
	cfg := parseConfig(t, `name: "sequence_acc" backend: "onnxruntime" max_batch_size: 4
		input { name: "INPUT0" data_type: TYPE_INT32 dims: [1] }
		output { name: "OUTPUT0" data_type: TYPE_INT32 dims: [1] }
		sequence_batching {
			control_input { name: "START" control { kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] } }
			state { input_name: "STATE_IN" output_name: "STATE_OUT" data_type: TYPE_INT32 dims: [1] }
		}
		model_warmup { name: "w" batch_size: 2 inputs { key: "INPUT0" value { data_type: TYPE_INT32 dims: [1] zero_data: true } } }`)
	_, inst := loadModel(t, b, dir, cfg)
	step := func(x, start, state int32) (int32, int32) {
		req := request(
			inference.Tensor{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 1}, Data: backendtest.Int32s(x)},
			inference.Tensor{Name: "START", DataType: inference.Int32, Shape: []int64{1, 1}, Data: backendtest.Int32s(start)},
			inference.Tensor{Name: "STATE_IN", DataType: inference.Int32, Shape: []int64{1, 1}, Data: backendtest.Int32s(state)},
		)
		req.Outputs = []inference.RequestedOutput{{Name: "OUTPUT0"}}
		resps, err := inst.Execute(context.Background(), []*inference.Request{req})
		if err != nil {
			t.Fatal(err)
		}
		out, st := resps[0].Output("OUTPUT0"), resps[0].Output("STATE_OUT")
		if out == nil || st == nil {
			t.Fatalf("outputs %+v", resps[0].Outputs)
		}
		return backendtest.ReadInt32s(out.Data)[0], backendtest.ReadInt32s(st.Data)[0]
	}
	acc, state := step(5, 1, 99) // the start ignores the incoming state
	if acc != 5 || state != 5 {
		t.Fatalf("start: %d, %d", acc, state)
	}
	if acc, _ = step(3, 0, state); acc != 8 {
		t.Fatalf("second step: %d", acc)
	}

	// Without the sequence batching section the model's extra inputs are
	// not configured.
	cfg.SchedulingChoice = nil
	_, _, err := tryLoad(b, dir, cfg)
	if err == nil || !strings.Contains(err.Error(), "configuration expects 1 inputs, model provides 3") {
		t.Fatalf("error = %v", err)
	}
}

// TestOutputShapeMemory checks that an output of open size is written
// straight into a response buffer once its shape for the input shapes is
// known, and that a shape that depends on the data falls back to ONNX
// Runtime's allocation and is not guessed again.
func TestOutputShapeMemory(t *testing.T) {
	b := testBackend(t)
	// An output whose dimensions have names of no input: its shape is
	// learned from the first run.
	dir := modelDirWith(t, "transpose")
	cfg := parseConfig(t, `name: "transpose" backend: "onnxruntime"
		input { name: "INPUT0" data_type: TYPE_FP32 dims: [-1, -1] }
		output { name: "OUTPUT0" data_type: TYPE_FP32 dims: [-1, -1] }`)
	_, tr := loadModel(t, b, dir, cfg)
	tr.m.outputs[0].predict = nil // as if the names were not the inputs'
	req := &inference.Request{BatchSize: 1, Inputs: []inference.Tensor{{Name: "INPUT0", DataType: inference.FP32, Shape: []int64{2, 3}, Data: backendtest.Float32s(1, 2, 3, 4, 5, 6)}}}
	for range 3 {
		resps, err := tr.Execute(context.Background(), []*inference.Request{req})
		if err != nil {
			t.Fatal(err)
		}
		if out := resps[0].Output("OUTPUT0"); !bytes.Equal(out.Data, backendtest.Float32s(1, 4, 2, 5, 3, 6)) || !slices.Equal(out.Shape, []int64{3, 2}) {
			t.Fatalf("output %+v", out)
		}
	}
	if len(tr.outShapes) != 1 || tr.dynamic[0] || tr.copied != 1 {
		t.Fatalf("shape memory %v, dynamic %v, %d outputs copied (want the first run's only)", tr.outShapes, tr.dynamic, tr.copied)
	}

	dir = modelDirWith(t, "nonzero")
	cfg = parseConfig(t, `name: "nonzero" backend: "onnxruntime"
		input { name: "INPUT0" data_type: TYPE_FP32 dims: [-1] }
		output { name: "OUTPUT0" data_type: TYPE_INT64 dims: [1, -1] }`)
	_, nz := loadModel(t, b, dir, cfg)
	for k, in := range [][]float32{{1, 0, 1}, {1, 1, 1}, {0, 0, 5}, {0, 0, 0}} {
		req := &inference.Request{BatchSize: 1, Inputs: []inference.Tensor{{Name: "INPUT0", DataType: inference.FP32, Shape: []int64{3}, Data: backendtest.Float32s(in...)}}}
		resps, err := nz.Execute(context.Background(), []*inference.Request{req})
		if err != nil {
			t.Fatalf("run %d: %v", k, err)
		}
		var want int64
		for _, v := range in {
			if v != 0 {
				want++
			}
		}
		if out := resps[0].Output("OUTPUT0"); !slices.Equal(out.Shape, []int64{1, want}) || len(out.Data) != int(8*want) {
			t.Fatalf("run %d: output %+v", k, out)
		}
	}
	if !nz.dynamic[0] {
		t.Fatal("the NonZero output is not marked data-dependent")
	}
}

// TestOutputShapePrediction checks that an output whose open dimensions
// the model names after input dimensions is written straight into a
// response buffer from the first run, batch dimension included, and that
// a model whose names lie is served all the same.
func TestOutputShapePrediction(t *testing.T) {
	b := testBackend(t)
	type run struct {
		shape, oshape []int64
		in, out       []float32
	}
	transpose := parseConfig(t, `name: "transpose" backend: "onnxruntime"
		input { name: "INPUT0" data_type: TYPE_FP32 dims: [-1, -1] }
		output { name: "OUTPUT0" data_type: TYPE_FP32 dims: [-1, -1] }`)
	_, tr := loadModel(t, b, modelDirWith(t, "transpose"), transpose)
	_, id := loadModel(t, b, filepath.Join(examples, "identity_fp32"), exampleConfig(t, "identity_fp32"))
	for _, c := range []struct {
		name string
		inst *instance
		runs []run
	}{
		{"transpose", tr, []run{
			{[]int64{2, 3}, []int64{3, 2}, []float32{1, 2, 3, 4, 5, 6}, []float32{1, 4, 2, 5, 3, 6}},
			{[]int64{1, 2}, []int64{2, 1}, []float32{7, 8}, []float32{7, 8}},
			{[]int64{3, 1}, []int64{1, 3}, []float32{1, 2, 3}, []float32{1, 2, 3}},
		}},
		{"identity_fp32", id, []run{ // [batch, d0_0]
			{[]int64{2, 3}, []int64{2, 3}, []float32{1, 2, 3, 4, 5, 6}, []float32{1, 2, 3, 4, 5, 6}},
			{[]int64{1, 2}, []int64{1, 2}, []float32{7, 8}, []float32{7, 8}},
		}},
	} {
		if c.inst.m.outputs[0].predict == nil {
			t.Fatalf("%s: no prediction for OUTPUT0", c.name)
		}
		for k, r := range c.runs { // new input shapes every run
			req := &inference.Request{BatchSize: 1, Inputs: []inference.Tensor{{Name: "INPUT0", DataType: inference.FP32, Shape: r.shape, Data: backendtest.Float32s(r.in...)}}}
			if c.inst.m.maxBatch > 0 {
				req.BatchSize = int(r.shape[0])
			}
			resps, err := c.inst.Execute(context.Background(), []*inference.Request{req})
			if err != nil {
				t.Fatalf("%s run %d: %v", c.name, k, err)
			}
			if out := resps[0].Output("OUTPUT0"); !bytes.Equal(out.Data, backendtest.Float32s(r.out...)) || !slices.Equal(out.Shape, r.oshape) {
				t.Fatalf("%s run %d: output %+v", c.name, k, out)
			}
		}
		if c.inst.copied != 0 || len(c.inst.outShapes) != 0 || c.inst.dynamic[0] {
			t.Fatalf("%s: %d outputs copied, shape memory %v, dynamic %v", c.name, c.inst.copied, c.inst.outShapes, c.inst.dynamic)
		}
	}

	// The names say OUTPUT0 is as long as INPUT0; it is twice as long.
	_, lie := loadModel(t, b, modelDirWith(t, "mislabeled"), parseConfig(t, `name: "mislabeled" backend: "onnxruntime"
		input { name: "INPUT0" data_type: TYPE_FP32 dims: [-1] }
		output { name: "OUTPUT0" data_type: TYPE_FP32 dims: [-1] }`))
	if lie.m.outputs[0].predict == nil {
		t.Fatal("mislabeled: no prediction to refute")
	}
	for k, in := range [][]float32{{1, 2}, {3, 4, 5}, {6}} {
		req := &inference.Request{BatchSize: 1, Inputs: []inference.Tensor{{Name: "INPUT0", DataType: inference.FP32, Shape: []int64{int64(len(in))}, Data: backendtest.Float32s(in...)}}}
		resps, err := lie.Execute(context.Background(), []*inference.Request{req})
		if err != nil {
			t.Fatalf("mislabeled run %d: %v", k, err)
		}
		if out := resps[0].Output("OUTPUT0"); !bytes.Equal(out.Data, backendtest.Float32s(append(slices.Clone(in), in...)...)) || !slices.Equal(out.Shape, []int64{int64(2 * len(in))}) {
			t.Fatalf("mislabeled run %d: output %+v", k, out)
		}
	}
	if !lie.dynamic[0] || lie.copied != 3 {
		t.Fatalf("mislabeled: dynamic %v, %d outputs copied (want every run's)", lie.dynamic, lie.copied)
	}
}
