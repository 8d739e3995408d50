package httpfront

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/logging"
	"github.com/nereid-project/nereid/server/restricted"
	"github.com/nereid-project/nereid/trace"
)

func newLogControl(t *testing.T) *logging.Control {
	t.Helper()
	c, _, err := logging.New(logging.Options{Info: true, Warning: true, Error: true, Out: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLoggingEndpoint(t *testing.T) {
	h := newHarness(t, Options{Logging: newLogControl(t)})
	all := `{"log_file":"","log_info":true,"log_warning":true,"log_error":true,"log_verbose_level":0,"log_format":"default"}`
	h.do("GET", "/v2/logging", nil).expect(t, 200, all)
	h.do("POST", "/v2/logging", []byte(`{}`)).expect(t, 200, all)
	h.do("POST", "/v2/logging", []byte(`{"log_info":false,"log_verbose_level":2,"log_format":"ISO8601","log_file":null}`)).expect(t, 200,
		`{"log_file":"","log_info":false,"log_warning":true,"log_error":true,"log_verbose_level":2,"log_format":"ISO8601"}`)
	// A subset changes only itself; the response is always the full object.
	h.do("POST", "/v2/logging", []byte(`{"log_error":false}`)).expect(t, 200,
		`{"log_file":"","log_info":false,"log_warning":true,"log_error":false,"log_verbose_level":2,"log_format":"ISO8601"}`)
	for body, want := range map[string]struct {
		status int
		msg    string
	}{
		`{"log_file":"other.log"}`:  {501, "log file location can not be updated through network protocol"},
		`{"log_verbose_level":-1}`:  {400, "attempt to access JSON non-unsigned-integer as unsigned-integer"},
		`{"log_verbose_level":"1"}`: {400, "attempt to access JSON non-unsigned-integer as unsigned-integer"},
		`{"log_info":"false"}`:      {400, "attempt to access JSON non-boolean as boolean"},
		`{"log_format":1}`:          {400, "attempt to access JSON non-string as string"},
		`{"log_format":"iso"}`:      {400, "invalid argument for --log_format, got: iso"},
		`{"log_colour":true}`:       {400, "unknown log setting 'log_colour'"},
		`{"log_info":False}`:        {400, "failed to parse the request JSON buffer"},
	} {
		h.do("POST", "/v2/logging", []byte(body)).expectError(t, want.status, want.msg)
	}
	// Refused requests change nothing.
	h.do("GET", "/v2/logging", nil).expect(t, 200,
		`{"log_file":"","log_info":false,"log_warning":true,"log_error":false,"log_verbose_level":2,"log_format":"ISO8601"}`)
	h.do("PUT", "/v2/logging", nil).expect(t, 405, `{"error":"Method Not Allowed"}`)
}

func TestTraceSettingEndpoints(t *testing.T) {
	file := filepath.Join(t.TempDir(), "trace.json")
	s, err := trace.ParseConfig([]string{"triton,file=" + file})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := trace.New(trace.Options{Settings: s, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Options{Tracer: tr})
	global := `{"trace_level":["OFF"],"trace_rate":"1000","trace_count":"-1","log_frequency":"0","trace_file":"` + file + `","trace_mode":"triton"}`
	h.do("GET", "/v2/trace/setting", nil).expect(t, 200, global)
	h.do("GET", "/v2/models/simple/trace/setting", nil).expect(t, 200, global)
	h.do("POST", "/v2/models/simple/trace/setting", []byte(`{"trace_level":["TIMESTAMPS"],"trace_rate":"1","trace_count":"2"}`)).expect(t, 200,
		`{"trace_level":["TIMESTAMPS"],"trace_rate":"1","trace_count":"2","log_frequency":"0","trace_file":"`+file+`","trace_mode":"triton"}`)
	h.do("GET", "/v2/trace/setting", nil).expect(t, 200, global)

	// Two requests are traced, the third is not (count used up).
	for range 3 {
		h.do("POST", "/v2/models/simple/infer", []byte(`{"inputs":[{"name":"INPUT0","shape":[1,1],"datatype":"INT32","data":[1]}]}`))
	}
	h.do("GET", "/v2/models/simple/trace/setting", nil).expect(t, 200,
		`{"trace_level":["TIMESTAMPS"],"trace_rate":"1","trace_count":"0","log_frequency":"0","trace_file":"`+file+`","trace_mode":"triton"}`)
	data, err := os.ReadFile(file + ".0")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"HTTP_RECV_START", "HTTP_RECV_END", "REQUEST_START", "REQUEST_END", "HTTP_SEND_START", "HTTP_SEND_END", `"model_name":"simple"`} {
		if strings.Count(string(data), name) != 2 {
			t.Errorf("%s: want 2 traces in %s", name, data)
		}
	}

	// null clears a model's setting back to the global one.
	h.do("POST", "/v2/models/simple/trace/setting", []byte(`{"trace_level":null,"trace_rate":null,"trace_count":null}`)).expect(t, 200, global)
	for body, want := range map[string]struct {
		status int
		msg    string
	}{
		`{"trace_file":"x.json"}`:                         {501, "trace file location can not be updated through network protocol"},
		`{"trace_rate":1}`:                                {400, "attempt to access JSON non-string as string"},
		`{"trace_rate":"fast"}`:                           {400, "Unable to parse 'trace_rate', got: fast"},
		`{"trace_count":"-3"}`:                            {400, "Unable to parse 'trace_count'. Expecting value >= -1, got: -3"},
		`{"trace_level":"TIMESTAMPS"}`:                    {400, "attempt to access JSON non-array as array"},
		`{"trace_level":["OFF","TIMESTAMPS"]}`:            {400, "Expect only one trace level 'OFF' is specified"},
		`{"trace_level":["TIMESTAMPS"],"trace_rate":"0"}`: {400, "Attempting to set invalid trace setting :sample rate must be non-zero"},
		`{"sample":"1"}`:                                  {400, "unknown trace setting 'sample'"},
	} {
		h.do("POST", "/v2/trace/setting", []byte(body)).expectError(t, want.status, want.msg)
	}
	// Triton 2.51 answers an unknown model 400 (checked with make compat).
	h.do("GET", "/v2/models/nosuch/trace/setting", nil).expectError(t, 400, "Request for unknown model : nosuch")
	h.do("GET", "/v2/models/simple/versions/1/trace/setting", nil).expect(t, 404, `{"error":"Not Found"}`)
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestRestrictedAPIs(t *testing.T) {
	rules := restricted.Rules{}
	if err := rules.AddHTTP("inference,health:infer-key=secret"); err != nil {
		t.Fatal(err)
	}
	if err := rules.AddHTTP("logging,model-repository:admin-key=root"); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Options{Restricted: rules, Logging: newLogControl(t)})
	refused := func(key string) string { return `{"error":"This API is restricted, expecting header '` + key + `'"}` }
	h.do("GET", "/v2/health/live", nil).expect(t, 403, refused("infer-key"))
	h.do("GET", "/v2/models/simple/ready", nil, "infer-key", "wrong").expect(t, 403, refused("infer-key"))
	h.do("GET", "/v2/health/live", nil, "Infer-Key", "secret").expect(t, 200, "")
	infer := []byte(`{"inputs":[{"name":"INPUT0","shape":[1,1],"datatype":"INT32","data":[1]}]}`)
	h.do("POST", "/v2/models/simple/infer", infer).expect(t, 403, refused("infer-key"))
	if r := h.do("POST", "/v2/models/simple/infer", infer, "infer-key", "secret"); r.status != 200 {
		t.Errorf("infer with the header: %d %s", r.status, r.body)
	}
	h.do("GET", "/v2/logging", nil, "infer-key", "secret").expect(t, 403, refused("admin-key"))
	if r := h.do("GET", "/v2/logging", nil, "admin-key", "root"); r.status != 200 {
		t.Errorf("logging with the header: %d %s", r.status, r.body)
	}
	h.do("POST", "/v2/repository/index", nil).expect(t, 403, refused("admin-key"))
	// Unrestricted categories stay open; unknown paths are still 404.
	if r := h.do("GET", "/v2", nil); r.status != 200 {
		t.Errorf("metadata: %d", r.status)
	}
	h.do("GET", "/v2/nothing", nil).expect(t, 404, `{"error":"Not Found"}`)
}
