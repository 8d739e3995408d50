package main

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestAnalyzeFlags(t *testing.T) {
	a, err := parseAnalyzeFlags([]string{
		"--model", "mlp_fp32", "--model-repository", "/repo", "--latency-budget-ms", "2.5",
		"--instances", "1, 3", "--max-batch-sizes", "1,16", "--queue-delays-us", "0,100,0", "--concurrency", "2",
		"--window", "300ms", "--warmup", "0",
		"--", "--backend-config=onnxruntime,library=/lib/ort.so", "--log-verbose=1",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o := a.opts
	if a.model != "mlp_fp32" || o.Model != "mlp_fp32" || a.repository != "/repo" || a.output != "analyze-mlp_fp32" {
		t.Errorf("model %q, repository %q, output %q", a.model, a.repository, a.output)
	}
	if o.LatencyBudget != 2500*time.Microsecond || o.Window != 300*time.Millisecond || o.Warmup >= 0 {
		t.Errorf("budget %v, window %v, warmup %v (want none: negative)", o.LatencyBudget, o.Window, o.Warmup)
	}
	s := o.Space
	if !slices.Equal(s.Instances, []int{1, 3}) || !slices.Equal(s.MaxBatchSizes, []int{1, 16}) ||
		!slices.Equal(s.QueueDelaysUS, []uint64{0, 100, 0}) || !slices.Equal(s.Concurrency, []int{2}) {
		t.Errorf("space %+v", s)
	}
	if !slices.Equal(a.server, []string{"--backend-config=onnxruntime,library=/lib/ort.so", "--log-verbose=1"}) {
		t.Errorf("server flags %q", a.server)
	}
}

func TestAnalyzeFlagDefaults(t *testing.T) {
	a, err := parseAnalyzeFlags([]string{"--model=m", "--url=127.0.0.1:8000"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o := a.opts
	if o.Window != 2*time.Second || o.Warmup != 500*time.Millisecond || o.LatencyBudget != 0 || o.RequestBatchSize != 1 || o.DimSize != 1 {
		t.Errorf("defaults %+v", o)
	}
	if len(o.Space.Instances) == 0 || !slices.Equal(o.Space.Concurrency, []int{1, 4, 16}) {
		t.Errorf("default space %+v", o.Space)
	}
}

func TestAnalyzeFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--model-repository=/r"}, "--model is required"},
		{[]string{"--model=m"}, "give --model-repository"},
		{[]string{"--model=m", "--model-repository=/r", "--url=h:1"}, "exclude each other"},
		{[]string{"--model=m", "--url=h:1", "--", "--log-verbose=1"}, "already running"},
		{[]string{"--model=m", "--url=h:1", "--instances=0"}, `--instances: "0" is not an integer of at least 1`},
		{[]string{"--model=m", "--url=h:1", "--concurrency=,"}, "--concurrency: no values"},
		{[]string{"--model=m", "--url=h:1", "--queue-delays-us=-5"}, `--queue-delays-us: "-5"`},
		{[]string{"--model=m", "--url=h:1", "--latency-budget-ms=-1"}, "must not be negative"},
		{[]string{"--model=m", "--url=h:1", "--window=0s"}, "--window 0s must be positive"},
		{[]string{"--model=m", "--url=h:1", "extra"}, `unexpected argument "extra"`},
	} {
		_, err := parseAnalyzeFlags(tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestRunAnalyzeUsage(t *testing.T) {
	var stderr bytes.Buffer
	if rc := run([]string{"analyze", "--model=m"}, &stderr); rc != 2 || !strings.Contains(stderr.String(), "error: analyze: give --model-repository") {
		t.Errorf("rc %d, stderr %q", rc, stderr.String())
	}
	stderr.Reset()
	if rc := run([]string{"analyze", "--help"}, &stderr); rc != 0 || !strings.Contains(stderr.String(), "-latency-budget-ms float") {
		t.Errorf("--help: rc %d, stderr %q", rc, stderr.String())
	}
}
