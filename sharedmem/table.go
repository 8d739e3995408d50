// Package sharedmem keeps the client shared-memory regions of Triton's
// system shared-memory extension: POSIX shared-memory objects that a client
// created and registered by name, mapped into the server so that inference
// inputs are read from them and outputs written to them without crossing the
// network.
package sharedmem

import (
	"errors"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nereid-project/nereid/inference"
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

// region is one registered region. Its mapping stays valid while refs > 0
// or while it is registered.
type region struct {
	Status
	fd      int    // the shared-memory object, kept to notice truncation
	mapping []byte // the whole mmap, from the page holding Offset
	data    []byte // the registered bytes: ByteSize bytes at Offset

	// Guarded by Table.mu.
	refs          int  // Refs not yet released
	unregistering bool // unregistered while in use: goes away at refs == 0
}

// Table is the set of registered regions. It is safe for concurrent use.
//
// Lifetime: Unregister removes a region at once when no request uses it.
// A region still in use stays listed and usable, as in Triton, until its
// last Ref is released; then it is unmapped. Close unregisters every region
// the same way and refuses new registrations.
type Table struct {
	dir string

	mu      sync.Mutex // guards the fields below and every region's refs and unregistering
	regions map[string]*region
	closed  bool
}

// New returns an empty table.
func New(opts Options) *Table {
	if opts.Dir == "" {
		opts.Dir = "/dev/shm"
	}
	return &Table{dir: opts.Dir, regions: map[string]*region{}}
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
	t.mu.Lock()
	err = t.checkFreeLocked(name)
	if err == nil {
		t.regions[name] = r
	}
	t.mu.Unlock()
	if err != nil {
		// Another registration of the same name won the race.
		_ = r.unmap()
	}
	return err
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
	errArgs := inference.InvalidArg("failed to register shared memory region '%s': invalid args", name)
	end, carry := bits.Add64(offset, byteSize, 0)
	if carry != 0 || byteSize == 0 || st.Size < 0 || end > uint64(st.Size) {
		return nil, errArgs
	}
	page := uint64(os.Getpagesize())
	lead := offset % page
	length := lead + byteSize
	if offset-lead > math.MaxInt64 || length > math.MaxInt {
		return nil, errArgs
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

func (r *region) unmap() error {
	return errors.Join(unix.Munmap(r.mapping), unix.Close(r.fd))
}

// Status lists one region (name non-empty) or every region, by name. An
// unknown name is NotFound.
func (t *Table) Status(name string) ([]Status, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if name != "" {
		r, ok := t.regions[name]
		if !ok {
			return nil, inference.NotFound("Unable to find system shared memory region: '%s'", name)
		}
		return []Status{r.Status}, nil
	}
	out := make([]Status, 0, len(t.regions))
	for _, r := range t.regions {
		out = append(out, r.Status)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Has reports whether name is registered.
func (t *Table) Has(name string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.regions[name]
	return ok
}

// Unregister removes one region; unknown names are not an error, as in
// Triton. A region in use is removed when its last Ref is released.
func (t *Table) Unregister(name string) error {
	t.mu.Lock()
	r := t.regions[name]
	gone := r != nil && t.dropLocked(r)
	t.mu.Unlock()
	if gone {
		return r.unmapErr()
	}
	return nil
}

// UnregisterAll removes every region, each as Unregister does.
func (t *Table) UnregisterAll() error {
	return t.unregisterAll(false)
}

// Close unregisters every region and refuses further registrations. Regions
// still in use by in-flight requests are unmapped when those finish.
func (t *Table) Close() error {
	return t.unregisterAll(true)
}

func (t *Table) unregisterAll(closing bool) error {
	t.mu.Lock()
	if closing {
		t.closed = true
	}
	var gone []*region
	for _, r := range t.regions {
		if t.dropLocked(r) {
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
		return inference.Internal("unable to unmap shared memory region '%s': %v", r.Name, err)
	}
	return nil
}

// Ref is one use of a region by a request: Data is the requested window of
// the mapping, valid until Release. A Ref is owned by one goroutine.
type Ref struct {
	t        *Table
	r        *region
	Data     []byte
	released atomic.Bool
}

// Acquire returns the byteSize bytes at offset (relative to the registered
// region) of the region called name, and keeps the region mapped until the
// Ref is released. Errors carry Triton's status and text.
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
	ref := &Ref{t: t, r: r}
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

// Overlaps reports whether b shares memory with the region this Ref maps,
// so that a caller can copy b before releasing the Ref.
func (ref *Ref) Overlaps(b []byte) bool {
	if len(b) == 0 || ref.r == nil {
		return false
	}
	m := ref.r.mapping
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(m)))
	hi := lo + uintptr(len(m))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return p < hi && p+uintptr(len(b)) > lo
}
