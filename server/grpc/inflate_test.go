package grpcfront

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/payload"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// waitIdle waits for the budget to be empty: the last references to a
// message go once gRPC has written the response that aliases it.
func waitIdle(t *testing.T, b *payload.Budget) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for b.InUse() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("budget still holds %d bytes", b.InUse())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A compressed message that inflates past --grpc-max-message-size is
// refused with RESOURCE_EXHAUSTED once one byte past the limit is out, and
// what its decompression took goes back to the payload budget; one that
// fits is served; one that does not fit the budget is refused naming it.
func TestCompressedMessageBounds(t *testing.T) {
	core := &fakeCore{infer: func(_ context.Context, req *inference.Request) (*inference.Response, error) {
		return identity(req), nil
	}}
	budget := payload.NewBudget(32<<20, nil)
	c := start(t, core, Options{MaxMessageSize: 4 << 20, PayloadBudget: budget})
	msg := func(n int) *inferencepb.ModelInferRequest {
		return &inferencepb.ModelInferRequest{ModelName: "id",
			Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{input("IN", "UINT8", int64(n))},
			RawInputContents: [][]byte{make([]byte, n)}}
	}
	for _, alg := range []string{"gzip", "deflate"} {
		_, err := c.infer.ModelInfer(testCtx(t), msg(6<<20), grpc.UseCompressor(alg))
		wantCode(t, err, codes.ResourceExhausted, "larger than max")
		waitIdle(t, budget)

		resp, err := c.infer.ModelInfer(testCtx(t), msg(1<<20), grpc.UseCompressor(alg))
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if got := len(resp.GetRawOutputContents()[0]); got != 1<<20 {
			t.Fatalf("%s: output of %d bytes", alg, got)
		}
		waitIdle(t, budget)
	}

	small := payload.NewBudget(1<<20, nil)
	c2 := start(t, core, Options{MaxMessageSize: 4 << 20, PayloadBudget: small})
	// grpc-go answers a message its decompressor fails to deliver with
	// INTERNAL before any handler runs; the text names the budget.
	_, err := c2.infer.ModelInfer(testCtx(t), msg(3<<20), grpc.UseCompressor("deflate"))
	wantCode(t, err, codes.Internal, "--payload-budget-bytes")
	waitIdle(t, small)

	// The same on a stream, which grpc-go ends; the server serves the
	// next call.
	stream, err := c2.infer.ModelStreamInfer(testCtx(t), grpc.UseCompressor("gzip"))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(msg(3 << 20)); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	wantCode(t, err, codes.Internal, "--payload-budget-bytes")
	waitIdle(t, small)
	if _, err := c2.infer.ModelInfer(testCtx(t), msg(1000), grpc.UseCompressor("gzip")); err != nil {
		t.Fatalf("after the refusals: %v", err)
	}
	waitIdle(t, small)
}
