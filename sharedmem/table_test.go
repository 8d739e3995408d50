package sharedmem

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/sharedmem/cudadriver"
	"github.com/nereid-project/nereid/sharedmem/cudadriver/cudadrivertest"
)

// newObject creates a shared-memory object of size bytes in dir, filled with
// the bytes 0, 1, 2, ... (mod 251), and returns its key.
func newObject(t *testing.T, dir, name string, size int) string {
	t.Helper()
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte(i % 251)
	}
	if err := os.WriteFile(filepath.Join(dir, name), buf, 0o600); err != nil {
		t.Fatal(err)
	}
	return "/" + name
}

func wantCode(t *testing.T, err error, code inference.Code, text string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %v %q", code, text)
	}
	if got := inference.CodeOf(err); got != code {
		t.Fatalf("error %q has code %v; want %v", err, got, code)
	}
	if !strings.Contains(err.Error(), text) {
		t.Fatalf("error %q does not contain %q", err, text)
	}
}

func TestRegisterStatusUnregister(t *testing.T) {
	dir := t.TempDir()
	tab := New(Options{Dir: dir})
	defer tab.Close()
	key := newObject(t, dir, "obj", 10000)

	if err := tab.Register("b", key, 0, 64); err != nil {
		t.Fatal(err)
	}
	// A second region in the same object, at an offset that is not page
	// aligned.
	if err := tab.Register("a", key, 4097, 100); err != nil {
		t.Fatal(err)
	}
	st, err := tab.Status("")
	if err != nil {
		t.Fatal(err)
	}
	want := []Status{{"a", key, 4097, 100}, {"b", key, 0, 64}}
	if fmt.Sprint(st) != fmt.Sprint(want) {
		t.Fatalf("status %v; want %v", st, want)
	}
	st, err = tab.Status("a")
	if err != nil || len(st) != 1 || st[0].Name != "a" {
		t.Fatalf("status a: %v %v", st, err)
	}
	_, err = tab.Status("zz")
	wantCode(t, err, inference.CodeNotFound, "Unable to find system shared memory region: 'zz'")

	wantCode(t, tab.Register("a", key, 0, 8), inference.CodeAlreadyExists, "shared memory region 'a' already in manager")

	// Offsets in Acquire are relative to the region.
	ref, err := tab.Acquire("a", 3, 5)
	if err != nil {
		t.Fatal(err)
	}
	want0 := byte((4097 + 3) % 251)
	if ref.Data[0] != want0 || len(ref.Data) != 5 {
		t.Fatalf("data %v; want 5 bytes from %d", ref.Data, want0)
	}
	ref.Data[0] = 0xAA // writes reach the object
	ref.Release()
	ref.Release() // idempotent
	onDisk, _ := os.ReadFile(filepath.Join(dir, "obj"))
	if onDisk[4100] != 0xAA {
		t.Fatalf("write did not reach the object: %x", onDisk[4100])
	}

	if err := tab.Unregister("a"); err != nil {
		t.Fatal(err)
	}
	if err := tab.Unregister("a"); err != nil { // unknown: not an error
		t.Fatal(err)
	}
	if tab.Has("a") || !tab.Has("b") {
		t.Fatal("a should be gone, b still there")
	}
	if err := tab.UnregisterAll(); err != nil {
		t.Fatal(err)
	}
	if st, _ := tab.Status(""); len(st) != 0 {
		t.Fatalf("status after unregister all: %v", st)
	}
}

func TestRegisterRefusals(t *testing.T) {
	dir := t.TempDir()
	tab := New(Options{Dir: dir})
	defer tab.Close()
	key := newObject(t, dir, "obj", 64)
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "obj"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, key      string
		offset, size   uint64
		code           inference.Code
		text           string
		alsoNotInTable bool
	}{
		{"r", "/missing", 0, 8, inference.CodeInternal, "Unable to open shared memory region: '/missing'", true},
		{"r", "/../etc/passwd", 0, 8, inference.CodeInternal, "Unable to open shared memory region: '/../etc/passwd'", true},
		{"r", "/", 0, 8, inference.CodeInternal, "Unable to open shared memory region: '/'", true},
		{"r", "/adir", 0, 8, inference.CodeInternal, "Unable to open shared memory region", true},
		{"r", "/link", 0, 8, inference.CodeInternal, "Unable to open shared memory region", true},
		{"r", key, 0, 65, inference.CodeInvalidArg, "failed to register shared memory region 'r': invalid args: " +
			"offset 0 + byte_size 65 is past the end of shared memory object '" + key + "', which has 64 bytes", true},
		{"r", key, 1, 64, inference.CodeInvalidArg, "offset 1 + byte_size 64 is past the end", true},
		{"r", key, 64, 1, inference.CodeInvalidArg, "offset 64 + byte_size 1 is past the end", true},
		{"r", key, 65, 0, inference.CodeInvalidArg, "invalid args: byte_size is 0", true},
		{"r", key, 0, 0, inference.CodeInvalidArg, "invalid args: byte_size is 0", true},
		{"r", key, math.MaxUint64, 2, inference.CodeInvalidArg, "is past the end", true},
		{"r", ReservedKeyPrefix + "x", 0, 8, inference.CodeInvalidArg,
			"cannot register shared memory region 'r' with key '" + ReservedKeyPrefix + "x' as the key contains the reserved prefix '" + ReservedKeyPrefix + "'", true},
		{"r", "/" + ReservedKeyPrefix + "x", 0, 8, inference.CodeInvalidArg, "reserved prefix", true},
	} {
		t.Run(tc.key, func(t *testing.T) {
			wantCode(t, tab.Register(tc.name, tc.key, tc.offset, tc.size), tc.code, tc.text)
			if tab.Has(tc.name) {
				t.Fatal("a refused region is registered")
			}
		})
	}
}

func TestAcquireBounds(t *testing.T) {
	dir := t.TempDir()
	tab := New(Options{Dir: dir})
	defer tab.Close()
	key := newObject(t, dir, "obj", 128)
	if err := tab.Register("r", key, 64, 64); err != nil {
		t.Fatal(err)
	}
	_, err := tab.Acquire("nope", 0, 1)
	wantCode(t, err, inference.CodeNotFound, "Unable to find shared memory region: 'nope'")
	_, err = tab.Acquire("r", 64, 0)
	wantCode(t, err, inference.CodeInvalidArg, "Invalid offset for shared memory region: 'r'")
	_, err = tab.Acquire("r", math.MaxUint64-31, 8)
	wantCode(t, err, inference.CodeInvalidArg, "Invalid offset for shared memory region: 'r'")
	_, err = tab.Acquire("r", 32, math.MaxUint64-31)
	wantCode(t, err, inference.CodeInvalidArg, "Integer overflow detected: byte_size (18446744073709551584) + offset (32) exceeds maximum value (18446744073709551615) for region 'r'")
	_, err = tab.Acquire("r", 60, 8)
	wantCode(t, err, inference.CodeInvalidArg, "Invalid offset + byte size for shared memory region: 'r'")
	ref, err := tab.Acquire("r", 0, 64)
	if err != nil {
		t.Fatal(err)
	}
	if ref.Data[0] != 64 || len(ref.Data) != 64 || cap(ref.Data) != 64 {
		t.Fatalf("window: first byte %d, len %d, cap %d", ref.Data[0], len(ref.Data), cap(ref.Data))
	}
	ref.Release()

	// Shrinking the object under the region is noticed instead of faulting.
	if err := os.Truncate(filepath.Join(dir, "obj"), 100); err != nil {
		t.Fatal(err)
	}
	_, err = tab.Acquire("r", 0, 8)
	wantCode(t, err, inference.CodeInvalidArg, "the object was resized")
}

// A region unregistered while a request uses it stays mapped, listed and
// usable until the last user releases it, as in Triton.
func TestUnregisterWhileInUse(t *testing.T) {
	dir := t.TempDir()
	tab := New(Options{Dir: dir})
	defer tab.Close()
	key := newObject(t, dir, "obj", 64)
	if err := tab.Register("r", key, 0, 64); err != nil {
		t.Fatal(err)
	}
	first, err := tab.Acquire("r", 0, 64)
	if err != nil {
		t.Fatal(err)
	}
	if err := tab.Unregister("r"); err != nil {
		t.Fatal(err)
	}
	if !tab.Has("r") {
		t.Fatal("a region in use disappeared at unregister")
	}
	wantCode(t, tab.Register("r", key, 0, 8), inference.CodeAlreadyExists, "already in manager")
	second, err := tab.Acquire("r", 0, 8)
	if err != nil {
		t.Fatalf("a region awaiting unregister must stay usable: %v", err)
	}
	first.Release()
	if !tab.Has("r") {
		t.Fatal("gone while the second user holds it")
	}
	// The mapping is still readable by the second user.
	if !bytes.Equal(second.Data, []byte{0, 1, 2, 3, 4, 5, 6, 7}) {
		t.Fatalf("data %v", second.Data)
	}
	second.Release()
	if tab.Has("r") {
		t.Fatal("still registered after the last release")
	}
	if err := tab.Register("r", key, 0, 8); err != nil {
		t.Fatalf("the name is free again: %v", err)
	}
}

func TestCloseRefusesAndUnmaps(t *testing.T) {
	dir := t.TempDir()
	tab := New(Options{Dir: dir})
	key := newObject(t, dir, "obj", 64)
	for _, n := range []string{"a", "b"} {
		if err := tab.Register(n, key, 0, 64); err != nil {
			t.Fatal(err)
		}
	}
	held, err := tab.Acquire("b", 0, 4)
	if err != nil {
		t.Fatal(err)
	}
	if err := tab.Close(); err != nil {
		t.Fatal(err)
	}
	if tab.Has("a") {
		t.Fatal("a is still registered after Close")
	}
	wantCode(t, tab.Register("c", key, 0, 8), inference.CodeUnavailable, "shutting down")
	if held.Data[3] != 3 {
		t.Fatal("a held region must stay mapped after Close")
	}
	held.Release()
	if tab.Has("b") {
		t.Fatal("b is still registered after its last release")
	}
}

func TestRefOverlaps(t *testing.T) {
	dir := t.TempDir()
	tab := New(Options{Dir: dir})
	defer tab.Close()
	key := newObject(t, dir, "obj", 8192)
	if err := tab.Register("r", key, 100, 4000); err != nil {
		t.Fatal(err)
	}
	ref, err := tab.Acquire("r", 10, 20)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Release()
	if !ref.Overlaps(ref.Data) || !ref.Overlaps(ref.Data[5:6]) {
		t.Fatal("the window overlaps its own region")
	}
	if ref.Overlaps(make([]byte, 20)) || ref.Overlaps(nil) {
		t.Fatal("heap memory does not overlap the region")
	}
}

// The real thing: an object in /dev/shm, as tritonclient creates them.
func TestDevShm(t *testing.T) {
	if _, err := os.Stat("/dev/shm"); err != nil {
		t.Skip("no /dev/shm")
	}
	name := fmt.Sprintf("nereid_sharedmem_test_%d", os.Getpid())
	key := newObject(t, "/dev/shm", name, 4096)
	defer os.Remove(filepath.Join("/dev/shm", name))
	tab := New(Options{})
	defer tab.Close()
	if err := tab.Register("r", key, 0, 4096); err != nil {
		t.Fatal(err)
	}
	ref, err := tab.Acquire("r", 4095, 1)
	if err != nil {
		t.Fatal(err)
	}
	if ref.Data[0] != byte(4095%251) {
		t.Fatalf("last byte %d", ref.Data[0])
	}
	ref.Release()
}

// Registrations, unregistrations and uses race; run under -race. Every use
// must see the bytes of the object while it holds its Ref, and every region
// must be unmapped once the table is closed.
func TestConcurrentRegisterUnregisterUse(t *testing.T) {
	dir := t.TempDir()
	tab := New(Options{Dir: dir})
	key := newObject(t, dir, "obj", 4096)
	names := []string{"r0", "r1", "r2", "r3"}
	const rounds = 300
	var wg sync.WaitGroup
	errc := make(chan error, 64)
	for w := range 4 {
		wg.Add(1)
		go func() { // registrar
			defer wg.Done()
			for i := range rounds {
				name := names[(w+i)%len(names)]
				err := tab.Register(name, key, uint64(i%7), 1024)
				if err != nil && inference.CodeOf(err) != inference.CodeAlreadyExists {
					errc <- err
					return
				}
				if i%3 == 0 {
					if err := tab.Unregister(name); err != nil {
						errc <- err
						return
					}
				}
				if i%50 == 0 {
					if err := tab.UnregisterAll(); err != nil {
						errc <- err
						return
					}
				}
			}
		}()
		wg.Add(1)
		go func() { // user
			defer wg.Done()
			for i := range rounds * 2 {
				ref, err := tab.Acquire(names[(w+i)%len(names)], 0, 16)
				if err != nil {
					if inference.CodeOf(err) != inference.CodeNotFound {
						errc <- err
						return
					}
					continue
				}
				st := ref.r.Offset
				for j, b := range ref.Data {
					if b != byte((int(st)+j)%251) {
						errc <- fmt.Errorf("byte %d of %s is %d", j, ref.r.Name, b)
						ref.Release()
						return
					}
				}
				ref.Release()
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if err := tab.Close(); err != nil {
		t.Fatal(err)
	}
	if st, _ := tab.Status(""); len(st) != 0 {
		t.Fatalf("regions left after Close: %v", st)
	}
}

// TestMain installs the stand-in CUDA driver (cudadrivertest) before any
// test can load the driver, which happens once per process: the test
// machines have no GPU. Most CUDA tests below use fakeCuda instead.
func TestMain(m *testing.M) {
	_ = cudadrivertest.Install()
	os.Exit(m.Run())
}

// fakeCuda is a CudaDriver over host memory, counting opens and closes.
// A handle is the name of an allocation made with alloc, NUL-padded.
type fakeCuda struct {
	devices int
	err     error // Devices' error

	mu      sync.Mutex // guards the fields below
	allocs  map[string][]byte
	openErr error // Open's error, when set
	opens   int
	closes  int
}

func newFakeCuda() *fakeCuda {
	return &fakeCuda{devices: 2, allocs: map[string][]byte{}}
}

// alloc makes an allocation of size bytes filled with 0, 1, 2, ... (mod
// 251) and returns its memory and handle.
func (f *fakeCuda) alloc(name string, size int) ([]byte, []byte) {
	mem := make([]byte, size)
	for i := range mem {
		mem[i] = byte(i % 251)
	}
	f.mu.Lock()
	f.allocs[name] = mem
	f.mu.Unlock()
	h := make([]byte, cudadriver.HandleSize)
	copy(h, name)
	return mem, h
}

func (f *fakeCuda) Devices() (int, error) { return f.devices, f.err }

func (f *fakeCuda) Open(handle []byte, device int) (CudaMapping, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.openErr != nil {
		return nil, f.openErr
	}
	mem, ok := f.allocs[string(bytes.TrimRight(handle, "\x00"))]
	if !ok {
		return nil, &cudadriver.Error{Call: "cuIpcOpenMemHandle_v2", Code: 400, Name: "CUDA_ERROR_INVALID_HANDLE"}
	}
	f.opens++
	return &fakeMapping{f: f, mem: mem}, nil
}

func (f *fakeCuda) counts() (opens, closes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opens, f.closes
}

type fakeMapping struct {
	f       *fakeCuda
	mem     []byte
	failing bool
	closed  atomic.Bool
}

func (m *fakeMapping) Size() uint64 { return uint64(len(m.mem)) }

func (m *fakeMapping) ReadAt(dst []byte, off int64) error {
	if m.closed.Load() {
		return errors.New("read after close")
	}
	if m.failing {
		return &cudadriver.Error{Call: "cuMemcpyDtoH_v2", Code: 700, Name: "CUDA_ERROR_ILLEGAL_ADDRESS"}
	}
	copy(dst, m.mem[off:off+int64(len(dst))])
	return nil
}

func (m *fakeMapping) WriteAt(src []byte, off int64) error {
	if m.closed.Load() {
		return errors.New("write after close")
	}
	copy(m.mem[off:], src)
	return nil
}

func (m *fakeMapping) Close() error {
	if m.closed.Swap(true) {
		return errors.New("closed twice")
	}
	m.f.mu.Lock()
	m.f.closes++
	m.f.mu.Unlock()
	return nil
}

func TestCudaRegisterStatusUnregister(t *testing.T) {
	dir := t.TempDir()
	cuda := newFakeCuda()
	tab := New(Options{Dir: dir, Cuda: cuda})
	defer tab.Close()
	key := newObject(t, dir, "obj", 64)
	_, h := cuda.alloc("a", 128)
	if err := tab.RegisterCuda("g", h, 1, 100); err != nil {
		t.Fatal(err)
	}
	if err := tab.RegisterCuda("f", h, 0, 128); err != nil { // the same allocation twice
		t.Fatal(err)
	}
	if err := tab.Register("sys", key, 0, 64); err != nil {
		t.Fatal(err)
	}

	st, err := tab.CudaStatus("")
	want := []CudaStatus{{"f", 0, 128}, {"g", 1, 100}}
	if err != nil || fmt.Sprint(st) != fmt.Sprint(want) {
		t.Fatalf("cuda status %v, %v; want %v", st, err, want)
	}
	if st, err := tab.CudaStatus("g"); err != nil || len(st) != 1 || st[0] != want[1] {
		t.Fatalf("cuda status g: %v, %v", st, err)
	}
	_, err = tab.CudaStatus("zz")
	wantCode(t, err, inference.CodeNotFound, "Unable to find cuda shared memory region: 'zz'")
	_, err = tab.CudaStatus("sys")
	wantCode(t, err, inference.CodeNotFound, "The region named 'sys' is registered as system shared memory, not CUDA shared memory")
	_, err = tab.Status("g")
	wantCode(t, err, inference.CodeNotFound, "The region named 'g' is registered as CUDA shared memory, not system shared memory")
	if sys, err := tab.Status(""); err != nil || len(sys) != 1 || sys[0].Name != "sys" {
		t.Fatalf("system status lists %v, %v", sys, err)
	}

	// One name space for both kinds.
	wantCode(t, tab.Register("g", key, 0, 8), inference.CodeAlreadyExists, "shared memory region 'g' already in manager")
	wantCode(t, tab.RegisterCuda("sys", h, 0, 8), inference.CodeAlreadyExists, "shared memory region 'sys' already in manager")
	wantCode(t, tab.RegisterCuda("g", h, 0, 8), inference.CodeAlreadyExists, "shared memory region 'g' already in manager")

	// Unregistering one kind leaves the other alone.
	if err := tab.Unregister("g"); err != nil {
		t.Fatal(err)
	}
	if err := tab.UnregisterAll(); err != nil {
		t.Fatal(err)
	}
	if err := tab.UnregisterCuda("sys"); err != nil {
		t.Fatal(err)
	}
	if !tab.Has("g") || !tab.Has("f") || tab.Has("sys") {
		t.Fatal("system unregister touched CUDA regions")
	}
	if err := tab.Register("sys", key, 0, 64); err != nil {
		t.Fatal(err)
	}
	if opens, closes := cuda.counts(); opens != 2 || closes != 0 {
		t.Fatalf("opens %d, closes %d", opens, closes)
	}
	if err := tab.UnregisterCuda("g"); err != nil {
		t.Fatal(err)
	}
	if err := tab.UnregisterCuda("g"); err != nil { // unknown: not an error
		t.Fatal(err)
	}
	if opens, closes := cuda.counts(); opens != 2 || closes != 1 || tab.Has("g") {
		t.Fatalf("after unregister g: opens %d, closes %d", opens, closes)
	}
	if err := tab.UnregisterAllCuda(); err != nil {
		t.Fatal(err)
	}
	if opens, closes := cuda.counts(); opens != 2 || closes != 2 || tab.Has("f") || !tab.Has("sys") {
		t.Fatalf("after unregister all: opens %d, closes %d", opens, closes)
	}
	if st, err := tab.CudaStatus(""); err != nil || len(st) != 0 {
		t.Fatalf("status after unregister all: %v %v", st, err)
	}
}

func TestCudaRegisterRefusals(t *testing.T) {
	cuda := newFakeCuda()
	tab := New(Options{Dir: t.TempDir(), Cuda: cuda})
	defer tab.Close()
	_, h := cuda.alloc("a", 64)
	unknown := make([]byte, cudadriver.HandleSize)
	copy(unknown, "nope")
	for _, tc := range []struct {
		name     string
		handle   []byte
		device   int64
		size     uint64
		code     inference.Code
		text     string
		setup    func()
		teardown func()
	}{
		{name: "short handle", handle: h[:10], size: 8, code: inference.CodeInvalidArg,
			text: "failed to register CUDA shared memory region 'r': raw_handle has 10 bytes; a CUDA IPC memory handle (cudaIpcMemHandle_t) has 64"},
		{name: "no handle", size: 8, code: inference.CodeInvalidArg, text: "raw_handle has 0 bytes"},
		{name: "negative device", handle: h, device: -1, size: 8, code: inference.CodeInvalidArg,
			text: "failed to register CUDA shared memory region 'r': invalid device id -1: the server sees 2 CUDA device(s)"},
		{name: "device out of range", handle: h, device: 2, size: 8, code: inference.CodeInvalidArg, text: "invalid device id 2"},
		{name: "zero size", handle: h, size: 0, code: inference.CodeInvalidArg, text: "invalid args: byte_size is 0"},
		{name: "beyond the allocation", handle: h, size: 65, code: inference.CodeInvalidArg,
			text: "failed to register CUDA shared memory region 'r': invalid args: byte_size 65 exceeds the 64 bytes of the CUDA allocation"},
		{name: "driver refuses", handle: unknown, size: 8, code: inference.CodeInvalidArg,
			text: "failed to register CUDA shared memory region 'r': failed to open CUDA IPC handle: cuIpcOpenMemHandle_v2 failed: CUDA_ERROR_INVALID_HANDLE (400)"},
		{name: "no driver", handle: h, size: 8, code: inference.CodeInvalidArg,
			text:     "failed to register CUDA shared memory region: 'r', GPUs not supported: no CUDA driver",
			setup:    func() { cuda.err = fmt.Errorf("no CUDA driver: %w", cudadriver.ErrUnavailable) },
			teardown: func() { cuda.err = nil }},
		{name: "driver gone at open", handle: h, size: 8, code: inference.CodeInvalidArg, text: "GPUs not supported",
			setup:    func() { cuda.openErr = cudadriver.ErrUnavailable },
			teardown: func() { cuda.openErr = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
				defer tc.teardown()
			}
			wantCode(t, tab.RegisterCuda("r", tc.handle, tc.device, tc.size), tc.code, tc.text)
			if tab.Has("r") {
				t.Fatal("a refused region is registered")
			}
		})
	}
	// The mapping opened for the region beyond the allocation was closed.
	if opens, closes := cuda.counts(); opens != 1 || closes != 1 {
		t.Fatalf("opens %d, closes %d", opens, closes)
	}
	if err := tab.Close(); err != nil {
		t.Fatal(err)
	}
	wantCode(t, tab.RegisterCuda("late", h, 0, 8), inference.CodeUnavailable, "shutting down")
	if opens, _ := cuda.counts(); opens != 1 {
		t.Fatal("a closed table opened a handle")
	}
}

// Windows of CUDA regions obey the same bounds as system ones; reads are
// host copies, writes reach the device memory at the window's offset.
func TestCudaAcquireBytesStore(t *testing.T) {
	cuda := newFakeCuda()
	tab := New(Options{Dir: t.TempDir(), Cuda: cuda})
	defer tab.Close()
	mem, h := cuda.alloc("a", 128)
	if err := tab.RegisterCuda("r", h, 0, 64); err != nil {
		t.Fatal(err)
	}
	_, err := tab.Acquire("r", 64, 0)
	wantCode(t, err, inference.CodeInvalidArg, "Invalid offset for shared memory region: 'r'")
	_, err = tab.Acquire("r", 32, math.MaxUint64-31)
	wantCode(t, err, inference.CodeInvalidArg, "Integer overflow detected")
	_, err = tab.Acquire("r", 60, 8) // inside the allocation, outside the region
	wantCode(t, err, inference.CodeInvalidArg, "Invalid offset + byte size for shared memory region: 'r'")

	ref, err := tab.Acquire("r", 10, 20)
	if err != nil {
		t.Fatal(err)
	}
	if ref.Data != nil || !ref.IsCuda() || ref.Size() != 20 {
		t.Fatalf("a CUDA window: Data %v, cuda %v, size %d", ref.Data, ref.IsCuda(), ref.Size())
	}
	got, err := ref.Bytes()
	if err != nil || !bytes.Equal(got, mem[10:30]) {
		t.Fatalf("bytes %v, %v", got, err)
	}
	got[0] = 0xFF
	if mem[10] == 0xFF || ref.Overlaps(got) {
		t.Fatal("the host copy aliases device memory")
	}
	if err := ref.Store([]byte("out")); err != nil {
		t.Fatal(err)
	}
	if string(mem[10:13]) != "out" || mem[13] != 13 {
		t.Fatalf("store wrote %v", mem[8:16])
	}
	if err := ref.Store(make([]byte, 21)); err == nil {
		t.Fatal("a store larger than the window")
	}
	ref.Release()

	// A failing device copy is an error, not a crash.
	_, fh := cuda.alloc("b", 16)
	if err := tab.RegisterCuda("f", fh, 0, 16); err != nil {
		t.Fatal(err)
	}
	tab.mu.Lock()
	tab.regions["f"].cuda.(*fakeMapping).failing = true
	tab.mu.Unlock()
	ref, err = tab.Acquire("f", 0, 4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ref.Bytes(); err == nil || !strings.Contains(err.Error(), "CUDA_ERROR_ILLEGAL_ADDRESS") {
		t.Fatalf("failing read: %v", err)
	}
	ref.Release()
}

// A CUDA region unregistered, or the table closed, while a request uses it
// keeps its handle open until the request releases it.
func TestCudaUnregisterWhileInUse(t *testing.T) {
	cuda := newFakeCuda()
	tab := New(Options{Dir: t.TempDir(), Cuda: cuda})
	_, h := cuda.alloc("a", 64)
	for _, n := range []string{"r", "s"} {
		if err := tab.RegisterCuda(n, h, 0, 64); err != nil {
			t.Fatal(err)
		}
	}
	held, err := tab.Acquire("r", 0, 8)
	if err != nil {
		t.Fatal(err)
	}
	if err := tab.UnregisterCuda("r"); err != nil {
		t.Fatal(err)
	}
	if st, err := tab.CudaStatus("r"); err != nil || len(st) != 1 {
		t.Fatalf("a region in use disappeared at unregister: %v", err)
	}
	if _, closes := cuda.counts(); closes != 0 {
		t.Fatal("closed while in use")
	}
	if got, err := held.Bytes(); err != nil || got[7] != 7 {
		t.Fatalf("held window: %v %v", got, err)
	}
	held.Release()
	if _, closes := cuda.counts(); closes != 1 || tab.Has("r") {
		t.Fatal("not closed at the last release")
	}

	held, err = tab.Acquire("s", 0, 8)
	if err != nil {
		t.Fatal(err)
	}
	if err := tab.Close(); err != nil {
		t.Fatal(err)
	}
	if _, closes := cuda.counts(); closes != 1 {
		t.Fatal("Close closed a region in use")
	}
	if err := held.Store([]byte{1}); err != nil {
		t.Fatalf("a held region must stay usable after Close: %v", err)
	}
	held.Release()
	if opens, closes := cuda.counts(); opens != 2 || closes != 2 || tab.Has("s") {
		t.Fatalf("after the last release: opens %d, closes %d", opens, closes)
	}
}

// Registrations, unregistrations and uses of CUDA regions race; run under
// -race. No use may find its handle closed, and every opened handle is
// closed once the table is.
func TestCudaConcurrentRegisterUnregisterUse(t *testing.T) {
	cuda := newFakeCuda()
	tab := New(Options{Dir: t.TempDir(), Cuda: cuda})
	_, h := cuda.alloc("a", 1024)
	names := []string{"r0", "r1", "r2"}
	var wg sync.WaitGroup
	errc := make(chan error, 64)
	for w := range 3 {
		wg.Go(func() { // registrar
			for i := range 200 {
				name := names[(w+i)%len(names)]
				if err := tab.RegisterCuda(name, h, int64(i%2), 512); err != nil && inference.CodeOf(err) != inference.CodeAlreadyExists {
					errc <- err
					return
				}
				if i%3 == 0 {
					if err := tab.UnregisterCuda(name); err != nil {
						errc <- err
						return
					}
				}
				if i%40 == 0 {
					if err := tab.UnregisterAllCuda(); err != nil {
						errc <- err
						return
					}
				}
			}
		})
		wg.Go(func() { // user
			for i := range 400 {
				ref, err := tab.Acquire(names[(w+i)%len(names)], 16, 16)
				if err != nil {
					if inference.CodeOf(err) != inference.CodeNotFound {
						errc <- err
						return
					}
					continue
				}
				b, err := ref.Bytes()
				if err == nil && b[0] != 16 {
					err = fmt.Errorf("read %d", b[0])
				}
				if err == nil {
					err = ref.Store(b[:0])
				}
				ref.Release()
				if err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if err := tab.Close(); err != nil {
		t.Fatal(err)
	}
	if opens, closes := cuda.counts(); opens != closes || opens == 0 {
		t.Fatalf("opens %d, closes %d", opens, closes)
	}
}

// The default CudaDriver is package cudadriver, here loading the stand-in
// driver of cudadrivertest.
func TestCudaThroughDriver(t *testing.T) {
	fake := cudadrivertest.Use(t)
	buf := fake.NewBuffer(t, 256)
	buf.Write(t, 100, []byte("from the device"))
	tab := New(Options{Dir: t.TempDir()})
	if err := tab.RegisterCuda("g", buf.Handle, 1, 200); err != nil {
		t.Fatal(err)
	}
	wantCode(t, tab.RegisterCuda("big", buf.Handle, 0, 257), inference.CodeInvalidArg, "byte_size 257 exceeds the 256 bytes of the CUDA allocation")
	other := make([]byte, cudadriver.HandleSize)
	copy(other, "nereid_no_such_object")
	wantCode(t, tab.RegisterCuda("x", other, 0, 8), inference.CodeInvalidArg,
		"failed to register CUDA shared memory region 'x': failed to open CUDA IPC handle: cuIpcOpenMemHandle_v2 failed: CUDA_ERROR_INVALID_HANDLE (400)")
	ref, err := tab.Acquire("g", 100, 15)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ref.Bytes(); err != nil || string(got) != "from the device" {
		t.Fatalf("read %q, %v", got, err)
	}
	if err := ref.Store([]byte("FROM")); err != nil {
		t.Fatal(err)
	}
	ref.Release()
	if got := buf.Read(t, 100, 15); string(got) != "FROM the device" {
		t.Fatalf("device holds %q", got)
	}
	if err := tab.Close(); err != nil {
		t.Fatal(err)
	}
	if c := fake.Counts(t, buf); c.Opens != 2 || c.Closes != 2 {
		t.Fatalf("opens and closes of the buffer: %+v", c)
	}
}

// An object shrunk after Acquire, while its window is in use, fails Copy,
// Store and CopyOf with an error instead of killing the process (SIGBUS).
func TestShrunkUnderAnAcquiredWindow(t *testing.T) {
	dir := t.TempDir()
	tab := New(Options{Dir: dir})
	defer tab.Close()
	size := 4 * os.Getpagesize()
	key := newObject(t, dir, "obj", size)
	if err := tab.Register("r", key, 0, uint64(size)); err != nil {
		t.Fatal(err)
	}
	ref, err := tab.Acquire("r", 0, uint64(size))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Release()
	got, err := ref.Copy()
	if err != nil || len(got) != size || got[size-1] != byte((size-1)%251) {
		t.Fatalf("copy of an intact window: %v, %d bytes", err, len(got))
	}
	if err := os.Truncate(filepath.Join(dir, "obj"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := ref.Copy(); err == nil || !strings.Contains(err.Error(), "changed size") {
		t.Errorf("Copy after the shrink: %v", err)
	}
	if err := ref.Store(make([]byte, size)); err == nil {
		t.Error("Store after the shrink succeeded")
	}
	if _, err := CopyOf(ref.Data); err == nil {
		t.Error("CopyOf after the shrink succeeded")
	}
}

// BenchmarkCopy is what a request pays per shared-memory input since inputs
// are copied out of the mapping (the price of not crashing on a shrunk
// object).
func BenchmarkCopy(b *testing.B) {
	for _, size := range []int{64, 64 << 10, 1 << 20} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			dir := b.TempDir()
			tab := New(Options{Dir: dir})
			defer tab.Close()
			buf := make([]byte, size)
			if err := os.WriteFile(filepath.Join(dir, "obj"), buf, 0o600); err != nil {
				b.Fatal(err)
			}
			if err := tab.Register("r", "/obj", 0, uint64(size)); err != nil {
				b.Fatal(err)
			}
			ref, err := tab.Acquire("r", 0, uint64(size))
			if err != nil {
				b.Fatal(err)
			}
			defer ref.Release()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ref.Copy(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The table holds at most MaxRegions regions; unregistering one makes room.
func TestMaxRegions(t *testing.T) {
	dir := t.TempDir()
	tab := New(Options{Dir: dir, MaxRegions: 2})
	defer tab.Close()
	key := newObject(t, dir, "obj", 64)
	for _, name := range []string{"a", "b"} {
		if err := tab.Register(name, key, 0, 64); err != nil {
			t.Fatal(err)
		}
	}
	err := tab.Register("c", key, 0, 64)
	wantCode(t, err, inference.CodeUnavailable, "maximum of 2 regions (--shared-memory-max-regions)")
	if err := tab.Unregister("a"); err != nil {
		t.Fatal(err)
	}
	if err := tab.Register("c", key, 0, 64); err != nil {
		t.Fatalf("after an unregister: %v", err)
	}
}
