package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp/fasthttputil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
	grpcfront "github.com/nereid-project/nereid/server/grpc"
	httpfront "github.com/nereid-project/nereid/server/http"
	"github.com/nereid-project/nereid/sharedmem"
	"github.com/nereid-project/nereid/sharedmem/cudadriver"
	"github.com/nereid-project/nereid/sharedmem/cudadriver/cudadrivertest"
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

// The CUDA shared-memory tests run against the stand-in driver of
// cudadrivertest (sharedmem/cudadriver/testdata/fakecuda.c): the test
// machines have no GPU. Its "device allocations" are POSIX shared-memory
// objects, its IPC handles their names; the real driver path is exercised
// only on a machine with a GPU. The driver is loaded once per process, so
// every test that needs the stand-in calls cudadrivertest.Use first, and
// the test without a driver runs in a child process.

// wantDriverBalanced fails t unless every primary context retained and
// pushed since before was released and popped, and every handle of bufs
// opened was closed.
func wantDriverBalanced(t *testing.T, fake *cudadrivertest.Fake, before cudadrivertest.Counts, bufs ...*cudadrivertest.Buffer) {
	t.Helper()
	c := fake.Counts(t)
	if c.Retains-before.Retains != c.Releases-before.Releases || c.Pushes-before.Pushes != c.Pops-before.Pops {
		t.Errorf("unbalanced driver calls: before %+v, after %+v", before, c)
	}
	if c := fake.Counts(t, bufs...); c.Opens != c.Closes {
		t.Errorf("IPC handles: %d opened, %d closed", c.Opens, c.Closes)
	}
}

func TestInferThroughCudaSharedMemory(t *testing.T) {
	fake := cudadrivertest.Use(t)
	before := fake.Counts(t)
	s := newModelServer(t, shmConfig, nil, Options{AllowClientShm: true})
	ctx := context.Background()
	in, out := fake.NewBuffer(t, 256), fake.NewBuffer(t, 64)
	if err := s.RegisterCudaSharedMemory(ctx, "gin", in.Handle, 1, 200); err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterCudaSharedMemory(ctx, "gout", out.Handle, 0, 64); err != nil {
		t.Fatal(err)
	}
	st, err := s.CudaSharedMemoryStatus(ctx, "")
	if want := []sharedmem.CudaStatus{{Name: "gin", DeviceID: 1, ByteSize: 200}, {Name: "gout", DeviceID: 0, ByteSize: 64}}; err != nil || !reflect.DeepEqual(st, want) {
		t.Fatalf("status %v, %v; want %v", st, err, want)
	}
	if st, err := s.CudaSharedMemoryStatus(ctx, "gout"); err != nil || len(st) != 1 || st[0].Name != "gout" {
		t.Fatalf("status gout: %v, %v", st, err)
	}
	words := bytesTensor("hello", "", "cuda")
	in.Write(t, 8, int32s(7, -8, 9))
	in.Write(t, 40, words)

	req := &inference.Request{ModelName: "shm",
		Inputs: []inference.Tensor{
			{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 3}, Parameters: shmTensorParams("gin", 8, 12)},
			{Name: "INPUT1", DataType: inference.Bytes, Shape: []int64{1, 3}, Parameters: shmTensorParams("gin", 40, int64(len(words)))},
		},
		Outputs: []inference.RequestedOutput{
			{Name: "OUTPUT0", Parameters: shmTensorParams("gout", 4, 12)},
			{Name: "OUTPUT1"},
		},
	}
	syncs := fake.Counts(t).Syncs
	resp, err := s.Infer(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	// The output copy to the device is waited for before the response.
	if n := fake.Counts(t).Syncs - syncs; n != 1 {
		t.Errorf("%d cuCtxSynchronize calls for one output written to the device; want 1", n)
	}
	o0, o1 := resp.Outputs[0], resp.Outputs[1]
	if o0.Data != nil || o0.DataType != inference.Int32 || !reflect.DeepEqual(o0.Shape, []int64{1, 3}) {
		t.Errorf("shared-memory output %+v", o0)
	}
	if got := out.Read(t, 4, 12); string(got) != string(int32s(7, -8, 9)) {
		t.Errorf("the device holds %v", got)
	}
	if got := out.Read(t, 0, 4); string(got) != "\x00\x00\x00\x00" {
		t.Errorf("the output was written before its offset: %v", got)
	}
	if string(o1.Data) != string(words) {
		t.Errorf("OUTPUT1 %q", o1.Data)
	}
	if err := s.UnregisterCudaSharedMemory(ctx, "gin"); err != nil {
		t.Fatal(err)
	}
	if c := fake.Counts(t, in); c.Opens != 1 || c.Closes != 1 {
		t.Fatalf("gin after unregister: %+v", c)
	}
	if c := fake.Counts(t, out); c.Opens != 1 || c.Closes != 0 {
		t.Fatalf("unregistering gin touched gout: %+v", c)
	}
	if err := s.UnregisterCudaSharedMemory(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if st, err := s.CudaSharedMemoryStatus(ctx, ""); err != nil || len(st) != 0 {
		t.Fatalf("status after unregister all: %v %v", st, err)
	}
	if string(o1.Data) != string(words) {
		t.Error("output changed after unregister")
	}
	wantDriverBalanced(t, fake, before, in, out)
}

func TestCudaSharedMemoryRegistration(t *testing.T) {
	fake := cudadrivertest.Use(t)
	before := fake.Counts(t)
	s := newModelServer(t, shmConfig, nil, Options{AllowClientShm: true})
	ctx := context.Background()
	buf := fake.NewBuffer(t, 128)
	key := newShmObject(t, 64)
	if err := s.RegisterSystemSharedMemory(ctx, "sys", key, 0, 64); err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterCudaSharedMemory(ctx, "g", buf.Handle, 0, 128); err != nil {
		t.Fatal(err)
	}
	unknown := make([]byte, 64)
	copy(unknown, "nereid_no_such_object")
	for _, tc := range []struct {
		name  string
		call  func() error
		code  inference.Code
		text  string
		exact bool
	}{
		{"short handle", func() error { return s.RegisterCudaSharedMemory(ctx, "r", buf.Handle[:16], 0, 8) },
			inference.CodeInvalidArg, "failed to register CUDA shared memory region 'r': raw_handle has 16 bytes; a CUDA IPC memory handle (cudaIpcMemHandle_t) has 64", true},
		{"device out of range", func() error { return s.RegisterCudaSharedMemory(ctx, "r", buf.Handle, 2, 8) },
			inference.CodeInvalidArg, "failed to register CUDA shared memory region 'r': invalid device id 2: the server sees 2 CUDA device(s)", true},
		{"negative device", func() error { return s.RegisterCudaSharedMemory(ctx, "r", buf.Handle, -1, 8) },
			inference.CodeInvalidArg, "invalid device id -1", false},
		{"beyond the allocation", func() error { return s.RegisterCudaSharedMemory(ctx, "r", buf.Handle, 0, 129) },
			inference.CodeInvalidArg, "failed to register CUDA shared memory region 'r': invalid args: byte_size 129 exceeds the 128 bytes of the CUDA allocation", true},
		{"driver refuses the handle", func() error { return s.RegisterCudaSharedMemory(ctx, "r", unknown, 0, 8) },
			inference.CodeInvalidArg, "failed to register CUDA shared memory region 'r': failed to open CUDA IPC handle: cuIpcOpenMemHandle_v2 failed: CUDA_ERROR_INVALID_HANDLE (400)", true},
		{"CUDA name taken", func() error { return s.RegisterCudaSharedMemory(ctx, "g", buf.Handle, 0, 8) },
			inference.CodeAlreadyExists, "shared memory region 'g' already in manager", true},
		{"system name taken", func() error { return s.RegisterCudaSharedMemory(ctx, "sys", buf.Handle, 0, 8) },
			inference.CodeAlreadyExists, "shared memory region 'sys' already in manager", true},
		{"CUDA name taken by system", func() error { return s.RegisterSystemSharedMemory(ctx, "g", key, 0, 8) },
			inference.CodeAlreadyExists, "shared memory region 'g' already in manager", true},
		{"system status of a CUDA region", func() error { _, err := s.SystemSharedMemoryStatus(ctx, "g"); return err },
			inference.CodeNotFound, "The region named 'g' is registered as CUDA shared memory, not system shared memory", true},
		{"CUDA status of a system region", func() error { _, err := s.CudaSharedMemoryStatus(ctx, "sys"); return err },
			inference.CodeNotFound, "The region named 'sys' is registered as system shared memory, not CUDA shared memory", true},
		{"unknown CUDA region", func() error { _, err := s.CudaSharedMemoryStatus(ctx, "nope"); return err },
			inference.CodeNotFound, "Unable to find cuda shared memory region: 'nope'", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if inference.CodeOf(err) != tc.code || err == nil || !strings.Contains(err.Error(), tc.text) || tc.exact && err.Error() != tc.text {
				t.Fatalf("err = %v (%v); want %v: %q", err, inference.CodeOf(err), tc.code, tc.text)
			}
		})
	}
	if s.shm.Has("r") {
		t.Fatal("a refused region is registered")
	}
	// Unregistering one kind leaves the other: a name of the other kind is
	// not an error and changes nothing, as in Triton.
	if err := s.UnregisterSystemSharedMemory(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	if err := s.UnregisterSystemSharedMemory(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.CudaSharedMemoryStatus(ctx, "g"); len(st) != 1 {
		t.Fatal("a system unregister removed a CUDA region")
	}
	if err := s.RegisterSystemSharedMemory(ctx, "sys", key, 0, 64); err != nil {
		t.Fatal(err)
	}
	if err := s.UnregisterCudaSharedMemory(ctx, "sys"); err != nil {
		t.Fatal(err)
	}
	if err := s.UnregisterCudaSharedMemory(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.SystemSharedMemoryStatus(ctx, "sys"); len(st) != 1 {
		t.Fatal("a CUDA unregister removed a system region")
	}
	if _, err := s.CudaSharedMemoryStatus(ctx, "g"); inference.CodeOf(err) != inference.CodeNotFound {
		t.Fatalf("g after unregister: %v", err)
	}
	// Two opens (g, and the region beyond the allocation), two closes.
	if c := fake.Counts(t, buf); c.Opens != 2 || c.Closes != 2 {
		t.Fatalf("opens and closes: %+v", c)
	}
	wantDriverBalanced(t, fake, before, buf)
}

func TestInferCudaSharedMemoryRefusals(t *testing.T) {
	fake := cudadrivertest.Use(t)
	before := fake.Counts(t)
	s := newModelServer(t, shmConfig, nil, Options{AllowClientShm: true})
	ctx := context.Background()
	buf, failing := fake.NewBuffer(t, 256), fake.NewFailingBuffer(t, 64)
	if err := s.RegisterCudaSharedMemory(ctx, "r", buf.Handle, 0, 64); err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterCudaSharedMemory(ctx, "bad", failing.Handle, 1, 64); err != nil {
		t.Fatal(err)
	}
	good := func() *inference.Request {
		return &inference.Request{ModelName: "shm", Inputs: []inference.Tensor{
			{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 3}, Parameters: shmTensorParams("r", 0, 12)},
			{Name: "INPUT1", DataType: inference.Bytes, Shape: []int64{1, 0}, Data: []byte{}},
		}}
	}
	if _, err := s.Infer(ctx, good()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		change func(*inference.Request)
		code   inference.Code
		text   string
	}{
		{"offset beyond", func(r *inference.Request) { r.Inputs[0].Parameters["shared_memory_offset"] = int64(64) },
			inference.CodeInvalidArg, "Invalid offset for shared memory region: 'r'"},
		// Inside the allocation (256 bytes), outside the registered 64.
		{"window beyond", func(r *inference.Request) { r.Inputs[0].Parameters["shared_memory_offset"] = int64(60) },
			inference.CodeInvalidArg, "Invalid offset + byte size for shared memory region: 'r'"},
		{"overflow", func(r *inference.Request) {
			r.Inputs[0].Parameters["shared_memory_offset"] = int64(32)
			r.Inputs[0].Parameters["shared_memory_byte_size"] = uint64(1<<64 - 32)
		}, inference.CodeInvalidArg, "Integer overflow detected"},
		{"byte size mismatch", func(r *inference.Request) { r.Inputs[0].Parameters["shared_memory_byte_size"] = int64(16) },
			inference.CodeInvalidArg, "input byte size mismatch for input 'INPUT0' for model 'shm'. Expected 12, got 16"},
		{"output window beyond", func(r *inference.Request) {
			r.Outputs = []inference.RequestedOutput{{Name: "OUTPUT0", Parameters: shmTensorParams("r", 56, 12)}}
		}, inference.CodeInvalidArg, "Invalid offset + byte size for shared memory region: 'r'"},
		{"output too small", func(r *inference.Request) {
			r.Outputs = []inference.RequestedOutput{{Name: "OUTPUT0", Parameters: shmTensorParams("r", 32, 8)}}
		}, inference.CodeInternal, "shared memory size specified with the request for output 'OUTPUT0' (8 bytes) should be at least 12 bytes to hold the results"},
		{"device copy fails on input", func(r *inference.Request) { r.Inputs[0].Parameters["shared_memory_region"] = "bad" },
			inference.CodeInternal, "unable to read input 'INPUT0' from its shared memory region: copying 12 bytes at offset 0 of CUDA shared memory region 'bad' to the host: cuMemcpyDtoH_v2 failed: CUDA_ERROR_ILLEGAL_ADDRESS (700)"},
		{"device copy fails on output", func(r *inference.Request) {
			r.Outputs = []inference.RequestedOutput{{Name: "OUTPUT0", Parameters: shmTensorParams("bad", 0, 12)}}
		}, inference.CodeInternal, "unable to write output 'OUTPUT0' to its shared memory region: copying 12 bytes to offset 0 of CUDA shared memory region 'bad': cuMemcpyHtoD_v2 failed: CUDA_ERROR_ILLEGAL_ADDRESS (700)"},
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
	// Refusals leave nothing held: the regions close at once.
	if err := s.UnregisterCudaSharedMemory(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.CudaSharedMemoryStatus(ctx, ""); len(st) != 0 {
		t.Fatalf("a refused request left a region in use: %v", st)
	}
	wantDriverBalanced(t, fake, before, buf, failing)
}

// A CUDA region unregistered while a request uses it, or still in use at
// shutdown, keeps its IPC handle open until the request is done.
func TestCudaSharedMemoryInUse(t *testing.T) {
	fake := cudadrivertest.Use(t)
	before := fake.Counts(t)
	s := newModelServer(t, shmConfig, nil, Options{AllowClientShm: true})
	ctx := context.Background()
	a, b, c := fake.NewBuffer(t, 64), fake.NewBuffer(t, 64), fake.NewBuffer(t, 64)
	a.Write(t, 0, int32s(1, 2, 3))
	for name, buf := range map[string]*cudadrivertest.Buffer{"a": a, "b": b, "c": c} {
		if err := s.RegisterCudaSharedMemory(ctx, name, buf.Handle, 0, 64); err != nil {
			t.Fatal(err)
		}
	}
	req := &inference.Request{ModelName: "shm",
		Inputs:  []inference.Tensor{{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 3}, Parameters: shmTensorParams("a", 0, 12)}},
		Outputs: []inference.RequestedOutput{{Name: "OUTPUT0", Parameters: shmTensorParams("b", 0, 12)}},
	}
	bind, err := s.bindSharedMemory(req)
	if err != nil || bind == nil {
		t.Fatalf("bind: %v %v", bind, err)
	}
	if string(req.Inputs[0].Data) != string(int32s(1, 2, 3)) {
		t.Fatalf("input copied from the device: %v", req.Inputs[0].Data)
	}
	if err := s.UnregisterCudaSharedMemory(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.CudaSharedMemoryStatus(ctx, "a"); len(st) != 1 {
		t.Fatal("a region in use vanished at unregister")
	}
	if n := fake.Counts(t, a); n.Closes != 0 {
		t.Fatal("closed while in use")
	}
	// Shutdown closes the region no request uses, and leaves b to the
	// request.
	if err := s.CloseSharedMemory(); err != nil {
		t.Fatal(err)
	}
	if n := fake.Counts(t, c); n.Opens != 1 || n.Closes != 1 {
		t.Fatalf("c at shutdown: %+v", n)
	}
	if n := fake.Counts(t, a, b); n.Closes != 0 {
		t.Fatalf("regions in use closed at shutdown: %+v", n)
	}
	resp, err := bind.finish(&inference.Response{Outputs: []inference.Tensor{{Name: "OUTPUT0", DataType: inference.Int32, Shape: []int64{1, 3}, Data: int32s(4, 5, 6)}}})
	if err != nil || resp.Outputs[0].Data != nil {
		t.Fatalf("finish: %v %v", resp, err)
	}
	if got := b.Read(t, 0, 12); string(got) != string(int32s(4, 5, 6)) {
		t.Fatalf("b holds %v", got)
	}
	bind.release()
	if req.Inputs[0].Data != nil {
		t.Fatal("released input keeps its Data")
	}
	if st, err := s.CudaSharedMemoryStatus(ctx, ""); err != nil || len(st) != 0 {
		t.Fatalf("regions left after the last release: %v %v", st, err)
	}
	if err := s.RegisterCudaSharedMemory(ctx, "late", a.Handle, 0, 64); inference.CodeOf(err) != inference.CodeUnavailable {
		t.Fatalf("register after shutdown: %v", err)
	}
	if n := fake.Counts(t, a, b, c); n.Opens != 3 || n.Closes != 3 {
		t.Fatalf("opens and closes: %+v", n)
	}
	wantDriverBalanced(t, fake, before, a, b, c)
}

// CUDA shared memory through the HTTP front end, over the real core: the
// JSON register body with a base64 handle, status, an inference reading
// and writing CUDA regions, unregister.
func TestCudaSharedMemoryOverHTTP(t *testing.T) {
	fake := cudadrivertest.Use(t)
	before := fake.Counts(t)
	s := newModelServer(t, shmConfig, nil, Options{AllowClientShm: true})
	in, out := fake.NewBuffer(t, 64), fake.NewBuffer(t, 64)
	in.Write(t, 16, int32s(10, 20, -30))

	front := httpfront.New(s, httpfront.Options{Logger: zerolog.Nop()})
	ln := fasthttputil.NewInmemoryListener()
	served := make(chan error, 1)
	go func() { served <- front.Serve(ln) }()
	tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return ln.Dial() }}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := front.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, "http://nereid"+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	register := func(name string, handle []byte, device, size int) (int, string) {
		return do("POST", "/v2/cudasharedmemory/region/"+name+"/register",
			fmt.Sprintf(`{"raw_handle":{"b64":"%s"},"device_id":%d,"byte_size":%d}`, base64.StdEncoding.EncodeToString(handle), device, size))
	}
	for _, tc := range []struct {
		status int
		body   string
		got    func() (int, string)
	}{
		{200, ``, func() (int, string) { return register("in", in.Handle, 1, 64) }},
		{200, ``, func() (int, string) { return register("out", out.Handle, 0, 32) }},
		{400, `{"error":"shared memory region 'in' already in manager"}`, func() (int, string) { return register("in", out.Handle, 0, 8) }},
		{400, `{"error":"failed to register CUDA shared memory region 'x': raw_handle has 3 bytes; a CUDA IPC memory handle (cudaIpcMemHandle_t) has 64"}`,
			func() (int, string) { return register("x", []byte{1, 2, 3}, 0, 8) }},
		{400, `{"error":"failed to register CUDA shared memory region 'x': invalid device id 5: the server sees 2 CUDA device(s)"}`,
			func() (int, string) { return register("x", in.Handle, 5, 8) }},
		{200, `[{"name":"in","device_id":1,"byte_size":64},{"name":"out","device_id":0,"byte_size":32}]`,
			func() (int, string) { return do("GET", "/v2/cudasharedmemory/status", "") }},
		{200, `[{"name":"out","device_id":0,"byte_size":32}]`,
			func() (int, string) { return do("GET", "/v2/cudasharedmemory/region/out/status", "") }},
		{200, `[]`, func() (int, string) { return do("GET", "/v2/systemsharedmemory/status", "") }},
	} {
		if status, body := tc.got(); status != tc.status || body != tc.body {
			t.Errorf("got %d %s\nwant %d %s", status, body, tc.status, tc.body)
		}
	}

	status, body := do("POST", "/v2/models/shm/infer", `{"inputs":[`+
		`{"name":"INPUT0","datatype":"INT32","shape":[1,3],"parameters":{"shared_memory_region":"in","shared_memory_offset":16,"shared_memory_byte_size":12}},`+
		`{"name":"INPUT1","datatype":"BYTES","shape":[1,1],"data":["x"]}],`+
		`"outputs":[{"name":"OUTPUT0","parameters":{"shared_memory_region":"out","shared_memory_offset":8,"shared_memory_byte_size":12}},{"name":"OUTPUT1"}]}`)
	if status != 200 || !strings.Contains(body, `"name":"OUTPUT0"`) || !strings.Contains(body, `"data":["x"]`) {
		t.Fatalf("infer: %d %s", status, body)
	}
	if got := out.Read(t, 8, 12); string(got) != string(int32s(10, 20, -30)) {
		t.Fatalf("the device holds %v after %s", got, body)
	}
	status, body = do("POST", "/v2/models/shm/infer", `{"inputs":[`+
		`{"name":"INPUT0","datatype":"INT32","shape":[1,3],"parameters":{"shared_memory_region":"out","shared_memory_offset":24,"shared_memory_byte_size":12}}]}`)
	if status != 400 || body != `{"error":"Invalid offset + byte size for shared memory region: 'out'"}` {
		t.Fatalf("out of bounds: %d %s", status, body)
	}

	if status, body := do("POST", "/v2/cudasharedmemory/region/in/unregister", ""); status != 200 {
		t.Fatalf("unregister in: %d %s", status, body)
	}
	if c := fake.Counts(t, in); c.Opens != 1 || c.Closes != 1 {
		t.Fatalf("in after unregister: %+v", c)
	}
	if status, body := do("POST", "/v2/cudasharedmemory/unregister", ""); status != 200 {
		t.Fatalf("unregister all: %d %s", status, body)
	}
	if status, body := do("GET", "/v2/cudasharedmemory/status", ""); status != 200 || body != `[]` {
		t.Fatalf("status after unregister: %d %s", status, body)
	}
	wantDriverBalanced(t, fake, before, in, out)
}

// Without a CUDA driver, registration says why, with 501 as today, and
// the rest of the extension answers as with no regions. The driver is
// loaded once per process, and this process may have the stand-in, so the
// test runs in a child process whose NEREID_CUDA_DRIVER names a missing
// file.
func TestCudaSharedMemoryWithoutDriver(t *testing.T) {
	const childEnv = "NEREID_TEST_CUDA_WITHOUT_DRIVER"
	missing := filepath.Join(os.TempDir(), "nereid-no-such-dir", "libcuda.so.1")
	if os.Getenv(childEnv) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCudaSharedMemoryWithoutDriver$", "-test.v", "-test.count=1", "-test.timeout=2m")
		cmd.Env = append(os.Environ(), childEnv+"=1", cudadriver.LibraryEnv+"="+missing)
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("--- PASS: TestCudaSharedMemoryWithoutDriver")) {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	s := newModelServer(t, shmConfig, nil, Options{AllowClientShm: true})
	ctx := context.Background()
	err := s.RegisterCudaSharedMemory(ctx, "g", make([]byte, 64), 0, 64)
	prefix := "failed to register CUDA shared memory region: 'g', GPUs not supported: no CUDA driver: "
	if inference.CodeOf(err) != inference.CodeInvalidArg || !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("register: %v", err)
	}
	t.Log(err)
	if st, err := s.CudaSharedMemoryStatus(ctx, ""); err != nil || len(st) != 0 {
		t.Fatalf("status: %v %v", st, err)
	}
	if _, err := s.CudaSharedMemoryStatus(ctx, "g"); inference.CodeOf(err) != inference.CodeNotFound || err.Error() != "Unable to find cuda shared memory region: 'g'" {
		t.Fatalf("status g: %v", err)
	}
	if err := s.UnregisterCudaSharedMemory(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.UnregisterCudaSharedMemory(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	// System shared memory works without a driver.
	key := newShmObject(t, 64)
	if err := s.RegisterSystemSharedMemory(ctx, "sys", key, 0, 64); err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterCudaSharedMemory(ctx, "sys", make([]byte, 64), 0, 64); inference.CodeOf(err) != inference.CodeAlreadyExists {
		t.Fatalf("register over a system region: %v", err)
	}
}

// CUDA shared memory through the gRPC front end, over the real core: the
// raw handle bytes, status, an inference with an input from and an output
// to CUDA regions, unregister.
func TestCudaSharedMemoryOverGRPC(t *testing.T) {
	fake := cudadrivertest.Use(t)
	before := fake.Counts(t)
	s := newModelServer(t, shmConfig, nil, Options{AllowClientShm: true})
	buf := fake.NewBuffer(t, 64)
	buf.Write(t, 0, int32s(-1, 0, 1))

	front := grpcfront.New(s, grpcfront.Options{Logger: zerolog.Nop()})
	ln := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- front.Serve(ln) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := front.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	cl := inferencepb.NewGRPCInferenceServiceClient(conn)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	if _, err := cl.CudaSharedMemoryRegister(ctx, &inferencepb.CudaSharedMemoryRegisterRequest{Name: "g", RawHandle: buf.Handle, DeviceId: 1, ByteSize: 64}); err != nil {
		t.Fatal(err)
	}
	_, err = cl.CudaSharedMemoryRegister(ctx, &inferencepb.CudaSharedMemoryRegisterRequest{Name: "h", RawHandle: buf.Handle[:8], DeviceId: 0, ByteSize: 64})
	if st, _ := grpcstatus.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "raw_handle has 8 bytes") {
		t.Fatalf("short handle: %v", err)
	}
	_, err = cl.CudaSharedMemoryRegister(ctx, &inferencepb.CudaSharedMemoryRegisterRequest{Name: "g", RawHandle: buf.Handle, DeviceId: 0, ByteSize: 64})
	if st, _ := grpcstatus.FromError(err); st.Code() != codes.AlreadyExists || st.Message() != "shared memory region 'g' already in manager" {
		t.Fatalf("duplicate: %v", err)
	}
	st, err := cl.CudaSharedMemoryStatus(ctx, &inferencepb.CudaSharedMemoryStatusRequest{})
	if err != nil || len(st.GetRegions()) != 1 || st.GetRegions()["g"].GetDeviceId() != 1 || st.GetRegions()["g"].GetByteSize() != 64 {
		t.Fatalf("status %v, %v", st, err)
	}

	window := func(offset, size int64) map[string]*inferencepb.InferParameter {
		return map[string]*inferencepb.InferParameter{
			"shared_memory_region":    {ParameterChoice: &inferencepb.InferParameter_StringParam{StringParam: "g"}},
			"shared_memory_offset":    {ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: offset}},
			"shared_memory_byte_size": {ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: size}},
		}
	}
	resp, err := cl.ModelInfer(ctx, &inferencepb.ModelInferRequest{ModelName: "shm",
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{
			{Name: "INPUT0", Datatype: "INT32", Shape: []int64{1, 3}, Parameters: window(0, 12)},
			{Name: "INPUT1", Datatype: "BYTES", Shape: []int64{1, 1}, Contents: &inferencepb.InferTensorContents{BytesContents: [][]byte{[]byte("x")}}},
		},
		Outputs: []*inferencepb.ModelInferRequest_InferRequestedOutputTensor{{Name: "OUTPUT0", Parameters: window(32, 12)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetOutputs()) != 1 || resp.GetOutputs()[0].GetName() != "OUTPUT0" || len(resp.GetRawOutputContents()) > 0 && len(resp.GetRawOutputContents()[0]) > 0 {
		t.Fatalf("response %v", resp)
	}
	if got := buf.Read(t, 32, 12); string(got) != string(int32s(-1, 0, 1)) {
		t.Fatalf("the device holds %v", got)
	}
	if _, err := cl.CudaSharedMemoryUnregister(ctx, &inferencepb.CudaSharedMemoryUnregisterRequest{Name: "g"}); err != nil {
		t.Fatal(err)
	}
	if c := fake.Counts(t, buf); c.Opens != 1 || c.Closes != 1 {
		t.Fatalf("after unregister: %+v", c)
	}
	wantDriverBalanced(t, fake, before, buf)
}
