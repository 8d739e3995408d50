package v2wire

import (
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/nereid-project/nereid/inference"
)

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

// BenchmarkBinaryDecodeEncode decodes a binary request and encodes the
// echoed binary response into a reused buffer with a reused Call: a front
// end's hot path without the network. Allocations must not grow with the tensor size.
func BenchmarkBinaryDecodeEncode(b *testing.B) {
	for _, size := range []int{16, 1 << 18} {
		b.Run("elems="+strconv.Itoa(size), func(b *testing.B) {
			body, hl := binaryRequest(2, size)
			c := &Call{}
			out := make([]byte, 0, len(body)+4096)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				c.Req.ModelName = "any"
				if err := DecodeJSON(c, body[:hl], body[hl:]); err != nil {
					b.Fatal(err)
				}
				resp := &inference.Response{ModelName: "any", ModelVersion: "1", Outputs: c.Req.Inputs}
				var err error
				out, _, _, err = AppendResponse(out[:0], c, resp)
				if err != nil {
					b.Fatal(err)
				}
				c.Reset()
			}
		})
	}
}

// BenchmarkJSONDecodeEncode does the same for a JSON request with every
// data type.
func BenchmarkJSONDecodeEncode(b *testing.B) {
	c := &Call{}
	body := []byte(allTypesJSON)
	var out []byte
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		c.Req.ModelName = "any"
		if err := DecodeJSON(c, body, nil); err != nil {
			b.Fatal(err)
		}
		resp := &inference.Response{ModelName: "any", ModelVersion: "1", Outputs: c.Req.Inputs}
		var err error
		out, _, _, err = AppendResponse(out[:0], c, resp)
		if err != nil {
			b.Fatal(err)
		}
		c.Reset()
	}
}
