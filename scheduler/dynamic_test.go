package scheduler

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
)

// sleeper is a unary instance that takes a fixed (virtual) time per batch
// and logs the ids of every batch it runs.
type sleeper struct {
	took time.Duration
	log  func(ids []string)
}

func (s *sleeper) ExecuteWithPhases(ctx context.Context, batch []*inference.Request) ([]*inference.Response, backends.Phases, error) {
	ids := make([]string, len(batch))
	for i, r := range batch {
		ids[i] = r.ID
	}
	s.log(ids)
	select {
	case <-time.After(s.took):
	case <-ctx.Done():
		return nil, backends.Phases{}, ctx.Err()
	}
	out := make([]*inference.Response, len(batch))
	for i, r := range batch {
		out[i] = &inference.Response{ID: r.ID}
	}
	return out, backends.Phases{}, nil
}

// harness runs a DynamicBatcher over n sleepers inside a synctest bubble.
type harness struct {
	t    *testing.T
	d    *DynamicBatcher
	mu   sync.Mutex // guards runs
	runs [][]string
	rec  *recorder
	wg   sync.WaitGroup

	resMu   sync.Mutex
	results map[string]error
	order   []string
}

func newHarness(t *testing.T, n int, took time.Duration, opts DynamicOptions) *harness {
	h := &harness{t: t, rec: &recorder{}, results: map[string]error{}}
	insts := make([]backends.Instance, n)
	for i := range insts {
		insts[i] = backends.Unary(&sleeper{took: took, log: func(ids []string) {
			h.mu.Lock()
			h.runs = append(h.runs, ids)
			h.mu.Unlock()
		}})
	}
	h.d = NewDynamic(insts, opts, h.rec)
	return h
}

func req(id string, batch int, params inference.Parameters) *inference.Request {
	return &inference.Request{
		ID: id, ModelName: "m", BatchSize: batch, Parameters: params,
		Inputs: []inference.Tensor{{Name: "IN", DataType: inference.FP32, Shape: []int64{int64(batch), 4}}},
	}
}

// send submits r on its own goroutine and records its outcome once its
// response has come; a successful request has its own response.
func (h *harness) send(ctx context.Context, r *inference.Request) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		resp, err := infer(ctx, h.d, r)
		if err == nil && resp.ID != r.ID {
			h.t.Errorf("request %s got the response of %s", r.ID, resp.ID)
		}
		h.resMu.Lock()
		h.results[r.ID] = err
		h.order = append(h.order, r.ID)
		h.resMu.Unlock()
	}()
}

func (h *harness) batches() [][]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.runs)
}

func (h *harness) finish() {
	h.wg.Wait()
	h.d.Close()
}

func (h *harness) err(id string) error {
	h.resMu.Lock()
	defer h.resMu.Unlock()
	err, ok := h.results[id]
	if !ok {
		h.t.Fatalf("request %s has not finished", id)
	}
	return err
}

func TestBatchFillsToMaxWithoutWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 1, time.Millisecond, DynamicOptions{MaxBatchSize: 4, MaxQueueDelay: time.Second})
		for _, id := range []string{"a", "b", "c", "d"} {
			h.send(context.Background(), req(id, 1, nil))
		}
		synctest.Wait()
		if got := h.batches(); len(got) != 1 || len(got[0]) != 4 {
			t.Fatalf("batches %v, want one batch of 4 before the delay", got)
		}
		h.finish()
		if n := len(h.rec.executed); n != 1 || h.rec.executed[0].BatchSize != 4 {
			t.Errorf("recorded executions %+v", h.rec.executed)
		}
	})
}

func TestPartialBatchWaitsForQueueDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 1, time.Millisecond, DynamicOptions{MaxBatchSize: 8, MaxQueueDelay: 100 * time.Millisecond})
		h.send(context.Background(), req("a", 1, nil))
		h.send(context.Background(), req("b", 2, nil))
		synctest.Wait()
		time.Sleep(99 * time.Millisecond)
		synctest.Wait()
		if got := h.batches(); len(got) != 0 {
			t.Fatalf("ran %v before the queue delay", got)
		}
		time.Sleep(2 * time.Millisecond)
		synctest.Wait()
		if got := h.batches(); len(got) != 1 || len(got[0]) != 2 {
			t.Fatalf("batches %v, want [a b] after the delay", got)
		}
		h.finish()
		if h.rec.executed[0].BatchSize != 3 {
			t.Errorf("batch size %d, want 3 (1 + 2)", h.rec.executed[0].BatchSize)
		}
	})
}

func TestPreferredBatchSizeSentAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 1, time.Millisecond, DynamicOptions{MaxBatchSize: 8, PreferredBatchSizes: []int{2}, MaxQueueDelay: time.Second})
		// Hold the instance so the three requests queue together.
		h.send(context.Background(), req("busy", 8, nil))
		synctest.Wait()
		for _, id := range []string{"a", "b", "c"} {
			h.send(context.Background(), req(id, 1, nil))
			synctest.Wait()
		}
		time.Sleep(time.Millisecond) // busy finishes
		synctest.Wait()
		got := h.batches()
		if len(got) != 2 || !slices.Equal(got[1], []string{"a", "b"}) {
			t.Fatalf("batches %v, want busy then the preferred [a b]", got)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got := h.batches(); len(got) != 3 || !slices.Equal(got[2], []string{"c"}) {
			t.Fatalf("batches %v, want c alone after the delay", got)
		}
		h.finish()
	})
}

func TestIncompatibleShapesAreNotBatched(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 1, time.Millisecond, DynamicOptions{MaxBatchSize: 8})
		h.send(context.Background(), req("busy", 1, nil))
		synctest.Wait()
		odd := req("odd", 1, nil)
		odd.Inputs[0].Shape = []int64{1, 5}
		h.send(context.Background(), req("a", 1, nil))
		synctest.Wait()
		h.send(context.Background(), odd)
		synctest.Wait()
		h.send(context.Background(), req("b", 1, nil))
		synctest.Wait()
		h.finish()
		got := h.batches()
		for _, b := range got {
			if slices.Contains(b, "odd") && len(b) != 1 {
				t.Fatalf("odd-shaped request batched with others: %v", got)
			}
		}
	})
}

func TestRaggedInputsBatchTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 1, time.Millisecond, DynamicOptions{MaxBatchSize: 8, MaxQueueDelay: time.Millisecond, RaggedInputs: map[string]bool{"IN": true}})
		odd := req("odd", 1, nil)
		odd.Inputs[0].Shape = []int64{1, 5}
		h.send(context.Background(), req("a", 1, nil))
		h.send(context.Background(), odd)
		synctest.Wait()
		time.Sleep(2 * time.Millisecond)
		h.finish()
		if got := h.batches(); len(got) != 1 || len(got[0]) != 2 {
			t.Fatalf("batches %v, want one ragged batch of 2", got)
		}
	})
}

func TestPriorityLevelsServeHighestFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 1, time.Millisecond, DynamicOptions{MaxBatchSize: 1, PriorityLevels: 2, DefaultPriority: 2})
		h.send(context.Background(), req("busy", 1, nil))
		synctest.Wait()
		h.send(context.Background(), req("low", 1, nil))
		synctest.Wait()
		h.send(context.Background(), req("high", 1, inference.Parameters{"priority": int64(1)}))
		synctest.Wait()
		h.finish()
		got := h.batches()
		if len(got) != 3 || got[1][0] != "high" || got[2][0] != "low" {
			t.Fatalf("batches %v, want busy, high, low", got)
		}
	})
}

func TestPriorityOutOfRange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 1, time.Millisecond, DynamicOptions{MaxBatchSize: 1, PriorityLevels: 2, DefaultPriority: 1})
		for _, p := range []any{int64(3), int64(-1), "high"} {
			_, err := infer(context.Background(), h.d, req("x", 1, inference.Parameters{"priority": p}))
			if inference.CodeOf(err) != inference.CodeInvalidArg {
				t.Errorf("priority %v: %v, want invalid argument", p, err)
			}
		}
		_, err := infer(context.Background(), h.d, req("t", 1, inference.Parameters{"timeout": "soon"}))
		if inference.CodeOf(err) != inference.CodeInvalidArg {
			t.Errorf("timeout string: %v, want invalid argument", err)
		}
		h.finish()
	})
}

func TestQueueFullIsUnavailable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 1, time.Second, DynamicOptions{MaxBatchSize: 1, DefaultPolicy: QueuePolicy{MaxQueueSize: 1}})
		h.send(context.Background(), req("busy", 1, nil))
		synctest.Wait()
		h.send(context.Background(), req("queued", 1, nil))
		synctest.Wait()
		_, err := infer(context.Background(), h.d, req("over", 1, nil))
		if inference.CodeOf(err) != inference.CodeUnavailable || !strings.Contains(err.Error(), "Exceeds maximum queue size") {
			t.Errorf("third request: %v, want UNAVAILABLE queue full", err)
		}
		h.finish()
		if h.err("queued") != nil {
			t.Errorf("queued request failed: %v", h.err("queued"))
		}
	})
}

func TestTimeoutReject(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 1, 50*time.Millisecond, DynamicOptions{MaxBatchSize: 1, DefaultPolicy: QueuePolicy{DefaultTimeout: 10 * time.Millisecond}})
		h.send(context.Background(), req("busy", 1, nil))
		synctest.Wait()
		h.send(context.Background(), req("late", 1, nil))
		synctest.Wait()
		time.Sleep(11 * time.Millisecond)
		synctest.Wait()
		if err := h.err("late"); inference.CodeOf(err) != inference.CodeUnavailable || !strings.Contains(err.Error(), "timeout") {
			t.Errorf("late: %v, want UNAVAILABLE timeout", err)
		}
		h.finish()
		if got := h.batches(); len(got) != 1 {
			t.Errorf("the timed-out request ran: %v", got)
		}
	})
}

func TestTimeoutOverrideAndDelayAction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := QueuePolicy{TimeoutAction: Delay, DefaultTimeout: time.Hour, AllowTimeoutOverride: true}
		h := newHarness(t, 1, 50*time.Millisecond, DynamicOptions{MaxBatchSize: 1, DefaultPolicy: policy})
		h.send(context.Background(), req("busy", 1, nil))
		synctest.Wait()
		// "hurried" asks for a 1 ms timeout: it expires first, and with
		// Delay it is served after the request that has not expired.
		h.send(context.Background(), req("hurried", 1, inference.Parameters{"timeout": int64(1000)}))
		synctest.Wait()
		h.send(context.Background(), req("patient", 1, nil))
		synctest.Wait()
		h.finish()
		got := h.batches()
		if len(got) != 3 || got[1][0] != "patient" || got[2][0] != "hurried" {
			t.Fatalf("batches %v, want busy, patient, hurried", got)
		}
		if h.err("hurried") != nil {
			t.Errorf("delayed request failed: %v", h.err("hurried"))
		}
	})
}

func TestCancelledWhileQueuedNeverRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 1, 50*time.Millisecond, DynamicOptions{MaxBatchSize: 1, PreserveOrdering: true})
		h.send(context.Background(), req("busy", 1, nil))
		synctest.Wait()
		ctx, cancel := context.WithCancel(context.Background())
		h.send(ctx, req("gone", 1, nil))
		synctest.Wait()
		h.send(context.Background(), req("after", 1, nil))
		synctest.Wait()
		cancel()
		synctest.Wait()
		h.finish()
		if err := h.err("gone"); inference.CodeOf(err) != inference.CodeCancelled {
			t.Errorf("gone: %v, want cancelled", err)
		}
		if err := h.err("after"); err != nil {
			t.Errorf("a cancelled request blocked the next one under preserve_ordering: %v", err)
		}
		for _, b := range h.batches() {
			if slices.Contains(b, "gone") {
				t.Fatalf("cancelled request ran: %v", h.batches())
			}
		}
	})
}

// varied is a unary instance whose execution time depends on the request id.
type varied struct{}

func (varied) ExecuteWithPhases(_ context.Context, batch []*inference.Request) ([]*inference.Response, backends.Phases, error) {
	if batch[0].ID == "slow" {
		time.Sleep(100 * time.Millisecond)
	}
	return []*inference.Response{{ID: batch[0].ID}}, backends.Phases{}, nil
}

func TestPreserveOrdering(t *testing.T) {
	for _, preserve := range []bool{true, false} {
		bubble(t, fmt.Sprintf("preserve_ordering=%v", preserve), func(t *testing.T) {
			d := NewDynamic([]backends.Instance{backends.Unary(varied{}), backends.Unary(varied{})}, DynamicOptions{MaxBatchSize: 1, PreserveOrdering: preserve}, nil)
			start := time.Now()
			var (
				wg       sync.WaitGroup
				fastDone time.Duration
			)
			for _, id := range []string{"slow", "fast"} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := infer(context.Background(), d, &inference.Request{ID: id, BatchSize: 1})
					if err != nil {
						t.Error(err)
					} else if resp.ID != id {
						t.Errorf("request %s got the response of %s", id, resp.ID)
					}
					if id == "fast" {
						fastDone = time.Since(start)
					}
				}()
				synctest.Wait()
			}
			wg.Wait()
			d.Close()
			// "fast" finishes executing at once on the second instance;
			// with preserve_ordering its response waits for "slow" (100 ms).
			if held := fastDone >= 100*time.Millisecond; held != preserve {
				t.Errorf("preserve_ordering=%v: the later request returned after %v", preserve, fastDone)
			}
		})
	}
}

func TestCloseFailsQueuedRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 1, time.Hour, DynamicOptions{MaxBatchSize: 1})
		ctx, cancel := context.WithCancel(context.Background())
		h.send(ctx, req("busy", 1, nil))
		synctest.Wait()
		h.send(context.Background(), req("queued", 1, nil))
		synctest.Wait()
		go func() {
			synctest.Wait()
			cancel() // let the running batch end so Close can return
		}()
		h.d.Close()
		h.wg.Wait()
		if err := h.err("queued"); inference.CodeOf(err) != inference.CodeUnavailable {
			t.Errorf("queued at Close: %v, want UNAVAILABLE", err)
		}
		if _, err := infer(context.Background(), h.d, req("new", 1, nil)); inference.CodeOf(err) != inference.CodeUnavailable {
			t.Errorf("after Close: %v", err)
		}
	})
}
