package server

import (
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nereid-project/nereid/proto/inferencepb"
	"github.com/nereid-project/nereid/scheduler"
)

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

// modelStats accumulates the statistics of one loaded model version. It
// implements scheduler.Recorder.
type modelStats struct {
	mu             sync.Mutex // guards the fields below
	lastInference  time.Time
	inferenceCount uint64
	executionCount uint64
	success, fail  duration
	queue          duration
	computeInput   duration
	computeInfer   duration
	computeOutput  duration
	batches        map[uint64]*batchStats
	pending        int
}

var _ scheduler.Recorder = (*modelStats)(nil)

func newModelStats() *modelStats {
	return &modelStats{batches: map[uint64]*batchStats{}}
}

func (s *modelStats) Queued(d time.Duration) {
	s.mu.Lock()
	s.queue.add(d)
	s.mu.Unlock()
}

func (s *modelStats) Pending(delta int) {
	s.mu.Lock()
	s.pending += delta
	s.mu.Unlock()
}

// Executed records one execution: its batch under batch_stats, and its
// compute durations once for every request it served, as Triton does.
func (s *modelStats) Executed(e scheduler.Execution) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.executionCount++
	s.inferenceCount += uint64(e.BatchSize)
	for range e.Requests {
		s.computeInput.add(e.ComputeInput)
		s.computeInfer.add(e.ComputeInfer)
		s.computeOutput.add(e.ComputeOut)
	}
	b := s.batches[uint64(e.BatchSize)]
	if b == nil {
		b = &batchStats{}
		s.batches[uint64(e.BatchSize)] = b
	}
	b.input.add(e.ComputeInput)
	b.infer.add(e.ComputeInfer)
	b.output.add(e.ComputeOut)
}

// finished records the end of one request, successful or not.
func (s *modelStats) finished(arrival, now time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok {
		s.success.add(now.Sub(arrival))
	} else {
		s.fail.add(now.Sub(arrival))
	}
	s.lastInference = now
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
			CacheHit:      duration{}.proto(),
			CacheMiss:     duration{}.proto(),
		},
		ResponseStats: map[string]*inferencepb.InferResponseStatistics{},
	}
	if !s.lastInference.IsZero() {
		out.LastInference = uint64(s.lastInference.UnixMilli())
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
