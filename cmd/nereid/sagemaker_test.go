package main

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/nereid-project/nereid/server/sagemaker"
)

func TestSageMakerFlags(t *testing.T) {
	c, err := parseFlags([]string{"--model-repository=r"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	sc := c.sagemaker
	if sc.allow || sc.port != 8080 || sc.threads != 8 || sc.pingMode != sagemaker.PingReady ||
		sc.inferenceType != sagemaker.InferTensors || sc.modelRoot != "/opt/ml/models" || sc.safeRange.hi != 0 {
		t.Errorf("defaults %+v", sc)
	}
	c, err = parseFlags([]string{"--model-repository=r", "--allow-sagemaker=true", "--sagemaker-port=9090",
		"--sagemaker-safe-port-range=8000-8100", "--sagemaker-thread-count=2", "--sagemaker-ping-mode=live",
		"--sagemaker-default-model=m", "--sagemaker-inference-type=generate", "--sagemaker-model-root=/x"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	sc = c.sagemaker
	if !sc.allow || sc.port != 9090 || sc.safeRange != (portRange{8000, 8100}) || sc.threads != 2 || sc.pingMode != sagemaker.PingLive ||
		sc.defaultModel != "m" || sc.inferenceType != sagemaker.Generate || sc.modelRoot != "/x" {
		t.Errorf("parsed %+v", sc)
	}
	for _, bad := range []string{"--sagemaker-safe-port-range=9000", "--sagemaker-safe-port-range=9-8", "--sagemaker-safe-port-range=0-10",
		"--sagemaker-ping-mode=up", "--sagemaker-inference-type=predict"} {
		if _, err := parseFlags([]string{"--model-repository=r", bad}, io.Discard); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestSageMakerSafePortRange(t *testing.T) {
	parse := func(args ...string) *config {
		t.Helper()
		c, err := parseFlags(append([]string{"--model-repository=r", "--allow-sagemaker=true"}, args...), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := parse("--sagemaker-safe-port-range=8000-8002")
	if err := c.sagemaker.checkSafePorts(c); err != nil {
		t.Errorf("default ports inside the range: %v", err)
	}
	c = parse("--sagemaker-safe-port-range=8000-8001")
	if err := c.sagemaker.checkSafePorts(c); err == nil || err.Error() != "--metrics-port=8002 is outside --sagemaker-safe-port-range=8000-8001" {
		t.Errorf("metrics port outside: %v", err)
	}
	c = parse("--sagemaker-safe-port-range=8000-8001", "--allow-metrics=false")
	if err := c.sagemaker.checkSafePorts(c); err != nil {
		t.Errorf("a disabled listener's port is not checked: %v", err)
	}
	c = parse("--sagemaker-safe-port-range=20000-20100", "--allow-http=false", "--allow-metrics=false", "--grpc-port=9001")
	if err := c.sagemaker.checkSafePorts(c); err == nil || !strings.Contains(err.Error(), "--grpc-port=9001") {
		t.Errorf("gRPC port outside: %v", err)
	}
}

// fakeEnv is an environment for serveArgs.
func fakeEnv(vars map[string]string) (func(string) (string, bool), []string) {
	var environ []string
	for k, v := range vars {
		environ = append(environ, k+"="+v)
	}
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }, environ
}

func serveLayoutWith(t *testing.T, models ...string) serveLayout {
	t.Helper()
	dir := t.TempDir()
	for _, m := range models {
		if err := os.MkdirAll(filepath.Join(dir, "model", m), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "model"), 0o755); err != nil {
		t.Fatal(err)
	}
	return serveLayout{modelDir: filepath.Join(dir, "model"), mmeRepo: filepath.Join(dir, "mme")}
}

func TestServeArgsMultiModel(t *testing.T) {
	layout := serveLayoutWith(t)
	getenv, environ := fakeEnv(map[string]string{
		"SAGEMAKER_MULTI_MODEL":                        "true",
		"SAGEMAKER_BIND_TO_PORT":                       "9090",
		"SAGEMAKER_SAFE_PORT_RANGE":                    "9000-9999",
		"SAGEMAKER_TRITON_ALLOW_GRPC":                  "true",
		"SAGEMAKER_TRITON_GRPC_PORT":                   "9001",
		"SAGEMAKER_TRITON_THREAD_COUNT":                "16",
		"SAGEMAKER_TRITON_LOG_VERBOSE":                 "false",
		"SAGEMAKER_TRITON_LOG_INFO":                    "false",
		"SAGEMAKER_TRITON_SHM_DEFAULT_BYTE_SIZE":       "1000",
		"SAGEMAKER_TRITON_DISABLE_MODEL_NAMESPACING":   "false",
		"SAGEMAKER_TRITON_ADDITIONAL_ARGS":             "--exit-timeout-secs=5  --id=x",
		"SAGEMAKER_TRITON_BUFFER_MANAGER_THREAD_COUNT": "2",
		"SAGEMAKER_TRITON_UNHEARD_OF":                  "1",
	})
	args, notes, err := serveArgs(getenv, environ, layout)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"--allow-sagemaker=true", "--allow-http=false", "--model-control-mode=explicit",
		"--model-repository=" + layout.mmeRepo, "--sagemaker-ping-mode=live",
		"--sagemaker-port=9090", "--sagemaker-safe-port-range=9000-9999",
		"--allow-grpc=true", "--grpc-port=9001", "--allow-metrics=false",
		"--sagemaker-thread-count=16", "--buffer-manager-thread-count=2",
		"--log-verbose=0", "--log-info=false",
		"--backend-config=python,shm-default-byte-size=1000", "--backend-config=python,shm-growth-byte-size=1048576",
		"--exit-timeout-secs=5", "--id=x",
	}
	if !reflect.DeepEqual(args, want) {
		t.Errorf("args\n got %q\nwant %q", args, want)
	}
	if n := strings.Join(notes, "\n"); !strings.Contains(n, "SAGEMAKER_TRITON_UNHEARD_OF is not a variable") ||
		!strings.Contains(n, "BUFFER_MANAGER_THREAD_COUNT has no effect") {
		t.Errorf("notes %q", notes)
	}
	// The flags parse, and the safe range holds the enabled listeners.
	c, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.sagemaker.checkSafePorts(c); err != nil || c.allowHTTP || !c.sagemaker.allow || c.sagemaker.pingMode != sagemaker.PingLive {
		t.Errorf("parsed: %v %+v", err, c.sagemaker)
	}
}

func TestServeArgsSingleModel(t *testing.T) {
	layout := serveLayoutWith(t, "resnet")
	getenv, environ := fakeEnv(map[string]string{"SAGEMAKER_TRITON_INFERENCE_TYPE": "generate_stream"})
	args, _, err := serveArgs(getenv, environ, layout)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"--allow-sagemaker=true", "--allow-http=false", "--model-control-mode=explicit",
		"--model-repository=" + layout.modelDir, "--load-model=resnet", "--sagemaker-default-model=resnet",
		"--sagemaker-ping-mode=ready", "--sagemaker-inference-type=generate_stream",
		"--allow-grpc=false", "--allow-metrics=false", "--log-verbose=1",
		"--backend-config=python,shm-default-byte-size=16777216", "--backend-config=python,shm-growth-byte-size=1048576",
	}
	if !reflect.DeepEqual(args, want) {
		t.Errorf("args\n got %q\nwant %q", args, want)
	}
	c, err := parseFlags(args, io.Discard)
	if err != nil || c.sagemaker.defaultModel != "resnet" || c.sagemaker.inferenceType != sagemaker.GenerateStream {
		t.Errorf("parsed: %v %+v", err, c)
	}

	// Ping mode: an explicit SAGEMAKER_TRITON_PING_MODE, then the override.
	getenv, environ = fakeEnv(map[string]string{"SAGEMAKER_TRITON_PING_MODE": "live"})
	if args, _, err := serveArgs(getenv, environ, layout); err != nil || !slices.Contains(args, "--sagemaker-ping-mode=live") {
		t.Errorf("ping mode: %v %q", err, args)
	}
	getenv, environ = fakeEnv(map[string]string{"SAGEMAKER_TRITON_PING_MODE": "live", "SAGEMAKER_TRITON_OVERRIDE_PING_MODE": "ready"})
	if args, _, err := serveArgs(getenv, environ, layout); err != nil || !slices.Contains(args, "--sagemaker-ping-mode=ready") {
		t.Errorf("override: %v %q", err, args)
	}

	// Several models: the named one.
	two := serveLayoutWith(t, "a", "b")
	getenv, environ = fakeEnv(map[string]string{"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "b"})
	if args, _, err := serveArgs(getenv, environ, two); err != nil || !slices.Contains(args, "--load-model=b") || !slices.Contains(args, "--sagemaker-default-model=b") {
		t.Errorf("named model: %v %q", err, args)
	}
}

func TestServeArgsRefusals(t *testing.T) {
	one := serveLayoutWith(t, "m")
	flat := serveLayoutWith(t)
	if err := os.WriteFile(filepath.Join(flat.modelDir, "config.pbtxt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		layout serveLayout
		env    map[string]string
		want   string
	}{
		{serveLayoutWith(t), nil, "holds 0 model directories"},
		{serveLayoutWith(t, "a", "b"), nil, "holds 2 model directories (a, b): set SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"},
		{flat, nil, "must hold the model in a directory"},
		{one, map[string]string{"SAGEMAKER_MULTI_MODEL": "yes"}, "SAGEMAKER_MULTI_MODEL=\"yes\" is not a boolean"},
		{one, map[string]string{"SAGEMAKER_TRITON_ALLOW_GRPC": "maybe"}, "SAGEMAKER_TRITON_ALLOW_GRPC=\"maybe\" is not a boolean"},
		{one, map[string]string{"SAGEMAKER_TRITON_GRPC_PORT": "x"}, "SAGEMAKER_TRITON_GRPC_PORT=\"x\" is not an integer"},
		{one, map[string]string{"SAGEMAKER_TRITON_LOG_VERBOSE": "loud"}, "neither a boolean nor a level"},
		{one, map[string]string{"SAGEMAKER_TRITON_DISABLE_MODEL_NAMESPACING": "true"}, "Nereid has no model namespacing"},
		{one, map[string]string{"SAGEMAKER_TRITON_MODEL_LOAD_GPU_LIMIT": "0.8"}, "does not limit loads by GPU memory"},
	} {
		getenv, environ := fakeEnv(tc.env)
		if _, _, err := serveArgs(getenv, environ, tc.layout); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error containing %q", tc.env, err, tc.want)
		}
	}
	// An invalid inference type or ping mode passes through to the flags,
	// which refuse it.
	getenv, environ := fakeEnv(map[string]string{"SAGEMAKER_TRITON_INFERENCE_TYPE": "predict"})
	args, _, err := serveArgs(getenv, environ, one)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseFlags(args, io.Discard); err == nil || !strings.Contains(err.Error(), "predict") {
		t.Errorf("inference type predict: %v", err)
	}
	getenv, environ = fakeEnv(map[string]string{"SAGEMAKER_TRITON_TENSORFLOW_VERSION": "2"})
	args, notes, err := serveArgs(getenv, environ, one)
	if err != nil || !slices.Contains(args, "--backend-config=tensorflow,version=2") || len(notes) != 1 {
		t.Errorf("tensorflow: %v %q %q", err, args, notes)
	}
}
