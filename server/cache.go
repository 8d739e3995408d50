package server

import (
	"context"
	"time"

	"github.com/nereid-project/nereid/cache"
	"github.com/nereid-project/nereid/inference"
)

// infer runs a checked request: from the response cache when the model
// uses one and holds the answer, else through the scheduler (storing the
// answer on its way out). The cache keeps every output the model produced;
// the core's sink selects the requested ones. It returns once the request
// has executed; its responses go through the request's sender.
func (lm *loadedModel) infer(ctx context.Context, req *inference.Request) error {
	if lm.cache == nil {
		return lm.sched.Infer(ctx, req)
	}
	start := time.Now()
	key := cache.KeyOf(lm.name, lm.version, req)
	if resp, ok := lm.cache.Get(key); ok {
		req.Timing.CacheHit = true
		req.Timing.CacheTime = time.Since(start)
		return req.Send(resp, true)
	}
	req.SetSender(&cacheFiller{ResponseSender: req.Sender(), lm: lm, req: req, key: key, lookup: time.Since(start)})
	return lm.sched.Infer(ctx, req)
}

// cacheFiller stores a computed response in the cache before passing it on
// (the response cache is for models that are not decoupled: one response,
// sent before Execute returns).
type cacheFiller struct {
	inference.ResponseSender
	lm     *loadedModel
	req    *inference.Request
	key    cache.Key
	lookup time.Duration
}

func (c *cacheFiller) Send(resp *inference.Response, final bool) error {
	if resp != nil && final {
		insert := time.Now()
		c.lm.cache.Put(c.key, resp) // a response larger than the cache is not kept
		c.req.Timing.CacheMiss = true
		c.req.Timing.CacheTime = c.lookup + time.Since(insert)
		if m, ok := c.lm.stats.metrics.(CacheMetrics); ok {
			m.CacheMiss(c.req.Timing.CacheTime)
		}
	}
	return c.ResponseSender.Send(resp, final)
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
