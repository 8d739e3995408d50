//go:build cgo

package tensorflow

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/nereid-project/nereid/inference"
)

// The backend's cost over TensorFlow's own C API call, on the dense
// example (mlp_savedmodel): BenchmarkSessionRun is the library call alone
// (a prepared input tensor, one TF_SessionRun, the output deleted),
// BenchmarkExecute the backend's whole execution of a request (building
// the input tensor from request bytes, the run, copying the output into a
// response). perf/tensorflow.md has the command and figures.

func benchModel(b *testing.B) *instance {
	be := testBackend(b)
	cfg := exampleConfig(b, "mlp_savedmodel")
	cfg.ModelWarmup = nil
	return loadModel(b, be, filepath.Join(examples, "mlp_savedmodel"), cfg)
}

func BenchmarkSessionRun(b *testing.B) {
	inst := benchModel(b)
	for _, batch := range []int{1, 32} {
		b.Run(fmt.Sprint("batch=", batch), func(b *testing.B) {
			shape := []int64{int64(batch), 64}
			in, err := newTensor(tfFloat, shape, [][]byte{make([]byte, batch*64*4)})
			if err != nil {
				b.Fatal(err)
			}
			defer deleteTensors([]tensor{in})
			outs := make([]tensor, 1)
			b.ReportAllocs()
			for b.Loop() {
				if err := inst.o.s.run(inst.in[:1], []tensor{in}, inst.out[:1], outs); err != nil {
					b.Fatal(err)
				}
				deleteTensors(outs)
			}
		})
	}
}

func BenchmarkExecute(b *testing.B) {
	inst := benchModel(b)
	for _, batch := range []int{1, 32} {
		b.Run(fmt.Sprint("batch=", batch), func(b *testing.B) {
			req := request(inference.Tensor{Name: "INPUT0", DataType: inference.FP32, Shape: []int64{int64(batch), 64}, Data: make([]byte, batch*64*4)})
			batchReqs := []*inference.Request{req}
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := inst.ExecuteWithPhases(context.Background(), batchReqs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
