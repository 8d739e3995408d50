package grpcfront

import (
	"compress/gzip"
	"context"
	"io"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// countingGzip replaces the gzip compressor in this test binary, counting
// what the server compresses.
type countingGzip struct{ compressed *atomic.Int64 }

var gzipCompressions atomic.Int64

func init() { encoding.RegisterCompressor(countingGzip{&gzipCompressions}) }

func (countingGzip) Name() string { return "gzip" }

func (c countingGzip) Compress(w io.Writer) (io.WriteCloser, error) {
	c.compressed.Add(1)
	return gzip.NewWriter(w), nil
}

func (countingGzip) Decompress(r io.Reader) (io.Reader, error) { return gzipCompressor{}.Decompress(r) }

func TestCompression(t *testing.T) {
	core := &fakeCore{infer: func(_ context.Context, req *inference.Request) (*inference.Response, error) {
		return identity(req), nil
	}}
	req := &inferencepb.ModelInferRequest{ModelName: "id",
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{input("IN", "FP32", 64)}, RawInputContents: [][]byte{make([]byte, 256)}}
	for _, tc := range []struct {
		level    string
		opts     []grpc.CallOption
		wantGzip bool
	}{
		{"none", nil, false},
		{"high", nil, true}, // the level compresses responses
		{"none", []grpc.CallOption{grpc.UseCompressor("gzip")}, true}, // answered as asked
		{"none", []grpc.CallOption{grpc.UseCompressor("deflate")}, false},
		{"low", []grpc.CallOption{grpc.UseCompressor("deflate")}, true}, // a level answers gzip whatever was asked
	} {
		c := start(t, core, Options{InferResponseCompression: tc.level})
		before := gzipCompressions.Load()
		resp, err := c.infer.ModelInfer(testCtx(t), req, tc.opts...)
		if err != nil {
			t.Fatalf("level %s %v: %v", tc.level, tc.opts, err)
		}
		if got := resp.GetRawOutputContents()[0]; len(got) != 256 {
			t.Fatalf("output of %d bytes", len(got))
		}
		// The client's own gzip request counts one compression too.
		compressed := gzipCompressions.Load() - before
		if asked := len(tc.opts) > 0 && tc.opts[0].(grpc.CompressorCallOption).CompressorType == "gzip"; asked {
			compressed--
		}
		if (compressed > 0) != tc.wantGzip {
			t.Errorf("level %s %v: %d gzip compressions of the response", tc.level, tc.opts, compressed)
		}
	}
	if _, err := responseCompressor("max"); err == nil {
		t.Error("level max accepted")
	}
}

func TestHeaderForwarding(t *testing.T) {
	var seen inference.Parameters
	core := &fakeCore{infer: func(_ context.Context, req *inference.Request) (*inference.Response, error) {
		seen = req.Parameters
		return identity(req), nil
	}}
	re, err := inference.CompileForwardPattern("grpc-header-forward-pattern", "^x-")
	if err != nil {
		t.Fatal(err)
	}
	c := start(t, core, Options{HeaderForwardPattern: re})
	req := &inferencepb.ModelInferRequest{ModelName: "id",
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{input("IN", "FP32", 1)}, RawInputContents: [][]byte{make([]byte, 4)}}
	ctx := metadata.AppendToOutgoingContext(testCtx(t), "x-tenant", "a", "x-tenant", "b", "other", "c")
	if _, err := c.infer.ModelInfer(ctx, req); err != nil {
		t.Fatal(err)
	}
	if seen["x-tenant"] != "b" || seen["other"] != nil {
		t.Errorf("parameters %v", seen)
	}
	re2, _ := inference.CompileForwardPattern("grpc-header-forward-pattern", "^triton_")
	c2 := start(t, core, Options{HeaderForwardPattern: re2})
	ctx = metadata.AppendToOutgoingContext(testCtx(t), "triton_x", "1")
	_, err = c2.infer.ModelInfer(ctx, req)
	wantCode(t, err, codes.InvalidArgument, "reserved for Triton usage")
}
