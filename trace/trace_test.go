package trace

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/nereid-project/nereid/inference"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newTracer(t *testing.T, flags ...string) *Tracer {
	t.Helper()
	s, err := ParseConfig(flags)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := New(Options{Settings: s, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// traceRequest samples and finishes one request the way a front end does.
func traceRequest(tr *Tracer, model string) bool {
	t := tr.Sample(model)
	if t == nil {
		return false
	}
	now := time.Now()
	req := &inference.Request{ModelName: model, ID: "req-1"}
	req.Timing = inference.Timing{
		QueueStart: now.Add(2 * time.Microsecond), ComputeStart: now.Add(3 * time.Microsecond),
		ComputeInputEnd: now.Add(4 * time.Microsecond), ComputeOutputStart: now.Add(5 * time.Microsecond), ComputeEnd: now.Add(6 * time.Microsecond),
	}
	t.Record("HTTP_RECV_START", now)
	t.Record("HTTP_RECV_END", now.Add(time.Microsecond))
	t.Request(req, &inference.Response{ModelVersion: "3"}, now.Add(time.Microsecond), now.Add(7*time.Microsecond))
	t.Record("HTTP_SEND_START", now.Add(8*time.Microsecond))
	t.Record("HTTP_SEND_END", now.Add(9*time.Microsecond))
	t.Finish()
	return true
}

type record struct {
	ID           uint64 `json:"id"`
	ModelName    string `json:"model_name"`
	ModelVersion *int64 `json:"model_version"`
	RequestID    string `json:"request_id"`
	Timestamps   []struct {
		Name string `json:"name"`
		NS   int64  `json:"ns"`
	} `json:"timestamps"`
}

func readRecords(t *testing.T, path string) []record {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []record
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("%s is not a JSON array of records: %v\n%s", path, err, data)
	}
	return out
}

func TestSamplingRateAndCount(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "trace.json")
	tr := newTracer(t, "level=TIMESTAMPS", "rate=3", "count=2", "triton,file="+file)
	var taken []int
	for i := 1; i <= 12; i++ {
		if traceRequest(tr, "m") {
			taken = append(taken, i)
		}
	}
	if len(taken) != 2 || taken[0] != 3 || taken[1] != 6 {
		t.Fatalf("traced requests %v, want every 3rd up to 2 traces", taken)
	}
	if s := tr.Settings(""); s.Count != 0 {
		t.Errorf("trace_count left %d", s.Count)
	}
	// The count is used up: the traces went to the first indexed file.
	recs := readRecords(t, file+".0")
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	var names []string
	ids := map[uint64]bool{}
	for _, r := range recs {
		ids[r.ID] = true
		if r.ModelName != "" {
			if r.ModelName != "m" || r.ModelVersion == nil || *r.ModelVersion != 3 || r.RequestID != "req-1" {
				t.Errorf("header %+v", r)
			}
			names = append(names, "HEADER")
		}
		for _, ts := range r.Timestamps {
			names = append(names, ts.Name)
			if ts.NS <= 0 {
				t.Errorf("timestamp %+v", ts)
			}
		}
	}
	if len(ids) != 2 {
		t.Errorf("trace ids %v", ids)
	}
	want := "HTTP_RECV_START HTTP_RECV_END HEADER REQUEST_START QUEUE_START COMPUTE_START COMPUTE_INPUT_END COMPUTE_OUTPUT_START COMPUTE_END REQUEST_END HTTP_SEND_START HTTP_SEND_END"
	if got := strings.Join(names[:len(names)/2], " "); got != want {
		t.Errorf("records\n got %s\nwant %s", got, want)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("nothing was left for the main trace file: %v", err)
	}
}

func TestLogFrequencyAndShutdownFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "t.json")
	tr := newTracer(t, "level=TIMESTAMPS", "rate=1", "triton,file="+file, "triton,log-frequency=2")
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() { traceRequest(tr, "m") })
	}
	wg.Wait()
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Two full files of two traces, and the last trace flushed to a third
	// indexed file at shutdown.
	total := 0
	for i, want := range []int{2, 2, 1} {
		recs := readRecords(t, file+"."+string(rune('0'+i)))
		ids := map[uint64]bool{}
		for _, r := range recs {
			ids[r.ID] = true
		}
		if len(ids) != want {
			t.Errorf("file %d: %d traces, want %d", i, len(ids), want)
		}
		total += len(ids)
	}
	if total != 5 {
		t.Errorf("%d traces", total)
	}

	// Without log_frequency the traces go to the trace file at shutdown.
	file2 := filepath.Join(dir, "all.json")
	tr2 := newTracer(t, "level=TIMESTAMPS", "rate=1", "triton,file="+file2)
	for range 3 {
		traceRequest(tr2, "m")
	}
	if err := tr2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	ids := map[uint64]bool{}
	for _, r := range readRecords(t, file2) {
		ids[r.ID] = true
	}
	if len(ids) != 3 {
		t.Errorf("%d traces in the trace file", len(ids))
	}
}

func update(t *testing.T, kv map[string][]string) Update {
	t.Helper()
	u, err := ParseUpdate(kv)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestSettingsUpdates(t *testing.T) {
	file := filepath.Join(t.TempDir(), "g.json")
	tr := newTracer(t, "triton,file="+file)
	defer tr.Close(context.Background())
	if traceRequest(tr, "m") {
		t.Fatal("tracing is off by default")
	}
	pairs := func(s Settings) map[string]string {
		out := map[string]string{}
		for _, p := range s.Pairs() {
			out[p.Key] = strings.Join(p.Values, "|")
		}
		return out
	}
	g := pairs(tr.Settings(""))
	if g["trace_level"] != "OFF" || g["trace_rate"] != "1000" || g["trace_count"] != "-1" || g["log_frequency"] != "0" || g["trace_file"] != file || g["trace_mode"] != "triton" {
		t.Fatalf("defaults %v", g)
	}
	// A model override of the level and rate; the rest follows the global settings.
	s, err := tr.Update("m", update(t, map[string][]string{"trace_level": {"TIMESTAMPS"}, "trace_rate": {"1"}}))
	if err != nil {
		t.Fatal(err)
	}
	if p := pairs(s); p["trace_level"] != "TIMESTAMPS" || p["trace_rate"] != "1" || p["trace_count"] != "-1" {
		t.Errorf("model settings %v", p)
	}
	if !traceRequest(tr, "m") || traceRequest(tr, "other") {
		t.Error("only model m is traced")
	}
	// A global change reaches the fields the model inherits.
	if _, err := tr.Update("", update(t, map[string][]string{"trace_count": {"5"}, "log_frequency": {"7"}})); err != nil {
		t.Fatal(err)
	}
	if p := pairs(tr.Settings("m")); p["trace_count"] != "5" || p["log_frequency"] != "7" || p["trace_rate"] != "1" {
		t.Errorf("model after global update %v", p)
	}
	// Clearing the model's own fields drops the override.
	if s, err = tr.Update("m", update(t, map[string][]string{"trace_level": nil, "trace_rate": nil})); err != nil {
		t.Fatal(err)
	}
	if p := pairs(s); p["trace_level"] != "OFF" || p["trace_rate"] != "1000" {
		t.Errorf("cleared %v", p)
	}
	// Clearing a global field returns it to the start-up value.
	if s, err = tr.Update("", update(t, map[string][]string{"trace_count": nil})); err != nil || s.Count != -1 {
		t.Errorf("global clear %+v %v", s, err)
	}
	// Settings that cannot trace are refused unless they turn tracing off.
	_, err = tr.Update("", update(t, map[string][]string{"trace_level": {"TIMESTAMPS"}, "trace_rate": {"0"}}))
	if err == nil || err.Error() != "Attempting to set invalid trace setting :sample rate must be non-zero" || inference.CodeOf(err) != inference.CodeInvalidArg {
		t.Errorf("rate 0: %v", err)
	}
	if _, err := tr.Update("", update(t, map[string][]string{"trace_rate": {"0"}})); err != nil {
		t.Errorf("rate 0 with tracing off: %v", err)
	}
	notrace := newTracer(t)
	defer notrace.Close(context.Background())
	if _, err := notrace.Update("", update(t, map[string][]string{"trace_level": {"TIMESTAMPS"}})); err == nil ||
		err.Error() != "Attempting to set invalid trace setting :trace file name is not given" {
		t.Errorf("no file: %v", err)
	}
}

func TestParseUpdateErrors(t *testing.T) {
	for _, c := range []struct {
		kv   map[string][]string
		code inference.Code
		msg  string
	}{
		{map[string][]string{"trace_file": {"x"}}, inference.CodeUnsupported, "trace file location can not be updated through network protocol"},
		{map[string][]string{"trace_level": {"OFF", "TIMESTAMPS"}}, inference.CodeInvalidArg, "Expect only one trace level 'OFF' is specified"},
		{map[string][]string{"trace_level": {"LOUD"}}, inference.CodeInvalidArg, "invalid value for trace level option: LOUD"},
		{map[string][]string{"trace_rate": {"abc"}}, inference.CodeInvalidArg, "Unable to parse 'trace_rate', got: abc"},
		{map[string][]string{"trace_rate": {"1", "2"}}, inference.CodeInvalidArg, "expect only 1 value for 'trace_rate'"},
		{map[string][]string{"trace_rate": {"-1"}}, inference.CodeInvalidArg, "Unable to parse 'trace_rate', value is out of range [ 0, 4294967295 ], got: -1"},
		{map[string][]string{"trace_count": {"-2"}}, inference.CodeInvalidArg, "Unable to parse 'trace_count'. Expecting value >= -1, got: -2"},
		{map[string][]string{"log_frequency": {"x"}}, inference.CodeInvalidArg, "Unable to parse 'log_frequency', got: x"},
		{map[string][]string{"trace_speed": {"1"}}, inference.CodeInvalidArg, "unknown trace setting 'trace_speed'"},
	} {
		_, err := ParseUpdate(c.kv)
		if err == nil || inference.CodeOf(err) != c.code || !strings.HasPrefix(err.Error(), c.msg) {
			t.Errorf("%v: %v, want %v %q", c.kv, err, c.code, c.msg)
		}
	}
	if _, err := ParseUpdate(map[string][]string{"trace_mode": {"opentelemetry"}}); err != nil {
		t.Errorf("trace_mode is ignored as in Triton: %v", err)
	}
}

func TestParseConfig(t *testing.T) {
	s, err := ParseConfig([]string{"level=TIMESTAMPS", "level=TENSORS", "rate=7", "count=9", "triton,file=/tmp/x", "triton,log-frequency=3"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Level != LevelTimestamps|LevelTensors || s.Rate != 7 || s.Count != 9 || s.File != "/tmp/x" || s.LogFrequency != 3 || s.Mode != ModeTriton {
		t.Errorf("%+v", s)
	}
	if s, _ := ParseConfig([]string{"level=TIMESTAMPS", "level=OFF"}); s.Level != 0 {
		t.Error("an explicit OFF wins")
	}
	o, err := ParseConfig([]string{"mode=opentelemetry", "opentelemetry,url=localhost:4318/v1/traces", "triton,file=ignored"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Mode != ModeOpenTelemetry || o.Options["url"] != "localhost:4318/v1/traces" || o.Options["bsp_max_queue_size"] != "2048" || o.File != "" {
		t.Errorf("%+v", o)
	}
	keys := map[string]bool{}
	for _, p := range o.Pairs() {
		keys[p.Key] = true
	}
	if keys["trace_file"] || keys["log_frequency"] || !keys["url"] {
		t.Errorf("opentelemetry settings report %v", keys)
	}
	for _, bad := range []string{",level=x", "level", "level=loud", "rate=-1", "count=-5", "mode=jaeger", "jaeger,url=x", "speed=1", "triton,log-frequency=x", "opentelemetry,bsp_schedule_delay=soon"} {
		if _, err := ParseConfig([]string{"mode=opentelemetry", bad}); err == nil && !strings.HasPrefix(bad, "triton,") {
			t.Errorf("%q: want an error", bad)
		}
	}
	if _, err := ParseConfig([]string{"triton,log-frequency=x"}); err == nil {
		t.Error("bad log-frequency")
	}
}

// TestOpenTelemetryExport sends spans to an in-test OTLP/HTTP receiver and
// decodes the protobuf it receives.
func TestOpenTelemetryExport(t *testing.T) {
	var mu sync.Mutex
	// TracesData has the wire form of the collector's ExportTraceServiceRequest.
	var received []*tracepb.TracesData
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := &tracepb.TracesData{}
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" || proto.Unmarshal(body, req) != nil {
			t.Errorf("unexpected export %s %s", r.URL.Path, r.Header.Get("Content-Type"))
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		received = append(received, req)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer srv.Close()
	tr := newTracer(t, "level=TIMESTAMPS", "rate=1", "mode=opentelemetry",
		"opentelemetry,url="+strings.TrimPrefix(srv.URL, "http://")+"/v1/traces", "opentelemetry,resource=deployment=test")
	if !traceRequest(tr, "simple") {
		t.Fatal("not sampled")
	}
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	spans := map[string][]string{}
	attrs := map[string]string{}
	var service string
	for _, req := range received {
		for _, rs := range req.GetResourceSpans() {
			for _, a := range rs.GetResource().GetAttributes() {
				if a.GetKey() == "service.name" {
					service = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, sp := range ss.GetSpans() {
					var evs []string
					for _, ev := range sp.GetEvents() {
						evs = append(evs, ev.GetName())
					}
					sort.Strings(evs)
					spans[sp.GetName()] = evs
					for _, a := range sp.GetAttributes() {
						attrs[a.GetKey()] = a.GetValue().String()
					}
				}
			}
		}
	}
	if service != "triton-inference-server" {
		t.Errorf("service.name %q", service)
	}
	want := map[string]string{
		"InferRequest": "HTTP_RECV_END HTTP_RECV_START HTTP_SEND_END HTTP_SEND_START",
		"simple":       "QUEUE_START REQUEST_END REQUEST_START",
		"compute":      "COMPUTE_END COMPUTE_INPUT_END COMPUTE_OUTPUT_START COMPUTE_START",
	}
	for name, evs := range want {
		if got := strings.Join(spans[name], " "); got != evs {
			t.Errorf("span %s events %q, want %q", name, got, evs)
		}
	}
	if len(spans) != 3 || !strings.Contains(attrs["triton.model_name"], "simple") || !strings.Contains(attrs["triton.model_version"], "3") {
		t.Errorf("spans %v attrs %v", spans, attrs)
	}
}
