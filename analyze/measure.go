package analyze

import (
	"context"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Caller sends one inference request and waits for its response. It is
// called from many goroutines at once and must return promptly once ctx
// is done.
type Caller func(ctx context.Context) error

// The measurement window is extended, a window's length at a time, until
// it holds minWindowRequests completed requests (so that the percentiles
// rest on some), to at most maxWindowLengths times its length: a slow
// model at low concurrency, or a machine that stalls the process for a
// while, is then still measured.
const (
	minWindowRequests = 20
	maxWindowLengths  = 5
)

// window is the result of one closed-loop measurement.
type window struct {
	requests   int             // completed within the window, without error
	errors     int             // failed requests (each stops its client)
	firstError string          // the first failure's text
	latencies  []time.Duration // of the completed requests, sorted
	length     time.Duration   // of the window, extensions included
}

// completion is one answered request.
type completion struct {
	end     time.Time
	latency time.Duration
}

// measure runs a closed loop of concurrency clients, each sending its
// next request as soon as the previous one is answered, for warmup and
// then for length (extended as minWindowRequests says). The requests that
// complete within the measurement window count, whenever they started; a
// client that gets an error stops (the configuration is then reported as
// failing, not measured at a lower load). After the window no new request
// starts; measure returns once the last one in flight is answered.
func measure(ctx context.Context, call Caller, concurrency int, warmup, length time.Duration) window {
	from := time.Now().Add(warmup)
	var (
		counted atomic.Int64 // requests completed since from
		failed  atomic.Int64 // clients stopped by an error

		mu sync.Mutex // guards the fields below
		// to is the end of the window: no request starts after it.
		to = from.Add(length)
		// decided is closed once the coordinator has decided whether to
		// extend the window past to: a client past the deadline waits
		// for it, so that an extension finds every client still running.
		decided = make(chan struct{})
	)
	deadline := func() (time.Time, chan struct{}) {
		mu.Lock()
		defer mu.Unlock()
		return to, decided
	}
	type client struct {
		done  []completion
		err   error
		errAt time.Time
	}
	clients := make([]client, concurrency)
	var wg sync.WaitGroup
	for i := range clients {
		c := &clients[i]
		wg.Go(func() {
			for ctx.Err() == nil {
				if end, ch := deadline(); !time.Now().Before(end) {
					select {
					case <-ch:
					case <-ctx.Done():
						return
					}
					if end, _ = deadline(); !time.Now().Before(end) {
						return
					}
				}
				start := time.Now()
				if err := call(ctx); err != nil {
					if ctx.Err() == nil {
						c.err, c.errAt = err, time.Now()
						failed.Add(1)
					}
					return
				}
				end := time.Now()
				if !end.Before(from) {
					c.done = append(c.done, completion{end, end.Sub(start)})
					counted.Add(1)
				}
			}
		})
	}
	// Sleep to the end of the window, and on while it holds too few.
	for n := 1; ; n++ {
		end, _ := deadline()
		t := time.NewTimer(time.Until(end))
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		extend := ctx.Err() == nil && counted.Load() < minWindowRequests && n < maxWindowLengths && failed.Load() < int64(concurrency)
		mu.Lock()
		close(decided)
		if extend {
			to, decided = to.Add(length), make(chan struct{})
		}
		mu.Unlock()
		if !extend {
			break
		}
	}
	wg.Wait()
	w := window{length: to.Sub(from)}
	var firstAt time.Time
	for _, c := range clients {
		for _, d := range c.done {
			if !d.end.After(to) {
				w.latencies = append(w.latencies, d.latency)
			}
		}
		if c.err != nil {
			w.errors++
			if firstAt.IsZero() || c.errAt.Before(firstAt) {
				w.firstError, firstAt = c.err.Error(), c.errAt
			}
		}
	}
	w.requests = len(w.latencies)
	slices.Sort(w.latencies)
	return w
}

// Latency is a latency distribution in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	Mean float64 `json:"mean"`
	Max  float64 `json:"max"`
}

// summarize computes the percentiles of sorted latencies.
func summarize(sorted []time.Duration) Latency {
	if len(sorted) == 0 {
		return Latency{}
	}
	var sum time.Duration
	for _, d := range sorted {
		sum += d
	}
	return Latency{
		P50:  ms(percentile(sorted, 50)),
		P95:  ms(percentile(sorted, 95)),
		P99:  ms(percentile(sorted, 99)),
		Mean: ms(sum / time.Duration(len(sorted))),
		Max:  ms(sorted[len(sorted)-1]),
	}
}

// percentile is the nearest-rank percentile p (0 < p ≤ 100) of sorted: the
// smallest value that at least p % of the values do not exceed. It is a
// value that was observed, never an interpolation, as perf_analyzer
// reports it.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	// The tolerance keeps 95 % of 100 at rank 95, not 96 by rounding.
	rank := int(math.Ceil(p/100*float64(len(sorted)) - 1e-9))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
