package grpcfront

import (
	"context"
	"errors"
	"io"
	"strconv"
	"testing"

	"go.uber.org/goleak"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

type inferStream = grpc.BidiStreamingClient[inferencepb.ModelInferRequest, inferencepb.ModelStreamInferResponse]

func rawRequest(id string, vals ...uint32) *inferencepb.ModelInferRequest {
	return &inferencepb.ModelInferRequest{
		ModelName:        "m",
		Id:               id,
		Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{input("IN", "UINT32", int64(len(vals)))},
		RawInputContents: [][]byte{le32(vals...)},
	}
}

// recvAll reads until the server ends the stream and returns the responses
// and the final error (nil for a clean end).
func recvAll(t *testing.T, s inferStream) ([]*inferencepb.ModelStreamInferResponse, error) {
	t.Helper()
	var out []*inferencepb.ModelStreamInferResponse
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
}

func isFinal(r *inferencepb.ModelInferResponse) bool {
	p, ok := r.GetParameters()[paramFinalResponse]
	return ok && p.GetBoolParam()
}

func TestStreamManyRequestsInOrder(t *testing.T) {
	c := start(t, &fakeCore{}, Options{})
	s, err := c.infer.ModelStreamInfer(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	for i := range n {
		if err := s.Send(rawRequest(strconv.Itoa(i), uint32(i), uint32(i*2))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	resps, err := recvAll(t, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(resps) != n {
		t.Fatalf("got %d responses, want %d", len(resps), n)
	}
	for i, r := range resps {
		ir := r.GetInferResponse()
		if r.GetErrorMessage() != "" || ir.GetId() != strconv.Itoa(i) || !isFinal(ir) {
			t.Fatalf("response %d = %v", i, r)
		}
		if string(ir.GetRawOutputContents()[0]) != string(le32(uint32(i), uint32(i*2))) {
			t.Errorf("response %d data %x", i, ir.GetRawOutputContents()[0])
		}
	}
}

func TestStreamRunsRequestsConcurrentlyButAnswersInOrder(t *testing.T) {
	// Request "0" cannot finish before request "1" has: a server that ran
	// them one at a time would deadlock (and the test time out), and one
	// that wrote in completion order would answer "1" first.
	secondDone := make(chan struct{})
	core := &fakeCore{infer: func(ctx context.Context, req *inference.Request) (*inference.Response, error) {
		switch req.ID {
		case "0":
			select {
			case <-secondDone:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		case "1":
			defer close(secondDone)
		}
		return identity(req), nil
	}}
	c := start(t, core, Options{})
	s, err := c.infer.ModelStreamInfer(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"0", "1"} {
		if err := s.Send(rawRequest(id, 1)); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.CloseSend()
	resps, err := recvAll(t, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(resps) != 2 || resps[0].GetInferResponse().GetId() != "0" || resps[1].GetInferResponse().GetId() != "1" {
		t.Fatalf("responses = %v", resps)
	}
}

func TestStreamBoundsRequestsInFlight(t *testing.T) {
	const limit, n = 2, 6
	var inside counter
	release := make([]chan struct{}, n)
	for i := range release {
		release[i] = make(chan struct{})
	}
	entered := make(chan struct{}, n)
	core := &fakeCore{infer: func(ctx context.Context, req *inference.Request) (*inference.Response, error) {
		inside.enter()
		defer inside.leave()
		entered <- struct{}{}
		i, _ := strconv.Atoi(req.ID)
		select {
		case <-release[i]:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return identity(req), nil
	}}
	c := start(t, core, Options{MaxStreamInFlight: limit})
	s, err := c.infer.ModelStreamInfer(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := s.Send(rawRequest(strconv.Itoa(i), 1)); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.CloseSend()
	for range limit {
		<-entered
	}
	for i := range n {
		close(release[i])
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetInferResponse().GetId() != strconv.Itoa(i) {
			t.Fatalf("response %d has id %q", i, r.GetInferResponse().GetId())
		}
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("stream end = %v", err)
	}
	if got := inside.peak(); got > limit {
		t.Errorf("%d requests ran at once, limit %d", got, limit)
	}
}

func TestStreamInBandErrors(t *testing.T) {
	core := &fakeCore{infer: func(_ context.Context, req *inference.Request) (*inference.Response, error) {
		if req.ID == "fail" {
			return nil, inference.Unavailable("exceeds maximum queue size")
		}
		return identity(req), nil
	}}
	c := start(t, core, Options{})
	s, err := c.infer.ModelStreamInfer(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	bad := rawRequest("bad")
	bad.Parameters = map[string]*inferencepb.InferParameter{"sequence_id": p(uint64(3))}
	for _, req := range []*inferencepb.ModelInferRequest{rawRequest("a", 1), bad, rawRequest("fail", 1), rawRequest("b", 2)} {
		if err := s.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.CloseSend()
	resps, err := recvAll(t, s)
	if err != nil {
		t.Fatalf("stream ended with %v; in-band errors must keep it open", err)
	}
	if len(resps) != 4 {
		t.Fatalf("got %d responses", len(resps))
	}
	for i, want := range []struct{ id, msg string }{
		{"a", ""},
		{"bad", "invalid value type for 'sequence_id' parameter, expected int64_param or string_param."},
		{"fail", "exceeds maximum queue size"},
		{"b", ""},
	} {
		r := resps[i]
		if r.GetErrorMessage() != want.msg || r.GetInferResponse().GetId() != want.id {
			t.Errorf("response %d = %v, want id %q error %q", i, r, want.id, want.msg)
		}
		if want.msg != "" {
			// Only the id, as Triton sends it.
			if got := (&inferencepb.ModelInferResponse{Id: want.id}); r.GetInferResponse().String() != got.String() {
				t.Errorf("error response %d carries more than the id: %v", i, r.GetInferResponse())
			}
		} else if !isFinal(r.GetInferResponse()) {
			t.Errorf("response %d lacks triton_final_response", i)
		}
	}
}

func TestStreamGRPCErrorMode(t *testing.T) {
	core := &fakeCore{infer: func(ctx context.Context, req *inference.Request) (*inference.Response, error) {
		if req.ID == "fail" {
			return nil, inference.InvalidArg("input 'IN' is bad")
		}
		return identity(req), nil
	}}
	c := start(t, core, Options{})
	// Connect first, so that the connection's own goroutines are running
	// before the snapshot of what the stream may leave behind.
	if _, err := c.infer.ServerLive(testCtx(t), &inferencepb.ServerLiveRequest{}); err != nil {
		t.Fatal(err)
	}
	running := goleak.IgnoreCurrent()
	for _, val := range []string{"true", "True"} {
		ctx := metadata.AppendToOutgoingContext(testCtx(t), "triton_grpc_error", val)
		s, err := c.infer.ModelStreamInfer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"ok", "fail", "never"} {
			if err := s.Send(rawRequest(id, 1)); err != nil && !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
		}
		resps, err := recvAll(t, s)
		wantCode(t, err, codes.InvalidArgument, "input 'IN' is bad")
		if len(resps) != 1 || resps[0].GetInferResponse().GetId() != "ok" {
			t.Errorf("responses before the error = %v", resps)
		}
		// The stream's goroutines (its reader included) are gone while the
		// connection stays open.
		goleak.VerifyNone(t, running)
	}

	// Without the metadata (or with another value) the same error is in-band.
	ctx := metadata.AppendToOutgoingContext(testCtx(t), "triton_grpc_error", "false")
	s, err := c.infer.ModelStreamInfer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Send(rawRequest("fail", 1))
	_ = s.CloseSend()
	resps, err := recvAll(t, s)
	if err != nil || len(resps) != 1 || resps[0].GetErrorMessage() != "input 'IN' is bad" {
		t.Errorf("in-band mode: %v, %v", resps, err)
	}
}

func TestStreamClientCancelCancelsInference(t *testing.T) {
	entered := make(chan struct{})
	cancelled := make(chan struct{})
	core := &fakeCore{infer: func(ctx context.Context, req *inference.Request) (*inference.Response, error) {
		close(entered)
		<-ctx.Done()
		close(cancelled)
		return nil, inference.Errorf(inference.CodeCancelled, "request cancelled")
	}}
	c := start(t, core, Options{})
	ctx, cancel := context.WithCancel(testCtx(t))
	s, err := c.infer.ModelStreamInfer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(rawRequest("x", 1)); err != nil {
		t.Fatal(err)
	}
	<-entered
	cancel()
	<-cancelled // the server cancelled the inference
	_, err = s.Recv()
	if status.Code(err) != codes.Canceled {
		t.Errorf("Recv after cancel = %v", err)
	}
}

func TestStreamEmptyAndImmediateClose(t *testing.T) {
	c := start(t, &fakeCore{}, Options{})
	s, err := c.infer.ModelStreamInfer(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	_ = s.CloseSend()
	resps, err := recvAll(t, s)
	if err != nil || len(resps) != 0 {
		t.Errorf("empty stream: %v, %v", resps, err)
	}
}

func TestStreamResponseParametersKept(t *testing.T) {
	core := &fakeCore{infer: func(_ context.Context, req *inference.Request) (*inference.Response, error) {
		r := identity(req)
		r.Parameters = inference.Parameters{"sequence_end": true}
		return r, nil
	}}
	c := start(t, core, Options{})
	s, err := c.infer.ModelStreamInfer(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Send(rawRequest("x", 1))
	_ = s.CloseSend()
	resps, err := recvAll(t, s)
	if err != nil || len(resps) != 1 {
		t.Fatal(resps, err)
	}
	ps := resps[0].GetInferResponse().GetParameters()
	if !ps["sequence_end"].GetBoolParam() || !ps[paramFinalResponse].GetBoolParam() || len(ps) != 2 {
		t.Errorf("parameters = %v", ps)
	}
}
