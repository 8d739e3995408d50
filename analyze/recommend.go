package analyze

import (
	"cmp"
	"fmt"
	"slices"
)

// measured reports whether a point has figures to compare: its
// configuration loaded, some requests completed and none failed.
func (p *Point) measured() bool { return p.Error == "" && p.Errors == 0 && p.Requests > 0 }

// markPareto sets Pareto on the measured points that no other measured
// point dominates: none has at least their throughput at no more than
// their p99 latency, and is better in one of the two.
func markPareto(points []Point) {
	for i := range points {
		p := &points[i]
		p.Pareto = false
		if !p.measured() {
			continue
		}
		p.Pareto = !slices.ContainsFunc(points, func(q Point) bool {
			return q.measured() && dominates(q, *p)
		})
	}
}

func dominates(q, p Point) bool {
	tq, tp := q.Throughput, p.Throughput
	lq, lp := q.Latency.P99, p.Latency.P99
	return tq >= tp && lq <= lp && (tq > tp || lq < lp)
}

// Recommendation is the sweep's answer.
type Recommendation struct {
	// Point is the index in Report.Points of the recommended point; -1
	// when none is (no point met the budget, or none was measured).
	Point int `json:"point"`
	// MeetsBudget is false when no point qualified: none met the budget,
	// or none could be measured.
	MeetsBudget bool `json:"meets_budget"`
	// Reason says why, in a sentence.
	Reason string `json:"reason"`
}

// recommend applies the rule: with a latency budget (budgetMS > 0), the
// measured point whose p99 is within it at the least cost, ties going to
// the higher throughput; without one, the highest throughput, ties going
// to the lower cost. Remaining ties go to the lower p99, then the lower
// concurrency, then the earlier point, so the answer is deterministic.
func recommend(points []Point, budgetMS float64) Recommendation {
	var cands []int
	for i := range points {
		if !points[i].measured() {
			continue
		}
		if budgetMS > 0 && points[i].Latency.P99 > budgetMS {
			continue
		}
		cands = append(cands, i)
	}
	if len(cands) == 0 {
		best := -1
		for i := range points {
			if points[i].measured() && (best < 0 || points[i].Latency.P99 < points[best].Latency.P99) {
				best = i
			}
		}
		if best < 0 {
			return Recommendation{Point: -1, Reason: "no configuration could be measured"}
		}
		b := points[best]
		return Recommendation{Point: -1, Reason: fmt.Sprintf(
			"no configuration meets the p99 budget of %s ms: the lowest p99 was %s ms (%s at concurrency %d)",
			fnum(budgetMS), fnum(b.Latency.P99), b.Config, b.Concurrency)}
	}
	better := func(i, j int) int { // < 0 when point i is preferred to point j
		a, b := points[i], points[j]
		tie := cmp.Or(
			cmp.Compare(a.Latency.P99, b.Latency.P99),
			cmp.Compare(a.Concurrency, b.Concurrency),
			cmp.Compare(i, j),
		)
		if budgetMS > 0 {
			return cmp.Or(cmp.Compare(a.Cost, b.Cost), -cmp.Compare(a.Throughput, b.Throughput), tie)
		}
		return cmp.Or(-cmp.Compare(a.Throughput, b.Throughput), cmp.Compare(a.Cost, b.Cost), tie)
	}
	best := slices.MinFunc(cands, better)
	p := points[best]
	if budgetMS > 0 {
		return Recommendation{Point: best, MeetsBudget: true, Reason: fmt.Sprintf(
			"the least cost within the p99 budget of %s ms (%d of %d measured points meet it): %s, %s infer/s at p99 %s ms with up to %s in flight",
			fnum(budgetMS), len(cands), countMeasured(points), p.Config, fnum(p.Throughput), fnum(p.Latency.P99), requests(p.Concurrency))}
	}
	return Recommendation{Point: best, MeetsBudget: true, Reason: fmt.Sprintf(
		"no latency budget given: the highest throughput, %s infer/s at p99 %s ms (%s, %s in flight)",
		fnum(p.Throughput), fnum(p.Latency.P99), p.Config, requests(p.Concurrency))}
}

func requests(n int) string {
	if n == 1 {
		return "1 request"
	}
	return fmt.Sprintf("%d requests", n)
}

func countMeasured(points []Point) int {
	n := 0
	for i := range points {
		if points[i].measured() {
			n++
		}
	}
	return n
}

// memoryPerInstance is the model's memory per instance: the median, over
// the configurations whose memory is known, of their memory divided by
// their instance count. One figure for the model, rather than each
// configuration's own, because a measure taken while one version loads in
// a busy process is noisy, and a deployment pays per instance.
func memoryPerInstance(points []Point) int64 {
	var per []int64
	seen := map[string]bool{}
	for _, p := range points {
		key := p.Config.String()
		if p.MemoryBytes <= 0 || seen[key] {
			continue
		}
		seen[key] = true
		per = append(per, p.MemoryBytes/int64(max(p.Config.Instances, 1)))
	}
	if len(per) == 0 {
		return 0
	}
	slices.Sort(per)
	if n := len(per); n%2 == 0 {
		return (per[n/2-1] + per[n/2]) / 2
	}
	return per[len(per)/2]
}
