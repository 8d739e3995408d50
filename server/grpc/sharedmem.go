package grpcfront

import (
	"context"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

func (s *service) SystemSharedMemoryStatus(ctx context.Context, in *inferencepb.SystemSharedMemoryStatusRequest) (*inferencepb.SystemSharedMemoryStatusResponse, error) {
	st, err := s.core.SystemSharedMemoryStatus(ctx, in.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &inferencepb.SystemSharedMemoryStatusResponse{
		Regions: make(map[string]*inferencepb.SystemSharedMemoryStatusResponse_RegionStatus, len(st)),
	}
	for _, r := range st {
		out.Regions[r.Name] = &inferencepb.SystemSharedMemoryStatusResponse_RegionStatus{
			Name: r.Name, Key: r.Key, Offset: r.Offset, ByteSize: r.ByteSize,
		}
	}
	return out, nil
}

func (s *service) SystemSharedMemoryRegister(ctx context.Context, in *inferencepb.SystemSharedMemoryRegisterRequest) (*inferencepb.SystemSharedMemoryRegisterResponse, error) {
	if err := s.core.RegisterSystemSharedMemory(ctx, in.GetName(), in.GetKey(), in.GetOffset(), in.GetByteSize()); err != nil {
		return nil, toStatus(err)
	}
	return &inferencepb.SystemSharedMemoryRegisterResponse{}, nil
}

func (s *service) SystemSharedMemoryUnregister(ctx context.Context, in *inferencepb.SystemSharedMemoryUnregisterRequest) (*inferencepb.SystemSharedMemoryUnregisterResponse, error) {
	if err := s.core.UnregisterSystemSharedMemory(ctx, in.GetName()); err != nil {
		return nil, toStatus(err)
	}
	return &inferencepb.SystemSharedMemoryUnregisterResponse{}, nil
}

func (s *service) CudaSharedMemoryStatus(ctx context.Context, in *inferencepb.CudaSharedMemoryStatusRequest) (*inferencepb.CudaSharedMemoryStatusResponse, error) {
	st, err := s.core.CudaSharedMemoryStatus(ctx, in.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &inferencepb.CudaSharedMemoryStatusResponse{
		Regions: make(map[string]*inferencepb.CudaSharedMemoryStatusResponse_RegionStatus, len(st)),
	}
	for _, r := range st {
		if r.DeviceID < 0 {
			return nil, toStatus(inference.Internal("CUDA shared memory region '%s' has device id %d", r.Name, r.DeviceID))
		}
		out.Regions[r.Name] = &inferencepb.CudaSharedMemoryStatusResponse_RegionStatus{
			Name: r.Name, DeviceId: uint64(r.DeviceID), ByteSize: r.ByteSize,
		}
	}
	return out, nil
}

func (s *service) CudaSharedMemoryRegister(ctx context.Context, in *inferencepb.CudaSharedMemoryRegisterRequest) (*inferencepb.CudaSharedMemoryRegisterResponse, error) {
	if err := s.core.RegisterCudaSharedMemory(ctx, in.GetName(), in.GetRawHandle(), in.GetDeviceId(), in.GetByteSize()); err != nil {
		return nil, toStatus(err)
	}
	return &inferencepb.CudaSharedMemoryRegisterResponse{}, nil
}

func (s *service) CudaSharedMemoryUnregister(ctx context.Context, in *inferencepb.CudaSharedMemoryUnregisterRequest) (*inferencepb.CudaSharedMemoryUnregisterResponse, error) {
	if err := s.core.UnregisterCudaSharedMemory(ctx, in.GetName()); err != nil {
		return nil, toStatus(err)
	}
	return &inferencepb.CudaSharedMemoryUnregisterResponse{}, nil
}
