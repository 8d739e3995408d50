package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// nereid serve is the entry point of a SageMaker container (SageMaker
// starts the image as `docker run <image> serve`): it reads the SAGEMAKER_*
// environment variables that Triton's container's serve script reads and
// runs nereid with the flags they stand for, in this one place. Arguments
// after `serve` are passed on after those flags (a later flag wins).

// serveLayout is where a SageMaker container's models are.
type serveLayout struct {
	modelDir string // a single model's artefact: /opt/ml/model
	mmeRepo  string // the empty repository of a multi-model endpoint
}

var defaultServeLayout = serveLayout{modelDir: "/opt/ml/model", mmeRepo: "/tmp/sagemaker"}

// serveEnv is every SAGEMAKER_TRITON_* variable serve knows; any other
// gets a note, so that a misspelt one does not go unnoticed.
var serveEnv = []string{
	"SAGEMAKER_TRITON_PING_MODE", "SAGEMAKER_TRITON_OVERRIDE_PING_MODE",
	"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME", "SAGEMAKER_TRITON_INFERENCE_TYPE",
	"SAGEMAKER_TRITON_DISABLE_MODEL_NAMESPACING",
	"SAGEMAKER_TRITON_ALLOW_GRPC", "SAGEMAKER_TRITON_GRPC_PORT",
	"SAGEMAKER_TRITON_ALLOW_METRICS", "SAGEMAKER_TRITON_METRICS_PORT",
	"SAGEMAKER_TRITON_THREAD_COUNT", "SAGEMAKER_TRITON_BUFFER_MANAGER_THREAD_COUNT",
	"SAGEMAKER_TRITON_LOG_VERBOSE", "SAGEMAKER_TRITON_LOG_INFO", "SAGEMAKER_TRITON_LOG_WARNING", "SAGEMAKER_TRITON_LOG_ERROR",
	"SAGEMAKER_TRITON_SHM_DEFAULT_BYTE_SIZE", "SAGEMAKER_TRITON_SHM_GROWTH_BYTE_SIZE",
	"SAGEMAKER_TRITON_TENSORFLOW_VERSION", "SAGEMAKER_TRITON_MODEL_LOAD_GPU_LIMIT",
	"SAGEMAKER_TRITON_ADDITIONAL_ARGS",
}

// runServe is `nereid serve`.
func runServe(args []string, stderr io.Writer) int {
	flags, notes, err := serveArgs(os.LookupEnv, os.Environ(), defaultServeLayout)
	for _, n := range notes {
		fmt.Fprintln(stderr, "serve:", n)
	}
	if err != nil {
		fmt.Fprintln(stderr, "error: serve:", err)
		return 1
	}
	if slices.Contains(flags, "--model-repository="+defaultServeLayout.mmeRepo) {
		// The multi-model endpoint's repository starts empty: loads
		// register the artefacts' repositories.
		if err := os.MkdirAll(defaultServeLayout.mmeRepo, 0o755); err != nil {
			fmt.Fprintln(stderr, "error: serve:", err)
			return 1
		}
	}
	fmt.Fprintln(stderr, "serve: nereid", strings.Join(append(flags, args...), " "))
	return run(append(flags, args...), stderr)
}

// serveArgs maps the environment to nereid's flags as Triton's serve
// script does, with notes for settings that take no effect in Nereid.
// getenv looks a variable up; environ is the whole environment, checked
// for SAGEMAKER_TRITON_* variables serve does not know. Every variable of
// Triton's script is mapped to a flag, noted as having no effect, or
// refused.
func serveArgs(getenv func(string) (string, bool), environ []string, layout serveLayout) (args, notes []string, err error) {
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "SAGEMAKER_TRITON_") && !slices.Contains(serveEnv, name) {
			notes = append(notes, name+" is not a variable nereid serve knows: ignored")
		}
	}
	env := func(name string) string {
		v, _ := getenv(name)
		return strings.TrimSpace(v)
	}
	var errs []error
	boolEnv := func(name, def string) string {
		v := env(name)
		if v == "" {
			return def
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q is not a boolean", name, v))
		}
		return strconv.FormatBool(b)
	}
	intEnv := func(name string) string {
		v := env(name)
		if v == "" {
			return ""
		}
		if _, err := strconv.Atoi(v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q is not an integer", name, v))
		}
		return v
	}
	add := func(flag, value string) {
		if value != "" {
			args = append(args, "--"+flag+"="+value)
		}
	}

	args = []string{"--allow-sagemaker=true", "--allow-http=false", "--model-control-mode=explicit"}
	multiModel := false
	if v := env("SAGEMAKER_MULTI_MODEL"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, notes, fmt.Errorf("SAGEMAKER_MULTI_MODEL=%q is not a boolean", v)
		}
		multiModel = b
	}
	pingMode := "ready"
	if multiModel {
		add("model-repository", layout.mmeRepo)
		pingMode = "live"
		if m := env("SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"); m != "" {
			notes = append(notes, "SAGEMAKER_TRITON_DEFAULT_MODEL_NAME="+m+" has no effect on a multi-model endpoint: /invocations has no model there")
		}
	} else {
		model, err := singleModel(layout.modelDir, env("SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"))
		if err != nil {
			return nil, notes, err
		}
		add("model-repository", layout.modelDir)
		add("load-model", model)
		add("sagemaker-default-model", model)
	}
	if v := env("SAGEMAKER_TRITON_PING_MODE"); v != "" {
		pingMode = v
	}
	if v := env("SAGEMAKER_TRITON_OVERRIDE_PING_MODE"); v != "" {
		pingMode = v
	}
	add("sagemaker-ping-mode", pingMode)
	add("sagemaker-inference-type", env("SAGEMAKER_TRITON_INFERENCE_TYPE"))

	switch v := env("SAGEMAKER_TRITON_DISABLE_MODEL_NAMESPACING"); v {
	case "", "false":
		// Nereid serves every model under one name space: names from
		// different artefacts must differ (a clash is a 409 on load).
	default:
		// Triton passes the value as is to --model-namespacing.
		errs = append(errs, fmt.Errorf("SAGEMAKER_TRITON_DISABLE_MODEL_NAMESPACING=%s asks for --model-namespacing=%s: Nereid has no model namespacing; unset it or set it to false", v, v))
	}

	add("sagemaker-port", intEnv("SAGEMAKER_BIND_TO_PORT"))
	add("sagemaker-safe-port-range", env("SAGEMAKER_SAFE_PORT_RANGE"))
	add("allow-grpc", boolEnv("SAGEMAKER_TRITON_ALLOW_GRPC", "false"))
	add("grpc-port", intEnv("SAGEMAKER_TRITON_GRPC_PORT"))
	add("allow-metrics", boolEnv("SAGEMAKER_TRITON_ALLOW_METRICS", "false"))
	add("metrics-port", intEnv("SAGEMAKER_TRITON_METRICS_PORT"))
	add("sagemaker-thread-count", intEnv("SAGEMAKER_TRITON_THREAD_COUNT"))
	if v := intEnv("SAGEMAKER_TRITON_BUFFER_MANAGER_THREAD_COUNT"); v != "" {
		add("buffer-manager-thread-count", v)
		notes = append(notes, "SAGEMAKER_TRITON_BUFFER_MANAGER_THREAD_COUNT has no effect: Nereid has no buffer-manager threads")
	}

	// Triton's serve logs verbosely unless told otherwise.
	switch v := strings.ToLower(env("SAGEMAKER_TRITON_LOG_VERBOSE")); v {
	case "", "true":
		add("log-verbose", "1")
	case "false":
		add("log-verbose", "0")
	default:
		if n, err := strconv.Atoi(v); err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("SAGEMAKER_TRITON_LOG_VERBOSE=%q is neither a boolean nor a level", v))
		}
		add("log-verbose", v)
	}
	add("log-info", boolEnv("SAGEMAKER_TRITON_LOG_INFO", ""))
	add("log-warning", boolEnv("SAGEMAKER_TRITON_LOG_WARNING", ""))
	add("log-error", boolEnv("SAGEMAKER_TRITON_LOG_ERROR", ""))

	shmDefault, shmGrowth := intEnv("SAGEMAKER_TRITON_SHM_DEFAULT_BYTE_SIZE"), intEnv("SAGEMAKER_TRITON_SHM_GROWTH_BYTE_SIZE")
	add("backend-config", "python,shm-default-byte-size="+cmp.Or(shmDefault, "16777216"))
	add("backend-config", "python,shm-growth-byte-size="+cmp.Or(shmGrowth, "1048576"))
	if v := env("SAGEMAKER_TRITON_TENSORFLOW_VERSION"); v != "" {
		add("backend-config", "tensorflow,version="+v)
		notes = append(notes, "SAGEMAKER_TRITON_TENSORFLOW_VERSION has no effect: Nereid has no TensorFlow backend")
	}
	if v := env("SAGEMAKER_TRITON_MODEL_LOAD_GPU_LIMIT"); v != "" {
		errs = append(errs, fmt.Errorf("SAGEMAKER_TRITON_MODEL_LOAD_GPU_LIMIT=%s: Nereid does not limit loads by GPU memory use; unset it (--model-cache-memory bounds the models' host memory)", v))
	}
	args = append(args, strings.Fields(env("SAGEMAKER_TRITON_ADDITIONAL_ARGS"))...)
	if err := errors.Join(errs...); err != nil {
		return nil, notes, err
	}
	return args, notes, nil
}

// singleModel picks the model of a single-model endpoint: the one named,
// else the artefact's only model directory. A config.pbtxt directly in
// the artefact is refused: the model must be in a directory of its own.
func singleModel(dir, named string) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, "config.pbtxt")); err == nil {
		return "", fmt.Errorf("%s/config.pbtxt: the model artefact must hold the model in a directory (%s/<model>/config.pbtxt)", dir, dir)
	}
	if named != "" {
		return named, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("reading the model artefact: %w", err)
	}
	var models []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") && e.IsDir() {
			models = append(models, e.Name())
		}
	}
	if len(models) != 1 {
		return "", fmt.Errorf("%s holds %d model directories (%s): set SAGEMAKER_TRITON_DEFAULT_MODEL_NAME to the one to serve",
			dir, len(models), strings.Join(models, ", "))
	}
	return models[0], nil
}
