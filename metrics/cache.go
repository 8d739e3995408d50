package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Cache records the model cache's events (Nereid's own metrics: Triton
// has no model cache). It implements repository.CacheMetrics.
type Cache struct {
	hits, misses *prometheus.CounterVec
	loads        *prometheus.CounterVec
	evictions    *prometheus.CounterVec
	coldLoad     prometheus.Histogram
	used, budget prometheus.Gauge
}

// NewCache registers the model cache's metrics on reg.
func NewCache(reg prometheus.Registerer) (*Cache, error) {
	c := &Cache{
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nereid_model_cache_hits_total",
			Help: "Inference requests that found their model loaded",
		}, []string{labelModel}),
		misses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nereid_model_cache_misses_total",
			Help: "Inference requests that waited for their model to load",
		}, []string{labelModel}),
		loads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nereid_model_cache_loads_total",
			Help: "Loads made for inference requests (cold starts), by result",
		}, []string{labelModel, "result"}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nereid_model_cache_evictions_total",
			Help: "Models the cache unloaded: reason budget (least recently used, to make room for a load) or idle",
		}, []string{labelModel, labelReason}),
		coldLoad: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "nereid_model_cold_load_seconds",
			Help:    "Time inference requests waited for their model to load",
			Buckets: []float64{.001, .0025, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		used: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nereid_model_cache_bytes",
			Help: "Memory the loaded model versions hold, as the model cache counts it",
		}),
		budget: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nereid_model_cache_budget_bytes",
			Help: "The model cache's memory budget (--model-cache-memory; 0: none)",
		}),
	}
	for _, col := range []prometheus.Collector{c.hits, c.misses, c.loads, c.evictions, c.coldLoad, c.used, c.budget} {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Hit counts a request that found its model loaded.
func (c *Cache) Hit(model string) { c.hits.WithLabelValues(model).Inc() }

// Miss counts a request that waited for a load.
func (c *Cache) Miss(model string) { c.misses.WithLabelValues(model).Inc() }

// ColdLoad records a load requests waited for.
func (c *Cache) ColdLoad(model string, took time.Duration, err error) {
	result := "success"
	if err != nil {
		result = "failure"
	} else {
		c.coldLoad.Observe(took.Seconds())
	}
	c.loads.WithLabelValues(model, result).Inc()
}

// Evicted counts a model the cache unloaded.
func (c *Cache) Evicted(model string, idle bool) {
	reason := "budget"
	if idle {
		reason = "idle"
	}
	c.evictions.WithLabelValues(model, reason).Inc()
}

// Forget deletes a model's series, as Triton deletes a model's series
// when it is unloaded.
func (c *Cache) Forget(model string) {
	for _, v := range []*prometheus.CounterVec{c.hits, c.misses, c.loads, c.evictions} {
		v.DeletePartialMatch(prometheus.Labels{labelModel: model})
	}
}

// Usage sets the bytes in use and the budget.
func (c *Cache) Usage(used, budget int64) {
	c.used.Set(float64(used))
	c.budget.Set(float64(budget))
}
