package batch

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/server/restricted"
)

// gateTarget is echoTarget, but a request holding a record from `from`
// on waits until open is closed (or its job stops).
type gateTarget struct {
	*echoTarget
	from int
	open chan struct{}
}

func newGate(from int) *gateTarget {
	return &gateTarget{echoTarget: newEcho(), from: from, open: make(chan struct{})}
}

func (g *gateTarget) Infer(ctx context.Context, req *inference.Request) (*inference.Response, error) {
	vals := float32s(req.Inputs[0].Data)
	if len(vals) > 0 && int(vals[len(vals)-1]) >= g.from {
		select {
		case <-g.open:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.echoTarget.Infer(ctx, req)
}

func openJobs(t *testing.T, target Target, root string, maxRunning int) *Jobs {
	t.Helper()
	m, err := OpenJobs(target, JobsOptions{Root: root, MaxRunning: maxRunning})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func closeJobs(t *testing.T, m *Jobs) {
	t.Helper()
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// call serves one request and decodes its answer into out (when not nil).
func call(t *testing.T, m *Jobs, method, path string, body any, out any) int {
	t.Helper()
	var b []byte
	switch v := body.(type) {
	case nil:
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	rec := httptest.NewRecorder()
	m.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(string(b))))
	if rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("%s %s: content type %q", method, path, rec.Header().Get("Content-Type"))
	}
	if out != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, rec.Body)
		}
	}
	return rec.Code
}

type apiError struct {
	Error string `json:"error"`
}

func submit(t *testing.T, m *Jobs, req map[string]any) JobStatus {
	t.Helper()
	var st JobStatus
	if code := call(t, m, http.MethodPost, JobsPath, req, &st); code != http.StatusCreated {
		t.Fatalf("submit %v: %d", req, code)
	}
	return st
}

func status(t *testing.T, m *Jobs, id string) JobStatus {
	t.Helper()
	var st JobStatus
	if code := call(t, m, http.MethodGet, JobsPath+"/"+id, nil, &st); code != http.StatusOK {
		t.Fatalf("status %s: %d", id, code)
	}
	return st
}

// refused checks that a request is answered code with an error naming
// want.
func refused(t *testing.T, m *Jobs, method, path string, body any, code int, want string) {
	t.Helper()
	var e apiError
	if got := call(t, m, method, path, body, &e); got != code || !strings.Contains(e.Error, want) {
		t.Errorf("%s %s %v: %d %q, want %d with %q", method, path, body, got, e.Error, code, want)
	}
}

func TestJobsPathsStayUnderTheRoot(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	writeData(t, filepath.Join(root, "d.jsonl"), 10, nil)
	writeData(t, filepath.Join(outside, "secret.jsonl"), 10, nil)
	must(t, os.Symlink(filepath.Join(outside, "secret.jsonl"), filepath.Join(root, "link.jsonl")))
	must(t, os.Symlink(outside, filepath.Join(root, "away")))
	must(t, os.Mkdir(filepath.Join(root, "set"), 0o755))
	must(t, os.Symlink(filepath.Join(outside, "secret.jsonl"), filepath.Join(root, "set", "a.jsonl")))
	must(t, os.Symlink(filepath.Join(root, "nothing"), filepath.Join(root, "dangling")))
	m := openJobs(t, newEcho(), root, 1)
	defer closeJobs(t, m)

	for _, tc := range []struct{ input, output, want string }{
		{"../" + filepath.Base(outside) + "/secret.jsonl", "o", `'input' "../`},
		{filepath.Join(outside, "secret.jsonl"), "o", "is outside the batch jobs root"},
		{"link.jsonl", "o", `'input' "link.jsonl" links outside the batch jobs root`},
		{"away/secret.jsonl", "o", `'input' "away/secret.jsonl" links outside`},
		{"set", "o", `'input' "set": a.jsonl links outside the batch jobs root`},
		{"d.jsonl", "../o", `'output' "../o" is outside the batch jobs root`},
		{"d.jsonl", "a/../../o", `'output' "a/../../o" is outside`},
		{"d.jsonl", outside, "is outside the batch jobs root"},
		{"d.jsonl", "away/o", `'output' "away/o" links outside`},
		{"d.jsonl", "away", `'output' "away" links outside`},
		{"d.jsonl", "dangling/o", `'output' "dangling/o": dangling is a link to nothing`},
		{"d.jsonl", ".", "is the batch jobs root itself"},
		{"d.jsonl", root, "is the batch jobs root itself"},
	} {
		refused(t, m, http.MethodPost, JobsPath, map[string]any{"model": "vec", "input": tc.input, "output": tc.output},
			http.StatusBadRequest, tc.want)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 1 {
		t.Errorf("files written outside the root: %v", ents)
	}
	if jobs := m.List(); len(jobs) != 0 {
		t.Errorf("refused jobs listed: %v", jobs)
	}

	// An absolute path under the root is taken as it is, and shown
	// relative to the root.
	st := submit(t, m, map[string]any{"model": "vec", "input": filepath.Join(root, "d.jsonl"), "output": "sub/o"})
	if st.Input != "d.jsonl" || st.Output != filepath.Join("sub", "o") {
		t.Errorf("paths %q %q", st.Input, st.Output)
	}
}

// Links that stay under the root are followed, and the same job
// submitted again over its finished output resumes it (nothing to run)
// rather than being taken for another job.
func TestJobsLinksUnderTheRoot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := t.TempDir()
		must(t, os.MkdirAll(filepath.Join(root, "real"), 0o755))
		must(t, os.MkdirAll(filepath.Join(root, "set"), 0o755))
		writeData(t, filepath.Join(root, "real", "a.jsonl"), 30, nil)
		must(t, os.Symlink(filepath.Join("..", "real", "a.jsonl"), filepath.Join(root, "set", "a.jsonl")))
		must(t, os.Symlink("set", filepath.Join(root, "setlink")))
		target := newEcho()
		m := openJobs(t, target, root, 1)
		defer closeJobs(t, m)
		for i, input := range []string{"set", "setlink", "set"} {
			st := submit(t, m, map[string]any{"model": "vec", "input": input, "output": "o"})
			if st.Input != "set" {
				t.Errorf("run %d: input shown as %q", i, st.Input)
			}
			synctest.Wait()
			st = status(t, m, st.ID)
			if st.Status != JobDone || st.Summary == nil || st.Summary.AllRecords != 30 || st.Summary.SkippedShards != min(i, 1) {
				t.Errorf("run %d: %+v %+v", i, st, st.Summary)
			}
		}
		for v, n := range target.seen {
			if n != 1 {
				t.Errorf("record %d sent %d times", v, n)
			}
		}
		checkOutputs(t, filepath.Join(root, "o"), []string{"a"}, 30, nil)
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestJobsValidation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := t.TempDir()
		writeData(t, filepath.Join(root, "d.jsonl"), 50, nil)
		must(t, os.WriteFile(filepath.Join(root, "d.txt"), []byte("x"), 0o644))
		must(t, os.WriteFile(filepath.Join(root, "file"), []byte("x"), 0o644))
		target := newGate(1) // every request waits: the first job stays running
		m := openJobs(t, target, root, 1)
		defer closeJobs(t, m)
		ok := map[string]any{"model": "vec", "input": "d.jsonl", "output": "o"}
		with := func(k string, v any) map[string]any {
			r := map[string]any{}
			for kk, vv := range ok {
				r[kk] = vv
			}
			if v == nil {
				delete(r, k)
			} else {
				r[k] = v
			}
			return r
		}
		for _, tc := range []struct {
			body any
			code int
			want string
		}{
			{with("model", nil), 400, "'model' is required"},
			{with("model", "nope"), 404, "unknown model: 'nope'"},
			{with("model_version", "one"), 400, `'model_version' "one" is not a version number`},
			{with("input", nil), 400, "'input' is required"},
			{with("input", "missing.jsonl"), 400, `'input' "missing.jsonl" does not exist`},
			{with("input", "d.txt"), 400, "the file name must end in .jsonl, .ndjson or .csv"},
			{with("output", nil), 400, "'output' is required"},
			{with("output", "file"), 400, `'output' "file" is a file`},
			{with("output", "."), 400, "the batch jobs root itself"},
			{with("max_concurrency", 0), 400, "'max_concurrency' 0 is not between 1 and 1024"},
			{with("max_concurrency", -3), 400, "'max_concurrency' -3"},
			{with("max_concurrency", 1.5), 400, "cannot unmarshal number 1.5"},
			{with("batch_size", -1), 400, "'batch_size' -1"},
			{with("split_lines", "10"), 400, "cannot unmarshal string"},
			{with("max_error_fraction", 1.5), 400, "'max_error_fraction' 1.5 is not between 0 and 1"},
			{with("shards", 3), 400, `unknown field "shards"`},
			{`{"model": "vec"`, 400, "the job request is not valid"},
			{`{"model":"vec","input":"d.jsonl","output":"o"} {}`, 400, "more than one JSON object"},
		} {
			refused(t, m, http.MethodPost, JobsPath, tc.body, tc.code, tc.want)
		}

		st := submit(t, m, with("max_error_fraction", 0))
		synctest.Wait()
		if st = status(t, m, st.ID); st.Status != JobRunning || st.MaxErrorFraction != 0 || st.MaxConcurrency != 4 || st.Runs != 1 {
			t.Errorf("job %+v", st)
		}
		// The output of a running job is not another job's.
		refused(t, m, http.MethodPost, JobsPath, with("split_lines", 5), 409, `'output' "o" is the output of job `+st.ID+", which is running")
		// Routes and methods.
		refused(t, m, http.MethodGet, JobsPath+"/nope", nil, 404, "batch job 'nope' is not found")
		refused(t, m, http.MethodDelete, JobsPath+"/nope", nil, 404, "batch job 'nope' is not found")
		refused(t, m, http.MethodPost, JobsPath+"/nope/resume", nil, 404, "batch job 'nope' is not found")
		refused(t, m, http.MethodPut, JobsPath, nil, 405, "method PUT is not allowed on /v2/batch/jobs")
		refused(t, m, http.MethodPost, JobsPath+"/"+st.ID, nil, 405, "method POST is not allowed")
		refused(t, m, http.MethodGet, JobsPath+"/"+st.ID+"/resume", nil, 405, "method GET is not allowed")
		refused(t, m, http.MethodGet, JobsPath+"/"+st.ID+"/stop", nil, 404, "unknown batch jobs endpoint")
		refused(t, m, http.MethodGet, JobsPath+"x", nil, 404, "unknown batch jobs endpoint")
		refused(t, m, http.MethodPost, JobsPath+"/"+st.ID+"/resume", nil, 409, "is running: only a cancelled or failed job is resumed")

		close(target.open)
		synctest.Wait()
		if st = status(t, m, st.ID); st.Status != JobDone || st.Records != 50 || st.Percent != 100 || st.Summary == nil ||
			st.Summary.AllRecords != 50 || st.Finished == nil {
			t.Errorf("finished job %+v", st)
		}
		refused(t, m, http.MethodPost, JobsPath+"/"+st.ID+"/resume", nil, 409, "is done")
		// Another job may not write into a finished job's results.
		refused(t, m, http.MethodPost, JobsPath, with("split_lines", 5), 409, "holds the results of another job")
	})
}

// While a job is queued or running, no other job writes into its input
// directory or reads from its output directory.
func TestJobsShareNoDirectory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := t.TempDir()
		must(t, os.MkdirAll(filepath.Join(root, "data"), 0o755))
		must(t, os.MkdirAll(filepath.Join(root, "out"), 0o755))
		writeData(t, filepath.Join(root, "data", "d.jsonl"), 20, nil)
		writeData(t, filepath.Join(root, "e.jsonl"), 20, nil)
		writeData(t, filepath.Join(root, "out", "extra.jsonl"), 20, nil)
		target := newGate(1)
		m := openJobs(t, target, root, 1)
		defer closeJobs(t, m)
		a := submit(t, m, map[string]any{"model": "vec", "input": "data", "output": "out"})
		synctest.Wait()
		for _, tc := range []struct{ input, output, want string }{
			{"e.jsonl", "data", `'output' "data" holds the input of job ` + a.ID + ", which is running"},
			{"out/extra.jsonl", "c", `'input' "out/extra.jsonl" is in the output of job ` + a.ID},
			{"out", "c", `'input' "out" is in the output of job ` + a.ID},
		} {
			refused(t, m, http.MethodPost, JobsPath, map[string]any{"model": "vec", "input": tc.input, "output": tc.output}, 409, tc.want)
		}
		close(target.open)
		synctest.Wait()
		if st := status(t, m, a.ID); st.Status != JobDone {
			t.Fatalf("job %+v", st)
		}
		// Once it is done, its output is input like any other.
		b := submit(t, m, map[string]any{"model": "vec", "input": "out/d.out.jsonl", "output": "c"})
		c := submit(t, m, map[string]any{"model": "vec", "input": "e.jsonl", "output": "data2"})
		synctest.Wait()
		if st := status(t, m, c.ID); st.Status != JobDone {
			t.Errorf("job %+v", st)
		}
		if st := status(t, m, b.ID); st.Status == JobQueued || st.Status == JobRunning {
			t.Errorf("job %+v", st)
		}
	})
}

func TestJobsQueueAndMaxRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := t.TempDir()
		for i := range 3 {
			writeData(t, filepath.Join(root, fmt.Sprintf("d%d.jsonl", i)), 200, nil)
		}
		target := newGate(101) // records up to 100 pass; then every job waits
		m := openJobs(t, target, root, 2)
		defer closeJobs(t, m)
		var ids []string
		for i := range 3 {
			st := submit(t, m, map[string]any{"model": "vec", "input": fmt.Sprintf("d%d.jsonl", i), "output": fmt.Sprintf("o%d", i),
				"split_lines": 50, "max_concurrency": 2})
			ids = append(ids, st.ID)
		}
		synctest.Wait()
		var list struct{ Jobs []JobStatus }
		if code := call(t, m, http.MethodGet, JobsPath, nil, &list); code != 200 || len(list.Jobs) != 3 {
			t.Fatalf("list: %d %+v", code, list)
		}
		for i, want := range []JobState{JobRunning, JobRunning, JobQueued} {
			st := list.Jobs[i]
			if st.ID != ids[i] || st.Status != want {
				t.Errorf("job %d: %s %s, want %s", i, st.ID, st.Status, want)
			}
			if want == JobRunning && (st.Records < 100 || st.BytesRead <= 0 || st.BytesTotal <= st.BytesRead || st.Percent <= 0 ||
				st.Percent >= 100 || st.Started == nil) {
				t.Errorf("running job's progress %+v", st)
			}
			if want == JobQueued && (st.Started != nil || st.Records != 0) {
				t.Errorf("queued job %+v", st)
			}
		}
		// Cancelling a running job lets the queued one start.
		var st JobStatus
		if code := call(t, m, http.MethodDelete, JobsPath+"/"+ids[0], nil, &st); code != 200 || st.Status != JobCancelled {
			t.Fatalf("cancel: %d %+v", code, st)
		}
		synctest.Wait()
		if st = status(t, m, ids[2]); st.Status != JobRunning {
			t.Errorf("queued job after a cancel: %s", st.Status)
		}
		close(target.open)
		synctest.Wait()
		for i, want := range []JobState{JobCancelled, JobDone, JobDone} {
			if st := status(t, m, ids[i]); st.Status != want {
				t.Errorf("job %d: %s, want %s", i, st.Status, want)
			}
		}
		checkOutputs(t, filepath.Join(root, "o1"), shardNames("d1", 4), 200, nil)
		checkOutputs(t, filepath.Join(root, "o2"), shardNames("d2", 4), 200, nil)
	})
}

func TestJobsCancelAndResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := t.TempDir()
		writeData(t, filepath.Join(root, "d.jsonl"), 1000, map[int]string{150: "[1,2,3,4"})
		target := newGate(551)
		m := openJobs(t, target, root, 1)
		defer closeJobs(t, m)
		st := submit(t, m, map[string]any{"model": "vec", "input": "d.jsonl", "output": "out", "split_lines": 100})
		synctest.Wait()
		var c JobStatus
		if code := call(t, m, http.MethodDelete, JobsPath+"/"+st.ID, nil, &c); code != 200 || c.Status != JobCancelled ||
			c.Finished == nil || c.Records < 500 || c.Errors != 1 {
			t.Fatalf("cancel: %d %+v", code, c)
		}
		out := filepath.Join(root, "out")
		if done := loadDone(t, out); !slices.Equal(done, shardNames("d", 5)) {
			t.Errorf("finished before the cancel: %v", done)
		}
		// A cancelled job resumes from its finished shards.
		close(target.open)
		var r JobStatus
		if code := call(t, m, http.MethodPost, JobsPath+"/"+st.ID+"/resume", nil, &r); code != 200 || r.Status != JobRunning || r.Runs != 2 {
			t.Fatalf("resume: %d %+v", code, r)
		}
		synctest.Wait()
		r = status(t, m, st.ID)
		if r.Status != JobDone || r.Summary == nil || r.Summary.SkippedShards != 5 || r.Summary.Shards != 5 ||
			r.Summary.AllRecords != 1000 || r.Records != 500 {
			t.Errorf("resumed job %+v %+v", r, r.Summary)
		}
		// The shards finished before the cancel are not run again (the
		// records of the shard it cut are).
		for v, n := range target.seen {
			if n != 1 && v <= 500 {
				t.Errorf("record %d sent %d times", v, n)
			}
		}
		checkOutputs(t, out, shardNames("d", 10), 1000, []int{150})

		// Deleting a finished job forgets it; its outputs stay.
		var del struct{ ID, Status string }
		if code := call(t, m, http.MethodDelete, JobsPath+"/"+st.ID, nil, &del); code != 200 || del.Status != "deleted" {
			t.Errorf("delete: %d %+v", code, del)
		}
		refused(t, m, http.MethodGet, JobsPath+"/"+st.ID, nil, 404, "is not found")
		checkOutputs(t, out, shardNames("d", 10), 1000, []int{150})
	})
}

func TestJobsFailedJobResumes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := t.TempDir()
		writeData(t, filepath.Join(root, "d.jsonl"), 500, nil)
		target := newEcho()
		// The model fails every record from 301 on: the job stops once
		// more than a tenth of 100 records failed.
		target.fail = func(v int) error {
			if v > 300 {
				return inference.Unavailable("the model is down")
			}
			return nil
		}
		m := openJobs(t, target, root, 1)
		defer closeJobs(t, m)
		// One request at a time: the results come in order, and the stop
		// is after shard 3 exactly.
		st := submit(t, m, map[string]any{"model": "vec", "input": "d.jsonl", "output": "out", "split_lines": 100, "max_concurrency": 1})
		synctest.Wait()
		st = status(t, m, st.ID)
		if st.Status != JobFailed || !strings.Contains(st.Error, "too many records failed") || strings.Contains(st.Error, root) {
			t.Fatalf("job %+v", st)
		}
		if done := loadDone(t, filepath.Join(root, "out")); !slices.Equal(done, shardNames("d", 3)) {
			t.Errorf("finished shards of the failed job: %v", done)
		}
		// The model back, the job resumes from the shards it had.
		target.fail = nil
		var r JobStatus
		if code := call(t, m, http.MethodPost, JobsPath+"/"+st.ID+"/resume", nil, &r); code != 200 {
			t.Fatalf("resume: %d", code)
		}
		synctest.Wait()
		if r = status(t, m, st.ID); r.Status != JobDone || r.Error != "" || r.Summary == nil || r.Summary.AllRecords != 500 ||
			r.Summary.AllErrors != 0 || r.Summary.SkippedShards != 3 {
			t.Errorf("resumed job %+v %+v", r, r.Summary)
		}
		checkOutputs(t, filepath.Join(root, "out"), shardNames("d", 5), 500, nil)
	})
}

// readJobsFile reads the job list as the file keeps it.
func readJobsFile(t *testing.T, root string) []jobRecord {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, JobsFile))
	if err != nil {
		t.Fatal(err)
	}
	var c jobsFileContent
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c.Jobs
}

func TestJobsSurviveARestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := t.TempDir()
		writeData(t, filepath.Join(root, "d.jsonl"), 1000, nil)
		writeData(t, filepath.Join(root, "e.jsonl"), 100, nil)
		target := newGate(551)
		m := openJobs(t, target, root, 1)
		running := submit(t, m, map[string]any{"model": "vec", "input": "d.jsonl", "output": "out", "split_lines": 100})
		queued := submit(t, m, map[string]any{"model": "vec", "input": "e.jsonl", "output": "out-e"})
		cancelled := submit(t, m, map[string]any{"model": "vec", "input": "e.jsonl", "output": "out-f"})
		call(t, m, http.MethodDelete, JobsPath+"/"+cancelled.ID, nil, nil) // cancelled while queued
		synctest.Wait()
		if _, err := OpenJobs(target, JobsOptions{Root: root}); err == nil || !strings.Contains(err.Error(), "in use by another process") {
			t.Errorf("a second process over the root: %v", err)
		}

		// A crash: what is on disk now, with the job running, is what a
		// new process finds (kept aside, since this one goes on).
		crashed := filepath.Join(t.TempDir(), "crashed")
		must(t, os.CopyFS(crashed, os.DirFS(root)))
		recs := readJobsFile(t, crashed)
		if len(recs) != 3 || recs[0].State != JobRunning || recs[1].State != JobQueued || recs[2].State != JobCancelled {
			t.Fatalf("job list at the crash: %+v", recs)
		}
		// A shutdown: running jobs stop and stay running in the list.
		closeJobs(t, m)
		if recs := readJobsFile(t, root); recs[0].State != JobRunning || recs[1].State != JobQueued {
			t.Errorf("job list after Close: %+v", recs)
		}

		for _, what := range []string{"shutdown", "crash"} {
			dir := root
			if what == "crash" {
				// The root as the crash left it, at the same path (the
				// job's manifest names its input files by path).
				must(t, os.RemoveAll(root))
				must(t, os.CopyFS(root, os.DirFS(crashed)))
				if tmps, _ := filepath.Glob(filepath.Join(root, "out", "*"+tmpSuffix)); len(tmps) == 0 {
					t.Error("the crash left no shard being written")
				}
			}
			target := newEcho()
			m := openJobs(t, target, dir, 1)
			synctest.Wait()
			for _, c := range []struct {
				id   string
				want JobState
			}{{running.ID, JobDone}, {queued.ID, JobDone}, {cancelled.ID, JobCancelled}} {
				if st := status(t, m, c.id); st.Status != c.want {
					t.Errorf("%s: job %s: %s, want %s (%s)", what, c.id, st.Status, c.want, st.Error)
				}
			}
			if st := status(t, m, running.ID); st.Runs != 2 || st.Summary == nil || st.Summary.SkippedShards != 5 {
				t.Errorf("%s: resumed job %+v %+v", what, st, st.Summary)
			}
			// e.jsonl's records are 1..100, d.jsonl's 1..1000, of which
			// 1..500 were finished before.
			for v, n := range target.seen {
				if v > 100 && v <= 500 || n != 1 {
					t.Errorf("%s: record %d sent %d times", what, v, n)
				}
			}
			checkOutputs(t, filepath.Join(dir, "out"), shardNames("d", 10), 1000, nil)
			checkOutputs(t, filepath.Join(dir, "out-e"), []string{"e"}, 100, nil)
			closeJobs(t, m)
		}
	})
}

func TestJobsFileRefusedWhenUnreadable(t *testing.T) {
	root := t.TempDir()
	must(t, os.WriteFile(filepath.Join(root, JobsFile), []byte(`{"format":1,"jobs":[{"id":"a"},{"id":"a"}]}`), 0o644))
	if _, err := OpenJobs(newEcho(), JobsOptions{Root: root}); err == nil || !strings.Contains(err.Error(), `repeated id "a"`) {
		t.Errorf("repeated ids: %v", err)
	}
	must(t, os.WriteFile(filepath.Join(root, JobsFile), []byte(`{"format":2}`), 0o644))
	if _, err := OpenJobs(newEcho(), JobsOptions{Root: root}); err == nil || !strings.Contains(err.Error(), "format 2 is not 1") {
		t.Errorf("another format: %v", err)
	}
	// The lock was given back each time.
	m := openJobs(t, newEcho(), t.TempDir(), 0)
	closeJobs(t, m)
}

// The OpenAPI description names the fields the API reads and writes, no
// more and no fewer.
func TestJobsOpenAPIFields(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "asyncinfer", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	// documented lists the properties of a schema of components.schemas:
	// the keys indented eight spaces under its "      properties:".
	documented := func(schema string) []string {
		start := slices.Index(lines, "    "+schema+":")
		if start < 0 {
			t.Fatalf("no schema %s", schema)
		}
		var names []string
		in := false
		for _, l := range lines[start+1:] {
			if strings.HasPrefix(l, "    ") && !strings.HasPrefix(l, "     ") {
				break // the next schema
			}
			switch {
			case l == "      properties:":
				in = true
			case strings.HasPrefix(l, "      ") && !strings.HasPrefix(l, "       "):
				in = false
			case in && strings.HasPrefix(l, "        ") && !strings.HasPrefix(l, "         "):
				name, _, _ := strings.Cut(strings.TrimSpace(l), ":")
				names = append(names, name)
			}
		}
		slices.Sort(names)
		return names
	}
	for schema, v := range map[string]any{"JobStatus": JobStatus{}, "JobRequest": JobRequest{}, "JobSummary": JobSummary{}} {
		var fields []string
		ty := reflect.TypeOf(v)
		for i := range ty.NumField() {
			name, _, _ := strings.Cut(ty.Field(i).Tag.Get("json"), ",")
			fields = append(fields, name)
		}
		slices.Sort(fields)
		if got := documented(schema); !slices.Equal(got, fields) {
			t.Errorf("%s: documented %v, the API's %v", schema, got, fields)
		}
	}
}

// --http-restricted-api's inference category covers every endpoint.
func TestJobsRestricted(t *testing.T) {
	rules := restricted.Rules{}
	must(t, rules.AddHTTP("inference:infer-key=secret"))
	m, err := OpenJobs(newEcho(), JobsOptions{Root: t.TempDir(), Restricted: rules})
	must(t, err)
	defer closeJobs(t, m)
	for _, path := range []string{JobsPath, JobsPath + "/x"} {
		for _, key := range []string{"", "wrong", "secret"} {
			req := httptest.NewRequest(http.MethodGet, path, nil)
			if key != "" {
				req.Header.Set("Infer-Key", key)
			}
			rec := httptest.NewRecorder()
			m.ServeHTTP(rec, req)
			want := http.StatusForbidden
			if key == "secret" {
				want = map[string]int{JobsPath: http.StatusOK, JobsPath + "/x": http.StatusNotFound}[path]
			}
			if rec.Code != want || want == http.StatusForbidden && !strings.Contains(rec.Body.String(), "expecting header 'infer-key'") {
				t.Errorf("%s with key %q: %d %s, want %d", path, key, rec.Code, rec.Body, want)
			}
		}
	}
}
