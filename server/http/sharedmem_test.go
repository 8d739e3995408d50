package httpfront

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/sharedmem"
)

// fakeShm records the shared-memory calls of the front end and answers
// with canned results.
type fakeShm struct {
	mu      sync.Mutex
	calls   []string
	status  []sharedmem.Status
	cuda    []sharedmem.CudaStatus
	err     error // returned by every call when set
	handles [][]byte
}

func (f *fakeShm) record(format string, args ...any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
	return f.err
}

func (f *fakeShm) lastCall() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return ""
	}
	return f.calls[len(f.calls)-1]
}

var errDisabled = inference.Unsupported(sharedmem.DisabledMessage)

func (f *fakeCore) RegisterSystemSharedMemory(_ context.Context, name, key string, offset, byteSize uint64) error {
	if f.shm == nil {
		return errDisabled
	}
	return f.shm.record("register %s %s %d %d", name, key, offset, byteSize)
}

func (f *fakeCore) SystemSharedMemoryStatus(_ context.Context, name string) ([]sharedmem.Status, error) {
	if f.shm == nil {
		return nil, errDisabled
	}
	return f.shm.status, f.shm.record("status %q", name)
}

func (f *fakeCore) UnregisterSystemSharedMemory(_ context.Context, name string) error {
	if f.shm == nil {
		return errDisabled
	}
	return f.shm.record("unregister %q", name)
}

func (f *fakeCore) RegisterCudaSharedMemory(_ context.Context, name string, handle []byte, deviceID int64, byteSize uint64) error {
	if f.shm == nil {
		return errDisabled
	}
	f.shm.mu.Lock()
	f.shm.handles = append(f.shm.handles, handle)
	f.shm.mu.Unlock()
	if err := f.shm.record("cuda register %s %d %d", name, deviceID, byteSize); err != nil {
		return err
	}
	return inference.Unsupported("failed to register CUDA shared memory region: '%s', GPUs not supported", name)
}

func (f *fakeCore) CudaSharedMemoryStatus(_ context.Context, name string) ([]sharedmem.CudaStatus, error) {
	if f.shm == nil {
		return nil, errDisabled
	}
	return f.shm.cuda, f.shm.record("cuda status %q", name)
}

func (f *fakeCore) UnregisterCudaSharedMemory(_ context.Context, name string) error {
	if f.shm == nil {
		return errDisabled
	}
	return f.shm.record("cuda unregister %q", name)
}

func TestSharedMemoryDisabled(t *testing.T) {
	h := newHarness(t, Options{})
	for _, kind := range []string{"systemsharedmemory", "cudasharedmemory"} {
		h.do("GET", "/v2/"+kind+"/status", nil).expect(t, 501, `{"error":"`+sharedmem.DisabledMessage+`"}`)
		h.do("GET", "/v2/"+kind+"/region/r/status", nil).expectError(t, 501, "--allow-client-shm=true")
		h.do("POST", "/v2/"+kind+"/region/r/register", []byte(`{"key":"/k","offset":0,"byte_size":8}`)).expectError(t, 501, "Client shared memory is disabled")
		// Disabled wins over a body that does not parse, as in Triton.
		h.do("POST", "/v2/"+kind+"/region/r/register", []byte(`{`)).expectError(t, 501, "Client shared memory is disabled")
		h.do("POST", "/v2/"+kind+"/unregister", nil).expectError(t, 501, "Client shared memory is disabled")
		h.do("POST", "/v2/"+kind+"/region/r/unregister", nil).expectError(t, 501, "Client shared memory is disabled")
		h.do("POST", "/v2/"+kind+"/status", nil).expect(t, 405, `{"error":"Method Not Allowed"}`)
		h.do("GET", "/v2/"+kind+"/register", nil).expect(t, 405, `{"error":"Method Not Allowed"}`)
		h.do("GET", "/v2/"+kind+"/region/r/unregister", nil).expect(t, 405, `{"error":"Method Not Allowed"}`)
	}
}

func TestSystemSharedMemoryEndpoints(t *testing.T) {
	h := newHarness(t, Options{})
	shm := &fakeShm{status: []sharedmem.Status{{Name: "in", Key: "/k\"1", Offset: 8, ByteSize: 64}, {Name: "out", Key: "/k2", ByteSize: 1 << 40}}}
	h.core.shm = shm

	r := h.do("GET", "/v2/systemsharedmemory/status", nil)
	r.expect(t, 200, `[{"name":"in","key":"/k\"1","offset":8,"byte_size":64},{"name":"out","key":"/k2","offset":0,"byte_size":1099511627776}]`)
	if ct := r.header.Get("Content-Type"); ct != contentTypeJSON {
		t.Errorf("Content-Type %q", ct)
	}
	h.do("GET", "/v2/systemsharedmemory/region/a%2Fb/status", nil)
	if got := shm.lastCall(); got != `status "a/b"` {
		t.Errorf("call %s", got)
	}

	h.do("POST", "/v2/systemsharedmemory/region/in/register", []byte(`{"key":"/input0","offset":4096,"byte_size":64}`)).expect(t, 200, ``)
	if got := shm.lastCall(); got != "register in /input0 4096 64" {
		t.Errorf("call %s", got)
	}
	// offset defaults to 0; unknown members are ignored.
	h.do("POST", "/v2/systemsharedmemory/region/in/register", []byte(`{"key":"k","byte_size":18446744073709551615,"x":[1]}`)).expect(t, 200, ``)
	if got := shm.lastCall(); got != "register in k 0 18446744073709551615" {
		t.Errorf("call %s", got)
	}
	for _, tc := range []struct{ body, substr string }{
		{``, "failed to parse the request JSON buffer"},
		{`[]`, "expected an object"},
		{`{"offset":0,"byte_size":8}`, "no 'key'"},
		{`{"key":"/k","offset":0}`, "no 'byte_size'"},
		{`{"key":1,"byte_size":8}`, "Unable to parse 'key'"},
		{`{"key":"/k","offset":-1,"byte_size":8}`, "Unable to parse 'offset'"},
		{`{"key":"/k","byte_size":1.5}`, "Unable to parse 'byte_size'"},
		{`{"key":"/k","byte_size":8} {}`, "must not be followed"},
	} {
		h.do("POST", "/v2/systemsharedmemory/region/in/register", []byte(tc.body)).expectError(t, 400, tc.substr)
	}

	h.do("POST", "/v2/systemsharedmemory/unregister", nil).expect(t, 200, ``)
	if got := shm.lastCall(); got != `unregister ""` {
		t.Errorf("call %s", got)
	}
	h.do("POST", "/v2/systemsharedmemory/region/in/unregister", nil).expect(t, 200, ``)
	if got := shm.lastCall(); got != `unregister "in"` {
		t.Errorf("call %s", got)
	}

	// The core's errors map to Triton's statuses.
	for _, tc := range []struct {
		err    error
		status int
	}{
		{inference.Errorf(inference.CodeAlreadyExists, "shared memory region 'in' already in manager"), 400},
		{inference.Internal("Unable to open shared memory region: '/k'"), 500},
		{inference.NotFound("Unable to find system shared memory region: 'x'"), 404},
		{inference.InvalidArg("failed to register shared memory region 'in': invalid args"), 400},
	} {
		shm.err = tc.err
		h.do("POST", "/v2/systemsharedmemory/region/in/register", []byte(`{"key":"/k","offset":0,"byte_size":8}`)).expect(t, tc.status, `{"error":"`+tc.err.Error()+`"}`)
	}
}

func TestCudaSharedMemoryEndpoints(t *testing.T) {
	h := newHarness(t, Options{})
	shm := &fakeShm{}
	h.core.shm = shm
	h.do("GET", "/v2/cudasharedmemory/status", nil).expect(t, 200, `[]`)
	shm.cuda = []sharedmem.CudaStatus{{Name: "g", DeviceID: 1, ByteSize: 16}}
	h.do("GET", "/v2/cudasharedmemory/region/g/status", nil).expect(t, 200, `[{"name":"g","device_id":1,"byte_size":16}]`)
	h.do("POST", "/v2/cudasharedmemory/unregister", nil).expect(t, 200, ``)
	if got := shm.lastCall(); got != `cuda unregister ""` {
		t.Errorf("call %s", got)
	}
	h.do("POST", "/v2/cudasharedmemory/region/g/register", []byte(`{"raw_handle":{"b64":"AAEC/w=="},"device_id":0,"byte_size":64}`)).
		expectError(t, 501, "failed to register CUDA shared memory region: 'g', GPUs not supported")
	if got := shm.lastCall(); got != "cuda register g 0 64" || string(shm.handles[0]) != "\x00\x01\x02\xff" {
		t.Errorf("call %s, handle %x", got, shm.handles)
	}
	h.do("POST", "/v2/cudasharedmemory/region/g/register", []byte(`{"raw_handle":{"b64":"%%%"},"device_id":0,"byte_size":64}`)).expectError(t, 400, "Unable to parse 'b64'")
	h.do("POST", "/v2/cudasharedmemory/region/g/register", []byte(`{"raw_handle":"x"}`)).expectError(t, 400, "Unable to parse 'raw_handle'")
	h.do("POST", "/v2/cudasharedmemory/region/g/register", []byte(`{"device_id":"0"}`)).expectError(t, 400, "Unable to parse 'device_id'")
}

// The front end passes the shared-memory parameters of inputs and outputs
// to the core, which resolves them; it writes no data for outputs that went
// to shared memory.
func TestInferSharedMemoryParameters(t *testing.T) {
	h := newHarness(t, Options{})
	h.core.inferFn = func(_ context.Context, req *inference.Request) (*inference.Response, error) {
		in := req.Input("INPUT0")
		if in == nil || in.Data != nil {
			return nil, inference.Internal("input %+v", in)
		}
		want := "map[shared_memory_byte_size:12 shared_memory_offset:4 shared_memory_region:in]"
		if got := fmt.Sprint(in.Parameters); got != want {
			return nil, inference.Internal("input parameters %s", got)
		}
		if got := fmt.Sprint(req.Outputs[0].Parameters); got != "map[shared_memory_byte_size:12 shared_memory_region:out]" {
			return nil, inference.Internal("output parameters %s", got)
		}
		// As the core returns them: shm outputs without data.
		return &inference.Response{ModelName: req.ModelName, ModelVersion: "1", Outputs: []inference.Tensor{
			{Name: "OUTPUT0", DataType: inference.Int32, Shape: []int64{1, 3}},
			{Name: "OUTPUT1", DataType: inference.Int32, Shape: []int64{1}, Data: []byte{7, 0, 0, 0}},
		}}, nil
	}
	body := `{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1,3],"parameters":{"shared_memory_region":"in","shared_memory_offset":4,"shared_memory_byte_size":12}}],` +
		`"outputs":[{"name":"OUTPUT0","parameters":{"binary_data":false,"shared_memory_region":"out","shared_memory_byte_size":12}},{"name":"OUTPUT1","parameters":{"binary_data":true}}]}`
	r := h.do("POST", "/v2/models/simple/infer", []byte(body))
	want := `{"model_name":"simple","model_version":"1","outputs":[{"name":"OUTPUT0","datatype":"INT32","shape":[1,3]},` +
		`{"name":"OUTPUT1","datatype":"INT32","shape":[1],"parameters":{"binary_data_size":4}}]}` + "\x07\x00\x00\x00"
	if r.status != 200 || string(r.body) != want {
		t.Fatalf("got %d %q\nwant %q", r.status, r.body, want)
	}
	if hl := r.header.Get("Inference-Header-Content-Length"); hl != fmt.Sprint(len(want)-4) {
		t.Errorf("header length %s", hl)
	}
}

func TestInferSharedMemoryRefusals(t *testing.T) {
	h := newHarness(t, Options{})
	in := func(params string) string {
		return `{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1],"parameters":{` + params + `}}]}`
	}
	out := func(params string) string {
		return `{"inputs":[],"outputs":[{"name":"OUTPUT0","parameters":{` + params + `}}]}`
	}
	for _, tc := range []struct{ name, body, substr string }{
		{"region and data", `{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1],"data":[1],"parameters":{"shared_memory_region":"r","shared_memory_byte_size":4}}]}`,
			"But set 'data' 'shared_memory_region'"},
		{"region and binary", in(`"shared_memory_region":"r","binary_data_size":4`), "But set 'binary_data_size' 'shared_memory_region'"},
		{"region not string", in(`"shared_memory_region":1,"shared_memory_byte_size":4`), "Unable to parse 'shared_memory_region'"},
		{"offset not uint", in(`"shared_memory_region":"r","shared_memory_offset":-4,"shared_memory_byte_size":4`), "Unable to parse 'shared_memory_offset'"},
		{"size not uint", out(`"shared_memory_region":"r","shared_memory_byte_size":"4"`), "Unable to parse 'shared_memory_byte_size'"},
		{"output classification", out(`"shared_memory_region":"r","shared_memory_byte_size":4,"classification":2`), "Output can't set both 'shared_memory_region' and 'classification'"},
		{"output binary", out(`"binary_data":true,"shared_memory_region":"r","shared_memory_byte_size":4`), "Output can't set both 'shared_memory_region' and 'binary_data'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.do("POST", "/v2/models/simple/infer", []byte(tc.body)).expectError(t, 400, tc.substr)
		})
	}
	// Large unsigned values reach the core unchanged (it reports the overflow).
	h.core.inferFn = func(_ context.Context, req *inference.Request) (*inference.Response, error) {
		return nil, inference.InvalidArg("offset %v", req.Inputs[0].Parameters["shared_memory_offset"])
	}
	h.do("POST", "/v2/models/simple/infer", []byte(in(`"shared_memory_region":"r","shared_memory_offset":18446744073709551584,"shared_memory_byte_size":4`))).
		expectError(t, 400, "offset 18446744073709551584")
}
