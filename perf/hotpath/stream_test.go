package hotpath

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	_ "github.com/nereid-project/nereid/backends/repeat" // registers the repeat backend
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// repeatRepo writes Nereid's example repeat_int32 (a decoupled model: one
// response per element of IN) into dir.
func repeatRepo(b *testing.B, dir string) {
	cfg, err := os.ReadFile(filepath.Join("..", "..", "model_repo_examples", "repeat_int32", "config.pbtxt"))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "repeat_int32", "1"), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "repeat_int32", "config.pbtxt"), cfg, 0o644); err != nil {
		b.Fatal(err)
	}
}

func le32s(n int, v uint32) []byte {
	out := make([]byte, 0, 4*n)
	for i := range n {
		out = binary.LittleEndian.AppendUint32(out, v+uint32(i))
	}
	return out
}

// BenchmarkGRPCStreamRepeat sends one request at a time over one
// ModelStreamInfer stream to repeat_int32 with no delays, and reads its n
// responses: the cost of the streaming response path per response (the
// core's sink, the stream's queue and writer, protobuf and grpc-go). It
// reports responses per second, the mean time per response, and the time
// from sending a request to its first response.
func BenchmarkGRPCStreamRepeat(b *testing.B) {
	for _, n := range []int{1, 16, 256} {
		b.Run("responses="+strconv.Itoa(n), func(b *testing.B) {
			client := grpcClient(b, newCore(b, benchCase{repo: repeatRepo}))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stream, err := client.ModelStreamInfer(ctx)
			if err != nil {
				b.Fatal(err)
			}
			req := &inferencepb.ModelInferRequest{
				ModelName: "repeat_int32",
				Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{
					{Name: "IN", Datatype: "INT32", Shape: []int64{int64(n)}},
					{Name: "DELAY", Datatype: "UINT32", Shape: []int64{int64(n)}},
					{Name: "WAIT", Datatype: "UINT32", Shape: []int64{1}},
				},
				RawInputContents: [][]byte{le32s(n, 100), make([]byte, 4*n), make([]byte, 4)},
			}
			var first time.Duration
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				sent := time.Now()
				if err := stream.Send(req); err != nil {
					b.Fatal(err)
				}
				for i := range n {
					resp, err := stream.Recv()
					if err != nil {
						b.Fatal(err)
					}
					if msg := resp.GetErrorMessage(); msg != "" {
						b.Fatal(msg)
					}
					if i == 0 {
						first += time.Since(sent)
					}
				}
			}
			elapsed := time.Since(start)
			total := float64(b.N * n)
			b.ReportMetric(total/elapsed.Seconds(), "responses/s")
			b.ReportMetric(float64(elapsed.Nanoseconds())/total, "ns/response")
			b.ReportMetric(float64(first.Microseconds())/float64(b.N), "µs-to-first")
			_ = stream.CloseSend()
		})
	}
}
