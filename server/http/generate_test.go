package httpfront

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nereid-project/nereid/inference"
)

// bytesTensor is a BYTES tensor of the given shape holding elems.
func bytesTensor(name string, shape []int64, elems ...string) inference.Tensor {
	var data []byte
	for _, e := range elems {
		data = inference.AppendBytesElement(data, []byte(e))
	}
	return inference.Tensor{Name: name, DataType: inference.Bytes, Shape: shape, Data: data}
}

// textResponse is a response of a text model: text_output holding text.
func textResponse(req *inference.Request, text string) *inference.Response {
	return &inference.Response{
		ModelName: req.ModelName, ModelVersion: "1",
		Outputs: []inference.Tensor{bytesTensor("text_output", []int64{1}, text)},
	}
}

func TestGenerateRequestMapping(t *testing.T) {
	h := newHarness(t, Options{})
	h.core.streamFn = func(_ context.Context, req *inference.Request, out inference.ResponseFunc) error {
		return out(textResponse(req, "world"), true)
	}
	body := `{"id":"g1","text_input":"hello","max_tokens":16,"temperature":0.5,"stream":true,` +
		`"stop_ids":[1,2,65535],"pair":[-128,127],"parameters":{"top_k":4,"seed":"x","max_tokens_hint":1.5,"sequence_id":7},"extra":false}`
	r := h.do("POST", "/v2/models/gen_text/generate", []byte(body))
	r.expect(t, 200, `{"id":"g1","model_name":"gen_text","model_version":"1","text_output":"world"}`)
	if ct := r.header.Get("Content-Type"); ct != contentTypeJSON {
		t.Errorf("Content-Type %q", ct)
	}
	req := h.core.lastReq
	if req.ID != "g1" || req.ModelName != "gen_text" {
		t.Errorf("request %q for %q", req.ID, req.ModelName)
	}
	le := binary.LittleEndian
	want := map[string]struct {
		dt    inference.DataType
		shape []int64
		data  []byte
	}{
		"text_input":  {inference.Bytes, []int64{1}, inference.AppendBytesElement(nil, []byte("hello"))},
		"max_tokens":  {inference.Int32, []int64{1}, le.AppendUint32(nil, 16)},
		"temperature": {inference.FP32, []int64{1}, appendF32(nil, 0.5)},
		"stream":      {inference.Bool, []int64{1}, []byte{1}},
		"stop_ids":    {inference.Uint16, []int64{3}, le.AppendUint16(le.AppendUint16(le.AppendUint16(nil, 1), 2), 65535)},
		"pair":        {inference.Int8, []int64{2}, []byte{0x80, 0x7f}},
	}
	if len(req.Inputs) != len(want) {
		t.Fatalf("inputs %+v", req.Inputs)
	}
	for _, in := range req.Inputs {
		w, ok := want[in.Name]
		if !ok || in.DataType != w.dt || !reflect.DeepEqual(in.Shape, w.shape) || !bytes.Equal(in.Data, w.data) {
			t.Errorf("input %s: %s %v %v, want %+v", in.Name, in.DataType, in.Shape, in.Data, w)
		}
	}
	wantParams := inference.Parameters{"top_k": int64(4), "seed": "x", "max_tokens_hint": 1.5, "sequence_id": int64(7), "extra": false}
	if !reflect.DeepEqual(req.Parameters, wantParams) {
		t.Errorf("parameters %v, want %v", req.Parameters, wantParams)
	}
}

func TestGenerateBatchDimension(t *testing.T) {
	h := newHarness(t, Options{})
	h.core.streamFn = func(_ context.Context, req *inference.Request, out inference.ResponseFunc) error {
		return out(textResponse(req, "ok"), true)
	}
	h.do("POST", "/v2/models/gen_batched/generate", []byte(`{"text_input":"a","tokens":[5,6,7],"grid":[1,2,3,4,5,6]}`)).expect(t, 200,
		`{"model_name":"gen_batched","model_version":"1","text_output":"ok"}`)
	shapes := map[string][]int64{}
	for _, in := range h.core.lastReq.Inputs {
		shapes[in.Name] = in.Shape
	}
	want := map[string][]int64{"text_input": {1, 1}, "tokens": {1, 3}, "grid": {1, 2, 3}}
	if !reflect.DeepEqual(shapes, want) {
		t.Errorf("shapes %v, want %v", shapes, want)
	}
	// A scalar fills a variable dimension with 1; an empty array with 0.
	h.do("POST", "/v2/models/gen_batched/generate", []byte(`{"text_input":["a"],"tokens":7}`)).expect(t, 200,
		`{"model_name":"gen_batched","model_version":"1","text_output":"ok"}`)
	if got := h.core.lastReq.Input("tokens").Shape; !reflect.DeepEqual(got, []int64{1, 1}) {
		t.Errorf("scalar tokens shape %v", got)
	}
	h.do("POST", "/v2/models/gen_batched/generate", []byte(`{"text_input":"a","tokens":[]}`)).expect(t, 200,
		`{"model_name":"gen_batched","model_version":"1","text_output":"ok"}`)
	if in := h.core.lastReq.Input("tokens"); !reflect.DeepEqual(in.Shape, []int64{1, 0}) || len(in.Data) != 0 {
		t.Errorf("empty tokens %v %v", in.Shape, in.Data)
	}
}

func TestGenerateRequestErrors(t *testing.T) {
	h := newHarness(t, Options{})
	tests := []struct {
		name, model, body string
		status            int
		substr            string
	}{
		{"missing input", "gen_text", `{"text_input":"a"}`, 400, "expected 2 inputs but got 1 inputs for model 'gen_text'. Missing required input(s) ['max_tokens']"},
		{"sequence control input not needed", "gen_sequence", `{}`, 400, "Missing required input(s) ['text_input']"},
		{"string for int", "gen_text", `{"text_input":"a","max_tokens":"16"}`, 400, "expected an integer for element 0 of INT32 input 'max_tokens'"},
		{"fraction for int", "gen_text", `{"text_input":"a","max_tokens":1.5}`, 400, "expected an integer for element 0 of INT32 input 'max_tokens'"},
		{"int out of range", "gen_text", `{"text_input":"a","max_tokens":3000000000}`, 400, "value 3000000000 of element 0 is out of range for INT32 input 'max_tokens'"},
		{"negative unsigned", "gen_text", `{"text_input":"a","max_tokens":1,"stop_ids":[1,-2]}`, 400, "expected an unsigned integer for element 1 of UINT16 input 'stop_ids'"},
		{"number for string", "gen_text", `{"text_input":5,"max_tokens":1}`, 400, "expected a string for element 0 of BYTES input 'text_input'"},
		{"null for string", "gen_text", `{"text_input":null,"max_tokens":1}`, 400, "expected a string for element 0 of BYTES input 'text_input'"},
		{"int for bool", "gen_text", `{"text_input":"a","max_tokens":1,"stream":1}`, 400, "expected a boolean for element 0 of BOOL input 'stream'"},
		{"nested array", "gen_text", `{"text_input":"a","max_tokens":1,"stop_ids":[[1]]}`, 400, "Unable to parse 'stop_ids': expected a value or a 1-D array of values"},
		{"object for input", "gen_text", `{"text_input":{"a":1},"max_tokens":1}`, 400, "input 'text_input'"},
		{"wrong element count", "gen_text", `{"text_input":"a","max_tokens":1,"pair":[1]}`, 400, "The schema can not convert input 'pair' to tensor with proper shape"},
		{"two for one", "gen_text", `{"text_input":["a","b"],"max_tokens":1}`, 400, "The schema can not convert input 'text_input' to tensor with proper shape"},
		{"fp16 input", "gen_text", `{"text_input":"a","max_tokens":1,"half":1}`, 400, "receiving FP16 data via JSON is not supported. Please use the binary data format for input half"},
		{"input twice", "gen_text", `{"text_input":"a","max_tokens":1,"parameters":{"max_tokens":2}}`, 400, "Converting keyword: 'parameters': input 'max_tokens' already exists in request"},
		{"parameters not object", "gen_text", `{"text_input":"a","max_tokens":1,"parameters":[1]}`, 400, "Expected JSON object for keyword: 'parameters'"},
		{"reserved parameter", "gen_text", `{"text_input":"a","max_tokens":1,"parameters":{"triton_x":1}}`, 400, "Converting keyword: 'parameters': parameter keys starting with 'triton_' are reserved"},
		{"array parameter", "gen_text", `{"text_input":"a","max_tokens":1,"top_k":[1]}`, 400, "parameter 'top_k' has invalid type"},
		{"typed parameter", "gen_text", `{"text_input":"a","max_tokens":1,"priority":"high"}`, 400, "Unable to parse 'priority'"},
		{"id not string", "gen_text", `{"id":5,"text_input":"a","max_tokens":1}`, 400, "Unable to parse 'id': expected a string"},
		{"not an object", "gen_text", `["text_input"]`, 400, "expected an object"},
		{"empty body", "gen_text", ``, 400, "failed to parse the request JSON buffer"},
		{"bad JSON", "gen_text", `{"text_input":"a",}`, 400, "failed to parse the request JSON buffer"},
		{"trailing data", "gen_text", `{"text_input":"a","max_tokens":1} {}`, 400, "the document root must not be followed by other values"},
		{"unknown model", "nope", `{}`, 404, "Request for unknown model: 'nope' is not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/generate", "/generate_stream"} {
				h.do("POST", "/v2/models/"+tc.model+path, []byte(tc.body)).expectError(t, tc.status, tc.substr)
			}
		})
	}
	h.do("POST", "/v2/models/gen_text/generate", []byte(`{}`), "Content-Encoding", "gzip").
		expectError(t, 400, "Unsupported content-encoding, only 'identity' is supported.")
	h.do("GET", "/v2/models/gen_text/generate", nil).expect(t, 405, `{"error":"Method Not Allowed"}`)
	h.do("POST", "/v2/models/gen_text/versions/x1/generate", nil).expect(t, 404, `{"error":"Not Found"}`)
}

func TestGenerateResponseCount(t *testing.T) {
	h := newHarness(t, Options{})
	body := []byte(`{"text_input":"hi"}`)
	// A decoupled model that sends one response and then its final flag
	// alone.
	h.core.streamFn = func(_ context.Context, req *inference.Request, out inference.ResponseFunc) error {
		if err := out(textResponse(req, "only"), false); err != nil {
			return err
		}
		return out(nil, true)
	}
	h.do("POST", "/v2/models/gen_decoupled/generate", body).expect(t, 200, `{"model_name":"gen_decoupled","model_version":"1","text_output":"only"}`)

	// Two responses: generate wants exactly one, and stops the model at
	// the second.
	var secondErr error
	h.core.streamFn = func(_ context.Context, req *inference.Request, out inference.ResponseFunc) error {
		if err := out(textResponse(req, "a"), false); err != nil {
			return err
		}
		secondErr = out(textResponse(req, "b"), false)
		if secondErr != nil {
			return inference.Errorf(inference.CodeCancelled, "cancelled")
		}
		return out(nil, true)
	}
	h.do("POST", "/v2/models/gen_decoupled/generate", body).expectError(t, 500, "generate expects model to produce exactly 1 response, use generate stream for model that generates various number of responses")
	if secondErr == nil {
		t.Error("the second response was accepted")
	}

	// None at all.
	h.core.streamFn = func(_ context.Context, _ *inference.Request, out inference.ResponseFunc) error { return out(nil, true) }
	h.do("POST", "/v2/models/gen_decoupled/generate", body).expectError(t, 500, "generate expects model to produce exactly 1 response")

	// A failure is answered with its own status.
	h.core.streamFn = func(context.Context, *inference.Request, inference.ResponseFunc) error {
		return inference.Unavailable("queue is full")
	}
	h.do("POST", "/v2/models/gen_decoupled/generate", body).expect(t, 503, `{"error":"queue is full"}`)

	// Every response is done with once written.
	var released atomic.Int32
	h.core.streamFn = func(_ context.Context, req *inference.Request, out inference.ResponseFunc) error {
		resp := textResponse(req, "x")
		resp.Release = func() { released.Add(1) }
		return out(resp, true)
	}
	h.do("POST", "/v2/models/gen_decoupled/generate", body).expect(t, 200, `{"model_name":"gen_decoupled","model_version":"1","text_output":"x"}`)
	h.do("POST", "/v2/models/gen_decoupled/generate_stream", body)
	if n := released.Load(); n != 2 {
		t.Errorf("Done called for %d of 2 responses", n)
	}
}

// readEvents reads a text/event-stream body into the data of its events.
func readEvents(t *testing.T, body io.Reader) []string {
	t.Helper()
	var events []string
	sc := bufio.NewScanner(body)
	var data []string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data == nil {
				t.Errorf("empty event")
			}
			events = append(events, strings.Join(data, "\n"))
			data = nil
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		default:
			t.Errorf("unexpected SSE line %q", line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if data != nil {
		t.Errorf("unterminated event %q", data)
	}
	return events
}

func TestGenerateStream(t *testing.T) {
	h := newHarness(t, Options{})
	h.core.streamFn = func(_ context.Context, req *inference.Request, out inference.ResponseFunc) error {
		for _, w := range []string{"Hello", ",", " world"} {
			if err := out(textResponse(req, w), false); err != nil {
				return err
			}
		}
		return out(nil, true) // no event of its own
	}
	r := h.do("POST", "/v2/models/gen_decoupled/generate_stream", []byte(`{"id":"s1","text_input":"hi"}`))
	if r.status != 200 || r.header.Get("Content-Type") != contentTypeSSE {
		t.Fatalf("%d %q: %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	events := readEvents(t, bytes.NewReader(r.body))
	want := []string{
		`{"id":"s1","model_name":"gen_decoupled","model_version":"1","text_output":"Hello"}`,
		`{"id":"s1","model_name":"gen_decoupled","model_version":"1","text_output":","}`,
		`{"id":"s1","model_name":"gen_decoupled","model_version":"1","text_output":" world"}`,
	}
	if !reflect.DeepEqual(events, want) {
		t.Errorf("events %q\nwant %q", events, want)
	}
	for _, ev := range events {
		if !json.Valid([]byte(ev)) {
			t.Errorf("invalid JSON event %s", ev)
		}
	}

	// A model that is not decoupled streams its one response.
	h.core.streamFn = nil
	r = h.do("POST", "/v2/models/gen_text/generate_stream", []byte(`{"text_input":"a","max_tokens":1}`))
	if events := readEvents(t, bytes.NewReader(r.body)); r.status != 200 || len(events) != 1 {
		t.Errorf("%d %q", r.status, events)
	}

	// Only the final flag: an empty stream.
	h.core.streamFn = func(_ context.Context, _ *inference.Request, out inference.ResponseFunc) error { return out(nil, true) }
	r = h.do("POST", "/v2/models/gen_decoupled/generate_stream", []byte(`{"text_input":"hi"}`))
	if r.status != 200 || r.header.Get("Content-Type") != contentTypeSSE || len(r.body) != 0 {
		t.Errorf("final flag alone: %d %q %q", r.status, r.header.Get("Content-Type"), r.body)
	}
}

func TestGenerateStreamErrors(t *testing.T) {
	h := newHarness(t, Options{})
	// An error after the first event is the last event, under 200.
	h.core.streamFn = func(_ context.Context, req *inference.Request, out inference.ResponseFunc) error {
		if err := out(textResponse(req, "partial"), false); err != nil {
			return err
		}
		return inference.Internal("backend \"failed\"")
	}
	r := h.do("POST", "/v2/models/gen_decoupled/generate_stream", []byte(`{"text_input":"hi"}`))
	want := []string{`{"model_name":"gen_decoupled","model_version":"1","text_output":"partial"}`, `{"error":"backend \"failed\""}`}
	if events := readEvents(t, bytes.NewReader(r.body)); r.status != 200 || !reflect.DeepEqual(events, want) {
		t.Errorf("%d %q\nwant %q", r.status, events, want)
	}

	// An error before it is a plain JSON error with its status.
	h.core.streamFn = func(context.Context, *inference.Request, inference.ResponseFunc) error {
		return inference.InvalidArg("unexpected shape for input 'text_input'")
	}
	h.do("POST", "/v2/models/gen_decoupled/generate_stream", []byte(`{"text_input":"hi"}`)).
		expect(t, 400, `{"error":"unexpected shape for input 'text_input'"}`)

	// A response that cannot be written as JSON ends the stream.
	h.core.streamFn = func(_ context.Context, req *inference.Request, out inference.ResponseFunc) error {
		if err := out(textResponse(req, "ok"), false); err != nil {
			return err
		}
		bad := &inference.Response{ModelName: req.ModelName, ModelVersion: "1",
			Outputs: []inference.Tensor{{Name: "h", DataType: inference.FP16, Shape: []int64{1}, Data: []byte{0, 0x3c}}}}
		if err := out(bad, false); err != nil {
			return inference.Errorf(inference.CodeCancelled, "cancelled")
		}
		return out(nil, true)
	}
	r = h.do("POST", "/v2/models/gen_decoupled/generate_stream", []byte(`{"text_input":"hi"}`))
	events := readEvents(t, bytes.NewReader(r.body))
	if r.status != 200 || len(events) != 2 || !strings.Contains(events[1], "sending FP16 data via JSON is not supported") {
		t.Errorf("%d %q", r.status, events)
	}
}

// TestGenerateStreamBackpressure checks that a client that does not read
// holds the model back: the model's sender blocks once the bounded queue
// and the connection's buffers are full, and is released by the client
// going away.
func TestGenerateStreamBackpressure(t *testing.T) {
	h := newHarness(t, Options{})
	big := strings.Repeat("x", 64<<10)
	sent := make(chan int, 1)
	h.core.streamFn = func(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error {
		n := 0
		defer func() { sent <- n }()
		for {
			if err := out(textResponse(req, big), false); err != nil {
				return err
			}
			if n++; n > 10000 {
				return nil // 640 MiB buffered: unbounded
			}
		}
	}
	req, err := http.NewRequest("POST", "http://nereid/v2/models/gen_decoupled/generate_stream", strings.NewReader(`{"text_input":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	// Read one event, then stop reading and go away.
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := <-sent; n > 10000 {
		t.Errorf("the model sent %d responses to a client that does not read", n)
	}
}
