package analyze

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// fakeTarget serves a model whose every request takes 1 ms on one of its
// instances: with n instances at concurrency c it answers min(c, n)
// requests per millisecond, and requests beyond n wait.
type fakeTarget struct {
	mu      sync.Mutex // guards the fields below
	repo    *inferencepb.ModelConfig
	cfg     *inferencepb.ModelConfig
	slots   chan struct{}
	loads   []string
	refuse  error // every Load fails with it
	failFor func(Config) error
	perInst int64 // memory per instance
	inputs  []inference.Tensor
}

func newFakeTarget(cfg *inferencepb.ModelConfig) *fakeTarget {
	t := &fakeTarget{repo: cfg, perInst: 3 << 20}
	t.serve(cfg)
	return t
}

func (t *fakeTarget) serve(cfg *inferencepb.ModelConfig) {
	t.cfg = cfg
	t.slots = make(chan struct{}, configOf(cfg).Instances)
}

func (t *fakeTarget) Name() string { return "fake" }

func (t *fakeTarget) Config(_ context.Context, model string) (*inferencepb.ModelConfig, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if model != t.cfg.GetName() {
		return nil, inference.NotFound("Request for unknown model: '%s' is not found", model)
	}
	return proto.Clone(t.cfg).(*inferencepb.ModelConfig), nil
}

func (t *fakeTarget) Load(_ context.Context, _ string, cfg *inferencepb.ModelConfig) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.refuse != nil {
		return t.refuse
	}
	if cfg == nil {
		t.loads = append(t.loads, "repository")
		t.serve(t.repo)
		return nil
	}
	c := configOf(cfg)
	if t.failFor != nil {
		if err := t.failFor(c); err != nil {
			return err
		}
	}
	t.loads = append(t.loads, c.String())
	t.serve(cfg)
	return nil
}

func (t *fakeTarget) Memory(context.Context, string) (int64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return int64(configOf(t.cfg).Instances) * t.perInst, nil
}

func (t *fakeTarget) Caller(_ string, inputs []inference.Tensor) (Caller, error) {
	t.inputs = inputs
	return func(ctx context.Context) error {
		t.mu.Lock()
		slots := t.slots
		t.mu.Unlock()
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		time.Sleep(time.Millisecond)
		<-slots
		return nil
	}, nil
}

func fakeModel() *inferencepb.ModelConfig {
	cfg := mlpConfig()
	cfg.MaxBatchSize = 8
	cfg.GetDynamicBatching().PreferredBatchSize = nil
	cfg.ModelWarmup = nil
	return cfg
}

func fakeOptions() Options {
	return Options{
		Model:  "mlp_fp32",
		Space:  Space{Instances: []int{1, 2}, MaxBatchSizes: []int{1}, Concurrency: []int{4, 1, 2}},
		Warmup: 100 * time.Millisecond, Window: time.Second,
		Now: func() time.Time { return time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC) },
	}
}

func near(got, want, tol float64) bool { return got >= want*(1-tol) && got <= want*(1+tol) }

func TestRunSweep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		target := newFakeTarget(fakeModel())
		opts := fakeOptions()
		opts.LatencyBudget = 1500 * time.Microsecond
		var progress bytes.Buffer
		opts.Progress = &progress
		rep, err := Run(t.Context(), target, opts)
		if err != nil {
			t.Fatal(err)
		}
		wantLoads := []string{
			"max batch 8, delay 0 µs, 1 instance", // the probe: the model's own configuration
			"max batch 1, no dynamic batching, 1 instance",
			"max batch 1, no dynamic batching, 2 instances",
			"repository", // served as the repository says again
		}
		if !slices.Equal(target.loads, wantLoads) {
			t.Errorf("loads:\n%s\nwant:\n%s", strings.Join(target.loads, "\n"), strings.Join(wantLoads, "\n"))
		}
		if len(rep.Points) != 6 {
			t.Fatalf("%d points, want 2 configurations × 3 concurrency levels", len(rep.Points))
		}
		// instances, concurrency -> throughput, p99
		want := []struct {
			n, c      int
			tput, p99 float64
		}{
			{1, 1, 1000, 1}, {1, 2, 1000, 2}, {1, 4, 1000, 4},
			{2, 1, 1000, 1}, {2, 2, 2000, 1}, {2, 4, 2000, 2},
		}
		for i, w := range want {
			p := rep.Points[i]
			if p.Config.Instances != w.n || p.Concurrency != w.c || !near(p.Throughput, w.tput, 0.01) || !near(p.Latency.P99, w.p99, 0.01) {
				t.Errorf("point %d: %d instances, concurrency %d: %g infer/s, p99 %g ms; want %+v", i, p.Config.Instances, p.Concurrency, p.Throughput, p.Latency.P99, w)
			}
			if p.MemoryBytes != int64(w.n)*3<<20 || p.Cost != int64(w.n)*3<<20 {
				t.Errorf("point %d: memory %d, cost %d", i, p.MemoryBytes, p.Cost)
			}
			if meets := p.Latency.P99 <= 1.5; p.MeetsBudget == nil || *p.MeetsBudget != meets {
				t.Errorf("point %d: meets_budget %v, want %t", i, p.MeetsBudget, meets)
			}
		}
		if rep.MemoryPerInstanceBytes != 3<<20 || rep.CostUnit != "bytes" {
			t.Errorf("memory per instance %d %s", rep.MemoryPerInstanceBytes, rep.CostUnit)
		}
		// Within 1.5 ms: one instance at concurrency 1 is the cheapest.
		if r := rep.Recommendation; r.Point != 0 || !r.MeetsBudget {
			t.Errorf("recommendation %+v, want point 0", r)
		}
		if !slices.Equal(rep.Swept, []string{"instances", "max_batch_size", "max_queue_delay_microseconds", "concurrency"}) {
			t.Errorf("swept %v", rep.Swept)
		}
		if rep.Date != "2026-12-03T12:00:00Z" || rep.Target != "fake" || rep.Base.String() != "max batch 8, delay 0 µs, 1 instance" {
			t.Errorf("header: %s %s %s", rep.Date, rep.Target, rep.Base)
		}
		if n := strings.Count(progress.String(), "\n"); n != 6 || !strings.Contains(progress.String(), "[6/6] max batch 1, no dynamic batching, 2 instances, concurrency 4: 2000 infer/s") {
			t.Errorf("progress:\n%s", progress.String())
		}
		// The inputs follow the configuration: [1, 64] FP32.
		if in := target.inputs; len(in) != 1 || in[0].Name != "INPUT0" || !slices.Equal(in[0].Shape, []int64{1, 64}) || len(in[0].Data) != 256 {
			t.Errorf("inputs %+v", in)
		}

		// Without a budget: the highest throughput; of the two at 2000/s
		// the one with the lower p99.
		opts.LatencyBudget, opts.Progress = 0, nil
		rep, err = Run(t.Context(), target, opts)
		if err != nil {
			t.Fatal(err)
		}
		if r := rep.Recommendation; r.Point != 4 {
			t.Errorf("recommendation %+v, want point 4 (2 instances, concurrency 2)", r)
		}
		if rep.Points[0].MeetsBudget != nil {
			t.Error("meets_budget set without a budget")
		}
	})
}

// TestRunServerRefusesReload: a server not in explicit mode refuses the
// probe; the sweep measures the model as loaded at each concurrency.
func TestRunServerRefusesReload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		target := newFakeTarget(fakeModel())
		target.refuse = inference.Unavailable("explicit model load / unload is not allowed if polling is enabled")
		rep, err := Run(t.Context(), target, fakeOptions())
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Points) != 3 || len(target.loads) != 0 {
			t.Fatalf("%d points, loads %v; want 3 concurrency levels and no load", len(rep.Points), target.loads)
		}
		for _, p := range rep.Points {
			if p.Config.String() != rep.Base.String() || !p.measured() {
				t.Errorf("point %+v, want the base configuration, measured", p)
			}
		}
		if !slices.Equal(rep.Swept, []string{"concurrency"}) || len(rep.Notes) != 1 ||
			!strings.Contains(rep.Notes[0], "polling is enabled") || !strings.Contains(rep.Notes[0], "--model-control-mode=explicit") {
			t.Errorf("swept %v, notes %q", rep.Swept, rep.Notes)
		}
	})
}

func TestRunConcurrencyOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		target := newFakeTarget(fakeModel())
		opts := fakeOptions()
		opts.ConcurrencyOnly = true
		rep, err := Run(t.Context(), target, opts)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Points) != 3 || len(target.loads) != 0 {
			t.Errorf("%d points, loads %v", len(rep.Points), target.loads)
		}
	})
}

// TestRunLoadFailure: a configuration that does not load is a failed
// point; the sweep goes on and never recommends it.
func TestRunLoadFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		target := newFakeTarget(fakeModel())
		target.failFor = func(c Config) error {
			if c.Instances == 2 {
				return errors.New("failed to load 'mlp_fp32': out of memory")
			}
			return nil
		}
		opts := fakeOptions()
		rep, err := Run(t.Context(), target, opts)
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range rep.Points {
			failed := p.Config.Instances == 2
			if failed != strings.Contains(p.Error, "out of memory") || failed == p.measured() || (failed && p.Pareto) {
				t.Errorf("point %d: %+v", i, p)
			}
		}
		if r := rep.Recommendation; r.Point < 0 || rep.Points[r.Point].Config.Instances != 1 {
			t.Errorf("recommendation %+v", r)
		}
		var table bytes.Buffer
		WriteTable(&table, rep)
		if !strings.Contains(table.String(), "point 3 failed: load failed: failed to load 'mlp_fp32': out of memory") {
			t.Errorf("table:\n%s", table.String())
		}
	})
}

// TestRunInterrupted: a sweep stopped midway reports the points it
// measured, and still serves the repository's configuration again.
func TestRunInterrupted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		target := newFakeTarget(fakeModel())
		ctx, cancel := context.WithCancel(t.Context())
		// Each point takes 1.1 s: stop in the middle of the fourth.
		time.AfterFunc(3500*time.Millisecond, cancel)
		rep, err := Run(ctx, target, fakeOptions())
		if !errors.Is(err, context.Canceled) || rep == nil {
			t.Fatalf("Run = %v, %v; want a report and context.Canceled", rep, err)
		}
		if len(rep.Points) != 3 || rep.Recommendation.Point < 0 {
			t.Errorf("%d points, recommendation %+v; want 3 and one of them", len(rep.Points), rep.Recommendation)
		}
		if n := rep.Notes[len(rep.Notes)-1]; !strings.Contains(n, "interrupted after 3 of 6 points") {
			t.Errorf("notes %q", rep.Notes)
		}
		if last := target.loads[len(target.loads)-1]; last != "repository" {
			t.Errorf("last load %q, want the repository's configuration", last)
		}
	})
}

func TestRunRefusesModels(t *testing.T) {
	for name, change := range map[string]func(*inferencepb.ModelConfig){
		"decoupled": func(c *inferencepb.ModelConfig) {
			c.ModelTransactionPolicy = &inferencepb.ModelTransactionPolicy{Decoupled: true}
		},
		"sequence model": func(c *inferencepb.ModelConfig) {
			c.SchedulingChoice = &inferencepb.ModelConfig_SequenceBatching{SequenceBatching: &inferencepb.ModelSequenceBatching{}}
		},
	} {
		cfg := fakeModel()
		change(cfg)
		_, err := Run(t.Context(), newFakeTarget(cfg), fakeOptions())
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	opts := fakeOptions()
	opts.RequestBatchSize = 16
	if _, err := Run(t.Context(), newFakeTarget(fakeModel()), opts); err == nil || !strings.Contains(err.Error(), "max_batch_size 8") {
		t.Errorf("request batch above the max: err = %v", err)
	}
	opts = fakeOptions()
	opts.Model = "nope"
	if _, err := Run(t.Context(), newFakeTarget(fakeModel()), opts); err == nil || !strings.Contains(err.Error(), "unknown model") {
		t.Errorf("unknown model: err = %v", err)
	}
}

func TestWriteFiles(t *testing.T) {
	var rep *Report
	synctest.Test(t, func(t *testing.T) {
		opts := fakeOptions()
		opts.LatencyBudget = 1500 * time.Microsecond
		var err error
		if rep, err = Run(t.Context(), newFakeTarget(fakeModel()), opts); err != nil {
			t.Fatal(err)
		}
	})
	dir := filepath.Join(t.TempDir(), "out")
	if err := WriteFiles(dir, rep); err != nil {
		t.Fatal(err)
	}
	js, err := os.ReadFile(filepath.Join(dir, JSONFile))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Points) != len(rep.Points) || back.Recommendation != rep.Recommendation || back.Points[0].Latency != rep.Points[0].Latency {
		t.Errorf("report.json does not round-trip")
	}
	md, err := os.ReadFile(filepath.Join(dir, MarkdownFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"# nereid analyze: mlp_fp32", "## Recommendation", "**Point 0: max batch 1, no dynamic batching, 1 instance, concurrency 1**",
		"](report.svg)", "| **0** | 1 | 1 | off | 1 |", "instance_group [ { count: 1 } ]", "p99 ≤ 1.50 ms",
	} {
		if !strings.Contains(string(md), s) {
			t.Errorf("report.md lacks %q:\n%s", s, md)
		}
	}
	if rows := strings.Count(string(md), "\n| "); rows != len(rep.Points)+1 {
		t.Errorf("report.md has %d table rows, want %d", rows, len(rep.Points)+1)
	}
	svg, err := os.ReadFile(filepath.Join(dir, PlotFile))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(withClass(parseSVG(t, svg), "point")); n != len(rep.Points) {
		t.Errorf("report.svg has %d points, want %d", n, len(rep.Points))
	}
}
