package main

import (
	"bytes"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// implementedFlags are the flags Nereid implements. A flag added to the
// binary must be listed here, or be one of warnedFlags or refusedFlags:
// TestEveryFlagHasADecision fails otherwise.
var implementedFlags = []string{
	"allow-async", "async-address", "async-dir", "async-max-attempts", "async-max-concurrent-invocations",
	"async-max-queue", "async-max-request-bytes", "async-notify-attempts", "async-notify-timeout-secs", "async-port",
	"async-result-ttl-secs", "allow-batch-jobs", "batch-jobs-max-running", "batch-jobs-root",
	"allow-client-shm", "allow-cpu-metrics", "allow-gpu-metrics", "allow-grpc", "allow-http", "allow-metrics",
	"allow-sagemaker", "backend-config", "cache-config", "cloud-mount-directory", "disable-auto-complete-config", "exit-on-error",
	"exit-timeout-secs", "grpc-address", "grpc-header-forward-pattern", "grpc-http2-max-ping-strikes",
	"grpc-http2-max-pings-without-data", "grpc-http2-min-recv-ping-interval-without-data",
	"grpc-infer-response-compression-level", "grpc-keepalive-permit-without-calls", "grpc-keepalive-time",
	"grpc-keepalive-timeout", "grpc-max-connection-age", "grpc-max-connection-age-grace", "grpc-max-connections",
	"grpc-max-message-size", "grpc-port", "grpc-restricted-protocol", "grpc-root-cert", "grpc-server-cert",
	"grpc-server-key", "grpc-use-ssl", "grpc-use-ssl-mutual", "http-address", "http-header-forward-pattern",
	"http-idle-timeout-secs", "http-max-connections", "http-max-connections-per-client", "http-max-input-size",
	"http-port", "http-read-timeout-secs", "http-restricted-api", "http-root-cert", "http-server-cert",
	"http-server-key", "http-use-ssl", "http-use-ssl-mutual", "metrics-root-cert", "metrics-server-cert",
	"metrics-server-key", "metrics-use-ssl", "metrics-use-ssl-mutual", "id", "load-model", "log-error", "log-file",
	"log-format", "log-info", "log-verbose", "log-warning", "metrics-address", "metrics-config",
	"metrics-interval-ms", "metrics-port", "model-cache-gpu-memory", "model-cache-memory", "model-config-name",
	"model-control-mode", "model-idle-unload-secs", "model-load-on-demand", "model-load-retry-count",
	"model-load-thread-count", "model-repository", "model-store", "allow-modelmesh", "modelmesh-address",
	"modelmesh-default-model-size", "modelmesh-load-timeout-secs", "modelmesh-port", "payload-budget-bytes", "pprof-address",
	"rate-limit", "rate-limit-resource", "repository-poll-secs", "response-cache-byte-size",
	"sagemaker-address", "sagemaker-default-model", "sagemaker-inference-type", "sagemaker-model-root",
	"sagemaker-ping-mode", "sagemaker-port", "sagemaker-safe-port-range", "sagemaker-thread-count",
	"shared-memory-max-regions", "strict-model-config", "strict-readiness", "trace-config", "trace-count",
	"trace-file", "trace-level", "trace-log-frequency", "trace-rate", "traffic-config",
}

// tritonFlags are Triton's own flags (tritonserver 2.5x), which a launch
// script may pass: every one must be known to Nereid.
var tritonFlags = strings.Fields(`
model-repository model-store model-control-mode load-model repository-poll-secs model-config-name
model-load-thread-count model-load-retry-count model-namespacing strict-model-config disable-auto-complete-config
exit-on-error strict-readiness exit-timeout-secs id
allow-http http-port http-address reuse-http-port http-thread-count http-max-input-size
http-header-forward-pattern http-restricted-api
allow-grpc grpc-port grpc-address grpc-restricted-protocol grpc-header-forward-pattern grpc-use-ssl
grpc-use-ssl-mutual grpc-server-cert grpc-server-key grpc-root-cert grpc-infer-response-compression-level
grpc-keepalive-time grpc-keepalive-timeout grpc-keepalive-permit-without-calls grpc-http2-max-pings-without-data
grpc-http2-min-recv-ping-interval-without-data grpc-http2-max-ping-strikes grpc-max-connection-age
grpc-max-connection-age-grace reuse-grpc-port grpc-infer-allocation-pool-size grpc-max-response-pool-size
grpc-infer-thread-count
allow-metrics metrics-port metrics-address allow-gpu-metrics allow-cpu-metrics metrics-interval-ms metrics-config
log-verbose log-info log-warning log-error log-format log-file
rate-limit rate-limit-resource pinned-memory-pool-byte-size cuda-memory-pool-byte-size cuda-virtual-address-size
buffer-manager-thread-count model-load-gpu-limit host-policy backend-directory backend-config
repoagent-directory cache-config cache-directory response-cache-byte-size allow-client-shm
trace-config trace-file trace-level trace-rate trace-count trace-log-frequency
min-supported-compute-capability enable-peer-access
allow-sagemaker sagemaker-port sagemaker-safe-port-range sagemaker-thread-count
allow-vertex-ai vertex-ai-port vertex-ai-default-model vertex-ai-thread-count
`)

// registeredFlags lists every flag the binary defines, from --help.
func registeredFlags(t *testing.T) []string {
	t.Helper()
	var help bytes.Buffer
	if _, err := parseFlags([]string{"--help"}, &help); !errors.Is(err, errHelp) {
		t.Fatalf("--help: %v", err)
	}
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(help.String(), -1) {
		names = append(names, m[1])
	}
	return names
}

func TestEveryFlagHasADecision(t *testing.T) {
	for _, name := range registeredFlags(t) {
		_, warned := warnedFlags[name]
		_, refused := refusedFlags[name]
		implemented := slices.Contains(implementedFlags, name)
		if n := btoi(warned) + btoi(refused) + btoi(implemented); n != 1 {
			t.Errorf("--%s: implemented %v, warned %v, refused %v: exactly one decision is needed", name, implemented, warned, refused)
		}
	}
	registered := registeredFlags(t)
	for _, name := range tritonFlags {
		if !slices.Contains(registered, name) {
			t.Errorf("Triton's --%s is unknown to Nereid: a launch script passing it would fail", name)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestCompatFlagDecisions(t *testing.T) {
	c, err := parseFlags([]string{"--model-repository=r", "--http-thread-count=16", "--host-policy=numa,numa-node=0",
		"--model-namespacing=false", "--allow-vertex-ai=0"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.warnedFlags, []string{"--host-policy", "--http-thread-count"}) {
		t.Errorf("warned flags %v", c.warnedFlags)
	}
	for _, tc := range []struct{ arg, want string }{
		{"--model-namespacing=true", "--model-namespacing=true: model namespacing is not implemented"},
		{"--model-load-gpu-limit=0:0.5", "--model-load-gpu-limit=0:0.5: GPU memory limits"},
		{"--allow-vertex-ai=true", "the Vertex AI front end is not implemented"},
		{"--http-header-forward-pattern=(", "invalid --http-header-forward-pattern"},
		{"--model-load-retry-count=-1", "must not be negative"},
	} {
		_, err := parseFlags([]string{"--model-repository=r", tc.arg}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.arg, err, tc.want)
		}
	}
	c, err = parseFlags([]string{"--model-repository=r", "--grpc-header-forward-pattern=^x-", "--model-load-retry-count=2"}, &bytes.Buffer{})
	if err != nil || c.grpcForward == nil || !c.grpcForward.MatchString("X-Trace") || c.loadRetries != 2 {
		t.Errorf("forward pattern %v, retries %d, err %v", c.grpcForward, c.loadRetries, err)
	}
}
