package traffic

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/nereid-project/nereid/inference"
)

func writeConfig(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "traffic.json")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const canary = `{"routes": {"m": {"variants": [
	{"name": "stable", "model": "m", "version": "1", "weight": 80},
	{"name": "canary", "model": "m", "version": "2", "weight": 20}]%s}}}`

func newRouter(t *testing.T, body string, opts Options) *Router {
	t.Helper()
	r, err := New(writeConfig(t, t.TempDir(), body), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func TestWeightedSplit(t *testing.T) {
	r := newRouter(t, fmt.Sprintf(canary, ""), Options{})
	src := rand.New(rand.NewPCG(1, 2))
	r.rng = src.Float64
	counts := map[string]int{}
	const n = 20000
	for range n {
		d := r.Route(&inference.Request{ModelName: "m"})
		model, version := d.Target()
		counts[model+":"+version]++
		d.Done(nil)
	}
	// 20 % ± 4 standard deviations of a binomial(20000, 0.2).
	sd := math.Sqrt(n * 0.2 * 0.8)
	if got := float64(counts["m:2"]); math.Abs(got-0.2*n) > 4*sd {
		t.Errorf("canary got %v of %d, want about %v", got, n, 0.2*n)
	}
	// A request naming a version, or another model, is not routed.
	if r.Route(&inference.Request{ModelName: "m", ModelVersion: "1"}) != nil || r.Route(&inference.Request{ModelName: "x"}) != nil {
		t.Error("routed a request that names a version, or an unrouted model")
	}
}

func TestStickyRouting(t *testing.T) {
	r := newRouter(t, fmt.Sprintf(canary, `, "sticky_parameter": "user"`), Options{})
	seen := map[string]string{}
	variants := map[string]bool{}
	for i := range 400 {
		user := fmt.Sprintf("user-%d", i%40)
		d := r.Route(&inference.Request{ModelName: "m", Parameters: inference.Parameters{"user": user}})
		_, v := d.Target()
		if prev, ok := seen[user]; ok && prev != v {
			t.Fatalf("%s moved from version %s to %s", user, prev, v)
		}
		seen[user] = v
		variants[v] = true
	}
	if len(variants) != 2 {
		t.Errorf("40 users all got one variant: %v", variants)
	}
}

func TestConfigRefusals(t *testing.T) {
	check := func(model, version string) error {
		if model == "missing" || version == "9" {
			return errors.New("not in the repository")
		}
		return nil
	}
	for body, want := range map[string]string{
		`{"routes": {"m": {"variants": [{"model": "m", "weight": 50}]}}}`:                                           "weights sum to 50, not 100",
		`{"routes": {"m": {"variants": [{"model": "m", "weight": -1}, {"model": "n", "weight": 101}]}}}`:            "must not be negative",
		`{"routes": {"m": {"variants": [{"model": "missing", "weight": 100}]}}}`:                                    "variant 'missing': not in the repository",
		`{"routes": {"m": {"variants": [{"model": "m", "version": "9", "weight": 100}]}}}`:                          "variant 'm:9': not in the repository",
		`{"routes": {"m": {"variants": [{"model": "m", "version": "x", "weight": 100}]}}}`:                          "is not a version number",
		`{"routes": {"m": {"variants": [{"model": "m", "weight": 100}], "shadow": {"model": "m", "fraction": 2}}}}`: "shadow fraction 2",
		`{"routes": {"m": {"variants": [{"model": "m", "weight": 100}], "rollback": {"window_secs": 0}}}}`:          "positive window_secs",
		`{"routes": {"m": {"variants": []}}}`:                                                                       "no variants",
		`{"routes": {"m": {"variants": [{"model": "m", "weight": 100, "wieght": 1}]}}}`:                             "unknown field",
	} {
		_, err := New(writeConfig(t, t.TempDir(), body), Options{Check: check})
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "traffic.json") {
			t.Errorf("%s: %v, want %q naming the file", body, err, want)
		}
	}
}

func TestRollbackOnErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		m, err := NewMetrics(reg)
		if err != nil {
			t.Fatal(err)
		}
		r := newRouter(t, fmt.Sprintf(canary, `, "rollback": {"window_secs": 60, "min_requests": 20, "error_rate_margin": 0.1}`), Options{Metrics: m})
		src := rand.New(rand.NewPCG(3, 4))
		r.rng = src.Float64
		for range 400 {
			d := r.Route(&inference.Request{ModelName: "m"})
			_, v := d.Target()
			var err error
			if v == "2" {
				err = errors.New("canary fails") // 100 % errors against the primary's 0 %
			}
			time.Sleep(10 * time.Millisecond)
			d.Done(err)
		}
		if w := r.Weights("m"); w["canary"] != 0 || w["stable"] != 80 {
			t.Fatalf("weights after a failing canary: %v", w)
		}
		var got dto.Metric
		if err := m.rollbacks.WithLabelValues("m", "canary").Write(&got); err != nil || got.GetCounter().GetValue() != 1 {
			t.Errorf("rollbacks metric %v, %v", got.GetCounter().GetValue(), err)
		}
		// Every request now goes to the primary.
		for range 50 {
			if _, v := r.Route(&inference.Request{ModelName: "m"}).Target(); v != "1" {
				t.Fatal("a rolled-back canary still gets requests")
			}
		}
	})
}

func TestRollbackOnLatencyNotWithinMargin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRouter(t, fmt.Sprintf(canary, `, "rollback": {"window_secs": 60, "min_requests": 20, "error_rate_margin": 0.5, "p99_ratio": 3}`), Options{})
		r.rng = rand.New(rand.NewPCG(5, 6)).Float64
		run := func(slow time.Duration) {
			for range 300 {
				d := r.Route(&inference.Request{ModelName: "m"})
				if _, v := d.Target(); v == "2" {
					time.Sleep(slow)
				} else {
					time.Sleep(10 * time.Millisecond)
				}
				d.Done(nil)
			}
		}
		run(20 * time.Millisecond) // twice as slow: within the ratio
		if w := r.Weights("m"); w["canary"] != 20 {
			t.Fatalf("a canary within the p99 ratio was rolled back: %v", w)
		}
		run(50 * time.Millisecond) // five times as slow
		if w := r.Weights("m"); w["canary"] != 0 {
			t.Fatalf("a canary five times slower kept its weight: %v", w)
		}
	})
}

func TestReloadKeepsRoutesOnABrokenFile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		path := writeConfig(t, dir, fmt.Sprintf(canary, ""))
		r, err := New(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); r.Run(ctx) }()
		// Blue/green: all traffic to version 2.
		writeConfig(t, dir, `{"routes": {"m": {"variants": [{"model": "m", "version": "1", "weight": 0}, {"model": "m", "version": "2", "weight": 100}]}}}`)
		future := time.Now().Add(time.Hour)
		_ = os.Chtimes(path, future, future)
		time.Sleep(2 * time.Second)
		if _, v := r.Route(&inference.Request{ModelName: "m"}).Target(); v != "2" {
			t.Fatalf("after the switch, version %s served", v)
		}
		writeConfig(t, dir, `{"routes": `)
		_ = os.Chtimes(path, future.Add(time.Hour), future.Add(time.Hour))
		time.Sleep(2 * time.Second)
		if _, v := r.Route(&inference.Request{ModelName: "m"}).Target(); v != "2" {
			t.Fatalf("a broken file changed the routes: version %s served", v)
		}
		cancel()
		<-done
	})
}

func fp32(vals ...float32) []byte {
	b := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

func TestCompare(t *testing.T) {
	resp := func(data []byte) *inference.Response {
		return &inference.Response{Outputs: []inference.Tensor{{Name: "Y", DataType: inference.FP32, Shape: []int64{2}, Data: data}}}
	}
	a := resp(fp32(1, 2))
	if d := Compare(a, resp(fp32(1, 2.000001)), 1e-5); d != "" {
		t.Errorf("within tolerance: %s", d)
	}
	if d := Compare(a, resp(fp32(1, 2.1)), 1e-5); !strings.Contains(d, "element 1") {
		t.Errorf("beyond tolerance: %q", d)
	}
	b := resp(fp32(1, 2))
	b.Outputs[0].Shape = []int64{1, 2}
	if d := Compare(a, b, 0); !strings.Contains(d, "FP32") {
		t.Errorf("shape: %q", d)
	}
	if d := Compare(a, &inference.Response{}, 0); d == "" {
		t.Error("missing outputs compared equal")
	}
}
