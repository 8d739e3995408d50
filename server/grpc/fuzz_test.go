package grpcfront

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// FuzzDecodeRequest feeds arbitrary bytes, as a client could send them, to
// the ModelInferRequest conversion. It must never panic, and whatever it
// accepts must be a request the core can trust: every input's data agrees
// with its datatype and shape.
func FuzzDecodeRequest(f *testing.F) {
	seeds := []*inferencepb.ModelInferRequest{
		rawRequest("a", 1, 2, 3),
		{ModelName: "m", Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{
			withContents(input("S", "BYTES", 2), &inferencepb.InferTensorContents{BytesContents: [][]byte{[]byte("x"), nil}}),
			withContents(input("I", "INT8", 1, 2), &inferencepb.InferTensorContents{IntContents: []int32{-1, 300}}),
		}},
		{ModelName: "m", Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{input("H", "FP16", 2)},
			RawInputContents: [][]byte{{0, 1, 2, 3}},
			Parameters:       map[string]*inferencepb.InferParameter{"sequence_id": p("s"), "priority": p(uint64(1))},
			Outputs:          []*inferencepb.ModelInferRequest_InferRequestedOutputTensor{{Name: "O", Parameters: map[string]*inferencepb.InferParameter{"classification": p(int64(2))}}}},
		{ModelName: "m", Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{input("B", "BYTES", 1)},
			RawInputContents: [][]byte{{3, 0, 0, 0, 'a', 'b', 'c'}}},
		{ModelName: "m", Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{
			{Name: "S", Datatype: "INT32", Shape: []int64{2}, Parameters: shmParam("r", 4, 8)}, input("R", "INT8", 1)},
			RawInputContents: [][]byte{{7}},
			Outputs:          []*inferencepb.ModelInferRequest_InferRequestedOutputTensor{{Name: "O", Parameters: shmParam("o", 0, 8)}}},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var in inferencepb.ModelInferRequest
		if err := proto.Unmarshal(data, &in); err != nil {
			return
		}
		req, err := decodeRequest(&in)
		if err != nil {
			if inference.CodeOf(err) != inference.CodeInvalidArg && inference.CodeOf(err) != inference.CodeUnsupported {
				t.Fatalf("unexpected error class %v: %v", inference.CodeOf(err), err)
			}
			return
		}
		if len(req.Inputs) != len(in.GetInputs()) {
			t.Fatalf("%d inputs decoded from %d", len(req.Inputs), len(in.GetInputs()))
		}
		// Inputs in shared memory carry no data: the server core reads it
		// from the region. The others must be valid.
		req.Inputs = slices.DeleteFunc(req.Inputs, func(in inference.Tensor) bool {
			_, shm := in.Parameters["shared_memory_region"]
			if shm && in.Data != nil {
				t.Fatalf("input %s in shared memory carries data", in.Name)
			}
			return shm
		})
		for i := range req.Inputs {
			if err := req.Inputs[i].ValidateData(); err != nil {
				t.Fatalf("accepted invalid input: %v", err)
			}
		}
		out := encodeResponse(&in, identity(req))
		if _, err := proto.Marshal(out); err != nil {
			t.Fatalf("response does not marshal: %v", err)
		}
	})
}
