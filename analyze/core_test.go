package analyze_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/analyze"
	_ "github.com/nereid-project/nereid/backends/identity" // registers the identity backend
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/server"
	httpfront "github.com/nereid-project/nereid/server/http"
)

// identityModel echoes a [-1, 8] FP32 tensor after 1 ms, batching up to 8,
// and declares 1 MiB of memory per version to the model cache.
const identityModel = `name: "echo"
backend: "identity"
max_batch_size: 8
input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ -1 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ -1 ] } ]
dynamic_batching { }
instance_group [ { kind: KIND_CPU, count: 1 } ]
parameters { key: "execute_delay_ms" value { string_value: "1" } }
parameters { key: "nereid_memory_bytes" value { string_value: "1048576" } }
`

// newCore is a real server core in explicit mode over a repository with
// the echo model, loaded.
func newCore(t *testing.T) *server.Server {
	t.Helper()
	repo := t.TempDir()
	if err := os.MkdirAll(filepath.Join(repo, "echo", "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "echo", "config.pbtxt"), []byte(identityModel), 0o644); err != nil {
		t.Fatal(err)
	}
	log := zerolog.Nop()
	loader := server.NewLoader(server.LoaderOptions{Logger: log})
	models, err := repository.New(repository.Options{
		Paths: []string{repo}, Mode: repository.ModeExplicit, StartupModels: []string{"echo"}, Loader: loader, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := models.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := models.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	core := server.New(models, server.Options{Logger: log})
	loader.Inferer().Bind(core)
	return core
}

func sweepOptions() analyze.Options {
	return analyze.Options{
		Model: "echo",
		Space: analyze.Space{
			Instances: []int{1, 2}, MaxBatchSizes: []int{1, 8}, QueueDelaysUS: []uint64{0}, Concurrency: []int{1, 4},
		},
		Warmup: 20 * time.Millisecond, Window: 150 * time.Millisecond, DimSize: 8,
		LatencyBudget: time.Second,
	}
}

// checkSweep checks what holds of any sweep of the echo model, however
// busy the machine: every point measured, each configuration loaded as
// asked, and the repository's configuration served again at the end.
func checkSweep(t *testing.T, rep *analyze.Report, config func() (string, error)) {
	t.Helper()
	if len(rep.Points) != 8 {
		t.Fatalf("%d points, want 4 configurations × 2 concurrency levels", len(rep.Points))
	}
	for i, p := range rep.Points {
		if p.Error != "" || p.Errors != 0 || p.Requests == 0 || p.Throughput <= 0 {
			t.Errorf("point %d (%s, concurrency %d) not measured: %+v", i, p.Config, p.Concurrency, p)
		}
		if p.MemoryBytes != 1<<20 {
			t.Errorf("point %d: memory %d, want the declared 1 MiB", i, p.MemoryBytes)
		}
		// Each request takes at least the model's 1 ms.
		if p.Latency.P50 < 1 || p.Latency.P99 < p.Latency.P50 {
			t.Errorf("point %d: latency %+v", i, p.Latency)
		}
	}
	if rep.Recommendation.Point < 0 || !rep.Recommendation.MeetsBudget {
		t.Errorf("no recommendation within a 1 s budget: %+v", rep.Recommendation)
	}
	// Auto-complete gives the dynamic batcher the max batch size as its
	// preferred size, as Triton's does.
	if rep.Base.String() != "max batch 8, delay 0 µs, preferred [8], 1 instance" {
		t.Errorf("base %s", rep.Base)
	}
	got, err := config()
	if err != nil {
		t.Fatal(err)
	}
	if got != rep.Base.String() {
		t.Errorf("after the sweep the model serves %s, want its own configuration", got)
	}
}

// TestInProcessSweep sweeps a real core through the load-with-config path.
func TestInProcessSweep(t *testing.T) {
	core := newCore(t)
	target := analyze.NewInProcess(core)
	var seen []string
	opts := sweepOptions()
	rep, err := analyze.Run(t.Context(), &recordingProcess{recordingTarget{Target: target, seen: &seen}, target}, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkSweep(t, rep, func() (string, error) {
		cfg, err := core.ModelConfig(t.Context(), "echo", "")
		return analyze.Describe(cfg), err
	})
	// What the core served while each point ran is what the point says.
	for _, s := range seen {
		if !strings.HasPrefix(s, "ok ") {
			t.Errorf("served %s", s)
		}
	}
	if rep.Points[0].ResidentBytes <= 0 {
		t.Error("no resident memory for an in-process sweep")
	}
}

// TestHTTPSweep sweeps the same core behind the real HTTP front end.
func TestHTTPSweep(t *testing.T) {
	core := newCore(t)
	front := httpfront.New(core, httpfront.Options{Logger: zerolog.Nop()})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- front.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := front.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := <-served; err != nil {
			t.Error(err)
		}
	})
	target, err := analyze.NewHTTP(ln.Addr().String(), 4)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := target.Live(t.Context(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if mem, err := target.Memory(t.Context(), "echo"); err != nil || mem != 1<<20 {
		t.Errorf("memory %d, %v: want the model's memory_usage", mem, err)
	}
	var seen []string
	rep, err := analyze.Run(t.Context(), &recordingTarget{Target: target, seen: &seen}, sweepOptions())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(rep.Target, "http://127.0.0.1:") {
		t.Errorf("target %q", rep.Target)
	}
	checkSweep(t, rep, func() (string, error) {
		cfg, err := target.Config(t.Context(), "echo")
		return analyze.Describe(cfg), err
	})
	if _, err := target.Config(t.Context(), "nope"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("unknown model: %v", err)
	}
}

// recordingProcess is a recordingTarget of a target in this process.
type recordingProcess struct {
	recordingTarget
	analyze.ProcessMemory
}

// recordingTarget checks, after each load, that the target serves the
// configuration asked for.
type recordingTarget struct {
	analyze.Target
	seen *[]string
}

func (r *recordingTarget) Load(ctx context.Context, model string, cfg *inferencepb.ModelConfig) error {
	if err := r.Target.Load(ctx, model, cfg); err != nil {
		return err
	}
	if cfg == nil {
		return nil
	}
	got, err := r.Config(ctx, model)
	if err != nil {
		return err
	}
	want, have := analyze.Describe(cfg), analyze.Describe(got)
	status := "ok "
	if want != have {
		status = "MISMATCH "
	}
	*r.seen = append(*r.seen, status+want+" / "+have)
	return nil
}
