//go:build cgo && linux

package cudadriver

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>

typedef int (*nereid_cu_init)(unsigned int);
typedef int (*nereid_cu_device_get_count)(int *);

// nereid_cuda_probe loads libcuda.so.1, initialises the driver and counts
// its devices. It returns 0 on success, -1 when the library cannot be
// loaded (why is dlerror's text), -2 when it lacks the entry points, and a
// positive CUresult when a driver call fails. The library stays loaded: the
// driver does not expect to be unloaded after cuInit.
static int nereid_cuda_probe(int *count, const char **why) {
	void *lib = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
	if (lib == NULL) {
		*why = dlerror();
		return -1;
	}
	nereid_cu_init init = (nereid_cu_init)dlsym(lib, "cuInit");
	nereid_cu_device_get_count get_count = (nereid_cu_device_get_count)dlsym(lib, "cuDeviceGetCount");
	if (init == NULL || get_count == NULL) {
		dlclose(lib);
		return -2;
	}
	int rc = init(0);
	if (rc != 0) {
		return rc;
	}
	return get_count(count);
}
*/
import "C"

import "fmt"

// cudaErrorNoDevice is CUresult CUDA_ERROR_NO_DEVICE.
const cudaErrorNoDevice = 100

func probe() (int, error) {
	var count C.int
	var why *C.char
	switch rc := C.nereid_cuda_probe(&count, &why); {
	case rc == -1:
		msg := "unknown error"
		if why != nil {
			msg = C.GoString(why)
		}
		return 0, fmt.Errorf("no CUDA driver: %s", msg)
	case rc == -2:
		return 0, fmt.Errorf("libcuda.so.1 lacks cuInit or cuDeviceGetCount")
	case rc == cudaErrorNoDevice:
		return 0, fmt.Errorf("the CUDA driver found no device")
	case rc != 0:
		return 0, fmt.Errorf("the CUDA driver failed to initialise (CUresult %d)", int(rc))
	case count == 0:
		return 0, fmt.Errorf("the CUDA driver found no device")
	default:
		return int(count), nil
	}
}
