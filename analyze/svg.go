package analyze

import (
	"bytes"
	"cmp"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// The plot's geometry, in SVG user units.
const (
	svgWidth    = 800
	svgHeight   = 500
	plotLeft    = 80
	plotRight   = 590
	plotTop     = 50
	plotBottom  = 430
	legendLeft  = 610
	pointRadius = 4.5
)

// palette colours the points by instance count.
var palette = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"}

// axis maps data values to plot coordinates, linearly or on a log scale.
type axis struct {
	lo, hi   float64 // data range
	from, to float64 // coordinate range
	log      bool
}

func (a axis) pos(v float64) float64 {
	if a.log {
		v, lo, hi := math.Log10(max(v, a.lo)), math.Log10(a.lo), math.Log10(a.hi)
		return a.from + (v-lo)/(hi-lo)*(a.to-a.from)
	}
	return a.from + (v-a.lo)/(a.hi-a.lo)*(a.to-a.from)
}

// ticks returns the values to label: 1-2-5 steps, about five of them on
// a linear axis; 1, 2 and 5 of each decade on a log axis.
func (a axis) ticks() []float64 {
	var out []float64
	if a.log {
		for d := math.Floor(math.Log10(a.lo)); d <= math.Ceil(math.Log10(a.hi)); d++ {
			for _, m := range []float64{1, 2, 5} {
				if v := m * math.Pow(10, d); v >= a.lo*(1-1e-9) && v <= a.hi*(1+1e-9) {
					out = append(out, v)
				}
			}
		}
		return out
	}
	step := niceStep((a.hi - a.lo) / 5)
	for v := math.Ceil(a.lo/step) * step; v <= a.hi+step*1e-9; v += step {
		out = append(out, v)
	}
	return out
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	if x <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x*(1-1e-9) {
			return m * p
		}
	}
	return 10 * p
}

// linearAxis spans 0 to a nice value above hi.
func linearAxis(hi, from, to float64) axis {
	if hi <= 0 {
		hi = 1
	}
	step := niceStep(hi * 1.05 / 5)
	return axis{lo: 0, hi: math.Ceil(hi*1.05/step) * step, from: from, to: to}
}

// latencyAxis is linear from 0 unless the latencies span more than a
// factor of 20, then logarithmic over whole 1-2-5 steps around them.
func latencyAxis(lo, hi, from, to float64) axis {
	if lo > 0 && hi/lo > 20 {
		down := func(v float64) float64 {
			p := math.Pow(10, math.Floor(math.Log10(v)))
			for _, m := range []float64{5, 2, 1} {
				if m*p <= v {
					return m * p
				}
			}
			return p
		}
		up := func(v float64) float64 {
			p := math.Pow(10, math.Floor(math.Log10(v)))
			for _, m := range []float64{1, 2, 5, 10} {
				if m*p >= v {
					return m * p
				}
			}
			return 10 * p
		}
		return axis{lo: down(lo), hi: up(hi), from: from, to: to, log: true}
	}
	return linearAxis(hi, from, to)
}

// WriteSVG plots the measured points' throughput against their p99
// latency: one colour per instance count, a thin line through each
// configuration's points (concurrency rising), the Pareto front filled
// and joined, the latency budget as a dashed line and the recommended
// point ringed. Every point is a <circle class="point"> with a <title>
// that names it.
func WriteSVG(w io.Writer, rep *Report) {
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		svgWidth, svgHeight, svgWidth, svgHeight)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", svgWidth, svgHeight)
	text(&b, svgWidth/2, 28, "middle", `font-size="16" font-weight="bold"`, rep.Model+": throughput against p99 latency")

	var measured []int
	for i := range rep.Points {
		if rep.Points[i].measured() {
			measured = append(measured, i)
		}
	}
	if len(measured) == 0 {
		text(&b, (plotLeft+plotRight)/2, (plotTop+plotBottom)/2, "middle", "", "no point could be measured")
		b.WriteString("</svg>\n")
		_, _ = w.Write(b.Bytes())
		return
	}
	loLat, hiLat, hiTput := math.Inf(1), rep.Settings.LatencyBudgetMS, 0.0
	for _, i := range measured {
		p := rep.Points[i]
		loLat, hiLat, hiTput = min(loLat, p.Latency.P99), max(hiLat, p.Latency.P99), max(hiTput, p.Throughput)
	}
	if rep.Settings.LatencyBudgetMS > 0 {
		loLat = min(loLat, rep.Settings.LatencyBudgetMS)
	}
	x := latencyAxis(loLat, hiLat, plotLeft, plotRight)
	y := linearAxis(hiTput, plotBottom, plotTop)

	// Grid, ticks and axis labels.
	b.WriteString(`<g class="grid" stroke="#e0e0e0" stroke-width="1">` + "\n")
	for _, v := range x.ticks() {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>`+"\n", x.pos(v), plotTop, x.pos(v), plotBottom)
	}
	for _, v := range y.ticks() {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>`+"\n", plotLeft, y.pos(v), plotRight, y.pos(v))
	}
	b.WriteString("</g>\n")
	fmt.Fprintf(&b, `<rect class="frame" x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444444"/>`+"\n",
		plotLeft, plotTop, plotRight-plotLeft, plotBottom-plotTop)
	for _, v := range x.ticks() {
		text(&b, x.pos(v), plotBottom+18, "middle", "", tickLabel(v))
	}
	for _, v := range y.ticks() {
		text(&b, plotLeft-8, y.pos(v)+4, "end", "", tickLabel(v))
	}
	xLabel := "p99 latency (ms)"
	if x.log {
		xLabel += ", log scale"
	}
	text(&b, (plotLeft+plotRight)/2, plotBottom+42, "middle", "", xLabel)
	fmt.Fprintf(&b, `<text x="20" y="%d" text-anchor="middle" transform="rotate(-90 20 %d)">throughput (infer/s)</text>`+"\n",
		(plotTop+plotBottom)/2, (plotTop+plotBottom)/2)

	// The budget.
	if bud := rep.Settings.LatencyBudgetMS; bud > 0 {
		fmt.Fprintf(&b, `<line class="budget" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#d62728" stroke-width="1.5" stroke-dasharray="6 4"/>`+"\n",
			x.pos(bud), plotTop, x.pos(bud), plotBottom)
		text(&b, x.pos(bud)+4, plotTop+14, "start", `fill="#d62728"`, "p99 budget "+fnum(bud)+" ms")
	}

	// One thin line per configuration, concurrency rising.
	colour := func(p Point) string {
		return palette[instanceRank(rep, p.Config.Instances)%len(palette)]
	}
	series := map[string][]int{}
	var order []string
	for _, i := range measured {
		k := rep.Points[i].Config.String()
		if _, ok := series[k]; !ok {
			order = append(order, k)
		}
		series[k] = append(series[k], i)
	}
	for _, k := range order {
		idx := series[k]
		if len(idx) < 2 {
			continue
		}
		fmt.Fprintf(&b, `<polyline class="series" fill="none" stroke="%s" stroke-opacity="0.35" stroke-width="1" points="%s"/>`+"\n",
			colour(rep.Points[idx[0]]), polyPoints(rep, idx, x, y))
	}

	// The Pareto front, by latency.
	var front []int
	for _, i := range measured {
		if rep.Points[i].Pareto {
			front = append(front, i)
		}
	}
	slices.SortFunc(front, func(i, j int) int {
		return cmp.Compare(rep.Points[i].Latency.P99, rep.Points[j].Latency.P99)
	})
	if len(front) > 1 {
		fmt.Fprintf(&b, `<polyline class="pareto-front" fill="none" stroke="#222222" stroke-width="1.5" points="%s"/>`+"\n", polyPoints(rep, front, x, y))
	}

	// The points: the front on top.
	slices.SortStableFunc(measured, func(i, j int) int { return boolCompare(rep.Points[i].Pareto, rep.Points[j].Pareto) })
	for _, i := range measured {
		p := rep.Points[i]
		opacity, stroke := "0.35", "none"
		if p.Pareto {
			opacity, stroke = "1", "#222222"
		}
		fmt.Fprintf(&b, `<circle class="point" data-index="%d" data-pareto="%t" cx="%.1f" cy="%.1f" r="%.1f" fill="%s" fill-opacity="%s" stroke="%s">`,
			i, p.Pareto, x.pos(p.Latency.P99), y.pos(p.Throughput), pointRadius, colour(p), opacity, stroke)
		fmt.Fprintf(&b, "<title>%s</title></circle>\n", escape(fmt.Sprintf("#%d %s, concurrency %d: %s infer/s, p99 %s ms",
			i, p.Config, p.Concurrency, fnum(p.Throughput), fnum(p.Latency.P99))))
	}
	if r := rep.Recommendation.Point; r >= 0 {
		p := rep.Points[r]
		cx, cy := x.pos(p.Latency.P99), y.pos(p.Throughput)
		fmt.Fprintf(&b, `<circle class="recommended" data-index="%d" cx="%.1f" cy="%.1f" r="10" fill="none" stroke="#000000" stroke-width="2"/>`+"\n", r, cx, cy)
		anchor, dx := "start", 14.0
		if cx > (plotLeft+plotRight)/2 {
			anchor, dx = "end", -14
		}
		// A white halo keeps the label legible over lines and points.
		text(&b, cx+dx, cy-12, anchor, `font-weight="bold" stroke="#ffffff" stroke-width="3" paint-order="stroke"`, fmt.Sprintf("recommended: #%d", r))
	}

	// Legend.
	ly := float64(plotTop + 6)
	text(&b, legendLeft, ly, "start", `font-weight="bold"`, "instances")
	for rank, n := range instanceCounts(rep) {
		ly += 20
		fmt.Fprintf(&b, `<circle cx="%d" cy="%.0f" r="%.1f" fill="%s"/>`+"\n", legendLeft+6, ly-4, pointRadius, palette[rank%len(palette)])
		text(&b, legendLeft+18, ly, "start", "", fmt.Sprintf("%d", n))
	}
	ly += 32
	fmt.Fprintf(&b, `<line x1="%d" y1="%.0f" x2="%d" y2="%.0f" stroke="#222222" stroke-width="1.5"/>`+"\n", legendLeft, ly-4, legendLeft+12, ly-4)
	text(&b, legendLeft+18, ly, "start", "", "Pareto front (filled)")
	ly += 20
	fmt.Fprintf(&b, `<line x1="%d" y1="%.0f" x2="%d" y2="%.0f" stroke="#888888" stroke-opacity="0.6"/>`+"\n", legendLeft, ly-4, legendLeft+12, ly-4)
	text(&b, legendLeft+18, ly, "start", "", "one configuration,")
	ly += 15
	text(&b, legendLeft+18, ly, "start", "", "concurrency rising")
	if rep.Recommendation.Point >= 0 {
		ly += 24
		fmt.Fprintf(&b, `<circle cx="%d" cy="%.0f" r="7" fill="none" stroke="#000000" stroke-width="2"/>`+"\n", legendLeft+6, ly-4)
		text(&b, legendLeft+18, ly, "start", "", "recommended")
	}
	b.WriteString("</svg>\n")
	_, _ = w.Write(b.Bytes())
}

// instanceCounts lists the distinct instance counts of the points.
func instanceCounts(rep *Report) []int {
	var ns []int
	for _, p := range rep.Points {
		ns = append(ns, p.Config.Instances)
	}
	slices.Sort(ns)
	return slices.Compact(ns)
}

func instanceRank(rep *Report, n int) int {
	i, _ := slices.BinarySearch(instanceCounts(rep), n)
	return i
}

func polyPoints(rep *Report, idx []int, x, y axis) string {
	parts := make([]string, len(idx))
	for k, i := range idx {
		p := rep.Points[i]
		parts[k] = fmt.Sprintf("%.1f,%.1f", x.pos(p.Latency.P99), y.pos(p.Throughput))
	}
	return strings.Join(parts, " ")
}

func text(b *bytes.Buffer, x, y float64, anchor, attrs, s string) {
	if attrs != "" {
		attrs = " " + attrs
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="%s"%s>%s</text>`+"\n", x, y, anchor, attrs, escape(s))
}

func escape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// tickLabel writes a tick value without trailing zeros: 0.05, 2, 1500,
// 20k.
func tickLabel(v float64) string {
	if v >= 10000 {
		return strings.TrimSuffix(fmt.Sprintf("%g", v/1000), ".0") + "k"
	}
	return fmt.Sprintf("%g", math.Round(v*1e6)/1e6)
}
