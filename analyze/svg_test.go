package analyze

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// svgElement is an element of a plot, with its attributes.
type svgElement struct {
	name  string
	attrs map[string]string
}

// parseSVG checks that data is well-formed XML with an <svg> root in the
// SVG namespace, and returns its elements.
func parseSVG(t *testing.T, data []byte) []svgElement {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(data))
	var out []svgElement
	depth := 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the plot is not well-formed XML: %v\n%s", err, data)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if depth == 0 && (tok.Name.Local != "svg" || tok.Name.Space != "http://www.w3.org/2000/svg") {
				t.Fatalf("root element %v, want svg in the SVG namespace", tok.Name)
			}
			depth++
			e := svgElement{name: tok.Name.Local, attrs: map[string]string{}}
			for _, a := range tok.Attr {
				e.attrs[a.Name.Local] = a.Value
			}
			out = append(out, e)
		case xml.EndElement:
			depth--
		}
	}
	if depth != 0 {
		t.Fatalf("unbalanced elements")
	}
	return out
}

func withClass(els []svgElement, class string) []svgElement {
	var out []svgElement
	for _, e := range els {
		if e.attrs["class"] == class {
			out = append(out, e)
		}
	}
	return out
}

func sampleReport() *Report {
	failed := Point{Config: Config{MaxBatchSize: 8, Instances: 4}, Concurrency: 1, Error: "load failed: <out of memory> & more"}
	rep := &Report{
		Model:    `m<&>"`,
		Settings: Settings{LatencyBudgetMS: 2.5},
		Points: []Point{
			pt(1, 1, 100, 0.05), pt(1, 4, 300, 2), pt(1, 8, 350, 3),
			pt(2, 4, 600, 2), pt(2, 16, 900, 9), failed,
		},
	}
	markPareto(rep.Points)
	rep.Recommendation = recommend(rep.Points, rep.Settings.LatencyBudgetMS)
	return rep
}

func TestSVGWellFormed(t *testing.T) {
	rep := sampleReport()
	var b bytes.Buffer
	WriteSVG(&b, rep)
	els := parseSVG(t, b.Bytes())

	points := withClass(els, "point")
	if len(points) != 5 {
		t.Fatalf("%d point markers, want the 5 measured points", len(points))
	}
	var pareto []int
	for _, e := range points {
		i, err := strconv.Atoi(e.attrs["data-index"])
		if err != nil || i < 0 || i >= len(rep.Points) {
			t.Fatalf("data-index %q", e.attrs["data-index"])
		}
		if e.attrs["data-pareto"] == "true" {
			pareto = append(pareto, i)
		}
		for _, a := range []string{"cx", "cy"} {
			v, err := strconv.ParseFloat(e.attrs[a], 64)
			if err != nil || math.IsNaN(v) || v < 0 || v > svgWidth {
				t.Errorf("point %d: %s=%q outside the plot", i, a, e.attrs[a])
			}
		}
	}
	slices.Sort(pareto)
	if want := []int{0, 3, 4}; !slices.Equal(pareto, want) {
		t.Errorf("Pareto markers %v, want %v", pareto, want)
	}
	if n := len(withClass(els, "pareto-front")); n != 1 {
		t.Errorf("%d Pareto front lines, want 1", n)
	}
	if n := len(withClass(els, "budget")); n != 1 {
		t.Errorf("%d budget lines, want 1", n)
	}
	rec := withClass(els, "recommended")
	if len(rec) != 1 || rec[0].attrs["data-index"] != strconv.Itoa(rep.Recommendation.Point) {
		t.Errorf("recommended marker %v, want one for point %d", rec, rep.Recommendation.Point)
	}
	if !strings.Contains(b.String(), "m&lt;&amp;&gt;&#34;") {
		t.Error("the model name is not escaped in the title")
	}
}

// TestSVGLogScale: latencies over more than a factor of 20 get a log
// axis whose ticks are 1-2-5 steps.
func TestSVGLogScale(t *testing.T) {
	rep := sampleReport()
	var b bytes.Buffer
	WriteSVG(&b, rep)
	if !strings.Contains(b.String(), "log scale") {
		t.Error("0.05..9 ms is not on a log scale")
	}
	x := latencyAxis(0.05, 9, 0, 100)
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	if !x.log || !near(x.lo, 0.05) || !near(x.hi, 10) {
		t.Errorf("axis %+v, want log 0.05..10", x)
	}
	if got, want := x.ticks(), []float64{0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10}; !slices.EqualFunc(got, want, near) {
		t.Errorf("ticks %v, want %v", got, want)
	}
	if p := x.pos(1); !near(p, 100*math.Log10(1/0.05)/math.Log10(10/0.05)) {
		t.Errorf("pos(1) = %g", p)
	}
	lin := latencyAxis(1, 9, 0, 100)
	if lin.log || lin.lo != 0 || !near(lin.hi, 10) {
		t.Errorf("axis %+v, want linear 0..10", lin)
	}
	if got := lin.ticks(); !slices.Equal(got, []float64{0, 2, 4, 6, 8, 10}) {
		t.Errorf("linear ticks %v", got)
	}
}

func TestSVGNothingMeasured(t *testing.T) {
	rep := &Report{Model: "m", Points: []Point{{Error: "load failed"}}, Recommendation: Recommendation{Point: -1}}
	var b bytes.Buffer
	WriteSVG(&b, rep)
	els := parseSVG(t, b.Bytes())
	if len(withClass(els, "point")) != 0 || !strings.Contains(b.String(), "no point could be measured") {
		t.Errorf("empty plot:\n%s", b.String())
	}
}

func TestNiceStep(t *testing.T) {
	for x, want := range map[float64]float64{0.3: 0.5, 1: 1, 1.1: 2, 2.1: 5, 7: 10, 180: 200, 0: 1} {
		if got := niceStep(x); math.Abs(got-want) > 1e-9 {
			t.Errorf("niceStep(%g) = %g, want %g", x, got, want)
		}
	}
}
