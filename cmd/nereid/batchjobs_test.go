package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestBatchJobsFlags(t *testing.T) {
	c, err := parseFlags([]string{"--model-repository=r"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if jc := c.async.jobs; jc.allow || jc.root != "" || jc.maxRunning != 2 {
		t.Errorf("defaults %+v", jc)
	}
	c, err = parseFlags([]string{"--model-repository=r", "--allow-batch-jobs=true", "--batch-jobs-root=/data",
		"--batch-jobs-max-running=5"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if jc := c.async.jobs; !jc.allow || jc.root != "/data" || jc.maxRunning != 5 || c.async.allow {
		t.Errorf("parsed %+v", jc)
	}
	for bad, want := range map[string]string{
		"--allow-batch-jobs=true":    "--batch-jobs-root is required with --allow-batch-jobs",
		"--batch-jobs-max-running=0": "--batch-jobs-max-running: 0 must be positive",
	} {
		if _, err := parseFlags([]string{"--model-repository=r", bad}, io.Discard); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", bad, err, want)
		}
	}
}

func TestLongJobsHandler(t *testing.T) {
	tag := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, name) })
	}
	for _, tc := range []struct {
		async      http.Handler
		path, want string
		code       int
	}{
		{tag("async"), "/v2/batch/jobs", "jobs", 200},
		{tag("async"), "/v2/batch/jobs/abc/resume", "jobs", 200},
		{tag("async"), "/v2/batch/jobsx", "async", 200},
		{tag("async"), "/v2/models/m/infer", "async", 200},
		{nil, "/v2/batch/jobs/abc", "jobs", 200},
		{nil, "/v2/models/m/infer", `{"error":"asynchronous inference is off (--allow-async=true serves it)`, 404},
	} {
		rec := httptest.NewRecorder()
		longJobsHandler(tc.async, tag("jobs")).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
		if rec.Code != tc.code || !strings.HasPrefix(rec.Body.String(), tc.want) {
			t.Errorf("%s (async %v): %d %s", tc.path, tc.async != nil, rec.Code, rec.Body)
		}
	}
}
