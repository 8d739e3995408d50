// Package cudadrivertest installs a stand-in CUDA driver for tests. The
// test machines have no GPU, so tests of CUDA shared memory build
// ../testdata/fakecuda.c, a library that exports the driver entry points
// package cudadriver loads and implements them over POSIX shared memory,
// and point NEREID_CUDA_DRIVER at it. The real driver path is exercised
// only on a machine with a GPU.
//
// cudadriver loads its library once per process, so Use must run before
// anything in the test binary asks cudadriver for the driver: call it from
// TestMain, or first thing in the tests that need it.
package cudadrivertest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nereid-project/nereid/sharedmem/cudadriver"
)

// Devices is how many devices the stand-in driver reports.
const Devices = 2

// Fake is the stand-in driver loaded in this process.
type Fake struct {
	// Library is the file the driver was loaded from; it is deleted once
	// loaded.
	Library string
	log     *os.File // the fake's call log, appended to by the C code
}

var (
	installOnce sync.Once
	installed   *Fake
	installErr  error
)

// skipError is a reason the stand-in cannot be used on this machine: no C
// compiler, no cgo, no /dev/shm.
type skipError struct{ msg string }

func (e *skipError) Error() string { return e.msg }

// Install builds and installs the stand-in driver in this process, once,
// for TestMain: it returns why the stand-in cannot be used instead of
// skipping; Use then skips or fails the tests that need it.
func Install() error {
	installOnce.Do(func() { installed, installErr = install() })
	return installErr
}

// Use installs the stand-in driver in this process, once, and returns it.
// It skips t when this machine cannot build or load it, and fails t when
// the driver library was loaded before Use could install the stand-in.
func Use(t testing.TB) *Fake {
	t.Helper()
	if err := Install(); err != nil {
		if se := (*skipError)(nil); errors.As(installErr, &se) {
			t.Skipf("no stand-in CUDA driver: %v", err)
		}
		t.Fatalf("stand-in CUDA driver: %v", err)
	}
	return installed
}

func install() (*Fake, error) {
	if !cgoLoader {
		return nil, &skipError{"package cudadriver was built without cgo and cannot load a driver"}
	}
	if st, err := os.Stat("/dev/shm"); err != nil || !st.IsDir() {
		return nil, &skipError{"no /dev/shm"}
	}
	src, err := source()
	if err != nil {
		return nil, err
	}
	cc, err := compiler()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "nereid-fakecuda-")
	if err != nil {
		return nil, err
	}
	// The library and the log stay usable after their files are gone: the
	// library is mapped, the log is an open descriptor.
	defer os.RemoveAll(dir)
	lib := filepath.Join(dir, "libfakecuda.so")
	args := append(append([]string{}, cc[1:]...), "-shared", "-fPIC", "-pthread", "-O1", "-o", lib, src)
	if out, err := exec.Command(cc[0], args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%s %s: %w\n%s", cc[0], strings.Join(args, " "), err, out)
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "calls.log"), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	for k, v := range map[string]string{
		cudadriver.LibraryEnv:     lib,
		"NEREID_FAKECUDA_LOG_FD":  strconv.Itoa(int(logFile.Fd())),
		"NEREID_FAKECUDA_DEVICES": strconv.Itoa(Devices),
	} {
		if err := os.Setenv(k, v); err != nil {
			return nil, err
		}
	}
	n, err := cudadriver.Devices()
	if got := cudadriver.Library(); got != lib {
		return nil, fmt.Errorf("the CUDA driver was loaded from %q before the stand-in was installed: call cudadrivertest.Use from TestMain or before anything asks package cudadriver", got)
	}
	if err != nil {
		return nil, fmt.Errorf("loading the stand-in: %w", err)
	}
	if n != Devices {
		return nil, fmt.Errorf("the stand-in reports %d devices, not %d", n, Devices)
	}
	return &Fake{Library: lib, log: logFile}, nil
}

// source finds testdata/fakecuda.c next to this package's source.
func source() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", &skipError{"cannot locate the source of package cudadrivertest"}
	}
	src := filepath.Join(filepath.Dir(file), "..", "testdata", "fakecuda.c")
	if _, err := os.Stat(src); err != nil {
		return "", &skipError{fmt.Sprintf("no fakecuda.c source (built with -trimpath?): %v", err)}
	}
	return src, nil
}

// compiler is the C compiler cgo uses: $CC, else `go env CC`, else cc.
func compiler() ([]string, error) {
	cc := strings.Fields(os.Getenv("CC"))
	if len(cc) == 0 {
		if gobin, err := exec.LookPath("go"); err == nil {
			if out, err := exec.Command(gobin, "env", "CC").Output(); err == nil {
				cc = strings.Fields(string(out))
			}
		}
	}
	if len(cc) == 0 {
		cc = []string{"cc"}
	}
	if _, err := exec.LookPath(cc[0]); err != nil {
		return nil, &skipError{fmt.Sprintf("no C compiler to build the stand-in driver: %v", err)}
	}
	return cc, nil
}

// Counts are the calls the stand-in driver logged.
type Counts struct {
	Opens, Closes     int // cuIpcOpenMemHandle_v2 / cuIpcCloseMemHandle
	Retains, Releases int // cuDevicePrimaryCtxRetain / cuDevicePrimaryCtxRelease_v2
	Pushes, Pops      int // cuCtxPushCurrent_v2 / cuCtxPopCurrent_v2
	Syncs             int // cuCtxSynchronize
}

// Counts reads the calls logged since the driver was loaded. Opens and
// closes count those of the given buffers only, or of every buffer when
// none is given; the other counts are process-wide.
func (f *Fake) Counts(t testing.TB, buffers ...*Buffer) Counts {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(f.log, 0, 1<<40))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, buf := range buffers {
		names[buf.Name] = true
	}
	var c Counts
	for line := range bytes.Lines(b) {
		op, arg, _ := strings.Cut(strings.TrimSpace(string(line)), " ")
		mine := len(names) == 0 || names[arg]
		switch op {
		case "open":
			if mine {
				c.Opens++
			}
		case "close":
			if mine {
				c.Closes++
			}
		case "retain":
			c.Retains++
		case "release":
			c.Releases++
		case "push":
			c.Pushes++
		case "pop":
			c.Pops++
		case "sync":
			c.Syncs++
		}
	}
	return c
}

// Buffer is a stand-in device allocation: a POSIX shared-memory object
// that the stand-in driver maps when its Handle is opened.
type Buffer struct {
	Name   string // the object's name, in /dev/shm
	Handle []byte // the stand-in cudaIpcMemHandle_t: Name, NUL-padded to 64 bytes
	path   string
}

var buffers atomic.Int64

// NewBuffer creates a zeroed stand-in allocation of size bytes, removed
// when t ends.
func (f *Fake) NewBuffer(t testing.TB, size int) *Buffer {
	return f.newBuffer(t, size, "")
}

// NewFailingBuffer is a stand-in allocation that opens, but every copy from
// or to it fails with CUDA_ERROR_ILLEGAL_ADDRESS.
func (f *Fake) NewFailingBuffer(t testing.TB, size int) *Buffer {
	return f.newBuffer(t, size, "_failcopy")
}

func (f *Fake) newBuffer(t testing.TB, size int, tag string) *Buffer {
	t.Helper()
	name := fmt.Sprintf("nereid_fakecuda_%d_%d%s", os.Getpid(), buffers.Add(1), tag)
	path := filepath.Join("/dev/shm", name)
	if err := os.WriteFile(path, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(path) })
	handle := make([]byte, cudadriver.HandleSize)
	copy(handle, name)
	return &Buffer{Name: name, Handle: handle, path: path}
}

// Write stores p at offset off of the allocation, as a client's
// cudaMemcpy would.
func (b *Buffer) Write(t testing.TB, off int, p []byte) {
	t.Helper()
	f, err := os.OpenFile(b.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(p, int64(off)); err != nil {
		t.Fatal(err)
	}
}

// Read returns n bytes at offset off of the allocation.
func (b *Buffer) Read(t testing.TB, off, n int) []byte {
	t.Helper()
	data, err := os.ReadFile(b.path)
	if err != nil {
		t.Fatal(err)
	}
	if off+n > len(data) {
		t.Fatalf("reading %d bytes at %d of a %d-byte buffer", n, off, len(data))
	}
	return data[off : off+n]
}
