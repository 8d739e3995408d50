package batch

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/nereid-project/nereid/inference"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoTarget serves vecModel: Y is X. Record i of the test data sets is
// X = [i, i, i, i], so every output says which record it is. fail, when
// set, fails a whole request that holds a record it names (a model
// refusing a batch); block, when set, holds a request with such a record
// until the job stops.
type echoTarget struct {
	model *Model
	fail  func(v int) error
	block func(v int) bool

	mu       sync.Mutex
	requests int
	seen     map[int]int // record value -> times it was sent
}

func newEcho() *echoTarget { return &echoTarget{model: vecModel, seen: map[int]int{}} }

func (e *echoTarget) Model(_ context.Context, name, version string) (*Model, error) {
	if name != e.model.Name {
		return nil, inference.NotFound("Request for unknown model: '%s' is not found", name)
	}
	m := *e.model
	m.Version = version
	return &m, nil
}

func (e *echoTarget) Infer(ctx context.Context, req *inference.Request) (*inference.Response, error) {
	x := req.Inputs[0]
	if len(x.Shape) != 2 || x.Shape[1] != 4 {
		return nil, inference.InvalidArg("unexpected shape for input 'X' for model 'vec'. Expected [-1,4], got %v", x.Shape)
	}
	vals := float32s(x.Data)
	e.mu.Lock()
	e.requests++
	for i := 0; i < len(vals); i += 4 {
		e.seen[int(vals[i])]++
	}
	e.mu.Unlock()
	for i := 0; i < len(vals); i += 4 {
		v := int(vals[i])
		if e.block != nil && e.block(v) {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		if e.fail != nil {
			if err := e.fail(v); err != nil {
				return nil, err
			}
		}
	}
	data := slices.Clone(x.Data)
	return &inference.Response{Outputs: []inference.Tensor{{Name: "Y", DataType: inference.FP32, Shape: x.Shape, Data: data}}}, nil
}

// writeData writes records 1..n of vecModel, one a line; bad replaces
// lines with other text.
func writeData(t *testing.T, path string, n int, bad map[int]string) {
	t.Helper()
	var b strings.Builder
	for i := 1; i <= n; i++ {
		if s, ok := bad[i]; ok {
			b.WriteString(s + "\n")
			continue
		}
		fmt.Fprintf(&b, "{\"X\":[%d,%d,%d,%d]}\n", i, i, i, i)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

type outLine struct {
	Line    int `json:"line"`
	Outputs []struct {
		Name  string    `json:"name"`
		Shape []int64   `json:"shape"`
		Data  []float64 `json:"data"`
	} `json:"outputs"`
}

type errLine struct {
	Line  int    `json:"line"`
	Error string `json:"error"`
}

func readLines[T any](t *testing.T, path string) []T {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []T
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("%s: %q: %v", path, sc.Text(), err)
		}
		out = append(out, v)
	}
	return out
}

// checkOutputs checks that the output files of the shards hold every
// record 1..n but those in bad exactly once, in order, each echoed, and
// that the error files hold exactly the bad lines.
func checkOutputs(t *testing.T, dir string, shards []string, n int, bad []int) {
	t.Helper()
	var got, errs []int
	for _, sh := range shards {
		for _, l := range readLines[outLine](t, filepath.Join(dir, outName(sh))) {
			if len(l.Outputs) != 1 || len(l.Outputs[0].Data) != 4 || l.Outputs[0].Data[0] != float64(l.Line) {
				t.Fatalf("shard %s: line %+v does not echo its record", sh, l)
			}
			got = append(got, l.Line)
		}
		for _, l := range readLines[errLine](t, filepath.Join(dir, errorsName(sh))) {
			errs = append(errs, l.Line)
		}
	}
	var want []int
	for i := 1; i <= n; i++ {
		if !slices.Contains(bad, i) {
			want = append(want, i)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("output lines: %d of them, want %d (first difference near %v)", len(got), len(want), firstDiff(got, want))
	}
	if !slices.Equal(errs, bad) {
		t.Errorf("error lines %v, want %v", errs, bad)
	}
	tmps, _ := filepath.Glob(filepath.Join(dir, "*"+tmpSuffix))
	if len(tmps) > 0 {
		t.Errorf("temporary files left: %v", tmps)
	}
}

func firstDiff(a, b []int) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return a[i]
		}
	}
	return min(len(a), len(b))
}

func shardNames(base string, n int) []string {
	var s []string
	for i := range n {
		s = append(s, fmt.Sprintf("%s-%05d", base, i))
	}
	return s
}

func loadDone(t *testing.T, dir string) []string {
	t.Helper()
	m, err := loadManifest(dir)
	if err != nil || m == nil {
		t.Fatalf("manifest: %v", err)
	}
	var names []string
	for n := range m.Shards {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func TestRunJSONL(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "data.jsonl")
	writeData(t, in, 1000, map[int]string{7: "{not json", 500: `{"Z":[1]}`, 999: `{"X":[1,2]}`})
	target := newEcho()
	out := filepath.Join(dir, "out")
	sum, err := Run(context.Background(), target, Options{Model: "vec", Input: in, Output: out, MaxErrorFraction: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	checkOutputs(t, out, []string{"data"}, 1000, []int{7, 500, 999})
	if sum.Records != 1000 || sum.Errors != 3 || sum.Shards != 1 || sum.Skipped != 0 || sum.AllRecords != 1000 {
		t.Errorf("summary %+v", sum)
	}
	// Four records a request (max_batch_size), but line 999 went alone.
	if target.requests > 260 || target.requests < 249 {
		t.Errorf("%d requests for 997 good records in fours", target.requests)
	}
	errs := readLines[errLine](t, filepath.Join(out, errorsName("data")))
	if !strings.Contains(errs[1].Error, "unknown input 'Z'") || !strings.Contains(errs[2].Error, "Expected [-1,4], got [1 2]") {
		t.Errorf("errors %+v", errs)
	}
	if done := loadDone(t, out); !slices.Equal(done, []string{"data"}) {
		t.Errorf("manifest shards %v", done)
	}

	// Run again: nothing to do.
	target = newEcho()
	sum, err = Run(context.Background(), target, Options{Model: "vec", Input: in, Output: out, MaxErrorFraction: 0.1})
	if err != nil || target.requests != 0 || sum.Skipped != 1 || sum.AllRecords != 1000 || sum.AllErrors != 3 {
		t.Errorf("second run: %v, %d requests, summary %+v", err, target.requests, sum)
	}
}

func TestBadRecordInBatchFailsAlone(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "d.jsonl")
	writeData(t, in, 40, nil)
	target := newEcho()
	target.fail = func(v int) error {
		if v == 13 {
			return inference.InvalidArg("record 13 is refused")
		}
		return nil
	}
	out := filepath.Join(dir, "out")
	if _, err := Run(context.Background(), target, Options{Model: "vec", Input: in, Output: out, BatchSize: 4, MaxErrorFraction: 0.1}); err != nil {
		t.Fatal(err)
	}
	checkOutputs(t, out, []string{"d"}, 40, []int{13})
	if target.seen[13] != 2 || target.seen[14] != 2 || target.seen[12] != 1 {
		t.Errorf("records 12..14 sent %d, %d, %d times: want the batch of 13..16 retried record by record", target.seen[12], target.seen[13], target.seen[14])
	}
	if errs := readLines[errLine](t, filepath.Join(out, errorsName("d"))); errs[0].Error != "record 13 is refused" {
		t.Errorf("error %q", errs[0].Error)
	}
}

func TestSplitLinesAndResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		in := filepath.Join(dir, "d.jsonl")
		writeData(t, in, 1000, map[int]string{150: "[1,2,3,4"})
		out := filepath.Join(dir, "out")
		opts := Options{Model: "vec", Input: in, Output: out, SplitLines: 100, MaxErrorFraction: 0.1}

		// Records from 550 on never finish: the job is stopped (as by
		// SIGINT) once everything before them is written.
		ctx, cancel := context.WithCancel(context.Background())
		target := newEcho()
		target.block = func(v int) bool { return v >= 550 }
		var err error
		finished := make(chan struct{})
		go func() {
			defer close(finished)
			_, err = Run(ctx, target, opts)
		}()
		synctest.Wait()
		if done := loadDone(t, out); !slices.Equal(done, shardNames("d", 5)) {
			t.Errorf("finished before the stop: %v", done)
		}
		cancel()
		<-finished
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("stopped run: %v", err)
		}
		if done := loadDone(t, out); !slices.Equal(done, shardNames("d", 5)) {
			t.Errorf("finished after the stop: %v", done)
		}
		if _, err := os.Stat(filepath.Join(out, outName("d-00005"))); err == nil {
			t.Error("the unfinished shard d-00005 has an output file")
		}

		// The restart runs only the shards not finished.
		target = newEcho()
		sum, err := Run(context.Background(), target, opts)
		if err != nil {
			t.Fatal(err)
		}
		for v := range target.seen {
			if v <= 500 {
				t.Fatalf("record %d of a finished shard was run again", v)
			}
		}
		if sum.Shards != 5 || sum.Skipped != 5 || sum.Records != 500 || sum.AllRecords != 1000 || sum.AllErrors != 1 {
			t.Errorf("summary %+v", sum)
		}
		checkOutputs(t, out, shardNames("d", 10), 1000, []int{150})
	})
}

func TestErrorFractionStopsTheJob(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "d.jsonl")
	writeData(t, in, 1000, nil)
	out := filepath.Join(dir, "out")
	// One worker, so results arrive in order and the shards before the
	// failures are certainly finished when the job stops.
	opts := Options{Model: "vec", Input: in, Output: out, SplitLines: 100, MaxConcurrency: 1, MaxErrorFraction: 0.1}
	target := newEcho()
	target.fail = func(v int) error { // the model breaks after record 300
		if v > 300 {
			return inference.Internal("onnxruntime: out of memory")
		}
		return nil
	}
	sum, err := Run(context.Background(), target, opts)
	if !errors.Is(err, ErrTooManyErrors) || !strings.Contains(err.Error(), "the last: onnxruntime: out of memory") {
		t.Fatalf("error %v", err)
	}
	if sum.Errors < 34 || sum.Errors > 40 {
		t.Errorf("stopped after %d errors, want about 34 (> 10%% of 334)", sum.Errors)
	}
	if done := loadDone(t, out); !slices.Equal(done, shardNames("d", 3)) {
		t.Errorf("finished shards %v", done)
	}
	// Fixed, the job resumes from shard 3.
	target = newEcho()
	if _, err := Run(context.Background(), target, opts); err != nil {
		t.Fatal(err)
	}
	if target.seen[300] != 0 || target.seen[301] != 1 {
		t.Errorf("resumed at the wrong place: record 300 sent %d times, 301 %d", target.seen[300], target.seen[301])
	}
	checkOutputs(t, out, shardNames("d", 10), 1000, nil)
}

func TestErrorFractionAtTheEnd(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "d.jsonl")
	writeData(t, in, 20, map[int]string{2: "x", 4: "x", 6: "x"})
	out := filepath.Join(dir, "out")
	sum, err := Run(context.Background(), newEcho(), Options{Model: "vec", Input: in, Output: out, MaxErrorFraction: 0.1})
	if !errors.Is(err, ErrTooManyErrors) || !strings.Contains(err.Error(), "3 of 20 records") {
		t.Fatalf("error %v", err)
	}
	// The job ran to its end: its shard is finished, with its errors.
	checkOutputs(t, out, []string{"d"}, 20, []int{2, 4, 6})
	if sum.Records != 20 {
		t.Errorf("summary %+v", sum)
	}
	// With no errors allowed, the first one stops the job.
	out0 := filepath.Join(dir, "out0")
	if _, err := Run(context.Background(), newEcho(), Options{Model: "vec", Input: in, Output: out0, MaxErrorFraction: 0}); !errors.Is(err, ErrTooManyErrors) {
		t.Fatalf("error %v", err)
	}
	if done := loadDone(t, out0); len(done) != 0 {
		t.Errorf("finished shards %v", done)
	}
}

func TestDirectoryInput(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	os.Mkdir(data, 0o755)
	writeData(t, filepath.Join(data, "a.jsonl"), 10, nil)
	os.WriteFile(filepath.Join(data, "b.csv"), []byte("x0,x1,x2,x3\n11,11,11,11\n12,12,12,12\n"), 0o644)
	os.WriteFile(filepath.Join(data, "notes.txt"), []byte("not records"), 0o644)
	out := filepath.Join(dir, "out")
	sum, err := Run(context.Background(), newEcho(), Options{Model: "vec", Input: data, Output: out, MaxErrorFraction: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Shards != 2 || sum.Records != 12 {
		t.Errorf("summary %+v", sum)
	}
	checkOutputs(t, out, []string{"a"}, 10, nil)
	b := readLines[outLine](t, filepath.Join(out, outName("b")))
	if len(b) != 2 || b[0].Line != 2 || b[1].Outputs[0].Data[0] != 12 {
		t.Errorf("b.csv output %+v", b)
	}

	// Two files of one name would write the same shard.
	os.WriteFile(filepath.Join(data, "a.csv"), []byte("X\n"), 0o644)
	if _, err := Run(context.Background(), newEcho(), Options{Model: "vec", Input: data, Output: filepath.Join(dir, "o2")}); err == nil || !strings.Contains(err.Error(), "would write the same output files") {
		t.Errorf("duplicate shard names: %v", err)
	}
	os.Remove(filepath.Join(data, "a.csv"))

	// A file that cannot be read stops the job; the shards before it
	// are finished.
	os.WriteFile(filepath.Join(data, "c.csv"), []byte("\"x0,x1\n1,2\n"), 0o644)
	o3 := filepath.Join(dir, "o3")
	_, err = Run(context.Background(), newEcho(), Options{Model: "vec", Input: data, Output: o3})
	if err == nil || !strings.Contains(err.Error(), "c.csv: the header row") {
		t.Fatalf("unreadable file: %v", err)
	}
	if done := loadDone(t, o3); !slices.Equal(done, []string{"a", "b"}) {
		t.Errorf("finished before the unreadable file: %v", done)
	}
}

func TestOutputChecks(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "d.jsonl")
	writeData(t, in, 10, nil)
	if _, err := Run(context.Background(), newEcho(), Options{Model: "vec", Input: in, Output: dir}); err == nil || !strings.Contains(err.Error(), "is the directory of the input files") {
		t.Errorf("output in the input directory: %v", err)
	}
	if _, err := Run(context.Background(), newEcho(), Options{Model: "nope", Input: in, Output: filepath.Join(dir, "o")}); err == nil || !strings.Contains(err.Error(), "'nope' is not found") {
		t.Errorf("unknown model: %v", err)
	}
	if _, err := Run(context.Background(), newEcho(), Options{Model: "vec", Input: filepath.Join(dir, "d.txt"), Output: filepath.Join(dir, "o")}); err == nil {
		t.Error("a file that is not .jsonl or .csv was read")
	}

	// Another job's output directory is refused.
	out := filepath.Join(dir, "out")
	if _, err := Run(context.Background(), newEcho(), Options{Model: "vec", Input: in, Output: out, SplitLines: 5}); err != nil {
		t.Fatal(err)
	}
	_, err := Run(context.Background(), newEcho(), Options{Model: "vec", Input: in, Output: out, SplitLines: 4})
	if err == nil || !strings.Contains(err.Error(), "holds the results of another job (--split-lines=5, not 4)") {
		t.Errorf("another job: %v", err)
	}
	writeData(t, in, 11, nil)
	_, err = Run(context.Background(), newEcho(), Options{Model: "vec", Input: in, Output: out, SplitLines: 5})
	if err == nil || !strings.Contains(err.Error(), "other input files") {
		t.Errorf("changed input: %v", err)
	}
	writeData(t, in, 10, nil)

	// A finished shard whose files were removed is run again.
	os.Remove(filepath.Join(out, outName("d-00001")))
	target := newEcho()
	sum, err := Run(context.Background(), target, Options{Model: "vec", Input: in, Output: out, SplitLines: 5})
	if err != nil || sum.Shards != 1 || sum.Skipped != 1 || target.seen[3] != 0 || target.seen[8] != 1 {
		t.Errorf("rerun of a removed shard: %v, %+v", err, sum)
	}
	checkOutputs(t, out, shardNames("d", 2), 10, nil)
}

func TestNonBatchingModel(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "d.jsonl")
	os.WriteFile(in, []byte("{\"G\":[1,2,3,4]}\n{\"G\":[[5,6],[7,8]]}\n"), 0o644)
	target := &gridTarget{}
	out := filepath.Join(dir, "out")
	if _, err := Run(context.Background(), target, Options{Model: "grid", Input: in, Output: out, BatchSize: 8}); err != nil {
		t.Fatal(err)
	}
	got := readLines[outLine](t, filepath.Join(out, outName("d")))
	if len(got) != 2 || !slices.Equal(got[1].Outputs[0].Shape, []int64{2, 2}) || target.requests != 2 {
		t.Errorf("outputs %+v, %d requests", got, target.requests)
	}
}

// gridTarget serves gridModel, which does not batch: one record a
// request whatever the batch size.
type gridTarget struct {
	mu       sync.Mutex
	requests int
}

func (g *gridTarget) Model(context.Context, string, string) (*Model, error) { return gridModel, nil }

func (g *gridTarget) Infer(_ context.Context, req *inference.Request) (*inference.Response, error) {
	g.mu.Lock()
	g.requests++
	g.mu.Unlock()
	in := req.Inputs[0]
	if !slices.Equal(in.Shape, []int64{2, 2}) {
		return nil, inference.InvalidArg("shape %v", in.Shape)
	}
	return &inference.Response{Outputs: []inference.Tensor{{Name: "G", DataType: in.DataType, Shape: in.Shape, Data: in.Data}}}, nil
}

func TestProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf syncBuffer
		p := &progress{w: &buf, interval: 10 * time.Second, total: 1000, label: "vec", start: time.Now(),
			stopc: make(chan struct{}), done: make(chan struct{})}
		go p.run()
		p.records.Store(100)
		p.bytes.Store(250)
		time.Sleep(10*time.Second + time.Millisecond)
		synctest.Wait()
		want := "batch: vec: 100 records, 0 errors, 10 records/s, 25% of the input, ETA 30s\n"
		if got := buf.String(); got != want {
			t.Errorf("report %q, want %q", got, want)
		}
		p.stop()

		// On a terminal, one line redrawn, ended at the stop.
		buf = syncBuffer{}
		p = &progress{w: &buf, terminal: true, interval: time.Second, total: 1000, label: "vec", start: time.Now(),
			stopc: make(chan struct{}), done: make(chan struct{})}
		p.skipped.Store(500)
		p.bytes.Store(750)
		p.records.Store(30)
		go p.run()
		time.Sleep(3*time.Second + time.Millisecond)
		synctest.Wait()
		p.stop()
		out := buf.String()
		if strings.Count(out, "\r") != 4 || !strings.HasSuffix(out, "\n") ||
			!strings.Contains(out, "\rvec [==================      ]  75%  30 records  0 errors  10 rec/s  ETA 3s\x1b[K") {
			t.Errorf("terminal reports %q", out)
		}
	})
}

// syncBuffer is a strings.Builder safe for the progress goroutine and the
// test.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
