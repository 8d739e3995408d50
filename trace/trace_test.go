package trace

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
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
	ParentID     uint64 `json:"parent_id"`
	Timestamps   []struct {
		Name string `json:"name"`
		NS   int64  `json:"ns"`
	} `json:"timestamps"`
	Activity string       `json:"activity"`
	Tensor   *tensorField `json:"tensor"`
}

type tensorField struct {
	Name  string `json:"name"`
	Data  string `json:"data"`
	Shape string `json:"shape"`
	DType string `json:"dtype"`
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
// otlpReceiver is an in-test OTLP/HTTP receiver: the URL to export to,
// and a function that returns what it received once the tracer is closed.
func otlpReceiver(t *testing.T) (string, func() []*tracepb.TracesData) {
	t.Helper()
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
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://") + "/v1/traces", func() []*tracepb.TracesData {
		mu.Lock()
		defer mu.Unlock()
		return received
	}
}

func TestOpenTelemetryExport(t *testing.T) {
	url, receivedSpans := otlpReceiver(t)
	tr := newTracer(t, "level=TIMESTAMPS", "rate=1", "mode=opentelemetry",
		"opentelemetry,url="+url, "opentelemetry,resource=deployment=test")
	if !traceRequest(tr, "simple") {
		t.Fatal("not sampled")
	}
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	received := receivedSpans()
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

func le32(v ...uint32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, x)
	}
	return b
}

func fp32(v ...float32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

func byteElems(v ...string) []byte {
	var b []byte
	for _, x := range v {
		b = inference.AppendBytesElement(b, []byte(x))
	}
	return b
}

// tensorRequest is a request with one input of each kind the records
// render differently.
func tensorRequest() *inference.Request {
	minus2 := int32(-2)
	return &inference.Request{ModelName: "m", ID: "req-t", Inputs: []inference.Tensor{
		{Name: "I32", DataType: inference.Int32, Shape: []int64{1, 3}, Data: le32(1, uint32(minus2), 3)},
		{Name: "F32", DataType: inference.FP32, Shape: []int64{4}, Data: fp32(0.1, 1e6, -1.5, 3.4028235e38)},
		{Name: "B", DataType: inference.Bool, Shape: []int64{3}, Data: []byte{1, 0, 7}},
		{Name: "S", DataType: inference.Bytes, Shape: []int64{2}, Data: byteElems("hi", `a"b\`)},
		{Name: "H", DataType: inference.FP16, Shape: []int64{2}, Data: []byte{0, 0x3c, 0, 0xc0}},
		{Name: "I8", DataType: inference.Int8, Shape: []int64{2}, Data: []byte{0x80, 65}},
		{Name: "U64", DataType: inference.Uint64, Shape: []int64{}, Data: binary.LittleEndian.AppendUint64(nil, math.MaxUint64)},
		{Name: "F64", DataType: inference.FP64, Shape: []int64{1}, Data: binary.LittleEndian.AppendUint64(nil, math.Float64bits(1.0/3))},
	}}
}

// wantTensors is what the records of tensorRequest's inputs hold.
var wantTensors = map[string]tensorField{
	"I32": {"I32", "1,-2,3", "1,3", "INT32"},
	"F32": {"F32", "0.1,1e+06,-1.5,3.40282e+38", "4", "FP32"},
	"B":   {"B", "1,0,1", "3", "BOOL"},
	"S":   {"S", `"hi","a"b\"`, "2", "BYTES"},
	"H":   {"H", "", "2", "FP16"},
	"I8":  {"I8", "-128,65", "2", "INT8"},
	"U64": {"U64", "18446744073709551615", "", "UINT64"},
	"F64": {"F64", "0.333333", "1", "FP64"},
}

// runTensorTrace traces one request as the front end and the core do: the
// front end attaches the trace, the core reports the queue inputs, the
// backend's inputs and outputs, and the front end records its timestamps.
// The tensors' buffers are overwritten after each report, as a front end
// reusing its buffers would.
func runTensorTrace(t *testing.T, tr *Tracer) {
	t.Helper()
	sampled := tr.Sample("m")
	if sampled == nil {
		t.Fatal("not sampled")
	}
	req := tensorRequest()
	sampled.Attach(req)
	now := time.Now()
	sampled.Record("HTTP_RECV_START", now)
	if req.TensorTrace != nil {
		req.TensorTrace.TraceTensors(inference.TensorQueueInput, req.Inputs)
		req.TensorTrace.TraceTensors(inference.TensorBackendInput, req.Inputs)
		out := slices.Clone(req.Inputs[:2])
		out[0].Name, out[1].Name = "O32", "OF32"
		req.TensorTrace.TraceTensors(inference.TensorBackendOutput, out)
		for i := range req.Inputs {
			clear(req.Inputs[i].Data)
		}
	}
	req.Timing = inference.Timing{
		QueueStart: now.Add(2 * time.Microsecond), ComputeStart: now.Add(3 * time.Microsecond),
		ComputeInputEnd: now.Add(4 * time.Microsecond), ComputeOutputStart: now.Add(5 * time.Microsecond), ComputeEnd: now.Add(6 * time.Microsecond),
	}
	sampled.Request(req, &inference.Response{ModelVersion: "2"}, now.Add(time.Microsecond), now.Add(7*time.Microsecond))
	sampled.Record("HTTP_SEND_END", now.Add(8*time.Microsecond))
	sampled.Finish()
}

func TestTensorRecords(t *testing.T) {
	file := filepath.Join(t.TempDir(), "trace.json")
	tr := newTracer(t, "level=TIMESTAMPS", "level=TENSORS", "rate=1", "triton,file="+file)
	runTensorTrace(t, tr)
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	// Triton's key order, byte for byte.
	if want := `{"id":1,"activity":"TENSOR_QUEUE_INPUT","tensor":{"name":"I32","data":"1,-2,3","shape":"1,3","dtype":"INT32"}}`; !strings.Contains(string(raw), want) {
		t.Errorf("trace file lacks %s:\n%s", want, raw)
	}
	var order []string
	got := map[string]map[string]tensorField{}
	for _, r := range readRecords(t, file) {
		if r.ID != 1 {
			t.Errorf("record of trace %d", r.ID)
		}
		switch {
		case r.ModelName != "":
			order = append(order, "HEADER")
		case r.Tensor != nil:
			if order[len(order)-1] != r.Activity {
				order = append(order, r.Activity)
			}
			if got[r.Activity] == nil {
				got[r.Activity] = map[string]tensorField{}
			}
			got[r.Activity][r.Tensor.Name] = *r.Tensor
		default:
			for _, ts := range r.Timestamps {
				order = append(order, ts.Name)
			}
		}
	}
	want := "HTTP_RECV_START HEADER REQUEST_START QUEUE_START TENSOR_QUEUE_INPUT COMPUTE_START TENSOR_BACKEND_INPUT " +
		"COMPUTE_INPUT_END COMPUTE_OUTPUT_START TENSOR_BACKEND_OUTPUT COMPUTE_END REQUEST_END HTTP_SEND_END"
	if g := strings.Join(order, " "); g != want {
		t.Errorf("records\n got %s\nwant %s", g, want)
	}
	for _, activity := range []string{"TENSOR_QUEUE_INPUT", "TENSOR_BACKEND_INPUT"} {
		if !reflect.DeepEqual(got[activity], wantTensors) {
			t.Errorf("%s tensors\n got %v\nwant %v", activity, got[activity], wantTensors)
		}
	}
	wantOut := map[string]tensorField{
		"O32":  {"O32", "1,-2,3", "1,3", "INT32"},
		"OF32": {"OF32", "0.1,1e+06,-1.5,3.40282e+38", "4", "FP32"},
	}
	if !reflect.DeepEqual(got["TENSOR_BACKEND_OUTPUT"], wantOut) {
		t.Errorf("TENSOR_BACKEND_OUTPUT tensors %v", got["TENSOR_BACKEND_OUTPUT"])
	}
}

// TestTraceLevels checks that each level writes only its records, as in
// Triton: TENSORS alone gives no model record and no timestamps, and
// TIMESTAMPS alone does not even hand the core a tensor tracer.
func TestTraceLevels(t *testing.T) {
	dir := t.TempDir()
	tensorsFile := filepath.Join(dir, "tensors.json")
	tr := newTracer(t, "level=TENSORS", "rate=1", "triton,file="+tensorsFile)
	runTensorTrace(t, tr)
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs := readRecords(t, tensorsFile)
	if len(recs) != 2*len(wantTensors)+2 {
		t.Errorf("%d records, want %d", len(recs), 2*len(wantTensors)+2)
	}
	for _, r := range recs {
		if r.Tensor == nil || r.ModelName != "" || r.Timestamps != nil {
			t.Errorf("TENSORS alone wrote %+v", r)
		}
	}

	tsFile := filepath.Join(dir, "timestamps.json")
	tr = newTracer(t, "level=TIMESTAMPS", "rate=1", "triton,file="+tsFile)
	req := tensorRequest()
	sampled := tr.Sample("m")
	sampled.Attach(req)
	if req.TensorTrace != nil {
		t.Error("TIMESTAMPS alone attached a tensor tracer")
	}
	sampled.Finish()
	traceRequest(tr, "m")
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, r := range readRecords(t, tsFile) {
		if r.Tensor != nil || r.Activity != "" {
			t.Errorf("TIMESTAMPS alone wrote %+v", r)
		}
	}

	// opentelemetry mode records no tensors, as in Triton.
	otel := newTracer(t, "level=TENSORS", "rate=1", "mode=opentelemetry", "opentelemetry,url=127.0.0.1:1/v1/traces")
	req = tensorRequest()
	sampled = otel.Sample("m")
	sampled.Attach(req)
	if req.TensorTrace != nil {
		t.Error("opentelemetry mode attached a tensor tracer")
	}
	sampled.Finish()
	if err := otel.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	// A request that is not sampled gets nothing.
	var none *Trace
	req = tensorRequest()
	none.Attach(req)
	if req.TensorTrace != nil {
		t.Error("nil trace attached a tracer")
	}
}

func TestTensorData(t *testing.T) {
	f32 := func(v float32) inference.Tensor {
		return inference.Tensor{DataType: inference.FP32, Shape: []int64{1}, Data: fp32(v)}
	}
	for _, c := range []struct {
		t    inference.Tensor
		want string
	}{
		// printf "%g" of the float widened to double, as a C++ stream prints it.
		{f32(0), "0"}, {f32(float32(math.Copysign(0, -1))), "-0"}, {f32(100000), "100000"}, {f32(123456.7), "123457"},
		{f32(1e-5), "1e-05"}, {f32(0.0001), "0.0001"}, {f32(1e-45), "1.4013e-45"}, {f32(2.5), "2.5"},
		{f32(float32(math.Inf(-1))), "-inf"}, {f32(float32(math.NaN())), "nan"},
		{inference.Tensor{DataType: inference.Uint8, Shape: []int64{2, 1}, Data: []byte{0, 255}}, "0,255"},
		{inference.Tensor{DataType: inference.Int16, Shape: []int64{1}, Data: []byte{0x00, 0x80}}, "-32768"},
		{inference.Tensor{DataType: inference.BF16, Shape: []int64{1}, Data: []byte{0x80, 0x3f}}, ""},
		// Control characters and invalid UTF-8 are escaped into valid JSON.
		{inference.Tensor{DataType: inference.Bytes, Shape: []int64{2}, Data: byteElems("x\ny\x01", "\xff\u65e5")}, `\"x\ny\u0001\",\"\ufffd` + "\u65e5" + `\"`},
		// A malformed backend output is cut short, not read past its end.
		{inference.Tensor{DataType: inference.Int32, Shape: []int64{3}, Data: le32(5, 6)}, "5,6"},
		{inference.Tensor{DataType: inference.Bytes, Shape: []int64{2}, Data: append(byteElems("ok"), 9, 0, 0, 0, 'x')}, `\"ok\"`},
		{inference.Tensor{DataType: inference.Int32, Shape: []int64{0, 2}}, ""},
	} {
		if got := string(appendTensorData(nil, &c.t)); got != c.want {
			t.Errorf("%s %v %v: got %s, want %s", c.t.DataType, c.t.Shape, c.t.Data, got, c.want)
		}
	}
	// The records are valid JSON whatever the names and elements hold.
	rec := appendTensorRecords(nil, 7, inference.TensorBackendOutput, []inference.Tensor{
		{Name: "we\"ird\\", DataType: inference.Bytes, Shape: []int64{1}, Data: byteElems("\"\\\x00")},
		{Name: "n", DataType: inference.Bool, Shape: []int64{1}, Data: []byte{0}},
	})
	var parsed []record
	if err := json.Unmarshal(append(append([]byte{'['}, rec...), ']'), &parsed); err != nil {
		t.Fatalf("%s: %v", rec, err)
	}
	if len(parsed) != 2 || parsed[0].Tensor.Name != "we\"ird\\" || parsed[0].Tensor.Data != "\"\"\\\x00\"" || parsed[0].Activity != "TENSOR_BACKEND_OUTPUT" ||
		parsed[1].Tensor.Data != "0" || parsed[1].ID != 7 {
		t.Errorf("%+v", parsed)
	}
}

// tracedEnsemble traces one request to an ensemble of two steps as the
// front end and the ensemble's executor do: the front end attaches the
// trace, each step runs under a child of it, and the front end finishes
// the parent after the steps.
func tracedEnsemble(t *testing.T, tr *Tracer) (parent *Trace, steps [2]inference.Span) {
	t.Helper()
	parent = tr.Sample("ens")
	if parent == nil {
		t.Fatal("not sampled")
	}
	req := &inference.Request{ModelName: "ens", ID: "e-1"}
	parent.Attach(req)
	if req.Span != inference.Span(parent) {
		t.Fatal("Attach did not set the request's span")
	}
	now := time.Now()
	parent.Record("GRPC_WAITREAD_END", now)
	for i, model := range []string{"pre", "main"} {
		child := req.Span.Child(model)
		stepReq := &inference.Request{ModelName: model, ID: req.ID}
		child.Attach(stepReq)
		if stepReq.Span != child {
			t.Fatal("a child's Attach did not set the step's span")
		}
		at := now.Add(time.Duration(10*(i+1)) * time.Microsecond)
		stepReq.Timing = inference.Timing{QueueStart: at.Add(time.Microsecond), ComputeStart: at.Add(2 * time.Microsecond),
			ComputeInputEnd: at.Add(3 * time.Microsecond), ComputeOutputStart: at.Add(4 * time.Microsecond), ComputeEnd: at.Add(5 * time.Microsecond)}
		child.Served(stepReq, "1", at, at.Add(6*time.Microsecond))
		child.Finish()
		steps[i] = child
	}
	req.Timing.QueueStart = now.Add(2 * time.Microsecond)
	parent.Request(req, &inference.Response{ModelVersion: "1"}, now.Add(time.Microsecond), now.Add(40*time.Microsecond))
	parent.Finish()
	return parent, steps
}

// An ensemble's steps are traced as children of its request, with
// Triton's parent_id, whatever the sampling rate; a nil trace has none.
func TestChildTraces(t *testing.T) {
	var none *Trace
	if none.Child("m") != nil {
		t.Fatal("a nil trace opened a child")
	}
	file := filepath.Join(t.TempDir(), "trace.json")
	tr := newTracer(t, "level=TIMESTAMPS", "rate=1", "count=1", "triton,file="+file)
	parent, steps := tracedEnsemble(t, tr)
	if tr.Sample("ens") != nil {
		t.Fatal("the children used up the trace count")
	}
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The count is used up once the parent and its children are done.
	recs := readRecords(t, file+".0")
	heads := map[string]record{}
	stamps := map[uint64][]string{}
	for _, r := range recs {
		if r.ModelName != "" {
			heads[r.ModelName] = r
		}
		for _, ts := range r.Timestamps {
			stamps[r.ID] = append(stamps[r.ID], ts.Name)
		}
	}
	if h := heads["ens"]; h.ID != parent.ID() || h.ParentID != 0 || h.RequestID != "e-1" {
		t.Errorf("ensemble record %+v", h)
	}
	for i, model := range []string{"pre", "main"} {
		h := heads[model]
		if h.ID != steps[i].(*Trace).ID() || h.ParentID != parent.ID() || h.ID == parent.ID() || h.ModelVersion == nil || *h.ModelVersion != 1 {
			t.Errorf("step %s record %+v, want parent_id %d", model, h, parent.ID())
		}
		want := "REQUEST_START QUEUE_START COMPUTE_START COMPUTE_INPUT_END COMPUTE_OUTPUT_START COMPUTE_END REQUEST_END"
		if got := strings.Join(stamps[h.ID], " "); got != want {
			t.Errorf("step %s timestamps %q, want %q", model, got, want)
		}
	}
}

// In opentelemetry mode an ensemble's steps are request spans nested under
// the ensemble's request span, each with its compute span.
func TestOpenTelemetryChildSpans(t *testing.T) {
	url, receivedSpans := otlpReceiver(t)
	tr := newTracer(t, "level=TIMESTAMPS", "rate=1", "mode=opentelemetry", "opentelemetry,url="+url)
	tracedEnsemble(t, tr)
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	byID := map[string]string{} // span id -> name
	parentOf := map[string]string{}
	count := map[string]int{}
	for _, req := range receivedSpans() {
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				for _, sp := range ss.GetSpans() {
					byID[string(sp.GetSpanId())] = sp.GetName()
					count[sp.GetName()]++
				}
			}
		}
	}
	for _, req := range receivedSpans() {
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				for _, sp := range ss.GetSpans() {
					if sp.GetName() != "compute" {
						parentOf[sp.GetName()] = byID[string(sp.GetParentSpanId())]
					}
				}
			}
		}
	}
	want := map[string]string{"InferRequest": "", "ens": "InferRequest", "pre": "ens", "main": "ens"}
	for name, parent := range want {
		if got, ok := parentOf[name]; !ok || got != parent {
			t.Errorf("span %s has parent %q (present %v), want %q; spans %v", name, got, ok, parent, count)
		}
	}
	if count["InferRequest"] != 1 || count["compute"] != 2 {
		t.Errorf("span counts %v: want one root, and a compute span for each step", count)
	}
}
