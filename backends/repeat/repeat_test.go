package repeat

import (
	"context"
	"encoding/binary"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/backends/backendtest"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// exampleConfig is model_repo_examples/repeat_int32's configuration.
func exampleConfig(t *testing.T) *inferencepb.ModelConfig {
	return backendtest.Config(t, "../../model_repo_examples/repeat_int32/config.pbtxt")
}

func newInstance(t *testing.T, cfg *inferencepb.ModelConfig) backends.Instance {
	return backendtest.Instance(t, Backend{}, cfg)
}

func closeInstance(t *testing.T, inst backends.Instance) { backendtest.Close(t, inst) }

func u32(vs ...uint32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

// request builds a repeat_int32 request; delays are in milliseconds.
func request(in []int32, delay []uint32, wait uint32) *inference.Request {
	return &inference.Request{ModelName: "repeat_int32", Inputs: []inference.Tensor{
		{Name: "IN", DataType: inference.Int32, Shape: []int64{int64(len(in))}, Data: backendtest.Int32s(in...)},
		{Name: "DELAY", DataType: inference.Uint32, Shape: []int64{int64(len(delay))}, Data: u32(delay...)},
		{Name: "WAIT", DataType: inference.Uint32, Shape: []int64{1}, Data: u32(wait)},
	}}
}

// event is one call on a recorder.
// checkStream checks that events are len(in) responses with OUT = in[k],
// IDX = k, sent at the given times, then the final flag alone.
func checkStream(t *testing.T, events []backendtest.Event, in []int32, at []time.Duration, finalAt time.Duration) {
	t.Helper()
	if len(events) != len(in)+1 {
		t.Fatalf("got %d calls, want %d responses and the final flag: %+v", len(events), len(in), events)
	}
	for k, e := range events[:len(in)] {
		if e.Final || e.Resp == nil {
			t.Fatalf("call %d = %+v, want a response without the final flag", k, e)
		}
		out, idx := e.Resp.Output("OUT"), e.Resp.Output("IDX")
		if out == nil || idx == nil {
			t.Fatalf("response %d lacks OUT or IDX: %+v", k, e.Resp.Outputs)
		}
		if out.DataType != inference.Int32 || len(out.Shape) != 1 || out.Shape[0] != 1 || string(out.Data) != string(backendtest.Int32s(in[k])) {
			t.Errorf("response %d OUT = %+v, want INT32 [1] %d", k, out, in[k])
		}
		if idx.DataType != inference.Uint32 || len(idx.Shape) != 1 || idx.Shape[0] != 1 || string(idx.Data) != string(u32(uint32(k))) {
			t.Errorf("response %d IDX = %+v, want UINT32 [1] %d", k, idx, k)
		}
		if at != nil && e.At != at[k] {
			t.Errorf("response %d sent at %v, want %v", k, e.At, at[k])
		}
	}
	last := events[len(in)]
	if !last.Final || last.Resp != nil || last.Err != nil {
		t.Errorf("last call = %+v, want the final flag alone", last)
	}
	if finalAt >= 0 && last.At != finalAt {
		t.Errorf("final flag at %v, want %v", last.At, finalAt)
	}
}

func TestRegistered(t *testing.T) {
	if b, ok := backends.Lookup(Name); !ok || b == nil {
		t.Fatal("repeat backend not registered")
	}
}

func TestCollectExample(t *testing.T) {
	inst := newInstance(t, exampleConfig(t))
	defer closeInstance(t, inst)
	in := []int32{100, 101, 102, -7}
	all, err := backendtest.Collect(context.Background(), inst, []*inference.Request{request(in, []uint32{0, 0, 0, 0}, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || len(all[0]) != len(in) {
		t.Fatalf("responses = %v, want %d", all, len(in))
	}
	for k, resp := range all[0] {
		if got := resp.Output("OUT"); got == nil || string(got.Data) != string(backendtest.Int32s(in[k])) {
			t.Errorf("response %d OUT = %+v, want %d", k, got, in[k])
		}
		if got := resp.Output("IDX"); got == nil || string(got.Data) != string(u32(uint32(k))) {
			t.Errorf("response %d IDX = %+v, want %d", k, got, k)
		}
	}
}

// TestDelaysAndWait follows Triton's example: responses come DELAY[i]
// after one another, and Execute returns after WAIT while the rest of the
// stream goes on.
func TestDelaysAndWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inst := newInstance(t, exampleConfig(t))
		defer closeInstance(t, inst)
		in := []int32{4, 2, 0, 1}
		req := request(in, []uint32{1, 2, 3, 4}, 5)
		rec := backendtest.NewRecorder(t, req)
		if err := inst.Execute(context.Background(), []*inference.Request{req}); err != nil {
			t.Fatal(err)
		}
		if got := rec.Since(); got != 5*time.Millisecond {
			t.Errorf("Execute returned after %v, want WAIT = 5ms", got)
		}
		if n := len(rec.Events()); n != 2 {
			t.Errorf("%d calls when Execute returned, want the responses at 1ms and 3ms", n)
		}
		<-rec.Finished
		ms := time.Millisecond
		checkStream(t, rec.Events(), in, []time.Duration{1 * ms, 3 * ms, 6 * ms, 10 * ms}, 10*ms)
	})
}

// TestWaitOutlastsStream: with WAIT longer than the sum of DELAY the
// request has had its final flag before Execute returns.
func TestWaitOutlastsStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inst := newInstance(t, exampleConfig(t))
		defer closeInstance(t, inst)
		req := request([]int32{9, 8}, []uint32{10, 10}, 100)
		rec := backendtest.NewRecorder(t, req)
		if err := inst.Execute(context.Background(), []*inference.Request{req}); err != nil {
			t.Fatal(err)
		}
		if got := rec.Since(); got != 100*time.Millisecond {
			t.Errorf("Execute returned after %v, want 100ms", got)
		}
		select {
		case <-rec.Finished:
		default:
			t.Fatal("no final flag when Execute returned")
		}
		checkStream(t, rec.Events(), []int32{9, 8}, []time.Duration{10 * time.Millisecond, 20 * time.Millisecond}, 20*time.Millisecond)
	})
}

// TestRequestsInterleave: one instance streams two requests at once when
// WAIT releases them early.
func TestRequestsInterleave(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inst := newInstance(t, exampleConfig(t))
		defer closeInstance(t, inst)
		a, b := request([]int32{1, 2}, []uint32{10, 10}, 0), request([]int32{3, 4}, []uint32{5, 10}, 0)
		ra, rb := backendtest.NewRecorder(t, a), backendtest.NewRecorder(t, b)
		for _, r := range []*inference.Request{a, b} {
			if err := inst.Execute(context.Background(), []*inference.Request{r}); err != nil {
				t.Fatal(err)
			}
		}
		<-ra.Finished
		<-rb.Finished
		ms := time.Millisecond
		checkStream(t, ra.Events(), []int32{1, 2}, []time.Duration{10 * ms, 20 * ms}, 20*ms)
		checkStream(t, rb.Events(), []int32{3, 4}, []time.Duration{5 * ms, 15 * ms}, 15*ms)
	})
}

func TestEmptyInputSendsFinalFlagOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inst := newInstance(t, exampleConfig(t))
		defer closeInstance(t, inst)
		req := request(nil, nil, 0)
		rec := backendtest.NewRecorder(t, req)
		if err := inst.Execute(context.Background(), []*inference.Request{req}); err != nil {
			t.Fatal(err)
		}
		<-rec.Finished
		checkStream(t, rec.Events(), nil, nil, 0)
	})
}

func TestDelayLengthMismatchFails(t *testing.T) {
	inst := newInstance(t, exampleConfig(t))
	defer closeInstance(t, inst)
	for name, req := range map[string]*inference.Request{
		"shorter": request([]int32{1, 2, 3}, []uint32{0, 0}, 0),
		"longer":  request([]int32{1}, []uint32{0, 0}, 0),
	} {
		all, err := backendtest.Collect(context.Background(), inst, []*inference.Request{req})
		if inference.CodeOf(err) != inference.CodeInvalidArg || !strings.Contains(err.Error(), "IN") || !strings.Contains(err.Error(), "DELAY") {
			t.Errorf("%s: err = %v, want invalid argument naming IN and DELAY", name, err)
		}
		if len(all[0]) != 0 {
			t.Errorf("%s: %d responses, want none", name, len(all[0]))
		}
	}
}

// TestCancelStopsAtSendError: once Send reports the request cancelled the
// stream stops, and the request still gets its final flag.
func TestCancelStopsAtSendError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inst := newInstance(t, exampleConfig(t))
		defer closeInstance(t, inst)
		req := request([]int32{1, 2, 3, 4, 5}, []uint32{1, 1, 1, 1, 1}, 0)
		rec := backendtest.NewRecorder(t, req)
		rec.CancelAfter, rec.SendErrorOnly = 2, true
		if err := inst.Execute(context.Background(), []*inference.Request{req}); err != nil {
			t.Fatal(err)
		}
		<-rec.Finished
		checkStream(t, rec.Events(), []int32{1, 2}, nil, 2*time.Millisecond)
	})
}

// TestCancelDuringDelay: a request cancelled while the backend waits gets
// no further response, only its final flag.
func TestCancelDuringDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inst := newInstance(t, exampleConfig(t))
		defer closeInstance(t, inst)
		req := request([]int32{1, 2, 3}, []uint32{10, 10, 10}, 0)
		rec := backendtest.NewRecorder(t, req)
		if err := inst.Execute(context.Background(), []*inference.Request{req}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(15 * time.Millisecond) // virtual: between responses 1 and 2
		rec.Cancel()
		<-rec.Finished
		checkStream(t, rec.Events(), []int32{1}, nil, 20*time.Millisecond)
	})
}

// TestExecuteReturnsOnCancel: Execute does not sit out WAIT once its
// context ends; the stream itself answers to the request's own
// cancellation.
func TestExecuteReturnsOnCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inst := newInstance(t, exampleConfig(t))
		defer closeInstance(t, inst)
		req := request([]int32{1}, []uint32{1}, 60_000)
		rec := backendtest.NewRecorder(t, req)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Millisecond)
		defer cancel()
		if err := inst.Execute(ctx, []*inference.Request{req}); err != nil {
			t.Fatal(err)
		}
		if got := rec.Since(); got != 3*time.Millisecond {
			t.Errorf("Execute returned after %v, want 3ms", got)
		}
		<-rec.Finished
		checkStream(t, rec.Events(), []int32{1}, nil, time.Millisecond)
	})
}

// TestCloseStopsStreams: Close fails the requests still streaming, waits
// for their goroutines, ends a running WAIT, and refuses later batches.
func TestCloseStopsStreams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inst := newInstance(t, exampleConfig(t))
		hour := uint32(time.Hour / time.Millisecond)
		a := request([]int32{1, 2}, []uint32{1, hour}, 0)
		b := request([]int32{3}, []uint32{hour}, hour)
		ra, rb := backendtest.NewRecorder(t, a), backendtest.NewRecorder(t, b)
		if err := inst.Execute(context.Background(), []*inference.Request{a}); err != nil {
			t.Fatal(err)
		}
		executed := make(chan error)
		go func() { executed <- inst.Execute(context.Background(), []*inference.Request{b}) }()
		time.Sleep(time.Second)
		synctest.Wait()
		closeInstance(t, inst)
		if err := <-executed; err != nil {
			t.Errorf("Execute during Close: %v", err)
		}
		if got := ra.Since(); got != time.Second {
			t.Errorf("Close took until %v", got)
		}
		for name, rec := range map[string]*backendtest.Recorder{"a": ra, "b": rb} {
			select {
			case <-rec.Finished:
			default:
				t.Fatalf("%s: no final flag after Close", name)
			}
			ev := rec.Events()
			last := ev[len(ev)-1]
			if inference.CodeOf(last.Err) != inference.CodeUnavailable {
				t.Errorf("%s: ended with %+v, want an UNAVAILABLE failure", name, last)
			}
		}
		if n := len(ra.Events()); n != 2 {
			t.Errorf("a: %d calls, want its first response and the failure", n)
		}
		later := request([]int32{1}, []uint32{0}, 0)
		rl := backendtest.NewRecorder(t, later)
		if err := inst.Execute(context.Background(), []*inference.Request{later}); inference.CodeOf(err) != inference.CodeUnavailable {
			t.Errorf("Execute after Close = %v, want UNAVAILABLE", err)
		}
		if len(rl.Events()) != 0 {
			t.Error("a request refused by a closed instance got answers from it")
		}
		closeInstance(t, inst) // a second Close is harmless
	})
}

// TestInputsCopied: the stream reads its own copy of the inputs, not the
// request's buffers, which the caller may reuse once Execute returned.
func TestInputsCopied(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inst := newInstance(t, exampleConfig(t))
		defer closeInstance(t, inst)
		req := request([]int32{5, 6}, []uint32{1, 1}, 0)
		rec := backendtest.NewRecorder(t, req)
		if err := inst.Execute(context.Background(), []*inference.Request{req}); err != nil {
			t.Fatal(err)
		}
		for i := range req.Inputs {
			clear(req.Inputs[i].Data)
		}
		<-rec.Finished
		checkStream(t, rec.Events(), []int32{5, 6}, nil, 2*time.Millisecond)
	})
}

func TestOtherFixedWidthType(t *testing.T) {
	cfg := exampleConfig(t)
	cfg.Input[0].DataType = inferencepb.DataType_TYPE_FP64
	cfg.Output[0].DataType = inferencepb.DataType_TYPE_FP64
	inst := newInstance(t, cfg)
	defer closeInstance(t, inst)
	data := []byte("0123456789abcdef")
	req := request(nil, []uint32{0, 0}, 0)
	req.Inputs[0] = inference.Tensor{Name: "IN", DataType: inference.FP64, Shape: []int64{2}, Data: data}
	all, err := backendtest.Collect(context.Background(), inst, []*inference.Request{req})
	if err != nil || len(all[0]) != 2 {
		t.Fatalf("Collect: %v, %v", all, err)
	}
	for k, resp := range all[0] {
		if out := resp.Output("OUT"); out.DataType != inference.FP64 || string(out.Data) != string(data[8*k:8*k+8]) {
			t.Errorf("response %d OUT = %+v", k, out)
		}
	}
}

func TestLoadRejectsBadConfig(t *testing.T) {
	for name, tc := range map[string]struct {
		edit func(*inferencepb.ModelConfig)
		want string // in the error text
	}{
		"not decoupled":     {func(c *inferencepb.ModelConfig) { c.ModelTransactionPolicy = nil }, "decoupled"},
		"decoupled false":   {func(c *inferencepb.ModelConfig) { c.ModelTransactionPolicy.Decoupled = false }, "decoupled"},
		"batching":          {func(c *inferencepb.ModelConfig) { c.MaxBatchSize = 8 }, "max_batch_size"},
		"no WAIT":           {func(c *inferencepb.ModelConfig) { c.Input = c.Input[:2] }, "inputs"},
		"extra output":      {func(c *inferencepb.ModelConfig) { c.Output = append(c.Output, &inferencepb.ModelOutput{Name: "X"}) }, "outputs"},
		"renamed IN":        {func(c *inferencepb.ModelConfig) { c.Input[0].Name = "INPUT0" }, "'IN'"},
		"renamed IDX":       {func(c *inferencepb.ModelConfig) { c.Output[1].Name = "INDEX" }, "'IDX'"},
		"IN BYTES":          {func(c *inferencepb.ModelConfig) { c.Input[0].DataType = inferencepb.DataType_TYPE_STRING }, "'IN'"},
		"IN matrix":         {func(c *inferencepb.ModelConfig) { c.Input[0].Dims = []int64{-1, 2}; c.Input[1].Dims = []int64{-1, 2} }, "'IN'"},
		"DELAY INT32":       {func(c *inferencepb.ModelConfig) { c.Input[1].DataType = inferencepb.DataType_TYPE_INT32 }, "'DELAY'"},
		"DELAY dims":        {func(c *inferencepb.ModelConfig) { c.Input[1].Dims = []int64{4} }, "'DELAY'"},
		"WAIT dims":         {func(c *inferencepb.ModelConfig) { c.Input[2].Dims = []int64{2} }, "'WAIT'"},
		"OUT type":          {func(c *inferencepb.ModelConfig) { c.Output[0].DataType = inferencepb.DataType_TYPE_INT64 }, "'OUT'"},
		"OUT dims":          {func(c *inferencepb.ModelConfig) { c.Output[0].Dims = []int64{-1} }, "'OUT'"},
		"IDX type":          {func(c *inferencepb.ModelConfig) { c.Output[1].DataType = inferencepb.DataType_TYPE_INT32 }, "'IDX'"},
		"input named twice": {func(c *inferencepb.ModelConfig) { c.Input[2] = proto.Clone(c.Input[1]).(*inferencepb.ModelInput) }, "'WAIT'"},
	} {
		cfg := exampleConfig(t)
		tc.edit(cfg)
		_, err := Backend{}.Load(context.Background(), backends.ModelSpec{Name: "repeat_int32", Config: cfg})
		if inference.CodeOf(err) != inference.CodeInvalidArg || !strings.Contains(err.Error(), "repeat_int32") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want invalid argument naming the model and %s", name, err, tc.want)
		}
	}
}
