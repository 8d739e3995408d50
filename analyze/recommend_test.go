package analyze

import (
	"strings"
	"testing"
)

// pt is a measured point of n instances at concurrency c with these
// figures; cost is n instances of 1 MiB.
func pt(n, c int, tput, p99 float64) Point {
	return Point{
		Config: Config{MaxBatchSize: 8, DynamicBatching: true, Instances: n}, Concurrency: c,
		Requests: 100, Throughput: tput, Latency: Latency{P50: p99 / 2, P99: p99}, Cost: int64(n) << 20,
	}
}

func paretoOf(points []Point) []bool {
	markPareto(points)
	out := make([]bool, len(points))
	for i, p := range points {
		out[i] = p.Pareto
	}
	return out
}

func TestPareto(t *testing.T) {
	failed := pt(1, 64, 1e6, 0.001)
	failed.Errors, failed.Error = 1, "queue full"
	unloaded := Point{Config: Config{Instances: 4}, Error: "load failed: out of memory"}
	points := []Point{
		pt(1, 1, 100, 1),  // 0: front (lowest latency)
		pt(1, 4, 300, 2),  // 1: front
		pt(1, 8, 250, 3),  // 2: dominated by 1
		pt(2, 4, 300, 2),  // 3: equal to 1: neither dominates, both on the front
		pt(2, 8, 500, 5),  // 4: front (highest throughput)
		pt(2, 16, 500, 9), // 5: dominated by 4 (same throughput, slower)
		failed,            // 6: not measured: never on the front, dominates nothing
		unloaded,          // 7
	}
	want := []bool{true, true, false, true, true, false, false, false}
	got := paretoOf(points)
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("point %d: pareto %t, want %t", i, got[i], want[i])
		}
	}
}

func TestParetoSinglePoint(t *testing.T) {
	if got := paretoOf([]Point{pt(1, 1, 10, 1)}); !got[0] {
		t.Error("a lone point is its own front")
	}
}

func TestRecommendWithBudget(t *testing.T) {
	points := []Point{
		pt(1, 1, 100, 1),  // 0
		pt(1, 4, 300, 2),  // 1: cheapest within 2.5 ms, best throughput among the cheapest
		pt(1, 8, 350, 3),  // 2: over budget
		pt(2, 4, 600, 2),  // 3: more throughput, but costs twice as much
		pt(2, 16, 900, 9), // 4: over budget
	}
	r := recommend(points, 2.5)
	if r.Point != 1 || !r.MeetsBudget {
		t.Fatalf("recommend = %+v, want point 1", r)
	}
	for _, s := range []string{"least cost", "2.50 ms", "3 of 5", "300 infer/s", "4 requests in flight"} {
		if !strings.Contains(r.Reason, s) {
			t.Errorf("reason %q lacks %q", r.Reason, s)
		}
	}
	// A tighter budget leaves only point 0.
	if r := recommend(points, 1); r.Point != 0 {
		t.Errorf("budget 1 ms: point %d, want 0", r.Point)
	}
}

func TestRecommendTies(t *testing.T) {
	// Same cost and throughput: the lower p99, then the lower concurrency.
	points := []Point{pt(1, 8, 300, 2), pt(1, 4, 300, 1.5), pt(1, 2, 300, 1.5)}
	if r := recommend(points, 10); r.Point != 2 {
		t.Errorf("with a budget: point %d, want 2", r.Point)
	}
	if r := recommend(points, 0); r.Point != 2 {
		t.Errorf("without a budget: point %d, want 2", r.Point)
	}
	// Without a budget equal throughput goes to the lower cost.
	points = []Point{pt(2, 4, 500, 1), pt(1, 8, 500, 3)}
	if r := recommend(points, 0); r.Point != 1 {
		t.Errorf("throughput tie: point %d, want the cheaper 1", r.Point)
	}
}

func TestRecommendWithoutBudget(t *testing.T) {
	failed := pt(4, 32, 1e6, 100)
	failed.Errors = 3
	points := []Point{pt(1, 1, 100, 1), pt(2, 16, 900, 9), failed}
	r := recommend(points, 0)
	if r.Point != 1 || !strings.Contains(r.Reason, "highest throughput") {
		t.Errorf("recommend = %+v, want point 1, the highest measured throughput", r)
	}
}

func TestRecommendNoneMeetsBudget(t *testing.T) {
	points := []Point{pt(1, 1, 100, 3), pt(2, 1, 200, 2.2), pt(2, 8, 900, 9)}
	r := recommend(points, 0.5)
	if r.Point != -1 || r.MeetsBudget {
		t.Fatalf("recommend = %+v, want none", r)
	}
	for _, s := range []string{"no configuration meets", "0.500 ms", "lowest p99 was 2.20 ms", "2 instances at concurrency 1"} {
		if !strings.Contains(r.Reason, s) {
			t.Errorf("reason %q lacks %q", r.Reason, s)
		}
	}
	if r := recommend([]Point{{Error: "load failed"}}, 1); r.Point != -1 || !strings.Contains(r.Reason, "could be measured") {
		t.Errorf("nothing measured: %+v", r)
	}
}

func TestMemoryPerInstance(t *testing.T) {
	mem := func(n int, bytes int64) Point {
		p := pt(n, 1, 1, 1)
		p.MemoryBytes = bytes
		return p
	}
	a, b := mem(1, 10<<20), mem(2, 30<<20)
	b.Config.MaxBatchSize = 64
	points := []Point{
		a, a, // one configuration at two concurrency levels counts once
		b,         // 15 MiB per instance
		mem(4, 0), // unknown: left out
	}
	if got := memoryPerInstance(points); got != (10<<20+15<<20)/2 {
		t.Errorf("memoryPerInstance = %d, want the median 12.5 MiB", got)
	}
	if got := memoryPerInstance([]Point{mem(1, 0)}); got != 0 {
		t.Errorf("unknown memory: %d, want 0", got)
	}
}

func TestFnum(t *testing.T) {
	for v, want := range map[float64]string{
		0: "0", 12345: "12300", 123.4: "123", 12.34: "12.3", 1.234: "1.23", 0.1234: "0.123", 0.001234: "0.00123", -2.5: "-2.50",
	} {
		if got := fnum(v); got != want {
			t.Errorf("fnum(%g) = %q, want %q", v, got, want)
		}
	}
}
