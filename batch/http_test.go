package batch

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/server/v2wire"
)

// v2Server is a KServe v2 HTTP server for vecModel built on the server's
// own codec: Y echoes X. Its first unavailable requests are answered 503;
// a request whose first value is 13 gets 400.
type v2Server struct {
	config      string
	unavailable atomic.Int32
	infers      atomic.Int32
}

func (s *v2Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/v2/models/vec/config", "/v2/models/vec/versions/2/config":
		io.WriteString(w, s.config)
		return
	case "/v2/models/vec/versions/2/infer", "/v2/models/vec/infer":
	default:
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":"Request for unknown model: 'x' is not found"}`)
		return
	}
	if s.unavailable.Add(-1) >= 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":"Exceeds maximum queue size"}`)
		return
	}
	s.infers.Add(1)
	body, _ := io.ReadAll(r.Body)
	n, err := strconv.Atoi(r.Header.Get("Inference-Header-Content-Length"))
	if err != nil {
		n = len(body)
	}
	c := new(v2wire.Call)
	if err := v2wire.DecodeJSON(c, body[:n], body[n:]); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"`+err.Error()+`"}`)
		return
	}
	x := c.Req.Inputs[0]
	if float32s(x.Data)[0] == 13 {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"13 is unlucky"}`)
		return
	}
	resp := &inference.Response{ModelName: "vec", ModelVersion: "1", Outputs: []inference.Tensor{
		{Name: "Y", DataType: x.DataType, Shape: x.Shape, Data: x.Data},
		{Name: "TAG", DataType: inference.Bytes, Shape: []int64{x.Shape[0], 1}, Data: tags(int(x.Shape[0]))},
	}}
	out, hdr, _, err := v2wire.AppendResponse(nil, c, resp)
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.Header().Set("Inference-Header-Content-Length", strconv.Itoa(hdr))
	w.Write(out)
}

func tags(n int) []byte {
	var b []byte
	for range n {
		b = inference.AppendBytesElement(b, []byte("ok"))
	}
	return b
}

func TestHTTPTarget(t *testing.T) {
	srv := &v2Server{config: `{"name":"vec","max_batch_size":4,"input":[{"name":"X","data_type":"TYPE_FP32","dims":["4"]}],"output":[]}`}
	srv.unavailable.Store(2)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	target, err := NewHTTP(strings.TrimPrefix(ts.URL, "http://"), HTTPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := target.Model(context.Background(), "vec", "")
	if err != nil {
		t.Fatal(err)
	}
	if m.MaxBatchSize != 4 || len(m.Inputs) != 1 || m.Inputs[0].DataType != inference.FP32 || !slices.Equal(m.Inputs[0].Dims, []int64{4}) {
		t.Fatalf("model %+v", m)
	}
	if _, err := target.Model(context.Background(), "x", ""); err == nil || inference.CodeOf(err) != inference.CodeNotFound ||
		err.Error() != "Request for unknown model: 'x' is not found" {
		t.Errorf("unknown model: %v", err)
	}

	decoupled := httptest.NewServer(&v2Server{config: `{"name":"vec","max_batch_size":0,"input":[{"name":"X","data_type":"TYPE_FP32","dims":[4]}],` +
		`"model_transaction_policy":{"decoupled":true}}`})
	defer decoupled.Close()
	dt, _ := NewHTTP(decoupled.URL, HTTPOptions{})
	if _, err := dt.Model(context.Background(), "vec", ""); err == nil || !strings.Contains(err.Error(), "decoupled transaction policy") {
		t.Errorf("a decoupled model: %v", err)
	}

	dir := t.TempDir()
	in := filepath.Join(dir, "d.jsonl")
	writeData(t, in, 100, nil)
	out := filepath.Join(dir, "out")
	if _, err := Run(context.Background(), target, Options{Model: "vec", ModelVersion: "2", Input: in, Output: out, BatchSize: 4, MaxErrorFraction: 0.1}); err != nil {
		t.Fatal(err)
	}
	// The batch holding 13 was refused and run again record by record;
	// the two 503s were retried.
	checkOutputs2(t, filepath.Join(out, outName("d")), 100, 13)
	if errs := readLines[errLine](t, filepath.Join(out, errorsName("d"))); len(errs) != 1 || errs[0].Line != 13 || errs[0].Error != "13 is unlucky" {
		t.Errorf("errors %+v", errs)
	}
	if n := srv.infers.Load(); n != 25+4 {
		t.Errorf("%d requests served, want 25 batches and 4 records again", n)
	}
}

// checkOutputs2 checks the output of v2Server: Y echoes X, TAG is "ok".
func checkOutputs2(t *testing.T, path string, n, bad int) {
	t.Helper()
	type line struct {
		Line    int `json:"line"`
		Outputs []struct {
			Name  string  `json:"name"`
			Shape []int64 `json:"shape"`
			Data  []any   `json:"data"`
		} `json:"outputs"`
	}
	got := readLines[line](t, path)
	if len(got) != n-1 {
		t.Fatalf("%d lines, want %d", len(got), n-1)
	}
	want := 1
	for _, l := range got {
		if want == bad {
			want++
		}
		if l.Line != want || len(l.Outputs) != 2 || l.Outputs[0].Data[0] != float64(want) || l.Outputs[1].Data[0] != "ok" ||
			!slices.Equal(l.Outputs[1].Shape, []int64{1, 1}) {
			t.Fatalf("line %+v, want record %d", l, want)
		}
		want++
	}
}

func TestDecodeResponse(t *testing.T) {
	resp, err := decodeResponse([]byte(`{"model_name":"m","model_version":"3","outputs":[{"name":"A","datatype":"INT32","shape":[1,2],"data":[1,2]},`+
		`{"name":"B","datatype":"UINT8","shape":[2],"parameters":{"binary_data_size":2}}]}`), []byte{7, 8})
	if err != nil {
		t.Fatal(err)
	}
	if resp.ModelName != "m" || resp.ModelVersion != "3" || len(resp.Outputs) != 2 || !slices.Equal(resp.Outputs[1].Data, []byte{7, 8}) ||
		!slices.Equal(int32s(t, resp.Outputs[0].Data), []int32{1, 2}) {
		t.Errorf("response %+v", resp)
	}
	for _, bad := range []string{`{"outputs":[{"name":"B","datatype":"UINT8","shape":[3],"parameters":{"binary_data_size":3}}]}`, `{}`, `[`} {
		if _, err := decodeResponse([]byte(bad), []byte{7, 8}); err == nil {
			t.Errorf("%s decoded", bad)
		}
	}
}

func TestEncodeRequest(t *testing.T) {
	req := &inference.Request{ID: "7", Parameters: inference.Parameters{"priority": int64(2)},
		Inputs:  []inference.Tensor{{Name: "X", DataType: inference.Uint8, Shape: []int64{1, 3}, Data: []byte{1, 2, 3}}},
		Outputs: []inference.RequestedOutput{{Name: "Y", Parameters: inference.Parameters{"classification": int64(2)}}}}
	hdr, body := encodeRequest(req)
	c := new(v2wire.Call)
	if err := v2wire.DecodeJSON(c, body[:hdr], body[hdr:]); err != nil {
		t.Fatalf("%s: %v", body[:hdr], err)
	}
	if c.Req.ID != "7" || c.Req.Parameters["priority"] != int64(2) || !slices.Equal(c.Req.Inputs[0].Data, []byte{1, 2, 3}) ||
		len(c.Req.Outputs) != 1 || c.Req.Outputs[0].Parameters["classification"] != int64(2) {
		t.Errorf("decoded %+v", c.Req)
	}
}
