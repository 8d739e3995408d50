// Package tensorflow serves TensorFlow SavedModels and GraphDefs the way
// Triton's tensorflow backend does: `platform: "tensorflow_savedmodel"` /
// `"tensorflow_graphdef"` or `backend: "tensorflow"`, configuration
// auto-complete from a SavedModel's signature, validation against the
// model, instance groups and Triton's TF_* parameters. model_warmup is
// the server's loader's (package warmup), as for every backend.
//
// It calls TensorFlow's C API through a small cgo binding of its own
// (capi.go, the only file that calls C) and loads libtensorflow_cc.so.2 at
// run time with dlopen (see Options), so the package is empty in a
// CGO_ENABLED=0 build and a missing library fails only the TensorFlow
// models.
package tensorflow
