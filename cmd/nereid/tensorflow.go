//go:build cgo

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/backends/tensorflow"
)

// tfLibrary is where TensorFlow's C API library is looked for:
// --backend-config=tensorflow,library=, else $NEREID_TF_LIBRARY, else
// where `make tf` installs it.
var tfLibrary = nativeLibrary{
	backend: tensorflow.Name,
	env:     "NEREID_TF_LIBRARY",
	rel:     filepath.Join(".tf", "lib", "libtensorflow_cc.so.2"),
}

var tfBackend = tensorflow.New(tensorflow.Options{})

func init() {
	backends.Register(tensorflow.Name, tfBackend)
	backendSetups = append(backendSetups, setupTensorFlow)
}

// tfLogLevel is the environment variable TensorFlow reads its log level
// from when its library loads.
const tfLogLevel = "TF_CPP_MIN_LOG_LEVEL"

// setupTensorFlow tells the backend where the library is, the default
// max_batch_size of auto-complete and Triton's allow-soft-placement, and
// quiets TensorFlow's own informational logs (errors only) unless
// --log-verbose asks for them or the environment sets their level.
func setupTensorFlow(c *config, log zerolog.Logger) error {
	if _, set := os.LookupEnv(tfLogLevel); !set {
		level := "2"
		if c.logVerbose > 0 {
			level = "0"
		}
		if err := os.Setenv(tfLogLevel, level); err != nil {
			return fmt.Errorf("setting %s: %w", tfLogLevel, err)
		}
	}
	opts := tensorflow.Options{Logger: log}
	opts.LibraryPaths, opts.LibrarySource = tfLibrary.candidates(c)
	n, err := defaultMaxBatchSize(c, tensorflow.Name, tensorflow.DefaultMaxBatchSize)
	if err != nil {
		return err
	}
	opts.DefaultMaxBatchSize = n
	if s, ok := c.backendConfig[tensorflow.Name]["allow-soft-placement"]; ok {
		if opts.AllowSoftPlacement, err = strconv.ParseBool(s); err != nil {
			return fmt.Errorf("--backend-config=tensorflow,allow-soft-placement: %q is not a boolean", s)
		}
	}
	tfBackend.Configure(opts)
	return nil
}
