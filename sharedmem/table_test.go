package sharedmem

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nereid-project/nereid/inference"
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
		{"r", key, 0, 65, inference.CodeInvalidArg, "failed to register shared memory region 'r': invalid args", true},
		{"r", key, 1, 64, inference.CodeInvalidArg, "invalid args", true},
		{"r", key, 64, 1, inference.CodeInvalidArg, "invalid args", true},
		{"r", key, 65, 0, inference.CodeInvalidArg, "invalid args", true},
		{"r", key, 0, 0, inference.CodeInvalidArg, "invalid args", true},
		{"r", key, math.MaxUint64, 2, inference.CodeInvalidArg, "invalid args", true},
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
