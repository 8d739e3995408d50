// Package python serves Triton's Python backend contract: a model.py with
// class TritonPythonModel, run unchanged in one stub process per model
// instance.
//
// The stub is Nereid's own (pysrc/nereid_stub.py, with its own
// triton_python_backend_utils module), started with the interpreter the
// backend or the model's EXECUTION_ENV_PATH names. Parent and stub talk
// over a Unix socket in JSON frames; tensors cross in sealed anonymous
// shared memory, each side writing into segments it owns and the reader
// telling the owner when it is done (PROTOCOL.md has the whole protocol).
// Inputs reach numpy as views of the memory the parent wrote; outputs are
// written once by the stub and reach the client from there.
//
// Each instance supervises its stub: one that exits, is killed, or leaves
// a health check unanswered for --backend-config=python,stub-timeout-seconds
// fails its in-flight requests and is replaced by a fresh one, initialize
// and all. Unload calls finalize and reaps the process group; nothing is
// ever created under /dev/shm, so nothing can be left there.
//
// A model's own requests (BLS) enter the server through the Inferer the
// loader hands it, like an ensemble's steps; pb_utils.load_model and
// friends reach the server's model control behind it.
package python
