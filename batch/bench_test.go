package batch

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/nereid-project/nereid/inference"
)

// mlpModel is model_repo_examples/mlp_fp32's interface.
var mlpModel = &Model{Name: "mlp_fp32", MaxBatchSize: 64, Inputs: []Input{{Name: "INPUT0", DataType: inference.FP32, Dims: []int64{64}}}}

func mlpLine(r *rand.Rand) []byte {
	row := make([]float32, 64)
	for i := range row {
		row[i] = float32(int(r.NormFloat64()*1e6)) / 1e6
	}
	b, _ := json.Marshal(map[string][]float32{"INPUT0": row})
	return b
}

// The per-record work of a job besides inference: reading a record and
// writing its output line.
func BenchmarkParseJSONRecord(b *testing.B) {
	line := mlpLine(rand.New(rand.NewPCG(1, 2)))
	p := &parser{model: mlpModel}
	b.ReportAllocs()
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		if rec := p.parseJSON(line); rec.err != nil {
			b.Fatal(rec.err)
		}
	}
}

func BenchmarkOutputLine(b *testing.B) {
	rec := &record{line: 12345}
	out := []inference.Tensor{{Name: "OUTPUT0", DataType: inference.FP32, Shape: []int64{1, 16}, Data: make([]byte, 64)}}
	b.ReportAllocs()
	var dst []byte
	for b.Loop() {
		var err error
		if dst, err = appendOutputLine(dst[:0], rec, out); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkJob is a whole job of 10000 mlp_fp32 records over a target
// that answers at once: the job's own cost per record.
func BenchmarkJob(b *testing.B) {
	dir := b.TempDir()
	in := filepath.Join(dir, "mlp.jsonl")
	r := rand.New(rand.NewPCG(1, 2))
	f, _ := os.Create(in)
	for range 10000 {
		f.Write(append(mlpLine(r), '\n'))
	}
	f.Close()
	target := constTarget{}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n++
		if _, err := Run(context.Background(), target, Options{Model: "mlp_fp32", Input: in, Output: filepath.Join(dir, fmt.Sprint(n)), MaxErrorFraction: 0.1}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(10000*n)/b.Elapsed().Seconds(), "records/s")
}

// constTarget answers every mlp_fp32 request with zeros.
type constTarget struct{}

func (constTarget) Model(context.Context, string, string) (*Model, error) { return mlpModel, nil }

func (constTarget) Infer(_ context.Context, req *inference.Request) (*inference.Response, error) {
	n := req.Inputs[0].Shape[0]
	return &inference.Response{Outputs: []inference.Tensor{{Name: "OUTPUT0", DataType: inference.FP32, Shape: []int64{n, 16}, Data: make([]byte, n*64)}}}, nil
}
