package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/sharedmem"
)

const shmConfig = `
name: "shm"
backend: "identity"
max_batch_size: 4
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 3 ] },
  { name: "INPUT1" data_type: TYPE_STRING dims: [ -1 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 3 ] },
  { name: "OUTPUT1" data_type: TYPE_STRING dims: [ -1 ] }
]
instance_group [ { name: "shm" count: 1 kind: KIND_CPU } ]
`

var shmObjects atomic.Int64

// newShmObject creates a POSIX shared-memory object of size zero bytes, as
// tritonclient's shared_memory helpers do, and returns its key.
func newShmObject(t *testing.T, size int) string {
	t.Helper()
	if _, err := os.Stat("/dev/shm"); err != nil {
		t.Skip("no /dev/shm")
	}
	name := fmt.Sprintf("nereid_server_test_%d_%d", os.Getpid(), shmObjects.Add(1))
	path := filepath.Join("/dev/shm", name)
	if err := os.WriteFile(path, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(path) })
	return "/" + name
}

func writeObject(t *testing.T, key string, offset int, data []byte) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join("/dev/shm", key), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, int64(offset)); err != nil {
		t.Fatal(err)
	}
}

func readObject(t *testing.T, key string, offset, n int) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/dev/shm", key))
	if err != nil {
		t.Fatal(err)
	}
	return b[offset : offset+n]
}

func shmTensorParams(region string, offset, size int64) inference.Parameters {
	return inference.Parameters{"shared_memory_region": region, "shared_memory_offset": offset, "shared_memory_byte_size": size}
}

func bytesTensor(elems ...string) []byte {
	var b []byte
	for _, e := range elems {
		b = inference.AppendBytesElement(b, []byte(e))
	}
	return b
}

func TestInferThroughSharedMemory(t *testing.T) {
	s := newModelServer(t, shmConfig, nil, Options{AllowClientShm: true})
	ctx := context.Background()
	key := newShmObject(t, 8192)
	// The input region starts at an offset that is not page aligned.
	if err := s.RegisterSystemSharedMemory(ctx, "in", key, 100, 200); err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterSystemSharedMemory(ctx, "out", key, 4096, 64); err != nil {
		t.Fatal(err)
	}
	words := bytesTensor("hello", "", "shared")
	writeObject(t, key, 100+8, int32s(7, -8, 9))
	writeObject(t, key, 100+40, words)

	req := &inference.Request{ModelName: "shm",
		Inputs: []inference.Tensor{
			{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 3}, Parameters: shmTensorParams("in", 8, 12)},
			{Name: "INPUT1", DataType: inference.Bytes, Shape: []int64{1, 3}, Parameters: shmTensorParams("in", 40, int64(len(words)))},
		},
		Outputs: []inference.RequestedOutput{
			{Name: "OUTPUT0", Parameters: shmTensorParams("out", 4, 12)},
			{Name: "OUTPUT1"},
		},
	}
	resp, err := s.Infer(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	o0, o1 := resp.Outputs[0], resp.Outputs[1]
	if o0.Data != nil || o0.Parameters != nil || o0.DataType != inference.Int32 || !reflect.DeepEqual(o0.Shape, []int64{1, 3}) {
		t.Errorf("shared-memory output %+v", o0)
	}
	if got := readObject(t, key, 4096+4, 12); string(got) != string(int32s(7, -8, 9)) {
		t.Errorf("region holds %v", got)
	}
	if string(o1.Data) != string(words) {
		t.Errorf("OUTPUT1 %q", o1.Data)
	}
	// OUTPUT1 was the identity of an input read from shared memory: the
	// response must not point into the region, which may go away now.
	ref, err := s.shm.Acquire("in", 0, 200)
	if err != nil {
		t.Fatal(err)
	}
	if ref.Overlaps(o1.Data) {
		t.Error("a response output aliases a shared-memory region")
	}
	ref.Release()
	for _, in := range req.Inputs {
		if in.Data != nil {
			t.Errorf("input %s keeps Data pointing into a region", in.Name)
		}
	}
	if err := s.UnregisterSystemSharedMemory(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if string(o1.Data) != string(words) {
		t.Error("output changed after unregister")
	}
}

func TestInferSharedMemoryRefusals(t *testing.T) {
	s := newModelServer(t, shmConfig, nil, Options{AllowClientShm: true})
	ctx := context.Background()
	key := newShmObject(t, 256)
	if err := s.RegisterSystemSharedMemory(ctx, "r", key, 0, 64); err != nil {
		t.Fatal(err)
	}
	good := func() *inference.Request {
		return &inference.Request{ModelName: "shm", Inputs: []inference.Tensor{
			{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 3}, Parameters: shmTensorParams("r", 0, 12)},
			{Name: "INPUT1", DataType: inference.Bytes, Shape: []int64{1, 0}, Data: []byte{}},
		}}
	}
	for _, tc := range []struct {
		name   string
		change func(*inference.Request)
		code   inference.Code
		text   string
	}{
		{"unknown region", func(r *inference.Request) { r.Inputs[0].Parameters["shared_memory_region"] = "nope" },
			inference.CodeNotFound, "Unable to find shared memory region: 'nope'"},
		{"offset beyond", func(r *inference.Request) { r.Inputs[0].Parameters["shared_memory_offset"] = int64(64) },
			inference.CodeInvalidArg, "Invalid offset for shared memory region: 'r'"},
		{"window beyond", func(r *inference.Request) { r.Inputs[0].Parameters["shared_memory_offset"] = int64(60) },
			inference.CodeInvalidArg, "Invalid offset + byte size for shared memory region: 'r'"},
		{"negative offset wraps", func(r *inference.Request) { r.Inputs[0].Parameters["shared_memory_offset"] = int64(-32) },
			inference.CodeInvalidArg, "Invalid offset for shared memory region: 'r'"},
		{"overflow", func(r *inference.Request) {
			r.Inputs[0].Parameters["shared_memory_offset"] = int64(32)
			r.Inputs[0].Parameters["shared_memory_byte_size"] = uint64(1<<64 - 32)
		},
			inference.CodeInvalidArg, "Integer overflow detected"},
		{"byte size mismatch", func(r *inference.Request) { r.Inputs[0].Parameters["shared_memory_byte_size"] = int64(16) },
			inference.CodeInvalidArg, "input byte size mismatch for input 'INPUT0' for model 'shm'. Expected 12, got 16"},
		{"data too", func(r *inference.Request) { r.Inputs[0].Data = make([]byte, 12) },
			inference.CodeInvalidArg, "must not carry data"},
		{"no byte size", func(r *inference.Request) { delete(r.Inputs[0].Parameters, "shared_memory_byte_size") },
			inference.CodeInvalidArg, "'shared_memory_byte_size' must be specified along with 'shared_memory_region' parameter for tensor 'INPUT0'"},
		{"offset without region", func(r *inference.Request) {
			r.Inputs[1].Parameters = inference.Parameters{"shared_memory_offset": int64(0)}
		},
			inference.CodeInvalidArg, "'shared_memory_offset' can not be specified without 'shared_memory_region' parameter for tensor 'INPUT1'"},
		{"region type", func(r *inference.Request) { r.Inputs[0].Parameters["shared_memory_region"] = int64(1) },
			inference.CodeInvalidArg, "invalid value type for 'shared_memory_region' parameter for tensor 'INPUT0', expected string_param."},
		{"size type", func(r *inference.Request) { r.Inputs[0].Parameters["shared_memory_byte_size"] = "12" },
			inference.CodeInvalidArg, "invalid value type for 'shared_memory_byte_size' parameter for tensor 'INPUT0', expected int64_param."},
		{"malformed bytes", func(r *inference.Request) {
			r.Inputs[1] = inference.Tensor{Name: "INPUT1", DataType: inference.Bytes, Shape: []int64{1, 1}, Parameters: shmTensorParams("r", 16, 8)}
		}, inference.CodeInvalidArg, "INPUT1"},
		{"output too small", func(r *inference.Request) {
			r.Outputs = []inference.RequestedOutput{{Name: "OUTPUT0", Parameters: shmTensorParams("r", 32, 8)}}
		}, inference.CodeInternal, "shared memory size specified with the request for output 'OUTPUT0' (8 bytes) should be at least 12 bytes to hold the results"},
		{"output classification", func(r *inference.Request) {
			p := shmTensorParams("r", 32, 12)
			p["classification"] = int64(1)
			r.Outputs = []inference.RequestedOutput{{Name: "OUTPUT0", Parameters: p}}
		}, inference.CodeInvalidArg, "Output can't set both 'shared_memory_region' and 'classification'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := good()
			tc.change(req)
			_, err := s.Infer(ctx, req)
			if inference.CodeOf(err) != tc.code || err == nil || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("err = %v (%v); want %v containing %q", err, inference.CodeOf(err), tc.code, tc.text)
			}
		})
	}
	// Refusals leave nothing held: the region unregisters at once.
	if err := s.UnregisterSystemSharedMemory(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.SystemSharedMemoryStatus(ctx, ""); len(st) != 0 {
		t.Fatalf("a refused request left the region in use: %v", st)
	}
	if _, err := s.Infer(ctx, good()); inference.CodeOf(err) != inference.CodeNotFound {
		t.Fatalf("after unregister: %v", err)
	}
}

// A region unregistered while a request uses it stays until the request
// releases it.
func TestUnregisterDuringRequest(t *testing.T) {
	s := newModelServer(t, shmConfig, nil, Options{AllowClientShm: true})
	ctx := context.Background()
	key := newShmObject(t, 64)
	if err := s.RegisterSystemSharedMemory(ctx, "r", key, 0, 64); err != nil {
		t.Fatal(err)
	}
	req := &inference.Request{ModelName: "shm", Inputs: []inference.Tensor{
		{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 3}, Parameters: shmTensorParams("r", 0, 12)},
	}}
	b, err := s.bindSharedMemory(req)
	if err != nil || b == nil {
		t.Fatalf("bind: %v %v", b, err)
	}
	if err := s.UnregisterSystemSharedMemory(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.SystemSharedMemoryStatus(ctx, "r"); len(st) != 1 {
		t.Fatal("a region in use vanished at unregister")
	}
	if len(req.Inputs[0].Data) != 12 {
		t.Fatal("input not bound")
	}
	b.release()
	if _, err := s.SystemSharedMemoryStatus(ctx, "r"); inference.CodeOf(err) != inference.CodeNotFound {
		t.Fatalf("after release: %v", err)
	}
	if req.Inputs[0].Data != nil {
		t.Fatal("released input keeps its Data")
	}
}

func TestSharedMemoryDisabled(t *testing.T) {
	s := newModelServer(t, shmConfig, nil, Options{})
	ctx := context.Background()
	want := func(err error) {
		t.Helper()
		if inference.CodeOf(err) != inference.CodeUnsupported || err.Error() != sharedmem.DisabledMessage {
			t.Fatalf("err = %v", err)
		}
	}
	want(s.RegisterSystemSharedMemory(ctx, "r", "/k", 0, 8))
	_, err := s.SystemSharedMemoryStatus(ctx, "")
	want(err)
	want(s.UnregisterSystemSharedMemory(ctx, ""))
	_, err = s.CudaSharedMemoryStatus(ctx, "")
	want(err)
	want(s.UnregisterCudaSharedMemory(ctx, ""))
	want(s.RegisterCudaSharedMemory(ctx, "g", nil, 0, 8))
	_, err = s.Infer(ctx, &inference.Request{ModelName: "shm", Inputs: []inference.Tensor{
		{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 3}, Parameters: shmTensorParams("r", 0, 12)},
	}})
	want(err)
	_, err = s.Infer(ctx, &inference.Request{ModelName: "shm",
		Inputs:  []inference.Tensor{{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 3}, Data: int32s(1, 2, 3)}},
		Outputs: []inference.RequestedOutput{{Name: "OUTPUT0", Parameters: shmTensorParams("r", 0, 12)}},
	})
	want(err)
	if err := s.CloseSharedMemory(); err != nil {
		t.Fatal(err)
	}
}

func TestCudaSharedMemory(t *testing.T) {
	s := newModelServer(t, shmConfig, nil, Options{AllowClientShm: true})
	ctx := context.Background()
	if st, err := s.CudaSharedMemoryStatus(ctx, ""); err != nil || len(st) != 0 {
		t.Fatalf("status %v %v", st, err)
	}
	_, err := s.CudaSharedMemoryStatus(ctx, "g")
	if inference.CodeOf(err) != inference.CodeNotFound || err.Error() != "Unable to find cuda shared memory region: 'g'" {
		t.Fatalf("status g: %v", err)
	}
	if err := s.UnregisterCudaSharedMemory(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.UnregisterCudaSharedMemory(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	err = s.RegisterCudaSharedMemory(ctx, "g", make([]byte, 64), 0, 1024)
	if inference.CodeOf(err) != inference.CodeUnsupported || !strings.HasPrefix(err.Error(), "failed to register CUDA shared memory region: 'g'") {
		t.Fatalf("register: %v", err)
	}
	t.Log(err)

	key := newShmObject(t, 64)
	if err := s.RegisterSystemSharedMemory(ctx, "sys", key, 0, 64); err != nil {
		t.Fatal(err)
	}
	_, err = s.CudaSharedMemoryStatus(ctx, "sys")
	if inference.CodeOf(err) != inference.CodeNotFound || !strings.Contains(err.Error(), "registered as system shared memory, not CUDA shared memory") {
		t.Fatalf("status sys: %v", err)
	}
	if err := s.CloseSharedMemory(); err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterSystemSharedMemory(ctx, "late", key, 0, 64); inference.CodeOf(err) != inference.CodeUnavailable {
		t.Fatalf("register after close: %v", err)
	}
}
