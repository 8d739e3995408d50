// Package metrics serves Nereid's Prometheus metrics with Triton's names,
// types and labels: per-model request counters, durations and optional
// summaries (created when a model version loads, deleted when it unloads),
// model load durations, and CPU and GPU gauges polled at an interval. Every
// metric is registered on a Registerer the caller injects.
package metrics

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Config is Triton's --metrics-config: which latency metrics a model
// version reports.
type Config struct {
	// CounterLatencies keeps the nv_inference_*_duration_us counters
	// (counter_latencies, default true).
	CounterLatencies bool
	// SummaryLatencies adds the nv_inference_*_summary_us summaries
	// (summary_latencies, default false).
	SummaryLatencies bool
	// SummaryQuantiles maps each quantile of the summaries to its allowed
	// error (summary_quantiles).
	SummaryQuantiles map[float64]float64
	// HistogramLatencies adds nv_inference_first_response_histogram_ms to
	// decoupled models (histogram_latencies, default false).
	HistogramLatencies bool
}

// DefaultConfig is Triton's default: latency counters, no summaries, and
// the quantiles Triton uses once summaries are on.
func DefaultConfig() Config {
	return Config{
		CounterLatencies: true,
		SummaryQuantiles: map[float64]float64{0.5: 0.05, 0.9: 0.01, 0.95: 0.001, 0.99: 0.001, 0.999: 0.001},
	}
}

// ParseConfig applies --metrics-config values, each "<key>=<value>" or
// Triton's grouped form "<group>,<key>=<value>" (only the global group,
// without a name, configures anything today). An unknown key is an error
// naming the keys Nereid knows, as are malformed values.
func ParseConfig(values []string) (Config, error) {
	c := DefaultConfig()
	for _, v := range values {
		kv := v
		if group, rest, ok := strings.Cut(v, ","); ok && !strings.Contains(group, "=") {
			if group != "" {
				continue // a named group; Triton reads only the global one
			}
			kv = rest
		}
		key, value, ok := strings.Cut(kv, "=")
		if !ok || key == "" || value == "" {
			return c, fmt.Errorf("--metrics-config option format is '<setting>=<value>'. Got %s", v)
		}
		switch key {
		case "counter_latencies":
			b, err := strconv.ParseBool(value)
			if err != nil {
				return c, fmt.Errorf("--metrics-config %s: %q is not a boolean", key, value)
			}
			c.CounterLatencies = b
		case "summary_latencies":
			b, err := strconv.ParseBool(value)
			if err != nil {
				return c, fmt.Errorf("--metrics-config %s: %q is not a boolean", key, value)
			}
			c.SummaryLatencies = b
		case "histogram_latencies":
			b, err := strconv.ParseBool(value)
			if err != nil {
				return c, fmt.Errorf("--metrics-config %s: %q is not a boolean", key, value)
			}
			c.HistogramLatencies = b
		case "summary_quantiles":
			q, err := parseQuantiles(value)
			if err != nil {
				return c, err
			}
			c.SummaryQuantiles = q
		default:
			return c, fmt.Errorf("--metrics-config: unknown setting '%s' (Nereid knows counter_latencies, summary_latencies, summary_quantiles and histogram_latencies)", key)
		}
	}
	return c, nil
}

// parseQuantiles reads "<quantile>:<error>,..." as Triton does.
func parseQuantiles(s string) (map[float64]float64, error) {
	out := map[float64]float64{}
	for _, pair := range strings.Split(s, ",") {
		pair = strings.TrimSpace(pair)
		q, e, ok := strings.Cut(pair, ":")
		if !ok {
			return nil, fmt.Errorf("--metrics-config summary_quantiles: invalid option [%s]: no ':' delimiter found; expected format is <quantile>:<error>", pair)
		}
		qv, err1 := strconv.ParseFloat(q, 64)
		ev, err2 := strconv.ParseFloat(e, 64)
		if err1 != nil || err2 != nil || qv < 0 || qv > 1 || ev < 0 || ev > 1 {
			return nil, fmt.Errorf("--metrics-config summary_quantiles: invalid option [%s]: quantile and error must be numbers in [0, 1]", pair)
		}
		out[qv] = ev
	}
	return out, nil
}

// String renders the configuration, for the startup log.
func (c Config) String() string {
	qs := make([]string, 0, len(c.SummaryQuantiles))
	for q, e := range c.SummaryQuantiles {
		qs = append(qs, strconv.FormatFloat(q, 'g', -1, 64)+":"+strconv.FormatFloat(e, 'g', -1, 64))
	}
	sort.Strings(qs)
	return fmt.Sprintf("counter_latencies=%t summary_latencies=%t summary_quantiles=%s histogram_latencies=%t",
		c.CounterLatencies, c.SummaryLatencies, strings.Join(qs, ","), c.HistogramLatencies)
}
