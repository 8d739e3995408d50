package cudadriver_test

// These tests run package cudadriver against the stand-in driver of
// cudadrivertest (testdata/fakecuda.c): the test machines have no GPU. The
// real driver path is exercised only on a machine with a GPU.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/nereid-project/nereid/sharedmem/cudadriver"
	"github.com/nereid-project/nereid/sharedmem/cudadriver/cudadrivertest"
)

// TestMain installs the stand-in before any test can load the driver: the
// driver is loaded once per process. A machine that cannot build it skips
// the tests that need it.
func TestMain(m *testing.M) {
	_ = cudadrivertest.Install()
	os.Exit(m.Run())
}

// The answer is stable across calls, and an error comes with no devices.
func TestDevicesIsStable(t *testing.T) {
	n1, err1 := cudadriver.Devices()
	n2, err2 := cudadriver.Devices()
	if n1 != n2 || (err1 == nil) != (err2 == nil) {
		t.Fatalf("Devices changed its answer: (%d, %v) then (%d, %v)", n1, err1, n2, err2)
	}
	if err1 != nil && (n1 != 0 || !errors.Is(err1, cudadriver.ErrUnavailable)) {
		t.Fatalf("Devices = %d with error %v", n1, err1)
	}
	cudadrivertest.Use(t)
	if err1 != nil || n1 != cudadrivertest.Devices {
		t.Fatalf("Devices = %d, %v with the stand-in; want %d", n1, err1, cudadrivertest.Devices)
	}
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// balanced fails t unless every context retained and pushed since before
// was released and popped again.
func balanced(t *testing.T, fake *cudadrivertest.Fake, before cudadrivertest.Counts) {
	t.Helper()
	c := fake.Counts(t)
	if c.Retains-before.Retains != c.Releases-before.Releases || c.Pushes-before.Pushes != c.Pops-before.Pops {
		t.Fatalf("unbalanced driver calls: before %+v, after %+v", before, c)
	}
}

func TestOpenReadWriteClose(t *testing.T) {
	fake := cudadrivertest.Use(t)
	before := fake.Counts(t)
	buf := fake.NewBuffer(t, 4096)
	buf.Write(t, 0, pattern(4096))

	m, err := cudadriver.Open(buf.Handle, 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Size() != 4096 || m.Device() != 1 {
		t.Fatalf("size %d, device %d", m.Size(), m.Device())
	}
	got := make([]byte, 100)
	if err := m.ReadAt(got, 1000); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, pattern(4096)[1000:1100]) {
		t.Fatalf("read %v", got[:8])
	}
	if err := m.WriteAt([]byte("device"), 4090); err != nil {
		t.Fatal(err)
	}
	if got := buf.Read(t, 4090, 6); string(got) != "device" {
		t.Fatalf("write reached %q", got)
	}
	for _, tc := range []struct {
		n   int
		off int64
	}{{1, 4096}, {2, 4095}, {1, -1}, {4097, 0}} {
		if err := m.ReadAt(make([]byte, tc.n), tc.off); !errors.Is(err, cudadriver.ErrInvalidArg) {
			t.Errorf("read %d at %d: %v", tc.n, tc.off, err)
		}
		if err := m.WriteAt(make([]byte, tc.n), tc.off); !errors.Is(err, cudadriver.ErrInvalidArg) {
			t.Errorf("write %d at %d: %v", tc.n, tc.off, err)
		}
	}
	if err := m.ReadAt(nil, 4096); err != nil {
		t.Errorf("an empty read at the end: %v", err)
	}
	if c := fake.Counts(t, buf); c.Opens != 1 || c.Closes != 0 {
		t.Fatalf("before close: %+v", c)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if err := m.ReadAt(got, 0); err == nil {
		t.Fatal("read after close")
	}
	if c := fake.Counts(t, buf); c.Opens != 1 || c.Closes != 1 {
		t.Fatalf("after close: %+v", c)
	}
	balanced(t, fake, before)
}

func TestOpenRefusals(t *testing.T) {
	fake := cudadrivertest.Use(t)
	before := fake.Counts(t)
	buf := fake.NewBuffer(t, 64)
	for _, tc := range []struct {
		name   string
		handle []byte
		device int
		want   string
	}{
		{"short handle", buf.Handle[:63], 0, "a CUDA IPC memory handle has 64 bytes, not 63"},
		{"long handle", append(buf.Handle, 0), 0, "not 65"},
		{"negative device", buf.Handle, -1, "invalid CUDA device id -1: the driver sees 2 device(s)"},
		{"device out of range", buf.Handle, 2, "invalid CUDA device id 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cudadriver.Open(tc.handle, tc.device)
			if !errors.Is(err, cudadriver.ErrInvalidArg) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v; want %q", err, tc.want)
			}
		})
	}
	// A handle the driver refuses names the call and the CUresult.
	_, err := cudadriver.Open(make([]byte, cudadriver.HandleSize), 0)
	var de *cudadriver.Error
	if !errors.As(err, &de) || de.Call != "cuIpcOpenMemHandle_v2" || de.Name != "CUDA_ERROR_INVALID_VALUE" {
		t.Fatalf("zero handle: %v", err)
	}
	gone := make([]byte, cudadriver.HandleSize)
	copy(gone, "nereid_no_such_object")
	_, err = cudadriver.Open(gone, 0)
	if !errors.As(err, &de) || err.Error() != "cuIpcOpenMemHandle_v2 failed: CUDA_ERROR_INVALID_HANDLE (400)" {
		t.Fatalf("unknown handle: %v", err)
	}
	// A failed open keeps no context retained.
	balanced(t, fake, before)
}

// The driver counts opens of one handle in one context: two mappings of
// the same allocation share the pointer, and closing one leaves the other.
func TestSameHandleTwice(t *testing.T) {
	fake := cudadrivertest.Use(t)
	buf := fake.NewBuffer(t, 128)
	buf.Write(t, 0, []byte("shared"))
	a, err := cudadriver.Open(buf.Handle, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := cudadriver.Open(buf.Handle, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6)
	if err := b.ReadAt(got, 0); err != nil || string(got) != "shared" {
		t.Fatalf("read %q, %v", got, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if c := fake.Counts(t, buf); c.Opens != 2 || c.Closes != 2 {
		t.Fatalf("%+v", c)
	}
}

func TestFailingCopy(t *testing.T) {
	fake := cudadrivertest.Use(t)
	before := fake.Counts(t)
	buf := fake.NewFailingBuffer(t, 64)
	m, err := cudadriver.Open(buf.Handle, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = m.ReadAt(make([]byte, 8), 0)
	if err == nil || err.Error() != "cuMemcpyDtoH_v2 failed: CUDA_ERROR_ILLEGAL_ADDRESS (700)" {
		t.Fatalf("read: %v", err)
	}
	err = m.WriteAt(make([]byte, 8), 0)
	if err == nil || err.Error() != "cuMemcpyHtoD_v2 failed: CUDA_ERROR_ILLEGAL_ADDRESS (700)" {
		t.Fatalf("write: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	balanced(t, fake, before)
}

// Copies from many goroutines, hence many OS threads, each find the
// context current: the stand-in refuses a copy on a thread where it is not.
// Run under -race.
func TestConcurrentCopies(t *testing.T) {
	fake := cudadrivertest.Use(t)
	before := fake.Counts(t)
	const workers, chunk = 8, 512
	buf := fake.NewBuffer(t, workers*chunk)
	m, err := cudadriver.Open(buf.Handle, 1)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			want := bytes.Repeat([]byte{byte(w + 1)}, chunk)
			got := make([]byte, chunk)
			for range 50 {
				if err := m.WriteAt(want, int64(w*chunk)); err != nil {
					errc <- err
					return
				}
				if err := m.ReadAt(got, int64(w*chunk)); err != nil {
					errc <- err
					return
				}
				if !bytes.Equal(got, want) {
					errc <- fmt.Errorf("worker %d read back other bytes", w)
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
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	balanced(t, fake, before)
}
