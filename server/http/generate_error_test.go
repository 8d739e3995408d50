package httpfront

import (
	"bytes"
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/server"
	"github.com/nereid-project/nereid/server/servertest"
)

// repeatCore is the server core serving "rep" (servertest.RepeatConfig).
func repeatCore(t *testing.T) *server.Server {
	t.Helper()
	return servertest.Core(t, map[string]string{"rep": servertest.RepeatConfig})
}

// expectErrorEvent checks an answer that is an event stream holding the
// one event {"error": msg}.
func (r result) expectErrorEvent(t *testing.T, status int, msg string) {
	t.Helper()
	want := `data: {"error":"` + msg + `"}` + "\n\n"
	if r.status != status || r.header.Get("Content-Type") != contentTypeSSE || string(r.body) != want {
		t.Errorf("got %d %q %q\nwant %d %q %q", r.status, r.header.Get("Content-Type"), r.body, status, contentTypeSSE, want)
	}
}

// A generate_stream request that its model fails before the first
// response is answered, as Triton answers it, with the error's status and
// the error as the stream's one event; a request refused before the model
// runs is a plain JSON error. The real core and repeat backend decide
// which is which.
func TestGenerateStreamModelErrorIsAnEvent(t *testing.T) {
	h := newCoreHarness(t, repeatCore(t), Options{})
	const path = "/v2/models/rep/generate_stream"
	h.do("POST", path, []byte(`{"IN":[1,2,3],"DELAY":[1],"WAIT":0}`)).
		expectErrorEvent(t, 400, "repeat model 'rep': inputs IN and DELAY must have the same number of elements, got shapes [3] and [1]")

	// Refused before the model runs.
	h.do("POST", "/v2/models/nope/generate_stream", []byte(`{"IN":[1]}`)).
		expectError(t, 404, "Request for unknown model: 'nope' is not found")
	h.do("POST", path, []byte(`{nope`)).expectError(t, 400, "failed to parse the request JSON buffer")
	h.do("POST", path, []byte(`{"IN":[1],"DELAY":[1]}`)).expectError(t, 400, "Missing required input(s) ['WAIT']")
	h.do("POST", path, []byte(`{"IN":["x"],"DELAY":[1],"WAIT":0}`)).expectError(t, 400, "INT32 input 'IN'")
	h.do("POST", path, []byte(`{"IN":[1],"DELAY":[1],"WAIT":0}`), "Content-Encoding", "gzip").
		expectError(t, 400, "Unsupported content-encoding")

	// /generate answers the model's error as plain JSON, as Triton does.
	h.do("POST", "/v2/models/rep/generate", []byte(`{"IN":[1,2],"DELAY":[1],"WAIT":0}`)).
		expectError(t, 400, "inputs IN and DELAY must have the same number of elements")

	// The server still streams.
	r := h.do("POST", path, []byte(`{"IN":[4,5],"DELAY":[0,0],"WAIT":0}`))
	want := []string{`{"IDX":0,"OUT":4,"model_name":"rep","model_version":"1"}`, `{"IDX":1,"OUT":5,"model_name":"rep","model_version":"1"}`}
	if events := readEvents(t, bytes.NewReader(r.body)); r.status != 200 || !reflect.DeepEqual(events, want) {
		t.Errorf("%d %q\nwant %q", r.status, events, want)
	}
}

// The error event takes the status of the error's class.
func TestGenerateStreamModelErrorStatus(t *testing.T) {
	h := newHarness(t, Options{})
	h.core.streamFn = func(_ context.Context, req *inference.Request, _ inference.ResponseFunc) error {
		req.Timing.ComputeStart = time.Now() // the core handed the request to its model
		return inference.Internal(`backend "failed"`)
	}
	h.do("POST", "/v2/models/gen_decoupled/generate_stream", []byte(`{"text_input":"hi"}`)).
		expectErrorEvent(t, 500, `backend \"failed\"`)
}
