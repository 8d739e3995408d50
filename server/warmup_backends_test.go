//go:build cgo

package server

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/backends/onnxruntime"
	"github.com/nereid-project/nereid/backends/python"
	"github.com/nereid-project/nereid/backends/tensorflow"
	"github.com/nereid-project/nereid/inference"
)

// The framework backends, registered here as cmd/nereid registers them,
// with the libraries and interpreter of the checkout: a test whose
// library is missing is skipped.
var (
	ortLibrary = libraryPath("NEREID_ORT_LIBRARY", "../.ort/lib/libonnxruntime.so.1")
	tfLibrary  = libraryPath("NEREID_TF_LIBRARY", "../.tf/lib/libtensorflow_cc.so.2")
	pyExe      = libraryPath("NEREID_TEST_PYTHON", "../.venv/bin/python")
)

func libraryPath(env, rel string) string {
	if p := os.Getenv(env); p != "" {
		return p
	}
	p, _ := filepath.Abs(rel)
	return p
}

func init() {
	backends.Register(onnxruntime.Name, onnxruntime.New(onnxruntime.Options{LibraryPaths: []string{ortLibrary}, LibrarySource: "the test", Logger: zerolog.Nop()}))
	backends.Register(tensorflow.Name, tensorflow.New(tensorflow.Options{LibraryPaths: []string{tfLibrary}, LibrarySource: "the test", DefaultMaxBatchSize: -1, Logger: zerolog.Nop()}))
	backends.Register(python.Name, python.New(python.Options{Python: pyExe, CacheDir: filepath.Join(os.TempDir(), "nereid-server-test-python"), StubTimeout: 10 * time.Second, Logger: zerolog.Nop()}))
}

func need(t *testing.T, path, what string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s not found at %s", what, path)
	}
}

// copyModel copies model_repo_examples/<name> into a temporary model
// directory and returns it.
func copyModel(t *testing.T, name string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), name)
	if err := os.CopyFS(dst, os.DirFS(filepath.Join("..", "model_repo_examples", name))); err != nil {
		t.Fatal(err)
	}
	return dst
}

// exampleConfig is an example's config.pbtxt text with an instance group
// named after the model and extra text appended.
func exampleConfig(t *testing.T, dir, extra string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "config.pbtxt"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n" + extra
}

// TestWarmupONNXRuntime: the loader warms every instance of an ONNX model,
// and a sequence model with its controls and state left to the loader.
func TestWarmupONNXRuntime(t *testing.T) {
	need(t, ortLibrary, "the ONNX Runtime library (make ort)")
	l, log := warmLoader()
	dir := copyModel(t, "simple")
	writeWarmupFile(t, dir, "ones", int32s(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1))
	if _, err := loadText(t, l, dir, exampleConfig(t, dir, `instance_group [ { name: "simple" count: 2 kind: KIND_CPU } ]
		model_warmup [ { name: "mixed" batch_size: 3 count: 2 inputs [
			{ key: "INPUT0" value { data_type: TYPE_INT32 dims: [ 16 ] random_data: true } },
			{ key: "INPUT1" value { data_type: TYPE_INT32 dims: [ 16 ] input_data_file: "ones" } } ] } ]`)); err != nil {
		t.Fatal(err)
	}
	got := log.warmedUp(t)
	for _, inst := range []string{"simple_0", "simple_1"} {
		if w := got[inst]; w.Executions != 2 || w.Responses != 6 {
			t.Errorf("%s: %+v", inst, w)
		}
	}

	// A sample whose file is short is refused before any session opens.
	writeWarmupFile(t, dir, "ones", []byte("short"))
	_, err := loadText(t, l, dir, exampleConfig(t, dir, `instance_group [ { name: "simple" kind: KIND_CPU } ]
		model_warmup [ { name: "short" batch_size: 1 inputs [
			{ key: "INPUT0" value { data_type: TYPE_INT32 dims: [ 16 ] zero_data: true } },
			{ key: "INPUT1" value { data_type: TYPE_INT32 dims: [ 16 ] input_data_file: "ones" } } ] } ]`))
	if err == nil || !strings.Contains(err.Error(), "model 'simple' warm-up sample 'short': input 'INPUT1'") {
		t.Fatalf("%v", err)
	}

	seq := copyModel(t, "sequence_accumulator")
	if _, err := loadText(t, l, seq, exampleConfig(t, seq, `model_warmup [ { name: "seq" batch_size: 4 inputs { key: "INPUT" value { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true } } } ]`)); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, w := range log.warmedUp(t) {
		if w.Model == "sequence_accumulator" {
			n++
			if w.Responses != 4 {
				t.Errorf("sequence model: %+v", w)
			}
		}
	}
	if n != 1 {
		t.Errorf("sequence model: %d instances warmed up", n)
	}
}

// TestWarmupTensorFlow: the loader warms a SavedModel's instances, and an
// op that fails at run time on a sample fails the load, naming it.
func TestWarmupTensorFlow(t *testing.T) {
	need(t, tfLibrary, "the TensorFlow library (make tf)")
	l, log := warmLoader()
	dir := copyModel(t, "mlp_savedmodel")
	if _, err := loadText(t, l, dir, exampleConfig(t, dir, `instance_group [ { name: "mlp" count: 2 kind: KIND_CPU } ]`)); err != nil {
		t.Fatal(err)
	}
	got := log.warmedUp(t)
	if got["mlp_0"].Responses != 1 || got["mlp_1"].Responses != 1 {
		t.Errorf("%+v", got)
	}

	// CheckNumerics fails on a NaN: a run-time failure of the sample.
	gd := filepath.Join(t.TempDir(), "numerics")
	if err := os.MkdirAll(filepath.Join(gd, "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join("..", "backends", "tensorflow", "testdata", "models", "check_numerics.graphdef"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(gd, "1", "model.graphdef"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	nan := math.Float32bits(float32(math.NaN()))
	writeWarmupFile(t, gd, "nan", int32s(0, 0, int32(nan), 0))
	_, err = loadText(t, l, gd, `name: "numerics" platform: "tensorflow_graphdef" max_batch_size: 8
		input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ] output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
		instance_group [ { name: "numerics" kind: KIND_CPU } ]
		model_warmup [ { name: "ok" batch_size: 2 inputs { key: "INPUT0" value { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } },
			{ name: "nan" batch_size: 1 inputs { key: "INPUT0" value { data_type: TYPE_FP32 dims: [ 4 ] input_data_file: "nan" } } } ]`)
	if err == nil || !strings.Contains(err.Error(), "model 'numerics', instance numerics_0: warm-up sample 'nan' failed") {
		t.Fatalf("%v", err)
	}
	t.Log(err)
}

// TestWarmupPython: a Python model's execute runs the samples on each
// instance before the first request (the model counts its calls), a
// decoupled one has all its responses consumed, and a sample that raises
// fails the load.
func TestWarmupPython(t *testing.T) {
	need(t, pyExe, "a Python with numpy (make venv)")
	l, log := warmLoader()
	const code = `import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.calls = 0

    def execute(self, requests):
        self.calls += 1
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            if x.flatten()[0] < 0:
                raise pb_utils.TritonModelException("negative input")
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("CALLS", np.full((x.shape[0], 1), self.calls, np.int32))]))
        return out
`
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "1", "model.py"), []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	writeWarmupFile(t, dir, "minus", int32s(-5))
	const config = `name: "counter" backend: "python" max_batch_size: 4
		input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ] output [ { name: "CALLS" data_type: TYPE_INT32 dims: [ 1 ] } ]
		instance_group [ { name: "counter" kind: KIND_CPU } ]
		`
	lm, err := loadText(t, l, dir, config+`model_warmup [ { name: "w" batch_size: 2 count: 3 inputs { key: "INPUT0" value { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true } } } ]`)
	if err != nil {
		t.Fatal(err)
	}
	if w := log.warmedUp(t)["counter_0"]; w.Executions != 3 || w.Responses != 6 {
		t.Errorf("%+v", w)
	}
	s := New(&fakeModels{versions: map[string]map[int64]*loadedModel{"counter": {1: lm}}, allReady: true}, Options{})
	resp, err := s.Infer(context.Background(), &inference.Request{ModelName: "counter", Inputs: []inference.Tensor{
		{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 1}, Data: int32s(1)}}})
	if err != nil {
		t.Fatal(err)
	}
	if c := resp.Output("CALLS"); c == nil || string(c.Data) != string(int32s(4)) {
		t.Fatalf("the first request's execute is the instance's fourth: %+v", c)
	}

	_, err = loadText(t, l, dir, config+`model_warmup [ { name: "neg" batch_size: 1 inputs { key: "INPUT0" value { data_type: TYPE_INT32 dims: [ 1 ] input_data_file: "minus" } } } ]`)
	if err == nil || !strings.Contains(err.Error(), "model 'counter', instance counter_0: warm-up sample 'neg' failed") || !strings.Contains(err.Error(), "negative input") {
		t.Fatalf("%v", err)
	}

	// Decoupled: two responses per request, from a thread, after execute
	// returned; the warm-up waits for the final flags.
	const streaming = `import threading
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for r in requests:
            sender = r.get_response_sender()
            threading.Thread(target=self.stream, args=(sender,), daemon=True).start()
        return None

    def stream(self, sender):
        for k in range(2):
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("CALLS", np.array([k], np.int32))]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
`
	sd := t.TempDir()
	if err := os.MkdirAll(filepath.Join(sd, "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sd, "1", "model.py"), []byte(streaming), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadText(t, l, sd, `name: "streamer" backend: "python" max_batch_size: 0 model_transaction_policy { decoupled: true }
		input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ] output [ { name: "CALLS" data_type: TYPE_INT32 dims: [ 1 ] } ]
		instance_group [ { name: "streamer" count: 2 kind: KIND_CPU } ]
		model_warmup [ { name: "w" batch_size: 1 count: 2 inputs { key: "INPUT0" value { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true } } } ]`); err != nil {
		t.Fatal(err)
	}
	got := log.warmedUp(t)
	if got["streamer_0"].Responses != 4 || got["streamer_1"].Responses != 4 {
		t.Errorf("decoupled: %+v", got)
	}
}
