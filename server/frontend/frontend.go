// Package frontend declares what Nereid's protocol front ends (the HTTP and
// gRPC ones) need from the rest of the server besides inference, the same
// for both: the log controls, the tracer and client shared memory. Each
// front end declares its own Core, whose contract for the bytes of
// requests and responses depends on its transport.
package frontend

import (
	"context"

	"github.com/nereid-project/nereid/logging"
	"github.com/nereid-project/nereid/sharedmem"
	"github.com/nereid-project/nereid/trace"
)

// LogSettings is the logging extension's view of the log controls;
// *logging.Control implements it.
type LogSettings interface {
	Settings() logging.Settings
	Apply(logging.Update) logging.Settings
}

// Tracer samples requests and holds the trace settings; *trace.Tracer
// implements it.
type Tracer interface {
	Sample(model string) *trace.Trace
	Settings(model string) trace.Settings
	Update(model string, u trace.Update) (trace.Settings, error)
}

// SharedMemoryCore is what the system and CUDA shared-memory endpoints
// need from the core. A name "" means every region. While client shared
// memory is disabled every method returns an Unsupported error (HTTP 501,
// gRPC UNIMPLEMENTED).
type SharedMemoryCore interface {
	RegisterSystemSharedMemory(ctx context.Context, name, key string, offset, byteSize uint64) error
	SystemSharedMemoryStatus(ctx context.Context, name string) ([]sharedmem.Status, error)
	UnregisterSystemSharedMemory(ctx context.Context, name string) error
	RegisterCudaSharedMemory(ctx context.Context, name string, rawHandle []byte, deviceID int64, byteSize uint64) error
	CudaSharedMemoryStatus(ctx context.Context, name string) ([]sharedmem.CudaStatus, error)
	UnregisterCudaSharedMemory(ctx context.Context, name string) error
}
