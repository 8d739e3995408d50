//go:build cgo

package onnxruntime

// Nereid's binding to ONNX Runtime's C API. Every C call of the backend is
// in this file, and every OrtStatus becomes a Go error in statusErr; doc.go
// says why the backend has its own binding.
//
// The C API is a table of function pointers (OrtApi) that ONNX Runtime only
// ever appends to, so a function's index in it is fixed for good. The
// indices below are those of ONNX Runtime's onnxruntime_c_api.h at
// ORT_API_VERSION 24; GetApi(24) returns that table from any library of
// version 1.24 or later. The C side calls them through NRD_FN and does no
// more than marshal arguments (nrd_string_tensor also splits the
// protocol's BYTES form, bounds-checked): no C function here aborts or
// throws, a failure is always an OrtStatus (ONNX Runtime's C API catches
// its own C++ exceptions and returns them as one).

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct OrtStatus OrtStatus;
typedef struct OrtEnv OrtEnv;
typedef struct OrtValue OrtValue;
typedef struct OrtSession OrtSession;
typedef struct OrtSessionOptions OrtSessionOptions;
typedef struct OrtRunOptions OrtRunOptions;
typedef struct OrtMemoryInfo OrtMemoryInfo;
typedef struct OrtAllocator OrtAllocator;
typedef struct OrtTypeInfo OrtTypeInfo;
typedef struct OrtTensorTypeAndShapeInfo OrtTensorTypeAndShapeInfo;
typedef struct OrtCUDAProviderOptionsV2 OrtCUDAProviderOptionsV2;

#define NRD_ORT_API_VERSION 24

enum {
	NRD_CreateStatus = 0,
	NRD_GetErrorCode = 1,
	NRD_GetErrorMessage = 2,
	NRD_CreateEnv = 3,
	NRD_CreateSession = 7,
	NRD_Run = 9,
	NRD_CreateSessionOptions = 10,
	NRD_SetSessionExecutionMode = 13,
	NRD_EnableMemPattern = 16,
	NRD_DisableMemPattern = 17,
	NRD_EnableCpuMemArena = 18,
	NRD_DisableCpuMemArena = 19,
	NRD_SetSessionGraphOptimizationLevel = 23,
	NRD_SetIntraOpNumThreads = 24,
	NRD_SetInterOpNumThreads = 25,
	NRD_SessionGetInputCount = 30,
	NRD_SessionGetOutputCount = 31,
	NRD_SessionGetInputTypeInfo = 33,
	NRD_SessionGetOutputTypeInfo = 34,
	NRD_SessionGetInputName = 36,
	NRD_SessionGetOutputName = 37,
	NRD_CreateRunOptions = 39,
	NRD_RunOptionsSetTerminate = 46,
	NRD_RunOptionsUnsetTerminate = 47,
	NRD_CreateTensorAsOrtValue = 48,
	NRD_CreateTensorWithDataAsOrtValue = 49,
	NRD_GetTensorMutableData = 51,
	NRD_GetStringTensorDataLength = 53,
	NRD_GetStringTensorContent = 54,
	NRD_CastTypeInfoToTensorInfo = 55,
	NRD_GetOnnxTypeFromTypeInfo = 56,
	NRD_GetTensorElementType = 60,
	NRD_GetDimensionsCount = 61,
	NRD_GetDimensions = 62,
	NRD_GetSymbolicDimensions = 63,
	NRD_GetTensorTypeAndShape = 65,
	NRD_GetValueType = 67,
	NRD_CreateCpuMemoryInfo = 69,
	NRD_AllocatorFree = 76,
	NRD_GetAllocatorWithDefaultOptions = 78,
	NRD_ReleaseStatus = 93,
	NRD_ReleaseValue = 96,
	NRD_ReleaseRunOptions = 97,
	NRD_ReleaseSession = 95,
	NRD_ReleaseTypeInfo = 98,
	NRD_ReleaseTensorTypeAndShapeInfo = 99,
	NRD_ReleaseSessionOptions = 100,
	NRD_AddSessionConfigEntry = 130,
	NRD_AddRunConfigEntry = 165,
	NRD_SessionOptionsAppendExecutionProvider_CUDA_V2 = 204,
	NRD_CreateCUDAProviderOptions = 205,
	NRD_UpdateCUDAProviderOptions = 206,
	NRD_ReleaseCUDAProviderOptions = 208,
	NRD_GetResizedStringTensorElementBuffer = 252,
};

typedef struct {
	const void *(*GetApi)(uint32_t version);
	const char *(*GetVersionString)(void);
} nrd_api_base;

// The library's API table, environment, CPU memory info and default
// allocator: set once by nrd_init, for the life of the process.
static void *const *nrd_api;
static OrtEnv *nrd_env;
static OrtMemoryInfo *nrd_cpu;
static OrtAllocator *nrd_alloc;
static const char *nrd_version;

// nrd_zero backs tensors with no elements: ONNX Runtime wants a non-NULL
// pointer even when it reads nothing.
static int64_t nrd_zero[2];

#define NRD_FN(type, idx) ((type)(nrd_api[idx]))

typedef OrtStatus *(*nrd_create_status_fn)(int, const char *);
typedef int (*nrd_error_code_fn)(const OrtStatus *);
typedef const char *(*nrd_error_message_fn)(const OrtStatus *);
typedef void (*nrd_release_fn)(void *);

static OrtStatus *nrd_error(const char *msg) {
	return NRD_FN(nrd_create_status_fn, NRD_CreateStatus)(2, msg); // ORT_INVALID_ARGUMENT
}

static int nrd_status_code(OrtStatus *st) { return NRD_FN(nrd_error_code_fn, NRD_GetErrorCode)(st); }
static const char *nrd_status_message(OrtStatus *st) { return NRD_FN(nrd_error_message_fn, NRD_GetErrorMessage)(st); }
static void nrd_release_status(OrtStatus *st) { NRD_FN(nrd_release_fn, NRD_ReleaseStatus)(st); }
static void nrd_release_value(OrtValue *v) { if (v) NRD_FN(nrd_release_fn, NRD_ReleaseValue)(v); }
static void nrd_release_run_options(OrtRunOptions *o) { if (o) NRD_FN(nrd_release_fn, NRD_ReleaseRunOptions)(o); }
static void nrd_release_session(OrtSession *s) { if (s) NRD_FN(nrd_release_fn, NRD_ReleaseSession)(s); }
static void nrd_release_session_options(OrtSessionOptions *o) { if (o) NRD_FN(nrd_release_fn, NRD_ReleaseSessionOptions)(o); }
static const char *nrd_version_string(void) { return nrd_version; }

// nrd_init loads the library at path and makes the process's environment.
// A failure before the API table is found is a static message in *msg;
// after, an OrtStatus. ONNX Runtime then stays loaded for the life of the
// process.
static OrtStatus *nrd_init(const char *path, int log_level, const char **msg) {
	*msg = NULL;
	if (nrd_api) return NULL;
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) { *msg = dlerror(); return NULL; }
	const nrd_api_base *(*get_base)(void) = (const nrd_api_base *(*)(void))dlsym(h, "OrtGetApiBase");
	if (!get_base) { *msg = "the library has no OrtGetApiBase"; dlclose(h); return NULL; }
	const nrd_api_base *base = get_base();
	const void *api = base->GetApi(NRD_ORT_API_VERSION);
	if (!api) { *msg = "the library does not provide ONNX Runtime C API version 24"; dlclose(h); return NULL; }
	void *const *table = (void *const *)api;
	typedef OrtStatus *(*env_fn)(int, const char *, OrtEnv **);
	typedef OrtStatus *(*cpu_fn)(int, int, OrtMemoryInfo **);
	typedef OrtStatus *(*alloc_fn)(OrtAllocator **);
	OrtEnv *env = NULL;
	OrtMemoryInfo *cpu = NULL;
	OrtAllocator *alloc = NULL;
	OrtStatus *st = ((env_fn)table[NRD_CreateEnv])(log_level, "nereid", &env);
	if (!st) st = ((cpu_fn)table[NRD_CreateCpuMemoryInfo])(1, 0, &cpu); // arena allocator, default memory
	if (!st) st = ((alloc_fn)table[NRD_GetAllocatorWithDefaultOptions])(&alloc);
	if (st) {
		// The status is read and released through the table by the caller,
		// which needs nrd_api for it: the library stays loaded.
		nrd_api = table;
		return st;
	}
	nrd_api = table;
	nrd_env = env;
	nrd_cpu = cpu;
	nrd_alloc = alloc;
	nrd_version = base->GetVersionString();
	return NULL;
}

// nrd_ready says whether nrd_init succeeded.
static int nrd_ready(void) { return nrd_env != NULL; }

// Session options.

static OrtStatus *nrd_session_options(OrtSessionOptions **out) {
	typedef OrtStatus *(*fn)(OrtSessionOptions **);
	return NRD_FN(fn, NRD_CreateSessionOptions)(out);
}

// nrd_session_int sets one integer session option; which is an index of
// the table.
static OrtStatus *nrd_session_int(OrtSessionOptions *o, int which, int v) {
	typedef OrtStatus *(*fn)(OrtSessionOptions *, int);
	return NRD_FN(fn, which)(o, v);
}

// nrd_session_flag calls a no-argument session option setter (EnableMemPattern...).
static OrtStatus *nrd_session_flag(OrtSessionOptions *o, int which) {
	typedef OrtStatus *(*fn)(OrtSessionOptions *);
	return NRD_FN(fn, which)(o);
}

static OrtStatus *nrd_session_config(OrtSessionOptions *o, const char *key, const char *value) {
	typedef OrtStatus *(*fn)(OrtSessionOptions *, const char *, const char *);
	return NRD_FN(fn, NRD_AddSessionConfigEntry)(o, key, value);
}

// nrd_append_cuda adds the CUDA execution provider on one device.
static OrtStatus *nrd_append_cuda(OrtSessionOptions *o, const char *device) {
	typedef OrtStatus *(*create_fn)(OrtCUDAProviderOptionsV2 **);
	typedef OrtStatus *(*update_fn)(OrtCUDAProviderOptionsV2 *, const char *const *, const char *const *, size_t);
	typedef OrtStatus *(*append_fn)(OrtSessionOptions *, const OrtCUDAProviderOptionsV2 *);
	OrtCUDAProviderOptionsV2 *co = NULL;
	OrtStatus *st = NRD_FN(create_fn, NRD_CreateCUDAProviderOptions)(&co);
	if (st) return st;
	const char *keys[1] = {"device_id"};
	const char *values[1] = {device};
	st = NRD_FN(update_fn, NRD_UpdateCUDAProviderOptions)(co, keys, values, 1);
	if (!st) st = NRD_FN(append_fn, NRD_SessionOptionsAppendExecutionProvider_CUDA_V2)(o, co);
	NRD_FN(nrd_release_fn, NRD_ReleaseCUDAProviderOptions)(co);
	return st;
}

static OrtStatus *nrd_create_session(const char *path, const OrtSessionOptions *o, OrtSession **out) {
	typedef OrtStatus *(*fn)(const OrtEnv *, const char *, const OrtSessionOptions *, OrtSession **);
	return NRD_FN(fn, NRD_CreateSession)(nrd_env, path, o, out);
}

static OrtStatus *nrd_io_count(OrtSession *s, size_t *in, size_t *out) {
	typedef OrtStatus *(*count_fn)(const OrtSession *, size_t *);
	OrtStatus *st = NRD_FN(count_fn, NRD_SessionGetInputCount)(s, in);
	if (st) return st;
	return NRD_FN(count_fn, NRD_SessionGetOutputCount)(s, out);
}

// nrd_io_info describes input (or output) idx of a session: its name, in
// memory of the default allocator that nrd_free_name frees, its ONNXType,
// and for a tensor its element type and shape (at most cap dimensions are
// written; *rank is the true rank).
static OrtStatus *nrd_io_info(OrtSession *s, int output, size_t idx, char **name, int *onnx_type, int *elem,
                              int64_t *dims, size_t cap, size_t *rank) {
	typedef OrtStatus *(*name_fn)(const OrtSession *, size_t, OrtAllocator *, char **);
	typedef OrtStatus *(*info_fn)(const OrtSession *, size_t, OrtTypeInfo **);
	typedef OrtStatus *(*kind_fn)(const OrtTypeInfo *, int *);
	typedef OrtStatus *(*cast_fn)(const OrtTypeInfo *, const OrtTensorTypeAndShapeInfo **);
	typedef OrtStatus *(*et_fn)(const OrtTensorTypeAndShapeInfo *, int *);
	typedef OrtStatus *(*dc_fn)(const OrtTensorTypeAndShapeInfo *, size_t *);
	typedef OrtStatus *(*dv_fn)(const OrtTensorTypeAndShapeInfo *, int64_t *, size_t);
	*name = NULL;
	*elem = 0;
	*rank = 0;
	OrtStatus *st = NRD_FN(name_fn, output ? NRD_SessionGetOutputName : NRD_SessionGetInputName)(s, idx, nrd_alloc, name);
	if (st) return st;
	OrtTypeInfo *ti = NULL;
	st = NRD_FN(info_fn, output ? NRD_SessionGetOutputTypeInfo : NRD_SessionGetInputTypeInfo)(s, idx, &ti);
	if (!st) st = NRD_FN(kind_fn, NRD_GetOnnxTypeFromTypeInfo)(ti, onnx_type);
	if (!st && *onnx_type == 1) { // ONNX_TYPE_TENSOR
		const OrtTensorTypeAndShapeInfo *tsi = NULL;
		st = NRD_FN(cast_fn, NRD_CastTypeInfoToTensorInfo)(ti, &tsi);
		if (!st && !tsi) st = nrd_error("a tensor without tensor type information");
		if (!st) st = NRD_FN(et_fn, NRD_GetTensorElementType)(tsi, elem);
		if (!st) st = NRD_FN(dc_fn, NRD_GetDimensionsCount)(tsi, rank);
		if (!st && *rank > 0 && *rank <= cap) st = NRD_FN(dv_fn, NRD_GetDimensions)(tsi, dims, *rank);
	}
	if (ti) NRD_FN(nrd_release_fn, NRD_ReleaseTypeInfo)(ti);
	return st;
}

// nrd_io_symbols writes the dimension names (dim_param) of input (or
// output) idx, each followed by a NUL ("" for a dimension without one), into
// buf; *need is the bytes all of them take, which may exceed cap (then
// nothing past cap is written). A non-tensor writes nothing.
static OrtStatus *nrd_io_symbols(OrtSession *s, int output, size_t idx, char *buf, size_t cap, size_t *need) {
	typedef OrtStatus *(*info_fn)(const OrtSession *, size_t, OrtTypeInfo **);
	typedef OrtStatus *(*kind_fn)(const OrtTypeInfo *, int *);
	typedef OrtStatus *(*cast_fn)(const OrtTypeInfo *, const OrtTensorTypeAndShapeInfo **);
	typedef OrtStatus *(*dc_fn)(const OrtTensorTypeAndShapeInfo *, size_t *);
	typedef OrtStatus *(*sym_fn)(const OrtTensorTypeAndShapeInfo *, const char **, size_t);
	*need = 0;
	OrtTypeInfo *ti = NULL;
	OrtStatus *st = NRD_FN(info_fn, output ? NRD_SessionGetOutputTypeInfo : NRD_SessionGetInputTypeInfo)(s, idx, &ti);
	int kind = 0;
	if (!st) st = NRD_FN(kind_fn, NRD_GetOnnxTypeFromTypeInfo)(ti, &kind);
	const OrtTensorTypeAndShapeInfo *tsi = NULL;
	if (!st && kind == 1) st = NRD_FN(cast_fn, NRD_CastTypeInfoToTensorInfo)(ti, &tsi);
	size_t rank = 0;
	if (!st && tsi) st = NRD_FN(dc_fn, NRD_GetDimensionsCount)(tsi, &rank);
	const char **names = NULL;
	if (!st && rank > 0) {
		names = calloc(rank, sizeof *names);
		if (!names) st = nrd_error("out of memory reading dimension names");
	}
	if (!st && names) st = NRD_FN(sym_fn, NRD_GetSymbolicDimensions)(tsi, names, rank);
	for (size_t j = 0; !st && j < rank; j++) {
		const char *n = names[j] ? names[j] : "";
		size_t len = strlen(n) + 1;
		if (*need + len <= cap) memcpy(buf + *need, n, len);
		*need += len;
	}
	free(names);
	if (ti) NRD_FN(nrd_release_fn, NRD_ReleaseTypeInfo)(ti);
	return st;
}

static void nrd_free_name(char *name) {
	typedef OrtStatus *(*fn)(OrtAllocator *, void *);
	if (!name) return;
	OrtStatus *st = NRD_FN(fn, NRD_AllocatorFree)(nrd_alloc, name);
	if (st) nrd_release_status(st);
}

// Run options.

static OrtStatus *nrd_run_options(OrtRunOptions **out) {
	typedef OrtStatus *(*fn)(OrtRunOptions **);
	return NRD_FN(fn, NRD_CreateRunOptions)(out);
}

static OrtStatus *nrd_run_config(OrtRunOptions *o, const char *key, const char *value) {
	typedef OrtStatus *(*fn)(OrtRunOptions *, const char *, const char *);
	return NRD_FN(fn, NRD_AddRunConfigEntry)(o, key, value);
}

static OrtStatus *nrd_terminate(OrtRunOptions *o, int on) {
	typedef OrtStatus *(*fn)(OrtRunOptions *);
	return NRD_FN(fn, on ? NRD_RunOptionsSetTerminate : NRD_RunOptionsUnsetTerminate)(o);
}

// Values.

// nrd_tensor wraps caller-owned memory as a tensor value.
static OrtStatus *nrd_tensor(void *data, size_t len, const int64_t *shape, size_t rank, int type, OrtValue **out) {
	typedef OrtStatus *(*fn)(const OrtMemoryInfo *, void *, size_t, const int64_t *, size_t, int, OrtValue **);
	if (!data) data = nrd_zero;
	if (!shape) shape = nrd_zero;
	return NRD_FN(fn, NRD_CreateTensorWithDataAsOrtValue)(nrd_cpu, data, len, shape, rank, type, out);
}

// nrd_string_tensor makes a string tensor of count elements from the
// protocol's BYTES form: per element a 4-byte little-endian length and the
// bytes. Elements may hold any byte, NUL included.
static OrtStatus *nrd_string_tensor(const int64_t *shape, size_t rank, const uint8_t *buf, size_t len,
                                    size_t count, OrtValue **out) {
	typedef OrtStatus *(*create_fn)(OrtAllocator *, const int64_t *, size_t, int, OrtValue **);
	typedef OrtStatus *(*resize_fn)(OrtValue *, size_t, size_t, char **);
	OrtValue *v = NULL;
	if (!shape) shape = nrd_zero;
	OrtStatus *st = NRD_FN(create_fn, NRD_CreateTensorAsOrtValue)(nrd_alloc, shape, rank, 8, &v);
	if (st) return st;
	size_t off = 0;
	for (size_t i = 0; i < count; i++) {
		if (len - off < 4) { st = nrd_error("BYTES data ends inside a length prefix"); break; }
		uint32_t n = (uint32_t)buf[off] | (uint32_t)buf[off + 1] << 8 | (uint32_t)buf[off + 2] << 16 |
		             (uint32_t)buf[off + 3] << 24;
		off += 4;
		if (n > len - off) { st = nrd_error("BYTES element runs past the end of the data"); break; }
		char *dst = NULL;
		st = NRD_FN(resize_fn, NRD_GetResizedStringTensorElementBuffer)(v, i, n, &dst);
		if (st) break;
		if (n) memcpy(dst, buf + off, n);
		off += n;
	}
	if (!st && off != len) st = nrd_error("BYTES data holds more elements than the shape");
	if (st) { nrd_release_value(v); return st; }
	*out = v;
	return NULL;
}

// nrd_value_info reports a value's element type and shape. *rank is the
// true rank; at most cap dimensions are written.
static OrtStatus *nrd_value_info(OrtValue *v, int *type, int64_t *dims, size_t cap, size_t *rank) {
	typedef OrtStatus *(*vt_fn)(const OrtValue *, int *);
	typedef OrtStatus *(*ts_fn)(const OrtValue *, OrtTensorTypeAndShapeInfo **);
	typedef OrtStatus *(*et_fn)(const OrtTensorTypeAndShapeInfo *, int *);
	typedef OrtStatus *(*dc_fn)(const OrtTensorTypeAndShapeInfo *, size_t *);
	typedef OrtStatus *(*dv_fn)(const OrtTensorTypeAndShapeInfo *, int64_t *, size_t);
	int vt = 0;
	OrtStatus *st = NRD_FN(vt_fn, NRD_GetValueType)(v, &vt);
	if (st) return st;
	if (vt != 1) return nrd_error("the output is not a tensor (sequences, maps and optionals are not supported)");
	OrtTensorTypeAndShapeInfo *info = NULL;
	st = NRD_FN(ts_fn, NRD_GetTensorTypeAndShape)(v, &info);
	if (st) return st;
	st = NRD_FN(et_fn, NRD_GetTensorElementType)(info, type);
	if (!st) st = NRD_FN(dc_fn, NRD_GetDimensionsCount)(info, rank);
	if (!st && *rank <= cap && *rank > 0) st = NRD_FN(dv_fn, NRD_GetDimensions)(info, dims, *rank);
	NRD_FN(nrd_release_fn, NRD_ReleaseTensorTypeAndShapeInfo)(info);
	return st;
}

static OrtStatus *nrd_tensor_data(OrtValue *v, void **data) {
	typedef OrtStatus *(*fn)(OrtValue *, void **);
	return NRD_FN(fn, NRD_GetTensorMutableData)(v, data);
}

static OrtStatus *nrd_string_length(OrtValue *v, size_t *len) {
	typedef OrtStatus *(*fn)(const OrtValue *, size_t *);
	return NRD_FN(fn, NRD_GetStringTensorDataLength)(v, len);
}

static OrtStatus *nrd_string_content(OrtValue *v, void *buf, size_t len, size_t *offsets, size_t count) {
	typedef OrtStatus *(*fn)(const OrtValue *, void *, size_t, size_t *, size_t);
	return NRD_FN(fn, NRD_GetStringTensorContent)(v, buf, len, offsets, count);
}

// Execution: one crossing per run.
//
// An nrd_exec lives in C memory for the life of an instance and describes
// the next run: the input and output names (C strings the model owns) and
// one nrd_slot per tensor. Go fills it, then nrd_exec_run creates the
// input values and the values of preallocated outputs, runs the session,
// releases them, and describes each output ONNX Runtime allocated (type,
// shape and data), which Go reads from the slot and releases with
// nrd_exec_release. Data pointers to Go memory are passed as arguments of
// the call (up to NRD_ARGS of them): C holds them only during the call, as
// cgo requires, and Go need not pin them.

#define NRD_ARGS 8
#define NRD_RANK 8

typedef struct {
	void *data;     // the tensor's bytes (pinned Go memory, or C memory), or NULL
	int arg;        // >= 0: the data is argument arg of nrd_exec_run instead
	size_t len;     // bytes
	int type;       // ONNX element type
	size_t rank;
	int64_t dims[NRD_RANK]; // the shape: given for inputs and preallocated outputs, read back for the others
	int64_t *big;   // the shape instead of dims when rank > NRD_RANK (C memory of big_cap dimensions)
	size_t big_cap;
	OrtValue *value; // an input built before the run (a string tensor), or an output ONNX Runtime allocated
	int alloc;      // an output that ONNX Runtime allocates
	void *out;      // an allocated output's data, after the run
} nrd_slot;

typedef struct {
	OrtSession *session;
	OrtRunOptions *ro;
	size_t nin, nout;
	size_t max_in, max_out;
	const char **in_names;
	const char **out_names;
	OrtValue **in_values;
	OrtValue **out_values;
	nrd_slot *in;
	nrd_slot *out;
	// The last run's phases, in nanoseconds: making the values before Run
	// (compute input), and describing the outputs and releasing the
	// values after it (compute output).
	int64_t in_ns, out_ns;
	int64_t run_ns; // Run itself; 0 when it did not start
} nrd_exec;

static int64_t nrd_now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static nrd_exec *nrd_exec_new(OrtSession *s, size_t max_in, size_t max_out) {
	nrd_exec *e = calloc(1, sizeof(nrd_exec));
	if (!e) return NULL;
	e->session = s;
	size_t ni = max_in ? max_in : 1, no = max_out ? max_out : 1;
	e->max_in = ni;
	e->max_out = no;
	e->in_names = calloc(ni, sizeof(char *));
	e->out_names = calloc(no, sizeof(char *));
	e->in_values = calloc(ni, sizeof(OrtValue *));
	e->out_values = calloc(no, sizeof(OrtValue *));
	e->in = calloc(ni, sizeof(nrd_slot));
	e->out = calloc(no, sizeof(nrd_slot));
	if (!e->in_names || !e->out_names || !e->in_values || !e->out_values || !e->in || !e->out) {
		free(e->in_names); free(e->out_names); free(e->in_values); free(e->out_values); free(e->in); free(e->out);
		free(e);
		return NULL;
	}
	return e;
}

// nrd_exec_release releases the values a run left: inputs built before it
// that it never reached, and the outputs ONNX Runtime allocated.
static void nrd_exec_release(nrd_exec *e) {
	for (size_t k = 0; k < e->nin; k++) {
		nrd_release_value(e->in[k].value);
		e->in[k].value = NULL;
		e->in[k].data = NULL;
	}
	for (size_t k = 0; k < e->nout; k++) {
		nrd_release_value(e->out[k].value);
		e->out[k].value = NULL;
		e->out[k].data = NULL;
		e->out[k].out = NULL;
	}
}

static void nrd_exec_free(nrd_exec *e) {
	if (!e) return;
	nrd_exec_release(e);
	for (size_t k = 0; k < e->max_in; k++) free(e->in[k].big);
	for (size_t k = 0; k < e->max_out; k++) free(e->out[k].big);
	free(e->in_names); free(e->out_names); free(e->in_values); free(e->out_values); free(e->in); free(e->out);
	free(e);
}

static OrtStatus *nrd_slot_value(nrd_slot *s, void *const *args, OrtValue **out) {
	void *data = s->arg >= 0 ? args[s->arg] : s->data;
	return nrd_tensor(data, s->len, s->rank > NRD_RANK ? s->big : s->dims, s->rank, s->type, out);
}

// nrd_slot_big makes room in s for a shape of rank dimensions; NULL when
// out of memory.
static int64_t *nrd_slot_big(nrd_slot *s, size_t rank) {
	if (s->big_cap < rank) {
		int64_t *p = realloc(s->big, rank * sizeof(int64_t));
		if (!p) return NULL;
		s->big = p;
		s->big_cap = rank;
	}
	return s->big;
}

// nrd_exec_run runs the session as e describes. On success, each output
// slot with alloc set holds the value ONNX Runtime made, its type, shape
// (rank > NRD_RANK: only the rank) and data. The values it made for the
// inputs and the preallocated outputs are released before it returns, and
// on failure the allocated outputs too; inputs built before the call (a
// slot's value) stay, for another attempt, until nrd_exec_release.
static OrtStatus *nrd_exec_run(nrd_exec *e, void *a0, void *a1, void *a2, void *a3, void *a4, void *a5, void *a6,
                               void *a7) {
	typedef OrtStatus *(*run_fn)(OrtSession *, const OrtRunOptions *, const char *const *, const OrtValue *const *,
	                             size_t, const char *const *, size_t, OrtValue **);
	void *const args[NRD_ARGS] = {a0, a1, a2, a3, a4, a5, a6, a7};
	OrtStatus *st = NULL;
	size_t k;
	int64_t t0 = nrd_now(), t1 = t0, t2 = t0;
	for (k = 0; k < e->nout; k++) e->out_values[k] = NULL;
	for (k = 0; k < e->nin; k++) e->in_values[k] = NULL;
	for (k = 0; k < e->nin && !st; k++) {
		nrd_slot *s = &e->in[k];
		if (s->value) e->in_values[k] = s->value; // built before, kept until nrd_exec_release
		else st = nrd_slot_value(s, args, &e->in_values[k]);
	}
	size_t built_in = k;
	for (k = 0; k < e->nout && !st; k++) {
		nrd_slot *s = &e->out[k];
		if (!s->alloc) st = nrd_slot_value(s, args, &e->out_values[k]);
	}
	if (!st) {
		t1 = nrd_now();
		st = NRD_FN(run_fn, NRD_Run)(e->session, e->ro, e->in_names, (const OrtValue *const *)e->in_values, e->nin,
		                             e->out_names, e->nout, e->out_values);
		t2 = nrd_now();
	} else {
		t1 = t2 = nrd_now(); // no Run: run_ns 0
	}
	for (k = 0; k < built_in; k++) {
		if (!e->in[k].value) nrd_release_value(e->in_values[k]);
		e->in_values[k] = NULL;
	}
	for (k = 0; k < e->nout; k++) {
		nrd_slot *s = &e->out[k];
		s->data = NULL;
		if (st || !s->alloc) {
			nrd_release_value(e->out_values[k]);
			e->out_values[k] = NULL;
			continue;
		}
		s->value = e->out_values[k];
		e->out_values[k] = NULL;
		size_t cap = NRD_RANK;
		st = nrd_value_info(s->value, &s->type, s->dims, cap, &s->rank);
		if (!st && s->type != 8) st = nrd_tensor_data(s->value, &s->out);
		if (st) {
			// Release what this run allocated, this output included.
			for (size_t j = 0; j <= k; j++) {
				nrd_release_value(e->out[j].value);
				e->out[j].value = NULL;
			}
			for (size_t j = k + 1; j < e->nout; j++) {
				nrd_release_value(e->out_values[j]);
				e->out_values[j] = NULL;
			}
			break;
		}
	}
	e->in_ns = t1 - t0;
	e->run_ns = t2 - t1;
	e->out_ns = nrd_now() - t2;
	return st;
}

// The benchmarks' baseline: ONNX Runtime's Run with nothing around it.
// nrd_bare_run runs values made once; nrd_bare_request makes the values
// over the same memory, runs and releases them, the least a server does
// per request.
typedef struct {
	OrtSession *session;
	OrtRunOptions *ro;
	size_t nin, nout;
	const char **in_names, **out_names;
	OrtValue **in, **out;
	nrd_slot *in_slots, *out_slots; // data in C memory
} nrd_bare;

static OrtStatus *nrd_bare_run(nrd_bare *b) {
	typedef OrtStatus *(*run_fn)(OrtSession *, const OrtRunOptions *, const char *const *, const OrtValue *const *,
	                             size_t, const char *const *, size_t, OrtValue **);
	return NRD_FN(run_fn, NRD_Run)(b->session, b->ro, b->in_names, (const OrtValue *const *)b->in, b->nin,
	                               b->out_names, b->nout, b->out);
}

static OrtStatus *nrd_bare_request(nrd_bare *b, OrtValue **in, OrtValue **out) {
	typedef OrtStatus *(*run_fn)(OrtSession *, const OrtRunOptions *, const char *const *, const OrtValue *const *,
	                             size_t, const char *const *, size_t, OrtValue **);
	OrtStatus *st = NULL;
	size_t k;
	for (k = 0; k < b->nin; k++) in[k] = NULL;
	for (k = 0; k < b->nout; k++) out[k] = NULL;
	for (k = 0; k < b->nin && !st; k++) st = nrd_slot_value(&b->in_slots[k], NULL, &in[k]);
	for (k = 0; k < b->nout && !st; k++) st = nrd_slot_value(&b->out_slots[k], NULL, &out[k]);
	if (!st) st = NRD_FN(run_fn, NRD_Run)(b->session, b->ro, b->in_names, (const OrtValue *const *)in, b->nin,
	                                      b->out_names, b->nout, out);
	for (k = 0; k < b->nin; k++) nrd_release_value(in[k]);
	for (k = 0; k < b->nout; k++) nrd_release_value(out[k]);
	return st;
}

static OrtStatus *nrd_value_dims(OrtValue *v, int64_t *dims, size_t cap) {
	int type = 0;
	size_t rank = 0;
	return nrd_value_info(v, &type, dims, cap, &rank);
}
*/
import "C"

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/nereid-project/nereid/inference"
)

// ORT's OrtErrorCode values that map to a status class other than internal.
const (
	ortInvalidArgument = 2
	ortNoSuchFile      = 3
	ortNoModel         = 4
	ortInvalidProtobuf = 7
	ortNotImplemented  = 9
	ortInvalidGraph    = 10
)

// ortError is an error ONNX Runtime reported through an OrtStatus.
type ortError struct {
	code int
	msg  string
}

func (e *ortError) Error() string { return e.msg }

// statusErr is the one place where an OrtStatus becomes a Go error: it
// reads the code and message and releases the status. op says what failed.
// A nil status is success.
func statusErr(op string, st *C.OrtStatus) error {
	if st == nil {
		return nil
	}
	e := &ortError{code: int(C.nrd_status_code(st)), msg: C.GoString(C.nrd_status_message(st))}
	C.nrd_release_status(st)
	code := inference.CodeInternal
	switch e.code {
	case ortInvalidArgument, ortInvalidProtobuf, ortInvalidGraph, ortNoSuchFile, ortNoModel:
		code = inference.CodeInvalidArg
	case ortNotImplemented:
		code = inference.CodeUnsupported
	}
	return inference.Errorf(code, "%s: %w", op, e)
}

// ortMessage is ONNX Runtime's own words in err, without what Nereid
// wrapped around them.
func ortMessage(err error) string {
	var oe *ortError
	if errors.As(err, &oe) {
		return oe.msg
	}
	return err.Error()
}

// ONNX Runtime's logging levels (OrtLoggingLevel).
const (
	ortLogWarning = 2
	ortLogFatal   = 4
)

// loadLibrary loads the ONNX Runtime library at path and creates the
// process's environment, once; it returns the library's version. The
// caller serialises calls.
func loadLibrary(path string, logLevel int) (string, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var msg *C.char
	st := C.nrd_init(cpath, C.int(logLevel), &msg)
	if msg != nil {
		return "", errors.New(C.GoString(msg))
	}
	if err := statusErr("creating the ONNX Runtime environment", st); err != nil {
		return "", err
	}
	if C.nrd_ready() == 0 {
		return "", errors.New("ONNX Runtime failed to initialise earlier in this process")
	}
	return C.GoString(C.nrd_version_string()), nil
}

// cName is a C copy of a tensor name, for Run.
type cName = *C.char

func newCName(s string) cName { return C.CString(s) }

func freeCName(p cName) { C.free(unsafe.Pointer(p)) }

// GraphOptimizationLevel values of the C API.
const (
	ortDisableAll     = 0
	ortEnableBasic    = 1
	ortEnableExtended = 2
	ortEnableAll      = 99
)

// sessionConfig is what a session is opened with.
type sessionConfig struct {
	intraOp, interOp int
	parallel         bool
	level            int // a GraphOptimizationLevel
	// memArena and memPattern: nil leaves ONNX Runtime's default (on).
	memArena, memPattern *bool
	// entries are session configuration entries (key, value).
	entries [][2]string
	// cuda adds the CUDA execution provider on device.
	cuda   bool
	device int32
}

// errNoCUDA marks a session that could not get the CUDA execution
// provider.
type errNoCUDA struct{ err error }

func (e *errNoCUDA) Error() string { return e.err.Error() }
func (e *errNoCUDA) Unwrap() error { return e.err }

// session is an OrtSession.
type session struct {
	h *C.OrtSession
}

// openSession opens the model at path. A failure to add the CUDA provider
// is an *errNoCUDA.
func openSession(path string, c sessionConfig) (*session, error) {
	var so *C.OrtSessionOptions
	if err := statusErr("creating session options", C.nrd_session_options(&so)); err != nil {
		return nil, err
	}
	defer C.nrd_release_session_options(so)
	setInt := func(what string, which C.int, v int) error {
		return statusErr(what, C.nrd_session_int(so, which, C.int(v)))
	}
	steps := []error{
		setInt("setting intra_op_thread_count", C.NRD_SetIntraOpNumThreads, c.intraOp),
		setInt("setting inter_op_thread_count", C.NRD_SetInterOpNumThreads, c.interOp),
		setInt("setting the graph optimization level", C.NRD_SetSessionGraphOptimizationLevel, c.level),
	}
	if c.parallel {
		steps = append(steps, setInt("setting execution_mode", C.NRD_SetSessionExecutionMode, 1))
	}
	flag := func(what string, p *bool, on, off C.int) {
		if p == nil {
			return
		}
		which := off
		if *p {
			which = on
		}
		steps = append(steps, statusErr(what, C.nrd_session_flag(so, which)))
	}
	flag("setting enable_mem_arena", c.memArena, C.NRD_EnableCpuMemArena, C.NRD_DisableCpuMemArena)
	flag("setting enable_mem_pattern", c.memPattern, C.NRD_EnableMemPattern, C.NRD_DisableMemPattern)
	for _, kv := range c.entries {
		k, v := C.CString(kv[0]), C.CString(kv[1])
		steps = append(steps, statusErr("setting "+kv[0], C.nrd_session_config(so, k, v)))
		C.free(unsafe.Pointer(k))
		C.free(unsafe.Pointer(v))
	}
	if err := errors.Join(steps...); err != nil {
		return nil, err
	}
	if c.cuda {
		dev := C.CString(strconv.Itoa(int(c.device)))
		err := statusErr("adding the CUDA execution provider", C.nrd_append_cuda(so, dev))
		C.free(unsafe.Pointer(dev))
		if err != nil {
			return nil, &errNoCUDA{err}
		}
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	s := &session{}
	if err := statusErr("creating a session", C.nrd_create_session(cpath, so, &s.h)); err != nil {
		return nil, err
	}
	return s, nil
}

// close releases the session. It is safe to call twice.
func (s *session) close() {
	if s != nil && s.h != nil {
		C.nrd_release_session(s.h)
		s.h = nil
	}
}

// counts returns the numbers of the session's inputs and outputs.
func (s *session) counts() (ins, outs int, err error) {
	var nin, nout C.size_t
	err = statusErr("reading the model's input and output counts", C.nrd_io_count(s.h, &nin, &nout))
	return int(nin), int(nout), err
}

// io describes the session's inputs and outputs in the model's order. A
// non-tensor input or output (sequence, map, optional) is an error naming
// it.
func (s *session) io() (ins, outs []tensorInfo, err error) {
	nin, nout, err := s.counts()
	if err != nil {
		return nil, nil, err
	}
	read := func(output bool, n int) ([]tensorInfo, error) {
		kind := "input"
		if output {
			kind = "output"
		}
		out := make([]tensorInfo, 0, n)
		for k := range n {
			var (
				name          *C.char
				vt, elem      C.int
				rank          C.size_t
				buf           [maxRank]int64
				outFlag       C.int
				dimsPtr       = (*C.int64_t)(unsafe.Pointer(&buf[0]))
				nameStr, what string
			)
			if output {
				outFlag = 1
			}
			st := C.nrd_io_info(s.h, outFlag, C.size_t(k), &name, &vt, &elem, dimsPtr, C.size_t(maxRank), &rank)
			if name != nil {
				nameStr = C.GoString(name)
				C.nrd_free_name(name)
			}
			if err := statusErr("reading "+kind+" "+strconv.Itoa(k)+" of the model", st); err != nil {
				return nil, err
			}
			if vt != 1 {
				switch vt {
				case 2:
					what = "sequence"
				case 3:
					what = "map"
				case 4:
					what = "opaque value"
				case 5:
					what = "sparse tensor"
				case 6:
					what = "optional"
				default:
					what = fmt.Sprintf("value of ONNX type %d", int(vt))
				}
				return nil, fmt.Errorf("%s '%s' is a %s; only tensors are supported", kind, nameStr, what)
			}
			dims := buf[:min(int(rank), maxRank)]
			if int(rank) > maxRank {
				dims = make([]int64, rank)
				st := C.nrd_io_info(s.h, outFlag, C.size_t(k), &name, &vt, &elem, (*C.int64_t)(unsafe.Pointer(&dims[0])), rank, &rank)
				C.nrd_free_name(name)
				if err := statusErr("reading "+kind+" "+strconv.Itoa(k)+" of the model", st); err != nil {
					return nil, err
				}
			}
			t := tensorInfo{name: nameStr, onnxType: int(elem), dims: make([]int64, len(dims))}
			for j, d := range dims {
				t.dims[j] = max(d, -1) // a symbolic or unknown dimension
			}
			syms, err := s.symbols(outFlag, k, len(dims))
			if err != nil {
				return nil, fmt.Errorf("reading the dimension names of %s '%s': %w", kind, nameStr, err)
			}
			t.symbols = syms
			out = append(out, t)
		}
		return out, nil
	}
	if ins, err = read(false, nin); err != nil {
		return nil, nil, err
	}
	if outs, err = read(true, nout); err != nil {
		return nil, nil, err
	}
	return ins, outs, nil
}

// symbols returns the dimension names of input (or output) k, rank of
// them, "" where a dimension has none; nil when it has none at all.
func (s *session) symbols(output C.int, k, rank int) ([]string, error) {
	buf := make([]byte, 256)
	for {
		var need C.size_t
		st := C.nrd_io_symbols(s.h, output, C.size_t(k), (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &need)
		if err := statusErr("reading dimension names", st); err != nil {
			return nil, err
		}
		if int(need) > len(buf) {
			buf = make([]byte, need)
			continue
		}
		names := strings.Split(string(buf[:need]), "\x00")
		names = names[:len(names)-1] // after the last NUL
		if len(names) != rank || !slices.ContainsFunc(names, func(n string) bool { return n != "" }) {
			return nil, nil
		}
		return names, nil
	}
}

// runOptions is a reusable OrtRunOptions whose terminate flag cancels a
// Run in progress.
type runOptions struct {
	ro         *C.OrtRunOptions
	terminated bool // the flag was set and not yet cleared
}

func newRunOptions() (*runOptions, error) {
	var ro *C.OrtRunOptions
	if err := statusErr("creating run options", C.nrd_run_options(&ro)); err != nil {
		return nil, err
	}
	return &runOptions{ro: ro}, nil
}

// newShrinkingRunOptions returns run options under which ONNX Runtime gives
// back, at the end of the run, the regions of its CPU memory arena that no
// tensor uses. Without it the arena keeps every region it ever grew to, so
// one large request would keep its intermediate and output tensors' memory
// for the life of the session.
//
// ONNX Runtime never shrinks an arena's first region, which holds the
// model's initializers unless session.use_device_allocator_for_initializers
// is set; for a model without any, that first region is the first run's
// tensors. enable_mem_arena "0" takes the arena out altogether.
func newShrinkingRunOptions(arenas string) (*runOptions, error) {
	r, err := newRunOptions()
	if err != nil {
		return nil, err
	}
	key, value := C.CString("memory.enable_memory_arena_shrinkage"), C.CString(arenas)
	defer C.free(unsafe.Pointer(key))
	defer C.free(unsafe.Pointer(value))
	if err := statusErr("setting arena shrinkage", C.nrd_run_config(r.ro, key, value)); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// terminate asks the Run using these options to stop. It is safe to call
// from another goroutine while Run is in progress.
func (r *runOptions) terminate() {
	if st := C.nrd_terminate(r.ro, 1); st != nil {
		C.nrd_release_status(st) // nothing to report: the run goes on
	}
}

// reset clears the terminate flag before the next Run.
func (r *runOptions) reset() error {
	if !r.terminated {
		return nil
	}
	r.terminated = false
	return statusErr("clearing the terminate flag", C.nrd_terminate(r.ro, 0))
}

func (r *runOptions) close() {
	C.nrd_release_run_options(r.ro)
	r.ro = nil
}

// maxRank bounds the shapes read back from ONNX Runtime without an
// allocation; a larger rank takes a second call.
const maxRank = int(C.NRD_RANK)

// execArgs is an instance's C-side description of its next run (C's
// nrd_exec): the slots of its inputs and outputs, filled by setInput,
// setOutput and setStringInput, then run.
type execArgs struct {
	e        *C.nrd_exec
	in, out  []C.nrd_slot // over the C arrays
	inNames  []*C.char
	outNames []*C.char
	args     [C.NRD_ARGS]unsafe.Pointer
	nargs    int
	inArgs   int            // args taken by the inputs
	pin      runtime.Pinner // data beyond NRD_ARGS pointers
	pinned   bool
	// held: C holds values until release (a string input, an output
	// ONNX Runtime allocated).
	held bool
}

func newExecArgs(s *session, maxIn, maxOut int) (*execArgs, error) {
	e := C.nrd_exec_new(s.h, C.size_t(maxIn), C.size_t(maxOut))
	if e == nil {
		return nil, errors.New("out of memory for the run's arguments")
	}
	x := &execArgs{e: e}
	x.in = unsafe.Slice(e.in, max(maxIn, 1))
	x.out = unsafe.Slice(e.out, max(maxOut, 1))
	x.inNames = unsafe.Slice(e.in_names, max(maxIn, 1))
	x.outNames = unsafe.Slice(e.out_names, max(maxOut, 1))
	return x, nil
}

func (x *execArgs) free() {
	if x.e != nil {
		C.nrd_exec_free(x.e)
		x.e = nil
	}
}

// begin starts describing a run of nin inputs and nout outputs. The
// inputs come first; release ends the run.
func (x *execArgs) begin(nin, nout int) error {
	if nin > len(x.in) || nout > len(x.out) || nin == 0 || nout == 0 {
		return inference.InvalidArg("a run of %d inputs and %d outputs, the model has %d and %d", nin, nout, len(x.in), len(x.out))
	}
	x.e.nin, x.e.nout = C.size_t(nin), C.size_t(nout)
	return nil
}

// data records where a slot's bytes are: an argument of the call when
// there is one left, else pinned memory.
func (x *execArgs) data(s *C.nrd_slot, data []byte) {
	s.len = C.size_t(len(data))
	s.arg = -1
	s.data = nil
	if len(data) == 0 {
		return
	}
	p := unsafe.Pointer(&data[0])
	if x.nargs < len(x.args) {
		x.args[x.nargs] = p
		s.arg = C.int(x.nargs)
		x.nargs++
		return
	}
	x.pin.Pin(p)
	x.pinned = true
	s.data = p
}

func setShape(s *C.nrd_slot, shape []int64) error {
	s.rank = C.size_t(len(shape))
	dims := s.dims[:]
	if len(shape) > maxRank {
		p := C.nrd_slot_big(s, C.size_t(len(shape)))
		if p == nil {
			return inference.Internal("out of memory for a shape of rank %d", len(shape))
		}
		dims = unsafe.Slice(p, len(shape))
	}
	for k, d := range shape {
		dims[k] = C.int64_t(d)
	}
	return nil
}

// setInput describes input k: its name, bytes (which stay unchanged until
// the run is over), shape and ONNX element type.
func (x *execArgs) setInput(k int, name cName, data []byte, shape []int64, onnxType int) error {
	s := &x.in[k]
	x.inNames[k] = name
	s.value, s.alloc, s._type = nil, 0, C.int(onnxType)
	if err := setShape(s, shape); err != nil {
		return err
	}
	x.data(s, data)
	x.inArgs = x.nargs
	return nil
}

// setStringInput describes input k as a string tensor made now from the
// protocol's BYTES form (the bytes are copied).
func (x *execArgs) setStringInput(k int, name cName, data []byte, shape []int64, count int64) error {
	s := &x.in[k]
	x.inNames[k] = name
	s.value, s.alloc, s.data, s.arg, s.len = nil, 0, nil, -1, 0
	v, err := stringTensor(data, shape, count)
	if err != nil {
		return err
	}
	s.value = v
	x.held = true
	return nil
}

// value is an OrtValue owned by Go code; releaseValue frees it.
type value = *C.OrtValue

func releaseValue(v value) { C.nrd_release_value(v) }

// stringTensor makes a string tensor of count elements from the protocol's
// BYTES form. The bytes are copied.
func stringTensor(data []byte, shape []int64, count int64) (value, error) {
	var p *C.uint8_t
	if len(data) > 0 {
		p = (*C.uint8_t)(unsafe.Pointer(&data[0]))
	}
	var sp *C.int64_t
	if len(shape) > 0 {
		sp = (*C.int64_t)(unsafe.Pointer(&shape[0]))
	}
	var v *C.OrtValue
	st := C.nrd_string_tensor(sp, C.size_t(len(shape)), p, C.size_t(len(data)), C.size_t(count), &v)
	return v, statusErr("creating a string tensor", st)
}

// setOutput describes output k: written into buf with the given shape, or
// allocated by ONNX Runtime when buf is nil.
func (x *execArgs) setOutput(k int, name cName, buf []byte, shape []int64, onnxType int) error {
	s := &x.out[k]
	x.outNames[k] = name
	s.value, s.out, s._type = nil, nil, C.int(onnxType)
	if buf == nil {
		s.alloc, s.rank, s.data, s.arg, s.len = 1, 0, nil, -1, 0
		x.held = true
		return nil
	}
	s.alloc = 0
	if err := setShape(s, shape); err != nil {
		return err
	}
	x.data(s, buf)
	return nil
}

// phases returns the compute input and output parts of the last run, and
// how long ONNX Runtime's Run took (0 when it did not start).
func (x *execArgs) phases() (in, out, run time.Duration) {
	return time.Duration(x.e.in_ns), time.Duration(x.e.out_ns), time.Duration(x.e.run_ns)
}

// release frees what C holds for the run: the inputs built before it and
// the outputs ONNX Runtime allocated. It costs a C call only when there is
// something to free.
func (x *execArgs) release() {
	if x.held {
		C.nrd_exec_release(x.e)
		x.held = false
	}
	if x.pinned {
		x.pin.Unpin()
		x.pinned = false
	}
	clear(x.args[:])
	x.nargs, x.inArgs = 0, 0
}

// outputsNext says that the inputs are set and the outputs come next;
// setting the outputs again for another attempt starts from here.
func (x *execArgs) outputsNext() { x.nargs = x.inArgs }

// run runs the session under ro as described, in one C call. The outputs
// ONNX Runtime allocated stay in their slots until release; run may be
// called again (with the outputs set again) before release.
//
// The call times its own phases: phases says how long it took to make the
// values before Run and to read and release them after it, which are the
// statistics' compute input and compute output, not inference.
func (x *execArgs) run(ro *runOptions) error {
	x.e.ro = ro.ro
	a := &x.args
	st := C.nrd_exec_run(x.e, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7])
	return statusErr("ONNX Runtime failed to run the model", st)
}

// allocated describes output k after a run in which ONNX Runtime
// allocated it: its ONNX element type and shape.
func (x *execArgs) allocated(k int) (int, []int64, error) {
	s := &x.out[k]
	rank := int(s.rank)
	dims := make([]int64, rank)
	if rank <= maxRank {
		for j := range rank {
			dims[j] = int64(s.dims[j])
		}
		return int(s._type), dims, nil
	}
	st := C.nrd_value_dims(s.value, (*C.int64_t)(unsafe.Pointer(&dims[0])), C.size_t(rank))
	return int(s._type), dims, statusErr("reading an output's shape", st)
}

// copyAllocated copies the n bytes of fixed-width output k, which ONNX
// Runtime allocated, into a new Go buffer.
func (x *execArgs) copyAllocated(k, n int) []byte {
	out := make([]byte, n)
	if p := x.out[k].out; n > 0 && p != nil {
		copy(out, unsafe.Slice((*byte)(p), n))
	}
	return out
}

// stringAllocated returns string output k's count elements in the
// protocol's BYTES form.
func (x *execArgs) stringAllocated(k, count int) ([]byte, error) {
	return stringData(x.out[k].value, count)
}

// stringData returns a string tensor's count elements in the protocol's
// BYTES form.
func stringData(v value, count int) ([]byte, error) {
	var n C.size_t
	if err := statusErr("reading a string output's length", C.nrd_string_length(v, &n)); err != nil {
		return nil, err
	}
	if count == 0 {
		return []byte{}, nil
	}
	content := C.malloc(n + 1) // +1: never a zero-length buffer
	if content == nil {
		return nil, inference.Internal("out of memory for a string output of %d bytes", int(n))
	}
	defer C.free(content)
	offsets := (*C.size_t)(C.malloc(C.size_t(count) * C.size_t(unsafe.Sizeof(C.size_t(0)))))
	if offsets == nil {
		return nil, inference.Internal("out of memory for a string output of %d elements", count)
	}
	defer C.free(unsafe.Pointer(offsets))
	st := C.nrd_string_content(v, content, n, offsets, C.size_t(count))
	if err := statusErr("reading a string output", st); err != nil {
		return nil, err
	}
	body := unsafe.Slice((*byte)(content), int(n))
	offs := unsafe.Slice(offsets, count)
	out := make([]byte, 0, 4*count+int(n))
	for i := range count {
		start, end := int(offs[i]), int(n)
		if i+1 < count {
			end = int(offs[i+1])
		}
		if start > end || end > int(n) {
			return nil, inference.Internal("ONNX Runtime returned string offsets out of order")
		}
		elem := body[start:end]
		out = binary.LittleEndian.AppendUint32(out, uint32(len(elem)))
		out = append(out, elem...)
	}
	return out, nil
}

// bareTensor is one input or preallocated output of a bareRun.
type bareTensor struct {
	name     string
	data     []byte // copied into C memory
	shape    []int64
	onnxType int
}

// bareRun is the benchmarks' baseline: a session run through the C API
// with nothing around it, its tensors in C memory.
type bareRun struct {
	b    *C.nrd_bare
	ro   *runOptions
	cmem []unsafe.Pointer
	in   []*C.OrtValue // C memory, for request
	out  []*C.OrtValue
}

func newBareRun(s *session, ins, outs []bareTensor) (r *bareRun, err error) {
	r = &bareRun{}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	if r.ro, err = newRunOptions(); err != nil {
		return nil, err
	}
	alloc := func(n int) unsafe.Pointer {
		p := C.calloc(C.size_t(max(n, 1)), 1)
		r.cmem = append(r.cmem, p)
		return p
	}
	r.b = (*C.nrd_bare)(alloc(int(unsafe.Sizeof(C.nrd_bare{}))))
	r.b.session, r.b.ro = s.h, r.ro.ro
	r.b.nin, r.b.nout = C.size_t(len(ins)), C.size_t(len(outs))
	ptrs := func(n int) unsafe.Pointer { return alloc(n * int(unsafe.Sizeof(uintptr(0)))) }
	r.b.in_names, r.b.out_names = (**C.char)(ptrs(len(ins))), (**C.char)(ptrs(len(outs)))
	r.b.in, r.b.out = (**C.OrtValue)(ptrs(len(ins))), (**C.OrtValue)(ptrs(len(outs)))
	r.in, r.out = unsafe.Slice((**C.OrtValue)(ptrs(len(ins))), len(ins)), unsafe.Slice((**C.OrtValue)(ptrs(len(outs))), len(outs))
	slot := unsafe.Sizeof(C.nrd_slot{})
	r.b.in_slots = (*C.nrd_slot)(alloc(len(ins) * int(slot)))
	r.b.out_slots = (*C.nrd_slot)(alloc(len(outs) * int(slot)))
	fill := func(ts []bareTensor, names **C.char, values **C.OrtValue, slots *C.nrd_slot) error {
		ns, vs, ss := unsafe.Slice(names, len(ts)), unsafe.Slice(values, len(ts)), unsafe.Slice(slots, len(ts))
		for k, t := range ts {
			name := C.CString(t.name)
			r.cmem = append(r.cmem, unsafe.Pointer(name))
			ns[k] = name
			data := alloc(len(t.data))
			copy(unsafe.Slice((*byte)(data), len(t.data)), t.data)
			sl := &ss[k]
			sl.data, sl.arg, sl.len, sl._type = data, -1, C.size_t(len(t.data)), C.int(t.onnxType)
			if err := setShape(sl, t.shape); err != nil {
				return err
			}
			var v *C.OrtValue
			if err := statusErr("creating a tensor", C.nrd_slot_value(sl, nil, &v)); err != nil {
				return err
			}
			vs[k] = v
		}
		return nil
	}
	if err := fill(ins, r.b.in_names, r.b.in, r.b.in_slots); err != nil {
		return nil, err
	}
	if err := fill(outs, r.b.out_names, r.b.out, r.b.out_slots); err != nil {
		return nil, err
	}
	return r, nil
}

// run is ONNX Runtime's Run of values made once: one C call.
func (r *bareRun) run() error {
	return statusErr("bare run", C.nrd_bare_run(r.b))
}

// request makes the values, runs and releases them: one C call.
func (r *bareRun) request() error {
	var in, out **C.OrtValue
	if len(r.in) > 0 {
		in = &r.in[0]
	}
	if len(r.out) > 0 {
		out = &r.out[0]
	}
	return statusErr("bare request", C.nrd_bare_request(r.b, in, out))
}

func (r *bareRun) close() {
	if r.b != nil {
		for _, v := range unsafe.Slice(r.b.in, int(r.b.nin)) {
			C.nrd_release_value(v)
		}
		for _, v := range unsafe.Slice(r.b.out, int(r.b.nout)) {
			C.nrd_release_value(v)
		}
		for _, sl := range [][]C.nrd_slot{unsafe.Slice(r.b.in_slots, int(r.b.nin)), unsafe.Slice(r.b.out_slots, int(r.b.nout))} {
			for k := range sl {
				C.free(unsafe.Pointer(sl[k].big))
			}
		}
		r.b = nil
	}
	for _, p := range r.cmem {
		C.free(p)
	}
	r.cmem = nil
	if r.ro != nil {
		r.ro.close()
		r.ro = nil
	}
}
