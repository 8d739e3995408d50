//go:build cgo

package onnxruntime

import (
	"context"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/nereid-project/nereid/backends/backendtest"
	"github.com/nereid-project/nereid/inference"
)

// The benchmarks compare one request through the backend (Execute: build
// the input values over the request's bytes, Run, read the outputs into
// response tensors) with the least a Go program does to run the same
// inputs through onnxruntime_go itself: wrap the input slices as tensors,
// preallocate the outputs, Run, release. Both sessions have one intra-op
// and one inter-op thread.
//
// Each model has three sub-benchmarks: backend and onnxruntime_go alone
// (for allocations per request), and ratio, which alternates the two in
// the same loop so that both see the same machine load, and reports each
// one's ns/op and their ratio. `make bench-ort` runs them;
// perf/onnxruntime.md has the figures.

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
	sess := directSession(b, filepath.Join(examples, "simple", "1", "model.onnx"), []string{"INPUT0", "INPUT1"}, []string{"OUTPUT0", "OUTPUT1"})
	direct := func(b *testing.B) {
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
	benchPair(b, backendCall(b, inst, req), direct)
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
	sess := directSession(b, filepath.Join(examples, "identity_fp32", "1", "model.onnx"), []string{"INPUT0"}, []string{"OUTPUT0"})
	direct := func(b *testing.B) {
		in := must(ort.NewTensor(ort.Shape(shape), data))
		out := must(ort.NewEmptyTensor[float32](ort.Shape(shape)))
		if err := sess.Run([]ort.Value{in}, []ort.Value{out}); err != nil {
			b.Fatal(err)
		}
		_ = in.Destroy()
		_ = out.Destroy()
	}
	benchPair(b, backendCall(b, inst, req), direct)
}

// backendCall runs one request through Execute. The context can be
// cancelled, as a request's is in the server, so the backend arms its
// cancellation hook; making the context is the server's cost, not counted.
func backendCall(b *testing.B, inst *instance, req *inference.Request) func(*testing.B) {
	batch := []*inference.Request{req}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	return func(b *testing.B) {
		if _, err := inst.Execute(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
}

func benchPair(b *testing.B, backend, direct func(*testing.B)) {
	b.Run("backend", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			backend(b)
		}
	})
	b.Run("onnxruntime_go", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			direct(b)
		}
	})
	b.Run("ratio", func(b *testing.B) {
		var tb, td time.Duration
		n := 0
		for b.Loop() {
			t0 := time.Now()
			backend(b)
			t1 := time.Now()
			direct(b)
			td += time.Since(t1)
			tb += t1.Sub(t0)
			n++
		}
		b.ReportMetric(float64(tb.Nanoseconds())/float64(n), "backend-ns/op")
		b.ReportMetric(float64(td.Nanoseconds())/float64(n), "direct-ns/op")
		b.ReportMetric(float64(tb)/float64(td), "ratio")
	})
}

// directSession opens a session with the options the backend uses by
// default.
func directSession(b *testing.B, path string, ins, outs []string) *ort.DynamicAdvancedSession {
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
