package server

import (
	"context"
	"time"

	"github.com/nereid-project/nereid/cache"
	"github.com/nereid-project/nereid/inference"
)

// infer runs a checked request: from the response cache when the model
// uses one and holds the answer, else through the scheduler (storing the
// answer on the way back). The cache keeps every output the model produced;
// finish selects the requested ones.
func (lm *loadedModel) infer(ctx context.Context, req *inference.Request) (*inference.Response, error) {
	if lm.cache == nil {
		return lm.sched.Infer(ctx, req)
	}
	start := time.Now()
	key := cache.KeyOf(lm.name, lm.version, req)
	if resp, ok := lm.cache.Get(key); ok {
		req.Timing.CacheHit = true
		req.Timing.CacheTime = time.Since(start)
		return resp, nil
	}
	lookup := time.Since(start)
	resp, err := lm.sched.Infer(ctx, req)
	if err != nil {
		return nil, err
	}
	insert := time.Now()
	lm.cache.Put(key, resp) // a response larger than the cache is not kept
	req.Timing.CacheMiss = true
	req.Timing.CacheTime = lookup + time.Since(insert)
	if m, ok := lm.stats.metrics.(CacheMetrics); ok {
		m.CacheMiss(req.Timing.CacheTime)
	}
	return resp, nil
}

// CacheMetrics is implemented by model metrics that count response cache
// hits and misses (Triton's nv_cache_* per-model series). It is optional:
// the statistics extension counts them either way.
type CacheMetrics interface {
	// CacheHit records a request answered from the cache: its duration,
	// and the lookup time. It is a successful request but no inference.
	CacheHit(request, lookup time.Duration)
	// CacheMiss records a request the cache did not hold: the lookup plus
	// insertion time. The request is also recorded as a Success.
	CacheMiss(d time.Duration)
}

// cachedSuccess records a request answered from the response cache as
// Triton does: a success with its request duration and the cache lookup,
// but no queue or compute time and no inference or execution.
func (s *modelStats) cachedSuccess(request, lookup time.Duration) {
	s.mu.Lock()
	s.success.add(request)
	// The queue and compute counts stay equal to the success count.
	s.queue.add(0)
	s.computeInput.add(0)
	s.computeInfer.add(0)
	s.computeOutput.add(0)
	s.cacheHit.add(lookup)
	s.mu.Unlock()
	if m, ok := s.metrics.(CacheMetrics); ok {
		m.CacheHit(request, lookup)
	}
}
