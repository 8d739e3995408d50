package asyncinfer

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the service's Prometheus series; a nil *metrics records
// nothing (no registerer).
type metrics struct {
	queueDepth *prometheus.GaugeVec
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
}

// Values of the status label of nereid_async_requests_total.
const (
	statusAccepted  = "accepted"
	statusCancelled = "cancelled"
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nereid_async_queue_depth",
			Help: "Asynchronous inference requests pending or running, per model: what an autoscaler scales on.",
		}, []string{"model"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nereid_async_requests_total",
			Help: "Asynchronous inference requests by model and status: accepted, then done, failed or cancelled.",
		}, []string{"model", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nereid_async_request_duration_seconds",
			Help:    "Time from the acceptance of an asynchronous inference request (its body stored) to its outcome, by model and status (done, failed).",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 11), // 5 ms .. about 1.5 h
		}, []string{"model", "status"}),
	}
	for _, c := range []prometheus.Collector{m.queueDepth, m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			m.unregister(reg)
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("asyncinfer: the metrics are already registered (one service per registry)")
			}
			return nil, err
		}
	}
	return m, nil
}

// unregister takes the series off the registry again.
func (m *metrics) unregister(reg prometheus.Registerer) {
	if m == nil || reg == nil {
		return
	}
	reg.Unregister(m.queueDepth)
	reg.Unregister(m.requests)
	reg.Unregister(m.duration)
}

// depth sets a model's queue depth. The series stays at zero once the
// queue is empty, so that a scaler sees zero rather than no data.
func (m *metrics) depth(mq *modelQueue) {
	if m != nil {
		m.queueDepth.WithLabelValues(mq.name).Set(float64(len(mq.pending) + mq.running))
	}
}

func (m *metrics) accepted(model string) {
	if m != nil {
		m.requests.WithLabelValues(model, statusAccepted).Inc()
	}
}

func (m *metrics) cancelled(model string) {
	if m != nil {
		m.requests.WithLabelValues(model, statusCancelled).Inc()
	}
}

// finished counts a request that reached its outcome.
func (m *metrics) finished(rec *Record) {
	if m == nil {
		return
	}
	st := string(rec.State)
	m.requests.WithLabelValues(rec.Model, st).Inc()
	m.duration.WithLabelValues(rec.Model, st).Observe(rec.Finished.Sub(rec.Created).Seconds())
}
