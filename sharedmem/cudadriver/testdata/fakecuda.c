// fakecuda is a stand-in for libcuda.so.1 in Nereid's tests. The test
// machines have no GPU, so this library exports the driver entry points
// that package cudadriver loads and implements them over host memory. The
// real driver path is exercised only on a machine with a GPU.
//
// A "device allocation" is a POSIX shared-memory object (a file in
// /dev/shm). Its IPC handle is 64 bytes holding the object's name,
// NUL-terminated; cuIpcOpenMemHandle maps the object and returns the
// mapping's address as the device pointer, and the copies are memcpy. As
// the real driver does, opening a handle that is already open in the same
// context returns the same pointer and counts a reference;
// cuIpcCloseMemHandle unmaps at the last one. An object whose name
// contains "failcopy" maps, but every copy from or to it fails.
//
// The fake checks what the real driver needs: cuInit first, a valid device,
// a retained primary context pushed on the calling thread for every memory
// call, balanced retain/release and push/pop, pointers inside an open
// mapping. Environment:
//
//	NEREID_FAKECUDA_DEVICES  number of devices (default 2)
//	NEREID_FAKECUDA_LOG_FD   a file descriptor open for appending; each
//	                         call that changes state writes one line to it:
//	                         "open NAME", "close NAME", "retain DEV",
//	                         "release DEV", "push DEV", "pop DEV"
//
// Build: cc -shared -fPIC -pthread -o libfakecuda.so fakecuda.c
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct fake_ctx *CUcontext;
typedef struct {
	char reserved[64];
} CUipcMemHandle;

enum {
	CUDA_SUCCESS = 0,
	CUDA_ERROR_INVALID_VALUE = 1,
	CUDA_ERROR_NOT_INITIALIZED = 3,
	CUDA_ERROR_INVALID_DEVICE = 101,
	CUDA_ERROR_INVALID_CONTEXT = 201,
	CUDA_ERROR_INVALID_HANDLE = 400,
	CUDA_ERROR_NOT_FOUND = 500,
	CUDA_ERROR_ILLEGAL_ADDRESS = 700,
};

#define MAX_DEVICES 8
#define MAX_DEPTH 16
#define MAX_MAPPINGS 1024

struct fake_ctx {
	int dev;
};

struct fake_mapping {
	int used;
	char name[64];
	struct fake_ctx *ctx;
	unsigned char *base;
	size_t size;
	int refs;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER; // guards everything below
static int initialized;
static int device_count = 2;
static int log_fd = -1;
static struct fake_ctx ctxs[MAX_DEVICES];
static int retains[MAX_DEVICES];
static struct fake_mapping mappings[MAX_MAPPINGS];

// The context stack of the calling thread.
static __thread struct fake_ctx *stack[MAX_DEPTH];
static __thread int depth;

static void logf_locked(const char *format, ...) {
	if (log_fd < 0) {
		return;
	}
	char line[128];
	va_list ap;
	va_start(ap, format);
	int n = vsnprintf(line, sizeof line - 1, format, ap);
	va_end(ap);
	if (n < 0) {
		return;
	}
	if (n > (int)sizeof line - 2) {
		n = sizeof line - 2;
	}
	line[n++] = '\n';
	ssize_t w = write(log_fd, line, (size_t)n);
	(void)w;
}

CUresult cuInit(unsigned int flags) {
	if (flags != 0) {
		return CUDA_ERROR_INVALID_VALUE;
	}
	pthread_mutex_lock(&mu);
	if (!initialized) {
		const char *s = getenv("NEREID_FAKECUDA_DEVICES");
		if (s != NULL && *s != '\0') {
			device_count = atoi(s);
		}
		if (device_count < 0 || device_count > MAX_DEVICES) {
			device_count = MAX_DEVICES;
		}
		s = getenv("NEREID_FAKECUDA_LOG_FD");
		if (s != NULL && *s != '\0') {
			log_fd = atoi(s);
		}
		for (int i = 0; i < MAX_DEVICES; i++) {
			ctxs[i].dev = i;
		}
		initialized = 1;
	}
	pthread_mutex_unlock(&mu);
	return CUDA_SUCCESS;
}

static int ready(void) {
	pthread_mutex_lock(&mu);
	int ok = initialized;
	pthread_mutex_unlock(&mu);
	return ok;
}

CUresult cuDeviceGetCount(int *count) {
	if (!ready()) {
		return CUDA_ERROR_NOT_INITIALIZED;
	}
	if (count == NULL) {
		return CUDA_ERROR_INVALID_VALUE;
	}
	*count = device_count;
	return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice *dev, int ordinal) {
	if (!ready()) {
		return CUDA_ERROR_NOT_INITIALIZED;
	}
	if (dev == NULL) {
		return CUDA_ERROR_INVALID_VALUE;
	}
	if (ordinal < 0 || ordinal >= device_count) {
		return CUDA_ERROR_INVALID_DEVICE;
	}
	*dev = ordinal;
	return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev) {
	if (!ready()) {
		return CUDA_ERROR_NOT_INITIALIZED;
	}
	if (ctx == NULL) {
		return CUDA_ERROR_INVALID_VALUE;
	}
	if (dev < 0 || dev >= device_count) {
		return CUDA_ERROR_INVALID_DEVICE;
	}
	pthread_mutex_lock(&mu);
	retains[dev]++;
	logf_locked("retain %d", dev);
	pthread_mutex_unlock(&mu);
	*ctx = &ctxs[dev];
	return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev) {
	if (!ready()) {
		return CUDA_ERROR_NOT_INITIALIZED;
	}
	if (dev < 0 || dev >= device_count) {
		return CUDA_ERROR_INVALID_DEVICE;
	}
	CUresult rc = CUDA_SUCCESS;
	pthread_mutex_lock(&mu);
	if (retains[dev] <= 0) {
		rc = CUDA_ERROR_INVALID_CONTEXT;
	} else {
		retains[dev]--;
		logf_locked("release %d", dev);
	}
	pthread_mutex_unlock(&mu);
	return rc;
}

CUresult cuCtxPushCurrent_v2(CUcontext ctx) {
	if (!ready()) {
		return CUDA_ERROR_NOT_INITIALIZED;
	}
	if (ctx < &ctxs[0] || ctx >= &ctxs[device_count] || depth == MAX_DEPTH) {
		return CUDA_ERROR_INVALID_CONTEXT;
	}
	CUresult rc = CUDA_SUCCESS;
	pthread_mutex_lock(&mu);
	if (retains[ctx->dev] <= 0) {
		rc = CUDA_ERROR_INVALID_CONTEXT; // a released primary context
	} else {
		stack[depth++] = ctx;
		logf_locked("push %d", ctx->dev);
	}
	pthread_mutex_unlock(&mu);
	return rc;
}

CUresult cuCtxPopCurrent_v2(CUcontext *ctx) {
	if (!ready()) {
		return CUDA_ERROR_NOT_INITIALIZED;
	}
	if (depth == 0) {
		return CUDA_ERROR_INVALID_CONTEXT;
	}
	struct fake_ctx *c = stack[--depth];
	if (ctx != NULL) {
		*ctx = c;
	}
	pthread_mutex_lock(&mu);
	logf_locked("pop %d", c->dev);
	pthread_mutex_unlock(&mu);
	return CUDA_SUCCESS;
}

// current returns the context current on this thread, or NULL.
static struct fake_ctx *current(void) {
	return depth > 0 ? stack[depth - 1] : NULL;
}

CUresult cuIpcOpenMemHandle_v2(CUdeviceptr *ptr, CUipcMemHandle handle, unsigned int flags) {
	if (!ready()) {
		return CUDA_ERROR_NOT_INITIALIZED;
	}
	struct fake_ctx *ctx = current();
	if (ctx == NULL) {
		return CUDA_ERROR_INVALID_CONTEXT;
	}
	if (ptr == NULL || flags > 1 || handle.reserved[0] == '\0' || handle.reserved[sizeof handle.reserved - 1] != '\0' ||
		strchr(handle.reserved, '/') != NULL) {
		return CUDA_ERROR_INVALID_VALUE;
	}
	CUresult rc = CUDA_SUCCESS;
	pthread_mutex_lock(&mu);
	struct fake_mapping *free_slot = NULL;
	for (int i = 0; i < MAX_MAPPINGS; i++) {
		struct fake_mapping *m = &mappings[i];
		if (!m->used) {
			if (free_slot == NULL) {
				free_slot = m;
			}
			continue;
		}
		if (m->ctx == ctx && strcmp(m->name, handle.reserved) == 0) {
			m->refs++;
			*ptr = (CUdeviceptr)(uintptr_t)m->base;
			logf_locked("open %s", m->name);
			goto out;
		}
	}
	if (free_slot == NULL) {
		rc = CUDA_ERROR_INVALID_VALUE;
		goto out;
	}
	char path[128];
	snprintf(path, sizeof path, "/dev/shm/%s", handle.reserved);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		rc = CUDA_ERROR_INVALID_HANDLE;
		goto out;
	}
	struct stat st;
	if (fstat(fd, &st) != 0 || st.st_size <= 0) {
		close(fd);
		rc = CUDA_ERROR_INVALID_HANDLE;
		goto out;
	}
	void *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (base == MAP_FAILED) {
		rc = CUDA_ERROR_INVALID_HANDLE;
		goto out;
	}
	free_slot->used = 1;
	memcpy(free_slot->name, handle.reserved, sizeof free_slot->name);
	free_slot->ctx = ctx;
	free_slot->base = base;
	free_slot->size = (size_t)st.st_size;
	free_slot->refs = 1;
	*ptr = (CUdeviceptr)(uintptr_t)base;
	logf_locked("open %s", free_slot->name);
out:
	pthread_mutex_unlock(&mu);
	return rc;
}

CUresult cuIpcCloseMemHandle(CUdeviceptr ptr) {
	if (!ready()) {
		return CUDA_ERROR_NOT_INITIALIZED;
	}
	struct fake_ctx *ctx = current();
	if (ctx == NULL) {
		return CUDA_ERROR_INVALID_CONTEXT;
	}
	CUresult rc = CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	for (int i = 0; i < MAX_MAPPINGS; i++) {
		struct fake_mapping *m = &mappings[i];
		if (m->used && m->ctx == ctx && (CUdeviceptr)(uintptr_t)m->base == ptr) {
			logf_locked("close %s", m->name);
			if (--m->refs == 0) {
				munmap(m->base, m->size);
				memset(m, 0, sizeof *m);
			}
			rc = CUDA_SUCCESS;
			break;
		}
	}
	pthread_mutex_unlock(&mu);
	return rc;
}

// find returns the mapping holding [ptr, ptr+n), under mu, or NULL.
static struct fake_mapping *find_locked(CUdeviceptr ptr, size_t n) {
	for (int i = 0; i < MAX_MAPPINGS; i++) {
		struct fake_mapping *m = &mappings[i];
		CUdeviceptr base = (CUdeviceptr)(uintptr_t)m->base;
		if (m->used && ptr >= base && ptr - base <= m->size && n <= m->size - (size_t)(ptr - base)) {
			return m;
		}
	}
	return NULL;
}

CUresult cuMemGetAddressRange_v2(CUdeviceptr *pbase, size_t *psize, CUdeviceptr ptr) {
	if (!ready()) {
		return CUDA_ERROR_NOT_INITIALIZED;
	}
	if (current() == NULL) {
		return CUDA_ERROR_INVALID_CONTEXT;
	}
	CUresult rc = CUDA_ERROR_NOT_FOUND;
	pthread_mutex_lock(&mu);
	struct fake_mapping *m = find_locked(ptr, 1);
	if (m != NULL) {
		if (pbase != NULL) {
			*pbase = (CUdeviceptr)(uintptr_t)m->base;
		}
		if (psize != NULL) {
			*psize = m->size;
		}
		rc = CUDA_SUCCESS;
	}
	pthread_mutex_unlock(&mu);
	return rc;
}

// copy checks a copy of n bytes at device pointer ptr. The mapping cannot
// go away during the memcpy that follows: the caller holds it open.
static CUresult check_copy(CUdeviceptr ptr, size_t n) {
	if (!ready()) {
		return CUDA_ERROR_NOT_INITIALIZED;
	}
	if (current() == NULL) {
		return CUDA_ERROR_INVALID_CONTEXT;
	}
	CUresult rc = CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	struct fake_mapping *m = find_locked(ptr, n);
	if (m != NULL) {
		rc = strstr(m->name, "failcopy") != NULL ? CUDA_ERROR_ILLEGAL_ADDRESS : CUDA_SUCCESS;
	}
	pthread_mutex_unlock(&mu);
	return rc;
}

CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) {
	CUresult rc = check_copy(src, n);
	if (rc == CUDA_SUCCESS) {
		memcpy(dst, (const void *)(uintptr_t)src, n);
	}
	return rc;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) {
	CUresult rc = check_copy(dst, n);
	if (rc == CUDA_SUCCESS) {
		memcpy((void *)(uintptr_t)dst, src, n);
	}
	return rc;
}

// cuCtxSynchronize waits for nothing (the copies above are memcpy) but
// logs the call so that tests can see outputs are waited for.
CUresult cuCtxSynchronize(void) {
	if (!ready()) {
		return CUDA_ERROR_NOT_INITIALIZED;
	}
	struct fake_ctx *c = current();
	if (c == NULL) {
		return CUDA_ERROR_INVALID_CONTEXT;
	}
	pthread_mutex_lock(&mu);
	logf_locked("sync %d", c->dev);
	pthread_mutex_unlock(&mu);
	return CUDA_SUCCESS;
}

CUresult cuGetErrorName(CUresult rc, const char **name) {
	if (name == NULL) {
		return CUDA_ERROR_INVALID_VALUE;
	}
	switch (rc) {
	case CUDA_SUCCESS: *name = "CUDA_SUCCESS"; break;
	case CUDA_ERROR_INVALID_VALUE: *name = "CUDA_ERROR_INVALID_VALUE"; break;
	case CUDA_ERROR_NOT_INITIALIZED: *name = "CUDA_ERROR_NOT_INITIALIZED"; break;
	case CUDA_ERROR_INVALID_DEVICE: *name = "CUDA_ERROR_INVALID_DEVICE"; break;
	case CUDA_ERROR_INVALID_CONTEXT: *name = "CUDA_ERROR_INVALID_CONTEXT"; break;
	case CUDA_ERROR_INVALID_HANDLE: *name = "CUDA_ERROR_INVALID_HANDLE"; break;
	case CUDA_ERROR_NOT_FOUND: *name = "CUDA_ERROR_NOT_FOUND"; break;
	case CUDA_ERROR_ILLEGAL_ADDRESS: *name = "CUDA_ERROR_ILLEGAL_ADDRESS"; break;
	default: *name = NULL; return CUDA_ERROR_INVALID_VALUE;
	}
	return CUDA_SUCCESS;
}
