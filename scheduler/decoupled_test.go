package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
)

var errBoom = errors.New("boom")

// streamer is a decoupled instance. Execute starts one goroutine per
// request and returns, after the longest "hold_ms" of the batch when one is
// set; the goroutine sends the request's "n" responses (a request
// parameter), one every "gap_ms" (default: gap) of virtual time, each with
// the request's ID and its index as parameter "idx", then the final flag
// alone. A request with parameter "fail" makes Execute fail its batch:
// before anything starts, or, with "fail" = "answered", after sending that
// request its final response (ID, idx 0) before returning.
type streamer struct {
	gap time.Duration
	wg  sync.WaitGroup // the requests' goroutines

	mu    sync.Mutex // guards execs
	execs []execRecord
}

var _ backends.Instance = (*streamer)(nil)

// execRecord is one call of Execute: the batch's request IDs and when.
type execRecord struct {
	ids []string
	at  time.Time
}

func millisParam(p inference.Parameters, key string, def time.Duration) time.Duration {
	if v, ok := p.Int(key); ok {
		return time.Duration(v) * time.Millisecond
	}
	return def
}

func (s *streamer) Execute(ctx context.Context, batch []*inference.Request) error {
	ids := make([]string, len(batch))
	var hold time.Duration
	var fail, answered []*inference.Request
	for i, r := range batch {
		ids[i] = r.ID
		hold = max(hold, millisParam(r.Parameters, "hold_ms", 0))
		if _, ok := r.Parameters["fail"]; ok {
			fail = append(fail, r)
			if mode, _ := r.Parameters.String("fail"); mode == "answered" {
				answered = append(answered, r)
			}
		}
	}
	s.mu.Lock()
	s.execs = append(s.execs, execRecord{ids: ids, at: time.Now()})
	s.mu.Unlock()
	if len(fail) > 0 {
		for _, r := range answered {
			_ = r.Send(&inference.Response{ID: r.ID, Parameters: inference.Parameters{"idx": int64(0)}}, true)
		}
		return errBoom
	}
	for _, r := range batch {
		n, _ := r.Parameters.Int("n")
		gap := millisParam(r.Parameters, "gap_ms", s.gap)
		id := r.ID // the goroutine reads nothing of r once Execute returned
		s.wg.Go(func() { respondStream(r, id, int(n), gap) })
	}
	if hold > 0 {
		select {
		case <-time.After(hold):
		case <-ctx.Done():
		}
	}
	return nil
}

func respondStream(r *inference.Request, id string, n int, gap time.Duration) {
	for k := range n {
		time.Sleep(gap)
		if err := r.Send(&inference.Response{ID: id, Parameters: inference.Parameters{"idx": int64(k)}}, false); err != nil {
			break
		}
	}
	_ = r.Send(nil, true)
}

func (s *streamer) executions() []execRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.execs)
}

// streamReq is a request for a streamer: n responses and the given extra
// parameters.
func streamReq(id string, n int, params inference.Parameters) *inference.Request {
	p := inference.Parameters{"n": int64(n)}
	for k, v := range params {
		p[k] = v
	}
	return &inference.Request{
		ID: id, ModelName: "stream", BatchSize: 1, Parameters: p,
		Inputs: []inference.Tensor{{Name: "IN", DataType: inference.FP32, Shape: []int64{1, 4}}},
	}
}

// checkStream checks that c had its final flag after exactly n responses of
// its own request, indexed 0..n-1 in order, without failure or breach.
func checkStream(t *testing.T, c *collector, n int) {
	t.Helper()
	if !c.isFinal() {
		t.Errorf("request %s: no final flag", c.id)
	}
	if err := c.check(); err != nil {
		t.Error(err)
	}
	resps, err := c.responses()
	if err != nil {
		t.Errorf("request %s failed: %v", c.id, err)
	}
	if len(resps) != n {
		t.Errorf("request %s: %d responses, want %d", c.id, len(resps), n)
	}
	for k, r := range resps {
		if idx, _ := r.Parameters.Int("idx"); r.ID != c.id || idx != int64(k) {
			t.Errorf("request %s: response %d is %s#%d", c.id, k, r.ID, idx)
		}
	}
}

// TestDirectDecoupled: Infer returns once Execute has returned, the
// responses keep coming afterwards, and the instance takes the next request
// while the first still streams.
func TestDirectDecoupled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &streamer{gap: 10 * time.Millisecond}
		rec := &recorder{}
		d := NewDirect([]backends.Instance{st}, rec)
		defer d.Close()
		ctx := context.Background()
		j := &journal{}
		start := time.Now()

		a := streamReq("a", 3, inference.Parameters{"hold_ms": int64(5)})
		ca := collect(ctx, a, j)
		if err := d.Infer(ctx, a); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took != 5*time.Millisecond {
			t.Errorf("Infer returned after %v, want when Execute returned (5ms)", took)
		}
		b := streamReq("b", 2, nil)
		cb := collect(ctx, b, j)
		if err := d.Infer(ctx, b); err != nil {
			t.Fatal(err)
		}
		if resps, _ := ca.responses(); ca.isFinal() || len(resps) != 0 {
			t.Errorf("the second request ran only after the first had %d responses (final %v)", len(resps), ca.isFinal())
		}
		ca.wait()
		cb.wait()
		checkStream(t, ca, 3)
		checkStream(t, cb, 2)

		execs := st.executions()
		if len(execs) != 2 || execs[1].at.Sub(start) != 5*time.Millisecond {
			t.Errorf("executions %+v, want b's at 5ms, as soon as a's Execute returned", execs)
		}
		// Both streams ran side by side: a's at 10, 20, 30ms, b's at 15, 25ms.
		var got []string
		for _, e := range j.entries() {
			got = append(got, fmt.Sprintf("%s@%v", e.req, e.at.Sub(start)))
		}
		want := []string{"a@10ms", "b@15ms", "a@20ms", "b@25ms", "b@25ms", "a@30ms", "a@30ms"}
		if !slices.Equal(got, want) {
			t.Errorf("deliveries %v, want %v", got, want)
		}
		if len(rec.executed) != 2 || rec.executed[0].ComputeInfer != 5*time.Millisecond {
			t.Errorf("recorded executions %+v, want two, the first of 5ms", rec.executed)
		}
		st.wg.Wait()
	})
}

// TestDynamicDecoupledBatch: each request of one batch gets its own stream.
func TestDynamicDecoupledBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &streamer{gap: time.Millisecond}
		d := NewDynamic([]backends.Instance{st}, DynamicOptions{MaxBatchSize: 4, MaxQueueDelay: 10 * time.Millisecond}, nil)
		defer d.Close()
		ctx := context.Background()
		counts := map[string]int{"a": 3, "b": 0, "c": 2}
		cs := map[string]*collector{}
		var wg sync.WaitGroup
		for _, id := range []string{"a", "b", "c"} {
			r := streamReq(id, counts[id], nil)
			c := collect(ctx, r, nil)
			cs[id] = c
			wg.Go(func() {
				if _, err := c.run(ctx, d); err != nil {
					t.Errorf("%s: %v", id, err)
				}
			})
			synctest.Wait()
		}
		wg.Wait()
		for id, c := range cs {
			checkStream(t, c, counts[id])
		}
		if execs := st.executions(); len(execs) != 1 || !slices.Equal(execs[0].ids, []string{"a", "b", "c"}) {
			t.Errorf("executions %+v, want one batch [a b c]", execs)
		}
		st.wg.Wait()
	})
}

// TestDynamicPreserveOrderingDecoupled: with preserve_ordering a later
// request's responses wait for the earlier request's final flag, then
// come in order; without it they flow at once.
func TestDynamicPreserveOrderingDecoupled(t *testing.T) {
	for _, preserve := range []bool{true, false} {
		bubble(t, fmt.Sprintf("preserve_ordering=%v", preserve), func(t *testing.T) {
			st := &streamer{}
			d := NewDynamic([]backends.Instance{st, st}, DynamicOptions{MaxBatchSize: 1, PreserveOrdering: preserve}, nil)
			defer d.Close()
			ctx := context.Background()
			j := &journal{}
			start := time.Now()
			// a streams slowly on one instance (10, 20, 30ms), b fast on the
			// other (1, 2ms).
			a := streamReq("a", 3, inference.Parameters{"gap_ms": int64(10)})
			b := streamReq("b", 2, inference.Parameters{"gap_ms": int64(1)})
			ca, cb := collect(ctx, a, j), collect(ctx, b, j)
			returned := make(chan time.Duration, 2)
			for _, r := range []*inference.Request{a, b} {
				go func() {
					if err := d.Infer(ctx, r); err != nil {
						t.Errorf("%s: %v", r.ID, err)
					}
					returned <- time.Since(start)
				}()
				synctest.Wait()
			}
			for range 2 {
				if at := <-returned; at != 0 {
					t.Errorf("preserve_ordering=%v: Infer returned after %v, want as soon as Execute returned", preserve, at)
				}
			}
			time.Sleep(20 * time.Millisecond)
			synctest.Wait()
			if resps, _ := cb.responses(); preserve != (len(resps) == 0) || preserve == cb.isFinal() {
				t.Errorf("preserve_ordering=%v: before a's final, b had %d responses (final %v)", preserve, len(resps), cb.isFinal())
			}
			ca.wait()
			cb.wait()
			checkStream(t, ca, 3)
			checkStream(t, cb, 2)
			var got []string
			for _, e := range j.entries() {
				got = append(got, fmt.Sprintf("%s@%v", e.req, e.at.Sub(start)))
			}
			want := []string{"a@10ms", "a@20ms", "a@30ms", "a@30ms", "b@30ms", "b@30ms", "b@30ms"}
			if !preserve {
				want = []string{"b@1ms", "b@2ms", "b@2ms", "a@10ms", "a@20ms", "a@30ms", "a@30ms"}
			}
			if !slices.Equal(got, want) {
				t.Errorf("preserve_ordering=%v: deliveries %v, want %v", preserve, got, want)
			}
			st.wg.Wait()
		})
	}
}

// TestDynamicPreserveOrderingSkipsFailed: a request that leaves the batcher
// with an error (dropped while queued, or its execution failed) has had its
// turn: the next request's responses flow once the earlier one's final flag
// is through.
func TestDynamicPreserveOrderingSkipsFailed(t *testing.T) {
	for _, tc := range []struct {
		name      string
		instances int
		b         inference.Parameters
		cancelB   bool
	}{
		{name: "cancelled while queued", instances: 1, cancelB: true},
		{name: "execution failed", instances: 2, b: inference.Parameters{"fail": true}},
	} {
		bubble(t, tc.name, func(t *testing.T) {
			st := &streamer{gap: time.Millisecond}
			insts := make([]backends.Instance, tc.instances)
			for i := range insts {
				insts[i] = st
			}
			d := NewDynamic(insts, DynamicOptions{MaxBatchSize: 1, PreserveOrdering: true}, nil)
			defer d.Close()
			ctx := context.Background()
			j := &journal{}
			start := time.Now()
			// a holds its instance 20ms and streams at 15 and 30ms.
			a := streamReq("a", 2, inference.Parameters{"gap_ms": int64(15), "hold_ms": int64(20)})
			b := streamReq("b", 1, tc.b)
			c := streamReq("c", 2, nil)
			ctxB, cancelB := context.WithCancel(ctx)
			defer cancelB()
			ca, cb, cc := collect(ctx, a, j), collect(ctxB, b, j), collect(ctx, c, j)
			errs := map[string]chan error{}
			for _, x := range []struct {
				ctx context.Context //nolint:containedctx // a table of test cases
				r   *inference.Request
				c   *collector
			}{{ctx, a, ca}, {ctxB, b, cb}, {ctx, c, cc}} {
				e := make(chan error, 1)
				errs[x.r.ID] = e
				go func() {
					err := d.Infer(x.ctx, x.r)
					if err != nil {
						x.c.Fail(err) // as the core does
					}
					e <- err
				}()
				synctest.Wait()
			}
			if tc.cancelB {
				time.Sleep(5 * time.Millisecond)
				cancelB()
			}
			errB := <-errs["b"]
			if tc.cancelB && inference.CodeOf(errB) != inference.CodeCancelled || !tc.cancelB && !errors.Is(errB, errBoom) {
				t.Fatalf("%s: b returned %v", tc.name, errB)
			}
			for _, id := range []string{"a", "c"} {
				if err := <-errs[id]; err != nil {
					t.Fatalf("%s: %s: %v", tc.name, id, err)
				}
			}
			ca.wait()
			cc.wait()
			checkStream(t, ca, 2)
			checkStream(t, cc, 2)
			if resps, err := cb.responses(); err == nil || len(resps) != 0 {
				t.Errorf("%s: b ended with %d responses and error %v, want a failure alone", tc.name, len(resps), err)
			}
			for _, e := range st.executions() {
				if tc.cancelB && slices.Contains(e.ids, "b") {
					t.Errorf("%s: the cancelled request ran", tc.name)
				}
			}
			// c's responses come after a's final flag, all of them.
			var got []string
			for _, e := range j.entries() {
				if e.req != "b" {
					got = append(got, fmt.Sprintf("%s@%v", e.req, e.at.Sub(start)))
				}
			}
			want := []string{"a@15ms", "a@30ms", "a@30ms", "c@30ms", "c@30ms", "c@30ms"}
			if !slices.Equal(got, want) {
				t.Errorf("%s: deliveries %v, want %v", tc.name, got, want)
			}
			st.wg.Wait()
		})
	}
}

// TestPreserveOrderingLeavesFailedRequestAlone: a request that leaves the
// batcher with an error while an earlier one still streams is failed by the
// core as soon as Infer returns, and its response path given back (the
// server recycles its sink for the next request). The batcher must not
// reach that path again when the request's turn comes. A request that had
// its final response before its execution failed is not failed (the
// Instance contract) and gets that response.
func TestPreserveOrderingLeavesFailedRequestAlone(t *testing.T) {
	for _, tc := range []struct {
		name      string
		instances int
		b         inference.Parameters
		cancelB   bool
		answered  bool
	}{
		{name: "cancelled while queued", instances: 1, cancelB: true},
		{name: "execution failed", instances: 2, b: inference.Parameters{"fail": true}},
		{name: "answered, then its execution failed", instances: 2, b: inference.Parameters{"fail": "answered"}, answered: true},
	} {
		bubble(t, tc.name, func(t *testing.T) {
			st := &streamer{}
			insts := make([]backends.Instance, tc.instances)
			for i := range insts {
				insts[i] = st
			}
			d := NewDynamic(insts, DynamicOptions{MaxBatchSize: 1, PreserveOrdering: true}, nil)
			defer d.Close()
			ctx := context.Background()
			a := streamReq("a", 2, inference.Parameters{"gap_ms": int64(10), "hold_ms": int64(20)})
			var wg sync.WaitGroup
			wg.Go(func() {
				if _, err := inferStream(ctx, d, a); err != nil {
					t.Errorf("a: %v", err)
				}
			})
			synctest.Wait()
			ctxB, cancelB := context.WithCancel(ctx)
			defer cancelB()
			b := streamReq("b", 1, tc.b)
			cb := collect(ctxB, b, nil)
			if tc.cancelB {
				time.AfterFunc(5*time.Millisecond, cancelB)
			}
			resps, err := cb.run(ctxB, d)
			switch {
			case tc.answered && (err != nil || len(resps) != 1):
				t.Errorf("%s: b ended with %d responses and error %v, want the final response it had before the execution failed", tc.name, len(resps), err)
			case !tc.answered && err == nil:
				t.Fatalf("%s: b succeeded", tc.name)
			}
			// b is over for the core; a is still streaming.
			wg.Wait()
			if err := cb.check(); err != nil {
				t.Errorf("%s: the batcher used b's response path after Infer had failed it: %v", tc.name, err)
			}
			st.wg.Wait()
		})
	}
}

// flaky fails its first execution, after a partial response to the first
// request of the batch (as a decoupled model may have sent), and answers
// like a unary model from then on: one final response per request, with
// the request's ID.
type flaky struct {
	mu      sync.Mutex // guards the fields below
	calls   int
	batches [][]string
}

var _ backends.Instance = (*flaky)(nil)

func (f *flaky) Execute(_ context.Context, batch []*inference.Request) error {
	ids := make([]string, 0, len(batch))
	var rows []*inference.Request
	for _, r := range batch {
		if r.ID != "" { // not a sequence batch's padding row
			ids = append(ids, r.ID)
			rows = append(rows, r)
		}
	}
	f.mu.Lock()
	f.calls++
	first := f.calls == 1
	f.batches = append(f.batches, ids)
	f.mu.Unlock()
	if first {
		_ = rows[0].Send(&inference.Response{ID: rows[0].ID, Parameters: inference.Parameters{"partial": true}}, false)
		return errBoom
	}
	for _, r := range batch {
		_ = r.Send(&inference.Response{ID: r.ID}, true)
	}
	return nil
}

// TestExecuteErrorFailsBatch: an execution error fails every request of the
// batch, after what the instance had sent, and the scheduler serves the
// next requests.
func TestExecuteErrorFailsBatch(t *testing.T) {
	seqOpts := func(strategy SequenceStrategy) SequenceOptions {
		o := accumulatorOptions(2)
		o.Strategy = strategy
		o.MaxQueueDelay = 100 * time.Millisecond
		o.MinimumSlotUtilization = 1 // direct: wait for both sequences
		return o
	}
	for _, tc := range []struct {
		name  string
		new   func(backends.Instance) (inferer, func())
		batch []*inference.Request
		next  []*inference.Request
	}{
		{
			name: "direct",
			new: func(i backends.Instance) (inferer, func()) {
				d := NewDirect([]backends.Instance{i}, nil)
				return d, d.Close
			},
			batch: []*inference.Request{req("a", 1, nil)},
			next:  []*inference.Request{req("next", 1, nil)},
		},
		{
			name: "dynamic",
			new: func(i backends.Instance) (inferer, func()) {
				d := NewDynamic([]backends.Instance{i}, DynamicOptions{MaxBatchSize: 3, MaxQueueDelay: time.Second}, nil)
				return d, d.Close
			},
			batch: []*inference.Request{req("a", 1, nil), req("b", 1, nil), req("c", 1, nil)},
			next:  []*inference.Request{req("next", 1, nil)},
		},
		{
			name: "dynamic preserve_ordering",
			new: func(i backends.Instance) (inferer, func()) {
				d := NewDynamic([]backends.Instance{i}, DynamicOptions{MaxBatchSize: 3, MaxQueueDelay: time.Second, PreserveOrdering: true}, nil)
				return d, d.Close
			},
			batch: []*inference.Request{req("a", 1, nil), req("b", 1, nil), req("c", 1, nil)},
			next:  []*inference.Request{req("next", 1, nil)},
		},
		{
			name: "sequence direct",
			new: func(i backends.Instance) (inferer, func()) {
				s := NewSequence([]backends.Instance{i}, seqOpts(SequenceDirect), nil)
				return s, s.Close
			},
			batch: []*inference.Request{seqReq(uint64(1), true, false, 1), seqReq(uint64(2), true, false, 2)},
			next:  []*inference.Request{seqReq(uint64(1), false, true, 3), seqReq(uint64(2), false, true, 4)},
		},
		{
			name: "sequence oldest",
			new: func(i backends.Instance) (inferer, func()) {
				s := NewSequence([]backends.Instance{i}, seqOpts(SequenceOldest), nil)
				return s, s.Close
			},
			batch: []*inference.Request{seqReq(uint64(1), true, false, 1), seqReq(uint64(2), true, false, 2)},
			next:  []*inference.Request{seqReq(uint64(1), false, true, 3), seqReq(uint64(2), false, true, 4)},
		},
	} {
		bubble(t, tc.name, func(t *testing.T) {
			f := &flaky{}
			s, closeFn := tc.new(f)
			defer closeFn()
			ctx := context.Background()
			var wg sync.WaitGroup
			cs := make([]*collector, len(tc.batch))
			for i, r := range tc.batch {
				cs[i] = collect(ctx, r, nil)
				wg.Go(func() { _, _ = cs[i].run(ctx, s) })
				synctest.Wait()
			}
			wg.Wait()
			want := make([]string, len(tc.batch))
			for i, r := range tc.batch {
				want[i] = r.ID
			}
			f.mu.Lock()
			calls, batches := f.calls, slices.Clone(f.batches)
			f.mu.Unlock()
			if calls != 1 || !slices.Equal(batches[0], want) {
				t.Fatalf("%s: executions %v, want one batch %v", tc.name, batches, want)
			}
			for i, c := range cs {
				resps, err := c.responses()
				if !errors.Is(err, errBoom) {
					t.Errorf("%s: request %s ended with %v, want the execution's error", tc.name, c.id, err)
				}
				if partial := len(resps) == 1 && resps[0].ID == c.id; partial != (i == 0) || len(resps) > 1 {
					t.Errorf("%s: request %s kept %d responses, want the partial one only on the first", tc.name, c.id, len(resps))
				}
				if err := c.check(); err != nil {
					t.Errorf("%s: %v", tc.name, err)
				}
			}
			for _, r := range tc.next {
				resp, err := infer(ctx, s, r)
				if err != nil {
					t.Fatalf("%s: %s after the failed batch: %v", tc.name, r.ID, err)
				}
				if resp.ID != r.ID {
					t.Errorf("%s: %s got the response of %s", tc.name, r.ID, resp.ID)
				}
			}
		})
	}
}

// TestExecuteErrorSparesAnsweredRequests: an execution error fails the
// requests of the batch that have not had their final flag; one that had
// it keeps its response.
func TestExecuteErrorSparesAnsweredRequests(t *testing.T) {
	for _, tc := range []struct {
		name string
		new  func(backends.Instance) (inferer, func())
		ids  []string
	}{
		{
			name: "direct",
			new: func(i backends.Instance) (inferer, func()) {
				d := NewDirect([]backends.Instance{i}, nil)
				return d, d.Close
			},
			ids: []string{"a"},
		},
		{
			name: "dynamic",
			new: func(i backends.Instance) (inferer, func()) {
				d := NewDynamic([]backends.Instance{i}, DynamicOptions{MaxBatchSize: 2, MaxQueueDelay: time.Second}, nil)
				return d, d.Close
			},
			ids: []string{"a", "b"},
		},
		{
			name: "dynamic preserve_ordering",
			new: func(i backends.Instance) (inferer, func()) {
				d := NewDynamic([]backends.Instance{i}, DynamicOptions{MaxBatchSize: 2, MaxQueueDelay: time.Second, PreserveOrdering: true}, nil)
				return d, d.Close
			},
			ids: []string{"b", "a"}, // the answered request second: its final is held for b's turn
		},
	} {
		bubble(t, tc.name, func(t *testing.T) {
			st := &streamer{}
			s, closeFn := tc.new(st)
			defer closeFn()
			ctx := context.Background()
			type result struct {
				resps []*inference.Response
				err   error
			}
			results := make([]result, len(tc.ids))
			var wg sync.WaitGroup
			for i, id := range tc.ids {
				var p inference.Parameters
				if id == "a" {
					p = inference.Parameters{"fail": "answered"}
				}
				r := streamReq(id, 0, p)
				wg.Go(func() {
					resps, err := inferStream(ctx, s, r)
					results[i] = result{resps, err}
				})
				synctest.Wait()
			}
			wg.Wait()
			for i, id := range tc.ids {
				got := results[i]
				switch {
				case id == "a" && (got.err != nil || len(got.resps) != 1 || got.resps[0].ID != "a"):
					t.Errorf("a, answered before the execution failed: %d responses, error %v; want its response", len(got.resps), got.err)
				case id != "a" && (!errors.Is(got.err, errBoom) || len(got.resps) != 0):
					t.Errorf("%s: %d responses, error %v; want the execution's error", id, len(got.resps), got.err)
				}
			}
			st.wg.Wait()
		})
	}
}
