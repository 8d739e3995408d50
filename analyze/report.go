package analyze

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
)

// The files WriteFiles writes.
const (
	JSONFile     = "report.json"
	MarkdownFile = "report.md"
	PlotFile     = "report.svg"
)

// WriteFiles writes report.json, report.md and report.svg into dir,
// creating it.
func WriteFiles(dir string, rep *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	var md, svg bytes.Buffer
	WriteMarkdown(&md, rep)
	WriteSVG(&svg, rep)
	for name, data := range map[string][]byte{JSONFile: append(js, '\n'), MarkdownFile: md.Bytes(), PlotFile: svg.Bytes()} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// WriteTable writes the points as an aligned text table, then the
// recommendation.
func WriteTable(w io.Writer, rep *Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "#\tinstances\tmax batch\tdelay µs\tconcurrency\tinfer/s\tp50 ms\tp95 ms\tp99 ms\tmemory\tpareto\t")
	for i, p := range rep.Points {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%d\t", i, p.Config.Instances, batchCell(p.Config), delayCell(p.Config), p.Concurrency)
		if p.measured() {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t", fnum(p.Throughput), fnum(p.Latency.P50), fnum(p.Latency.P95), fnum(p.Latency.P99))
		} else {
			fmt.Fprintf(tw, "failed\t-\t-\t-\t")
		}
		fmt.Fprintf(tw, "%s\t%s\t\n", memCell(p.MemoryBytes), mark(i, rep))
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, recommendationLine(rep))
	for i, p := range rep.Points {
		if !p.measured() && p.Error != "" {
			fmt.Fprintf(w, "point %d failed: %s\n", i, p.Error)
		}
	}
}

func recommendationLine(rep *Report) string {
	r := rep.Recommendation
	if r.Point < 0 {
		return "No recommendation: " + r.Reason + "."
	}
	return fmt.Sprintf("Recommended: point %d — %s.", r.Point, r.Reason)
}

// mark is the last column of point i: * on the Pareto front, and the
// recommendation.
func mark(i int, rep *Report) string {
	var s []string
	if rep.Points[i].Pareto {
		s = append(s, "*")
	}
	if i == rep.Recommendation.Point {
		s = append(s, "recommended")
	}
	return strings.Join(s, " ")
}

// WriteMarkdown writes the report as Markdown: the settings, the
// recommendation, the plot and the table of points.
func WriteMarkdown(w io.Writer, rep *Report) {
	fmt.Fprintf(w, "# nereid analyze: %s\n\n", rep.Model)
	fmt.Fprintf(w, "%s, measured on %s (%d CPUs, %s/%s), %s.", rep.Date, rep.Target, rep.Machine.CPUs, rep.Machine.OS, rep.Machine.Arch, durationText(rep.Duration))
	if la := rep.Machine.LoadAverage; la[0] != "" {
		fmt.Fprintf(w, " Load average %s at the start, %s at the end.", la[0], la[1])
	}
	fmt.Fprint(w, "\n\n")
	if rep.Command != "" {
		fmt.Fprintf(w, "```\n%s\n```\n\n", rep.Command)
	}
	s := rep.Settings
	fmt.Fprintf(w, "- Swept: %s; each point warmed up for %s ms, then measured for %s ms (up to %d times longer when that held fewer than %d requests) with a closed loop of clients.\n",
		strings.Join(rep.Swept, ", "), fnum(s.WarmupMS), fnum(s.WindowMS), maxWindowLengths, minWindowRequests)
	fmt.Fprintf(w, "- Requests of batch size %d, random data", s.RequestBatchSize)
	if s.DimSize != 1 {
		fmt.Fprintf(w, ", variable dimensions set to %d", s.DimSize)
	}
	fmt.Fprintln(w, ".")
	fmt.Fprintf(w, "- The model's own configuration: %s.\n", rep.Base)
	if rep.MemoryPerInstanceBytes > 0 {
		fmt.Fprintf(w, "- Memory per instance: %s (the median of memory_usage ÷ instances); cost = instances × memory per instance.\n", memCell(rep.MemoryPerInstanceBytes))
	} else {
		fmt.Fprintln(w, "- Memory per instance: not reported by the server; cost = instances.")
	}
	if s.LatencyBudgetMS > 0 {
		fmt.Fprintf(w, "- Latency budget: p99 ≤ %s ms.\n", fnum(s.LatencyBudgetMS))
	} else {
		fmt.Fprintln(w, "- No latency budget.")
	}
	fmt.Fprintf(w, "\n## Recommendation\n\n")
	r := rep.Recommendation
	if r.Point < 0 {
		fmt.Fprintf(w, "**None**: %s.\n", r.Reason)
	} else {
		p := rep.Points[r.Point]
		fmt.Fprintf(w, "**Point %d: %s, concurrency %d** — %s infer/s, p99 %s ms.\n\n%s.\n",
			r.Point, p.Config, p.Concurrency, fnum(p.Throughput), fnum(p.Latency.P99), capitalize(r.Reason))
		fmt.Fprintf(w, "\nIn config.pbtxt:\n\n```\n%s```\n", pbtxtSnippet(p.Config))
	}
	fmt.Fprintf(w, "\n## Throughput against p99 latency\n\n![throughput against p99 latency](%s)\n\n", PlotFile)
	fmt.Fprintln(w, "Filled markers are the Pareto front: no other point has more throughput at a lower p99.")
	fmt.Fprintf(w, "\n## Points\n\n")
	fmt.Fprintln(w, "| # | instances | max batch | delay µs | concurrency | infer/s | p50 ms | p95 ms | p99 ms | memory | Pareto |")
	fmt.Fprintln(w, "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|")
	for i, p := range rep.Points {
		fig := "failed | – | – | –"
		if p.measured() {
			fig = fmt.Sprintf("%s | %s | %s | %s", fnum(p.Throughput), fnum(p.Latency.P50), fnum(p.Latency.P95), fnum(p.Latency.P99))
		}
		pareto := ""
		if p.Pareto {
			pareto = "✓"
		}
		num := strconv.Itoa(i)
		if i == r.Point {
			num = "**" + num + "**"
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %d | %s | %s | %s |\n", num, p.Config.Instances, batchCell(p.Config), delayCell(p.Config), p.Concurrency, fig, memCell(p.MemoryBytes), pareto)
	}
	var failed []string
	for i, p := range rep.Points {
		if !p.measured() && p.Error != "" {
			failed = append(failed, fmt.Sprintf("- point %d: %s", i, p.Error))
		}
	}
	if len(failed) > 0 {
		fmt.Fprintf(w, "\nFailures:\n\n%s\n", strings.Join(failed, "\n"))
	}
	if len(rep.Notes) > 0 {
		fmt.Fprintf(w, "\n## Notes\n\n")
		for _, n := range rep.Notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
}

// pbtxtSnippet is the configuration's settings as config.pbtxt text.
func pbtxtSnippet(c Config) string {
	var b strings.Builder
	if c.MaxBatchSize > 0 {
		fmt.Fprintf(&b, "max_batch_size: %d\n", c.MaxBatchSize)
	}
	if c.DynamicBatching {
		b.WriteString("dynamic_batching {")
		if len(c.PreferredBatchSize) > 0 {
			parts := make([]string, len(c.PreferredBatchSize))
			for i, p := range c.PreferredBatchSize {
				parts[i] = strconv.Itoa(int(p))
			}
			fmt.Fprintf(&b, " preferred_batch_size: [ %s ]", strings.Join(parts, ", "))
		}
		fmt.Fprintf(&b, " max_queue_delay_microseconds: %d }\n", c.MaxQueueDelayUS)
	}
	fmt.Fprintf(&b, "instance_group [ { count: %d } ]\n", c.Instances)
	return b.String()
}

func batchCell(c Config) string {
	if c.MaxBatchSize == 0 {
		return "–"
	}
	return strconv.Itoa(c.MaxBatchSize)
}

func delayCell(c Config) string {
	if !c.DynamicBatching {
		return "off"
	}
	return strconv.FormatUint(c.MaxQueueDelayUS, 10)
}

// memCell is a byte count in MiB (or KiB below one MiB); "–" when unknown.
func memCell(b int64) string {
	switch {
	case b <= 0:
		return "–"
	case b < 1<<20:
		return fnum(float64(b)/(1<<10)) + " KiB"
	default:
		return fnum(float64(b)/(1<<20)) + " MiB"
	}
}

// fnum formats a figure with three significant digits, without an
// exponent: 12300, 123, 12.3, 1.23, 0.123.
func fnum(v float64) string {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	digits := 2 - int(math.Floor(math.Log10(math.Abs(v))))
	if digits < 0 {
		p := math.Pow(10, float64(-digits))
		return strconv.FormatFloat(math.Round(v/p)*p, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', digits, 64)
}

func durationText(s float64) string {
	if s < 90 {
		return fmt.Sprintf("%.0f s", s)
	}
	return fmt.Sprintf("%.1f min", s/60)
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
