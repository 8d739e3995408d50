package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves g on /metrics in Prometheus' text format, as Triton's
// metrics listener does: other methods get 405 and other paths 404, each
// with Triton's JSON error body.
func Handler(g prometheus.Gatherer) http.Handler {
	metrics := promhttp.HandlerFor(g, promhttp.HandlerOpts{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path != "/metrics":
			writeError(w, http.StatusNotFound, "Not Found")
		case r.Method != http.MethodGet:
			writeError(w, http.StatusMethodNotAllowed, "Method Not Allowed")
		default:
			metrics.ServeHTTP(w, r)
		}
	})
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`{"error":"` + msg + `"}`))
}
