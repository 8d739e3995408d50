//go:build cgo

package tensorflow

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/encoding/prototext"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

func int32s(vs ...int32) []byte {
	out := make([]byte, 0, 4*len(vs))
	for _, v := range vs {
		out = binary.LittleEndian.AppendUint32(out, uint32(v))
	}
	return out
}

func readInt32s(b []byte) []int32 {
	out := make([]int32, len(b)/4)
	for i := range out {
		out[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// addSubRequest is a request of rows rows to an add/sub model: INPUT0 row
// r holds r*100 + k, INPUT1 holds 1.
func addSubRequest(dt inference.DataType, rows int) *inference.Request {
	var a, b []byte
	for r := range rows {
		for k := range 16 {
			x := int32(r*100 + k)
			switch dt {
			case inference.Int32:
				a, b = append(a, int32s(x)...), append(b, int32s(1)...)
			case inference.Int8:
				a, b = append(a, byte(int8(x))), append(b, 1)
			case inference.Bytes:
				a = inference.AppendBytesElement(a, []byte(fmt.Sprint(x)))
				b = inference.AppendBytesElement(b, []byte("1"))
			default:
				panic("no add/sub model of type " + dt.String())
			}
		}
	}
	shape := []int64{int64(rows), 16}
	return request(
		inference.Tensor{Name: "INPUT0", DataType: dt, Shape: shape, Data: a},
		inference.Tensor{Name: "INPUT1", DataType: dt, Shape: shape, Data: b},
	)
}

func TestSimpleSavedModelBatched(t *testing.T) {
	b := testBackend(t)
	inst := loadModel(t, b, filepath.Join(examples, "simple_savedmodel"), exampleConfig(t, "simple_savedmodel"))
	// Three requests of 1, 2 and 3 rows run as one session run and are
	// split back.
	batch := []*inference.Request{addSubRequest(inference.Int32, 1), addSubRequest(inference.Int32, 2), addSubRequest(inference.Int32, 3)}
	resps := execute(t, inst, batch...)
	for i, resp := range resps {
		rows := batch[i].BatchSize
		if len(resp.Outputs) != 2 {
			t.Fatalf("request %d: %d outputs", i, len(resp.Outputs))
		}
		for _, o := range resp.Outputs {
			if !slices.Equal(o.Shape, []int64{int64(rows), 16}) {
				t.Fatalf("request %d %s: shape %v", i, o.Name, o.Shape)
			}
			got := readInt32s(o.Data)
			for r := range rows {
				for k := range 16 {
					x := int32(r*100 + k)
					want := x + 1
					if o.Name == "OUTPUT1" {
						want = x - 1
					}
					if got[r*16+k] != want {
						t.Fatalf("request %d %s[%d,%d] = %d, want %d", i, o.Name, r, k, got[r*16+k], want)
					}
				}
			}
		}
	}
	// Output selection: one request asks for OUTPUT1 alone.
	req := addSubRequest(inference.Int32, 1)
	req.Outputs = []inference.RequestedOutput{{Name: "OUTPUT1"}}
	resps = execute(t, inst, req)
	if len(resps[0].Outputs) != 1 || resps[0].Outputs[0].Name != "OUTPUT1" {
		t.Fatalf("outputs %v", resps[0].Outputs)
	}
}

func TestAutoCompleteSavedModel(t *testing.T) {
	b := testBackend(t)
	cfg := exampleConfig(t, "simple_string_savedmodel")
	cfg.DefaultModelFilename = fileSavedModel
	if err := b.Complete(context.Background(), filepath.Join(examples, "simple_string_savedmodel"), cfg, true); err != nil {
		t.Fatal(err)
	}
	cfg.Name = ""
	got := prototext.Format(cfg)
	want := parseConfig(t, `platform: "tensorflow_savedmodel" default_model_filename: "model.savedmodel" max_batch_size: 4
		input [ { name: "INPUT0" data_type: TYPE_STRING dims: [ 16 ] }, { name: "INPUT1" data_type: TYPE_STRING dims: [ 16 ] } ]
		output [ { name: "OUTPUT0" data_type: TYPE_STRING dims: [ 16 ] }, { name: "OUTPUT1" data_type: TYPE_STRING dims: [ 16 ] } ]
		dynamic_batching { } instance_group [ { count: 1 kind: KIND_CPU } ]`)
	if got != prototext.Format(want) {
		t.Fatalf("auto-complete:\n%s\nwant\n%s", got, prototext.Format(want))
	}

	// A fixed first dimension cannot batch: max_batch_size stays 0.
	cfg = parseConfig(t, `name: "two" platform: "tensorflow_savedmodel" default_model_filename: "model.savedmodel"`)
	dir := modelDirWith(t, "two_signatures.savedmodel", fileSavedModel)
	if err := b.Complete(context.Background(), dir, cfg, true); err != nil {
		t.Fatal(err)
	}
	if cfg.GetMaxBatchSize() != 0 || len(cfg.GetInput()) != 1 || !slices.Equal(cfg.GetInput()[0].GetDims(), []int64{2, 3}) {
		t.Fatalf("fixed shape: %v", prototext.Format(cfg))
	}
	// A tag or signature the SavedModel lacks fails the completion.
	for param, want := range map[string]string{"TF_GRAPH_TAG": "no MetaGraph has the tag 'train'", "TF_SIGNATURE_DEF": "has no signature 'train'"} {
		cfg = parseConfig(t, `name: "two" platform: "tensorflow_savedmodel" default_model_filename: "model.savedmodel"
			parameters { key: "`+param+`" value { string_value: "train" } }`)
		if err := b.Complete(context.Background(), dir, cfg, true); err == nil || !strings.Contains(err.Error(), want) ||
			!strings.Contains(err.Error(), "model.savedmodel") {
			t.Errorf("%s: %v", param, err)
		}
	}
	// With auto-complete off, nothing is filled.
	cfg = parseConfig(t, `name: "off" platform: "tensorflow_savedmodel" default_model_filename: "model.savedmodel"`)
	if err := b.Complete(context.Background(), dir, cfg, false); err != nil || len(cfg.GetInput()) != 0 {
		t.Fatalf("auto-complete off: %v %v", err, cfg)
	}
}

func TestStringModel(t *testing.T) {
	b := testBackend(t)
	cfg := exampleConfig(t, "simple_string_savedmodel")
	inst := loadModel(t, b, filepath.Join(examples, "simple_string_savedmodel"), cfg)
	resps := execute(t, inst, addSubRequest(inference.Bytes, 1), addSubRequest(inference.Bytes, 2))
	elems, err := inference.SplitBytes("OUTPUT0", resps[1].Outputs[0].Data)
	if err != nil || len(elems) != 32 || string(elems[16]) != "101" || string(elems[31]) != "116" {
		t.Fatalf("sums %q %v", elems, err)
	}
	// An element that is not a number fails the run with TensorFlow's
	// words and INVALID_ARGUMENT; the instance keeps serving.
	bad := addSubRequest(inference.Bytes, 1)
	bad.Inputs[0].Data = inference.AppendBytesElement(bytesElems(slices.Repeat([]string{"1"}, 15)...), []byte("seven"))
	_, _, err = inst.ExecuteWithPhases(context.Background(), []*inference.Request{bad})
	if err == nil || inference.CodeOf(err) != inference.CodeInvalidArg || !strings.Contains(err.Error(), "seven") ||
		!strings.Contains(err.Error(), "tensorflow model 'simple_string_savedmodel'") {
		t.Fatalf("bad number: %v (code %v)", err, inference.CodeOf(err))
	}
	// A malformed BYTES element never reaches TensorFlow.
	bad = addSubRequest(inference.Bytes, 1)
	bad.Inputs[1].Data = bad.Inputs[1].Data[:len(bad.Inputs[1].Data)-1]
	_, _, err = inst.ExecuteWithPhases(context.Background(), []*inference.Request{bad})
	if err == nil || inference.CodeOf(err) != inference.CodeInvalidArg || !strings.Contains(err.Error(), "input 'INPUT1'") {
		t.Fatalf("malformed BYTES: %v", err)
	}
	execute(t, inst, addSubRequest(inference.Bytes, 1))
}

func TestGraphDef(t *testing.T) {
	b := testBackend(t)
	inst := loadModel(t, b, filepath.Join(examples, "simple_graphdef"), exampleConfig(t, "simple_graphdef"))
	resps := execute(t, inst, addSubRequest(inference.Int8, 2))
	sum := resps[0].Outputs[0].Data
	// Row 1 starts at 100: 100 + 15 + 1 = 116 wraps to -140+256... as INT8.
	if int8(sum[16]) != int8(101) || int8(sum[31]) != int8(116) {
		t.Fatalf("sums %v", sum)
	}
	if int8(sum[0]) != 1 {
		t.Fatalf("sums %v", sum)
	}
}

// TestRunTimeFailure: an op that fails on its data fails the batch; the
// next request is served.
func TestRunTimeFailure(t *testing.T) {
	b := testBackend(t)
	cfg := parseConfig(t, `name: "numerics" platform: "tensorflow_graphdef" max_batch_size: 4
		input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
		output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]`)
	inst := loadModel(t, b, modelDirWith(t, "check_numerics.graphdef", fileGraphDef), cfg)
	nan := []byte{0, 0, 0xc0, 0x7f}
	req := request(inference.Tensor{Name: "INPUT0", DataType: inference.FP32, Shape: []int64{1, 4}, Data: slices.Concat(nan, nan, nan, nan)})
	_, _, err := inst.ExecuteWithPhases(context.Background(), []*inference.Request{req})
	if err == nil || inference.CodeOf(err) != inference.CodeInvalidArg || !strings.Contains(err.Error(), "NaN") {
		t.Fatalf("NaN: %v (code %v)", err, inference.CodeOf(err))
	}
	ok := request(inference.Tensor{Name: "INPUT0", DataType: inference.FP32, Shape: []int64{1, 4}, Data: make([]byte, 16)})
	execute(t, inst, ok)
}

func TestSignatureParameter(t *testing.T) {
	b := testBackend(t)
	dir := modelDirWith(t, "two_signatures.savedmodel", fileSavedModel)
	base := `platform: "tensorflow_savedmodel" max_batch_size: 0
		input [ { name: "X" data_type: TYPE_FP32 dims: [ 2, 3 ] } ]
		output [ { name: "Y" data_type: TYPE_FP32 dims: [ 2, 3 ] } ]`
	one := []byte{0, 0, 0x80, 0x3f}
	x := request(inference.Tensor{Name: "X", DataType: inference.FP32, Shape: []int64{2, 3}, Data: slices.Repeat(one, 6)})
	x.BatchSize = 0
	for sig, want := range map[string]byte{"": 0x40, "negate": 0xbf} { // 2.0 and -1.0: the top bytes
		text := `name: "two" ` + base
		if sig != "" {
			text += ` parameters { key: "TF_SIGNATURE_DEF" value { string_value: "` + sig + `" } }`
		}
		inst := loadModel(t, b, dir, parseConfig(t, text))
		resps := execute(t, inst, x)
		if got := resps[0].Outputs[0].Data[3]; got != want {
			t.Errorf("signature %q: top byte %#x, want %#x", sig, got, want)
		}
	}
}

// TestLoadErrors: each bad model or configuration fails the load with a
// message naming the file, tensor and reason.
func TestLoadErrors(t *testing.T) {
	b := testBackend(t)
	simple := filepath.Join(examples, "simple_savedmodel")
	graphdef := filepath.Join(examples, "simple_graphdef")
	corrupt := t.TempDir()
	if err := os.MkdirAll(filepath.Join(corrupt, "1", fileSavedModel), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(corrupt, "1", fileSavedModel, "saved_model.pb"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	corruptGraph := t.TempDir()
	if err := os.MkdirAll(filepath.Join(corruptGraph, "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(corruptGraph, "1", fileGraphDef), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	simpleText := func(edit func(string) string) string {
		data, err := os.ReadFile(filepath.Join(simple, "config.pbtxt"))
		if err != nil {
			t.Fatal(err)
		}
		return edit(string(data))
	}
	graphText := func(edit func(string) string) string {
		data, err := os.ReadFile(filepath.Join(graphdef, "config.pbtxt"))
		if err != nil {
			t.Fatal(err)
		}
		return edit(string(data))
	}
	cases := []struct {
		name, dir, config string
		code              inference.Code
		want              []string
	}{
		{"missing signature", simple, simpleText(func(s string) string {
			return s + `parameters { key: "TF_SIGNATURE_DEF" value { string_value: "nope" } }`
		}), inference.CodeInvalidArg, []string{"model.savedmodel", "has no signature 'nope'", "serving_default"}},
		{"missing tag", simple, simpleText(func(s string) string {
			return s + `parameters { key: "TF_GRAPH_TAG" value { string_value: "train" } }`
		}), inference.CodeInvalidArg, []string{"model.savedmodel", "tag 'train'"}},
		{"datatype", simple, simpleText(func(s string) string {
			return strings.Replace(s, "TYPE_INT32", "TYPE_FP32", 1)
		}), inference.CodeInvalidArg, []string{"configuration expects datatype TYPE_FP32 for input 'INPUT0', model provides TYPE_INT32"}},
		{"dims", simple, simpleText(func(s string) string {
			return strings.Replace(s, "dims: [ 16 ]", "dims: [ 8 ]", 1)
		}), inference.CodeInvalidArg, []string{"tensor 'INPUT0'", "[-1,16]", "[-1,8]"}},
		{"unknown input", simple, simpleText(func(s string) string {
			return strings.Replace(s, `name: "INPUT1"`, `name: "INPUTX"`, 1)
		}), inference.CodeInvalidArg, []string{"unexpected inference input 'INPUTX'"}},
		{"corrupt SavedModel", corrupt, `name: "c" platform: "tensorflow_savedmodel" max_batch_size: 0
			input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ] output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]`,
			inference.CodeInvalidArg, []string{"unable to load the SavedModel", "model.savedmodel"}},
		{"corrupt GraphDef", corruptGraph, `name: "c" platform: "tensorflow_graphdef" max_batch_size: 0
			input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ] output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]`,
			inference.CodeInvalidArg, []string{"unable to load the GraphDef", "model.graphdef"}},
		{"GraphDef missing output", graphdef, graphText(func(s string) string {
			return strings.Replace(s, `name: "OUTPUT1"`, `name: "OUTPUT7"`, 1)
		}), inference.CodeInvalidArg, []string{"model.graphdef", "no tensor 'OUTPUT7'", "output"}},
		{"GraphDef input not a Placeholder", graphdef, graphText(func(s string) string {
			return strings.Replace(s, `name: "INPUT1"`, `name: "OUTPUT1"`, 1)
		}), inference.CodeInvalidArg, []string{"'OUTPUT1'", "not a Placeholder"}},
		{"GraphDef datatype", graphdef, graphText(func(s string) string {
			return strings.Replace(s, "TYPE_INT8", "TYPE_INT16", 1)
		}), inference.CodeInvalidArg, []string{"configuration expects datatype TYPE_INT16 for input 'INPUT0', model provides TYPE_INT8"}},
		{"missing model", t.TempDir(), `name: "m" platform: "tensorflow_graphdef" max_batch_size: 0
			input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ] output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]`,
			inference.CodeUnavailable, []string{"unable to find", "model.graphdef"}},
		{"bad thread count", simple, simpleText(func(s string) string {
			return s + `parameters { key: "TF_NUM_INTRA_THREADS" value { string_value: "many" } }`
		}), inference.CodeInvalidArg, []string{"TF_NUM_INTRA_THREADS"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, inst, err := tryLoad(b, c.dir, parseConfig(t, c.config))
			if err == nil {
				_ = inst.Close()
				_ = m.Close()
				t.Fatal("loaded")
			}
			if inference.CodeOf(err) != c.code {
				t.Errorf("code %v, want %v: %v", inference.CodeOf(err), c.code, err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestLibraryNotFound(t *testing.T) {
	b := New(Options{LibraryPaths: []string{"/nonexistent/libtensorflow_cc.so.2"}, LibrarySource: "a test", Logger: zerolog.Nop()})
	_, err := b.Load(context.Background(), backends.ModelSpec{Name: "m", Config: &inferencepb.ModelConfig{Name: "m"}})
	if err == nil || inference.CodeOf(err) != inference.CodeUnavailable || !strings.Contains(err.Error(), "run `make tf`") ||
		!strings.Contains(err.Error(), "TensorFlow library not found") {
		t.Fatalf("%v", err)
	}
}

// TestInstances: instances serve concurrently, each on its own session
// (their warm-up is the loader's: server/warmup_backends_test.go).
func TestInstances(t *testing.T) {
	b := testBackend(t)
	cfg := exampleConfig(t, "mlp_savedmodel")
	cfg.DefaultModelFilename = fileSavedModel
	dir := filepath.Join(examples, "mlp_savedmodel")
	bm, err := b.Load(context.Background(), backends.ModelSpec{Name: cfg.GetName(), ModelDir: dir, VersionDir: filepath.Join(dir, "1"), Config: cfg, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	m := bm.(*model)
	defer func() { _ = m.Close() }()
	var insts []*instance
	for k := range 3 {
		bi, err := m.NewInstance(context.Background(), backends.InstanceSpec{Name: fmt.Sprint("mlp_", k), Kind: inferencepb.ModelInstanceGroup_KIND_CPU})
		if err != nil {
			t.Fatal(err)
		}
		u, _ := backends.UnwrapUnary(bi)
		insts = append(insts, u.(*instance))
	}
	var wg sync.WaitGroup
	outs := make([][]byte, len(insts))
	for k, inst := range insts {
		wg.Go(func() {
			req := request(inference.Tensor{Name: "INPUT0", DataType: inference.FP32, Shape: []int64{2, 64}, Data: make([]byte, 2*64*4)})
			resps, _, err := inst.ExecuteWithPhases(context.Background(), []*inference.Request{req})
			if err != nil {
				t.Error(err)
				return
			}
			outs[k] = resps[0].Outputs[0].Data
		})
	}
	wg.Wait()
	for k := range outs {
		if !slices.Equal(outs[k], outs[0]) || len(outs[k]) != 2*16*4 {
			t.Fatalf("instance %d: %d bytes, differs", k, len(outs[k]))
		}
		if err := insts[k].Close(); err != nil {
			t.Error(err)
		}
	}
	// GPU instances are refused with a reason.
	if _, err := m.NewInstance(context.Background(), backends.InstanceSpec{Name: "gpu", Kind: inferencepb.ModelInstanceGroup_KIND_GPU}); err == nil ||
		inference.CodeOf(err) != inference.CodeUnsupported {
		t.Fatalf("KIND_GPU: %v", err)
	}
}

// TestSequenceControlsAndState: the sequence batcher's control and state
// tensors are signature inputs and outputs, supplied by the scheduler; the
// state output comes back whether asked for or not.
func TestSequenceControlsAndState(t *testing.T) {
	b := testBackend(t)
	cfg := parseConfig(t, `name: "seq" platform: "tensorflow_savedmodel" max_batch_size: 4
		input { name: "INPUT0" data_type: TYPE_INT32 dims: [1] }
		output { name: "OUTPUT0" data_type: TYPE_INT32 dims: [1] }
		sequence_batching {
			control_input { name: "START" control { kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] } }
			state { input_name: "STATE_IN" output_name: "STATE_OUT" data_type: TYPE_INT32 dims: [1] }
		}
		model_warmup { name: "w" batch_size: 2 inputs { key: "INPUT0" value { data_type: TYPE_INT32 dims: [1] zero_data: true } } }`)
	inst := loadModel(t, b, modelDirWith(t, "sequence_acc.savedmodel", fileSavedModel), cfg)
	step := func(x, start, state int32) (int32, int32) {
		req := request(
			inference.Tensor{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 1}, Data: int32s(x)},
			inference.Tensor{Name: "START", DataType: inference.Int32, Shape: []int64{1, 1}, Data: int32s(start)},
			inference.Tensor{Name: "STATE_IN", DataType: inference.Int32, Shape: []int64{1, 1}, Data: int32s(state)},
		)
		req.Outputs = []inference.RequestedOutput{{Name: "OUTPUT0"}}
		resps := execute(t, inst, req)
		out, st := resps[0].Output("OUTPUT0"), resps[0].Output("STATE_OUT")
		if out == nil || st == nil {
			t.Fatalf("outputs %+v", resps[0].Outputs)
		}
		return readInt32s(out.Data)[0], readInt32s(st.Data)[0]
	}
	acc, state := step(5, 1, 99) // the start ignores the incoming state
	if acc != 5 || state != 5 {
		t.Fatalf("start: %d, %d", acc, state)
	}
	if acc, _ = step(3, 0, state); acc != 8 {
		t.Fatalf("step: %d", acc)
	}
}
