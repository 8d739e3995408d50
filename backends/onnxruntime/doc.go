// Package onnxruntime serves ONNX models with ONNX Runtime, the way Triton's
// onnxruntime backend does: `platform: "onnxruntime_onnx"` or
// `backend: "onnxruntime"`, configuration auto-complete and validation
// against the model, instance groups and Triton's session parameters.
//
// It needs cgo and loads the ONNX Runtime shared library at run time (see
// Options), so the package is empty in a CGO_ENABLED=0 build and a missing
// library fails only the ONNX models.
//
// # Binding
//
// The backend talks to ONNX Runtime through its own small binding to the
// C API (capi.go), not through a Go binding package. ONNX Runtime's C API
// is one versioned table of function pointers (OrtApi) that releases only
// ever append to, so the binding names each function it uses by its fixed
// index at API version 24 and works with any library of version 1.24 or
// later. It uses about fifty of the table's functions: the environment,
// session options and sessions, model inputs and outputs, run options,
// tensors and strings. capi.go holds every C call of the package, and
// statusErr is the one place where an OrtStatus becomes a Go error with
// Triton's status class; the C side only marshals arguments (and splits
// the protocol's BYTES form into string elements) and returns every
// failure as an OrtStatus, so no error of ONNX Runtime's panics or aborts
// the server.
//
// The package used github.com/yalue/onnxruntime_go before, for loading the
// library and opening sessions, with the hot path already on the C API.
// Its public API does not suffice for the hot path: it copies every output
// it allocates twice, cannot read an FP16 or BF16 output it allocates (it
// copies one byte per element), truncates strings at a NUL byte, and does
// not expose the OrtSession, so Nereid read a private field by the
// binding's memory layout. The own binding drops that dependency on
// another package's internals; what it costs is the index table, checked
// once against onnxruntime_c_api.h at ORT_API_VERSION 24.
//
// # One C call per run
//
// Each instance keeps in C memory a description of its next run (the
// model's input and output names, made at load, and one slot per tensor).
// Execute fills the slots and makes one C call that wraps the request's
// input bytes and the response's output buffers as ONNX Runtime values,
// runs the session, releases the values and describes any output ONNX
// Runtime allocated. Up to eight data pointers are passed as arguments of
// that call, so they need not be pinned; more are pinned. Only BYTES
// tensors take more crossings: a string input is made by a call of its
// own, and the outputs ONNX Runtime allocated (any BYTES output, and one
// whose shape is not yet known) are released by one more once read. The call times
// its own parts, so that making and releasing values counts as compute
// input and output in the statistics and only Run as compute infer.
// BenchmarkIdentityFP32 and BenchmarkSimple compare the backend with a bare
// C-API Run of the same model in the same process.
//
// # Output buffers
//
// An output is written by ONNX Runtime straight into the response's buffer
// when its shape is known before the run: all fixed in the configuration,
// remembered from the last run with the same input shapes, or predicted
// from the model's dimension names (dim_param: an output dimension named
// like one of an input's has that input's size, and a batched model's
// first dimension is the batch size), read at load. ONNX Runtime fails a
// run whose output does not fit the buffer it was given; the run is then
// made again with ONNX Runtime allocating, and that output is never
// guessed again. Other outputs are copied once out of ONNX Runtime's
// memory.
package onnxruntime
