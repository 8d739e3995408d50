package scheduler

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"go.uber.org/goleak"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// gate is a unary instance whose Execute blocks until released, counting
// how many executions overlap.
type gate struct {
	release  chan struct{}
	running  *atomic.Int32
	maxAtAll *atomic.Int32
}

func (g *gate) ExecuteWithPhases(ctx context.Context, batch []*inference.Request) ([]*inference.Response, backends.Phases, error) {
	n := g.running.Add(1)
	defer g.running.Add(-1)
	for {
		m := g.maxAtAll.Load()
		if n <= m || g.maxAtAll.CompareAndSwap(m, n) {
			break
		}
	}
	select {
	case <-g.release:
	case <-ctx.Done():
		return nil, backends.Phases{}, ctx.Err()
	}
	out := make([]*inference.Response, len(batch))
	for i, r := range batch {
		out[i] = &inference.Response{ID: r.ID}
	}
	return out, backends.Phases{}, nil
}

type recorder struct {
	mu       sync.Mutex
	executed []Execution
	pending  int
	maxPend  int
}

func (r *recorder) Executed(e Execution) {
	r.mu.Lock()
	r.executed = append(r.executed, e)
	r.mu.Unlock()
}
func (r *recorder) Pending(d int) {
	r.mu.Lock()
	r.pending += d
	r.maxPend = max(r.maxPend, r.pending)
	r.mu.Unlock()
}

func TestDirectRunsOnePerInstance(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var running, maxSeen atomic.Int32
		release := make(chan struct{})
		inst := []*gate{{release, &running, &maxSeen}, {release, &running, &maxSeen}}
		rec := &recorder{}
		d := NewDirect([]backends.Instance{backends.Unary(inst[0]), backends.Unary(inst[1])}, rec)

		const n = 6
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			wg.Go(func() {
				resp, err := infer(context.Background(), d, &inference.Request{ID: "r", BatchSize: 1})
				if err == nil && resp.ID != "r" {
					t.Errorf("response %+v, want the request's", resp)
				}
				errs <- err
			})
		}
		// Every request is in: two run, four wait for an instance.
		synctest.Wait()
		rec.mu.Lock()
		pending := rec.pending
		rec.mu.Unlock()
		if got := running.Load(); got != 2 || pending != n-2 {
			t.Errorf("%d running and %d pending, want 2 and %d", got, pending, n-2)
		}
		// Release them one by one.
		for range n {
			release <- struct{}{}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if got := maxSeen.Load(); got > 2 {
			t.Errorf("%d executions overlapped on 2 instances", got)
		}
		if len(rec.executed) != n || rec.pending != 0 {
			t.Errorf("recorder: executed %d pending %d", len(rec.executed), rec.pending)
		}
	})
}

func TestDirectCancelWhileQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var running, maxSeen atomic.Int32
		release := make(chan struct{})
		d := NewDirect([]backends.Instance{backends.Unary(&gate{release, &running, &maxSeen})}, nil)

		busy := make(chan error, 1)
		go func() {
			_, err := infer(context.Background(), d, &inference.Request{ID: "busy"})
			busy <- err
		}()
		synctest.Wait()
		if running.Load() != 1 {
			t.Fatal("the first request is not running")
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := infer(ctx, d, &inference.Request{ID: "gone"}); inference.CodeOf(err) != inference.CodeCancelled {
			t.Errorf("queued request after cancel: %v, want cancelled", err)
		}
		release <- struct{}{}
		if err := <-busy; err != nil {
			t.Fatal(err)
		}
		d.Close()
		if _, err := infer(context.Background(), d, &inference.Request{ModelName: "m"}); inference.CodeOf(err) != inference.CodeUnavailable {
			t.Errorf("after Close: %v, want unavailable", err)
		}
	})
}
