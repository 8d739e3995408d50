package server

import (
	"context"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/sharedmem"
)

// The tensor parameters of Triton's shared-memory extensions.
const (
	paramShmRegion   = "shared_memory_region"
	paramShmOffset   = "shared_memory_offset"
	paramShmByteSize = "shared_memory_byte_size"
)

// errShmDisabled answers every use of client shared memory while
// --allow-client-shm is false.
var errShmDisabled = inference.Unsupported(sharedmem.DisabledMessage)

// RegisterSystemSharedMemory maps byteSize bytes at offset of the POSIX
// shared-memory object key under name.
func (s *Server) RegisterSystemSharedMemory(_ context.Context, name, key string, offset, byteSize uint64) error {
	if s.shm == nil {
		return errShmDisabled
	}
	return s.shm.Register(name, key, offset, byteSize)
}

// SystemSharedMemoryStatus lists the region called name, or every system
// shared-memory region when name is "".
func (s *Server) SystemSharedMemoryStatus(_ context.Context, name string) ([]sharedmem.Status, error) {
	if s.shm == nil {
		return nil, errShmDisabled
	}
	return s.shm.Status(name)
}

// UnregisterSystemSharedMemory unregisters the region called name, or every
// system shared-memory region when name is "". Regions still used by
// in-flight requests are unmapped when those requests finish.
func (s *Server) UnregisterSystemSharedMemory(_ context.Context, name string) error {
	if s.shm == nil {
		return errShmDisabled
	}
	if name == "" {
		return s.shm.UnregisterAll()
	}
	return s.shm.Unregister(name)
}

// CudaSharedMemoryStatus lists the region called name, or every CUDA
// shared-memory region when name is "".
func (s *Server) CudaSharedMemoryStatus(_ context.Context, name string) ([]sharedmem.CudaStatus, error) {
	if s.shm == nil {
		return nil, errShmDisabled
	}
	return s.shm.CudaStatus(name)
}

// RegisterCudaSharedMemory opens a client's CUDA IPC memory handle (the 64
// raw bytes of a cudaIpcMemHandle_t) on device deviceID and registers
// byteSize bytes from its start under name. Inputs read from the region are
// copied to the host, outputs written to it copied to the device. Without a
// CUDA driver or device the answer is InvalidArg, as Triton's "GPUs not supported", and says why.
func (s *Server) RegisterCudaSharedMemory(_ context.Context, name string, rawHandle []byte, deviceID int64, byteSize uint64) error {
	if s.shm == nil {
		return errShmDisabled
	}
	return s.shm.RegisterCuda(name, rawHandle, deviceID, byteSize)
}

// UnregisterCudaSharedMemory unregisters the region called name, or every
// CUDA shared-memory region when name is "", closing their IPC handles.
// Unknown names are not an error, as in Triton: perf_analyzer unregisters
// every region before it starts. Regions still used by in-flight requests
// are closed when those requests finish.
func (s *Server) UnregisterCudaSharedMemory(_ context.Context, name string) error {
	if s.shm == nil {
		return errShmDisabled
	}
	if name == "" {
		return s.shm.UnregisterAllCuda()
	}
	return s.shm.UnregisterCuda(name)
}

// CloseSharedMemory unregisters every region and refuses new ones; regions
// still used by in-flight requests are unmapped when those finish. Call it
// at shutdown, after the front ends have drained.
func (s *Server) CloseSharedMemory() error {
	if s.shm == nil {
		return nil
	}
	return s.shm.Close()
}

// shmBinding is the shared memory one request uses: the region windows its
// inputs were copied from and its outputs go to. It keeps those regions
// mapped until release. An input from a CUDA region is a host copy of the
// window; an output to one is copied to the device in finish.
type shmBinding struct {
	req     *inference.Request
	refs    []*sharedmem.Ref // every window, released together
	inputs  []int            // req.Inputs whose Data is a window or its copy
	outputs []shmOutput
}

type shmOutput struct {
	index int // in req.Outputs, and in the finished response's Outputs
	ref   *sharedmem.Ref
}

// bindSharedMemory resolves the shared-memory parameters of req: each input
// that names a region gets the region's window as its Data, each requested
// output that names one gets its window reserved. It returns nil when the
// request uses no shared memory. On error nothing stays acquired.
func (s *Server) bindSharedMemory(req *inference.Request) (_ *shmBinding, err error) {
	var b *shmBinding
	defer func() {
		if err != nil {
			b.release()
		}
	}()
	for i := range req.Inputs {
		t := &req.Inputs[i]
		p, ok, err := shmParams(t.Name, t.Parameters)
		if err != nil || !ok {
			if err != nil {
				return nil, err
			}
			continue
		}
		if s.shm == nil {
			return nil, errShmDisabled
		}
		if t.Data != nil {
			return nil, inference.InvalidArg("input '%s' for model '%s' names shared memory region '%s' and must not carry data as well", t.Name, req.ModelName, p.region)
		}
		ref, err := s.shm.Acquire(p.region, p.offset, p.byteSize)
		if err != nil {
			return nil, err
		}
		if b == nil {
			b = &shmBinding{req: req}
		}
		b.refs = append(b.refs, ref)
		if want := inference.ByteSize(t.DataType, t.Shape); want >= 0 && uint64(want) != p.byteSize {
			return nil, inference.InvalidArg("input byte size mismatch for input '%s' for model '%s'. Expected %d, got %d", t.Name, req.ModelName, want, p.byteSize)
		}
		// A copy, never the mapping itself: the client can shrink the
		// object behind it at any time, and a read past its new end
		// (by a backend's native code, or by the core's checks) would
		// kill the server with SIGBUS. The copy itself is fault-guarded.
		data, err := ref.Copy()
		if err != nil {
			if ref.IsCuda() {
				return nil, inference.Internal("unable to read input '%s' from its shared memory region: %v", t.Name, err)
			}
			return nil, inference.InvalidArg("unable to read input '%s' from its shared memory region: %v", t.Name, err)
		}
		t.Data = data
		b.inputs = append(b.inputs, i)
	}
	for i := range req.Outputs {
		o := &req.Outputs[i]
		p, ok, err := shmParams(o.Name, o.Parameters)
		if err != nil || !ok {
			if err != nil {
				return nil, err
			}
			continue
		}
		if s.shm == nil {
			return nil, errShmDisabled
		}
		if _, cls := o.Parameters[paramClassification]; cls {
			return nil, inference.InvalidArg("Output can't set both 'shared_memory_region' and 'classification'")
		}
		ref, err := s.shm.Acquire(p.region, p.offset, p.byteSize)
		if err != nil {
			return nil, err
		}
		if b == nil {
			b = &shmBinding{req: req}
		}
		b.refs = append(b.refs, ref)
		b.outputs = append(b.outputs, shmOutput{index: i, ref: ref})
	}
	return b, nil
}

type shmWindow struct {
	region           string
	offset, byteSize uint64
}

// shmParams reads a tensor's shared-memory parameters with the type rules
// and texts of Triton's gRPC front end (the HTTP front end has already
// checked that the values are unsigned integers). ok is false when the
// tensor names no region.
func shmParams(tensor string, params inference.Parameters) (w shmWindow, ok bool, err error) {
	if len(params) == 0 {
		return w, false, nil
	}
	rv, has := params[paramShmRegion]
	if has {
		if w.region, ok = rv.(string); !ok {
			return w, false, inference.InvalidArg("invalid value type for 'shared_memory_region' parameter for tensor '%s', expected string_param.", tensor)
		}
	}
	if v, set := params[paramShmOffset]; set {
		if !has {
			return w, false, inference.InvalidArg("'shared_memory_offset' can not be specified without 'shared_memory_region' parameter for tensor '%s'", tensor)
		}
		if w.offset, ok = unsignedParam(v); !ok {
			return w, false, inference.InvalidArg("invalid value type for 'shared_memory_offset' parameter for tensor '%s', expected int64_param.", tensor)
		}
	}
	v, set := params[paramShmByteSize]
	switch {
	case set && !has:
		return w, false, inference.InvalidArg("'shared_memory_byte_size' can not be specified without 'shared_memory_region' parameter for tensor '%s'", tensor)
	case set:
		if w.byteSize, ok = unsignedParam(v); !ok {
			return w, false, inference.InvalidArg("invalid value type for 'shared_memory_byte_size' parameter for tensor '%s', expected int64_param.", tensor)
		}
	case has:
		return w, false, inference.InvalidArg("'shared_memory_byte_size' must be specified along with 'shared_memory_region' parameter for tensor '%s'", tensor)
	}
	return w, has, nil
}

// unsignedParam reads an integer parameter as Triton's size_t: a negative
// int64 wraps around (and then fails the bounds checks).
func unsignedParam(v any) (uint64, bool) {
	switch x := v.(type) {
	case int64:
		return uint64(x), true
	case uint64:
		return x, true
	default:
		return 0, false
	}
}

// finish writes the outputs that go to shared memory into their windows,
// where the response then carries them without data, and copies any other
// output whose data still points into a region (a backend may return its
// inputs as outputs), since the regions may be unmapped once the request is
// released.
func (b *shmBinding) finish(resp *inference.Response) (*inference.Response, error) {
	if b == nil {
		return resp, nil
	}
	for _, o := range b.outputs {
		if o.index >= len(resp.Outputs) {
			return nil, inference.Internal("no response output for shared-memory output %d", o.index)
		}
		t := &resp.Outputs[o.index]
		if uint64(len(t.Data)) > o.ref.Size() {
			return nil, inference.Internal("shared memory size specified with the request for output '%s' (%d bytes) should be at least %d bytes to hold the results", t.Name, o.ref.Size(), len(t.Data))
		}
		if err := o.ref.Store(t.Data); err != nil {
			if o.ref.IsCuda() {
				return nil, inference.Internal("unable to write output '%s' to its shared memory region: %v", t.Name, err)
			}
			// The client shrank the object under the mapping.
			return nil, inference.InvalidArg("unable to write output '%s' to its shared memory region: %v", t.Name, err)
		}
		*t = inference.Tensor{Name: t.Name, DataType: t.DataType, Shape: t.Shape}
	}
	for i := range resp.Outputs {
		t := &resp.Outputs[i]
		if t.Data == nil {
			continue
		}
		for _, ref := range b.refs {
			if ref.Overlaps(t.Data) {
				data, err := sharedmem.CopyOf(t.Data)
				if err != nil {
					return nil, inference.InvalidArg("unable to read output '%s' from a shared memory region: %v", t.Name, err)
				}
				t.Data = data
				break
			}
		}
	}
	return resp, nil
}

// release ends the request's use of its regions. The inputs read from
// shared memory lose their Data, which may be unmapped from now on (a host
// copy from a CUDA region would stay valid, but is dropped the same way).
func (b *shmBinding) release() {
	if b == nil {
		return
	}
	for _, i := range b.inputs {
		b.req.Inputs[i].Data = nil
	}
	for _, ref := range b.refs {
		ref.Release()
	}
}
