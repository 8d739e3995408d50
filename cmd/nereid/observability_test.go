package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nereid-project/nereid/logging"
	"github.com/nereid-project/nereid/server/restricted"
	"github.com/nereid-project/nereid/trace"
)

func TestObservabilityFlags(t *testing.T) {
	c, err := parseFlags([]string{
		"--model-repository=r", "--log-format=ISO8601", "--log-file=/tmp/n.log",
		"--allow-gpu-metrics=false", "--allow-cpu-metrics=true", "--metrics-interval-ms=500",
		"--metrics-config=summary_latencies=true", "--metrics-config", "summary_quantiles=0.5:0.01",
		"--trace-config=triton,file=/tmp/t.json", "--trace-config", "level=TIMESTAMPS", "--trace-rate=10",
		"--http-restricted-api=inference,health:k=v", "--grpc-restricted-protocol=logging:Admin=x",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o := c.obs
	if o.logFormat != logging.FormatISO8601 || o.logFile != "/tmp/n.log" || o.allowGPUMetrics || !o.allowCPUMetrics || o.metricsInterval != 500*time.Millisecond {
		t.Errorf("%+v", o)
	}
	if !o.metricsConfig.SummaryLatencies || !o.metricsConfig.CounterLatencies || o.metricsConfig.SummaryQuantiles[0.5] != 0.01 {
		t.Errorf("metrics config %+v", o.metricsConfig)
	}
	if o.trace.Level != trace.LevelTimestamps || o.trace.Rate != 10 || o.trace.File != "/tmp/t.json" {
		t.Errorf("trace %+v", o.trace)
	}
	if o.httpRestricted[restricted.Health].Header != "k" || o.grpcRestricted[restricted.Logging].Header != "triton-grpc-protocol-admin" {
		t.Errorf("restricted %v %v", o.httpRestricted, o.grpcRestricted)
	}
	d, err := parseFlags([]string{"--model-repository=r"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if d.obs.logFormat != logging.FormatDefault || !d.obs.allowGPUMetrics || d.obs.metricsInterval != 2*time.Second ||
		d.obs.trace.Level != 0 || d.obs.trace.Rate != 1000 || len(d.obs.httpRestricted) != 0 {
		t.Errorf("defaults %+v", d.obs)
	}
	for _, bad := range [][]string{
		{"--log-format=json"},
		{"--metrics-interval-ms=0"},
		{"--metrics-config=summary_latencies=perhaps"},
		{"--trace-config=level=loud"},
		{"--http-restricted-api=everything:k=v"},
		{"--grpc-restricted-protocol=inference"},
		{"--log-verbose=-1"},
	} {
		c, err := parseFlags(append([]string{"--model-repository=r"}, bad...), io.Discard)
		if err == nil && strings.HasPrefix(bad[0], "--log-verbose") {
			_, _, err = newLogger(c, io.Discard)
		}
		if err == nil {
			t.Errorf("%v: want an error", bad)
		}
	}
}
