package main

import (
	"io"
	"testing"
	"time"

	"github.com/nereid-project/nereid/repository"
)

func TestParseTritonFlags(t *testing.T) {
	// The flags KServe's and ModelMesh's Triton runtimes pass.
	c, err := parseFlags([]string{
		"--model-store=/mnt/models", "--model-repository=/other", "--grpc-port=9000", "--http-port=8080",
		"--allow-grpc=true", "--allow-http=true", "--model-control-mode=explicit", "--strict-model-config=false",
		"--strict-readiness=false", "--allow-sagemaker=false", "--load-model=a", "--load-model", "b",
		"--backend-config=onnxruntime,library=/x/lib.so", "--backend-config=default-max-batch-size=4",
		"--repository-poll-secs=3", "--exit-on-error=false", "--log-verbose=1",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.repositories) != 2 || c.repositories[0] != "/mnt/models" || c.grpcPort != 9000 || c.httpPort != 8080 {
		t.Errorf("repos %v ports %d %d", c.repositories, c.httpPort, c.grpcPort)
	}
	if c.controlMode != repository.ModeExplicit || c.strictReadiness || c.exitOnError || !c.autoComplete() {
		t.Errorf("mode %v strict %v exit %v", c.controlMode, c.strictReadiness, c.exitOnError)
	}
	if len(c.loadModels) != 2 || c.pollInterval != 3*time.Second || c.logVerbose != 1 {
		t.Errorf("load %v poll %v", c.loadModels, c.pollInterval)
	}
	if c.backendConfig["onnxruntime"]["library"] != "/x/lib.so" || c.backendConfig[""]["default-max-batch-size"] != "4" {
		t.Errorf("backend config %v", c.backendConfig)
	}
}

func TestParseFlagsDefaults(t *testing.T) {
	c, err := parseFlags([]string{"--model-repository=r"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.httpPort != 8000 || c.grpcPort != 8001 || c.metricsPort != 8002 || !c.exitOnError || !c.strictReadiness ||
		c.controlMode != repository.ModeNone || c.httpMaxInputSize != 64<<20 || c.exitTimeout != 30*time.Second {
		t.Errorf("defaults %+v", c)
	}
}

func TestParseFlagsErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--model-repository=r", "--model-control-mode=sometimes"},
		{"--model-repository=r", "--no-such-flag=1"},
		{"--model-repository=r", "--http-port=70000"},
		{"--model-repository=r", "--backend-config=onnxruntime"},
		{"--model-repository=r", "--model-control-mode=poll", "--repository-poll-secs=0"},
		{"--model-repository=r", "stray"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
}

func TestHostPort(t *testing.T) {
	if got := hostPort("0.0.0.0", 80); got != "0.0.0.0:80" {
		t.Error(got)
	}
	for _, a := range []string{"::1", "ipv6:[::1]", "[::1]"} {
		if got := hostPort(a, 80); got != "[::1]:80" {
			t.Errorf("hostPort(%q) = %s", a, got)
		}
	}
}
