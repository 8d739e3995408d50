package analyze

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// Target is the server a sweep measures: an in-process core or a server
// by URL. Every method is called from one goroutine except the Caller it
// returns.
type Target interface {
	// Name says what is measured, for the report: "in-process Nereid",
	// "http://host:port".
	Name() string
	// Config returns the configuration the model is served with now.
	Config(ctx context.Context, model string) (*inferencepb.ModelConfig, error)
	// Load reloads the model with cfg in place of its config.pbtxt, and
	// returns once the new configuration serves (a new version is loaded
	// and warmed before it replaces the old). A nil cfg reloads it from
	// the repository's own configuration.
	Load(ctx context.Context, model string, cfg *inferencepb.ModelConfig) error
	// Memory returns the bytes the model's loaded version holds, as its
	// statistics' memory_usage reports them; 0 when the server does not
	// say.
	Memory(ctx context.Context, model string) (int64, error)
	// Caller returns a function that sends one request of the model with
	// these inputs (which it must not change) and waits for the answer.
	Caller(model string, inputs []inference.Tensor) (Caller, error)
}

// ProcessMemory is implemented by targets that run in this process: the
// resident memory of the process, sampled after each configuration.
type ProcessMemory interface {
	ResidentBytes() int64
}

// Options are the settings of one sweep. Zero values take the defaults
// Run fills in.
type Options struct {
	Model string
	Space Space
	// ConcurrencyOnly measures the model as it is loaded, at each
	// concurrency level, without reloading it.
	ConcurrencyOnly bool
	// Warmup is how long each point runs before it is measured (0: 500
	// ms; negative: none); Window how long it is measured (2 s), longer
	// when it holds too few requests (see minWindowRequests).
	Warmup, Window time.Duration
	// RequestBatchSize is the batch dimension of each request of a model
	// that batches (1).
	RequestBatchSize int
	// DimSize replaces every variable (-1) dimension of the inputs (1).
	DimSize int64
	// LatencyBudget is the p99 latency the recommendation must meet; 0:
	// none, recommend the highest throughput.
	LatencyBudget time.Duration
	// Seed seeds the random input data.
	Seed uint64
	// Progress, when not nil, gets one line per measured point.
	Progress io.Writer
	// Now is the clock of the report's date (time.Now).
	Now func() time.Time
	// Command is the command line, for the report.
	Command string
}

func (o *Options) fill() {
	if o.Warmup < 0 {
		o.Warmup = 0
	} else if o.Warmup == 0 {
		o.Warmup = 500 * time.Millisecond
	}
	if o.Window <= 0 {
		o.Window = 2 * time.Second
	}
	if o.RequestBatchSize <= 0 {
		o.RequestBatchSize = 1
	}
	if o.DimSize <= 0 {
		o.DimSize = 1
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

// Report is the result of a sweep: report.json is its JSON form.
type Report struct {
	Model    string   `json:"model"`
	Target   string   `json:"target"`
	Command  string   `json:"command,omitempty"`
	Date     string   `json:"date"`
	Machine  Machine  `json:"machine"`
	Settings Settings `json:"settings"`
	// Base is the model's configuration as the sweep found it.
	Base Config `json:"base_config"`
	// Swept names the dimensions the sweep changed.
	Swept []string `json:"swept"`
	// MemoryPerInstanceBytes is the model's memory per instance (see
	// memoryPerInstance); 0 when the server does not report memory.
	MemoryPerInstanceBytes int64 `json:"memory_per_instance_bytes"`
	// CostUnit is "bytes" (instances × memory per instance) or, when the
	// memory is unknown, "instances".
	CostUnit       string         `json:"cost_unit"`
	Points         []Point        `json:"points"`
	Recommendation Recommendation `json:"recommendation"`
	Notes          []string       `json:"notes,omitempty"`
	Duration       float64        `json:"duration_s"`
}

// Machine is where the sweep ran.
type Machine struct {
	CPUs int    `json:"cpus"`
	OS   string `json:"os"`
	Arch string `json:"arch"`
	// LoadAverage is the 1, 5 and 15 minute load average (Linux) at
	// the start and at the end of the sweep: figures taken on a busy
	// machine are noisy.
	LoadAverage [2]string `json:"load_average"`
}

// loadAverage is /proc/loadavg's first three fields, "" where there is
// none.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// Settings are the sweep's measurement settings.
type Settings struct {
	WarmupMS         float64 `json:"warmup_ms"`
	WindowMS         float64 `json:"window_ms"`
	RequestBatchSize int     `json:"request_batch_size"`
	DimSize          int64   `json:"dim_size"`
	LatencyBudgetMS  float64 `json:"latency_budget_ms,omitempty"`
	Concurrency      []int   `json:"concurrency"`
}

// Point is one configuration measured at one concurrency level.
type Point struct {
	Config      Config `json:"config"`
	Concurrency int    `json:"concurrency"`
	// WindowMS is how long the point was measured: the window, or a
	// multiple of it when it held too few requests.
	WindowMS float64 `json:"window_ms"`
	// Requests completed within the window; Errors is how many clients
	// stopped on a failed request; Error the first failure, or why the
	// configuration could not be loaded.
	Requests int    `json:"requests"`
	Errors   int    `json:"errors"`
	Error    string `json:"error,omitempty"`
	// Throughput is inferences (batch elements) per second.
	Throughput float64 `json:"throughput_infer_per_s"`
	Latency    Latency `json:"latency_ms"`
	// MemoryBytes is the model's memory_usage at this configuration;
	// ResidentBytes the process's resident memory after it (in-process
	// only).
	MemoryBytes   int64 `json:"memory_bytes,omitempty"`
	ResidentBytes int64 `json:"resident_bytes,omitempty"`
	// Cost is instances × the model's memory per instance (CostUnit).
	Cost        int64 `json:"cost"`
	Pareto      bool  `json:"pareto"`
	MeetsBudget *bool `json:"meets_budget,omitempty"`
}

// Run sweeps the model's configurations on target and returns the report.
// A configuration that fails to load is a point with its error, and the
// sweep goes on; Run fails only when the model cannot be measured at all.
// When ctx is done mid-sweep, Run returns the report of the points
// measured so far with ctx's error. When it reloaded the model, Run
// reloads it from the repository's own configuration before it returns.
func Run(ctx context.Context, target Target, opts Options) (*Report, error) {
	opts.fill()
	started := time.Now()
	base, err := target.Config(ctx, opts.Model)
	if err != nil {
		return nil, fmt.Errorf("reading the configuration of model '%s': %w", opts.Model, err)
	}
	if err := measurable(base); err != nil {
		return nil, err
	}
	if base.GetMaxBatchSize() > 0 && opts.RequestBatchSize > int(base.GetMaxBatchSize()) {
		return nil, fmt.Errorf("the request batch size %d is above the max_batch_size %d of model '%s'",
			opts.RequestBatchSize, base.GetMaxBatchSize(), opts.Model)
	}
	inputs, err := makeInputs(base, opts.RequestBatchSize, opts.DimSize, rand.New(rand.NewPCG(opts.Seed, 0x616e616c797a65)))
	if err != nil {
		return nil, err
	}
	call, err := target.Caller(opts.Model, inputs)
	if err != nil {
		return nil, err
	}
	concurrency := positiveSorted(opts.Space.Concurrency)
	if len(concurrency) == 0 {
		concurrency = []int{1}
	}
	rep := &Report{
		Model:   opts.Model,
		Target:  target.Name(),
		Command: opts.Command,
		Date:    opts.Now().UTC().Format(time.RFC3339),
		Machine: Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH, LoadAverage: [2]string{loadAverage()}},
		Settings: Settings{
			WarmupMS: ms(opts.Warmup), WindowMS: ms(opts.Window), RequestBatchSize: opts.RequestBatchSize,
			DimSize: opts.DimSize, LatencyBudgetMS: ms(opts.LatencyBudget), Concurrency: concurrency,
		},
		Base: configOf(base),
	}

	configs, reload, err := plan(ctx, target, base, opts, rep)
	if err != nil {
		return nil, err
	}
	if reload {
		defer func() {
			// Serve the repository's configuration again, whatever
			// happened; a cancelled sweep still gets a moment for it.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if err := target.Load(rctx, opts.Model, nil); err != nil {
				rep.Notes = append(rep.Notes, "reloading the model with its own configuration after the sweep failed: "+err.Error())
			}
		}()
	}
	err = sweep(ctx, target, call, base, configs, reload, opts, rep)
	if err != nil {
		rep.Notes = append(rep.Notes, fmt.Sprintf("interrupted after %d of %d points: %v", len(rep.Points), len(configs)*len(concurrency), err))
	}
	score(rep, opts)
	rep.Duration = time.Since(started).Seconds()
	rep.Machine.LoadAverage[1] = loadAverage()
	return rep, err
}

// plan chooses the configurations to measure and says so in the report:
// the space's, when the server takes a reload with a configuration, else
// the model as it is loaded.
func plan(ctx context.Context, target Target, base *inferencepb.ModelConfig, opts Options, rep *Report) (configs []Config, reload bool, err error) {
	configs = []Config{rep.Base}
	switch {
	case opts.ConcurrencyOnly:
		rep.Notes = append(rep.Notes, "concurrency only: the model was measured as it is loaded")
	case base.GetPlatform() == "ensemble" || base.GetEnsembleScheduling() != nil:
		rep.Notes = append(rep.Notes, "an ensemble has no batching or instances of its own: only concurrency is swept (sweep its composing models)")
	default:
		// A reload with the model's own configuration tells whether the
		// server takes configurations at all (explicit model control).
		if err := target.Load(ctx, opts.Model, base); err != nil {
			if ctx.Err() != nil {
				return nil, false, ctx.Err()
			}
			rep.Notes = append(rep.Notes, fmt.Sprintf(
				"the server refused to reload the model with a configuration (%v): only concurrency is swept, on the model as loaded; "+
					"start it with --model-control-mode=explicit to sweep batching and instances", err))
			break
		}
		reload = true
		var notes []string
		configs, notes = opts.Space.Configs(base)
		rep.Notes = append(rep.Notes, notes...)
		rep.Swept = append(rep.Swept, "instances")
		if base.GetMaxBatchSize() > 0 {
			rep.Swept = append(rep.Swept, "max_batch_size", "max_queue_delay_microseconds")
		}
	}
	rep.Swept = append(rep.Swept, "concurrency")
	return configs, reload, nil
}

// sweep loads each configuration (when reload) and measures it at each
// concurrency level, adding a point for each; it stops when ctx is done.
func sweep(ctx context.Context, target Target, call Caller, base *inferencepb.ModelConfig, configs []Config, reload bool, opts Options, rep *Report) error {
	concurrency := rep.Settings.Concurrency
	for ci, c := range configs {
		var loadErr error
		if reload {
			loadErr = target.Load(ctx, opts.Model, apply(base, c))
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var mem int64
		if loadErr == nil {
			var err error
			if mem, err = target.Memory(ctx, opts.Model); err != nil {
				rep.Notes = append(rep.Notes, fmt.Sprintf("statistics of %s: %v", c, err))
			}
		}
		first := len(rep.Points)
		for ki, n := range concurrency {
			p := Point{Config: c, Concurrency: n, MemoryBytes: mem}
			if loadErr != nil {
				p.Error = "load failed: " + loadErr.Error()
			} else {
				w := measure(ctx, call, n, opts.Warmup, opts.Window)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				p.Requests, p.Errors, p.Error = w.requests, w.errors, w.firstError
				p.WindowMS = ms(w.length)
				p.Throughput = float64(w.requests*opts.RequestBatchSize) / w.length.Seconds()
				p.Latency = summarize(w.latencies)
			}
			rep.Points = append(rep.Points, p)
			fmt.Fprintf(opts.Progress, "[%d/%d] %s, concurrency %d: %s\n", ci*len(concurrency)+ki+1, len(configs)*len(concurrency), c, n, pointSummary(p))
		}
		if pm, ok := target.(ProcessMemory); ok && loadErr == nil {
			rss := pm.ResidentBytes()
			for i := first; i < len(rep.Points); i++ {
				rep.Points[i].ResidentBytes = rss
			}
		}
	}
	return nil
}

// score fills in the memory per instance, each point's cost and budget,
// the Pareto front and the recommendation.
func score(rep *Report, opts Options) {
	rep.MemoryPerInstanceBytes = memoryPerInstance(rep.Points)
	rep.CostUnit = "bytes"
	if rep.MemoryPerInstanceBytes == 0 {
		rep.CostUnit = "instances"
		rep.Notes = append(rep.Notes, "the server reports no memory_usage for the model: cost is the instance count")
	}
	for i := range rep.Points {
		p := &rep.Points[i]
		p.Cost = int64(p.Config.Instances) * max(rep.MemoryPerInstanceBytes, 1)
		if opts.LatencyBudget > 0 && p.measured() {
			meets := p.Latency.P99 <= rep.Settings.LatencyBudgetMS
			p.MeetsBudget = &meets
		}
	}
	markPareto(rep.Points)
	rep.Recommendation = recommend(rep.Points, rep.Settings.LatencyBudgetMS)
}

// measurable refuses the models a closed loop of independent requests
// cannot drive.
func measurable(cfg *inferencepb.ModelConfig) error {
	switch {
	case cfg.GetModelTransactionPolicy().GetDecoupled():
		return errors.New("model '" + cfg.GetName() + "' is decoupled (0..N responses per request): nereid analyze measures request-response models")
	case cfg.GetSequenceBatching() != nil:
		return errors.New("model '" + cfg.GetName() + "' is a sequence model (its requests carry sequence state): nereid analyze measures stateless models")
	}
	return nil
}

// pointSummary is a point's figures on one line.
func pointSummary(p Point) string {
	if !p.measured() {
		if p.Error != "" {
			return "failed: " + p.Error
		}
		return "no request completed"
	}
	return fmt.Sprintf("%s infer/s, p50 %s ms, p99 %s ms", fnum(p.Throughput), fnum(p.Latency.P50), fnum(p.Latency.P99))
}
