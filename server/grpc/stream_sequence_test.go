package grpcfront

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

// TestStreamRunsSequencesInOrder: requests of one sequence reach the core
// one after the other in stream order, while requests of other sequences
// and without a sequence still run concurrently.
func TestStreamRunsSequencesInOrder(t *testing.T) {
	var (
		mu      sync.Mutex
		running = map[string]int{}
		order   = map[string][]string{}
		bad     []string
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
		mu.Unlock()
		time.Sleep(time.Millisecond) // a later request would overtake an earlier one here
		mu.Lock()
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
	const n = 30
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
