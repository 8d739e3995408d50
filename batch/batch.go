// Package batch runs a data set of records (JSONL or CSV files) through a
// model, an ensemble or a pipeline and writes each record's outputs, or
// its error, beside the others: Nereid's batch transform (`nereid batch`).
// A job is resumable: it writes a shard at a time and a restarted job
// skips the shards that are finished.
package batch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nereid-project/nereid/inference"
)

// Defaults of Options.
const (
	DefaultMaxConcurrency   = 4
	DefaultMaxErrorFraction = 0.1
	// autoBatchCap bounds the records per request when BatchSize is 0
	// and the model's max_batch_size is larger.
	autoBatchCap          = 64
	defaultMaxRecordBytes = 64 << 20
	// minErrorWindow is how many records the error fraction is taken
	// over at least: the first failures of a job do not stop it alone.
	minErrorWindow = 100
)

// Options configures a job.
type Options struct {
	Model        string
	ModelVersion string // "": the version the model's policy serves
	// Input is a .jsonl / .ndjson / .csv file, or a directory whose such
	// files (not below it) are the data set.
	Input string
	// Output is the directory of the results: <shard>.out.jsonl and
	// <shard>.errors.jsonl per shard, and the job's manifest.
	Output string
	// MaxConcurrency bounds the requests in flight (default 4).
	MaxConcurrency int
	// BatchSize is how many records one request carries, concatenated
	// along the batch dimension, when the model batches; 0 (default):
	// the model's max_batch_size, at most 64.
	BatchSize int
	// SplitLines is how many records make a shard, the unit of
	// resumption; 0: a shard per file.
	SplitLines int
	// MaxErrorFraction is the share of failed records above which the job
	// stops: checked as it runs over at least 100 records, and at the end
	// over all. 0 stops at the first failure. The flag's default is
	// DefaultMaxErrorFraction.
	MaxErrorFraction float64
	// MaxRecordBytes bounds one JSONL line (default 64 MiB); a longer one
	// is a failed record.
	MaxRecordBytes int

	// Progress receives the progress reports; nil for none. Terminal
	// says it is a terminal: one line redrawn in place every
	// ProgressInterval (default 250 ms), else a plain line every
	// ProgressInterval (default 10 s).
	Progress         io.Writer
	Terminal         bool
	ProgressInterval time.Duration
	// Live, when set, publishes the run's progress counters as it reads
	// its input (the server's batch jobs report them).
	Live *Live
}

func (o *Options) fill() error {
	if o.Model == "" {
		return errors.New("no model given")
	}
	if o.Input == "" || o.Output == "" {
		return errors.New("an input and an output directory are needed")
	}
	if o.MaxConcurrency == 0 {
		o.MaxConcurrency = DefaultMaxConcurrency
	}
	if o.MaxRecordBytes == 0 {
		o.MaxRecordBytes = defaultMaxRecordBytes
	}
	if o.ProgressInterval == 0 {
		o.ProgressInterval = 10 * time.Second
		if o.Terminal {
			o.ProgressInterval = 250 * time.Millisecond
		}
	}
	switch {
	case o.MaxConcurrency < 0:
		return fmt.Errorf("max concurrency %d must be positive", o.MaxConcurrency)
	case o.BatchSize < 0:
		return fmt.Errorf("batch size %d must not be negative", o.BatchSize)
	case o.SplitLines < 0:
		return fmt.Errorf("split lines %d must not be negative", o.SplitLines)
	case o.MaxErrorFraction < 0 || o.MaxErrorFraction > 1:
		return fmt.Errorf("max error fraction %g is not between 0 and 1", o.MaxErrorFraction)
	case o.MaxRecordBytes < 0:
		return fmt.Errorf("max record bytes %d must be positive", o.MaxRecordBytes)
	}
	return nil
}

// Summary is what a job did.
type Summary struct {
	// Records and Errors are this run's records and failed records.
	Records, Errors int64
	// AllRecords and AllErrors count every finished shard, this run's
	// and those finished before.
	AllRecords, AllErrors int64
	// Shards is how many shards this run finished; Skipped how many
	// were finished before.
	Shards, Skipped int
	Elapsed         time.Duration
	Output          string
}

func (s *Summary) String() string {
	rate := 0.0
	if secs := s.Elapsed.Seconds(); secs > 0 {
		rate = float64(s.Records) / secs
	}
	line := fmt.Sprintf("%d records, %d errors in %s (%.0f records/s); %d shards written", s.Records, s.Errors,
		s.Elapsed.Round(time.Millisecond), rate, s.Shards)
	if s.Skipped > 0 {
		line += fmt.Sprintf(", %d finished before (all shards: %d records, %d errors)", s.Skipped, s.AllRecords, s.AllErrors)
	}
	return line + "; results in " + s.Output
}

// ErrTooManyErrors is the failure of a job whose share of failed records
// exceeded Options.MaxErrorFraction. The shards finished before stay
// finished: fix the cause and run the job again to resume it.
var ErrTooManyErrors = errors.New("too many records failed")

// Run runs a job to its end, to its first failure, or until ctx is done;
// the summary is returned in every case. A job that stops leaves its
// finished shards in place, and the same Options resume it.
func Run(ctx context.Context, target Target, opts Options) (*Summary, error) {
	start := time.Now()
	sum := &Summary{Output: opts.Output}
	if err := opts.fill(); err != nil {
		return sum, err
	}
	model, err := target.Model(ctx, opts.Model, opts.ModelVersion)
	if err != nil {
		return sum, err // the server's and the target's texts name the model
	}
	files, err := listInputs(opts.Input)
	if err != nil {
		return sum, err
	}
	out, err := filepath.Abs(opts.Output)
	if err != nil {
		return sum, err
	}
	for _, f := range files {
		if filepath.Dir(f.Path) == out {
			return sum, fmt.Errorf("--output %s is the directory of the input files: the results would be read as input", opts.Output)
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return sum, err
	}
	man := &manifest{Format: manifestFormat, Model: opts.Model, Version: opts.ModelVersion, SplitLines: opts.SplitLines,
		Inputs: files, Shards: map[string]shardDone{}}
	prev, err := loadManifest(out)
	if err != nil {
		return sum, err
	}
	if prev != nil {
		if err := man.sameJob(opts.Output, prev); err != nil {
			return sum, err
		}
		for name, d := range prev.Shards {
			// A shard whose files were removed since is run again.
			if fileExists(filepath.Join(out, outName(name))) && fileExists(filepath.Join(out, errorsName(name))) {
				man.Shards[name] = d
			}
		}
	}
	if err := man.write(out); err != nil {
		return sum, err
	}
	j := newJob(target, model, files, man, out, opts)
	err = j.run(ctx)
	sum.Records, sum.Errors = j.prog.records.Load(), j.prog.errors.Load()
	sum.Shards, sum.Skipped = j.finished, j.skipped
	for _, d := range man.Shards {
		sum.AllRecords += d.Records
		sum.AllErrors += d.Errors
	}
	sum.Elapsed = time.Since(start)
	if err == nil && sum.AllErrors > 0 && float64(sum.AllErrors) > opts.MaxErrorFraction*float64(sum.AllRecords) {
		err = fmt.Errorf("%w: %d of %d records (more than %g of them); the errors are in the *.errors.jsonl files",
			ErrTooManyErrors, sum.AllErrors, sum.AllRecords, opts.MaxErrorFraction)
	}
	return sum, err
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

// job is one run: a reader goroutine cuts the files into chunks of
// records in order (lines or rows, read but not parsed), MaxConcurrency
// workers parse and run them, and the writer (Run's goroutine) puts each
// shard's results back in order into its files and finishes the shard
// when all are in. window bounds the chunks read but not yet written, so
// memory stays bounded however far the reader could run ahead.
type job struct {
	target    Target
	model     *Model
	files     []inputFile
	man       *manifest // written by the writer only
	done      map[string]shardDone
	dir       string
	opts      Options
	batchSize int
	prog      *progress

	work   chan *chunk
	events chan event
	window chan struct{}

	// The writer's.
	finished, skipped int
	lastErr           string
}

// chunk is up to a batch of consecutive records of a shard, as read: a
// worker parses them and runs them in one request or, when they do not
// batch together, in several.
type chunk struct {
	shard *shardRun
	seq   int
	recs  []*record
}

// result is what a chunk gave: its records' output and error lines.
type result struct {
	shard           *shardRun
	seq             int
	out, errs       []byte
	records, errors int64
	bytes           int64
	lastErr         string
}

// event is what the writer receives: one field is set.
type event struct {
	res    *result
	begin  *shardRun // the reader starts a shard
	end    *shardRun // the reader has sent the shard's last chunk
	chunks int       // with end: how many it sent
	err    error     // the reader cannot go on
	done   bool      // the reader has finished
}

// shardRun is a shard being written. The reader sets name and starts
// it; the writer owns the rest.
type shardRun struct {
	name              string
	outTmp, errTmp    *os.File
	outW, errW        *bufio.Writer
	next, total       int // total: -1 until the end event
	pending           map[int]*result
	records, failures int64
}

func newJob(target Target, model *Model, files []inputFile, man *manifest, dir string, opts Options) *job {
	bs := opts.BatchSize
	if bs == 0 {
		bs = min(max(model.MaxBatchSize, 1), autoBatchCap)
	}
	if model.MaxBatchSize <= 0 {
		bs = 1
	}
	var total int64
	for _, f := range files {
		total += f.Size
	}
	w := 2*opts.MaxConcurrency + 2
	return &job{
		target: target, model: model, files: files, man: man, done: maps.Clone(man.Shards), dir: dir, opts: opts, batchSize: bs,
		prog: &progress{w: opts.Progress, terminal: opts.Terminal, interval: opts.ProgressInterval, total: total, label: model.Name,
			stopc: make(chan struct{}), done: make(chan struct{})},
		work:   make(chan *chunk),
		events: make(chan event, w),
		window: make(chan struct{}, w),
	}
}

func (j *job) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	j.prog.start = time.Now()
	if j.opts.Live != nil {
		j.opts.Live.p.Store(j.prog) // after start: the store publishes it
	}
	if j.prog.w != nil {
		go j.prog.run()
	}
	defer j.prog.stop()
	var wg sync.WaitGroup
	wg.Go(func() { j.read(ctx) })
	for range j.opts.MaxConcurrency {
		wg.Go(func() { j.workLoop(ctx) })
	}
	open := map[*shardRun]bool{}
	err := j.write(ctx, open)
	cancel()
	wg.Wait()
	for sh := range open {
		sh.discard(j.dir)
	}
	return err
}

// write is the writer's loop, until the reader is done and every shard
// it started is finished, or the job fails.
func (j *job) write(ctx context.Context, open map[*shardRun]bool) error {
	readerDone := false
	var readerErr error
	for !readerDone || len(open) > 0 {
		if readerErr != nil && len(j.window) == 0 {
			// Everything read before the failure is written: the
			// shards it completed are finished, the one it cut is not.
			return readerErr
		}
		var ev event
		select {
		case <-ctx.Done():
			return fmt.Errorf("interrupted: %w", ctx.Err())
		case ev = <-j.events:
		}
		var check *shardRun // a shard that may be complete now
		switch {
		case ev.err != nil:
			readerErr, readerDone = ev.err, true
		case ev.done:
			readerDone = true
		case ev.begin != nil:
			if err := ev.begin.create(j.dir); err != nil {
				return err
			}
			open[ev.begin] = true
		case ev.end != nil:
			ev.end.total = ev.chunks
			check = ev.end
		case ev.res != nil:
			sh := ev.res.shard
			sh.pending[ev.res.seq] = ev.res
			for r := sh.pending[sh.next]; r != nil; r = sh.pending[sh.next] {
				delete(sh.pending, sh.next)
				sh.next++
				<-j.window
				if err := j.put(sh, r); err != nil {
					return err
				}
			}
			if err := j.checkErrors(); err != nil {
				return err
			}
			check = sh
		}
		if check != nil && check.total >= 0 && check.next == check.total {
			if err := j.finish(check); err != nil {
				return err
			}
			delete(open, check)
		}
	}
	return readerErr
}

// put writes a result, in order, to its shard's files.
func (j *job) put(sh *shardRun, r *result) error {
	if _, err := sh.outW.Write(r.out); err != nil {
		return err
	}
	if _, err := sh.errW.Write(r.errs); err != nil {
		return err
	}
	sh.records += r.records
	sh.failures += r.errors
	j.prog.records.Add(r.records)
	j.prog.errors.Add(r.errors)
	j.prog.bytes.Add(r.bytes)
	if r.lastErr != "" {
		j.lastErr = r.lastErr
	}
	return nil
}

// checkErrors stops the job once the failed records of this run exceed
// the allowed share of at least minErrorWindow records.
func (j *job) checkErrors() error {
	records, errs := j.prog.records.Load(), j.prog.errors.Load()
	if errs == 0 || float64(errs) <= j.opts.MaxErrorFraction*float64(max(records, minErrorWindow)) {
		return nil
	}
	return fmt.Errorf("%w: %d of %d records so far, more than %g of them (the last: %s); the job stopped: the shards finished are kept, and running it again resumes it",
		ErrTooManyErrors, errs, records, j.opts.MaxErrorFraction, j.lastErr)
}

// create opens the shard's temporary files.
func (sh *shardRun) create(dir string) error {
	var err error
	if sh.outTmp, err = os.Create(filepath.Join(dir, outName(sh.name)+tmpSuffix)); err != nil {
		return err
	}
	if sh.errTmp, err = os.Create(filepath.Join(dir, errorsName(sh.name)+tmpSuffix)); err != nil {
		sh.outTmp.Close()
		os.Remove(sh.outTmp.Name())
		sh.outTmp = nil
		return err
	}
	sh.outW, sh.errW = bufio.NewWriterSize(sh.outTmp, 1<<16), bufio.NewWriterSize(sh.errTmp, 1<<12)
	return nil
}

// finish makes a complete shard's files final and records it in the
// manifest.
func (j *job) finish(sh *shardRun) error {
	for _, f := range []struct {
		w    *bufio.Writer
		file *os.File
		name string
	}{{sh.outW, sh.outTmp, outName(sh.name)}, {sh.errW, sh.errTmp, errorsName(sh.name)}} {
		err := f.w.Flush()
		if err == nil {
			err = f.file.Sync()
		}
		if cerr := f.file.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(f.file.Name(), filepath.Join(j.dir, f.name))
		}
		if err != nil {
			return fmt.Errorf("shard %s: %w", sh.name, err)
		}
	}
	sh.outTmp, sh.errTmp = nil, nil
	if err := syncDir(j.dir); err != nil {
		return err
	}
	j.man.Shards[sh.name] = shardDone{Records: sh.records, Errors: sh.failures}
	j.finished++
	return j.man.write(j.dir)
}

// discard removes the files of a shard that did not finish.
func (sh *shardRun) discard(dir string) {
	for _, f := range []*os.File{sh.outTmp, sh.errTmp} {
		if f != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}
}

// send hands an event to the writer; false when the job has stopped.
func (j *job) send(ctx context.Context, ev event) bool {
	select {
	case j.events <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

// read is the reader: every file in order, each shard in order.
func (j *job) read(ctx context.Context) {
	defer close(j.work)
	for _, f := range j.files {
		if err := j.readFile(ctx, f); err != nil {
			if ctx.Err() == nil {
				j.send(ctx, event{err: fmt.Errorf("%s: %w", f.Path, err)})
			}
			return
		}
	}
	j.send(ctx, event{done: true})
}

// errStopped ends the reader when the job has stopped.
var errStopped = errors.New("stopped")

func (j *job) readFile(ctx context.Context, f inputFile) error {
	fh, err := os.Open(f.Path)
	if err != nil {
		return err
	}
	defer fh.Close()
	var src source
	if f.format == "csv" {
		if src, err = newCSVSource(fh, j.model); err != nil {
			return err
		}
	} else {
		src = newJSONLSource(fh, j.opts.MaxRecordBytes)
	}
	var (
		part, n int  // the part of the file being read, and its records so far
		started bool // the part has begun (its first record was read)
		skip    = j.isDone(shardName(f, j.opts.SplitLines, 0))
		sh      *shardRun // the part's shard; nil while skipping a finished one
		pending []*record // the next chunk
		seq     int
	)
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		c := &chunk{shard: sh, seq: seq, recs: pending}
		pending = nil
		if !j.dispatch(ctx, c) {
			return errStopped
		}
		seq++
		return nil
	}
	begin := func() error {
		started = true
		if skip {
			j.skipped++ // read by Run once the reader is done
			return nil
		}
		sh = &shardRun{name: shardName(f, j.opts.SplitLines, part), total: -1, pending: map[int]*result{}}
		seq = 0
		if !j.send(ctx, event{begin: sh}) {
			return errStopped
		}
		return nil
	}
	end := func() error {
		if sh == nil {
			return nil
		}
		if err := flush(); err != nil {
			return err
		}
		if !j.send(ctx, event{end: sh, chunks: seq}) {
			return errStopped
		}
		sh = nil
		return nil
	}
	for {
		rec, err := src.next(!skip)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if !started {
			if err := begin(); err != nil {
				return err
			}
		}
		if skip {
			j.prog.bytes.Add(rec.size)
			j.prog.skipped.Add(rec.size)
		} else if pending = append(pending, rec); len(pending) >= j.batchSize {
			if err := flush(); err != nil {
				return err
			}
		}
		if n++; j.opts.SplitLines > 0 && n == j.opts.SplitLines {
			// The next part begins with its first record: a file of
			// exactly k parts has no empty part k+1.
			if err := end(); err != nil {
				return err
			}
			part, n, started = part+1, 0, false
			skip = j.isDone(shardName(f, j.opts.SplitLines, part))
		}
	}
	if !started && part == 0 {
		// A file without records is one empty shard.
		if err := begin(); err != nil {
			return err
		}
	}
	if started {
		return end()
	}
	return nil
}

func (j *job) isDone(shard string) bool {
	_, ok := j.done[shard]
	return ok
}

// acquire takes a place in the window of chunks in flight.
func (j *job) acquire(ctx context.Context) bool {
	select {
	case j.window <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// dispatch hands a chunk to the workers.
func (j *job) dispatch(ctx context.Context, c *chunk) bool {
	if !j.acquire(ctx) {
		return false
	}
	select {
	case j.work <- c:
		return true
	case <-ctx.Done():
		return false
	}
}

func (j *job) workLoop(ctx context.Context) {
	p := &parser{model: j.model}
	for c := range j.work {
		res := &result{shard: c.shard, seq: c.seq}
		if !j.runChunk(ctx, p, c.recs, res) {
			continue // stopped: drain the channel until the reader closes it
		}
		j.send(ctx, event{res: res})
	}
}

// runChunk parses a chunk's records and runs them: consecutive records
// that batch together (batcher) in one request each, and a record that
// cannot be read straight to the errors. It returns false when the job
// has stopped.
func (j *job) runChunk(ctx context.Context, p *parser, recs []*record, res *result) bool {
	b := &batcher{size: j.batchSize, maxBatch: int64(j.model.MaxBatchSize)}
	var groups [][]*record
	for _, r := range recs {
		res.bytes += r.size
		p.parse(r)
		if r.err == nil {
			groups = append(groups, b.add(r)...)
			continue
		}
		// After the records before it, so that the errors file is in
		// input order too.
		if g := b.flush(); g != nil {
			groups = append(groups, g)
		}
		groups = append(groups, []*record{r})
	}
	if g := b.flush(); g != nil {
		groups = append(groups, g)
	}
	for _, g := range groups {
		if g[0].err != nil {
			j.fail(res, g[0], g[0].err)
		} else if !j.infer(ctx, g, res) {
			return false
		}
	}
	return true
}

// infer runs a group of records and adds their lines to res. A failed
// group of several records is run again record by record, so that one
// bad record fails alone. It returns false when the job has stopped.
func (j *job) infer(ctx context.Context, recs []*record, res *result) bool {
	if ctx.Err() != nil {
		return false
	}
	resp, err := j.target.Infer(ctx, request(j.model, recs))
	if ctx.Err() != nil {
		resp.Done()
		return false
	}
	if err == nil {
		var outs [][]inference.Tensor
		outs, err = split(resp, recs)
		if err == nil {
			for i, r := range recs {
				line, lerr := appendOutputLine(nil, r, outs[i])
				if lerr != nil {
					j.fail(res, r, lerr)
					continue
				}
				res.out = append(res.out, line...)
				res.records++
			}
			resp.Done()
			return true
		}
		resp.Done()
	}
	if len(recs) > 1 {
		for _, r := range recs {
			if !j.infer(ctx, []*record{r}, res) {
				return false
			}
		}
		return true
	}
	j.fail(res, recs[0], err)
	return true
}

func (j *job) fail(res *result, r *record, err error) {
	res.errs = appendErrorLine(res.errs, r.line, err)
	res.records++
	res.errors++
	res.lastErr = err.Error()
}
