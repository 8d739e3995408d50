package traffic

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the routes' series (Nereid's own). A nil *Metrics records
// nothing.
type Metrics struct {
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	shadows   *prometheus.CounterVec
	rollbacks *prometheus.CounterVec
	weights   *prometheus.GaugeVec
}

// NewMetrics registers the traffic metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nereid_traffic_requests_total", Help: "Routed inference requests by route, variant and result",
		}, []string{"route", "variant", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nereid_traffic_request_duration_seconds", Help: "Latency of routed inference requests by route and variant",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14),
		}, []string{"route", "variant"}),
		shadows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nereid_traffic_shadow_total",
			Help: "Mirrored requests by route and outcome: matched, diverged, error, dropped",
		}, []string{"route", "outcome"}),
		rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nereid_traffic_rollbacks_total", Help: "Variants whose weight the rollback rule set to zero",
		}, []string{"route", "variant"}),
		weights: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nereid_traffic_weight", Help: "Current weight of each variant of a route",
		}, []string{"route", "variant"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.latency, m.shadows, m.rollbacks, m.weights} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) request(route, variant string, took time.Duration, err error) {
	if m == nil {
		return
	}
	result := "success"
	if err != nil {
		result = "failure"
	}
	m.requests.WithLabelValues(route, variant, result).Inc()
	m.latency.WithLabelValues(route, variant).Observe(took.Seconds())
}

func (m *Metrics) shadow(route, outcome string) {
	if m != nil {
		m.shadows.WithLabelValues(route, outcome).Inc()
	}
}

func (m *Metrics) rolledBack(route, variant string) {
	if m != nil {
		m.rollbacks.WithLabelValues(route, variant).Inc()
	}
}

func (m *Metrics) weight(route, variant string, w float64) {
	if m != nil {
		m.weights.WithLabelValues(route, variant).Set(w)
	}
}
