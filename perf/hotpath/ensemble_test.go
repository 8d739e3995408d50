package hotpath

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/server"
)

// chainConfig is an ensemble of steps identity steps in a row, each the
// identity_fp32 model of identityConfig.
func chainConfig(steps int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `name: "chain%d"
platform: "ensemble"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
ensemble_scheduling { step [`, steps)
	for i := range steps {
		in, out := "T"+strconv.Itoa(i), "T"+strconv.Itoa(i+1)
		if i == 0 {
			in = "INPUT0"
		}
		if i == steps-1 {
			out = "OUTPUT0"
		}
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{ model_name: "identity_fp32" model_version: -1 input_map { key: "INPUT0" value: "%s" } output_map { key: "OUTPUT0" value: "%s" } }`, in, out)
	}
	b.WriteString("] }\n")
	return b.String()
}

// ensembleRepo writes identity_fp32 and the chains of 1, 3 and 5 steps.
func ensembleRepo(b *testing.B, dir string) {
	identityRepo(b, dir)
	for _, n := range []int{1, 3, 5} {
		name := "chain" + strconv.Itoa(n)
		if err := os.MkdirAll(filepath.Join(dir, name, "1"), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "config.pbtxt"), []byte(chainConfig(n)), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

func ensembleCore(b *testing.B) *server.Server { return newCore(b, benchCase{repo: ensembleRepo}) }

// BenchmarkEnsembleSteps measures what an ensemble step costs over gRPC:
// one request to identity_fp32 (direct), an ensemble of 1, 3 and 5
// identity steps, and the same chains driven by the client as separate
// requests (client-N), at concurrency 1 and 16. ns/op is per chain (per
// request for direct); the per-step overhead is the growth of ensemble-N's
// time with N.
func BenchmarkEnsembleSteps(b *testing.B) {
	const elems = 16
	data := fp32s(elems)
	request := func(model string) *inferencepb.ModelInferRequest {
		return &inferencepb.ModelInferRequest{
			ModelName:        model,
			Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "INPUT0", Datatype: "FP32", Shape: []int64{1, elems}}},
			Outputs:          []*inferencepb.ModelInferRequest_InferRequestedOutputTensor{{Name: "OUTPUT0"}},
			RawInputContents: [][]byte{data},
		}
	}
	type shape struct {
		name  string
		model string
		calls int // requests per chain
	}
	shapes := []shape{{"direct", "identity_fp32", 1}}
	for _, n := range []int{1, 3, 5} {
		shapes = append(shapes, shape{"ensemble-" + strconv.Itoa(n), "chain" + strconv.Itoa(n), 1})
	}
	for _, n := range []int{3, 5} {
		shapes = append(shapes, shape{"client-" + strconv.Itoa(n), "identity_fp32", n})
	}
	client := grpcClient(b, ensembleCore(b))
	for _, conc := range []int{1, 16} {
		for _, s := range shapes {
			b.Run(fmt.Sprintf("%s/c=%d", s.name, conc), func(b *testing.B) {
				ctx := context.Background()
				req := request(s.model)
				var wg sync.WaitGroup
				errs := make(chan error, conc)
				per := (b.N + conc - 1) / conc
				b.ResetTimer()
				for range conc {
					wg.Go(func() {
						for range per {
							in := req
							for range s.calls {
								resp, err := client.ModelInfer(ctx, in)
								if err != nil {
									errs <- err
									return
								}
								// The next request of a client-driven chain
								// sends the previous output back.
								in = &inferencepb.ModelInferRequest{ModelName: s.model, Inputs: req.Inputs, Outputs: req.Outputs,
									RawInputContents: [][]byte{resp.RawOutputContents[0]}}
							}
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				select {
				case err := <-errs:
					b.Fatal(err)
				default:
				}
			})
		}
	}
}

// BenchmarkEnsembleInProcess is BenchmarkEnsembleSteps without gRPC: the
// server core's Infer, one request at a time, so the difference between
// the chains is the executor's own cost per step plus one identity step's.
func BenchmarkEnsembleInProcess(b *testing.B) {
	core := ensembleCore(b)
	data := fp32s(16)
	for _, model := range []string{"identity_fp32", "chain1", "chain3", "chain5"} {
		b.Run(model, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				req := &inference.Request{ModelName: model, Inputs: []inference.Tensor{{Name: "INPUT0", DataType: inference.FP32, Shape: []int64{1, 16}, Data: data}}}
				resp, err := core.Infer(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				resp.Done()
			}
		})
	}
}
