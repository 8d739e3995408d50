package grpcfront

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/server"
	"github.com/nereid-project/nereid/server/servertest"
)

// repeatCore is the server core serving "rep" (servertest.RepeatConfig).
func repeatCore(t *testing.T) *server.Server {
	t.Helper()
	return servertest.Core(t, map[string]string{"rep": servertest.RepeatConfig})
}

// repeatRequest asks "rep" for one response per element of in, with the
// given DELAY elements.
func repeatRequest(id string, in []uint32, delay []uint32) *inferencepb.ModelInferRequest {
	return &inferencepb.ModelInferRequest{
		ModelName: "rep",
		Id:        id,
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{
			input("IN", "INT32", int64(len(in))), input("DELAY", "UINT32", int64(len(delay))), input("WAIT", "UINT32", 1),
		},
		RawInputContents: [][]byte{le32(in...), le32(delay...), le32(0)},
	}
}

func askEmptyFinal(req *inferencepb.ModelInferRequest) *inferencepb.ModelInferRequest {
	req.Parameters = map[string]*inferencepb.InferParameter{paramEnableEmptyFinal: p(true)}
	return req
}

// finalError is the infer_response of an in-band error that ends a request
// its model ran: Triton 2.51's, with the model name and the final flag and
// no version.
func finalError(id, model string) *inferencepb.ModelInferResponse {
	return &inferencepb.ModelInferResponse{Id: id, ModelName: model, Parameters: map[string]*inferencepb.InferParameter{paramFinalResponse: p(true)}}
}

// streamByID sends reqs on one stream, closes it and returns every message
// by request id, in the order each request's arrived.
func streamByID(t *testing.T, c clients, reqs ...*inferencepb.ModelInferRequest) map[string][]*inferencepb.ModelStreamInferResponse {
	t.Helper()
	s, err := c.infer.ModelStreamInfer(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range reqs {
		if err := s.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.CloseSend()
	resps, err := recvAll(t, s)
	if err != nil {
		t.Fatalf("stream ended with %v; in-band errors must keep it open", err)
	}
	got := map[string][]*inferencepb.ModelStreamInferResponse{}
	for _, r := range resps {
		id := r.GetInferResponse().GetId()
		got[id] = append(got[id], r)
	}
	return got
}

// A request that its model fails ends with one error message that names
// the model and carries triton_final_response true, whether or not the
// empty final response was asked for, so that a client waiting for the
// final flag stops; one the core refuses before the model runs gets the
// request id alone. The real core and repeat backend decide which is which.
func TestStreamModelErrorEndsRequestWithFinalFlag(t *testing.T) {
	c := start(t, repeatCore(t), Options{})
	wrongType := repeatRequest("wrong-type", []uint32{1}, []uint32{1})
	wrongType.Inputs[0].Datatype = "UINT32"
	unknown := repeatRequest("unknown", []uint32{1}, []uint32{1})
	unknown.ModelName = "nope"
	got := streamByID(t, c,
		repeatRequest("model-error", []uint32{4, 5, 6}, []uint32{1}),
		askEmptyFinal(repeatRequest("model-error-empty-final", []uint32{4, 5, 6}, []uint32{1})),
		repeatRequest("", []uint32{4, 5, 6}, []uint32{1, 2}),
		wrongType,
		askEmptyFinal(unknown),
		askEmptyFinal(repeatRequest("good", []uint32{7, 8}, []uint32{0, 0})),
	)
	for _, id := range []string{"model-error", "model-error-empty-final", ""} {
		msgs := got[id]
		if len(msgs) != 1 {
			t.Fatalf("request %q: %d messages %v, want the error alone", id, len(msgs), msgs)
		}
		if !strings.Contains(msgs[0].GetErrorMessage(), "inputs IN and DELAY must have the same number of elements") {
			t.Errorf("request %q: error %q", id, msgs[0].GetErrorMessage())
		}
		if want := finalError(id, "rep"); !proto.Equal(msgs[0].GetInferResponse(), want) {
			t.Errorf("request %q: error's infer_response %v, want %v", id, msgs[0].GetInferResponse(), want)
		}
	}
	for id, substr := range map[string]string{
		"wrong-type": "data-type is 'UINT32', but model 'rep' expects 'INT32'",
		"unknown":    "Request for unknown model: 'nope'",
	} {
		msgs := got[id]
		if len(msgs) != 1 || !strings.Contains(msgs[0].GetErrorMessage(), substr) {
			t.Fatalf("request %q: %v, want one error containing %q", id, msgs, substr)
		}
		// Refused before the model ran: the id alone, as Triton sends it.
		if want := (&inferencepb.ModelInferResponse{Id: id}); !proto.Equal(msgs[0].GetInferResponse(), want) {
			t.Errorf("request %q: error's infer_response %v, want %v", id, msgs[0].GetInferResponse(), want)
		}
	}
	good := got["good"]
	if len(good) != 3 || good[0].GetErrorMessage() != "" || isFinal(good[0].GetInferResponse()) || !isFinal(good[2].GetInferResponse()) {
		t.Errorf("good request after the errors: %v", good)
	}
}

// An error after some responses is the request's last message, with the
// final flag; a model that is not decoupled (written in request order)
// gets the same.
func TestStreamModelErrorAfterResponses(t *testing.T) {
	core := decoupledCore(func(_ context.Context, req *inference.Request, out inference.ResponseFunc) error {
		req.Timing.ComputeStart = time.Now() // the core handed the request to its model
		if req.ModelName == "dec" {
			if err := out(indexResponse(req, 0), false); err != nil {
				return err
			}
		}
		return inference.Internal("model %q failed", req.ModelName)
	})
	c := start(t, core, Options{})
	dec := rawRequest("d", 1)
	dec.ModelName = "dec"
	got := streamByID(t, c, dec, rawRequest("m", 1))
	if d := got["d"]; len(d) != 2 || d[0].GetErrorMessage() != "" || isFinal(d[0].GetInferResponse()) ||
		d[1].GetErrorMessage() != `model "dec" failed` || !proto.Equal(d[1].GetInferResponse(), finalError("d", "dec")) {
		t.Errorf("decoupled: %v", d)
	}
	if m := got["m"]; len(m) != 1 || m[0].GetErrorMessage() != `model "m" failed` || !proto.Equal(m[0].GetInferResponse(), finalError("m", "m")) {
		t.Errorf("not decoupled: %v", m)
	}
}
