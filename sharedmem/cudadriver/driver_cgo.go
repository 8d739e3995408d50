//go:build cgo && linux

package cudadriver

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

// The driver's types, declared here so that no CUDA header is needed:
// CUresult and CUdevice are ints, CUcontext a pointer, CUdeviceptr an
// unsigned 64-bit integer on 64-bit Linux, CUipcMemHandle 64 opaque bytes
// passed by value.
typedef unsigned long long nereid_cu_deviceptr;
typedef struct { char reserved[64]; } nereid_cu_ipc_mem_handle;

// nereid_cuda holds the loaded library and its entry points, by the names
// libcuda.so.1 exports (cuda.h maps the API names to the _v2 ones).
typedef struct {
	void *lib;
	int (*init)(unsigned int);                                     // cuInit
	int (*device_get_count)(int *);                                // cuDeviceGetCount
	int (*device_get)(int *, int);                                 // cuDeviceGet
	int (*primary_ctx_retain)(void **, int);                       // cuDevicePrimaryCtxRetain
	int (*primary_ctx_release)(int);                               // cuDevicePrimaryCtxRelease_v2
	int (*ctx_push)(void *);                                       // cuCtxPushCurrent_v2
	int (*ctx_pop)(void **);                                       // cuCtxPopCurrent_v2
	int (*ipc_open)(nereid_cu_deviceptr *, nereid_cu_ipc_mem_handle, unsigned int); // cuIpcOpenMemHandle_v2
	int (*ipc_close)(nereid_cu_deviceptr);                         // cuIpcCloseMemHandle
	int (*address_range)(nereid_cu_deviceptr *, size_t *, nereid_cu_deviceptr); // cuMemGetAddressRange_v2
	int (*dtoh)(void *, nereid_cu_deviceptr, size_t);              // cuMemcpyDtoH_v2
	int (*htod)(nereid_cu_deviceptr, const void *, size_t);        // cuMemcpyHtoD_v2
	int (*ctx_sync)(void);                                         // cuCtxSynchronize
	int (*error_name)(int, const char **);                         // cuGetErrorName, optional
} nereid_cuda;

// nereid_cuda_load loads the library at path, initialises the driver and
// counts its devices. It returns 0 with the driver in *out, -1 when the
// library cannot be loaded (why is dlerror's text), -2 when it lacks an
// entry point (why is its name), and a positive CUresult when a driver
// call fails (why is the call). The library stays loaded once cuInit has
// run: the driver does not expect to be unloaded.
static int nereid_cuda_load(const char *path, nereid_cuda **out, int *count, const char **why) {
	void *lib = dlopen(path, RTLD_LAZY | RTLD_LOCAL);
	if (lib == NULL) {
		*why = dlerror();
		return -1;
	}
	nereid_cuda *d = calloc(1, sizeof *d);
	if (d == NULL) {
		dlclose(lib);
		*why = "out of memory";
		return -1;
	}
	d->lib = lib;
#define NEREID_CUDA_SYM(field, name) \
	if ((*(void **)(&d->field) = dlsym(lib, name)) == NULL) { \
		*why = name; \
		free(d); \
		dlclose(lib); \
		return -2; \
	}
	NEREID_CUDA_SYM(init, "cuInit")
	NEREID_CUDA_SYM(device_get_count, "cuDeviceGetCount")
	NEREID_CUDA_SYM(device_get, "cuDeviceGet")
	NEREID_CUDA_SYM(primary_ctx_retain, "cuDevicePrimaryCtxRetain")
	NEREID_CUDA_SYM(primary_ctx_release, "cuDevicePrimaryCtxRelease_v2")
	NEREID_CUDA_SYM(ctx_push, "cuCtxPushCurrent_v2")
	NEREID_CUDA_SYM(ctx_pop, "cuCtxPopCurrent_v2")
	NEREID_CUDA_SYM(ipc_open, "cuIpcOpenMemHandle_v2")
	NEREID_CUDA_SYM(ipc_close, "cuIpcCloseMemHandle")
	NEREID_CUDA_SYM(address_range, "cuMemGetAddressRange_v2")
	NEREID_CUDA_SYM(dtoh, "cuMemcpyDtoH_v2")
	NEREID_CUDA_SYM(htod, "cuMemcpyHtoD_v2")
	NEREID_CUDA_SYM(ctx_sync, "cuCtxSynchronize")
#undef NEREID_CUDA_SYM
	*(void **)(&d->error_name) = dlsym(lib, "cuGetErrorName");
	int rc = d->init(0);
	if (rc != 0) {
		*why = "cuInit";
		free(d);
		return rc;
	}
	rc = d->device_get_count(count);
	if (rc != 0) {
		*why = "cuDeviceGetCount";
		free(d);
		return rc;
	}
	*out = d;
	return 0;
}

static const char *nereid_cuda_error_name(nereid_cuda *d, int rc) {
	const char *name = NULL;
	if (d == NULL || d->error_name == NULL || d->error_name(rc, &name) != 0) {
		return NULL;
	}
	return name;
}

// Each operation below is one C call that pushes the device's primary
// context, makes its driver calls and pops the context again: a cgo call
// runs on one OS thread from start to end, so the context is current on
// the thread that makes the calls, and no other goroutine's calls run on
// that thread in between. On failure *call names the entry point.

// nereid_cuda_open retains the primary context of device ordinal, opens
// the IPC handle in it and measures the allocation from the mapped
// pointer to its end. On failure nothing stays open or retained.
static int nereid_cuda_open(nereid_cuda *d, const void *handle, int ordinal,
		void **ctx, int *dev, nereid_cu_deviceptr *ptr, size_t *avail, const char **call) {
	int rc = d->device_get(dev, ordinal);
	if (rc != 0) {
		*call = "cuDeviceGet";
		return rc;
	}
	rc = d->primary_ctx_retain(ctx, *dev);
	if (rc != 0) {
		*call = "cuDevicePrimaryCtxRetain";
		return rc;
	}
	rc = d->ctx_push(*ctx);
	if (rc != 0) {
		*call = "cuCtxPushCurrent_v2";
		d->primary_ctx_release(*dev);
		return rc;
	}
	nereid_cu_ipc_mem_handle h;
	memcpy(h.reserved, handle, sizeof h.reserved);
	// 1 is CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS, as Triton opens handles.
	rc = d->ipc_open(ptr, h, 1);
	if (rc != 0) {
		*call = "cuIpcOpenMemHandle_v2";
	} else {
		nereid_cu_deviceptr base = 0;
		size_t size = 0;
		rc = d->address_range(&base, &size, *ptr);
		if (rc != 0) {
			*call = "cuMemGetAddressRange_v2";
		} else if (*ptr < base || *ptr - base > size) {
			*avail = 0;
		} else {
			*avail = size - (size_t)(*ptr - base);
		}
		if (rc != 0) {
			d->ipc_close(*ptr);
		}
	}
	void *popped = NULL;
	int prc = d->ctx_pop(&popped);
	if (rc == 0 && prc != 0) {
		*call = "cuCtxPopCurrent_v2";
		rc = prc;
		d->ipc_close(*ptr); // the context is still current
	}
	if (rc != 0) {
		d->primary_ctx_release(*dev);
	}
	return rc;
}

// nereid_cuda_copy copies n bytes between host memory and the device
// pointer dptr: to the device when to_device, else from it. Both are
// complete on return: a copy from pageable memory to the device may return
// once the bytes are staged, before they reach the device, so that one is
// followed by cuCtxSynchronize (the client reads the output region as soon
// as the response arrives).
static int nereid_cuda_copy(nereid_cuda *d, void *ctx, nereid_cu_deviceptr dptr,
		void *host, size_t n, int to_device, const char **call) {
	int rc = d->ctx_push(ctx);
	if (rc != 0) {
		*call = "cuCtxPushCurrent_v2";
		return rc;
	}
	if (to_device) {
		rc = d->htod(dptr, host, n);
		if (rc != 0) {
			*call = "cuMemcpyHtoD_v2";
		} else if ((rc = d->ctx_sync()) != 0) {
			*call = "cuCtxSynchronize";
		}
	} else {
		rc = d->dtoh(host, dptr, n);
		if (rc != 0) {
			*call = "cuMemcpyDtoH_v2";
		}
	}
	void *popped = NULL;
	int prc = d->ctx_pop(&popped);
	if (rc == 0 && prc != 0) {
		*call = "cuCtxPopCurrent_v2";
		rc = prc;
	}
	return rc;
}

// nereid_cuda_close closes an opened IPC handle and releases the primary
// context that nereid_cuda_open retained, even when the close fails.
static int nereid_cuda_close(nereid_cuda *d, void *ctx, int dev, nereid_cu_deviceptr ptr, const char **call) {
	int rc = d->ctx_push(ctx);
	if (rc != 0) {
		*call = "cuCtxPushCurrent_v2";
	} else {
		rc = d->ipc_close(ptr);
		if (rc != 0) {
			*call = "cuIpcCloseMemHandle";
		}
		void *popped = NULL;
		int prc = d->ctx_pop(&popped);
		if (rc == 0 && prc != 0) {
			*call = "cuCtxPopCurrent_v2";
			rc = prc;
		}
	}
	int rrc = d->primary_ctx_release(dev);
	if (rc == 0 && rrc != 0) {
		*call = "cuDevicePrimaryCtxRelease_v2";
		rc = rrc;
	}
	return rc;
}
*/
import "C"

import "unsafe"

// cudaErrorNoDevice is CUresult CUDA_ERROR_NO_DEVICE.
const cudaErrorNoDevice = 100

// driver is a loaded driver library. The C struct lives in C memory for the
// life of the process.
type driver struct {
	c *C.nereid_cuda
}

// mapping is one opened IPC handle: the primary context it was opened in
// (a driver handle, not Go memory), the device, and the mapped pointer.
type mapping struct {
	d   *driver
	ctx unsafe.Pointer
	dev C.int
	ptr C.nereid_cu_deviceptr
}

func openDriver(path string) (*driver, int, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var (
		d     *C.nereid_cuda
		count C.int
		why   *C.char
	)
	rc := C.nereid_cuda_load(cpath, &d, &count, &why)
	msg := "unknown error"
	if why != nil {
		msg = C.GoString(why)
	}
	switch {
	case rc == -1:
		return nil, 0, unavailable("no CUDA driver: %s", msg)
	case rc == -2:
		return nil, 0, unavailable("no CUDA driver: %s lacks %s", path, msg)
	case rc == cudaErrorNoDevice:
		return nil, 0, unavailable("the CUDA driver found no device")
	case rc != 0:
		return nil, 0, unavailable("the CUDA driver failed to initialise: %s returned CUresult %d", msg, int(rc))
	case count <= 0:
		return nil, 0, unavailable("the CUDA driver found no device")
	}
	return &driver{c: d}, int(count), nil
}

// check is the one place where a CUresult becomes a Go error.
func (d *driver) check(rc C.int, call *C.char) error {
	if rc == 0 {
		return nil
	}
	e := &Error{Code: int(rc), Call: "the CUDA driver"}
	if call != nil {
		e.Call = C.GoString(call)
	}
	if name := C.nereid_cuda_error_name(d.c, rc); name != nil {
		e.Name = C.GoString(name)
	}
	return e
}

func (d *driver) open(handle []byte, device int) (mapping, uint64, error) {
	m := mapping{d: d}
	var (
		avail C.size_t
		call  *C.char
	)
	rc := C.nereid_cuda_open(d.c, unsafe.Pointer(unsafe.SliceData(handle)), C.int(device),
		&m.ctx, &m.dev, &m.ptr, &avail, &call)
	if err := d.check(rc, call); err != nil {
		return mapping{}, 0, err
	}
	return m, uint64(avail), nil
}

// copy copies buf to (toDevice) or from the mapping at offset off, which
// the caller has checked.
func (m *mapping) copy(buf []byte, off uint64, toDevice bool) error {
	var call *C.char
	dir := C.int(0)
	if toDevice {
		dir = 1
	}
	rc := C.nereid_cuda_copy(m.d.c, m.ctx, m.ptr+C.nereid_cu_deviceptr(off),
		unsafe.Pointer(unsafe.SliceData(buf)), C.size_t(len(buf)), dir, &call)
	return m.d.check(rc, call)
}

func (m *mapping) close() error {
	var call *C.char
	rc := C.nereid_cuda_close(m.d.c, m.ctx, m.dev, m.ptr, &call)
	return m.d.check(rc, call)
}
