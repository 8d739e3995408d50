//go:build cgo

package onnxruntime

import (
	"bytes"
	"testing"

	"github.com/nereid-project/nereid/inference"
)

// FuzzStringTensor feeds arbitrary BYTES data to the C code that parses the
// protocol's length prefixes into an ONNX Runtime string tensor: well-formed
// data must round-trip exactly (NUL bytes included), anything else must
// fail cleanly, whatever element count the caller claims.
func FuzzStringTensor(f *testing.F) {
	testBackend(f)
	f.Add(bytesElems("hello", "", "nul\x00inside"), int64(0))
	f.Add([]byte{5, 0, 0, 0, 'a'}, int64(1))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, int64(2))
	f.Fuzz(func(t *testing.T, data []byte, extra int64) {
		n, err := inference.CountBytesElements("x", data)
		claimed := n + extra%4
		if err != nil || claimed < 0 {
			claimed = max(extra%8, 0)
		}
		v, verr := stringTensor(data, []int64{claimed}, claimed)
		if verr != nil {
			if err == nil && claimed == n {
				t.Fatalf("well-formed data with the right count failed: %v", verr)
			}
			return
		}
		defer releaseValue(v)
		if err != nil || claimed != n {
			t.Fatalf("accepted malformed data (count error %v, claimed %d of %d)", err, claimed, n)
		}
		got, gerr := stringData(v, int(claimed))
		if gerr != nil {
			t.Fatal(gerr)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("round trip: got %q, want %q", got, data)
		}
	})
}
