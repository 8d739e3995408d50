//go:build cgo

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// nativeLibrary is where a cgo backend's shared library is looked for, in
// Nereid's order: the backend-config key library, else an environment
// variable, else where the Makefile installs it next to the binary
// (bin/../<rel>), then in the working directory.
type nativeLibrary struct {
	backend string // the --backend-config section, "onnxruntime"
	env     string // the environment variable, NEREID_ORT_LIBRARY
	rel     string // the Makefile's install path, .ort/lib/libonnxruntime.so.1
}

// candidates returns the paths to try, in order, and where they came from
// (for messages).
func (l nativeLibrary) candidates(c *config) (paths []string, source string) {
	if p := c.backendConfig[l.backend]["library"]; p != "" {
		return []string{p}, "--backend-config=" + l.backend + ",library"
	}
	if p := os.Getenv(l.env); p != "" {
		return []string{p}, l.env
	}
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			paths = append(paths, filepath.Join(filepath.Dir(exe), "..", l.rel))
		}
	}
	return append(paths, l.rel), "the default locations"
}

// defaultMaxBatchSize is the max_batch_size a backend's auto-complete
// gives a model that can batch: --backend-config=<backend>,
// default-max-batch-size=N, else the global --backend-config=
// default-max-batch-size=N, else def.
func defaultMaxBatchSize(c *config, backend string, def int) (int, error) {
	for _, section := range []string{backend, ""} {
		s, ok := c.backendConfig[section]["default-max-batch-size"]
		if !ok {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			key := "--backend-config="
			if section != "" {
				key += section + ","
			}
			return 0, fmt.Errorf("%sdefault-max-batch-size: %q is not a non-negative integer", key, s)
		}
		return n, nil
	}
	return def, nil
}
