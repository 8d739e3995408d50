package grpcfront

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/nereid-project/nereid/proto/inferencepb"
)

// benchRequest is an image-sized FP32 input plus a small INT64 one, both raw.
func benchRequest() *inferencepb.ModelInferRequest {
	img := make([]byte, 3*224*224*4)
	return &inferencepb.ModelInferRequest{
		ModelName: "resnet", Id: "bench",
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{
			input("INPUT__0", "FP32", 1, 3, 224, 224),
			input("LEN", "INT64", 1, 1),
		},
		Outputs:          []*inferencepb.ModelInferRequest_InferRequestedOutputTensor{{Name: "OUTINPUT__0"}, {Name: "OUTLEN"}},
		RawInputContents: [][]byte{img, le64(7)},
	}
}

// BenchmarkDecodeEncodeRaw measures the front end's own work on the hot
// path: raw request → inference.Request → (identity) → ModelInferResponse.
func BenchmarkDecodeEncodeRaw(b *testing.B) {
	in := benchRequest()
	b.SetBytes(int64(len(in.RawInputContents[0])))
	b.ReportAllocs()
	for b.Loop() {
		req, err := decodeRequest(in)
		if err != nil {
			b.Fatal(err)
		}
		_ = encodeResponse(in, identity(req))
	}
}

// BenchmarkDecodeEncodeRawWire adds the protobuf unmarshal and marshal that
// gRPC does around the conversion.
func BenchmarkDecodeEncodeRawWire(b *testing.B) {
	wire, err := proto.Marshal(benchRequest())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	for b.Loop() {
		var in inferencepb.ModelInferRequest
		if err := proto.Unmarshal(wire, &in); err != nil {
			b.Fatal(err)
		}
		req, err := decodeRequest(&in)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := proto.Marshal(encodeResponse(&in, identity(req))); err != nil {
			b.Fatal(err)
		}
	}
}
