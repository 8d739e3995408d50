package main

import (
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/backends/python"
)

// pythonEnv names the environment variable that names the interpreter of
// Python stubs when --backend-config=python,python-executable does not.
const pythonEnv = "NEREID_PYTHON"

var pythonBackend = python.New(python.Options{})

func init() { backends.Register(python.Name, pythonBackend) }

// setupPython configures the Python backend from
// --backend-config=python,KEY=VALUE; metrics (nil when off) is where
// models' own metric families go. The interpreter is the key
// python-executable, else $NEREID_PYTHON, else the virtualenv `make venv`
// makes next to the binary (bin/../.venv, which has numpy), else python3.
func setupPython(c *config, log zerolog.Logger, metrics prometheus.Registerer) error {
	opts, warnings, err := python.ParseOptions(c.backendConfig[python.Name])
	if err != nil {
		return err
	}
	for _, w := range warnings {
		log.Warn().Msg(w)
	}
	if _, set := c.backendConfig[python.Name]["python-executable"]; !set {
		opts.Python = defaultPython()
	}
	opts.Logger = log
	opts.Metrics = metrics
	pythonBackend.Configure(opts)
	return nil
}

func defaultPython() string {
	if p := os.Getenv(pythonEnv); p != "" {
		return p
	}
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			venv := filepath.Join(filepath.Dir(exe), "..", ".venv", "bin", "python")
			if st, err := os.Stat(venv); err == nil && !st.IsDir() {
				return venv
			}
		}
	}
	return "python3"
}
