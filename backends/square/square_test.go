package square

import (
	"context"
	"encoding/binary"
	"slices"
	"strings"
	"testing"
	"testing/synctest"

	"go.uber.org/goleak"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/backends/backendtest"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// exampleConfig is model_repo_examples/square_int32's configuration.
func exampleConfig(t *testing.T) *inferencepb.ModelConfig {
	return backendtest.Config(t, "../../model_repo_examples/square_int32/config.pbtxt")
}

func newInstance(t *testing.T, cfg *inferencepb.ModelConfig) backends.Instance {
	return backendtest.Instance(t, Backend{}, cfg)
}

func closeInstance(t *testing.T, inst backends.Instance) { backendtest.Close(t, inst) }

func i32(v int32) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(v)) }

func request(n int32, shape ...int64) *inference.Request {
	if shape == nil {
		shape = []int64{1}
	}
	return &inference.Request{ModelName: "square_int32", Inputs: []inference.Tensor{
		{Name: "IN", DataType: inference.Int32, Shape: shape, Data: i32(n)},
	}}
}

// event is one call on a recorder.
// checkStream checks that events are count responses with OUT = [n] of
// the given shape, then the final flag alone.
func checkStream(t *testing.T, events []backendtest.Event, count int, n int32, shape []int64) {
	t.Helper()
	if len(events) != count+1 {
		t.Fatalf("got %d calls, want %d responses and the final flag: %+v", len(events), count, events)
	}
	for k, e := range events[:count] {
		if e.Final || e.Resp == nil || len(e.Resp.Outputs) != 1 {
			t.Fatalf("call %d = %+v, want a response with one output, without the final flag", k, e)
		}
		out := e.Resp.Outputs[0]
		if out.Name != "OUT" || out.DataType != inference.Int32 || !slices.Equal(out.Shape, shape) || string(out.Data) != string(i32(n)) {
			t.Errorf("response %d = %+v, want OUT INT32 %v = %d", k, out, shape, n)
		}
	}
	if last := events[count]; !last.Final || last.Resp != nil || last.Err != nil {
		t.Errorf("last call = %+v, want the final flag alone", last)
	}
}

func TestRegistered(t *testing.T) {
	if b, ok := backends.Lookup(Name); !ok || b == nil {
		t.Fatal("square backend not registered")
	}
}

func TestSendsNResponses(t *testing.T) {
	inst := newInstance(t, exampleConfig(t))
	defer closeInstance(t, inst)
	for _, n := range []int32{0, 1, 4, 100} {
		req := request(n)
		rec := backendtest.NewRecorder(t, req)
		if err := inst.Execute(context.Background(), []*inference.Request{req}); err != nil {
			t.Fatal(err)
		}
		<-rec.Finished
		checkStream(t, rec.Events(), int(n), n, []int64{1})
	}
}

func TestCollectBatch(t *testing.T) {
	inst := newInstance(t, exampleConfig(t))
	defer closeInstance(t, inst)
	all, err := backendtest.Collect(context.Background(), inst, []*inference.Request{request(2), request(0), request(3)})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{2, 0, 3} {
		if len(all[i]) != want {
			t.Errorf("request %d: %d responses, want %d", i, len(all[i]), want)
		}
		for _, resp := range all[i] {
			if string(resp.Output("OUT").Data) != string(i32(int32(want))) {
				t.Errorf("request %d: OUT = %v, want %d", i, resp.Output("OUT").Data, want)
			}
		}
	}
}

func TestBadRequestsFail(t *testing.T) {
	inst := newInstance(t, exampleConfig(t))
	defer closeInstance(t, inst)
	for name, req := range map[string]*inference.Request{
		"negative":  request(-1),
		"min int32": request(-1 << 31),
		"no IN":     {ModelName: "square_int32"},
		"shape":     request(2, 2),
	} {
		rec := backendtest.NewRecorder(t, req)
		if err := inst.Execute(context.Background(), []*inference.Request{req}); err != nil {
			t.Fatal(err)
		}
		<-rec.Finished
		ev := rec.Events()
		if len(ev) != 1 || inference.CodeOf(ev[0].Err) != inference.CodeInvalidArg || !strings.Contains(ev[0].Err.Error(), "'IN'") {
			t.Errorf("%s: calls %+v, want one invalid-argument failure naming IN", name, ev)
		}
	}
}

func TestBatchingModel(t *testing.T) {
	cfg := exampleConfig(t)
	cfg.MaxBatchSize = 4
	inst := newInstance(t, cfg)
	defer closeInstance(t, inst)
	req := request(2, 1, 1)
	rec := backendtest.NewRecorder(t, req)
	if err := inst.Execute(context.Background(), []*inference.Request{req}); err != nil {
		t.Fatal(err)
	}
	<-rec.Finished
	checkStream(t, rec.Events(), 2, 2, []int64{1, 1})

	two := request(2, 2, 1) // two batch elements in one request
	rec = backendtest.NewRecorder(t, two)
	if err := inst.Execute(context.Background(), []*inference.Request{two}); err != nil {
		t.Fatal(err)
	}
	<-rec.Finished
	if ev := rec.Events(); len(ev) != 1 || inference.CodeOf(ev[0].Err) != inference.CodeInvalidArg {
		t.Errorf("batch of 2 in one request: %+v, want an invalid-argument failure", ev)
	}
}

// TestCancelMidStream: once the request is cancelled the stream stops, and
// the request still gets its final flag.
func TestCancelMidStream(t *testing.T) {
	inst := newInstance(t, exampleConfig(t))
	defer closeInstance(t, inst)
	req := request(1000)
	rec := backendtest.NewRecorder(t, req)
	rec.CancelAfter = 3
	if err := inst.Execute(context.Background(), []*inference.Request{req}); err != nil {
		t.Fatal(err)
	}
	<-rec.Finished
	checkStream(t, rec.Events(), 3, 1000, []int64{1})
}

// TestCloseWaitsForStreams: Close stops a stream whose client reads
// slowly once its Send returns, fails the request, waits for the
// goroutine, and makes later batches fail.
func TestCloseWaitsForStreams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inst := newInstance(t, exampleConfig(t))
		req := request(5)
		rec := backendtest.NewRecorder(t, req)
		rec.Gate = make(chan struct{})
		if err := inst.Execute(context.Background(), []*inference.Request{req}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // the stream waits in its first Send
		closed := make(chan struct{})
		go func() {
			closeInstance(t, inst)
			close(closed)
		}()
		synctest.Wait()
		select {
		case <-closed:
			t.Fatal("Close returned while a stream was still in Send")
		default:
		}
		close(rec.Gate)
		<-closed
		ev := rec.Events()
		if len(ev) != 2 || ev[0].Resp == nil || inference.CodeOf(ev[1].Err) != inference.CodeUnavailable {
			t.Errorf("calls %+v, want the response in flight, then an UNAVAILABLE failure", ev)
		}
		later := request(1)
		rl := backendtest.NewRecorder(t, later)
		if err := inst.Execute(context.Background(), []*inference.Request{later}); inference.CodeOf(err) != inference.CodeUnavailable {
			t.Errorf("Execute after Close = %v, want UNAVAILABLE", err)
		}
		if len(rl.Events()) != 0 {
			t.Error("a request refused by a closed instance got answers from it")
		}
	})
}

func TestLoadRejectsBadConfig(t *testing.T) {
	for name, tc := range map[string]struct {
		edit func(*inferencepb.ModelConfig)
		want string // in the error text
	}{
		"not decoupled":   {func(c *inferencepb.ModelConfig) { c.ModelTransactionPolicy = nil }, "decoupled"},
		"decoupled false": {func(c *inferencepb.ModelConfig) { c.ModelTransactionPolicy.Decoupled = false }, "decoupled"},
		"no input":        {func(c *inferencepb.ModelConfig) { c.Input = nil }, "inputs"},
		"two outputs":     {func(c *inferencepb.ModelConfig) { c.Output = append(c.Output, c.Output[0]) }, "outputs"},
		"renamed IN":      {func(c *inferencepb.ModelConfig) { c.Input[0].Name = "INPUT0" }, "'IN'"},
		"renamed OUT":     {func(c *inferencepb.ModelConfig) { c.Output[0].Name = "OUTPUT0" }, "'OUT'"},
		"IN INT64":        {func(c *inferencepb.ModelConfig) { c.Input[0].DataType = inferencepb.DataType_TYPE_INT64 }, "'IN'"},
		"IN dims":         {func(c *inferencepb.ModelConfig) { c.Input[0].Dims = []int64{-1} }, "'IN'"},
		"OUT FP32":        {func(c *inferencepb.ModelConfig) { c.Output[0].DataType = inferencepb.DataType_TYPE_FP32 }, "'OUT'"},
		"OUT dims":        {func(c *inferencepb.ModelConfig) { c.Output[0].Dims = []int64{1, 1} }, "'OUT'"},
	} {
		cfg := exampleConfig(t)
		tc.edit(cfg)
		_, err := Backend{}.Load(context.Background(), backends.ModelSpec{Name: "square_int32", Config: cfg})
		if inference.CodeOf(err) != inference.CodeInvalidArg || !strings.Contains(err.Error(), "square_int32") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want invalid argument naming the model and %s", name, err, tc.want)
		}
	}
}
