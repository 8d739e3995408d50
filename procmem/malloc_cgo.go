//go:build cgo && linux

package procmem

/*
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

// glibc's struct mallinfo2 (2.33 and later), looked up at run time so
// that an older C library only loses this measure.
struct nereid_mallinfo2 {
	size_t arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost;
};

static long long nereid_malloc_in_use(void) {
	static struct nereid_mallinfo2 (*f)(void);
	static int looked;
	if (!looked) {
		f = (struct nereid_mallinfo2 (*)(void))dlsym(RTLD_DEFAULT, "mallinfo2");
		looked = 1;
	}
	if (!f) {
		return -1;
	}
	struct nereid_mallinfo2 mi = f();
	return (long long)(mi.uordblks + mi.hblkhd);
}
*/
import "C"

// MallocInUse is the bytes the C allocator has handed out and not taken
// back (glibc's mallinfo2: in-use chunks plus mmapped blocks). Unlike
// resident memory it does not miss an allocation that reuses freed pages,
// nor count a library's mapped code. ok is false where it is unknown.
func MallocInUse() (int64, bool) {
	n := int64(C.nereid_malloc_in_use())
	return n, n >= 0
}
