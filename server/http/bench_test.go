package httpfront

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/nereid-project/nereid/inference"
)

// echoCore answers every request with its inputs, copying nothing, so that
// benchmarks measure the front end alone.
type echoCore struct{ *fakeCore }

func (e echoCore) Infer(_ context.Context, req *inference.Request) (*inference.Response, error) {
	return &inference.Response{ModelName: req.ModelName, ModelVersion: "1", Outputs: req.Inputs}, nil
}

// binaryRequest builds a binary request with n FP32 inputs of size
// elements each, every output asked for in binary.
func binaryRequest(n, size int) ([]byte, int) {
	hdr := `{"inputs":[`
	outs := ""
	for i := 0; i < n; i++ {
		if i > 0 {
			hdr += ","
			outs += ","
		}
		hdr += `{"name":"INPUT` + strconv.Itoa(i) + `","datatype":"FP32","shape":[1,` + strconv.Itoa(size) +
			`],"parameters":{"binary_data_size":` + strconv.Itoa(4*size) + `}}`
		outs += `{"name":"INPUT` + strconv.Itoa(i) + `","parameters":{"binary_data":true}}`
	}
	hdr += `],"outputs":[` + outs + `]}`
	body := []byte(hdr)
	for i := 0; i < n*size; i++ {
		body = appendF32(body, rand.Float32())
	}
	return body, len(hdr)
}

// BenchmarkHandlerBinary runs the whole infer handler (routing, headers,
// decode, request context and disconnect-watch timer, core call, encode)
// on a fasthttp request context.
func BenchmarkHandlerBinary(b *testing.B) {
	for _, size := range []int{16, 1 << 18} {
		b.Run("elems="+strconv.Itoa(size), func(b *testing.B) {
			body, hl := binaryRequest(2, size)
			s := New(echoCore{newFakeCore()}, Options{Logger: zerolog.Nop()})
			handler := s.Handler()
			var req fasthttp.Request
			req.Header.SetMethod("POST")
			req.SetRequestURI("/v2/models/any/infer")
			req.Header.Set(headerInferHeaderLength, strconv.Itoa(hl))
			req.SetBody(body)
			var ctx fasthttp.RequestCtx
			ctx.Init(&req, nil, nil)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				handler(&ctx)
				if ctx.Response.StatusCode() != 200 {
					b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
				}
				ctx.Response.Reset()
			}
		})
	}
}
