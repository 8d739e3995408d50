//go:build cgo

package tensorflow

// This file is Nereid's binding to TensorFlow's C API (tensorflow/c/c_api.h,
// tf_tensor.h, tf_tstring.h): the only file of the package that calls C.
// The library is opened with dlopen and every function is looked up with
// dlsym into one table, so neither building nor starting the server needs
// TensorFlow; the declarations below are our own, checked against the real
// headers by TestHeaders when `make tf` has installed them.
//
// Every C call that can fail returns a TF_Status (NULL on success), and
// statusErr turns it into a Go error in one place. The C side never aborts
// on a bad argument of ours: shapes, lengths and BYTES framing are checked
// before TensorFlow sees them.

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct TF_Status TF_Status;
typedef struct TF_Graph TF_Graph;
typedef struct TF_Operation TF_Operation;
typedef struct TF_Session TF_Session;
typedef struct TF_SessionOptions TF_SessionOptions;
typedef struct TF_Tensor TF_Tensor;
typedef struct TF_ImportGraphDefOptions TF_ImportGraphDefOptions;

typedef struct TF_Buffer {
	const void *data;
	size_t length;
	void (*data_deallocator)(void *data, size_t length);
} TF_Buffer;

typedef struct TF_Output {
	TF_Operation *oper;
	int index;
} TF_Output;

// TF_TString is 24 bytes, 8-aligned (tsl/platform/ctstring_internal.h);
// its content is reached only through the library's functions.
typedef struct TF_TString { uint64_t raw[3]; } TF_TString;

enum { NRD_TF_STRING = 7, NRD_TF_OK = 0, NRD_TF_INVALID_ARGUMENT = 3 };

typedef struct {
	const char *(*Version)(void);
	TF_Status *(*NewStatus)(void);
	void (*DeleteStatus)(TF_Status *);
	int (*GetCode)(const TF_Status *);
	const char *(*Message)(const TF_Status *);
	void (*SetStatus)(TF_Status *, int, const char *);
	TF_Buffer *(*NewBuffer)(void);
	TF_Buffer *(*NewBufferFromString)(const void *, size_t);
	void (*DeleteBuffer)(TF_Buffer *);
	TF_Graph *(*NewGraph)(void);
	void (*DeleteGraph)(TF_Graph *);
	TF_Operation *(*GraphOperationByName)(TF_Graph *, const char *);
	TF_Operation *(*GraphNextOperation)(TF_Graph *, size_t *);
	int (*GraphGetTensorNumDims)(TF_Graph *, TF_Output, TF_Status *);
	void (*GraphGetTensorShape)(TF_Graph *, TF_Output, int64_t *, int, TF_Status *);
	const char *(*OperationName)(TF_Operation *);
	const char *(*OperationOpType)(TF_Operation *);
	int (*OperationNumOutputs)(TF_Operation *);
	int (*OperationOutputType)(TF_Output);
	TF_ImportGraphDefOptions *(*NewImportGraphDefOptions)(void);
	void (*DeleteImportGraphDefOptions)(TF_ImportGraphDefOptions *);
	void (*GraphImportGraphDef)(TF_Graph *, const TF_Buffer *, const TF_ImportGraphDefOptions *, TF_Status *);
	TF_SessionOptions *(*NewSessionOptions)(void);
	void (*DeleteSessionOptions)(TF_SessionOptions *);
	void (*SetConfig)(TF_SessionOptions *, const void *, size_t, TF_Status *);
	TF_Session *(*NewSession)(TF_Graph *, const TF_SessionOptions *, TF_Status *);
	TF_Session *(*LoadSessionFromSavedModel)(const TF_SessionOptions *, const TF_Buffer *, const char *,
	                                         const char *const *, int, TF_Graph *, TF_Buffer *, TF_Status *);
	void (*CloseSession)(TF_Session *, TF_Status *);
	void (*DeleteSession)(TF_Session *, TF_Status *);
	void (*SessionRun)(TF_Session *, const TF_Buffer *, const TF_Output *, TF_Tensor *const *, int,
	                   const TF_Output *, TF_Tensor **, int, const TF_Operation *const *, int, TF_Buffer *,
	                   TF_Status *);
	TF_Tensor *(*NewTensor)(int, const int64_t *, int, void *, size_t,
	                        void (*)(void *, size_t, void *), void *);
	TF_Tensor *(*AllocateTensor)(int, const int64_t *, int, size_t);
	void (*DeleteTensor)(TF_Tensor *);
	int (*TensorType)(const TF_Tensor *);
	int (*NumDims)(const TF_Tensor *);
	int64_t (*Dim)(const TF_Tensor *, int);
	size_t (*TensorByteSize)(const TF_Tensor *);
	void *(*TensorData)(const TF_Tensor *);
	int64_t (*TensorElementCount)(const TF_Tensor *);
	void (*StringInit)(TF_TString *);
	void (*StringCopy)(TF_TString *, const char *, size_t);
	const char *(*StringGetDataPointer)(const TF_TString *);
	size_t (*StringGetSize)(const TF_TString *);
	void (*StringDealloc)(TF_TString *);
} nrd_tf_api;

static nrd_tf_api tf;
static int tf_loaded;

// nrd_tf_load opens the library and fills the table. It returns NULL, or
// a message naming what is missing (static, or from dlerror).
static const char *nrd_tf_load(const char *path) {
	if (tf_loaded) return NULL;
	void *h = dlopen(path, RTLD_LAZY | RTLD_LOCAL);
	if (!h) return dlerror();
	nrd_tf_api t;
#define NRD_SYM(field, name) do { *(void **)(&t.field) = dlsym(h, name); if (!t.field) return "the library has no " name; } while (0)
	NRD_SYM(Version, "TF_Version");
	NRD_SYM(NewStatus, "TF_NewStatus");
	NRD_SYM(DeleteStatus, "TF_DeleteStatus");
	NRD_SYM(GetCode, "TF_GetCode");
	NRD_SYM(Message, "TF_Message");
	NRD_SYM(SetStatus, "TF_SetStatus");
	NRD_SYM(NewBuffer, "TF_NewBuffer");
	NRD_SYM(NewBufferFromString, "TF_NewBufferFromString");
	NRD_SYM(DeleteBuffer, "TF_DeleteBuffer");
	NRD_SYM(NewGraph, "TF_NewGraph");
	NRD_SYM(DeleteGraph, "TF_DeleteGraph");
	NRD_SYM(GraphOperationByName, "TF_GraphOperationByName");
	NRD_SYM(GraphNextOperation, "TF_GraphNextOperation");
	NRD_SYM(GraphGetTensorNumDims, "TF_GraphGetTensorNumDims");
	NRD_SYM(GraphGetTensorShape, "TF_GraphGetTensorShape");
	NRD_SYM(OperationName, "TF_OperationName");
	NRD_SYM(OperationOpType, "TF_OperationOpType");
	NRD_SYM(OperationNumOutputs, "TF_OperationNumOutputs");
	NRD_SYM(OperationOutputType, "TF_OperationOutputType");
	NRD_SYM(NewImportGraphDefOptions, "TF_NewImportGraphDefOptions");
	NRD_SYM(DeleteImportGraphDefOptions, "TF_DeleteImportGraphDefOptions");
	NRD_SYM(GraphImportGraphDef, "TF_GraphImportGraphDef");
	NRD_SYM(NewSessionOptions, "TF_NewSessionOptions");
	NRD_SYM(DeleteSessionOptions, "TF_DeleteSessionOptions");
	NRD_SYM(SetConfig, "TF_SetConfig");
	NRD_SYM(NewSession, "TF_NewSession");
	NRD_SYM(LoadSessionFromSavedModel, "TF_LoadSessionFromSavedModel");
	NRD_SYM(CloseSession, "TF_CloseSession");
	NRD_SYM(DeleteSession, "TF_DeleteSession");
	NRD_SYM(SessionRun, "TF_SessionRun");
	NRD_SYM(NewTensor, "TF_NewTensor");
	NRD_SYM(AllocateTensor, "TF_AllocateTensor");
	NRD_SYM(DeleteTensor, "TF_DeleteTensor");
	NRD_SYM(TensorType, "TF_TensorType");
	NRD_SYM(NumDims, "TF_NumDims");
	NRD_SYM(Dim, "TF_Dim");
	NRD_SYM(TensorByteSize, "TF_TensorByteSize");
	NRD_SYM(TensorData, "TF_TensorData");
	NRD_SYM(TensorElementCount, "TF_TensorElementCount");
	NRD_SYM(StringInit, "TF_StringInit");
	NRD_SYM(StringCopy, "TF_StringCopy");
	NRD_SYM(StringGetDataPointer, "TF_StringGetDataPointer");
	NRD_SYM(StringGetSize, "TF_StringGetSize");
	NRD_SYM(StringDealloc, "TF_StringDealloc");
#undef NRD_SYM
	tf = t;
	tf_loaded = 1;
	return NULL;
}

static const char *nrd_tf_version(void) { return tf.Version(); }

// nrd_status returns st when it holds an error, else deletes it and
// returns NULL: the shape of every fallible call below.
static TF_Status *nrd_status(TF_Status *st) {
	if (tf.GetCode(st) == NRD_TF_OK) { tf.DeleteStatus(st); return NULL; }
	return st;
}

static TF_Status *nrd_error(const char *msg) {
	TF_Status *st = tf.NewStatus();
	tf.SetStatus(st, NRD_TF_INVALID_ARGUMENT, msg);
	return st;
}

static int nrd_status_code(TF_Status *st) { return tf.GetCode(st); }
static const char *nrd_status_message(TF_Status *st) { return tf.Message(st); }
static void nrd_delete_status(TF_Status *st) { tf.DeleteStatus(st); }

static TF_Graph *nrd_new_graph(void) { return tf.NewGraph(); }
static void nrd_delete_graph(TF_Graph *g) { if (g) tf.DeleteGraph(g); }

static TF_Status *nrd_import_graphdef(TF_Graph *g, const void *data, size_t len) {
	TF_Buffer *buf = tf.NewBufferFromString(data, len);
	TF_ImportGraphDefOptions *o = tf.NewImportGraphDefOptions();
	TF_Status *st = tf.NewStatus();
	tf.GraphImportGraphDef(g, buf, o, st);
	tf.DeleteImportGraphDefOptions(o);
	tf.DeleteBuffer(buf);
	return nrd_status(st);
}

static TF_Operation *nrd_operation(TF_Graph *g, const char *name) { return tf.GraphOperationByName(g, name); }
static TF_Operation *nrd_next_operation(TF_Graph *g, size_t *pos) { return tf.GraphNextOperation(g, pos); }
static const char *nrd_op_name(TF_Operation *op) { return tf.OperationName(op); }
static const char *nrd_op_type(TF_Operation *op) { return tf.OperationOpType(op); }
static int nrd_op_num_outputs(TF_Operation *op) { return tf.OperationNumOutputs(op); }
static int nrd_output_type(TF_Operation *op, int index) { TF_Output o = {op, index}; return tf.OperationOutputType(o); }

// nrd_output_shape reports the static shape of an operation's output:
// *rank is -1 when unknown; at most cap dimensions are written.
static TF_Status *nrd_output_shape(TF_Graph *g, TF_Operation *op, int index, int64_t *dims, int cap, int *rank) {
	TF_Output o = {op, index};
	TF_Status *st = tf.NewStatus();
	*rank = tf.GraphGetTensorNumDims(g, o, st);
	if (tf.GetCode(st) == NRD_TF_OK && *rank > 0 && *rank <= cap) tf.GraphGetTensorShape(g, o, dims, *rank, st);
	return nrd_status(st);
}

static TF_Status *nrd_session_options(const void *config, size_t len, TF_SessionOptions **out) {
	TF_SessionOptions *o = tf.NewSessionOptions();
	TF_Status *st = tf.NewStatus();
	if (len > 0) tf.SetConfig(o, config, len, st);
	st = nrd_status(st);
	if (st) { tf.DeleteSessionOptions(o); return st; }
	*out = o;
	return NULL;
}

static void nrd_delete_session_options(TF_SessionOptions *o) { if (o) tf.DeleteSessionOptions(o); }

static TF_Status *nrd_new_session(TF_Graph *g, TF_SessionOptions *o, TF_Session **out) {
	TF_Status *st = tf.NewStatus();
	*out = tf.NewSession(g, o, st);
	return nrd_status(st);
}

// nrd_load_saved_model loads a SavedModel into the empty graph g. On
// success *meta holds the serialized MetaGraphDef, to be freed with
// nrd_delete_buffer.
static TF_Status *nrd_load_saved_model(TF_SessionOptions *o, const char *dir, const char *const *tags, int ntags,
                                       TF_Graph *g, TF_Session **out, TF_Buffer **meta) {
	TF_Status *st = tf.NewStatus();
	TF_Buffer *mg = tf.NewBuffer();
	*out = tf.LoadSessionFromSavedModel(o, NULL, dir, tags, ntags, g, mg, st);
	st = nrd_status(st);
	if (st) { tf.DeleteBuffer(mg); return st; }
	*meta = mg;
	return NULL;
}

static const void *nrd_buffer_data(TF_Buffer *b) { return b->data; }
static size_t nrd_buffer_length(TF_Buffer *b) { return b->length; }
static void nrd_delete_buffer(TF_Buffer *b) { if (b) tf.DeleteBuffer(b); }

static TF_Status *nrd_delete_session(TF_Session *s) {
	TF_Status *st = tf.NewStatus();
	tf.CloseSession(s, st);
	TF_Status *st2 = tf.NewStatus();
	tf.DeleteSession(s, st2);
	if (tf.GetCode(st) != NRD_TF_OK) { tf.DeleteStatus(st2); return st; }
	tf.DeleteStatus(st);
	return nrd_status(st2);
}

static TF_Status *nrd_run(TF_Session *s, const TF_Output *in, TF_Tensor *const *vals, int nin,
                          const TF_Output *out, TF_Tensor **outs, int nout) {
	TF_Status *st = tf.NewStatus();
	tf.SessionRun(s, NULL, in, vals, nin, out, outs, nout, NULL, 0, NULL, st);
	return nrd_status(st);
}

// nrd_tensor allocates a tensor of a fixed-width type and copies the
// parts into it one after the other (a batch concatenated along its first
// dimension). The caller has checked that the parts fill it exactly.
static TF_Status *nrd_tensor(int type, const int64_t *dims, int rank, const void *const *parts, const size_t *lens,
                             int nparts, size_t total, TF_Tensor **out) {
	TF_Tensor *t = tf.AllocateTensor(type, dims, rank, total);
	if (!t) return nrd_error("TensorFlow could not allocate a tensor");
	char *dst = (char *)tf.TensorData(t);
	if (total > 0 && !dst) { tf.DeleteTensor(t); return nrd_error("TensorFlow allocated a tensor without data"); }
	for (int i = 0; i < nparts; i++) {
		if (lens[i]) memcpy(dst, parts[i], lens[i]);
		dst += lens[i];
	}
	*out = t;
	return NULL;
}

// nrd_free_tstrings is the deallocator of the string tensors we make:
// each element's heap copy, then the array.
static void nrd_free_tstrings(void *data, size_t len, void *arg) {
	(void)arg;
	TF_TString *s = (TF_TString *)data;
	for (size_t i = 0; i < len / sizeof(TF_TString); i++) tf.StringDealloc(&s[i]);
	free(data);
}

// nrd_string_tensor makes a string tensor of count elements from the
// protocol's BYTES form, each part holding whole elements (a 4-byte
// little-endian length, then the bytes; any byte, NUL included).
static TF_Status *nrd_string_tensor(const int64_t *dims, int rank, const void *const *parts, const size_t *lens,
                                    int nparts, size_t count, TF_Tensor **out) {
	size_t bytes = count * sizeof(TF_TString);
	TF_TString *s = (TF_TString *)aligned_alloc(64, bytes ? (bytes + 63) / 64 * 64 : 64);
	if (!s) return nrd_error("out of memory for a string tensor");
	for (size_t i = 0; i < count; i++) tf.StringInit(&s[i]);
	size_t k = 0;
	const char *msg = NULL;
	for (int p = 0; p < nparts && !msg; p++) {
		const uint8_t *buf = (const uint8_t *)parts[p];
		size_t len = lens[p], off = 0;
		while (off < len) {
			if (len - off < 4) { msg = "BYTES data ends inside a length prefix"; break; }
			uint32_t n = (uint32_t)buf[off] | (uint32_t)buf[off + 1] << 8 | (uint32_t)buf[off + 2] << 16 |
			             (uint32_t)buf[off + 3] << 24;
			off += 4;
			if (n > len - off) { msg = "BYTES element runs past the end of the data"; break; }
			if (k == count) { msg = "BYTES data holds more elements than the shape"; break; }
			tf.StringCopy(&s[k++], (const char *)buf + off, n);
			off += n;
		}
	}
	if (!msg && k != count) msg = "BYTES data holds fewer elements than the shape";
	if (msg) { nrd_free_tstrings(s, bytes, NULL); return nrd_error(msg); }
	TF_Tensor *t = tf.NewTensor(NRD_TF_STRING, dims, rank, s, bytes, nrd_free_tstrings, NULL);
	if (!t) { nrd_free_tstrings(s, bytes, NULL); return nrd_error("TensorFlow could not make a string tensor"); }
	*out = t;
	return NULL;
}

static void nrd_delete_tensor(TF_Tensor *t) { if (t) tf.DeleteTensor(t); }

// nrd_tensor_info reports a tensor's type, shape (*rank true; at most cap
// written), data and byte size.
static void nrd_tensor_info(TF_Tensor *t, int *type, int64_t *dims, int cap, int *rank, void **data, size_t *size) {
	*type = tf.TensorType(t);
	*rank = tf.NumDims(t);
	for (int i = 0; i < *rank && i < cap; i++) dims[i] = tf.Dim(t, i);
	*data = tf.TensorData(t);
	*size = tf.TensorByteSize(t);
}

// nrd_string_size is the length of a string tensor's count elements in
// BYTES form (their sizes plus a 4-byte prefix each).
static size_t nrd_string_size(TF_Tensor *t, size_t count) {
	const TF_TString *s = (const TF_TString *)tf.TensorData(t);
	size_t n = 0;
	for (size_t i = 0; i < count; i++) n += 4 + tf.StringGetSize(&s[i]);
	return n;
}

// nrd_string_read writes a string tensor's count elements in BYTES form
// into dst, which holds nrd_string_size bytes.
static void nrd_string_read(TF_Tensor *t, size_t count, uint8_t *dst) {
	const TF_TString *s = (const TF_TString *)tf.TensorData(t);
	for (size_t i = 0; i < count; i++) {
		size_t n = tf.StringGetSize(&s[i]);
		dst[0] = (uint8_t)n; dst[1] = (uint8_t)(n >> 8); dst[2] = (uint8_t)(n >> 16); dst[3] = (uint8_t)(n >> 24);
		if (n) memcpy(dst + 4, tf.StringGetDataPointer(&s[i]), n);
		dst += 4 + n;
	}
}
*/
import "C"

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"unsafe"

	"github.com/nereid-project/nereid/inference"
)

// TensorFlow's TF_Code values that map to a status class other than
// internal.
const (
	tfCancelled          = 1
	tfInvalidArgument    = 3
	tfNotFound           = 5
	tfAlreadyExists      = 6
	tfResourceExhausted  = 8
	tfFailedPrecondition = 9
	tfOutOfRange         = 11
	tfUnimplemented      = 12
	tfUnavailable        = 14
)

// tfError is an error TensorFlow reported through a TF_Status.
type tfError struct {
	code int
	msg  string
}

func (e *tfError) Error() string { return e.msg }

// statusErr is the one place where a TF_Status becomes a Go error: it reads
// the code and message and deletes the status. op says what failed. A nil
// status is success.
func statusErr(op string, st *C.TF_Status) error {
	if st == nil {
		return nil
	}
	e := &tfError{code: int(C.nrd_status_code(st)), msg: C.GoString(C.nrd_status_message(st))}
	C.nrd_delete_status(st)
	code := inference.CodeInternal
	switch e.code {
	case tfInvalidArgument, tfFailedPrecondition, tfOutOfRange:
		code = inference.CodeInvalidArg
	case tfNotFound:
		code = inference.CodeNotFound
	case tfUnimplemented:
		code = inference.CodeUnsupported
	case tfUnavailable:
		code = inference.CodeUnavailable
	case tfCancelled:
		code = inference.CodeCancelled
	case tfAlreadyExists:
		code = inference.CodeAlreadyExists
	case tfResourceExhausted:
		code = inference.CodeResourceExhausted
	}
	return inference.Errorf(code, "%s: %w", op, e)
}

var library struct {
	mu   sync.Mutex // guards path
	path string     // the library loaded, "" before
}

// loadLibrary opens TensorFlow's C API library once for the process.
// Loading another path later fails: a process holds one TensorFlow.
func loadLibrary(path string) error {
	library.mu.Lock()
	defer library.mu.Unlock()
	if library.path != "" {
		if library.path != path {
			return fmt.Errorf("TensorFlow is already loaded from %s; restart the server to use %s", library.path, path)
		}
		return nil
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	if msg := C.nrd_tf_load(cpath); msg != nil {
		return fmt.Errorf("%s", C.GoString(msg))
	}
	library.path = path
	return nil
}

// libraryVersion is TF_Version() of the loaded library.
func libraryVersion() string { return C.GoString(C.nrd_tf_version()) }

// graph is a TF_Graph owned by Go code.
type graph struct{ g *C.TF_Graph }

func newGraph() *graph { return &graph{g: C.nrd_new_graph()} }

func (g *graph) close() {
	C.nrd_delete_graph(g.g)
	g.g = nil
}

// importGraphDef adds a serialized GraphDef's nodes to the graph.
func (g *graph) importGraphDef(data []byte) error {
	p := unsafe.Pointer(&zeroByte[0])
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}
	return statusErr("importing the GraphDef", C.nrd_import_graphdef(g.g, p, C.size_t(len(data))))
}

// output is one output of an operation: a tensor of the graph.
type output = C.TF_Output

// operation returns the operation of the graph with the given name, nil
// when there is none.
func (g *graph) operation(name string) *C.TF_Operation {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	return C.nrd_operation(g.g, cname)
}

// opInfo is what the binding reports about an operation.
type opInfo struct {
	name, opType string
	outputs      int
}

// operations lists the operations of the graph in its order.
func (g *graph) operations() []opInfo {
	var out []opInfo
	var pos C.size_t
	for {
		op := C.nrd_next_operation(g.g, &pos)
		if op == nil {
			return out
		}
		out = append(out, opInfo{name: C.GoString(C.nrd_op_name(op)), opType: C.GoString(C.nrd_op_type(op)), outputs: int(C.nrd_op_num_outputs(op))})
	}
}

// tensor returns output index of the operation named op, and whether the
// graph has it.
func (g *graph) tensor(op string, index int) (output, bool) {
	o := g.operation(op)
	if o == nil || index < 0 || index >= int(C.nrd_op_num_outputs(o)) {
		return output{}, false
	}
	return output{oper: o, index: C.int(index)}, true
}

// outputType is the TF_DataType of a graph tensor.
func outputType(o output) int { return int(C.nrd_output_type(o.oper, o.index)) }

// maxRank bounds the shapes read back without an allocation; a larger rank
// is an error.
const maxRank = 16

// outputShape is the static shape of a graph tensor: -1 for an unknown
// dimension, known false when even the rank is unknown.
func (g *graph) outputShape(o output) (dims []int64, known bool, err error) {
	var buf [maxRank]int64
	var rank C.int
	st := C.nrd_output_shape(g.g, o.oper, o.index, (*C.int64_t)(unsafe.Pointer(&buf[0])), maxRank, &rank)
	if err := statusErr("reading a tensor's shape", st); err != nil {
		return nil, false, err
	}
	if rank < 0 {
		return nil, false, nil
	}
	if int(rank) > maxRank {
		return nil, false, fmt.Errorf("the tensor has rank %d; Nereid reads at most %d dimensions", rank, maxRank)
	}
	return append([]int64{}, buf[:rank]...), true, nil
}

// sessionOptions is a TF_SessionOptions with a serialized ConfigProto.
type sessionOptions struct{ o *C.TF_SessionOptions }

func newSessionOptions(config []byte) (*sessionOptions, error) {
	p := unsafe.Pointer(&zeroByte[0])
	if len(config) > 0 {
		p = unsafe.Pointer(&config[0])
	}
	var o *C.TF_SessionOptions
	if err := statusErr("setting the session options", C.nrd_session_options(p, C.size_t(len(config)), &o)); err != nil {
		return nil, err
	}
	return &sessionOptions{o: o}, nil
}

func (o *sessionOptions) close() {
	C.nrd_delete_session_options(o.o)
	o.o = nil
}

// session is a TF_Session. run may be called from one goroutine at a time.
type session struct{ s *C.TF_Session }

// newSession opens a session on a graph.
func newSession(g *graph, o *sessionOptions) (*session, error) {
	var s *C.TF_Session
	if err := statusErr("creating a session", C.nrd_new_session(g.g, o.o, &s)); err != nil {
		return nil, err
	}
	return &session{s: s}, nil
}

// loadSavedModel loads the SavedModel in dir, the MetaGraph with the given
// tags, into the empty graph g. It returns the session and the serialized
// MetaGraphDef.
func loadSavedModel(o *sessionOptions, dir string, tags []string, g *graph) (*session, []byte, error) {
	cdir := C.CString(dir)
	defer C.free(unsafe.Pointer(cdir))
	ctags := make([]*C.char, max(len(tags), 1))
	for i, t := range tags {
		ctags[i] = C.CString(t)
	}
	defer func() {
		for _, t := range ctags {
			C.free(unsafe.Pointer(t))
		}
	}()
	var (
		s    *C.TF_Session
		meta *C.TF_Buffer
	)
	// The tag array is C memory in a Go slice: no Go pointers cross.
	st := C.nrd_load_saved_model(o.o, cdir, &ctags[0], C.int(len(tags)), g.g, &s, &meta)
	if err := statusErr("loading the SavedModel", st); err != nil {
		return nil, nil, err
	}
	data := C.GoBytes(C.nrd_buffer_data(meta), C.int(C.nrd_buffer_length(meta)))
	C.nrd_delete_buffer(meta)
	return &session{s: s}, data, nil
}

func (s *session) close() error {
	if s.s == nil {
		return nil
	}
	err := statusErr("closing the session", C.nrd_delete_session(s.s))
	s.s = nil
	return err
}

// tensor is a TF_Tensor owned by Go code; deleteTensors frees them.
type tensor = *C.TF_Tensor

func deleteTensors(ts []tensor) {
	for i, t := range ts {
		C.nrd_delete_tensor(t)
		ts[i] = nil
	}
}

// run feeds inputs and fetches outputs. outs receives one tensor per
// output, owned by the caller, on success.
func (s *session) run(inputs []output, values []tensor, outputs []output, outs []tensor) error {
	if len(inputs) != len(values) || len(outputs) != len(outs) || len(outputs) == 0 {
		return fmt.Errorf("run: %d inputs with %d values, %d outputs into %d", len(inputs), len(values), len(outputs), len(outs))
	}
	var in *C.TF_Output
	var vals **C.TF_Tensor
	if len(inputs) > 0 {
		in, vals = &inputs[0], &values[0]
	}
	st := C.nrd_run(s.s, in, vals, C.int(len(inputs)), &outputs[0], &outs[0], C.int(len(outputs)))
	return statusErr("TensorFlow failed to run the model", st)
}

// zeroByte backs empty buffers: C wants a non-nil pointer even when it
// reads nothing.
var zeroByte [8]byte

// dimsPtr points C at a shape.
func dimsPtr(shape []int64) *C.int64_t {
	if len(shape) == 0 {
		return (*C.int64_t)(unsafe.Pointer(&zeroByte[0]))
	}
	return (*C.int64_t)(unsafe.Pointer(&shape[0]))
}

// partsOf lays the parts out for C: their addresses (pinned until the call
// returns: cgo pins the arguments only, not the memory they point to) and
// lengths.
func partsOf(pin *runtime.Pinner, parts [][]byte) ([]unsafe.Pointer, []C.size_t) {
	ptrs := make([]unsafe.Pointer, max(len(parts), 1))
	lens := make([]C.size_t, max(len(parts), 1))
	for i, p := range parts {
		ptrs[i] = unsafe.Pointer(&zeroByte[0])
		if len(p) > 0 {
			pin.Pin(&p[0])
			ptrs[i] = unsafe.Pointer(&p[0])
		}
		lens[i] = C.size_t(len(p))
	}
	return ptrs, lens
}

// newTensor makes a tensor of a fixed-width type whose data is the
// concatenation of parts, copied once into TensorFlow's memory. The parts
// must add up to the shape's byte size.
func newTensor(tfType int, shape []int64, parts [][]byte) (tensor, error) {
	total := 0
	for _, p := range parts {
		total += len(p)
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	ptrs, lens := partsOf(&pin, parts)
	pin.Pin(&ptrs[0])
	var t *C.TF_Tensor
	st := C.nrd_tensor(C.int(tfType), dimsPtr(shape), C.int(len(shape)), &ptrs[0], &lens[0], C.int(len(parts)), C.size_t(total), &t)
	return t, statusErr("creating a tensor", st)
}

// newStringTensor makes a string tensor of count elements from parts in
// the protocol's BYTES form; a malformed part is an invalid-argument error.
func newStringTensor(shape []int64, parts [][]byte, count int64) (tensor, error) {
	if count < 0 || uint64(count) > math.MaxInt/24 {
		return nil, inference.InvalidArg("a string tensor of %d elements", count)
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	ptrs, lens := partsOf(&pin, parts)
	pin.Pin(&ptrs[0])
	var t *C.TF_Tensor
	st := C.nrd_string_tensor(dimsPtr(shape), C.int(len(shape)), &ptrs[0], &lens[0], C.int(len(parts)), C.size_t(count), &t)
	return t, statusErr("creating a string tensor", st)
}

// tensorInfo returns a tensor's TF_DataType and shape.
func tensorInfo(t tensor) (int, []int64, error) {
	var (
		typ, rank C.int
		buf       [maxRank]int64
		data      unsafe.Pointer
		size      C.size_t
	)
	C.nrd_tensor_info(t, &typ, (*C.int64_t)(unsafe.Pointer(&buf[0])), maxRank, &rank, &data, &size)
	if int(rank) > maxRank {
		return 0, nil, fmt.Errorf("the tensor has rank %d; Nereid reads at most %d dimensions", rank, maxRank)
	}
	return int(typ), append([]int64{}, buf[:rank]...), nil
}

// tensorBytes copies a fixed-width tensor's data into a new Go buffer of
// want bytes; a tensor of another size is an error.
func tensorBytes(t tensor, want int) ([]byte, error) {
	var (
		typ, rank C.int
		buf       [1]int64
		data      unsafe.Pointer
		size      C.size_t
	)
	C.nrd_tensor_info(t, &typ, (*C.int64_t)(unsafe.Pointer(&buf[0])), 0, &rank, &data, &size)
	if int(size) != want {
		return nil, fmt.Errorf("the tensor holds %d bytes, its shape %d", size, want)
	}
	out := make([]byte, want)
	if want > 0 {
		copy(out, unsafe.Slice((*byte)(data), want))
	}
	return out, nil
}

// stringTensorBytes returns a string tensor's count elements in the
// protocol's BYTES form.
func stringTensorBytes(t tensor, count int) []byte {
	if count <= 0 {
		return []byte{}
	}
	n := int(C.nrd_string_size(t, C.size_t(count)))
	out := make([]byte, n)
	C.nrd_string_read(t, C.size_t(count), (*C.uint8_t)(unsafe.Pointer(&out[0])))
	return out
}
