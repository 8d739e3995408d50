package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The CUDA-over-HTTP test runs a fasthttp server: its worker-pool
		// cleaner notices Stop only after its idle period, its stackless
		// workers are a global pool, and it refreshes its Date header
		// forever.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreTopFunction("github.com/valyala/fasthttp/stackless.funcWorker"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
	)
}

// streamBackend is a decoupled test backend: for INPUT0 = n it sends n
// responses (OUTPUT0 = its index) from a goroutine of its own, then the
// final flag alone. The request parameter "mode" changes the ending:
// "with_last" puts the final flag on the last response, "after_final"
// sends one more response after the final flag, "no_final" stops without
// one until the instance closes, "fail" fails the request after the
// responses.
type streamBackend struct{}

func init() { backends.Register("stream_test", streamBackend{}) }

func (streamBackend) Load(context.Context, backends.ModelSpec) (backends.Model, error) {
	return streamModel{}, nil
}

type streamModel struct{}

func (streamModel) NewInstance(context.Context, backends.InstanceSpec) (backends.Instance, error) {
	return &streamInstance{stop: make(chan struct{})}, nil
}

type streamInstance struct {
	wg   sync.WaitGroup
	stop chan struct{}

	mu       sync.Mutex
	sendErrs []error // errors Send returned, for the tests to read
}

func (i *streamInstance) Execute(_ context.Context, batch []*inference.Request) error {
	for _, r := range batch {
		n := int(int32(binary.LittleEndian.Uint32(r.Input("INPUT0").Data)))
		mode, _ := r.Parameters.String("mode")
		sender := r.Sender() // the request itself is not touched after Execute
		i.wg.Go(func() { i.answer(sender, n, mode) })
	}
	return nil
}

func (i *streamInstance) answer(s inference.ResponseSender, n int, mode string) {
	for k := range n {
		resp := &inference.Response{Outputs: []inference.Tensor{{Name: "OUTPUT0", DataType: inference.Int32, Shape: []int64{1}, Data: int32s(int32(k))}}}
		last := mode == "with_last" && k == n-1
		if err := s.Send(resp, last); err != nil {
			i.record(err)
			_ = s.Send(nil, true)
			return
		}
		if last {
			return
		}
	}
	switch mode {
	case "after_final":
		_ = s.Send(nil, true)
		i.record(s.Send(&inference.Response{}, false))
	case "no_final":
		<-i.stop
		i.record(s.Send(nil, true))
	case "fail":
		s.Fail(inference.InvalidArg("the model refused the request"))
	default:
		_ = s.Send(nil, true)
	}
}

func (i *streamInstance) record(err error) {
	i.mu.Lock()
	i.sendErrs = append(i.sendErrs, err)
	i.mu.Unlock()
}

func (i *streamInstance) Close() error {
	close(i.stop)
	i.wg.Wait()
	return nil
}

const streamConfig = `
name: "stream"
backend: "stream_test"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
`

func newStreamServer(t *testing.T, log zerolog.Logger) (*Server, *streamInstance) {
	t.Helper()
	s, err := loadTestModel(t, LoaderOptions{}, "stream", streamConfig, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s.opts.Logger = log
	h, lm, err := s.acquire(context.Background(), "stream", "")
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	return s, lm.instances[0].(*streamInstance)
}

func streamRequest(n int32, mode string) *inference.Request {
	req := &inference.Request{ID: "r", ModelName: "stream", Inputs: []inference.Tensor{{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1}, Data: int32s(n)}}}
	if mode != "" {
		req.Parameters = inference.Parameters{"mode": mode}
	}
	return req
}

// received is what a consumer got from InferStream.
type received struct {
	values []int32 // OUTPUT0 of each response
	finals []bool
	nils   int // final flags without a response
}

func (r *received) out(resp *inference.Response, final bool) error {
	r.finals = append(r.finals, final)
	if resp == nil {
		r.nils++
		return nil
	}
	r.values = append(r.values, int32(binary.LittleEndian.Uint32(resp.Output("OUTPUT0").Data)))
	return nil
}

func TestInferStreamDeliversEveryResponseInOrder(t *testing.T) {
	s, _ := newStreamServer(t, zerolog.Nop())
	var got received
	if err := s.InferStream(context.Background(), streamRequest(3, ""), got.out); err != nil {
		t.Fatal(err)
	}
	if want := []int32{0, 1, 2}; !slices.Equal(got.values, want) || got.nils != 1 || !slices.Equal(got.finals, []bool{false, false, false, true}) {
		t.Fatalf("got %+v", got)
	}
	var last received
	if err := s.InferStream(context.Background(), streamRequest(2, "with_last"), last.out); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(last.values, []int32{0, 1}) || last.nils != 0 || !slices.Equal(last.finals, []bool{false, true}) {
		t.Fatalf("final on the last response: got %+v", last)
	}

	st, err := s.ModelStatistics(context.Background(), "stream", "")
	if err != nil {
		t.Fatal(err)
	}
	ms := st.ModelStats[0]
	if ms.InferenceStats.Success.Count != 2 || ms.ExecutionCount != 2 || ms.InferenceCount != 2 {
		t.Errorf("request statistics %v", ms)
	}
	rs := ms.ResponseStats
	if rs["0"].GetSuccess().GetCount() != 2 || rs["1"].GetSuccess().GetCount() != 2 || rs["2"].GetSuccess().GetCount() != 1 {
		t.Errorf("per-index successes %v", rs)
	}
	if rs["3"].GetEmptyResponse().GetCount() != 1 || rs["3"].GetSuccess().GetCount() != 0 {
		t.Errorf("the flags-only final of the first request: %v", rs["3"])
	}
}

func TestInferRefusesDecoupledModel(t *testing.T) {
	s, _ := newStreamServer(t, zerolog.Nop())
	_, err := s.Infer(context.Background(), streamRequest(1, ""))
	if inference.CodeOf(err) != inference.CodeUnsupported || !errors.Is(err, inference.ErrDecoupled) {
		t.Fatalf("Infer on a decoupled model: %v", err)
	}
}

func TestInferStreamZeroResponses(t *testing.T) {
	s, _ := newStreamServer(t, zerolog.Nop())
	var got received
	if err := s.InferStream(context.Background(), streamRequest(0, ""), got.out); err != nil {
		t.Fatal(err)
	}
	if len(got.values) != 0 || got.nils != 1 {
		t.Fatalf("got %+v", got)
	}
}

func TestInferStreamConsumerCancels(t *testing.T) {
	s, inst := newStreamServer(t, zerolog.Nop())
	n := 0
	err := s.InferStream(context.Background(), streamRequest(5, ""), func(resp *inference.Response, final bool) error {
		n++
		if n == 2 {
			return errors.New("client went away")
		}
		return nil
	})
	if inference.CodeOf(err) != inference.CodeCancelled {
		t.Fatalf("err = %v, want cancelled", err)
	}
	inst.wg.Wait()
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if len(inst.sendErrs) != 1 || inference.CodeOf(inst.sendErrs[0]) != inference.CodeCancelled {
		t.Errorf("the backend saw %v, want one cancellation from Send", inst.sendErrs)
	}
	st, _ := s.ModelStatistics(context.Background(), "stream", "")
	ms := st.ModelStats[0]
	if ms.InferenceStats.Fail.Count != 1 || ms.ResponseStats["2"].GetCancel().GetCount() != 1 {
		t.Errorf("statistics after a cancel: fail %v, response_stats %v", ms.InferenceStats.Fail, ms.ResponseStats)
	}
}

func TestInferStreamContextEndsWithoutFinal(t *testing.T) {
	s, inst := newStreamServer(t, zerolog.Nop())
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var got received
	err := s.InferStream(ctx, streamRequest(1, "no_final"), got.out)
	if inference.CodeOf(err) != inference.CodeCancelled || len(got.values) != 1 {
		t.Fatalf("err = %v after %+v, want cancelled after one response", err, got)
	}
	// The backend's late final flag is refused, not delivered.
	close(inst.stop)
	inst.wg.Wait()
	inst.stop = make(chan struct{}) // for Close at cleanup
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if len(inst.sendErrs) != 1 || inference.CodeOf(inst.sendErrs[0]) != inference.CodeCancelled {
		t.Errorf("late final: %v", inst.sendErrs)
	}
}

func TestInferStreamSendAfterFinalIsLoggedAndRefused(t *testing.T) {
	var logs bytes.Buffer
	s, inst := newStreamServer(t, zerolog.New(&logs))
	var got received
	if err := s.InferStream(context.Background(), streamRequest(1, "after_final"), got.out); err != nil {
		t.Fatal(err)
	}
	inst.wg.Wait()
	inst.mu.Lock()
	errs := inst.sendErrs
	inst.mu.Unlock()
	if len(errs) != 1 || inference.CodeOf(errs[0]) != inference.CodeInternal {
		t.Fatalf("send after final returned %v", errs)
	}
	if !bytes.Contains(logs.Bytes(), []byte("after the request's final response")) {
		t.Errorf("not logged: %q", logs.String())
	}
	if len(got.values) != 1 || got.nils != 1 {
		t.Errorf("the consumer got %+v", got)
	}
}

func TestInferStreamBackendFailsAfterResponses(t *testing.T) {
	s, _ := newStreamServer(t, zerolog.Nop())
	var got received
	err := s.InferStream(context.Background(), streamRequest(2, "fail"), got.out)
	if inference.CodeOf(err) != inference.CodeInvalidArg || len(got.values) != 2 || got.nils != 0 {
		t.Fatalf("err = %v after %+v", err, got)
	}
	st, _ := s.ModelStatistics(context.Background(), "stream", "")
	ms := st.ModelStats[0]
	if ms.InferenceStats.Fail.Count != 1 || ms.ResponseStats["2"].GetFail().GetCount() != 1 {
		t.Errorf("fail %v, response_stats %v", ms.InferenceStats.Fail, ms.ResponseStats)
	}
}

// The unary path takes its response through the same sink.
func TestInferUnaryThroughSink(t *testing.T) {
	s := newTestServer(t)
	for range 3 {
		var got []*inference.Response
		err := s.InferStream(context.Background(), &inference.Request{
			ModelName: "ident",
			Inputs:    []inference.Tensor{{Name: "INPUT0", DataType: inference.Int32, Shape: []int64{1, 2}, Data: int32s(7, 8)}},
		}, func(resp *inference.Response, final bool) error {
			if !final {
				t.Error("the one response of a unary model is final")
			}
			got = append(got, resp)
			return nil
		})
		if err != nil || len(got) != 1 || got[0].Output("OUTPUT0") == nil {
			t.Fatalf("err %v, responses %v", err, got)
		}
	}
}
