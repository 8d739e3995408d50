//go:build cgo

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/backends/onnxruntime"
)

// ortLibraryEnv names the environment variable that points at the ONNX
// Runtime shared library when --backend-config=onnxruntime,library= does
// not.
const ortLibraryEnv = "NEREID_ORT_LIBRARY"

// ortDefaultLibrary is where `make ort` installs the library, relative to
// the repository root.
var ortDefaultLibrary = filepath.Join(".ort", "lib", "libonnxruntime.so.1")

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
	switch {
	case c.backendConfig[onnxruntime.Name]["library"] != "":
		opts.LibraryPaths = []string{c.backendConfig[onnxruntime.Name]["library"]}
		opts.LibrarySource = "--backend-config=onnxruntime,library"
	case os.Getenv(ortLibraryEnv) != "":
		opts.LibraryPaths = []string{os.Getenv(ortLibraryEnv)}
		opts.LibrarySource = ortLibraryEnv
	default:
		if exe, err := os.Executable(); err == nil {
			if exe, err = filepath.EvalSymlinks(exe); err == nil {
				opts.LibraryPaths = append(opts.LibraryPaths, filepath.Join(filepath.Dir(exe), "..", ortDefaultLibrary))
			}
		}
		opts.LibraryPaths = append(opts.LibraryPaths, ortDefaultLibrary)
		opts.LibrarySource = "the default locations"
	}
	if s, ok := c.backendConfig[""]["default-max-batch-size"]; ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return fmt.Errorf("--backend-config=default-max-batch-size: %q is not a non-negative integer", s)
		}
		opts.DefaultMaxBatchSize = n
	}
	onnxBackend.Configure(opts)
	return nil
}
