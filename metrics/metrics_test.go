package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// series returns name{labels} -> value for every gathered sample; summaries
// report their count.
func series(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
			}
			key := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key] = m.GetGauge().GetValue()
			case dto.MetricType_SUMMARY:
				out[key] = float64(m.GetSummary().GetSampleCount())
			default:
				out[key] = m.GetUntyped().GetValue()
			}
		}
	}
	return out
}

func TestModelSeriesAfterKnownRequests(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.SummaryLatencies = true
	m, err := NewModels(reg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := m.Reporter("simple", 1, ReporterOptions{Tags: map[string]string{"team": "vision"}})
	r.LoadDuration(1500 * time.Millisecond)
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			r.Pending(1)
			r.Pending(-1)
			r.Executed()
			r.Success(4, 10*time.Millisecond, time.Millisecond, 2*time.Microsecond, 3*time.Millisecond, 1500*time.Nanosecond)
		})
	}
	wg.Wait()
	r.Failure("CANCELED")
	r.Failure("BACKEND")
	r.Failure("no such reason")

	got := series(t, reg)
	l := "_team=vision,model=simple,version=1"
	want := map[string]float64{
		"nv_inference_request_success{" + l + "}":                                           5,
		"nv_inference_count{" + l + "}":                                                     20,
		"nv_inference_exec_count{" + l + "}":                                                5,
		"nv_inference_pending_request_count{" + l + "}":                                     0,
		"nv_inference_request_failure{_team=vision,model=simple,reason=REJECTED,version=1}": 0,
		"nv_inference_request_failure{_team=vision,model=simple,reason=CANCELED,version=1}": 1,
		"nv_inference_request_failure{_team=vision,model=simple,reason=BACKEND,version=1}":  1,
		"nv_inference_request_failure{_team=vision,model=simple,reason=OTHER,version=1}":    1,
		"nv_inference_request_duration_us{" + l + "}":                                       50000,
		"nv_inference_queue_duration_us{" + l + "}":                                         5000,
		"nv_inference_compute_input_duration_us{" + l + "}":                                 10,
		"nv_inference_compute_infer_duration_us{" + l + "}":                                 15000,
		"nv_inference_compute_output_duration_us{" + l + "}":                                5, // whole microseconds per request
		"nv_inference_request_summary_us{" + l + "}":                                        5,
		"nv_inference_queue_summary_us{" + l + "}":                                          5,
		"nv_inference_compute_input_summary_us{" + l + "}":                                  5,
		"nv_inference_compute_infer_summary_us{" + l + "}":                                  5,
		"nv_inference_compute_output_summary_us{" + l + "}":                                 5,
		"nv_model_load_duration_secs{" + l + "}":                                            1.5,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d series, want %d: %v", len(got), len(want), got)
	}
}

func TestCounterLatenciesOff(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg, err := ParseConfig([]string{"counter_latencies=false"})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := NewModels(reg, cfg)
	r := m.Reporter("a", 2, ReporterOptions{})
	r.Success(1, time.Second, 0, 0, 0, 0)
	for k := range series(t, reg) {
		if strings.Contains(k, "_duration_us") || strings.Contains(k, "_summary_us") {
			t.Errorf("unexpected latency series %s", k)
		}
	}
	if got := series(t, reg)["nv_inference_request_success{model=a,version=2}"]; got != 1 {
		t.Errorf("success %v", got)
	}
}

func TestSeriesDeletedOnLastClose(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, _ := NewModels(reg, DefaultConfig())
	a := m.Reporter("a", 1, ReporterOptions{})
	b := m.Reporter("b", 1, ReporterOptions{})
	// A reload of a@1 shares its series until both holders close.
	a2 := m.Reporter("a", 1, ReporterOptions{})
	if a2 != a {
		t.Fatal("same labels must share one reporter, as Triton's reporter map does")
	}
	a.Success(1, 0, 0, 0, 0, 0)
	a.Close()
	if got := series(t, reg)["nv_inference_request_success{model=a,version=1}"]; got != 1 {
		t.Fatalf("a's series must live until its last holder closes, got %v", got)
	}
	a2.Close()
	for k := range series(t, reg) {
		if strings.Contains(k, "model=a,") {
			t.Errorf("series %s left after unload", k)
		}
	}
	if _, ok := series(t, reg)["nv_inference_count{model=b,version=1}"]; !ok {
		t.Error("b's series must stay")
	}
	b.Close()
	if got := series(t, reg); len(got) != 0 {
		t.Errorf("series left: %v", got)
	}
}

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig([]string{"summary_latencies=true", "summary_quantiles=0.5:0.1,0.99:0.001", ",counter_latencies=false", "other,counter_latencies=true", "histogram_latencies=true"})
	if err != nil {
		t.Fatal(err)
	}
	if !c.SummaryLatencies || c.CounterLatencies || len(c.SummaryQuantiles) != 2 || c.SummaryQuantiles[0.99] != 0.001 || !c.HistogramLatencies {
		t.Errorf("config %+v", c)
	}
	// An unknown setting is refused, naming it: never silently ignored.
	if _, err := ParseConfig([]string{"histogram_latency=true"}); err == nil || !strings.Contains(err.Error(), "unknown setting 'histogram_latency'") {
		t.Errorf("unknown setting: %v", err)
	}
	for _, bad := range []string{"summary_latencies=maybe", "summary_quantiles=0.5", "summary_quantiles=2:0.1", "novalue", "counter_latencies=", "histogram_latencies=often"} {
		if _, err := ParseConfig([]string{bad}); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

func writeProc(t *testing.T, dir, stat, meminfo string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "meminfo"), []byte(meminfo), 0o600); err != nil {
		t.Fatal(err)
	}
}

type noGPU struct{}

func (noGPU) uuids() []string              { return nil }
func (noGPU) read(int) (gpuReading, error) { return gpuReading{}, nil }
func (noGPU) close()                       {}
func openNoGPU() (gpuSource, error)        { return nil, errors.New("NVML is not available") }
func openFakeGPU(f *fakeGPU) func() (gpuSource, error) {
	return func() (gpuSource, error) { return f, nil }
}

type fakeGPU struct {
	mu     sync.Mutex
	energy uint64
	closed bool
}

func (f *fakeGPU) uuids() []string { return []string{"GPU-1234"} }
func (f *fakeGPU) read(int) (gpuReading, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.energy += 2500
	return gpuReading{utilization: 0.42, memTotal: 80 << 30, memUsed: 1 << 30, power: 120.5, powerLimit: 700, energy: f.energy}, nil
}
func (f *fakeGPU) close() { f.mu.Lock(); f.closed = true; f.mu.Unlock() }

var _ gpuSource = noGPU{}

func TestPollerCPUAndNoGPU(t *testing.T) {
	dir := t.TempDir()
	writeProc(t, dir, "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3\n", "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n")
	reg := prometheus.NewRegistry()
	p, err := NewPoller(reg, PollerOptions{CPU: true, GPU: true, ProcRoot: dir, Interval: 5 * time.Millisecond, Logger: zerolog.Nop(), openGPUs: openNoGPU})
	if err != nil {
		t.Fatal(err)
	}
	got := series(t, reg)
	if got["nv_cpu_memory_total_bytes{}"] != 1000*1024 || got["nv_cpu_memory_used_bytes{}"] != 750*1024 {
		t.Errorf("memory %v", got)
	}
	for k := range got {
		if strings.HasPrefix(k, "nv_gpu") || strings.HasPrefix(k, "nv_energy") {
			t.Errorf("GPU series %s without a GPU", k)
		}
	}
	// 300 more busy jiffies and 100 more idle ones: 75% busy.
	writeProc(t, dir, "cpu  300 0 200 900 0 0 0 0 0 0\n", "MemTotal:       1000 kB\nMemAvailable:    500 kB\n")
	p.poll()
	if got := series(t, reg); got["nv_cpu_utilization{}"] != 0.75 || got["nv_cpu_memory_used_bytes{}"] != 500*1024 {
		t.Errorf("after a poll: %v", got)
	}
	// Run polls every interval (virtual time) until its context ends,
	// then returns.
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); p.Run(ctx) }()
		writeProc(t, dir, "cpu  300 0 200 900 0 0 0 0 0 0\n", "MemTotal:       1000 kB\nMemAvailable:    100 kB\n")
		time.Sleep(6 * time.Millisecond)
		synctest.Wait()
		if got := series(t, reg); got["nv_cpu_memory_used_bytes{}"] != 900*1024 {
			t.Errorf("Run did not poll: %v", got)
		}
		cancel()
		<-done
	})
}

func TestPollerGPU(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := &fakeGPU{}
	p, err := NewPoller(reg, PollerOptions{GPU: true, Logger: zerolog.Nop(), openGPUs: openFakeGPU(f)})
	if err != nil {
		t.Fatal(err)
	}
	p.poll()
	got := series(t, reg)
	l := "{gpu_uuid=GPU-1234}"
	for k, v := range map[string]float64{
		"nv_gpu_utilization" + l: 0.42, "nv_gpu_memory_total_bytes" + l: 80 << 30, "nv_gpu_memory_used_bytes" + l: 1 << 30,
		"nv_gpu_power_usage" + l: 120.5, "nv_gpu_power_limit" + l: 700, "nv_energy_consumption" + l: 2.5,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p.Run(ctx)
	if !f.closed {
		t.Error("Run must release the GPU source when it stops")
	}
}

func TestHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, _ := NewModels(reg, DefaultConfig())
	m.Reporter("simple", 1, ReporterOptions{}).Success(1, time.Millisecond, 0, 0, 0, 0)
	srv := httptest.NewServer(Handler(reg))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `nv_inference_request_success{model="simple",version="1"} 1`) ||
		!strings.Contains(string(body), "# TYPE nv_inference_request_success counter") {
		t.Errorf("%d %s", resp.StatusCode, body)
	}
	resp, err = http.Post(srv.URL+"/metrics", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || string(body) != `{"error":"Method Not Allowed"}` {
		t.Errorf("POST: %d %s", resp.StatusCode, body)
	}
	resp, err = http.Get(srv.URL + "/other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("other path: %d", resp.StatusCode)
	}
}

// A version that uses the response cache reports Triton's nv_cache_*
// series; a hit is a success with its request duration, and no inference.
func TestResponseCacheSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.SummaryLatencies = true
	m, _ := NewModels(reg, cfg)
	plain := m.Reporter("plain", 1, ReporterOptions{})
	plain.CacheHit(time.Millisecond, time.Microsecond) // counted as a success only
	r := m.Reporter("cached", 1, ReporterOptions{ResponseCache: true})
	r.CacheMiss(30 * time.Microsecond)
	r.Success(1, 2*time.Millisecond, 0, 0, time.Millisecond, 0)
	r.CacheHit(400*time.Microsecond, 20*time.Microsecond)
	r.CacheHit(600*time.Microsecond, 40*time.Microsecond)
	got := series(t, reg)
	l := "{model=cached,version=1}"
	want := map[string]float64{
		"nv_cache_num_hits_per_model" + l:                     2,
		"nv_cache_num_misses_per_model" + l:                   1,
		"nv_cache_hit_duration_per_model" + l:                 60,
		"nv_cache_miss_duration_per_model" + l:                30,
		"nv_cache_hit_summary_per_model" + l:                  2,
		"nv_cache_miss_summary_per_model" + l:                 1,
		"nv_inference_request_success" + l:                    3,
		"nv_inference_count" + l:                              1,
		"nv_inference_request_duration_us" + l:                3000,
		"nv_inference_request_success{model=plain,version=1}": 1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if _, ok := got["nv_cache_num_hits_per_model{model=plain,version=1}"]; ok {
		t.Error("a version without the response cache has cache series")
	}
	plain.Close()
	r.Close()
}

// The first-response histogram: decoupled versions only, with
// histogram_latencies on, in milliseconds, with the configuration's
// buckets or Triton's.
func TestFirstResponseHistogram(t *testing.T) {
	buckets := func(reg prometheus.Gatherer, model string) (uint64, float64, []float64) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != FirstResponseHistogram {
				continue
			}
			for _, mm := range mf.GetMetric() {
				for _, lp := range mm.GetLabel() {
					if lp.GetName() == "model" && lp.GetValue() == model {
						h := mm.GetHistogram()
						var les []float64
						for _, b := range h.GetBucket() {
							les = append(les, b.GetUpperBound())
						}
						return h.GetSampleCount(), h.GetSampleSum(), les
					}
				}
			}
		}
		return 0, 0, nil
	}
	off := prometheus.NewRegistry()
	m, _ := NewModels(off, DefaultConfig())
	m.Reporter("stream", 1, ReporterOptions{Decoupled: true}).FirstResponse(time.Second)
	if n, _, les := buckets(off, "stream"); n != 0 || les != nil {
		t.Fatalf("histogram without histogram_latencies: %d %v", n, les)
	}

	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.HistogramLatencies = true
	m, _ = NewModels(reg, cfg)
	m.Reporter("unary", 1, ReporterOptions{})
	s := m.Reporter("stream", 1, ReporterOptions{Decoupled: true})
	s.FirstResponse(250 * time.Millisecond)
	s.FirstResponse(1500 * time.Microsecond)
	if n, sum, les := buckets(reg, "stream"); n != 2 || sum != 251.5 || !slices.Equal(les, DefaultFirstResponseBuckets) {
		t.Errorf("stream: count %d sum %v buckets %v", n, sum, les)
	}
	if _, _, les := buckets(reg, "unary"); les != nil {
		t.Error("a model that is not decoupled has the first-response histogram")
	}
	o := m.Reporter("own", 1, ReporterOptions{Decoupled: true, FirstResponseBuckets: []float64{-1, 0, 1, 2.5}})
	o.FirstResponse(2 * time.Millisecond)
	if n, _, les := buckets(reg, "own"); n != 1 || !slices.Equal(les, []float64{-1, 0, 1, 2.5}) {
		t.Errorf("own buckets: %d %v", n, les)
	}
}
