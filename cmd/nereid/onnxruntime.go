//go:build cgo

package main

import (
	"path/filepath"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/backends/onnxruntime"
)

// ortLibrary is where the ONNX Runtime shared library is looked for:
// --backend-config=onnxruntime,library=, else $NEREID_ORT_LIBRARY, else
// where `make ort` installs it.
var ortLibrary = nativeLibrary{
	backend: onnxruntime.Name,
	env:     "NEREID_ORT_LIBRARY",
	rel:     filepath.Join(".ort", "lib", "libonnxruntime.so.1"),
}

var onnxBackend = onnxruntime.New(onnxruntime.Options{})

func init() {
	backends.Register(onnxruntime.Name, onnxBackend)
	backendSetups = append(backendSetups, setupONNXRuntime)
}

// setupONNXRuntime tells the backend where the library is — the
// backend-config key library, else $NEREID_ORT_LIBRARY, else where `make
// ort` puts it next to the binary (bin/../.ort) or in the working
// directory — and the default max_batch_size of auto-complete.
func setupONNXRuntime(c *config, log zerolog.Logger) error {
	opts := onnxruntime.Options{
		DefaultMaxBatchSize: onnxruntime.DefaultMaxBatchSize,
		RuntimeWarnings:     c.logVerbose > 0,
		Logger:              log,
	}
	opts.LibraryPaths, opts.LibrarySource = ortLibrary.candidates(c)
	n, err := defaultMaxBatchSize(c, onnxruntime.Name, onnxruntime.DefaultMaxBatchSize)
	if err != nil {
		return err
	}
	opts.DefaultMaxBatchSize = n
	onnxBackend.Configure(opts)
	return nil
}
