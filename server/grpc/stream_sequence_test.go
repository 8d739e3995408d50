package grpcfront

import (
	"context"
	"strconv"
	"sync"
	"testing"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// TestStreamRunsSequencesInOrder: requests of one sequence reach the core
// one after the other in stream order, while requests of other sequences
// and without a sequence still run concurrently.
func TestStreamRunsSequencesInOrder(t *testing.T) {
	const n = 30
	var (
		mu      sync.Mutex
		running = map[string]int{}
		order   = map[string][]string{}
		bad     []string
		// lastFree is the highest index of a request without a sequence
		// that has reached the core; moved signals each change.
		lastFree = -1
		moved    = sync.NewCond(&mu)
	)
	core := &fakeCore{infer: func(ctx context.Context, req *inference.Request) (*inference.Response, error) {
		key := ""
		switch v := req.Parameters["sequence_id"].(type) {
		case int64:
			key = strconv.FormatInt(v, 10)
		case string:
			key = v
		}
		mu.Lock()
		running[key]++
		if key != "" && running[key] > 1 {
			bad = append(bad, req.ID)
		}
		order[key] = append(order[key], req.ID)
		i, _ := strconv.Atoi(req.ID)
		if key == "" {
			lastFree = max(lastFree, i)
			moved.Broadcast()
		} else {
			// Stay inside until a request sent after this one (one
			// without a sequence, which nothing holds back) has reached
			// the core: a later request of this sequence that did not
			// wait for this one would be caught running alongside it.
			for lastFree < i && nextFree(i) < n {
				moved.Wait()
			}
		}
		running[key]--
		mu.Unlock()
		return identity(req), nil
	}}
	c := start(t, core, Options{})
	s, err := c.infer.ModelStreamInfer(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	seqParam := func(i int) map[string]*inferencepb.InferParameter {
		switch i % 3 {
		case 0:
			return map[string]*inferencepb.InferParameter{"sequence_id": {ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: 7}}}
		case 1:
			return map[string]*inferencepb.InferParameter{"sequence_id": {ParameterChoice: &inferencepb.InferParameter_StringParam{StringParam: "abc"}}}
		}
		return nil
	}
	for i := range n {
		r := rawRequest(strconv.Itoa(i), uint32(i))
		r.Parameters = seqParam(i)
		if err := s.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	resps, err := recvAll(t, s)
	if err != nil || len(resps) != n {
		t.Fatalf("%d responses, error %v", len(resps), err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("requests %v ran while an earlier request of their sequence was running", bad)
	}
	for _, key := range []string{"7", "abc"} {
		for j, id := range order[key] {
			if want := strconv.Itoa(j*3 + map[string]int{"7": 0, "abc": 1}[key]); id != want {
				t.Fatalf("sequence %s: request %d was %s, want %s (%v)", key, j, id, want, order[key])
			}
		}
	}
}

// nextFree is the index of the first request after i that has no
// sequence (every third one).
func nextFree(i int) int { return i + 2 - i%3 }
