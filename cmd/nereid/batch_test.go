package main

import (
	"flag"
	"slices"
	"strings"
	"testing"
)

func TestSplitBatchArgs(t *testing.T) {
	var c batchConfig
	fs := flag.NewFlagSet("nereid batch", flag.ContinueOnError)
	c.register(fs)
	own, server := splitBatchArgs(fs, []string{
		"--model", "mlp_fp32", "--input=data.jsonl", "-output", "out",
		"--model-repository", "/repo", "--log-verbose=1", "--batch-size=8",
		"--strict-readiness=false", "--backend-config", "onnxruntime,library=/x.so", "stray", "--", "--model", "server's",
	})
	if want := []string{"--model", "mlp_fp32", "--input=data.jsonl", "-output", "out", "--batch-size=8", "stray"}; !slices.Equal(own, want) {
		t.Errorf("batch's flags %q, want %q", own, want)
	}
	if want := []string{"--model-repository", "/repo", "--log-verbose=1", "--strict-readiness=false", "--backend-config", "onnxruntime,library=/x.so", "--model", "server's"}; !slices.Equal(server, want) {
		t.Errorf("server's flags %q, want %q", server, want)
	}
	if err := fs.Parse(own); err != nil || c.opts.Model != "mlp_fp32" || c.opts.BatchSize != 8 || fs.Arg(0) != "stray" {
		t.Errorf("parsed %v: %+v", err, c.opts)
	}
}

func TestRunBatchUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--model=m"}, 2, "--model, --input and --output are required"},
		{[]string{"--model=m", "--input=i.jsonl", "--output=o", "--url=localhost:1", "--model-repository=/r"}, 2, "server flags have no effect with --url"},
		{[]string{"--model=m", "--input=i.jsonl", "--output=o", "--max-concurrency=x"}, 2, "invalid value"},
		{[]string{"--help"}, 0, "usage: nereid batch"},
		{[]string{"--model=m", "--input=i.jsonl", "--output=o"}, 1, "--model-repository must be given"},
	} {
		var b strings.Builder
		if code := run(append([]string{"batch"}, tt.args...), &b); code != tt.code || !strings.Contains(b.String(), tt.msg) {
			t.Errorf("nereid batch %s: exit %d, want %d; output %q, want %q in it", strings.Join(tt.args, " "), code, tt.code, b.String(), tt.msg)
		}
	}
}
