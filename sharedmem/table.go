// Package sharedmem keeps the client shared-memory regions of Triton's
// system and CUDA shared-memory extensions: POSIX shared-memory objects, and
// GPU allocations exported with CUDA IPC handles, that a client created and
// registered by name, so that inference inputs are read from them and
// outputs written to them without crossing the network.
package sharedmem

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/sharedmem/cudadriver"
)

// ReservedKeyPrefix starts the keys of the Python backend's own regions,
// which clients may not register (Triton's kTritonSharedMemoryRegionPrefix).
const ReservedKeyPrefix = "triton_python_backend_shm_region_"

// DisabledMessage answers every use of client shared memory while
// --allow-client-shm is false, as Triton does since 26.04.
const DisabledMessage = "Client shared memory is disabled. Start the server with '--allow-client-shm=true' to enable."

// Options configures a Table.
type Options struct {
	// Dir is the folder in which shm_open keys name files; default
	// /dev/shm, where Linux keeps POSIX shared-memory objects.
	Dir string
	// Cuda opens CUDA IPC handles; default the driver that package
	// cudadriver loads at run time.
	Cuda CudaDriver
	// MaxRegions caps the regions registered at once, of both kinds (each
	// holds a file descriptor or a device mapping); 0: no cap.
	MaxRegions int
}

// CudaDriver opens the CUDA IPC memory handles of CUDA regions.
//
// Devices reports how many devices can be used, or an error when CUDA
// cannot be used at all (registration then answers InvalidArg). Open maps
// a 64-byte cudaIpcMemHandle_t on a device; its errors matching
// cudadriver.ErrUnavailable mean CUDA cannot be used, those matching
// cudadriver.ErrInvalidArg blame the arguments, any other is the driver
// refusing the handle.
type CudaDriver interface {
	Devices() (int, error)
	Open(handle []byte, device int) (CudaMapping, error)
}

// CudaMapping is GPU memory of another process opened from its IPC handle.
// ReadAt (device to host) and WriteAt (host to device) may run
// concurrently; the table calls Close once, after the last of them has
// returned. Size is how many bytes can be reached from the start.
type CudaMapping interface {
	Size() uint64
	ReadAt(dst []byte, off int64) error
	WriteAt(src []byte, off int64) error
	Close() error
}

// driverCuda is the CudaDriver of package cudadriver.
type driverCuda struct{}

func (driverCuda) Devices() (int, error) { return cudadriver.Devices() }

func (driverCuda) Open(handle []byte, device int) (CudaMapping, error) {
	m, err := cudadriver.Open(handle, device)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Status describes one registered region, as the status endpoint reports it.
type Status struct {
	Name     string
	Key      string
	Offset   uint64
	ByteSize uint64
}

// CudaStatus describes one registered CUDA shared-memory region, as the
// CUDA status endpoint reports it.
type CudaStatus struct {
	Name     string
	DeviceID int64
	ByteSize uint64
}

// region is one registered region, system or CUDA. Its mapping stays
// valid while refs > 0 or while it is registered.
type region struct {
	Status // Name and ByteSize for both kinds; Key and Offset for system

	// A system region.
	fd      int    // the shared-memory object, kept to notice truncation
	mapping []byte // the whole mmap, from the page holding Offset
	data    []byte // the registered bytes: ByteSize bytes at Offset

	// A CUDA region: cuda is non-nil.
	deviceID int64
	cuda     CudaMapping

	// Guarded by Table.mu.
	refs          int  // Refs not yet released
	unregistering bool // unregistered while in use: goes away at refs == 0
}

// Table is the set of registered regions of both kinds, which share one
// name space, as in Triton. It is safe for concurrent use.
//
// Lifetime: Unregister removes a region at once when no request uses it.
// A region still in use stays listed and usable, as in Triton, until its
// last Ref is released; then it is unmapped (a CUDA region's IPC handle
// closed). Close unregisters every region the same way and refuses new
// registrations.
type Table struct {
	dir        string
	cuda       CudaDriver
	maxRegions int

	mu      sync.Mutex // guards the fields below and every region's refs and unregistering
	regions map[string]*region
	closed  bool
}

// New returns an empty table.
func New(opts Options) *Table {
	if opts.Dir == "" {
		opts.Dir = "/dev/shm"
	}
	if opts.Cuda == nil {
		opts.Cuda = driverCuda{}
	}
	return &Table{dir: opts.Dir, cuda: opts.Cuda, maxRegions: opts.MaxRegions, regions: map[string]*region{}}
}

// Register opens the shared-memory object key, checks that offset and
// byteSize lie inside it and maps those bytes under name. Errors carry
// Triton's status and text: a reserved key or a region outside the object
// is InvalidArg, a name already registered AlreadyExists, a key that cannot
// be opened Internal.
func (t *Table) Register(name, key string, offset, byteSize uint64) error {
	if strings.HasPrefix(strings.TrimLeft(key, "/"), ReservedKeyPrefix) {
		return inference.InvalidArg("cannot register shared memory region '%s' with key '%s' as the key contains the reserved prefix '%s'", name, key, ReservedKeyPrefix)
	}
	if err := t.checkFree(name); err != nil {
		return err
	}
	r, err := t.open(name, key, offset, byteSize)
	if err != nil {
		return err
	}
	return t.insert(r)
}

// insert adds a region that was opened outside the lock, unless the name
// was taken (or the table closed) meanwhile.
func (t *Table) insert(r *region) error {
	t.mu.Lock()
	err := t.checkFreeLocked(r.Name)
	if err == nil {
		t.regions[r.Name] = r
	}
	t.mu.Unlock()
	if err != nil {
		// Another registration of the same name won the race.
		_ = r.unmap()
	}
	return err
}

// RegisterCuda opens a client's CUDA IPC memory handle (the raw 64 bytes
// of a cudaIpcMemHandle_t) on device deviceID and registers byteSize bytes
// from its start under name. Errors carry Triton's status: no usable CUDA
// driver or device is InvalidArg (Triton's "GPUs not supported"), a name already registered (as either
// kind) AlreadyExists, a bad handle, device or size InvalidArg.
func (t *Table) RegisterCuda(name string, handle []byte, deviceID int64, byteSize uint64) error {
	if err := t.checkFree(name); err != nil {
		return err
	}
	devices, err := t.cuda.Devices()
	if err != nil {
		return errNoCuda(name, err)
	}
	fail := func(format string, args ...any) error {
		return inference.InvalidArg("failed to register CUDA shared memory region '%s': %s", name, fmt.Sprintf(format, args...))
	}
	switch {
	case len(handle) != cudadriver.HandleSize:
		return fail("raw_handle has %d bytes; a CUDA IPC memory handle (cudaIpcMemHandle_t) has %d", len(handle), cudadriver.HandleSize)
	case deviceID < 0 || deviceID >= int64(devices):
		return fail("invalid device id %d: the server sees %d CUDA device(s)", deviceID, devices)
	case byteSize == 0:
		return fail("invalid args: byte_size is 0")
	}
	m, err := t.cuda.Open(handle, int(deviceID))
	switch {
	case errors.Is(err, cudadriver.ErrUnavailable):
		return errNoCuda(name, err)
	case errors.Is(err, cudadriver.ErrInvalidArg):
		return fail("%v", err)
	case err != nil:
		return fail("failed to open CUDA IPC handle: %v", err)
	}
	if size := m.Size(); byteSize > size {
		_ = m.Close()
		return fail("invalid args: byte_size %d exceeds the %d bytes of the CUDA allocation", byteSize, size)
	}
	return t.insert(&region{Status: Status{Name: name, ByteSize: byteSize}, deviceID: deviceID, cuda: m})
}

// errNoCuda is the answer to a CUDA registration where no CUDA driver or
// device can be used: Triton's status and text for a server without GPU
// support, and the reason.
func errNoCuda(name string, why error) error {
	return inference.InvalidArg("failed to register CUDA shared memory region: '%s', GPUs not supported: %v", name, why)
}

func (t *Table) checkFree(name string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.checkFreeLocked(name)
}

func (t *Table) checkFreeLocked(name string) error {
	if t.closed {
		return inference.Unavailable("cannot register shared memory region '%s': the server is shutting down", name)
	}
	if _, ok := t.regions[name]; ok {
		return inference.Errorf(inference.CodeAlreadyExists, "shared memory region '%s' already in manager", name)
	}
	if t.maxRegions > 0 && len(t.regions) >= t.maxRegions {
		return inference.Unavailable("cannot register shared memory region '%s': the server holds its maximum of %d regions (--shared-memory-max-regions); unregister one first", name, t.maxRegions)
	}
	return nil
}

// open maps a region. The mapping starts at the page that holds offset, so
// offsets need not be page-aligned.
func (t *Table) open(name, key string, offset, byteSize uint64) (*region, error) {
	errOpen := inference.Internal("Unable to open shared memory region: '%s'", key)
	path, ok := t.path(key)
	if !ok {
		return nil, errOpen
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, errOpen
	}
	keep := false
	defer func() {
		if !keep {
			_ = unix.Close(fd)
		}
	}()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, inference.Internal("Invalid shared memory region: '%s'", key)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, errOpen
	}
	fail := func(format string, args ...any) error {
		return inference.InvalidArg("failed to register shared memory region '%s': invalid args: "+format, append([]any{name}, args...)...)
	}
	end, carry := bits.Add64(offset, byteSize, 0)
	switch {
	case byteSize == 0:
		return nil, fail("byte_size is 0")
	case carry != 0 || st.Size < 0 || end > uint64(st.Size):
		return nil, fail("offset %d + byte_size %d is past the end of shared memory object '%s', which has %d bytes", offset, byteSize, key, st.Size)
	}
	page := uint64(os.Getpagesize())
	lead := offset % page
	length := lead + byteSize
	if offset-lead > math.MaxInt64 || length > math.MaxInt {
		return nil, fail("offset %d + byte_size %d cannot be mapped on this machine", offset, byteSize)
	}
	mapping, err := unix.Mmap(fd, int64(offset-lead), int(length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, inference.InvalidArg("failed to register shared memory region '%s': unable to map it: %v", name, err)
	}
	keep = true
	return &region{
		Status:  Status{Name: name, Key: key, Offset: offset, ByteSize: byteSize},
		fd:      fd,
		mapping: mapping,
		data:    mapping[lead:length:length],
	}, nil
}

// path is the file behind an shm_open key: like glibc, leading slashes are
// dropped and the rest must be one file name.
func (t *Table) path(key string) (string, bool) {
	name := strings.TrimLeft(key, "/")
	if name == "" || name == "." || name == ".." || len(name) > 255 || strings.ContainsAny(name, "/\x00") {
		return "", false
	}
	return filepath.Join(t.dir, name), true
}

func (r *region) isCuda() bool { return r.cuda != nil }

// unmap unmaps a system region, or closes a CUDA region's IPC handle.
func (r *region) unmap() error {
	if r.isCuda() {
		return r.cuda.Close()
	}
	return errors.Join(unix.Munmap(r.mapping), unix.Close(r.fd))
}

// Status lists one system region (name non-empty) or every system region,
// by name. An unknown name, or that of a CUDA region, is NotFound.
func (t *Table) Status(name string) ([]Status, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if name != "" {
		r, ok := t.regions[name]
		if !ok {
			return nil, inference.NotFound("Unable to find system shared memory region: '%s'", name)
		}
		if r.isCuda() {
			return nil, inference.NotFound("The region named '%s' is registered as CUDA shared memory, not system shared memory", name)
		}
		return []Status{r.Status}, nil
	}
	out := make([]Status, 0, len(t.regions))
	for _, r := range t.regions {
		if !r.isCuda() {
			out = append(out, r.Status)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// CudaStatus lists one CUDA region (name non-empty) or every CUDA region,
// by name. An unknown name, or that of a system region, is NotFound.
func (t *Table) CudaStatus(name string) ([]CudaStatus, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if name != "" {
		r, ok := t.regions[name]
		if !ok {
			return nil, inference.NotFound("Unable to find cuda shared memory region: '%s'", name)
		}
		if !r.isCuda() {
			return nil, inference.NotFound("The region named '%s' is registered as system shared memory, not CUDA shared memory", name)
		}
		return []CudaStatus{r.cudaStatus()}, nil
	}
	var out []CudaStatus
	for _, r := range t.regions {
		if r.isCuda() {
			out = append(out, r.cudaStatus())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (r *region) cudaStatus() CudaStatus {
	return CudaStatus{Name: r.Name, DeviceID: r.deviceID, ByteSize: r.ByteSize}
}

// Has reports whether name is registered, as either kind.
func (t *Table) Has(name string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.regions[name]
	return ok
}

// kind selects the regions an unregister call applies to.
type kind int

const (
	systemRegions kind = iota
	cudaRegions
	allRegions
)

func (k kind) has(r *region) bool {
	switch k {
	case systemRegions:
		return !r.isCuda()
	case cudaRegions:
		return r.isCuda()
	default:
		return true
	}
}

// Unregister removes one system region; unknown names, and those of CUDA
// regions, are not an error and change nothing, as in Triton. A region in
// use is removed when its last Ref is released.
func (t *Table) Unregister(name string) error {
	return t.unregister(systemRegions, name)
}

// UnregisterCuda removes one CUDA region and closes its IPC handle, as
// Unregister does for system regions.
func (t *Table) UnregisterCuda(name string) error {
	return t.unregister(cudaRegions, name)
}

func (t *Table) unregister(k kind, name string) error {
	t.mu.Lock()
	r := t.regions[name]
	gone := r != nil && k.has(r) && t.dropLocked(r)
	t.mu.Unlock()
	if gone {
		return r.unmapErr()
	}
	return nil
}

// UnregisterAll removes every system region, each as Unregister does.
func (t *Table) UnregisterAll() error {
	return t.unregisterAll(systemRegions, false)
}

// UnregisterAllCuda removes every CUDA region, each as UnregisterCuda does.
func (t *Table) UnregisterAllCuda() error {
	return t.unregisterAll(cudaRegions, false)
}

// Close unregisters every region of both kinds and refuses further
// registrations. Regions still in use by in-flight requests are unmapped
// when those finish.
func (t *Table) Close() error {
	return t.unregisterAll(allRegions, true)
}

func (t *Table) unregisterAll(k kind, closing bool) error {
	t.mu.Lock()
	if closing {
		t.closed = true
	}
	var gone []*region
	for _, r := range t.regions {
		if k.has(r) && t.dropLocked(r) {
			gone = append(gone, r)
		}
	}
	t.mu.Unlock()
	var errs []error
	for _, r := range gone {
		errs = append(errs, r.unmapErr())
	}
	return errors.Join(errs...)
}

// dropLocked removes r from the table if no request uses it and reports
// whether the caller must unmap it; otherwise it marks r to go when its
// last user releases it.
func (t *Table) dropLocked(r *region) bool {
	if r.refs > 0 {
		r.unregistering = true
		return false
	}
	delete(t.regions, r.Name)
	return true
}

func (r *region) unmapErr() error {
	if err := r.unmap(); err != nil {
		if r.isCuda() {
			return inference.Internal("failed to close the CUDA IPC handle of shared memory region '%s': %v", r.Name, err)
		}
		return inference.Internal("unable to unmap shared memory region '%s': %v", r.Name, err)
	}
	return nil
}

// Ref is one use of a window of a region by a request; the region stays
// mapped until Release. A Ref is owned by one goroutine.
type Ref struct {
	t *Table
	r *region
	// Data is the window of a system region's mapping, valid until
	// Release; nil for a CUDA region, whose bytes are in GPU memory: use
	// Bytes and Store.
	Data     []byte
	offset   uint64 // of the window in the region
	size     uint64 // of the window
	released atomic.Bool
}

// Acquire returns the byteSize bytes at offset (relative to the registered
// region) of the region called name, of either kind, and keeps the region
// mapped until the Ref is released. Errors carry Triton's status and text.
func (t *Table) Acquire(name string, offset, byteSize uint64) (*Ref, error) {
	t.mu.Lock()
	r, ok := t.regions[name]
	if !ok {
		t.mu.Unlock()
		return nil, inference.NotFound("Unable to find shared memory region: '%s'", name)
	}
	if err := checkWindow(name, r.ByteSize, offset, byteSize); err != nil {
		t.mu.Unlock()
		return nil, err
	}
	r.refs++
	t.mu.Unlock()
	ref := &Ref{t: t, r: r, offset: offset, size: byteSize}
	if r.isCuda() {
		return ref, nil
	}
	// A client that shrinks the object under a registered region would make
	// any access fault; refuse the request instead.
	var st unix.Stat_t
	if err := unix.Fstat(r.fd, &st); err != nil || st.Size < 0 || uint64(st.Size) < r.Offset+r.ByteSize {
		ref.Release()
		return nil, inference.InvalidArg("shared memory region '%s' no longer covers %d bytes at offset %d of '%s': the object was resized", name, r.ByteSize, r.Offset, r.Key)
	}
	end := offset + byteSize
	ref.Data = r.data[offset:end:end]
	return ref, nil
}

// checkWindow applies Triton's bounds checks to a window of a region of
// size bytes.
func checkWindow(name string, size, offset, byteSize uint64) error {
	if offset >= size {
		return inference.InvalidArg("Invalid offset for shared memory region: '%s'", name)
	}
	end, carry := bits.Add64(offset, byteSize, 0)
	if carry != 0 {
		return inference.InvalidArg("Integer overflow detected: byte_size (%d) + offset (%d) exceeds maximum value (%d) for region '%s'", byteSize, offset, uint64(math.MaxUint64), name)
	}
	if end > size {
		return inference.InvalidArg("Invalid offset + byte size for shared memory region: '%s'", name)
	}
	return nil
}

// Release ends this use of the region; the last release of an unregistered
// region unmaps it. Further calls do nothing.
func (ref *Ref) Release() {
	if ref == nil || ref.released.Swap(true) {
		return
	}
	ref.Data = nil
	t, r := ref.t, ref.r
	t.mu.Lock()
	r.refs--
	gone := r.refs == 0 && r.unregistering
	if gone && t.regions[r.Name] == r {
		delete(t.regions, r.Name)
	}
	t.mu.Unlock()
	if gone {
		_ = r.unmap()
	}
}

// Size is the window's size in bytes.
func (ref *Ref) Size() uint64 { return ref.size }

// IsCuda reports whether the window is in a CUDA region.
func (ref *Ref) IsCuda() bool { return ref.r != nil && ref.r.isCuda() }

// Bytes returns the window's bytes: for a system region Data itself,
// without a copy; for a CUDA region a new host buffer that the window's
// GPU memory is copied into now, which the caller owns.
func (ref *Ref) Bytes() ([]byte, error) {
	if !ref.IsCuda() {
		return ref.Data, nil
	}
	buf := make([]byte, ref.size)
	if err := ref.r.cuda.ReadAt(buf, int64(ref.offset)); err != nil {
		return nil, fmt.Errorf("copying %d bytes at offset %d of CUDA shared memory region '%s' to the host: %w", ref.size, ref.offset, ref.r.Name, err)
	}
	return buf, nil
}

// Copy returns a copy of the window's bytes in server memory: for a system
// region copied out of the mapping now, for a CUDA region copied from the
// device. Native code must never read a system region's mapping itself: a
// client can shrink the object behind it at any moment, and a read past its
// new end raises SIGBUS, which kills the process inside C code. A client that
// shrinks the object during this copy makes it fault, which fails the copy
// instead of the server.
func (ref *Ref) Copy() (_ []byte, err error) {
	if ref.IsCuda() {
		return ref.Bytes()
	}
	buf := make([]byte, len(ref.Data))
	if err := guardFault(func() { copy(buf, ref.Data) }); err != nil {
		return nil, fmt.Errorf("reading %d bytes of shared memory region '%s': %w", len(buf), ref.r.Name, err)
	}
	return buf, nil
}

// CopyOf returns a copy of b, which may lie in a region's mapping, made
// under the same fault guard as Copy.
func CopyOf(b []byte) ([]byte, error) {
	buf := make([]byte, len(b))
	if err := guardFault(func() { copy(buf, b) }); err != nil {
		return nil, err
	}
	return buf, nil
}

// guardFault runs f, which touches mapped shared memory, turning a memory
// fault (the object was truncated under the mapping) into an error.
func guardFault(f func()) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the shared memory object changed size while in use: %v", r)
		}
	}()
	f()
	return nil
}

// Store copies src, which must fit, to the start of the window: into the
// mapping of a system region, or from the host to the GPU memory of a CUDA
// region. A client that shrinks a system region's object during the copy
// makes it fault; that fails the copy instead of the server.
func (ref *Ref) Store(src []byte) (err error) {
	if uint64(len(src)) > ref.size {
		return fmt.Errorf("%d bytes do not fit the %d-byte window", len(src), ref.size)
	}
	if ref.IsCuda() {
		if err := ref.r.cuda.WriteAt(src, int64(ref.offset)); err != nil {
			return fmt.Errorf("copying %d bytes to offset %d of CUDA shared memory region '%s': %w", len(src), ref.offset, ref.r.Name, err)
		}
		return nil
	}
	return guardFault(func() { copy(ref.Data, src) })
}

// Overlaps reports whether b shares memory with the region this Ref maps,
// so that a caller can copy b before releasing the Ref. Nothing overlaps a
// CUDA region: its bytes reach the host only as copies.
func (ref *Ref) Overlaps(b []byte) bool {
	if len(b) == 0 || ref.r == nil || ref.r.isCuda() {
		return false
	}
	m := ref.r.mapping
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(m)))
	hi := lo + uintptr(len(m))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return p < hi && p+uintptr(len(b)) > lo
}
