package server

import (
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/scheduler"
)

// Failure reasons, the `reason` label of nv_inference_request_failure.
const (
	FailureRejected = "REJECTED" // refused or timed out by the scheduler
	FailureCanceled = "CANCELED" // cancelled by the client or a deadline
	FailureBackend  = "BACKEND"  // the backend failed the execution
	FailureOther    = "OTHER"
)

// ModelMetrics receives the per-request numbers of one model version for
// Prometheus; metrics.ModelReporter implements it. The server core calls it
// from many goroutines at once.
type ModelMetrics interface {
	// Success records a successful request of batchSize inferences and the
	// durations of its phases.
	Success(batchSize int, request, queue, computeInput, computeInfer, computeOutput time.Duration)
	// Failure records a failed request with one of the Failure* reasons.
	Failure(reason string)
	// Executed records one model execution (a batch).
	Executed()
	// Pending moves the gauge of requests waiting for an instance.
	Pending(delta int)
	// LoadDuration records how long the version took to load.
	LoadDuration(d time.Duration)
	// Close deletes the version's series; the reporter is not used after.
	Close()
}

// MetricsFactory returns the metrics reporter of a model version that has
// loaded, from the configuration it serves (metric_tags, response_cache,
// its transaction policy, model_metrics).
type MetricsFactory func(name string, version int64, cfg *inferencepb.ModelConfig) ModelMetrics

// FirstResponseMetrics is implemented by model metrics that keep Triton's
// first-response histogram (decoupled models, histogram_latencies).
type FirstResponseMetrics interface {
	FirstResponse(d time.Duration)
}

// firstResponse records how long a decoupled request took to its first
// response.
func (s *modelStats) firstResponse(d time.Duration) {
	if m, ok := s.metrics.(FirstResponseMetrics); ok {
		m.FirstResponse(d)
	}
}

// duration is a count and a total, as the statistics extension reports.
type duration struct{ count, ns uint64 }

func (d *duration) add(t time.Duration) {
	d.count++
	if t > 0 {
		d.ns += uint64(t)
	}
}

func (d duration) proto() *inferencepb.StatisticDuration {
	return &inferencepb.StatisticDuration{Count: d.count, Ns: d.ns}
}

type batchStats struct{ input, infer, output duration }

// responseStats is one entry of response_stats: the responses a model sent
// at one index of its requests' response streams. A model that is not
// decoupled sends exactly one response per request, under the key "0".
type responseStats struct{ computeInfer, computeOutput, success, fail, empty, cancel duration }

func (r *responseStats) proto() *inferencepb.InferResponseStatistics {
	return &inferencepb.InferResponseStatistics{
		ComputeInfer:  r.computeInfer.proto(),
		ComputeOutput: r.computeOutput.proto(),
		Success:       r.success.proto(),
		Fail:          r.fail.proto(),
		EmptyResponse: r.empty.proto(),
		Cancel:        r.cancel.proto(),
	}
}

// modelStats accumulates the statistics of one loaded model version with
// Triton's semantics (core src/infer_stats.cc):
//
//   - success counts successful requests, its duration is the end-to-end
//     request time; queue and the compute durations are accumulated for
//     successful requests only, so their counts equal success's count;
//   - every request of a batch is charged the whole batch's compute
//     durations, while batch_stats counts each execution once;
//   - inference_count adds each successful request's batch size,
//     execution_count each execution; last_inference is the wall-clock
//     time of the last execution;
//   - fail counts requests that reached the scheduler and failed there or
//     in the backend; requests refused before (unknown model, invalid
//     inputs) are not counted, as in Triton.
//
// It implements scheduler.Recorder.
type modelStats struct {
	metrics ModelMetrics // may be nil
	// failAs, when set, is the reason every failure counts under: an
	// ensemble's own failures are OTHER, as in Triton (its steps' models
	// count theirs by their own reasons).
	failAs string

	mu             sync.Mutex // guards the fields below
	lastInference  time.Time
	inferenceCount uint64
	executionCount uint64
	success, fail  duration
	queue          duration
	computeInput   duration
	computeInfer   duration
	computeOutput  duration
	cacheHit       duration // response cache hits: lookup time
	cacheMiss      duration // misses that were computed: lookup + insertion time
	batches        map[uint64]*batchStats
	responses      map[string]*responseStats
}

var _ scheduler.Recorder = (*modelStats)(nil)

func newModelStats() *modelStats {
	return &modelStats{batches: map[uint64]*batchStats{}, responses: map[string]*responseStats{}}
}

// Pending forwards the pending-request gauge to the metrics.
func (s *modelStats) Pending(delta int) {
	if s.metrics != nil {
		s.metrics.Pending(delta)
	}
}

// Executed records one execution under batch_stats. The requests' Timing
// was stamped by scheduler.ExecuteBatch.
func (s *modelStats) Executed(e scheduler.Execution) {
	size := uint64(max(e.BatchSize, 1))
	s.mu.Lock()
	s.executionCount++
	if e.End.After(s.lastInference) {
		s.lastInference = e.End
	}
	b := s.batches[size]
	if b == nil {
		b = &batchStats{}
		s.batches[size] = b
	}
	b.input.add(e.ComputeInput)
	b.infer.add(e.ComputeInfer)
	b.output.add(e.ComputeOut)
	s.mu.Unlock()
	if s.metrics != nil {
		s.metrics.Executed()
	}
}

// finished records the end of a request. A request that never reached the
// scheduler (Timing.QueueStart zero) is not counted.
//
// unaryResponse is set when the request's one response came from a unary
// backend and its response_stats entry was left to this call, which
// records it from the phases under the same lock (a measurable saving on
// small requests).
func (s *modelStats) finished(req *inference.Request, end time.Time, err error, unaryResponse bool) {
	t := &req.Timing
	if t.QueueStart.IsZero() {
		return
	}
	request := end.Sub(req.Arrival)
	executed := !t.ComputeStart.IsZero()
	if err != nil {
		reason := s.failAs
		if reason == "" {
			reason = failureReason(err)
		}
		s.mu.Lock()
		s.fail.add(request)
		if unaryResponse {
			s.unaryResponseLocked(t)
		}
		s.mu.Unlock()
		if s.metrics != nil {
			s.metrics.Failure(reason)
		}
		return
	}
	if t.CacheHit {
		s.cachedSuccess(request, t.CacheTime)
		return
	}
	var queue, input, infer, output time.Duration
	if executed {
		queue = t.ComputeStart.Sub(t.QueueStart)
		input = t.ComputeInputEnd.Sub(t.ComputeStart)
		infer = t.ComputeOutputStart.Sub(t.ComputeInputEnd)
		output = t.ComputeEnd.Sub(t.ComputeOutputStart)
	}
	batch := max(req.BatchSize, 1)
	s.mu.Lock()
	s.inferenceCount += uint64(batch)
	s.success.add(request)
	s.queue.add(queue)
	s.computeInput.add(input)
	s.computeInfer.add(infer)
	s.computeOutput.add(output)
	if t.CacheMiss {
		s.cacheMiss.add(t.CacheTime)
	}
	if unaryResponse {
		s.unaryResponseLocked(t)
	}
	s.mu.Unlock()
	if s.metrics != nil {
		s.metrics.Success(batch, request, queue, input, infer, output)
	}
}

// responseSent records response idx of a request's stream: infer is the
// time the model took to produce it (since the execution started, or since
// the previous response), output the time the core took to hand it on.
// Triton keys response_stats by this index: a model that is not decoupled
// only ever has "0".
func (s *modelStats) responseSent(idx int, infer, output time.Duration) {
	s.mu.Lock()
	r := s.responseAtLocked(idx)
	r.computeInfer.add(infer)
	r.computeOutput.add(output)
	r.success.add(infer + output)
	s.mu.Unlock()
}

// unaryResponseLocked records response "0" of a unary backend from the
// phases it stamped: produced at the start of the output phase, as Triton
// times it.
func (s *modelStats) unaryResponseLocked(t *inference.Timing) {
	infer := t.ComputeOutputStart.Sub(t.ComputeStart)
	output := t.ComputeEnd.Sub(t.ComputeOutputStart)
	r := s.responseAtLocked(0)
	r.computeInfer.add(infer)
	r.computeOutput.add(output)
	r.success.add(infer + output)
}

// responseFailed records a request that failed at response index idx after
// it started executing.
func (s *modelStats) responseFailed(idx int, d time.Duration) {
	s.mu.Lock()
	r := s.responseAtLocked(idx)
	r.computeInfer.add(d)
	r.fail.add(d)
	s.mu.Unlock()
}

// emptyResponse records a final flag that came without a response, at the
// index a response would have had.
func (s *modelStats) emptyResponse(idx int, d time.Duration) {
	s.mu.Lock()
	s.responseAtLocked(idx).empty.add(d)
	s.mu.Unlock()
}

// responseCancelled records a request cancelled before its response idx.
func (s *modelStats) responseCancelled(idx int, d time.Duration) {
	s.mu.Lock()
	s.responseAtLocked(idx).cancel.add(d)
	s.mu.Unlock()
}

func (s *modelStats) responseAtLocked(idx int) *responseStats {
	if idx < len(responseKeys) {
		return s.responseLocked(responseKeys[idx])
	}
	return s.responseLocked(strconv.Itoa(idx))
}

// responseKeys are the first response indexes as map keys, made once.
var responseKeys = func() []string {
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = strconv.Itoa(i)
	}
	return keys
}()

func (s *modelStats) responseLocked(key string) *responseStats {
	r := s.responses[key]
	if r == nil {
		r = &responseStats{}
		s.responses[key] = r
	}
	return r
}

// failureReason classifies a failed request for the failure counter's
// reason label.
func failureReason(err error) string {
	switch inference.CodeOf(err) {
	case inference.CodeCancelled:
		return FailureCanceled
	case inference.CodeUnavailable, inference.CodeResourceExhausted:
		return FailureRejected
	default:
		return FailureBackend
	}
}

func (s *modelStats) snapshot(name string, version int64) *inferencepb.ModelStatistics {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &inferencepb.ModelStatistics{
		Name:           name,
		Version:        strconv.FormatInt(version, 10),
		InferenceCount: s.inferenceCount,
		ExecutionCount: s.executionCount,
		InferenceStats: &inferencepb.InferStatistics{
			Success:       s.success.proto(),
			Fail:          s.fail.proto(),
			Queue:         s.queue.proto(),
			ComputeInput:  s.computeInput.proto(),
			ComputeInfer:  s.computeInfer.proto(),
			ComputeOutput: s.computeOutput.proto(),
			CacheHit:      s.cacheHit.proto(),
			CacheMiss:     s.cacheMiss.proto(),
		},
		ResponseStats: make(map[string]*inferencepb.InferResponseStatistics, len(s.responses)),
	}
	if !s.lastInference.IsZero() {
		out.LastInference = uint64(s.lastInference.UnixMilli())
	}
	for k, r := range s.responses {
		out.ResponseStats[k] = r.proto()
	}
	sizes := make([]uint64, 0, len(s.batches))
	for size := range s.batches {
		sizes = append(sizes, size)
	}
	sort.Slice(sizes, func(i, j int) bool { return sizes[i] < sizes[j] })
	for _, size := range sizes {
		b := s.batches[size]
		out.BatchStats = append(out.BatchStats, &inferencepb.InferBatchStatistics{
			BatchSize:     size,
			ComputeInput:  b.input.proto(),
			ComputeInfer:  b.infer.proto(),
			ComputeOutput: b.output.proto(),
		})
	}
	return out
}
