package asyncinfer

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/server/restricted"
)

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func deflated(b []byte) []byte {
	var buf bytes.Buffer
	zw := zlib.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// Every body form of the v2 infer endpoint is accepted, stored and run
// with the HTTP port's codec, and its result fetched in the form asked.
func TestSubmitBodyForms(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newService(t, newFakeCore(), t.TempDir(), nil)
		defer shutdown(t, s)

		js := jsonBody("j", 1, 2, 3)
		bin, hdrLen := binaryBody("b", 4, 5, 6)
		raw := binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, math.Float32bits(7)), math.Float32bits(8))
		cases := []struct {
			name   string
			body   []byte
			header map[string]string
			want   []float32
			binary bool
		}{
			{"json", js, nil, []float32{1, 2, 3}, false},
			{"json gzip", gzipped(js), map[string]string{"Content-Encoding": "gzip"}, []float32{1, 2, 3}, false},
			{"json deflate", deflated(js), map[string]string{"Content-Encoding": "deflate"}, []float32{1, 2, 3}, false},
			{"binary", bin, map[string]string{headerInferHeaderLength: strconv.Itoa(hdrLen)}, []float32{4, 5, 6}, true},
			{"binary gzip", gzipped(bin), map[string]string{headerInferHeaderLength: strconv.Itoa(hdrLen), "Content-Encoding": "GZIP"}, []float32{4, 5, 6}, true},
			{"raw", raw, map[string]string{headerInferHeaderLength: "0"}, []float32{7, 8}, true},
		}
		ids := map[string]string{}
		for _, c := range cases {
			ids[c.name] = submit(t, s, "ident", c.body, c.header).ID
		}
		synctest.Wait()
		for _, c := range cases {
			w := call(s, http.MethodGet, resultsPath+ids[c.name], nil, nil)
			if w.Code != http.StatusOK {
				t.Errorf("%s: %d %s", c.name, w.Code, w.Body)
				continue
			}
			body := w.Body.Bytes()
			if !c.binary {
				if ct := w.Header().Get("Content-Type"); ct != contentTypeJSON {
					t.Errorf("%s: Content-Type %q", c.name, ct)
				}
				if got := resultValues(t, body); !equalF32(got, c.want) {
					t.Errorf("%s: %v, want %v", c.name, got, c.want)
				}
				continue
			}
			n, err := strconv.Atoi(w.Header().Get(headerInferHeaderLength))
			if err != nil || n > len(body) || w.Header().Get("Content-Type") != contentTypeBinary {
				t.Errorf("%s: headers %v", c.name, w.Header())
				continue
			}
			if !strings.Contains(string(body[:n]), `"binary_data_size":`+strconv.Itoa(4*len(c.want))) {
				t.Errorf("%s: JSON part %s", c.name, body[:n])
			}
			var got []float32
			for b := body[n:]; len(b) >= 4; b = b[4:] {
				got = append(got, math.Float32frombits(binary.LittleEndian.Uint32(b)))
			}
			if !equalF32(got, c.want) {
				t.Errorf("%s: %v, want %v", c.name, got, c.want)
			}
		}
		st := statusOf(t, s, ids["json"])
		for _, k := range []string{"created", "started", "finished"} {
			if _, ok := st[k].(string); !ok {
				t.Errorf("status lacks %s: %v", k, st)
			}
		}
	})
}

func equalF32(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Requests that cannot be served are refused at submission, with the
// status and text clients see, and leave nothing on disk.
func TestSubmitRefusals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rules := restricted.Rules{}
		if err := rules.AddHTTP("inference:api-key=secret"); err != nil {
			t.Fatal(err)
		}
		s := newService(t, newFakeCore(), t.TempDir(), func(o *Options) {
			o.HeaderForwardPattern = regexp.MustCompile(`(?i)^(x-fwd|triton)`)
			o.Restricted = rules
		})
		defer shutdown(t, s)
		ok := map[string]string{"Api-Key": "secret"}
		with := func(kv ...string) map[string]string {
			h := map[string]string{"Api-Key": "secret"}
			for i := 0; i < len(kv); i += 2 {
				h[kv[i]] = kv[i+1]
			}
			return h
		}
		js := jsonBody("x", 1)
		long := "http://example.com/" + strings.Repeat("a", maxWebhookURL)
		for _, c := range []struct {
			name, method, path string
			body               []byte
			header             map[string]string
			status             int
			text               string
		}{
			{"unknown model", "POST", "/v2/models/nope/infer", js, ok, 404, "Request for unknown model: 'nope' is not found"},
			{"decoupled", "POST", "/v2/models/stream/infer", js, ok, 501, "doesn't support models with decoupled transaction policy"},
			{"version overflow", "POST", "/v2/models/ident/versions/99999999999999999999/infer", js, ok, 400, "failed to get model version"},
			{"encoding", "POST", "/v2/models/ident/infer", js, with("Content-Encoding", "br"), 415, "Unsupported compression type"},
			{"corrupt gzip", "POST", "/v2/models/ident/infer", js, with("Content-Encoding", "gzip"), 400, "failed to decompress the gzip request body"},
			{"header length", "POST", "/v2/models/ident/infer", js, with(headerInferHeaderLength, "-1"), 400, "inference header size should be in range"},
			{"header length text", "POST", "/v2/models/ident/infer", js, with(headerInferHeaderLength, "x"), 400, "inference header size should be in range"},
			{"header past body", "POST", "/v2/models/ident/infer", js, with(headerInferHeaderLength, "1000"), 400,
				"inference header size should be in range (0, " + strconv.Itoa(len(js)) + "), got: 1000"},
			{"webhook scheme", "POST", "/v2/models/ident/infer", js, with(HeaderNotifyURL, "ftp://example.com/x"), 400, "must be an absolute http or https URL"},
			{"webhook relative", "POST", "/v2/models/ident/infer", js, with(HeaderNotifyURL, "/hook"), 400, "must be an absolute http or https URL"},
			{"webhook long", "POST", "/v2/models/ident/infer", js, with(HeaderNotifyURL, long), 400, "is longer than"},
			{"reserved forward", "POST", "/v2/models/ident/infer", js, with("Triton_x", "1"), 400, "reserved for Triton usage"},
			{"restricted", "POST", "/v2/models/ident/infer", js, nil, 403, "This API is restricted, expecting header 'api-key'"},
			{"restricted status", "GET", requestsPath + newID(), nil, nil, 403, "This API is restricted"},
			{"wrong method", "GET", "/v2/models/ident/infer", nil, ok, 405, "method GET is not allowed"},
			{"result method", "DELETE", resultsPath + newID(), nil, ok, 405, "not allowed"},
			{"unknown path", "GET", "/v2/health/ready", nil, ok, 404, "unknown asynchronous inference endpoint"},
			{"bad id", "GET", requestsPath + "../../queue.db", nil, ok, 404, "unknown asynchronous inference endpoint"},
			{"unknown id", "GET", resultsPath + strings.Repeat("0", 32), nil, ok, 404, "is not found"},
			{"unknown id status", "GET", requestsPath + strings.Repeat("0", 32), nil, ok, 404, "is not found"},
			{"unknown id delete", "DELETE", requestsPath + strings.Repeat("0", 32), nil, ok, 404, "is not found"},
		} {
			w := call(s, c.method, c.path, c.body, c.header)
			if w.Code != c.status || !strings.Contains(w.Body.String(), c.text) || !json.Valid(w.Body.Bytes()) {
				t.Errorf("%s: %d %s, want %d %q", c.name, w.Code, w.Body, c.status, c.text)
			}
			if c.status == 415 && w.Header().Get("Accept-Encoding") != "gzip, deflate" {
				t.Errorf("415 without Accept-Encoding")
			}
		}
		// The forward pattern's headers become parameters.
		if sub := submit(t, s, "ident", js, with("X-Fwd-Tag", "v")); sub.ID != "" {
			rec, err := s.store.get(sub.ID)
			if err != nil || rec.Params["X-Fwd-Tag"] != "v" {
				t.Errorf("forwarded %v %v", rec, err)
			}
		}
		synctest.Wait()
		ents, _ := os.ReadDir(filepath.Join(s.store.dir, requestsDir))
		if recs, _, _ := s.store.all(); len(ents) != 0 || len(recs) != 1 {
			t.Errorf("%d request bodies and %d requests left by refusals", len(ents), len(recs))
		}
		if s.depth != 0 {
			t.Errorf("depth %d after refusals", s.depth)
		}
	})
}

// A model that is not loaded but loads on demand is accepted when it is
// in a repository.
func TestSubmitLoadOnDemand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core := newFakeCore()
		core.index = []repository.IndexEntry{{Name: "lazy"}}
		for _, onDemand := range []bool{false, true} {
			s := newService(t, core, t.TempDir(), func(o *Options) { o.LoadOnDemand = onDemand })
			want := http.StatusNotFound
			if onDemand {
				want = http.StatusAccepted
			}
			if w := call(s, http.MethodPost, "/v2/models/lazy/infer", jsonBody("x", 1), nil); w.Code != want {
				t.Errorf("on demand %v: %d %s", onDemand, w.Code, w.Body)
			}
			if w := call(s, http.MethodPost, "/v2/models/absent/infer", jsonBody("x", 1), nil); w.Code != http.StatusNotFound {
				t.Errorf("on demand %v, not in the repository: %d %s", onDemand, w.Code, w.Body)
			}
			synctest.Wait()
			shutdown(t, s)
		}
	})
}

// A request that fails when it runs keeps the error's status and text,
// given by the status endpoint, the result endpoint and the metrics.
func TestFailedRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core := newFakeCore()
		core.failFn = func(r *inference.Request) error {
			if r.ID == "busy" {
				return inference.Unavailable("model is busy")
			}
			return nil
		}
		reg := prometheus.NewRegistry()
		s := newService(t, core, t.TempDir(), func(o *Options) { o.Registerer = reg })
		bad := submit(t, s, "ident", []byte(`{"inputs": [{"name": "INPUT0"}]}`), nil).ID
		busy := submit(t, s, "ident", jsonBody("busy", 1), nil).ID
		good := submit(t, s, "ident", jsonBody("good", 1), nil).ID
		synctest.Wait()
		for _, c := range []struct {
			id     string
			status int
			text   string
		}{{bad, 400, "Input must set only one of the following fields"}, {busy, 503, "model is busy"}} {
			w := call(s, http.MethodGet, resultsPath+c.id, nil, nil)
			var e struct{ Error string }
			if w.Code != c.status || json.Unmarshal(w.Body.Bytes(), &e) != nil || !strings.Contains(e.Error, c.text) {
				t.Errorf("result: %d %s, want %d %q", w.Code, w.Body, c.status, c.text)
			}
			if st := statusOf(t, s, c.id); st["status"] != "failed" || !strings.Contains(st["error"].(string), c.text) {
				t.Errorf("status %v", st)
			}
		}
		if w := call(s, http.MethodGet, resultsPath+good, nil, nil); w.Code != http.StatusOK {
			t.Errorf("good: %d", w.Code)
		}
		if got := metricValue(t, s.met.requests.WithLabelValues("ident", "failed")); got != 2 {
			t.Errorf("failed count %v", got)
		}
		if got := metricValue(t, s.met.requests.WithLabelValues("ident", "done")); got != 1 {
			t.Errorf("done count %v", got)
		}
		if got := metricValue(t, s.met.requests.WithLabelValues("ident", "accepted")); got != 3 {
			t.Errorf("accepted count %v", got)
		}
		shutdown(t, s)
		if fams, err := reg.Gather(); err != nil || len(fams) != 0 {
			t.Errorf("%d metric families left registered after shutdown (%v)", len(fams), err)
		}
	})
}

// The queue depth gauge follows requests pending and running, per
// model, and stays at zero when the queue is empty.
func TestQueueDepthMetric(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core := newFakeCore()
		gate := make(chan struct{})
		core.setGate(gate)
		reg := prometheus.NewRegistry()
		s := newService(t, core, t.TempDir(), func(o *Options) { o.Registerer = reg })
		for range 3 {
			submit(t, s, "ident", jsonBody("x", 1), nil)
		}
		id := submit(t, s, "other", jsonBody("x", 1), nil).ID
		synctest.Wait()
		depth := func(m string) float64 { return metricValue(t, s.met.queueDepth.WithLabelValues(m)) }
		if depth("ident") != 3 || depth("other") != 1 {
			t.Errorf("depths %v %v", depth("ident"), depth("other"))
		}
		close(gate)
		synctest.Wait()
		if depth("ident") != 0 || depth("other") != 0 {
			t.Errorf("depths after %v %v", depth("ident"), depth("other"))
		}
		if _, err := s.store.get(id); err != nil {
			t.Error(err)
		}
		var m dto.Metric
		if err := s.met.duration.WithLabelValues("ident", "done").(prometheus.Metric).Write(&m); err != nil || m.GetHistogram().GetSampleCount() != 3 {
			t.Errorf("duration histogram: %v %v", m.GetHistogram(), err)
		}
		shutdown(t, s)
	})
}

// Over a real connection: bodies over the cap are 413 whether their
// length is declared, chunked or the size of what they decompress to,
// and the client reads the answer; an accepted body streams to disk and
// its result streams back.
func TestOverTheWire(t *testing.T) {
	const limit = 1 << 20
	done := make(chan *Record, 4)
	s := newService(t, newFakeCore(), t.TempDir(), func(o *Options) {
		o.MaxRequestBytes = limit
		o.finished = func(r *Record) { done <- r }
	})
	hs := httptest.NewServer(s)
	defer func() {
		hs.Close()
		shutdown(t, s)
	}()
	big := bytes.Repeat([]byte{' '}, 2*limit)
	post := func(body io.Reader, length int64, header map[string]string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, hs.URL+"/v2/models/ident/infer", body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = length
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	for _, c := range []struct {
		name   string
		body   []byte
		length int64
		header map[string]string
	}{
		{"declared", big, int64(len(big)), nil},
		{"chunked", big, -1, nil},
		{"decompressed", gzipped(big), -1, map[string]string{"Content-Encoding": "gzip"}},
	} {
		code, b := post(struct{ io.Reader }{bytes.NewReader(c.body)}, c.length, c.header)
		if code != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "--async-max-request-bytes") {
			t.Errorf("%s: %d %s", c.name, code, b)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(s.store.dir, requestsDir)); len(ents) != 0 {
		t.Errorf("%d partial bodies left", len(ents))
	}
	values := make([]float32, (limit-4096)/4)
	for i := range values {
		values[i] = float32(i)
	}
	body, hdrLen := binaryBody("w", values...)
	code, b := post(bytes.NewReader(body), int64(len(body)), map[string]string{headerInferHeaderLength: strconv.Itoa(hdrLen)})
	if code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", code, b)
	}
	var sub submitted
	if err := json.Unmarshal(b, &sub); err != nil || sub.ResultURL != hs.URL+resultsPath+sub.ID {
		t.Fatalf("%s: %v", b, err)
	}
	if r := <-done; r.ID != sub.ID || r.State != StateDone {
		t.Fatalf("outcome %+v", r)
	}
	get, err := hs.Client().Get(sub.ResultURL)
	if err != nil {
		t.Fatal(err)
	}
	defer get.Body.Close()
	result, _ := io.ReadAll(get.Body)
	n, _ := strconv.Atoi(get.Header.Get(headerInferHeaderLength))
	if get.StatusCode != http.StatusOK || len(result)-n != 4*len(values) || !bytes.Equal(result[n:], body[hdrLen:]) {
		t.Errorf("result: %d, %d bytes, header %d", get.StatusCode, len(result), n)
	}
}

// metricValue reads a gauge or counter.
func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetGauge().GetValue() + d.GetCounter().GetValue()
}
