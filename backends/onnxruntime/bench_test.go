//go:build cgo

package onnxruntime

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/nereid-project/nereid/backends/backendtest"
	"github.com/nereid-project/nereid/inference"
)

// The benchmarks compare one request through the backend with ONNX
// Runtime's own work on the same model, in the same process, one intra-op
// and one inter-op thread everywhere:
//
//   - backend: instance.ExecuteWithPhases on one request (the request's
//     context can be cancelled, as in the server, so the cancellation hook
//     is armed). compute_infer is what the statistics extension reports for
//     it: the execution less its input and output phases.
//   - bare_run: ONNX Runtime's Run through the C API on input and output
//     values made once, one cgo call; the floor.
//   - bare_request: the values made over the same (C) memory, Run, the
//     values released, in one cgo call: the least a server does per request.
//   - onnxruntime_go: github.com/yalue/onnxruntime_go's public API, the
//     binding the backend used before: NewTensor over the inputs,
//     NewEmptyTensor per output, Run, Destroy.
//
// Each model has sub-benchmarks backend and bare_run alone (allocations
// per request), and ratio, which runs the four in turn in the same loop so
// that they see the same machine load, and reports each one's median time
// per call and the ratios of the medians. Run it with -count for interleaved rounds;
// perf/onnxruntime.md has the figures and the command.

func BenchmarkSimple(b *testing.B) {
	be := testBackend(b)
	cfg := exampleConfig(b, "simple")
	_, inst := loadModel(b, be, filepath.Join(examples, "simple"), cfg)
	in0, in1 := make([]int32, 16), make([]int32, 16)
	for i := range in0 {
		in0[i], in1[i] = int32(i), int32(2*i)
	}
	shape := []int64{1, 16}
	req := request(
		inference.Tensor{Name: "INPUT0", DataType: inference.Int32, Shape: shape, Data: backendtest.Int32s(in0...)},
		inference.Tensor{Name: "INPUT1", DataType: inference.Int32, Shape: shape, Data: backendtest.Int32s(in1...)},
	)
	path := filepath.Join(examples, "simple", "1", "model.onnx")
	bare := bareSession(b, path,
		[]bareTensor{{"INPUT0", req.Inputs[0].Data, shape, onnxInt32}, {"INPUT1", req.Inputs[1].Data, shape, onnxInt32}},
		[]bareTensor{{"OUTPUT0", make([]byte, 64), shape, onnxInt32}, {"OUTPUT1", make([]byte, 64), shape, onnxInt32}})
	var ortgo func(*testing.B)
	if sess := ortGoSession(b, path, []string{"INPUT0", "INPUT1"}, []string{"OUTPUT0", "OUTPUT1"}); sess != nil {
		ortgo = func(b *testing.B) {
			t0 := must(ort.NewTensor(ort.Shape(shape), in0))
			t1 := must(ort.NewTensor(ort.Shape(shape), in1))
			o0 := must(ort.NewEmptyTensor[int32](ort.Shape(shape)))
			o1 := must(ort.NewEmptyTensor[int32](ort.Shape(shape)))
			if err := sess.Run([]ort.Value{t0, t1}, []ort.Value{o0, o1}); err != nil {
				b.Fatal(err)
			}
			_ = t0.Destroy()
			_ = t1.Destroy()
			_ = o0.Destroy()
			_ = o1.Destroy()
		}
	}
	benchAgainstBare(b, inst, req, bare, ortgo)
}

func BenchmarkIdentityFP32(b *testing.B) {
	be := testBackend(b)
	cfg := exampleConfig(b, "identity_fp32")
	_, inst := loadModel(b, be, filepath.Join(examples, "identity_fp32"), cfg)
	data := make([]float32, 256)
	for i := range data {
		data[i] = float32(i) / 3
	}
	shape := []int64{1, int64(len(data))}
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&data[0])), 4*len(data))
	req := request(inference.Tensor{Name: "INPUT0", DataType: inference.FP32, Shape: shape, Data: raw})
	path := filepath.Join(examples, "identity_fp32", "1", "model.onnx")
	bare := bareSession(b, path,
		[]bareTensor{{"INPUT0", raw, shape, onnxFloat}},
		[]bareTensor{{"OUTPUT0", make([]byte, len(raw)), shape, onnxFloat}})
	var ortgo func(*testing.B)
	if sess := ortGoSession(b, path, []string{"INPUT0"}, []string{"OUTPUT0"}); sess != nil {
		ortgo = func(b *testing.B) {
			in := must(ort.NewTensor(ort.Shape(shape), data))
			out := must(ort.NewEmptyTensor[float32](ort.Shape(shape)))
			if err := sess.Run([]ort.Value{in}, []ort.Value{out}); err != nil {
				b.Fatal(err)
			}
			_ = in.Destroy()
			_ = out.Destroy()
		}
	}
	benchAgainstBare(b, inst, req, bare, ortgo)
}

// benchAgainstBare runs the backend, the bare C API and (when not nil)
// onnxruntime_go on the same request.
func benchAgainstBare(b *testing.B, inst *instance, req *inference.Request, bare *bareRun, ortgo func(*testing.B)) {
	batch := []*inference.Request{req}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	// backend returns the execution's time and its compute_infer part.
	backend := func(b *testing.B) (total, infer time.Duration) {
		t0 := time.Now()
		_, ph, err := inst.ExecuteWithPhases(ctx, batch)
		total = time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		return total, total - ph.Input - ph.Output
	}
	b.Run("backend", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			backend(b)
		}
	})
	b.Run("bare_run", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := bare.run(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ratio", func(b *testing.B) {
		// Each variant's time per call, in turn; medians, so that a
		// preemption on a shared machine does not weigh in.
		var tBackend, tInfer, tRun, tReq, tGo []time.Duration
		for b.Loop() {
			total, infer := backend(b)
			t0 := time.Now()
			if err := bare.run(); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if err := bare.request(); err != nil {
				b.Fatal(err)
			}
			t2 := time.Now()
			if ortgo != nil {
				ortgo(b)
			}
			t3 := time.Now()
			tBackend, tInfer = append(tBackend, total), append(tInfer, infer)
			tRun, tReq, tGo = append(tRun, t1.Sub(t0)), append(tReq, t2.Sub(t1)), append(tGo, t3.Sub(t2))
		}
		med := func(d []time.Duration) float64 {
			slices.Sort(d)
			return float64(d[len(d)/2].Nanoseconds())
		}
		mBackend, mInfer, mRun, mReq := med(tBackend), med(tInfer), med(tRun), med(tReq)
		b.ReportMetric(mBackend, "backend-ns")
		b.ReportMetric(mInfer, "compute_infer-ns")
		b.ReportMetric(mRun, "bare_run-ns")
		b.ReportMetric(mReq, "bare_request-ns")
		b.ReportMetric(mInfer/mRun, "infer/bare_run")
		b.ReportMetric(mBackend/mRun, "backend/bare_run")
		b.ReportMetric(mBackend/mReq, "backend/bare_request")
		if ortgo != nil {
			mGo := med(tGo)
			b.ReportMetric(mGo, "onnxruntime_go-ns")
			b.ReportMetric(mGo/mRun, "onnxruntime_go/bare_run")
			b.ReportMetric(mBackend/mGo, "backend/onnxruntime_go")
		}
	})
}

// bareSession opens the model as the backend does by default (one intra-op
// and one inter-op thread, every graph optimisation) for a bareRun.
func bareSession(b *testing.B, path string, ins, outs []bareTensor) *bareRun {
	s, err := openSession(path, sessionConfig{intraOp: 1, interOp: 1, level: ortEnableAll})
	if err != nil {
		b.Fatal(err)
	}
	r, err := newBareRun(s, ins, outs)
	if err != nil {
		s.close()
		b.Fatal(err)
	}
	b.Cleanup(func() {
		r.close()
		s.close()
	})
	return r
}

var ortGo struct {
	once sync.Once
	err  error
}

// ortGoSession opens the model through onnxruntime_go with the backend's
// default options, or returns nil (logged) when onnxruntime_go cannot
// initialise.
func ortGoSession(b *testing.B, path string, ins, outs []string) *ort.DynamicAdvancedSession {
	ortGo.once.Do(func() {
		lib := os.Getenv(libraryEnv)
		if lib == "" {
			lib = filepath.Join("..", "..", ".ort", "lib", "libonnxruntime.so.1")
		}
		ort.SetSharedLibraryPath(lib)
		ortGo.err = ort.InitializeEnvironment(ort.WithLogLevelFatal())
	})
	if ortGo.err != nil {
		b.Logf("onnxruntime_go left out: %v", ortGo.err)
		return nil
	}
	so := must(ort.NewSessionOptions())
	defer func() { _ = so.Destroy() }()
	if err := so.SetIntraOpNumThreads(1); err != nil {
		b.Fatal(err)
	}
	if err := so.SetInterOpNumThreads(1); err != nil {
		b.Fatal(err)
	}
	sess := must(ort.NewDynamicAdvancedSession(path, ins, outs, so))
	b.Cleanup(func() { _ = sess.Destroy() })
	return sess
}
