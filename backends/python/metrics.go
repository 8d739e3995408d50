package python

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nereid-project/nereid/inference"
)

// Custom metrics: pb_utils.MetricFamily and Metric. A family is a
// Prometheus collector registered on the server's registry under the name
// the model gives; its metrics may carry any labels, as Triton's may.
// Families are shared by name between the instances of a model (and
// between models, as Triton's are); a family goes away when the last
// model that created it unloads.

var metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)

type family struct {
	name, help, kind string
	users            int // models holding it

	mu      sync.Mutex // guards metrics
	metrics map[string]*metricValue
}

type metricValue struct {
	labels  map[string]string
	value   float64 // counter, gauge; histogram sum
	buckets []float64
	counts  []uint64 // per bucket, not cumulative
	count   uint64
}

var _ prometheus.Collector = (*family)(nil)

func (f *family) Describe(chan<- *prometheus.Desc) {} // unchecked: labels vary

func (f *family) Collect(ch chan<- prometheus.Metric) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.metrics {
		names := make([]string, 0, len(m.labels))
		for k := range m.labels {
			names = append(names, k)
		}
		sort.Strings(names)
		vals := make([]string, len(names))
		for i, n := range names {
			vals[i] = m.labels[n]
		}
		desc := prometheus.NewDesc(f.name, f.help, names, nil)
		var pm prometheus.Metric
		var err error
		switch f.kind {
		case "counter":
			pm, err = prometheus.NewConstMetric(desc, prometheus.CounterValue, m.value, vals...)
		case "gauge":
			pm, err = prometheus.NewConstMetric(desc, prometheus.GaugeValue, m.value, vals...)
		default:
			cum := make(map[float64]uint64, len(m.buckets))
			var run uint64
			for i, ub := range m.buckets {
				run += m.counts[i]
				cum[ub] = run
			}
			pm, err = prometheus.NewConstHistogram(desc, m.count, m.value, cum, vals...)
		}
		if err == nil {
			ch <- pm
		}
	}
}

// metricsHub holds every family of the backend's models.
type metricsHub struct {
	reg prometheus.Registerer

	mu       sync.Mutex // guards families
	families map[string]*family
}

// modelMetrics is one model's view: the stubs' ids of families and
// metrics, and the families the model holds.
type modelMetrics struct {
	hub   *metricsHub
	model string

	mu   sync.Mutex // guards the fields below
	held map[string]*family
	fams map[*stub]map[int64]*family
	mets map[*stub]map[int64]*metricRef
}

type metricRef struct {
	f   *family
	key string
}

var (
	hubs       sync.Map // prometheus.Registerer → *metricsHub
	unexported = prometheus.NewRegistry()
)

func newModelMetrics(reg prometheus.Registerer, model string) *modelMetrics {
	mm := &modelMetrics{model: model, held: map[string]*family{}, fams: map[*stub]map[int64]*family{}, mets: map[*stub]map[int64]*metricRef{}}
	if reg == nil {
		// Metrics are off: a model's families still work (value() and
		// all), they are just not exported, so the model loads as it does
		// with metrics on.
		reg = unexported
	}
	h, _ := hubs.LoadOrStore(reg, &metricsHub{reg: reg, families: map[string]*family{}})
	mm.hub = h.(*metricsHub)
	return mm
}

func (mm *modelMetrics) family(s *stub, id int64, name, help, kind string) error {
	switch kind {
	case "counter", "gauge", "histogram":
	default:
		return inference.InvalidArg("metric family '%s': unknown kind '%s'", name, kind)
	}
	if !metricName.MatchString(name) {
		return inference.InvalidArg("metric family name '%s' is not a valid Prometheus metric name", name)
	}
	mm.mu.Lock()
	defer mm.mu.Unlock()
	f, ok := mm.held[name]
	if !ok {
		var err error
		if f, err = mm.hub.acquire(name, help, kind); err != nil {
			return err
		}
		mm.held[name] = f
	} else if f.kind != kind {
		return inference.InvalidArg("metric family '%s' exists as a %s", name, f.kind)
	}
	if mm.fams[s] == nil {
		mm.fams[s] = map[int64]*family{}
	}
	mm.fams[s][id] = f
	return nil
}

func (h *metricsHub) acquire(name, help, kind string) (*family, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if f, ok := h.families[name]; ok {
		if f.kind != kind {
			return nil, inference.InvalidArg("metric family '%s' exists as a %s", name, f.kind)
		}
		f.users++
		return f, nil
	}
	f := &family{name: name, help: help, kind: kind, users: 1, metrics: map[string]*metricValue{}}
	if err := h.reg.Register(f); err != nil {
		return nil, inference.InvalidArg("metric family '%s': %v", name, err)
	}
	h.families[name] = f
	return f, nil
}

func (h *metricsHub) release(f *family) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f.users--
	if f.users == 0 {
		h.reg.Unregister(f)
		delete(h.families, f.name)
	}
}

func labelKey(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%q=%q,", k, labels[k])
	}
	return b.String()
}

func (mm *modelMetrics) metric(s *stub, fid, id int64, labels map[string]string, buckets []float64) error {
	mm.mu.Lock()
	f := mm.fams[s][fid]
	mm.mu.Unlock()
	if f == nil {
		return inference.InvalidArg("unknown metric family %d", fid)
	}
	for k := range labels {
		if !metricName.MatchString(k) || strings.Contains(k, ":") {
			return inference.InvalidArg("metric label '%s' of family '%s' is not a valid label name", k, f.name)
		}
	}
	if f.kind == "histogram" {
		if len(buckets) == 0 {
			return inference.InvalidArg("a metric of histogram family '%s' needs buckets", f.name)
		}
		if !slices.IsSorted(buckets) || slices.ContainsFunc(buckets, math.IsNaN) {
			return inference.InvalidArg("the buckets of a metric of family '%s' must be increasing numbers", f.name)
		}
	} else if buckets != nil {
		return inference.InvalidArg("only histogram metrics take buckets (family '%s' is a %s)", f.name, f.kind)
	}
	key := labelKey(labels)
	f.mu.Lock()
	if _, ok := f.metrics[key]; !ok {
		f.metrics[key] = &metricValue{labels: labels, buckets: buckets, counts: make([]uint64, len(buckets))}
	}
	f.mu.Unlock()
	mm.mu.Lock()
	if mm.mets[s] == nil {
		mm.mets[s] = map[int64]*metricRef{}
	}
	mm.mets[s][id] = &metricRef{f, key}
	mm.mu.Unlock()
	return nil
}

func (mm *modelMetrics) ref(s *stub, id int64) *metricRef {
	mm.mu.Lock()
	defer mm.mu.Unlock()
	return mm.mets[s][id]
}

// update applies increment, set or observe; a bad id or operation is
// dropped (the stub checks what it sends).
func (mm *modelMetrics) update(s *stub, id int64, op string, v float64) {
	r := mm.ref(s, id)
	if r == nil {
		return
	}
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	m := r.f.metrics[r.key]
	if m == nil {
		return
	}
	switch {
	case op == "inc" && r.f.kind != "histogram":
		if r.f.kind == "counter" && v < 0 {
			return
		}
		m.value += v
	case op == "set" && r.f.kind == "gauge":
		m.value = v
	case op == "obs" && r.f.kind == "histogram":
		m.count++
		m.value += v
		for i, ub := range m.buckets {
			if v <= ub {
				m.counts[i]++
				break
			}
		}
	}
}

func (mm *modelMetrics) value(s *stub, id int64) (float64, error) {
	r := mm.ref(s, id)
	if r == nil {
		return 0, inference.InvalidArg("unknown metric %d", id)
	}
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	m := r.f.metrics[r.key]
	if m == nil {
		return 0, inference.InvalidArg("metric %d was deleted", id)
	}
	return m.value, nil // a histogram's: the sum of its observations
}

// remove deletes a metric (m != 0) when the model's Python object of it
// goes; a family stays while the model is loaded.
func (mm *modelMetrics) remove(s *stub, fid, id int64) {
	mm.mu.Lock()
	r := mm.mets[s][id]
	if id != 0 {
		delete(mm.mets[s], id)
	}
	mm.mu.Unlock()
	if r != nil {
		r.f.mu.Lock()
		delete(r.f.metrics, r.key)
		r.f.mu.Unlock()
	}
}

// forgetStub drops a gone stub's ids.
func (mm *modelMetrics) forgetStub(s *stub) {
	mm.mu.Lock()
	delete(mm.fams, s)
	delete(mm.mets, s)
	mm.mu.Unlock()
}

// close releases the model's families when it unloads.
func (mm *modelMetrics) close() {
	mm.mu.Lock()
	held := mm.held
	mm.held = map[string]*family{}
	mm.mu.Unlock()
	for _, f := range held {
		mm.hub.release(f)
	}
}
