//go:build cgo

package onnxruntime

// The hot path — building input values over request bytes, Run, reading
// outputs — calls ONNX Runtime's C API directly rather than through
// onnxruntime_go, which copies every output twice, cannot read an
// ONNX-Runtime-allocated FP16 or BF16 output (it copies one byte per
// element), and truncates strings at a NUL byte. onnxruntime_go still loads
// the library, creates the environment, the session options and the
// sessions, and reads model metadata.
//
// The C API is a table of function pointers (OrtApi) that ONNX Runtime only
// ever appends to, so a function's index in it is fixed for good. The
// indices below are those of the header onnxruntime_go v1.27.0 ships
// (ORT_API_VERSION 24); GetApi(24) returns that table from any library of
// version 1.24 or later.

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct OrtStatus OrtStatus;
typedef struct OrtValue OrtValue;
typedef struct OrtSession OrtSession;
typedef struct OrtRunOptions OrtRunOptions;
typedef struct OrtMemoryInfo OrtMemoryInfo;
typedef struct OrtAllocator OrtAllocator;
typedef struct OrtTensorTypeAndShapeInfo OrtTensorTypeAndShapeInfo;

#define NRD_ORT_API_VERSION 24

enum {
	NRD_CreateStatus = 0,
	NRD_GetErrorCode = 1,
	NRD_GetErrorMessage = 2,
	NRD_Run = 9,
	NRD_SessionGetInputCount = 30,
	NRD_SessionGetOutputCount = 31,
	NRD_CreateRunOptions = 39,
	NRD_RunOptionsSetTerminate = 46,
	NRD_RunOptionsUnsetTerminate = 47,
	NRD_CreateTensorAsOrtValue = 48,
	NRD_CreateTensorWithDataAsOrtValue = 49,
	NRD_GetTensorMutableData = 51,
	NRD_GetStringTensorDataLength = 53,
	NRD_GetStringTensorContent = 54,
	NRD_GetTensorElementType = 60,
	NRD_GetDimensionsCount = 61,
	NRD_GetDimensions = 62,
	NRD_GetTensorTypeAndShape = 65,
	NRD_GetValueType = 67,
	NRD_CreateCpuMemoryInfo = 69,
	NRD_GetAllocatorWithDefaultOptions = 78,
	NRD_ReleaseStatus = 93,
	NRD_ReleaseValue = 96,
	NRD_ReleaseRunOptions = 97,
	NRD_ReleaseTensorTypeAndShapeInfo = 99,
	NRD_AddRunConfigEntry = 165,
	NRD_GetResizedStringTensorElementBuffer = 252,
};

typedef struct {
	const void *(*GetApi)(uint32_t version);
	const char *(*GetVersionString)(void);
} nrd_api_base;

static void *const *nrd_api;
static OrtMemoryInfo *nrd_cpu;
static OrtAllocator *nrd_alloc;

#define NRD_FN(type, idx) ((type)(nrd_api[idx]))

typedef OrtStatus *(*nrd_create_status_fn)(int, const char *);
typedef int (*nrd_error_code_fn)(const OrtStatus *);
typedef const char *(*nrd_error_message_fn)(const OrtStatus *);
typedef void (*nrd_release_fn)(void *);

static OrtStatus *nrd_error(const char *msg) {
	return NRD_FN(nrd_create_status_fn, NRD_CreateStatus)(2, msg); // ORT_INVALID_ARGUMENT
}

// nrd_init finds the C API of the library onnxruntime_go has loaded from
// path. It returns NULL or a static message.
static const char *nrd_init(const char *path) {
	if (nrd_api) return NULL;
	void *h = dlopen(path, RTLD_LAZY);
	if (!h) return "dlopen failed";
	const nrd_api_base *(*get_base)(void) = (const nrd_api_base *(*)(void))dlsym(h, "OrtGetApiBase");
	if (!get_base) return "the library has no OrtGetApiBase";
	const void *api = get_base()->GetApi(NRD_ORT_API_VERSION);
	if (!api) return "the library does not provide ONNX Runtime C API version 24";
	nrd_api = (void *const *)api;
	typedef OrtStatus *(*cpu_fn)(int, int, OrtMemoryInfo **);
	typedef OrtStatus *(*alloc_fn)(OrtAllocator **);
	OrtStatus *st = NRD_FN(cpu_fn, NRD_CreateCpuMemoryInfo)(1, 0, &nrd_cpu); // arena, default
	if (!st) st = NRD_FN(alloc_fn, NRD_GetAllocatorWithDefaultOptions)(&nrd_alloc);
	if (st) {
		NRD_FN(nrd_release_fn, NRD_ReleaseStatus)(st);
		nrd_api = NULL;
		return "cannot create the CPU memory info or allocator";
	}
	return NULL;
}

static int nrd_status_code(OrtStatus *st) { return NRD_FN(nrd_error_code_fn, NRD_GetErrorCode)(st); }
static const char *nrd_status_message(OrtStatus *st) { return NRD_FN(nrd_error_message_fn, NRD_GetErrorMessage)(st); }
static void nrd_release_status(OrtStatus *st) { NRD_FN(nrd_release_fn, NRD_ReleaseStatus)(st); }
static void nrd_release_value(OrtValue *v) { if (v) NRD_FN(nrd_release_fn, NRD_ReleaseValue)(v); }
static void nrd_release_run_options(OrtRunOptions *o) { if (o) NRD_FN(nrd_release_fn, NRD_ReleaseRunOptions)(o); }

static OrtStatus *nrd_io_count(OrtSession *s, size_t *in, size_t *out) {
	typedef OrtStatus *(*count_fn)(const OrtSession *, size_t *);
	OrtStatus *st = NRD_FN(count_fn, NRD_SessionGetInputCount)(s, in);
	if (st) return st;
	return NRD_FN(count_fn, NRD_SessionGetOutputCount)(s, out);
}

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

// nrd_tensor wraps caller-owned (pinned) memory as a tensor value.
static OrtStatus *nrd_tensor(void *data, size_t len, const int64_t *shape, size_t rank, int type, OrtValue **out) {
	typedef OrtStatus *(*fn)(const OrtMemoryInfo *, void *, size_t, const int64_t *, size_t, int, OrtValue **);
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

static OrtStatus *nrd_run(OrtSession *s, OrtRunOptions *ro, const char *const *in_names, OrtValue *const *in,
                          size_t nin, const char *const *out_names, size_t nout, OrtValue **out) {
	typedef OrtStatus *(*fn)(OrtSession *, const OrtRunOptions *, const char *const *, const OrtValue *const *,
	                         size_t, const char *const *, size_t, OrtValue **);
	return NRD_FN(fn, NRD_Run)(s, ro, in_names, (const OrtValue *const *)in, nin, out_names, nout, out);
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
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"

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

// initCAPI finds the C API of the library that onnxruntime_go loaded.
func initCAPI(path string) error {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	if msg := C.nrd_init(cpath); msg != nil {
		return fmt.Errorf("%s: %s", path, C.GoString(msg))
	}
	return nil
}

// sessionHandle returns the OrtSession behind an onnxruntime_go session,
// which does not export it. It relies on the layout of onnxruntime_go
// v1.27.0 (DynamicAdvancedSession{s *AdvancedSession}, whose first field is
// the *OrtSession); checkSession verifies the result before it is used.
func sessionHandle(s *ort.DynamicAdvancedSession) *C.OrtSession {
	type advanced struct{ session *C.OrtSession }
	type dynamic struct{ s *advanced }
	d := (*dynamic)(unsafe.Pointer(s))
	if d.s == nil {
		return nil
	}
	return d.s.session
}

// checkSession verifies a session handle by asking it for its input and
// output counts, which must match what onnxruntime_go reported.
func checkSession(h *C.OrtSession, inputs, outputs int) error {
	if h == nil {
		return fmt.Errorf("onnxruntime_go returned no session")
	}
	var nin, nout C.size_t
	if err := statusErr("reading the session's input and output counts", C.nrd_io_count(h, &nin, &nout)); err != nil {
		return err
	}
	if int(nin) != inputs || int(nout) != outputs {
		return fmt.Errorf("session handle mismatch: %d inputs and %d outputs, want %d and %d (is onnxruntime_go at v1.27.0?)",
			nin, nout, inputs, outputs)
	}
	return nil
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
	C.nrd_release_status(C.nrd_terminate(r.ro, 1))
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

// value is an OrtValue owned by Go code; free releases it.
type value = *C.OrtValue

func freeValues(vs []value) {
	for i, v := range vs {
		C.nrd_release_value(v)
		vs[i] = nil
	}
}

// zeroByte backs tensors with no elements: ONNX Runtime wants a non-nil
// pointer even when it reads nothing.
var zeroByte [8]byte

// tensorOver wraps data as a tensor of type ortType and the given shape
// without copying. data must stay pinned and unchanged until the value is
// released.
func tensorOver(data []byte, shape []int64, ortType int) (value, error) {
	p := unsafe.Pointer(&zeroByte[0])
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}
	var v *C.OrtValue
	st := C.nrd_tensor(p, C.size_t(len(data)), shapePtr(shape), C.size_t(len(shape)), C.int(ortType), &v)
	return v, statusErr("creating a tensor", st)
}

// stringTensor makes a string tensor from the protocol's BYTES form. The
// bytes are copied.
func stringTensor(data []byte, shape []int64, count int64) (value, error) {
	p := (*C.uint8_t)(unsafe.Pointer(&zeroByte[0]))
	if len(data) > 0 {
		p = (*C.uint8_t)(unsafe.Pointer(&data[0]))
	}
	var v *C.OrtValue
	st := C.nrd_string_tensor(shapePtr(shape), C.size_t(len(shape)), p, C.size_t(len(data)), C.size_t(count), &v)
	return v, statusErr("creating a string tensor", st)
}

func shapePtr(shape []int64) *C.int64_t {
	if len(shape) == 0 {
		return (*C.int64_t)(unsafe.Pointer(&zeroByte[0]))
	}
	return (*C.int64_t)(unsafe.Pointer(&shape[0]))
}

// run executes the session. names and values are parallel; outs[i] is a
// preallocated output or nil for ONNX Runtime to allocate, and holds the
// result on success. The name arrays hold C strings and may live in Go
// memory: they contain no Go pointers.
func run(s *C.OrtSession, ro *runOptions, inNames []*C.char, ins []value, outNames []*C.char, outs []value) error {
	st := C.nrd_run(s, ro.ro, &inNames[0], &ins[0], C.size_t(len(ins)), &outNames[0], C.size_t(len(outs)), &outs[0])
	return statusErr("ONNX Runtime failed to run the model", st)
}

// maxRank bounds the shapes read back from ONNX Runtime without an
// allocation; a larger rank takes a second call.
const maxRank = 8

// valueInfo returns a tensor value's ONNX element type and shape.
func valueInfo(v value) (int, []int64, error) {
	var (
		typ  C.int
		rank C.size_t
		buf  [maxRank]int64
	)
	st := C.nrd_value_info(v, &typ, (*C.int64_t)(unsafe.Pointer(&buf[0])), maxRank, &rank)
	if err := statusErr("reading an output's type and shape", st); err != nil {
		return 0, nil, err
	}
	if int(rank) <= maxRank {
		return int(typ), append([]int64(nil), buf[:rank]...), nil
	}
	dims := make([]int64, rank)
	st = C.nrd_value_info(v, &typ, (*C.int64_t)(unsafe.Pointer(&dims[0])), rank, &rank)
	return int(typ), dims, statusErr("reading an output's type and shape", st)
}

// copyTensorData copies a fixed-width tensor's n bytes out of ONNX
// Runtime's memory into a new Go buffer.
func copyTensorData(v value, n int) ([]byte, error) {
	out := make([]byte, n)
	if n == 0 {
		return out, nil
	}
	var p unsafe.Pointer
	if err := statusErr("reading an output's data", C.nrd_tensor_data(v, &p)); err != nil {
		return nil, err
	}
	copy(out, unsafe.Slice((*byte)(p), n))
	return out, nil
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
	content := make([]byte, int(n)+1) // +1: never a zero-length buffer
	offsets := make([]C.size_t, count)
	st := C.nrd_string_content(v, unsafe.Pointer(&content[0]), n, &offsets[0], C.size_t(count))
	if err := statusErr("reading a string output", st); err != nil {
		return nil, err
	}
	out := make([]byte, 0, 4*count+int(n))
	for i := range count {
		end := int(n)
		if i+1 < count {
			end = int(offsets[i+1])
		}
		elem := content[int(offsets[i]):end]
		out = binary.LittleEndian.AppendUint32(out, uint32(len(elem)))
		out = append(out, elem...)
	}
	return out, nil
}
