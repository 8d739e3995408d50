package batch

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/server/restricted"
)

// Jobs is the batch transform as a server job API (a Nereid extension):
// jobs submitted over HTTP (ServeHTTP) run the same Run as `nereid
// batch`, a bounded number at once and the others queued, over data
// sets and into output directories under one root directory. The job
// list is kept in a file under the root, so that after a restart (or a
// crash) the jobs that were running or queued run again — resuming
// from their finished shards — and the finished ones are still listed.
type Jobs struct {
	target Target
	opts   JobsOptions
	root   string // absolute, symlinks resolved
	lock   *os.File
	log    zerolog.Logger

	wg sync.WaitGroup // the running jobs' goroutines

	mu      sync.Mutex // guards the fields below, and the jobs file
	jobs    map[string]*jobState
	order   []string // ids, oldest first
	queue   []string // queued ids, oldest first
	running int
	closing bool
}

// Defaults and bounds of JobsOptions and of a job's settings.
const (
	DefaultMaxRunningJobs = 2
	// maxJobConcurrency bounds a job's max_concurrency: each is a worker
	// goroutine and requests in flight.
	maxJobConcurrency = 1024
	maxJobBatchSize   = 1 << 20
	maxJobRequest     = 1 << 20
)

// JobsFile and jobsLock are the job list and the lock that keeps a
// second process off the root, in the root.
const (
	JobsFile   = ".nereid-batch-jobs.json"
	jobsLock   = ".nereid-batch-jobs.lock"
	jobsFormat = 1
)

// JobsOptions configures Jobs.
type JobsOptions struct {
	// Root is the directory every job's input and output must be under;
	// it is created when missing. One process at a time uses it.
	Root string
	// MaxRunning is how many jobs run at once (default 2); the others
	// wait, queued.
	MaxRunning int
	// Restricted holds --http-restricted-api: the inference category
	// applies to every endpoint.
	Restricted restricted.Rules
	Logger     zerolog.Logger
}

// JobState is where a job is.
type JobState string

// The states of a job. Queued and running jobs run again after a
// restart; cancelled and failed ones run again when resumed.
const (
	JobQueued    JobState = "queued"
	JobRunning   JobState = "running"
	JobDone      JobState = "done"
	JobFailed    JobState = "failed"
	JobCancelled JobState = "cancelled"
)

func (s JobState) active() bool { return s == JobQueued || s == JobRunning }

// jobRecord is a job as the jobs file keeps it. Input and Output are
// relative to the root.
type jobRecord struct {
	ID               string    `json:"id"`
	Model            string    `json:"model"`
	Version          string    `json:"model_version,omitempty"`
	Input            string    `json:"input"`
	Output           string    `json:"output"`
	MaxConcurrency   int       `json:"max_concurrency"`
	BatchSize        int       `json:"batch_size"`
	SplitLines       int       `json:"split_lines"`
	MaxErrorFraction float64   `json:"max_error_fraction"`
	State            JobState  `json:"status"`
	Created          time.Time `json:"created"`
	Started          time.Time `json:"started,omitzero"`
	Finished         time.Time `json:"finished,omitzero"`
	Error            string    `json:"error,omitempty"`
	// Runs counts the runs started, the one running included.
	Runs int `json:"runs"`
	// Last is the last run's progress when it ended.
	Last *runCounts `json:"last_run,omitempty"`
	// Summary is the last run's summary when it ended.
	Summary *JobSummary `json:"summary,omitempty"`
}

// runCounts is a run's progress counters as they ended.
type runCounts struct {
	Records    int64   `json:"records"`
	Errors     int64   `json:"errors"`
	BytesRead  int64   `json:"bytes_read"`
	BytesTotal int64   `json:"bytes_total"`
	Fraction   float64 `json:"fraction"`
	Rate       float64 `json:"records_per_second"`
}

// JobSummary is what a job's last run did (Summary, for the API).
type JobSummary struct {
	Records        int64   `json:"records"`
	Errors         int64   `json:"errors"`
	AllRecords     int64   `json:"all_records"`
	AllErrors      int64   `json:"all_errors"`
	Shards         int     `json:"shards"`
	SkippedShards  int     `json:"skipped_shards"`
	ElapsedSeconds float64 `json:"elapsed_seconds"`
}

// jobState is a job in memory.
type jobState struct {
	rec jobRecord
	// While the job runs: its progress, how to stop it, and closed when
	// it has stopped.
	live   *Live
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// Causes of a running job's cancellation.
var (
	errJobCancelled = errors.New("the job was cancelled")
	errJobsClosing  = errors.New("the server is shutting down")
)

// jobsFileContent is the jobs file.
type jobsFileContent struct {
	Format int         `json:"format"`
	Jobs   []jobRecord `json:"jobs"`
}

// OpenJobs opens the job list under opts.Root and starts the jobs that
// were queued or running when the last process stopped. target runs
// every job's requests (InProcess(core) in the server).
func OpenJobs(target Target, opts JobsOptions) (*Jobs, error) {
	if opts.Root == "" {
		return nil, errors.New("batch jobs: no root directory")
	}
	if opts.MaxRunning <= 0 {
		opts.MaxRunning = DefaultMaxRunningJobs
	}
	if err := os.MkdirAll(opts.Root, 0o755); err != nil {
		return nil, fmt.Errorf("batch jobs root: %w", err)
	}
	root, err := filepath.Abs(opts.Root)
	if err == nil {
		root, err = filepath.EvalSymlinks(root)
	}
	if err != nil {
		return nil, fmt.Errorf("batch jobs root: %w", err)
	}
	lock, err := lockRoot(root)
	if err != nil {
		return nil, err
	}
	m := &Jobs{target: target, opts: opts, root: root, lock: lock, log: opts.Logger, jobs: map[string]*jobState{}}
	recs, err := m.load()
	if err != nil {
		lock.Close()
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	resumed := 0
	for _, rec := range recs {
		j := &jobState{rec: rec}
		if rec.State.active() {
			// Queued, or running when the process stopped: queued again
			// in the order they were submitted; a run resumes from the
			// shards the last one finished.
			j.rec.State = JobQueued
			m.queue = append(m.queue, rec.ID)
			resumed++
		}
		m.jobs[rec.ID] = j
		m.order = append(m.order, rec.ID)
	}
	// Saved before any job starts: a root that cannot be written stops
	// the start with no job running.
	if err := m.saveLocked(); err != nil {
		m.closeLocked()
		return nil, err
	}
	m.startLocked()
	m.saveOrLogLocked()
	m.log.Info().Str("root", root).Int("jobs", len(recs)).Int("resumed", resumed).Int("max_running", opts.MaxRunning).
		Msg("batch jobs opened")
	return m, nil
}

// lockRoot takes the root's lock, held until Close: a second process
// over the same root would run the same jobs into the same files.
func lockRoot(root string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(root, jobsLock), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("batch jobs root: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("batch jobs root %s is in use by another process (one nereid per --batch-jobs-root)", root)
		}
		return nil, fmt.Errorf("batch jobs root %s: locking: %w", root, err)
	}
	return f, nil
}

// load reads the jobs file; none is an empty list.
func (m *Jobs) load() ([]jobRecord, error) {
	path := filepath.Join(m.root, JobsFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("batch jobs: %w", err)
	}
	var c jobsFileContent
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("batch jobs: %s: %w", path, err)
	}
	if c.Format != jobsFormat {
		return nil, fmt.Errorf("batch jobs: %s: format %d is not %d, which this nereid writes", path, c.Format, jobsFormat)
	}
	seen := map[string]bool{}
	for _, r := range c.Jobs {
		if r.ID == "" || seen[r.ID] {
			return nil, fmt.Errorf("batch jobs: %s: a job with no id or a repeated id %q", path, r.ID)
		}
		seen[r.ID] = true
	}
	return c.Jobs, nil
}

// saveLocked writes the job list (atomically and durably).
func (m *Jobs) saveLocked() error {
	c := jobsFileContent{Format: jobsFormat, Jobs: make([]jobRecord, 0, len(m.order))}
	for _, id := range m.order {
		c.Jobs = append(c.Jobs, m.jobs[id].rec)
	}
	b, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(m.root, JobsFile, append(b, '\n')); err != nil {
		return fmt.Errorf("batch jobs: writing %s: %w", filepath.Join(m.root, JobsFile), err)
	}
	return nil
}

// save is saveLocked for callers that cannot fail the request on it: the
// change is made in memory and logged.
func (m *Jobs) saveOrLogLocked() {
	if err := m.saveLocked(); err != nil {
		m.log.Error().Err(err).Msg("batch jobs: the job list could not be saved")
	}
}

// Close cancels the running jobs — they stay running in the job list
// and resume at the next start, as do the queued ones — and waits until
// they have stopped or ctx ends.
func (m *Jobs) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		return nil
	}
	m.closing = true
	for _, j := range m.jobs {
		if j.cancel != nil {
			j.cancel(errJobsClosing)
		}
	}
	m.mu.Unlock()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		m.wg.Wait()
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		return fmt.Errorf("batch jobs: jobs still running: %w", ctx.Err())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	err := m.saveLocked()
	m.closeLocked()
	return err
}

func (m *Jobs) closeLocked() {
	m.closing = true
	if m.lock != nil {
		m.lock.Close() // releases the flock
		m.lock = nil
	}
}

// JobRequest is the body of POST /v2/batch/jobs; its numbers are
// Options', absent for the defaults.
type JobRequest struct {
	Model            string   `json:"model"`
	ModelVersion     string   `json:"model_version"`
	Input            string   `json:"input"`
	Output           string   `json:"output"`
	MaxConcurrency   *int     `json:"max_concurrency"`
	BatchSize        *int     `json:"batch_size"`
	SplitLines       *int     `json:"split_lines"`
	MaxErrorFraction *float64 `json:"max_error_fraction"`
}

// errConflict is a request that clashes with a job's state: 409.
type errConflict struct{ msg string }

func (e *errConflict) Error() string { return e.msg }

func conflict(format string, args ...any) error {
	return &errConflict{inference.Truncate(fmt.Sprintf(format, args...), inference.MaxMessageBytes)}
}

// Submit checks a job and queues it: it runs at once when fewer than
// MaxRunning jobs run. Bad settings and paths are InvalidArg errors, an
// unknown model the target's error (NotFound), and an output directory
// in use by another job a conflict.
func (m *Jobs) Submit(ctx context.Context, req JobRequest) (JobStatus, error) {
	rec, err := m.check(ctx, req)
	if err != nil {
		return JobStatus{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		return JobStatus{}, inference.Unavailable("the server is shutting down")
	}
	if err := m.freeLocked("", &rec); err != nil {
		return JobStatus{}, err
	}
	rec.ID = strings.ToLower(rand.Text())
	rec.State = JobQueued
	rec.Created = time.Now().UTC()
	j := &jobState{rec: rec}
	m.jobs[rec.ID] = j
	m.order = append(m.order, rec.ID)
	m.queue = append(m.queue, rec.ID)
	if err := m.saveLocked(); err != nil {
		// Not accepted: nothing of it stays.
		delete(m.jobs, rec.ID)
		m.order = m.order[:len(m.order)-1]
		m.queue = m.queue[:len(m.queue)-1]
		return JobStatus{}, inference.Internal("%s", m.hideRoot(err))
	}
	m.startLocked()
	if j.rec.State == JobRunning {
		m.saveOrLogLocked()
	}
	m.log.Info().Str("id", rec.ID).Str("model", rec.Model).Str("input", rec.Input).Str("output", rec.Output).
		Str("status", string(j.rec.State)).Msg("batch job submitted")
	return m.statusLocked(j), nil
}

// check validates a job's request and resolves its paths.
func (m *Jobs) check(ctx context.Context, req JobRequest) (jobRecord, error) {
	rec := jobRecord{Model: req.Model, Version: req.ModelVersion, MaxConcurrency: DefaultMaxConcurrency,
		MaxErrorFraction: DefaultMaxErrorFraction}
	if req.Model == "" {
		return rec, inference.InvalidArg("'model' is required")
	}
	if req.ModelVersion != "" && !allDigits(req.ModelVersion) {
		return rec, inference.InvalidArg("'model_version' %q is not a version number", req.ModelVersion)
	}
	for _, f := range []struct {
		name     string
		v        *int
		min, max int
		dst      *int
	}{
		{"max_concurrency", req.MaxConcurrency, 1, maxJobConcurrency, &rec.MaxConcurrency},
		{"batch_size", req.BatchSize, 0, maxJobBatchSize, &rec.BatchSize},
		{"split_lines", req.SplitLines, 0, 1 << 62, &rec.SplitLines},
	} {
		if f.v == nil {
			continue
		}
		if *f.v < f.min || *f.v > f.max {
			return rec, inference.InvalidArg("'%s' %d is not between %d and %d", f.name, *f.v, f.min, f.max)
		}
		*f.dst = *f.v
	}
	if v := req.MaxErrorFraction; v != nil {
		if !(*v >= 0 && *v <= 1) {
			return rec, inference.InvalidArg("'max_error_fraction' %g is not between 0 and 1", *v)
		}
		rec.MaxErrorFraction = *v
	}
	in, err := m.resolve("input", req.Input, true)
	if err != nil {
		return rec, err
	}
	out, err := m.resolve("output", req.Output, false)
	if err != nil {
		return rec, err
	}
	if out == m.root {
		return rec, inference.InvalidArg("'output' %q is the batch jobs root itself: give each job a directory of its own under it", req.Output)
	}
	if st, err := os.Stat(out); err == nil && !st.IsDir() {
		return rec, inference.InvalidArg("'output' %q is a file, not a directory", req.Output)
	}
	files, err := m.inputFiles(req.Input, in)
	if err != nil {
		return rec, err
	}
	for _, f := range files {
		if filepath.Dir(f.Path) == out {
			return rec, inference.InvalidArg("'output' %q is the directory of the input files: the results would be read as input", req.Output)
		}
	}
	if _, err := m.target.Model(ctx, req.Model, req.ModelVersion); err != nil {
		return rec, err
	}
	rec.Input, rec.Output = m.rel(in), m.rel(out)
	m.mu.Lock()
	err = m.freeLocked("", &rec)
	m.mu.Unlock()
	if err != nil {
		return rec, err
	}
	prev, err := loadManifest(out)
	if err != nil {
		return rec, conflict("'output' %q: %s", req.Output, m.hideRoot(err))
	}
	if prev != nil {
		man := &manifest{Model: req.Model, Version: req.ModelVersion, SplitLines: rec.SplitLines, Inputs: files}
		if err := man.sameJob(req.Output, prev); err != nil {
			return rec, conflict("'output' %v", err)
		}
	}
	return rec, nil
}

// inputFiles lists a job's input files as Run lists them (the paths its
// manifest keeps), after checking that each is under the root once its
// links are resolved.
func (m *Jobs) inputFiles(given, in string) ([]inputFile, error) {
	files, err := listInputs(in)
	if err != nil {
		return nil, inference.InvalidArg("'input' %q: %v", given, m.hideRoot(err))
	}
	for _, f := range files {
		resolved, err := filepath.EvalSymlinks(f.Path)
		if err != nil {
			return nil, inference.InvalidArg("'input' %q: %v", given, m.hideRoot(err))
		}
		if !within(m.root, resolved) {
			return nil, inference.InvalidArg("'input' %q: %s links outside the batch jobs root", given, filepath.Base(f.Path))
		}
	}
	return files, nil
}

// resolve maps a job's path to an absolute path under the root, its
// links resolved: a relative path is taken under the root; a path that
// is, or links, outside it is refused. An output that does not exist yet
// is resolved through its nearest existing parent.
func (m *Jobs) resolve(what, p string, mustExist bool) (string, error) {
	if p == "" {
		return "", inference.InvalidArg("'%s' is required", what)
	}
	if strings.ContainsRune(p, 0) {
		return "", inference.InvalidArg("'%s' %q holds a NUL byte", what, p)
	}
	cand := filepath.Clean(p)
	if !filepath.IsAbs(cand) {
		cand = filepath.Join(m.root, cand)
	}
	if !within(m.root, cand) {
		return "", inference.InvalidArg("'%s' %q is outside the batch jobs root (--batch-jobs-root)", what, p)
	}
	resolved, err := filepath.EvalSymlinks(cand)
	if errors.Is(err, fs.ErrNotExist) && mustExist {
		return "", inference.InvalidArg("'%s' %q does not exist", what, p)
	}
	if errors.Is(err, fs.ErrNotExist) {
		// The missing part is made by MkdirAll; what exists above it is
		// resolved, and a dangling link is refused (MkdirAll would not
		// follow it, but it says the path is not what it seems).
		dir, rest := cand, ""
		for {
			if _, lerr := os.Lstat(dir); lerr == nil {
				return "", inference.InvalidArg("'%s' %q: %s is a link to nothing", what, p, m.rel(dir))
			}
			rest = filepath.Join(filepath.Base(dir), rest)
			dir = filepath.Dir(dir)
			if resolved, err = filepath.EvalSymlinks(dir); err == nil {
				resolved = filepath.Join(resolved, rest)
				break
			}
			if !errors.Is(err, fs.ErrNotExist) || dir == m.root {
				break
			}
		}
	}
	if err != nil {
		return "", inference.InvalidArg("'%s' %q: %v", what, p, m.hideRoot(err))
	}
	if !within(m.root, resolved) {
		return "", inference.InvalidArg("'%s' %q links outside the batch jobs root (--batch-jobs-root)", what, p)
	}
	return resolved, nil
}

// within reports whether path is root or under it; both are clean and
// absolute.
func within(root, path string) bool {
	if path == root || root == string(filepath.Separator) {
		return true
	}
	return strings.HasPrefix(path, root+string(filepath.Separator))
}

// rel is a path under the root as the API shows it: relative to the root.
func (m *Jobs) rel(path string) string {
	r, err := filepath.Rel(m.root, path)
	if err != nil {
		return path
	}
	return r
}

// hideRoot writes an error's paths relative to the root: clients name
// paths under the root, and the root's place on the server is not theirs
// to learn.
func (m *Jobs) hideRoot(err error) string {
	return strings.ReplaceAll(err.Error(), m.root+string(filepath.Separator), "")
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// freeLocked refuses a job (r, whose id is id once it is listed) that
// would share a directory with a queued or running job: the same output
// directory, an output directory that holds the other's input files (its
// next run would read the results as input), or input files in the
// other's output directory (they are being written).
func (m *Jobs) freeLocked(id string, r *jobRecord) error {
	inDir := m.inputDir(r.Input)
	for _, oid := range m.order {
		o := m.jobs[oid]
		if oid == id || !o.rec.State.active() {
			continue
		}
		switch {
		case o.rec.Output == r.Output:
			return conflict("'output' %q is the output of job %s, which is %s", r.Output, oid, o.rec.State)
		case m.inputDir(o.rec.Input) == r.Output:
			return conflict("'output' %q holds the input of job %s, which is %s", r.Output, oid, o.rec.State)
		case o.rec.Output == inDir:
			return conflict("'input' %q is in the output of job %s, which is %s", r.Input, oid, o.rec.State)
		}
	}
	return nil
}

// inputDir is the directory of a job's input files, relative to the
// root: the input when it is a directory, else the file's.
func (m *Jobs) inputDir(input string) string {
	if st, err := os.Stat(filepath.Join(m.root, input)); err == nil && st.IsDir() {
		return input
	}
	return filepath.Dir(input)
}

// startLocked starts queued jobs, oldest first, while fewer than
// MaxRunning run. The caller saves the job list.
func (m *Jobs) startLocked() {
	for !m.closing && m.running < m.opts.MaxRunning && len(m.queue) > 0 {
		id := m.queue[0]
		m.queue = slices.Delete(m.queue, 0, 1)
		j := m.jobs[id]
		ctx, cancel := context.WithCancelCause(context.Background())
		j.live, j.cancel, j.done = &Live{}, cancel, make(chan struct{})
		j.rec.State, j.rec.Started, j.rec.Finished, j.rec.Error = JobRunning, time.Now().UTC(), time.Time{}, ""
		j.rec.Runs++
		j.rec.Last, j.rec.Summary = nil, nil
		m.running++
		opts := m.options(&j.rec)
		opts.Live = j.live
		m.wg.Go(func() { m.run(ctx, j, opts) })
	}
}

// options are Run's options for a job.
func (m *Jobs) options(r *jobRecord) Options {
	return Options{
		Model: r.Model, ModelVersion: r.Version,
		Input: filepath.Join(m.root, r.Input), Output: filepath.Join(m.root, r.Output),
		MaxConcurrency: r.MaxConcurrency, BatchSize: r.BatchSize, SplitLines: r.SplitLines,
		MaxErrorFraction: r.MaxErrorFraction,
	}
}

// run runs a job once, records how it ended, and starts the next queued
// one.
func (m *Jobs) run(ctx context.Context, j *jobState, opts Options) {
	sum, err := m.runChecked(ctx, j, opts)
	m.mu.Lock()
	defer m.mu.Unlock()
	defer close(j.done)
	cause := context.Cause(ctx)
	j.cancel(nil)
	j.cancel = nil
	m.running--
	now := time.Now().UTC()
	switch {
	case err == nil:
		j.rec.State, j.rec.Finished = JobDone, now
	case errors.Is(cause, errJobsClosing):
		// Still running in the job list: it resumes at the next start.
	case errors.Is(cause, errJobCancelled):
		j.rec.State, j.rec.Finished = JobCancelled, now
	default:
		j.rec.State, j.rec.Finished, j.rec.Error = JobFailed, now, m.hideRoot(err)
	}
	if p, ok := j.live.Snapshot(); ok && sum != nil {
		// The run read its input: its counters and summary are kept.
		j.rec.Last = &runCounts{Records: p.Records, Errors: p.Errors, BytesRead: p.BytesRead, BytesTotal: p.BytesTotal,
			Fraction: p.Fraction, Rate: p.RecordsPerSecond}
		j.rec.Summary = &JobSummary{Records: sum.Records, Errors: sum.Errors, AllRecords: sum.AllRecords, AllErrors: sum.AllErrors,
			Shards: sum.Shards, SkippedShards: sum.Skipped, ElapsedSeconds: sum.Elapsed.Seconds()}
	}
	level := zerolog.InfoLevel
	if j.rec.State == JobFailed {
		level = zerolog.WarnLevel
	}
	ev := m.log.WithLevel(level).Str("id", j.rec.ID).Str("model", j.rec.Model).Str("status", string(j.rec.State))
	if j.rec.Error != "" {
		ev = ev.Str("error", j.rec.Error)
	}
	ev.Msg("batch job stopped")
	m.startLocked()
	m.saveOrLogLocked()
}

// runChecked runs a job after checking again that its paths are under
// the root: links may have changed since it was submitted.
func (m *Jobs) runChecked(ctx context.Context, j *jobState, opts Options) (*Summary, error) {
	in, err := m.resolve("input", j.rec.Input, true)
	if err != nil {
		return nil, err
	}
	out, err := m.resolve("output", j.rec.Output, false)
	if err != nil {
		return nil, err
	}
	if _, err := m.inputFiles(j.rec.Input, in); err != nil {
		return nil, err
	}
	opts.Input, opts.Output = in, out
	return Run(ctx, m.target, opts)
}

// Cancel stops a running or queued job, which stays resumable, and
// waits (until ctx ends) for a running one to stop. A finished job is
// forgotten instead (its outputs stay): forgotten is true then.
func (m *Jobs) Cancel(ctx context.Context, id string) (st JobStatus, forgotten bool, err error) {
	m.mu.Lock()
	j := m.jobs[id]
	if j == nil {
		m.mu.Unlock()
		return st, false, jobNotFound(id)
	}
	switch j.rec.State {
	case JobQueued:
		m.queue = slices.DeleteFunc(m.queue, func(q string) bool { return q == id })
		j.rec.State, j.rec.Finished = JobCancelled, time.Now().UTC()
		m.saveOrLogLocked()
		st = m.statusLocked(j)
		m.mu.Unlock()
		return st, false, nil
	case JobRunning:
		if m.closing {
			m.mu.Unlock()
			return st, false, inference.Unavailable("the server is shutting down")
		}
		j.cancel(errJobCancelled)
		done := j.done
		m.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return st, false, inference.Unavailable("job %s is stopping", id)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.statusLocked(j), false, nil
	default:
		defer m.mu.Unlock()
		delete(m.jobs, id)
		m.order = slices.DeleteFunc(m.order, func(o string) bool { return o == id })
		m.saveOrLogLocked()
		return m.statusLocked(j), true, nil
	}
}

// Resume queues a cancelled or failed job again; its run skips the
// shards finished before.
func (m *Jobs) Resume(id string) (JobStatus, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j := m.jobs[id]
	if j == nil {
		return JobStatus{}, jobNotFound(id)
	}
	if m.closing {
		return JobStatus{}, inference.Unavailable("the server is shutting down")
	}
	if j.rec.State != JobCancelled && j.rec.State != JobFailed {
		return JobStatus{}, conflict("job %s is %s: only a cancelled or failed job is resumed", id, j.rec.State)
	}
	if err := m.freeLocked(id, &j.rec); err != nil {
		return JobStatus{}, err
	}
	j.rec.State = JobQueued
	m.queue = append(m.queue, id)
	m.startLocked()
	if err := m.saveLocked(); err != nil {
		return JobStatus{}, inference.Internal("%s", m.hideRoot(err))
	}
	return m.statusLocked(j), nil
}

// Status returns a job's status.
func (m *Jobs) Status(id string) (JobStatus, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j := m.jobs[id]
	if j == nil {
		return JobStatus{}, jobNotFound(id)
	}
	return m.statusLocked(j), nil
}

// List returns every job's status, oldest first.
func (m *Jobs) List() []JobStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]JobStatus, 0, len(m.order))
	for _, id := range m.order {
		out = append(out, m.statusLocked(m.jobs[id]))
	}
	return out
}

func jobNotFound(id string) error {
	return inference.NotFound("batch job '%s' is not found (never submitted, or deleted)", id)
}

// JobStatus is a job as the API shows it. While a job runs, its counts
// are its current run's, live; once it stopped, its last run's.
type JobStatus struct {
	ID               string      `json:"id"`
	Model            string      `json:"model"`
	ModelVersion     string      `json:"model_version"`
	Input            string      `json:"input"`
	Output           string      `json:"output"`
	MaxConcurrency   int         `json:"max_concurrency"`
	BatchSize        int         `json:"batch_size"`
	SplitLines       int         `json:"split_lines"`
	MaxErrorFraction float64     `json:"max_error_fraction"`
	Status           JobState    `json:"status"`
	Records          int64       `json:"records"`
	Errors           int64       `json:"errors"`
	BytesRead        int64       `json:"bytes_read"`
	BytesTotal       int64       `json:"bytes_total"`
	Percent          float64     `json:"percent"`
	RecordsPerSecond float64     `json:"records_per_second"`
	ETASeconds       *float64    `json:"eta_seconds,omitempty"`
	Created          time.Time   `json:"created"`
	Started          *time.Time  `json:"started,omitempty"`
	Finished         *time.Time  `json:"finished,omitempty"`
	Runs             int         `json:"runs"`
	Error            string      `json:"error,omitempty"`
	Summary          *JobSummary `json:"summary,omitempty"`
}

func (m *Jobs) statusLocked(j *jobState) JobStatus {
	r := &j.rec
	st := JobStatus{ID: r.ID, Model: r.Model, ModelVersion: r.Version, Input: r.Input, Output: r.Output,
		MaxConcurrency: r.MaxConcurrency, BatchSize: r.BatchSize, SplitLines: r.SplitLines, MaxErrorFraction: r.MaxErrorFraction,
		Status: r.State, Created: r.Created, Runs: r.Runs, Error: r.Error}
	if !r.Started.IsZero() {
		st.Started = &r.Started
	}
	if !r.Finished.IsZero() {
		st.Finished = &r.Finished
	}
	if r.State != JobQueued {
		st.Summary = r.Summary
	}
	if r.State == JobRunning {
		st.Summary = nil
		if p, ok := j.live.Snapshot(); ok {
			st.Records, st.Errors, st.BytesRead, st.BytesTotal = p.Records, p.Errors, p.BytesRead, p.BytesTotal
			st.Percent, st.RecordsPerSecond = 100*p.Fraction, p.RecordsPerSecond
			if p.ETA >= 0 {
				eta := p.ETA.Seconds()
				st.ETASeconds = &eta
			}
		}
	} else if c := r.Last; c != nil {
		st.Records, st.Errors, st.BytesRead, st.BytesTotal = c.Records, c.Errors, c.BytesRead, c.BytesTotal
		st.Percent, st.RecordsPerSecond = 100*c.Fraction, c.Rate
	}
	return st
}
