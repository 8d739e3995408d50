package grpcfront

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/sharedmem"
)

// fakeShm records the shared-memory calls and answers with canned results.
type fakeShm struct {
	mu     sync.Mutex
	calls  []string
	status []sharedmem.Status
	err    error // returned by every call when set
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
	return f.calls[len(f.calls)-1]
}

var errShmDisabled = inference.Unsupported(sharedmem.DisabledMessage)

func (f *fakeCore) RegisterSystemSharedMemory(_ context.Context, name, key string, offset, byteSize uint64) error {
	if f.shm == nil {
		return errShmDisabled
	}
	return f.shm.record("register %s %s %d %d", name, key, offset, byteSize)
}

func (f *fakeCore) SystemSharedMemoryStatus(_ context.Context, name string) ([]sharedmem.Status, error) {
	if f.shm == nil {
		return nil, errShmDisabled
	}
	return f.shm.status, f.shm.record("status %q", name)
}

func (f *fakeCore) UnregisterSystemSharedMemory(_ context.Context, name string) error {
	if f.shm == nil {
		return errShmDisabled
	}
	return f.shm.record("unregister %q", name)
}

func (f *fakeCore) RegisterCudaSharedMemory(_ context.Context, name string, handle []byte, deviceID int64, byteSize uint64) error {
	if f.shm == nil {
		return errShmDisabled
	}
	if err := f.shm.record("cuda register %s %x %d %d", name, handle, deviceID, byteSize); err != nil {
		return err
	}
	return inference.Unsupported("failed to register CUDA shared memory region: '%s', GPUs not supported", name)
}

func (f *fakeCore) CudaSharedMemoryStatus(_ context.Context, name string) ([]sharedmem.CudaStatus, error) {
	if f.shm == nil {
		return nil, errShmDisabled
	}
	return nil, f.shm.record("cuda status %q", name)
}

func (f *fakeCore) UnregisterCudaSharedMemory(_ context.Context, name string) error {
	if f.shm == nil {
		return errShmDisabled
	}
	return f.shm.record("cuda unregister %q", name)
}

func TestSharedMemoryRPCsDisabled(t *testing.T) {
	c := start(t, &fakeCore{}, Options{})
	ctx := testCtx(t)
	_, err := c.infer.SystemSharedMemoryRegister(ctx, &inferencepb.SystemSharedMemoryRegisterRequest{Name: "r", Key: "/k", ByteSize: 8})
	wantCode(t, err, codes.Unimplemented, sharedmem.DisabledMessage)
	_, err = c.infer.CudaSharedMemoryUnregister(ctx, &inferencepb.CudaSharedMemoryUnregisterRequest{})
	wantCode(t, err, codes.Unimplemented, sharedmem.DisabledMessage)
}

func TestSystemSharedMemoryRPCs(t *testing.T) {
	shm := &fakeShm{status: []sharedmem.Status{{Name: "in", Key: "/k", Offset: 4, ByteSize: 64}, {Name: "out", Key: "/o", ByteSize: 8}}}
	c := start(t, &fakeCore{shm: shm}, Options{})
	ctx := testCtx(t)

	st, err := c.infer.SystemSharedMemoryStatus(ctx, &inferencepb.SystemSharedMemoryStatusRequest{Name: "in"})
	if err != nil {
		t.Fatal(err)
	}
	if r := st.GetRegions()["in"]; len(st.GetRegions()) != 2 || r.GetKey() != "/k" || r.GetOffset() != 4 || r.GetByteSize() != 64 || r.GetName() != "in" {
		t.Errorf("status %v", st)
	}
	if got := shm.lastCall(); got != `status "in"` {
		t.Errorf("call %s", got)
	}
	if _, err := c.infer.SystemSharedMemoryRegister(ctx, &inferencepb.SystemSharedMemoryRegisterRequest{Name: "r", Key: "/k", Offset: 4096, ByteSize: 8}); err != nil {
		t.Fatal(err)
	}
	if got := shm.lastCall(); got != "register r /k 4096 8" {
		t.Errorf("call %s", got)
	}
	if _, err := c.infer.SystemSharedMemoryUnregister(ctx, &inferencepb.SystemSharedMemoryUnregisterRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := shm.lastCall(); got != `unregister ""` {
		t.Errorf("call %s", got)
	}
	for _, tc := range []struct {
		err  error
		code codes.Code
	}{
		{inference.Errorf(inference.CodeAlreadyExists, "shared memory region 'r' already in manager"), codes.AlreadyExists},
		{inference.Internal("Unable to open shared memory region: '/k'"), codes.Internal},
		{inference.InvalidArg("failed to register shared memory region 'r': invalid args"), codes.InvalidArgument},
	} {
		shm.err = tc.err
		_, err := c.infer.SystemSharedMemoryRegister(ctx, &inferencepb.SystemSharedMemoryRegisterRequest{Name: "r", Key: "/k", ByteSize: 8})
		wantCode(t, err, tc.code, tc.err.Error())
	}
	shm.err = inference.NotFound("Unable to find system shared memory region: 'x'")
	_, err = c.infer.SystemSharedMemoryStatus(ctx, &inferencepb.SystemSharedMemoryStatusRequest{Name: "x"})
	wantCode(t, err, codes.NotFound, "Unable to find system shared memory region: 'x'")
}

func TestCudaSharedMemoryRPCs(t *testing.T) {
	shm := &fakeShm{}
	c := start(t, &fakeCore{shm: shm}, Options{})
	ctx := testCtx(t)
	st, err := c.infer.CudaSharedMemoryStatus(ctx, &inferencepb.CudaSharedMemoryStatusRequest{})
	if err != nil || len(st.GetRegions()) != 0 {
		t.Fatalf("status %v %v", st, err)
	}
	if _, err := c.infer.CudaSharedMemoryUnregister(ctx, &inferencepb.CudaSharedMemoryUnregisterRequest{}); err != nil {
		t.Fatal(err)
	}
	_, err = c.infer.CudaSharedMemoryRegister(ctx, &inferencepb.CudaSharedMemoryRegisterRequest{Name: "g", RawHandle: []byte{1, 2}, DeviceId: 0, ByteSize: 64})
	wantCode(t, err, codes.Unimplemented, "GPUs not supported")
	if got := shm.lastCall(); got != "cuda register g 0102 0 64" {
		t.Errorf("call %s", got)
	}
}

func shmParam(region string, offset, size int64) map[string]*inferencepb.InferParameter {
	return map[string]*inferencepb.InferParameter{
		"shared_memory_region":    {ParameterChoice: &inferencepb.InferParameter_StringParam{StringParam: region}},
		"shared_memory_offset":    {ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: offset}},
		"shared_memory_byte_size": {ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: size}},
	}
}

// An input in shared memory takes no raw_input_contents entry: the raw
// contents go, in order, to the inputs that are not in shared memory.
func TestDecodeSharedMemoryInputs(t *testing.T) {
	shmIn := input("A", "INT32", 2)
	shmIn.Parameters = shmParam("in", 8, 8)
	req, err := decodeRequest(&inferencepb.ModelInferRequest{ModelName: "m",
		Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{shmIn, input("B", "INT32", 1)},
		Outputs:          []*inferencepb.ModelInferRequest_InferRequestedOutputTensor{{Name: "O", Parameters: shmParam("out", 0, 4)}},
		RawInputContents: [][]byte{{5, 0, 0, 0}},
	})
	if err != nil {
		t.Fatal(err)
	}
	a, b := req.Inputs[0], req.Inputs[1]
	if a.Data != nil || a.Parameters["shared_memory_region"] != "in" || a.Parameters["shared_memory_offset"] != int64(8) || a.Parameters["shared_memory_byte_size"] != int64(8) {
		t.Errorf("shm input %+v", a)
	}
	if len(b.Data) != 4 || b.Data[0] != 5 {
		t.Errorf("raw input %+v", b)
	}
	if req.Outputs[0].Parameters["shared_memory_region"] != "out" {
		t.Errorf("output %+v", req.Outputs[0])
	}

	withData := withContents(input("A", "INT32", 1), &inferencepb.InferTensorContents{IntContents: []int32{1}})
	withData.Parameters = shmParam("in", 0, 4)
	_, err = decodeRequest(&inferencepb.ModelInferRequest{ModelName: "m", Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{withData}})
	if inference.CodeOf(err) != inference.CodeInvalidArg {
		t.Errorf("contents with shared memory: %v", err)
	}
	_, err = decodeRequest(&inferencepb.ModelInferRequest{ModelName: "m", Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{shmIn},
		RawInputContents: [][]byte{{1, 2, 3, 4, 5, 6, 7, 8}}})
	if inference.CodeOf(err) != inference.CodeInvalidArg {
		t.Errorf("raw contents for an input in shared memory: %v", err)
	}
}

// An output written to shared memory keeps its place in
// raw_output_contents with an empty entry, as Triton sends it.
func TestEncodeSharedMemoryOutput(t *testing.T) {
	out := encodeResponse(&inferencepb.ModelInferRequest{ModelName: "m"}, &inference.Response{ModelVersion: "1", Outputs: []inference.Tensor{
		{Name: "S", DataType: inference.FP32, Shape: []int64{1, 2}},
		{Name: "R", DataType: inference.Int8, Shape: []int64{1}, Data: []byte{9}},
	}})
	raw := out.GetRawOutputContents()
	if len(raw) != 2 || len(raw[0]) != 0 || string(raw[1]) != "\x09" {
		t.Fatalf("raw %q", raw)
	}
	if o := out.GetOutputs()[0]; o.GetDatatype() != "FP32" || fmt.Sprint(o.GetShape()) != "[1 2]" || len(o.GetParameters()) != 0 {
		t.Errorf("output %v", o)
	}
}
