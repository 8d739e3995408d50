// Package cudadriver loads the CUDA driver at run time, without linking
// against it, so that one binary serves on machines with and without GPUs.
// It is the single place where Nereid calls the driver library: it counts
// the devices and opens the CUDA IPC memory handles of Triton's CUDA
// shared-memory extension. Without cgo it reports the driver as absent.
//
// The library is libcuda.so.1, or the file that the environment variable
// NEREID_CUDA_DRIVER names (tests point it at a stand-in driver; see
// cudadrivertest). It is loaded once per process, on first use, and stays
// loaded: the driver does not expect to be unloaded after cuInit.
package cudadriver

import (
	"errors"
	"fmt"
	"os"
	"sync"
)

// HandleSize is the size of a cudaIpcMemHandle_t (CU_IPC_HANDLE_SIZE).
const HandleSize = 64

// LibraryEnv names the environment variable that overrides the driver
// library's path.
const LibraryEnv = "NEREID_CUDA_DRIVER"

const defaultLibrary = "libcuda.so.1"

// ErrUnavailable is matched (errors.Is) by every error saying that no CUDA
// driver or device can be used: none installed, none found, no cgo.
var ErrUnavailable = errors.New("CUDA is unavailable")

// ErrInvalidArg is matched by the errors of Open that the caller's
// arguments cause before the driver is asked: a handle of the wrong size,
// a device the driver does not see.
var ErrInvalidArg = errors.New("invalid argument")

// Error is a driver call that failed: the entry point and its CUresult.
type Error struct {
	Call string // the exported symbol, e.g. "cuIpcOpenMemHandle_v2"
	Code int    // the CUresult
	Name string // the CUresult's name (cuGetErrorName), when known
}

func (e *Error) Error() string {
	if e.Name == "" {
		return fmt.Sprintf("%s failed: CUresult %d", e.Call, e.Code)
	}
	return fmt.Sprintf("%s failed: %s (%d)", e.Call, e.Name, e.Code)
}

// classError is an error with a message of its own that matches a class
// (ErrUnavailable or ErrInvalidArg) under errors.Is.
type classError struct {
	class error
	msg   string
}

func (e *classError) Error() string        { return e.msg }
func (e *classError) Is(target error) bool { return target == e.class }

func unavailable(format string, args ...any) error {
	return &classError{class: ErrUnavailable, msg: fmt.Sprintf(format, args...)}
}

func invalidArg(format string, args ...any) error {
	return &classError{class: ErrInvalidArg, msg: fmt.Sprintf(format, args...)}
}

var (
	loadOnce sync.Once
	loaded   struct {
		path    string
		drv     *driver
		devices int
		err     error
	}
)

// load loads the driver library once per process and reports it, the
// number of devices it sees, or why it cannot be used.
func load() (*driver, int, error) {
	loadOnce.Do(func() {
		path := os.Getenv(LibraryEnv)
		if path == "" {
			path = defaultLibrary
		}
		loaded.path = path
		loaded.drv, loaded.devices, loaded.err = openDriver(path)
	})
	return loaded.drv, loaded.devices, loaded.err
}

// Devices returns how many CUDA devices the driver sees, or an error
// matching ErrUnavailable that says why no driver could be used (not
// installed, no device, built without cgo). The driver is loaded once;
// later calls return the same answer.
func Devices() (int, error) {
	_, n, err := load()
	return n, err
}

// Library returns the file the driver is loaded from, loading it if that
// has not happened yet: NEREID_CUDA_DRIVER as it was at the first use of
// this package, or libcuda.so.1.
func Library() string {
	_, _, _ = load()
	return loaded.path
}

// Mapping is device memory of another process, opened from its CUDA IPC
// handle in the primary context of one device. Its methods are safe for
// concurrent use; copies in flight finish before Close unmaps.
type Mapping struct {
	device int
	size   uint64

	mu     sync.RWMutex // copies hold it shared, Close exclusively; guards closed
	closed bool
	m      mapping // the driver's handles; see driver_cgo.go
}

// Open maps the device memory behind a 64-byte cudaIpcMemHandle_t on the
// device with the given ordinal, retaining that device's primary context
// until Close. Errors match ErrUnavailable (no driver or device),
// ErrInvalidArg (a handle that is not HandleSize bytes, a device the
// driver does not see) or are an *Error (the driver refused the handle).
func Open(handle []byte, device int) (*Mapping, error) {
	d, n, err := load()
	if err != nil {
		return nil, err
	}
	if len(handle) != HandleSize {
		return nil, invalidArg("a CUDA IPC memory handle has %d bytes, not %d", HandleSize, len(handle))
	}
	if device < 0 || device >= n {
		return nil, invalidArg("invalid CUDA device id %d: the driver sees %d device(s)", device, n)
	}
	m, size, err := d.open(handle, device)
	if err != nil {
		return nil, err
	}
	return &Mapping{device: device, size: size, m: m}, nil
}

// Device is the ordinal of the device whose context the mapping is in.
func (m *Mapping) Device() int { return m.device }

// Size is how many bytes can be reached from the start of the mapping: the
// rest of the allocation the handle was made from.
func (m *Mapping) Size() uint64 { return m.size }

var errClosed = errors.New("the CUDA IPC mapping is closed")

// ReadAt copies len(dst) bytes at offset off of the mapping to dst (device
// to host).
func (m *Mapping) ReadAt(dst []byte, off int64) error {
	if err := m.check(len(dst), off); err != nil || len(dst) == 0 {
		return err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return errClosed
	}
	return m.m.copy(dst, uint64(off), false)
}

// WriteAt copies src to offset off of the mapping (host to device).
func (m *Mapping) WriteAt(src []byte, off int64) error {
	if err := m.check(len(src), off); err != nil || len(src) == 0 {
		return err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return errClosed
	}
	return m.m.copy(src, uint64(off), true)
}

func (m *Mapping) check(n int, off int64) error {
	if off < 0 || uint64(off) > m.size || uint64(n) > m.size-uint64(off) {
		return invalidArg("%d bytes at offset %d lie outside the %d bytes of the CUDA IPC mapping", n, off, m.size)
	}
	return nil
}

// Close unmaps the memory (cuIpcCloseMemHandle) and releases the device's
// primary context. Later calls do nothing.
func (m *Mapping) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	return m.m.close()
}
