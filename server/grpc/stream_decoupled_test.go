package grpcfront

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// decoupledCore is a fakeCore whose model "dec" is decoupled and answered
// by stream.
func decoupledCore(stream func(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error) *fakeCore {
	return &fakeCore{
		modelConfig: func(_ context.Context, name, _ string) (*inferencepb.ModelConfig, error) {
			return &inferencepb.ModelConfig{Name: name, ModelTransactionPolicy: &inferencepb.ModelTransactionPolicy{Decoupled: name == "dec"}}, nil
		},
		inferStream: stream,
	}
}

func indexResponse(req *inference.Request, i uint32) *inference.Response {
	return &inference.Response{ID: req.ID, ModelName: req.ModelName, ModelVersion: "1",
		Outputs: []inference.Tensor{{Name: "IDX", DataType: inference.Uint32, Shape: []int64{1}, Data: le32(i)}}}
}

func responseIndex(t *testing.T, r *inferencepb.ModelStreamInferResponse) uint32 {
	t.Helper()
	raw := r.GetInferResponse().GetRawOutputContents()
	if len(raw) != 1 || len(raw[0]) != 4 {
		t.Fatalf("response %v has no IDX", r)
	}
	return binary.LittleEndian.Uint32(raw[0])
}

// Responses of decoupled requests are written as they are produced, so
// two requests' streams interleave; each carries triton_final_response.
func TestStreamDecoupledResponsesInterleave(t *testing.T) {
	steps := map[string]chan struct{}{"a": make(chan struct{}), "b": make(chan struct{})}
	core := decoupledCore(func(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error {
		for i := range uint32(2) {
			select {
			case <-steps[req.ID]:
			case <-ctx.Done():
				return ctx.Err()
			}
			if err := out(indexResponse(req, i), false); err != nil {
				return err
			}
		}
		return out(nil, true)
	})
	c := start(t, core, Options{})
	s, err := c.infer.ModelStreamInfer(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		req := rawRequest(id, 1)
		req.ModelName = "dec"
		if err := s.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []struct {
		id  string
		idx uint32
	}{{"b", 0}, {"a", 0}, {"a", 1}, {"b", 1}} {
		steps[want.id] <- struct{}{}
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got := r.GetInferResponse().GetId(); got != want.id || responseIndex(t, r) != want.idx || isFinal(r.GetInferResponse()) {
			t.Fatalf("got response %d of %q (final %v), want %d of %q", responseIndex(t, r), got, isFinal(r.GetInferResponse()), want.idx, want.id)
		}
	}
	_ = s.CloseSend()
	if rest, err := recvAll(t, s); err != nil || len(rest) != 0 {
		t.Fatalf("after the last responses: %v, %v (no empty final was asked for)", rest, err)
	}
}

func TestStreamEmptyFinalOnlyWhenAsked(t *testing.T) {
	core := decoupledCore(func(_ context.Context, req *inference.Request, out inference.ResponseFunc) error {
		if err := out(indexResponse(req, 0), false); err != nil {
			return err
		}
		return out(nil, true)
	})
	c := start(t, core, Options{})
	s, err := c.infer.ModelStreamInfer(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	req := rawRequest("e", 1)
	req.ModelName = "dec"
	req.Parameters = map[string]*inferencepb.InferParameter{paramEnableEmptyFinal: {ParameterChoice: &inferencepb.InferParameter_BoolParam{BoolParam: true}}}
	if err := s.Send(req); err != nil {
		t.Fatal(err)
	}
	_ = s.CloseSend()
	resps, err := recvAll(t, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(resps) != 2 || isFinal(resps[0].GetInferResponse()) || !isFinal(resps[1].GetInferResponse()) {
		t.Fatalf("responses %v", resps)
	}
	last := resps[1].GetInferResponse()
	if last.GetId() != "e" || last.GetModelName() != "dec" || len(last.GetOutputs()) != 0 {
		t.Errorf("empty final response %v", last)
	}
}

// A client that does not read holds the producer back: the server does
// not buffer a request's responses without bound.
func TestStreamSlowReaderIsBounded(t *testing.T) {
	const total = 20_000
	var produced atomic.Int64
	core := decoupledCore(func(_ context.Context, req *inference.Request, out inference.ResponseFunc) error {
		for i := range uint32(total) {
			if err := out(indexResponse(req, i), false); err != nil {
				return err
			}
			produced.Add(1)
		}
		return out(nil, true)
	})
	c := start(t, core, Options{MaxStreamInFlight: 4})
	s, err := c.infer.ModelStreamInfer(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	req := rawRequest("slow", 1)
	req.ModelName = "dec"
	if err := s.Send(req); err != nil {
		t.Fatal(err)
	}
	// Wait until production stalls (flow control and the bounded queue).
	last, stalled := int64(-1), 0
	for deadline := time.Now().Add(10 * time.Second); stalled < 5 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		if n := produced.Load(); n == last {
			stalled++
		} else {
			last, stalled = n, 0
		}
	}
	if n := produced.Load(); n >= total/2 {
		t.Fatalf("%d of %d responses produced while the client read nothing", n, total)
	}
	t.Logf("produced %d of %d responses before the client read", produced.Load(), total)
	_ = s.CloseSend()
	for i := range uint32(total) {
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got := responseIndex(t, r); got != i {
			t.Fatalf("response %d has IDX %d", i, got)
		}
	}
}

// A unary call on a decoupled model gets Triton's status and text.
func TestModelInferRefusesDecoupled(t *testing.T) {
	core := &fakeCore{infer: func(_ context.Context, req *inference.Request) (*inference.Response, error) {
		return nil, inference.Errorf(inference.CodeUnsupported, "model '%s': %w", req.ModelName, inference.ErrDecoupled)
	}}
	c := start(t, core, Options{})
	_, err := c.infer.ModelInfer(testCtx(t), rawRequest("u", 1))
	wantCode(t, err, codes.Unimplemented, "ModelInfer RPC doesn't support models with decoupled transaction policy")
}

// Requests of models that are not decoupled keep request order even when
// they finish out of order, while a decoupled request's responses pass
// them.
func TestStreamOrdersNonDecoupledOnly(t *testing.T) {
	release := make(chan struct{})
	core := decoupledCore(func(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error {
		if req.ID == "slow" {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if req.ModelName == "dec" {
			if err := out(indexResponse(req, 7), false); err != nil {
				return err
			}
			return out(nil, true)
		}
		return out(identity(req), true)
	})
	c := start(t, core, Options{})
	s, err := c.infer.ModelStreamInfer(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"slow", "fast", "d"} {
		req := rawRequest(id, uint32(i))
		if id == "d" {
			req.ModelName = "dec"
		}
		if err := s.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	r, err := s.Recv()
	if err != nil || r.GetInferResponse().GetId() != "d" {
		t.Fatalf("first response %v, %v: want the decoupled one", r, err)
	}
	close(release)
	_ = s.CloseSend()
	rest, err := recvAll(t, s)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range rest {
		ids = append(ids, r.GetInferResponse().GetId())
	}
	if fmt.Sprint(ids) != "[slow fast]" {
		t.Fatalf("then %v, want [slow fast]", ids)
	}
}
