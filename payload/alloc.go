package payload

import "syscall"

// LargeSize is the size from which Alloc maps memory from the kernel instead
// of the Go heap, and from which a released payload is worth returning to
// the OS.
const LargeSize = 4 << 20

// Alloc returns a buffer of length n. One of LargeSize bytes or more is an
// anonymous mapping outside the Go heap, which must be given back with Free
// (or it stays mapped); a smaller one is an ordinary slice, which Free
// ignores. The bytes are zero.
func Alloc(n int) []byte {
	if n < LargeSize {
		return make([]byte, n)
	}
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		// Out of address space or over a mapping limit: the heap is the
		// fallback, and Free leaves such a slice to the collector.
		return make([]byte, n, n+1)
	}
	return b
}

// Free gives back a buffer from Alloc, which must not be used afterwards.
// It takes the whole buffer as Alloc returned it (a re-slice of the same
// length and capacity); other slices are left to the collector.
func Free(b []byte) {
	if len(b) < LargeSize || cap(b) != len(b) {
		return
	}
	// syscall tracks its mappings: a slice that is not one (the heap
	// fallback, a second Free) gets EINVAL and nothing is unmapped.
	_ = syscall.Munmap(b)
}
