// Package onnxruntime serves ONNX models with ONNX Runtime, the way Triton's
// onnxruntime backend does: `platform: "onnxruntime_onnx"` or
// `backend: "onnxruntime"`, configuration auto-complete and validation
// against the model, instance groups, Triton's session parameters and model
// warm-up.
//
// It needs cgo and loads the ONNX Runtime shared library at run time (see
// Options), so the package is empty in a CGO_ENABLED=0 build and a missing
// library fails only the ONNX models.
package onnxruntime
