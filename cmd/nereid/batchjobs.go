package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"strings"

	"github.com/nereid-project/nereid/batch"
	"github.com/nereid-project/nereid/server"
)

// batchJobsConfig is the batch transform as a server job API
// (batch.Jobs), served on the asynchronous inference listener: the port
// of long jobs (Nereid only).
type batchJobsConfig struct {
	allow      bool
	root       string
	maxRunning int
}

func (c *batchJobsConfig) register(fs *flag.FlagSet) {
	fs.BoolVar(&c.allow, "allow-batch-jobs", false,
		"serve batch transform jobs (/v2/batch/jobs) on the asynchronous inference port (--async-port), "+
			"run in process over data sets under --batch-jobs-root (Nereid only)")
	fs.StringVar(&c.root, "batch-jobs-root", "",
		"directory every batch job's input and output must be under (relative paths are taken under it), "+
			"and where the job list is kept; one server per directory; required with --allow-batch-jobs (Nereid only)")
	fs.IntVar(&c.maxRunning, "batch-jobs-max-running", batch.DefaultMaxRunningJobs,
		"batch jobs running at once; more wait, queued (Nereid only)")
}

func (c *batchJobsConfig) finish() error {
	if c.maxRunning <= 0 {
		return fmt.Errorf("--batch-jobs-max-running: %d must be positive", c.maxRunning)
	}
	if c.allow && c.root == "" {
		return fmt.Errorf("--batch-jobs-root is required with --allow-batch-jobs: jobs read and write only under it")
	}
	return nil
}

// openBatchJobs opens the job list and resumes the jobs that were queued
// or running; the jobs run on the core in process, as `nereid batch`
// runs them.
func (s *servers) openBatchJobs(c *config, core *server.Server) (*batch.Jobs, error) {
	jc := &c.async.jobs
	jobs, err := batch.OpenJobs(batch.InProcess(core), batch.JobsOptions{
		Root:       jc.root,
		MaxRunning: jc.maxRunning,
		Restricted: c.obs.httpRestricted,
		Logger:     s.log,
	})
	if err != nil {
		return nil, fmt.Errorf("--batch-jobs-root: %w", err)
	}
	return jobs, nil
}

// longJobsHandler serves the long jobs port: the batch job API under
// batch.JobsPath and everything else asynchronous inference's, which
// answers 404 when it is off (async nil).
func longJobsHandler(async, jobs http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		switch {
		case jobs != nil && (p == batch.JobsPath || strings.HasPrefix(p, batch.JobsPath+"/")):
			jobs.ServeHTTP(w, r)
		case async != nil:
			async.ServeHTTP(w, r)
		default:
			b, _ := json.Marshal(map[string]string{"error": "asynchronous inference is off (--allow-async=true serves it); " +
				"this port serves the batch jobs under " + batch.JobsPath})
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write(b)
		}
	})
}
