package python

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/encoding/prototext"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/backends/backendtest"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// These tests run real stubs: the interpreter is $NEREID_TEST_PYTHON
// (make test-go sets it to the project's virtualenv), else the
// virtualenv's python when it exists; without either they are skipped.
func testPython(t *testing.T) string { return benchPython(t) }

func benchPython(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("NEREID_TEST_PYTHON"); p != "" {
		return p
	}
	p, _ := filepath.Abs("../../.venv/bin/python")
	if _, err := os.Stat(p); err != nil {
		t.Skip("no Python with numpy: set NEREID_TEST_PYTHON or run make venv")
	}
	return p
}

func testBackend(t *testing.T) *Backend {
	return New(Options{Python: testPython(t), CacheDir: t.TempDir(), StubTimeout: 5 * time.Second, Logger: zerolog.Nop()})
}

// writeModel writes <dir>/<name>/config.pbtxt and 1/model.py.
func writeModel(t *testing.T, dir, name, config, code string) (string, *inferencepb.ModelConfig) {
	t.Helper()
	md := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Join(md, "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(md, "config.pbtxt"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(md, "1", "model.py"), []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := &inferencepb.ModelConfig{}
	if err := prototext.Unmarshal([]byte(config), cfg); err != nil {
		t.Fatal(err)
	}
	return md, cfg
}

type testInstance struct {
	model *model
	inst  *instance
}

func load(t *testing.T, b *Backend, modelDir string, cfg *inferencepb.ModelConfig) (testInstance, error) {
	return loadB(t, b, modelDir, cfg)
}

func byteName(n int) string {
	switch {
	case n >= 1<<20:
		return strconv.Itoa(n>>20) + "MiB"
	case n >= 1<<10:
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

func loadB(t testing.TB, b *Backend, modelDir string, cfg *inferencepb.ModelConfig) (testInstance, error) {
	t.Helper()
	m, err := b.Load(context.Background(), backends.ModelSpec{
		Name: cfg.GetName(), Version: 1, ModelDir: modelDir, VersionDir: filepath.Join(modelDir, "1"),
		Config: cfg, Logger: zerolog.Nop(), Inferer: new(backends.LateInferer),
	})
	if err != nil {
		return testInstance{}, err
	}
	inst, err := m.NewInstance(context.Background(), backends.InstanceSpec{Name: cfg.GetName() + "_0", Kind: inferencepb.ModelInstanceGroup_KIND_CPU})
	if err != nil {
		return testInstance{}, err
	}
	ti := testInstance{m.(*model), inst.(*instance)}
	t.Cleanup(func() {
		if err := ti.inst.Close(); err != nil {
			t.Error(err)
		}
		_ = ti.model.Close()
	})
	return ti, nil
}

func addSubRequest(a, b []int32) *inference.Request {
	shape := []int64{1, int64(len(a))}
	return &inference.Request{ModelName: "add_sub", Inputs: []inference.Tensor{
		{Name: "INPUT0", DataType: inference.Int32, Shape: shape, Data: backendtest.Int32s(a...)},
		{Name: "INPUT1", DataType: inference.Int32, Shape: shape, Data: backendtest.Int32s(b...)},
	}}
}

// The add_sub example, a batch of two: each request gets its own sums and
// differences, read from the stub's memory.
func TestAddSubExample(t *testing.T) {
	b := testBackend(t)
	cfg := backendtest.Config(t, "../../model_repo_examples/add_sub/config.pbtxt")
	ti, err := load(t, b, "../../model_repo_examples/add_sub", cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := make([]int32, 16)
	c := make([]int32, 16)
	for i := range a {
		a[i], c[i] = int32(i), int32(100*i)
	}
	for round := range 50 { // enough rounds to reuse freed chunks
		batch := []*inference.Request{addSubRequest(a, c), addSubRequest(c, a)}
		resps, err := backendtest.Collect(context.Background(), ti.inst, batch)
		if err != nil {
			t.Fatal(err)
		}
		for k, want := range [][2]int32{{1, -1}, {1, 1}} {
			r := resps[k][0]
			sum, diff := backendtest.ReadInt32s(r.Output("OUTPUT0").Data), backendtest.ReadInt32s(r.Output("OUTPUT1").Data)
			for i := range 16 {
				x, y := a[i], c[i]
				if k == 1 {
					x, y = y, x
				}
				if sum[i] != x+y || diff[i] != x-y {
					t.Fatalf("round %d request %d element %d: sum %d diff %d (want %d %d) %v", round, k, i, sum[i], diff[i], x+y, x-y, want)
				}
			}
			r.Done()
		}
	}
}

const echoConfig = `
name: "echo"
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
`

const echoModel = `
import os, time
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "IN").as_numpy()
            if x.size and x[0] < 0:
                time.sleep(float(-x[0]))   # a slow request
            if x.size and x[0] == 13:
                raise pb_utils.TritonModelException("thirteen is unlucky")
            if x.size and x[0] == 7:
                out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUT", x.astype(np.int32))]))
                continue
            out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUT", x * 2)]))
        return out
`

func echoRequest(vs ...float32) *inference.Request {
	return &inference.Request{ModelName: "echo", Inputs: []inference.Tensor{
		{Name: "IN", DataType: inference.FP32, Shape: []int64{int64(len(vs))}, Data: backendtest.Float32s(vs...)},
	}}
}

func runOne(t *testing.T, inst backends.Instance, req *inference.Request) (*inference.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resps, err := backendtest.Collect(ctx, inst, []*inference.Request{req})
	if err != nil {
		return nil, err
	}
	if len(resps[0]) != 1 {
		t.Fatalf("%d responses", len(resps[0]))
	}
	return resps[0][0], nil
}

// Large tensors grow the shared memory; errors of the model reach the
// request with the model's text and the instance keeps serving; a wrong
// datatype is refused with the configured one named.
func TestEchoSizesAndErrors(t *testing.T) {
	b := testBackend(t)
	md, cfg := writeModel(t, t.TempDir(), "echo", echoConfig, echoModel)
	ti, err := load(t, b, md, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, 1000, 1 << 20, 3 << 20, 10} {
		vs := make([]float32, n)
		for i := range vs {
			vs[i] = float32(i % 1000)
		}
		r, err := runOne(t, ti.inst, echoRequest(vs...))
		if err != nil {
			t.Fatalf("%d elements: %v", n, err)
		}
		got := r.Output("OUT").Data
		if len(got) != 4*n {
			t.Fatalf("%d elements: %d bytes back", n, len(got))
		}
		for i := 0; i < n; i += 997 {
			if v := math.Float32frombits(binary.LittleEndian.Uint32(got[4*i:])); v != 2*vs[i] {
				t.Fatalf("%d elements: element %d is %v, want %v", n, i, v, 2*vs[i])
			}
		}
		r.Done()
	}
	if _, err := runOne(t, ti.inst, echoRequest(13)); err == nil || !strings.Contains(err.Error(), "thirteen is unlucky") {
		t.Fatalf("an exception in execute: %v", err)
	}
	if _, err := runOne(t, ti.inst, echoRequest(7)); err == nil || !strings.Contains(err.Error(), "output 'OUT' as INT32; its configuration says FP32") {
		t.Fatalf("a wrong output datatype: %v", err)
	}
	if r, err := runOne(t, ti.inst, echoRequest(1, 2)); err != nil {
		t.Fatalf("after errors: %v", err)
	} else {
		r.Done()
	}
}

// kill -9 of the stub mid-request: the request fails, the stub is
// replaced, the next request succeeds.
func TestStubKilledMidRequest(t *testing.T) {
	b := testBackend(t)
	md, cfg := writeModel(t, t.TempDir(), "echo", echoConfig, echoModel)
	ti, err := load(t, b, md, cfg)
	if err != nil {
		t.Fatal(err)
	}
	pid := ti.inst.current().pid()
	var wg sync.WaitGroup
	var slowErr error
	wg.Go(func() { _, slowErr = runOne(t, ti.inst, echoRequest(-10)) })
	time.Sleep(500 * time.Millisecond)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if slowErr == nil || !strings.Contains(slowErr.Error(), "Stub process is not healthy") {
		t.Fatalf("the in-flight request: %v", slowErr)
	}
	r, err := runOne(t, ti.inst, echoRequest(4))
	if err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	r.Done()
	if ti.inst.current().pid() == pid {
		t.Fatal("the stub was not replaced")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("the killed stub %d was not reaped: %v", pid, err)
	}
}

// A stub that stops answering (stuck with the GIL held) is killed after
// the stub timeout and replaced.
func TestHungStubReplaced(t *testing.T) {
	b := New(Options{Python: testPython(t), CacheDir: t.TempDir(), StubTimeout: time.Second, Logger: zerolog.Nop()})
	md, cfg := writeModel(t, t.TempDir(), "echo", echoConfig, `
import os, signal
import triton_python_backend_utils as pb_utils
class TritonPythonModel:
    def execute(self, requests):
        os.kill(os.getpid(), signal.SIGSTOP)   # frozen, every thread with it
`)
	ti, err := load(t, b, md, cfg)
	if err != nil {
		t.Fatal(err)
	}
	pid := ti.inst.current().pid()
	start := time.Now()
	if _, err := runOne(t, ti.inst, echoRequest(1)); err == nil {
		t.Fatal("a request to a frozen stub succeeded")
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("the frozen stub was noticed after %v", d)
	}
	deadline := time.Now().Add(15 * time.Second)
	for ti.inst.current() == nil || ti.inst.current().pid() == pid {
		if time.Now().After(deadline) {
			t.Fatal("the frozen stub was not replaced")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Models that cannot load say why, with Python's own words.
func TestBadModelsFailToLoad(t *testing.T) {
	b := testBackend(t)
	dir := t.TempDir()
	cases := map[string]struct{ code, want string }{
		"syntax":   {"def broken(:\n", "SyntaxError"},
		"noclass":  {"class SomethingElse:\n    pass\n", "TritonPythonModel"},
		"initfail": {"class TritonPythonModel:\n    def initialize(self, args):\n        raise ValueError('no weights here')\n", "no weights here"},
		"import":   {"import not_a_module_anywhere\n", "not_a_module_anywhere"},
	}
	for name, tc := range cases {
		md, cfg := writeModel(t, dir, name, strings.Replace(echoConfig, `"echo"`, `"`+name+`"`, 1), tc.code)
		_, err := load(t, b, md, cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
	}
	md, cfg := writeModel(t, dir, "missing", strings.Replace(echoConfig, `"echo"`, `"missing"`, 1), "")
	if err := os.Remove(filepath.Join(md, "1", "model.py")); err != nil {
		t.Fatal(err)
	}
	if _, err := load(t, b, md, cfg); err == nil || !strings.Contains(err.Error(), "model.py") {
		t.Errorf("missing model.py: %v", err)
	}
}

const streamConfig = `
name: "stream"
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "N" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "K" data_type: TYPE_INT32 dims: [ 1 ] } ]
`

const streamModel = `
import threading
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        for r in requests:
            n = int(pb_utils.get_input_tensor_by_name(r, "N").as_numpy()[0])
            sender = r.get_response_sender()
            def run(n=n, sender=sender):
                for k in range(n):
                    sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("K", np.array([k], np.int32))]))
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            threading.Thread(target=run).start()
        return None
`

// A decoupled model answers N times from a thread of its own, then sends
// the final flag alone.
func TestDecoupledStream(t *testing.T) {
	b := testBackend(t)
	md, cfg := writeModel(t, t.TempDir(), "stream", streamConfig, streamModel)
	ti, err := load(t, b, md, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	batch := []*inference.Request{
		{ModelName: "stream", Inputs: []inference.Tensor{{Name: "N", DataType: inference.Int32, Shape: []int64{1}, Data: backendtest.Int32s(5)}}},
		{ModelName: "stream", Inputs: []inference.Tensor{{Name: "N", DataType: inference.Int32, Shape: []int64{1}, Data: backendtest.Int32s(0)}}},
	}
	resps, err := backendtest.Collect(ctx, ti.inst, batch)
	if err != nil {
		t.Fatal(err)
	}
	if len(resps[0]) != 5 || len(resps[1]) != 0 {
		t.Fatalf("%d and %d responses, want 5 and 0", len(resps[0]), len(resps[1]))
	}
	for k, r := range resps[0] {
		if got := backendtest.ReadInt32s(r.Output("K").Data); got[0] != int32(k) {
			t.Fatalf("response %d carries %d", k, got[0])
		}
		r.Done()
	}
}

// Unload calls finalize and reaps the process: nothing is left running.
func TestCloseReapsStub(t *testing.T) {
	b := testBackend(t)
	md, cfg := writeModel(t, t.TempDir(), "echo", echoConfig, echoModel+`
    def finalize(self):
        open(os.path.join(os.path.dirname(__file__), "finalized"), "w").close()
`)
	m, err := b.Load(context.Background(), backends.ModelSpec{
		Name: "echo", Version: 1, ModelDir: md, VersionDir: filepath.Join(md, "1"),
		Config: cfg, Logger: zerolog.Nop(), Inferer: new(backends.LateInferer),
	})
	if err != nil {
		t.Fatal(err)
	}
	inst, err := m.NewInstance(context.Background(), backends.InstanceSpec{Name: "echo_0"})
	if err != nil {
		t.Fatal(err)
	}
	pid := inst.(*instance).current().pid()
	if err := inst.(*instance).Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(md, "1", "finalized")); err != nil {
		t.Error("finalize did not run")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("stub %d still exists after Close: %v", pid, err)
	}
}

// The stub that ran auto_complete_config becomes the first instance's:
// the model's tensors come from it, and no second interpreter starts.
func TestAutoCompleteStubReused(t *testing.T) {
	b := testBackend(t)
	t.Cleanup(b.Close)
	md, _ := writeModel(t, t.TempDir(), "auto", "name: \"auto\"\nbackend: \"python\"\n", `
import os
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        config.add_input({"name": "IN", "data_type": "TYPE_FP32", "dims": [-1]})
        config.add_output({"name": "OUT", "data_type": "TYPE_FP32", "dims": [-1]})
        return config

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.full(1, os.getpid(), np.float32))]) for r in requests]
`)
	cfg := &inferencepb.ModelConfig{Name: "auto", Backend: "python"}
	if err := b.Complete(context.Background(), md, cfg, true); err != nil {
		t.Fatal(err)
	}
	if len(cfg.GetInput()) != 1 || cfg.GetInput()[0].GetName() != "IN" || len(cfg.GetOutput()) != 1 {
		t.Fatalf("completed configuration: %v", cfg)
	}
	b.mu.Lock()
	parked := b.parked[modelFile(filepath.Join(md, "1"), cfg)]
	b.mu.Unlock()
	if parked == nil {
		t.Fatal("the auto-complete stub was not kept")
	}
	ti, err := load(t, b, md, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := ti.inst.current().pid(); got != parked.s.pid() {
		t.Fatalf("the instance runs in stub %d, not the auto-complete stub %d", got, parked.s.pid())
	}
	r, err := runOne(t, ti.inst, &inference.Request{ModelName: "auto", Inputs: []inference.Tensor{
		{Name: "IN", DataType: inference.FP32, Shape: []int64{1}, Data: backendtest.Float32s(1)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if pid := math.Float32frombits(binary.LittleEndian.Uint32(r.Output("OUT").Data)); int(pid) != parked.s.pid() {
		t.Fatalf("executed in process %v", pid)
	}
	r.Done()
}

// A parked stub nobody claims is stopped by Close.
func TestParkedStubStopped(t *testing.T) {
	b := testBackend(t)
	md, cfg := writeModel(t, t.TempDir(), "echo", echoConfig, echoModel)
	if err := b.Complete(context.Background(), md, cfg, true); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	var p *parkedStub
	for _, x := range b.parked {
		p = x
	}
	b.mu.Unlock()
	if p == nil {
		t.Fatal("nothing parked")
	}
	b.Close()
	select {
	case <-p.s.exited:
	default:
		t.Fatal("Close left the parked stub running")
	}
}

// blockingInferer answers no request: it waits for the request's context
// and reports how it ended.
type blockingInferer struct{ ended chan error }

func (b blockingInferer) InferStream(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error {
	<-ctx.Done()
	b.ended <- ctx.Err()
	return inference.Errorf(inference.CodeCancelled, "request for model '%s' was cancelled", req.ModelName)
}

// A BLS call made by execute ends when its batch is cancelled.
func TestBLSCancelledWithBatch(t *testing.T) {
	b := testBackend(t)
	md, cfg := writeModel(t, t.TempDir(), "echo", echoConfig, `
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "IN")
            resp = pb_utils.InferenceRequest(model_name="slow", inputs=[x], requested_output_names=["OUT"]).exec()
            err = resp.error()
            out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("bls: " + (err.message() if err else "no error"))))
        return out
`)
	late := new(backends.LateInferer)
	ended := make(chan error, 1)
	late.Bind(blockingInferer{ended})
	m, err := b.Load(context.Background(), backends.ModelSpec{
		Name: "echo", Version: 1, ModelDir: md, VersionDir: filepath.Join(md, "1"),
		Config: cfg, Logger: zerolog.Nop(), Inferer: late,
	})
	if err != nil {
		t.Fatal(err)
	}
	inst, err := m.NewInstance(context.Background(), backends.InstanceSpec{Name: "echo_0"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := inst.(*instance).Close(); err != nil {
			t.Error(err)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	done := make(chan error, 1)
	go func() {
		_, err := backendtest.Collect(ctx, inst, []*inference.Request{echoRequest(1)})
		done <- err
	}()
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the BLS call ended with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the BLS call outlived its cancelled batch")
	}
	<-done
}

const answersConfig = `
name: "answers"
backend: "python"
max_batch_size: 8
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
`

// IN[0] == 1: an error response; 13: execute raises; 7: an output of the
// wrong datatype; else OUT = 2 * IN, after a sleep of IN[1] seconds when
// it is there, so that the execution takes measurable time.
const answersModel = `
import time
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "IN").as_numpy()
            if x.flat[0] == 13:
                raise pb_utils.TritonModelException("thirteen is unlucky")
            if x.flat[0] == 1:
                out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("one is refused", pb_utils.TritonError.INVALID_ARG)))
                continue
            if x.flat[0] == 7:
                out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUT", x.astype(np.int32))]))
                continue
            if x.size > 1:
                time.sleep(float(x.flat[1]))
            out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUT", x * 2)]))
        return out
`

func answersRequest(vs ...float32) *inference.Request {
	return &inference.Request{ModelName: "answers", Inputs: []inference.Tensor{
		{Name: "IN", DataType: inference.FP32, Shape: []int64{1, int64(len(vs))}, Data: backendtest.Float32s(vs...)},
	}}
}

// execPhased runs a batch through ExecutePhased with a Recorder per request
// and returns the phases, the execution's duration and each request's
// Fail error (nil for a response).
func execPhased(t *testing.T, inst *instance, batch ...*inference.Request) (backends.Phases, time.Duration, []error, error) {
	t.Helper()
	recs := make([]*backendtest.Recorder, len(batch))
	for i, r := range batch {
		recs[i] = backendtest.NewRecorder(t, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	ph, err := inst.ExecutePhased(ctx, batch)
	took := time.Since(start)
	errs := make([]error, len(batch))
	if err == nil {
		for i, rec := range recs {
			ev := rec.Events()
			if len(ev) != 1 || !ev[0].Final {
				t.Fatalf("request %d: events %+v, want one final", i, ev)
			}
			if ev[0].Resp != nil {
				ev[0].Resp.Done()
			}
			errs[i] = ev[0].Err
		}
	}
	return ph, took, errs, err
}

// The phases an execution reports: copying the inputs in and reading the
// outputs back both take time, and they bound an inference that holds the
// model's own run (a 50 ms sleep here) and fit in the execution.
func TestExecutePhases(t *testing.T) {
	b := testBackend(t)
	md, cfg := writeModel(t, t.TempDir(), "answers", answersConfig, answersModel)
	ti, err := load(t, b, md, cfg)
	if err != nil {
		t.Fatal(err)
	}
	big := make([]float32, 1<<18) // 1 MiB each way
	big[0], big[1] = 2, 0.05
	ph, took, errs, err := execPhased(t, ti.inst, answersRequest(big...), answersRequest(3, 0))
	if err != nil || errs[0] != nil || errs[1] != nil {
		t.Fatalf("execution: %v %v", err, errs)
	}
	if ph.Input <= 0 || ph.Output <= 0 {
		t.Fatalf("phases %+v: input and output must both have taken time", ph)
	}
	if infer := took - ph.Input - ph.Output; infer < 50*time.Millisecond {
		t.Fatalf("phases %+v of an execution of %v leave %v for the model's 50 ms run", ph, took, infer)
	}
}
