package httpfront

import (
	"bytes"
	"compress/gzip"
	"sync"
	"testing"

	"github.com/nereid-project/nereid/payload"
)

// A gzip bomb is refused at --http-max-input-size, and what its
// decompression took goes back to the payload budget; a compressed body
// that fits is charged while it is served and released after.
func TestInferCompressedBodyBudget(t *testing.T) {
	budget := payload.NewBudget(64<<20, nil)
	h := newHarness(t, Options{MaxInputSize: 8 << 20, PayloadBudget: budget})

	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zero := make([]byte, 1<<20)
	for range 16 {
		zw.Write(zero)
	}
	zw.Close()
	// Many at once: every one refused naming the limit, nothing left in
	// the budget, and the server serves the next compressed request.
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			h.do("POST", "/v2/models/any/infer", gz.Bytes(), "Content-Encoding", "gzip").
				expectError(t, 400, "decompressed request body exceeds the maximum allowed value of 8388608 bytes; use --http-max-input-size")
		})
	}
	wg.Wait()
	if n := budget.InUse(); n != 0 {
		t.Fatalf("budget holds %d bytes after refused bombs", n)
	}
	plain := []byte(`{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[3],"data":[1,2,3]}]}`)
	var ok bytes.Buffer
	zw = gzip.NewWriter(&ok)
	zw.Write(plain)
	zw.Close()
	h.do("POST", "/v2/models/any/infer", ok.Bytes(), "Content-Encoding", "gzip").
		expect(t, 200, `{"model_name":"any","model_version":"1","outputs":[{"name":"OUTPUT0","datatype":"INT32","shape":[3],"data":[1,2,3]}]}`)
	if n := budget.InUse(); n != 0 {
		t.Fatalf("budget holds %d bytes after a served request", n)
	}

	// Over the budget (the body counts twice while it is copied out of the
	// decompression buffer): 503 naming the budget.
	small := payload.NewBudget(3<<20, nil)
	h2 := newHarness(t, Options{MaxInputSize: 8 << 20, PayloadBudget: small})
	gz.Reset()
	zw = gzip.NewWriter(&gz)
	zw.Write(make([]byte, 2<<20))
	zw.Close()
	h2.do("POST", "/v2/models/any/infer", gz.Bytes(), "Content-Encoding", "gzip").
		expectError(t, 503, "--payload-budget-bytes")
	if n := small.InUse(); n != 0 {
		t.Fatalf("budget holds %d bytes after a refusal", n)
	}
}
