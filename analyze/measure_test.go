package analyze

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind, except the
// process-wide ones fasthttp starts for the HTTP front end of
// TestHTTPSweep (its worker pool's cleaner and the Date header clock).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
	)
}

func durations(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{nil, 50, 0},
		{durations(7), 1, 7 * time.Millisecond},
		{durations(7), 100, 7 * time.Millisecond},
		{durations(1, 2), 50, 1 * time.Millisecond},
		{durations(1, 2), 51, 2 * time.Millisecond},
		{durations(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{durations(1, 2, 3, 4), 75, 3 * time.Millisecond},
		{durations(1, 2, 3, 4), 99, 4 * time.Millisecond},
		// Nearest rank: p95 of 1..100 is 95, not 96 by rounding error.
		{hundred, 95, 95 * time.Millisecond},
		{hundred, 99, 99 * time.Millisecond},
		{hundred, 99.5, 100 * time.Millisecond},
		{hundred, 50, 50 * time.Millisecond},
		{hundred, 0.5, 1 * time.Millisecond},
	} {
		if got := percentile(tc.sorted, tc.p); got != tc.want {
			t.Errorf("percentile(%d values, %g) = %v, want %v", len(tc.sorted), tc.p, got, tc.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	got := summarize(durations(1, 1, 2, 4, 12))
	want := Latency{P50: 2, P95: 12, P99: 12, Mean: 4, Max: 12}
	if got != want {
		t.Errorf("summarize = %+v, want %+v", got, want)
	}
	if got := summarize(nil); got != (Latency{}) {
		t.Errorf("summarize(nil) = %+v", got)
	}
}

// TestMeasureClosedLoop drives a caller that answers in exactly 1 ms:
// each of 4 clients completes one request per millisecond, and the
// window counts those that complete within it, ends included.
func TestMeasureClosedLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var inFlight, most atomic.Int32
		call := func(ctx context.Context) error {
			n := inFlight.Add(1)
			for {
				if m := most.Load(); n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			inFlight.Add(-1)
			return nil
		}
		start := time.Now()
		w := measure(t.Context(), call, 4, 100*time.Millisecond, time.Second)
		if w.requests != 4*1001 || w.errors != 0 || len(w.latencies) != w.requests {
			t.Errorf("requests %d, errors %d, latencies %d; want 4004, 0", w.requests, w.errors, len(w.latencies))
		}
		if got := most.Load(); got != 4 {
			t.Errorf("at most %d requests in flight, want 4", got)
		}
		if l := summarize(w.latencies); l.P50 != 1 || l.P99 != 1 || l.Max != 1 {
			t.Errorf("latency = %+v, want 1 ms throughout", l)
		}
		// No request starts after the window, so measure returns at its end.
		if d := time.Since(start); d != 1100*time.Millisecond {
			t.Errorf("measure took %v, want 1.1 s", d)
		}
	})
}

// TestMeasureExtendsShortWindows: a window that holds fewer than
// minWindowRequests requests grows a length at a time, with every client
// still sending, up to maxWindowLengths lengths.
func TestMeasureExtendsShortWindows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sleeper := func(d time.Duration) Caller {
			return func(context.Context) error { time.Sleep(d); return nil }
		}
		// 2 clients, 90 ms each: 10 requests in 500 ms, too few; 22 in 1 s.
		w := measure(t.Context(), sleeper(90*time.Millisecond), 2, 0, 500*time.Millisecond)
		if w.length != time.Second || w.requests != 22 {
			t.Errorf("window %v with %d requests, want 1 s with 22", w.length, w.requests)
		}
		// 700 ms each: the window stops growing at 5 s, with 7 requests;
		// measure returns when the one started at 4.9 s is answered.
		start := time.Now()
		w = measure(t.Context(), sleeper(700*time.Millisecond), 1, 0, time.Second)
		if w.length != maxWindowLengths*time.Second || w.requests != 7 {
			t.Errorf("window %v with %d requests, want %d s with 7", w.length, w.requests, maxWindowLengths)
		}
		if d := time.Since(start); d != 5600*time.Millisecond {
			t.Errorf("measure took %v, want 5.6 s", d)
		}
	})
}

// TestMeasureStopsClientsOnError: a client whose request fails stops, and
// the first failure is reported.
func TestMeasureStopsClientsOnError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		call := func(ctx context.Context) error {
			time.Sleep(time.Millisecond)
			if calls.Add(1) == 50 {
				return errors.New("boom")
			}
			return nil
		}
		w := measure(t.Context(), call, 2, 0, 100*time.Millisecond)
		if w.errors != 1 || w.firstError != "boom" {
			t.Errorf("errors %d (%q), want 1 boom", w.errors, w.firstError)
		}
		if w.requests < 100 || w.requests > 150 {
			t.Errorf("requests = %d, want the other client to go on (100..150)", w.requests)
		}
	})
}

// TestMeasureCancelled returns promptly when the context is done, without
// counting the cancelled requests as failures.
func TestMeasureCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		call := func(ctx context.Context) error {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Millisecond):
				return nil
			}
		}
		time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		w := measure(ctx, call, 3, 0, time.Hour)
		if d := time.Since(start); d > 51*time.Millisecond {
			t.Errorf("measure returned after %v, want at the cancel", d)
		}
		if w.errors != 0 {
			t.Errorf("errors = %d, want 0 for a cancel", w.errors)
		}
	})
}
