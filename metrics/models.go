package metrics

import (
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Triton's per-model metric names and help texts.
const (
	nameSuccess      = "nv_inference_request_success"
	nameFailure      = "nv_inference_request_failure"
	nameCount        = "nv_inference_count"
	nameExecCount    = "nv_inference_exec_count"
	namePending      = "nv_inference_pending_request_count"
	nameRequestDur   = "nv_inference_request_duration_us"
	nameQueueDur     = "nv_inference_queue_duration_us"
	nameInputDur     = "nv_inference_compute_input_duration_us"
	nameInferDur     = "nv_inference_compute_infer_duration_us"
	nameOutputDur    = "nv_inference_compute_output_duration_us"
	nameRequestSum   = "nv_inference_request_summary_us"
	nameQueueSum     = "nv_inference_queue_summary_us"
	nameInputSum     = "nv_inference_compute_input_summary_us"
	nameInferSum     = "nv_inference_compute_infer_summary_us"
	nameOutputSum    = "nv_inference_compute_output_summary_us"
	nameLoadDuration = "nv_model_load_duration_secs"
	nameCacheHits    = "nv_cache_num_hits_per_model"
	nameCacheMisses  = "nv_cache_num_misses_per_model"
	nameCacheHitDur  = "nv_cache_hit_duration_per_model"
	nameCacheMissDur = "nv_cache_miss_duration_per_model"
	nameCacheHitSum  = "nv_cache_hit_summary_per_model"
	nameCacheMissSum = "nv_cache_miss_summary_per_model"
	// FirstResponseHistogram is the family a configuration's model_metrics
	// may give buckets to.
	FirstResponseHistogram = "nv_inference_first_response_histogram_ms"
	labelModel             = "model"
	labelVersion           = "version"
	labelReason            = "reason"
	summaryMaxAge          = time.Minute
	summaryAgeBuckets      = 5
)

// FailureReasons are the values of nv_inference_request_failure's reason
// label, in Triton's order. Every loaded version has a series for each.
var FailureReasons = []string{"REJECTED", "CANCELED", "BACKEND", "OTHER"}

var help = map[string]string{
	nameSuccess:      "Number of successful inference requests, all batch sizes",
	nameFailure:      "Number of failed inference requests, all batch sizes",
	nameCount:        "Number of inferences performed (does not include cached requests)",
	nameExecCount:    "Number of model executions performed (does not include cached requests)",
	namePending:      "Instantaneous number of pending requests awaiting execution per-model.",
	nameRequestDur:   "Cumulative inference request duration in microseconds (includes cached requests)",
	nameQueueDur:     "Cumulative inference queuing duration in microseconds (includes cached requests)",
	nameInputDur:     "Cumulative compute input duration in microseconds (does not include cached requests)",
	nameInferDur:     "Cumulative compute inference duration in microseconds (does not include cached requests)",
	nameOutputDur:    "Cumulative inference compute output duration in microseconds (does not include cached requests)",
	nameRequestSum:   "Summary of inference request duration in microseconds (includes cached requests)",
	nameQueueSum:     "Summary of inference queuing duration in microseconds (includes cached requests)",
	nameInputSum:     "Summary of compute input duration in microseconds (does not include cached requests)",
	nameInferSum:     "Summary of compute inference duration in microseconds (does not include cached requests)",
	nameOutputSum:    "Summary of inference compute output duration in microseconds (does not include cached requests)",
	nameLoadDuration: "Model load time in seconds",
	nameCacheHits:    "Number of cache hits per model",
	nameCacheMisses:  "Number of cache misses per model",
	nameCacheHitDur:  "Total cache hit duration per model, in microseconds",
	nameCacheMissDur: "Total cache miss (insert+lookup) duration per model, in microseconds",
	nameCacheHitSum:  "Summary of cache hit duration per model, in microseconds",
	nameCacheMissSum: "Summary of cache miss (insert+lookup) duration per model, in microseconds",

	FirstResponseHistogram: "Duration from request to first response in milliseconds",
}

// DefaultFirstResponseBuckets are the first-response histogram's buckets,
// in milliseconds, when the configuration's model_metrics gives none.
var DefaultFirstResponseBuckets = []float64{100, 500, 2000, 5000}

// ReporterOptions are what a model version's configuration says of its
// series.
type ReporterOptions struct {
	// Tags are the configuration's metric_tags: a `_<key>` label each.
	Tags map[string]string
	// ResponseCache: the version uses the response cache, and reports
	// the nv_cache_*_per_model series.
	ResponseCache bool
	// Decoupled: the version answers 0..N times, and reports the
	// first-response histogram when histogram_latencies is on.
	Decoupled bool
	// FirstResponseBuckets overrides DefaultFirstResponseBuckets
	// (model_metrics in the configuration); nil keeps them.
	FirstResponseBuckets []float64
}

// Models is the collector of every loaded model version's series. Its
// label sets differ between models (one `_<key>` label per entry of a
// configuration's metric_tags), so it is an unchecked collector: it
// describes nothing and the registry checks what it collects.
type Models struct {
	cfg Config

	mu        sync.Mutex // guards reporters and each reporter's refs
	reporters map[string]*ModelReporter
}

// NewModels registers the per-model collector on reg.
func NewModels(reg prometheus.Registerer, cfg Config) (*Models, error) {
	m := &Models{cfg: cfg, reporters: map[string]*ModelReporter{}}
	if err := reg.Register(m); err != nil {
		return nil, err
	}
	return m, nil
}

// Describe sends nothing: Models is an unchecked collector.
func (m *Models) Describe(chan<- *prometheus.Desc) {}

// Collect sends the series of every loaded model version.
func (m *Models) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	rs := make([]*ModelReporter, 0, len(m.reporters))
	for _, r := range m.reporters {
		rs = append(rs, r)
	}
	m.mu.Unlock()
	for _, r := range rs {
		for _, c := range r.all {
			ch <- c
		}
	}
}

// Reporter returns the reporter of a model version, creating its series.
// As in Triton, versions with the same labels share one reporter (a reload
// keeps counting on the same series); each Reporter call must be matched
// by one ModelReporter.Close, and the last Close deletes the series.
func (m *Models) Reporter(name string, version int64, opts ReporterOptions) *ModelReporter {
	labels := prometheus.Labels{labelModel: name, labelVersion: strconv.FormatInt(version, 10)}
	for k, v := range opts.Tags {
		labels["_"+sanitizeLabel(k)] = v
	}
	key := labelKey(labels)
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.reporters[key]; r != nil {
		r.refs++
		return r
	}
	r := newModelReporter(m, key, labels, opts)
	r.refs = 1
	m.reporters[key] = r
	return r
}

func (m *Models) release(r *ModelReporter) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.refs--; r.refs == 0 && m.reporters[r.key] == r {
		delete(m.reporters, r.key)
	}
}

// ModelReporter records the metrics of one model version. Its methods are
// safe for concurrent use.
type ModelReporter struct {
	owner *Models
	key   string
	refs  int // guarded by owner.mu

	success, count, execs prometheus.Counter
	failures              map[string]prometheus.Counter
	pending, loadDuration prometheus.Gauge
	// Latency counters and summaries; nil when --metrics-config turns them off.
	requestDur, queueDur, inputDur, inferDur, outputDur prometheus.Counter
	requestSum, queueSum, inputSum, inferSum, outputSum prometheus.Summary
	// Response cache series; nil unless the version uses the cache.
	cacheHits, cacheMisses, cacheHitDur, cacheMissDur prometheus.Counter
	cacheHitSum, cacheMissSum                         prometheus.Summary
	// firstResponse is nil unless the version is decoupled and
	// histogram_latencies is on.
	firstResponse prometheus.Histogram

	all []prometheus.Metric // every series, for Collect
}

func newModelReporter(owner *Models, key string, labels prometheus.Labels, opts ReporterOptions) *ModelReporter {
	r := &ModelReporter{owner: owner, key: key, failures: map[string]prometheus.Counter{}}
	counter := func(name string, extra ...string) prometheus.Counter {
		l := labels
		if len(extra) == 2 {
			l = prometheus.Labels{extra[0]: extra[1]}
			for k, v := range labels {
				l[k] = v
			}
		}
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help[name], ConstLabels: l})
		r.all = append(r.all, c)
		return c
	}
	gauge := func(name string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help[name], ConstLabels: labels})
		r.all = append(r.all, g)
		return g
	}
	summary := func(name string) prometheus.Summary {
		s := prometheus.NewSummary(prometheus.SummaryOpts{
			Name: name, Help: help[name], ConstLabels: labels,
			Objectives: owner.cfg.SummaryQuantiles, MaxAge: summaryMaxAge, AgeBuckets: summaryAgeBuckets,
		})
		r.all = append(r.all, s)
		return s
	}
	r.success = counter(nameSuccess)
	for _, reason := range FailureReasons {
		r.failures[reason] = counter(nameFailure, labelReason, reason)
	}
	r.count = counter(nameCount)
	r.execs = counter(nameExecCount)
	r.pending = gauge(namePending)
	if owner.cfg.CounterLatencies {
		r.requestDur = counter(nameRequestDur)
		r.queueDur = counter(nameQueueDur)
		r.inputDur = counter(nameInputDur)
		r.inferDur = counter(nameInferDur)
		r.outputDur = counter(nameOutputDur)
	}
	if owner.cfg.SummaryLatencies {
		r.requestSum = summary(nameRequestSum)
		r.queueSum = summary(nameQueueSum)
		r.inputSum = summary(nameInputSum)
		r.inferSum = summary(nameInferSum)
		r.outputSum = summary(nameOutputSum)
	}
	r.loadDuration = gauge(nameLoadDuration)
	if opts.ResponseCache {
		r.cacheHits = counter(nameCacheHits)
		r.cacheMisses = counter(nameCacheMisses)
		if owner.cfg.CounterLatencies {
			r.cacheHitDur = counter(nameCacheHitDur)
			r.cacheMissDur = counter(nameCacheMissDur)
		}
		if owner.cfg.SummaryLatencies {
			r.cacheHitSum = summary(nameCacheHitSum)
			r.cacheMissSum = summary(nameCacheMissSum)
		}
	}
	if opts.Decoupled && owner.cfg.HistogramLatencies {
		buckets := opts.FirstResponseBuckets
		if len(buckets) == 0 {
			buckets = DefaultFirstResponseBuckets
		}
		r.firstResponse = prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: FirstResponseHistogram, Help: help[FirstResponseHistogram], ConstLabels: labels, Buckets: buckets,
		})
		r.all = append(r.all, r.firstResponse)
	}
	return r
}

// micros is a duration in whole microseconds, as Triton adds them.
func micros(d time.Duration) float64 { return float64(max(d, 0) / time.Microsecond) }

// Success records a successful request of batchSize inferences.
func (r *ModelReporter) Success(batchSize int, request, queue, computeInput, computeInfer, computeOutput time.Duration) {
	r.success.Inc()
	r.count.Add(float64(max(batchSize, 1)))
	if r.requestDur != nil {
		r.requestDur.Add(micros(request))
		r.queueDur.Add(micros(queue))
		r.inputDur.Add(micros(computeInput))
		r.inferDur.Add(micros(computeInfer))
		r.outputDur.Add(micros(computeOutput))
	}
	if r.requestSum != nil {
		r.requestSum.Observe(micros(request))
		r.queueSum.Observe(micros(queue))
		r.inputSum.Observe(micros(computeInput))
		r.inferSum.Observe(micros(computeInfer))
		r.outputSum.Observe(micros(computeOutput))
	}
}

// CacheHit records a request answered from the response cache: a
// success (its request duration counts, no inference or execution does)
// and a cache hit with its lookup time.
func (r *ModelReporter) CacheHit(request, lookup time.Duration) {
	r.success.Inc()
	if r.requestDur != nil {
		r.requestDur.Add(micros(request))
	}
	if r.requestSum != nil {
		r.requestSum.Observe(micros(request))
	}
	if r.cacheHits == nil {
		return
	}
	r.cacheHits.Inc()
	if r.cacheHitDur != nil {
		r.cacheHitDur.Add(micros(lookup))
	}
	if r.cacheHitSum != nil {
		r.cacheHitSum.Observe(micros(lookup))
	}
}

// CacheMiss records a request the response cache did not hold, with its
// lookup and insertion time; the request itself is a Success.
func (r *ModelReporter) CacheMiss(d time.Duration) {
	if r.cacheMisses == nil {
		return
	}
	r.cacheMisses.Inc()
	if r.cacheMissDur != nil {
		r.cacheMissDur.Add(micros(d))
	}
	if r.cacheMissSum != nil {
		r.cacheMissSum.Observe(micros(d))
	}
}

// FirstResponse records how long a decoupled model's request took to its
// first response, in the first-response histogram (milliseconds).
func (r *ModelReporter) FirstResponse(d time.Duration) {
	if r.firstResponse != nil {
		r.firstResponse.Observe(float64(max(d, 0)) / float64(time.Millisecond))
	}
}

// Failure records a failed request; an unknown reason counts as OTHER.
func (r *ModelReporter) Failure(reason string) {
	c := r.failures[reason]
	if c == nil {
		c = r.failures["OTHER"]
	}
	c.Inc()
}

// Executed records one model execution.
func (r *ModelReporter) Executed() { r.execs.Inc() }

// Pending moves the pending-request gauge by delta.
func (r *ModelReporter) Pending(delta int) { r.pending.Add(float64(delta)) }

// LoadDuration sets how long the version took to load.
func (r *ModelReporter) LoadDuration(d time.Duration) { r.loadDuration.Set(d.Seconds()) }

// Close releases the reporter; the last release deletes its series.
func (r *ModelReporter) Close() { r.owner.release(r) }

// labelKey is a canonical text of a label set.
func labelKey(l prometheus.Labels) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(l[k])
		b.WriteByte(0)
	}
	return b.String()
}

// sanitizeLabel turns a metric_tags key into a valid label name suffix.
func sanitizeLabel(k string) string {
	b := []byte(k)
	for i, c := range b {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}
