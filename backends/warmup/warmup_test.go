package warmup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

func config(t *testing.T, text string) *inferencepb.ModelConfig {
	t.Helper()
	cfg := &inferencepb.ModelConfig{}
	if err := prototext.Unmarshal([]byte(text), cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestSamples(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "warmup"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "warmup", "x.bin"), []byte{1, 2, 3, 4, 5, 6, 7, 8}, 0o644); err != nil {
		t.Fatal(err)
	}
	ins := []Input{
		{Name: "X", DataType: inference.FP32, Dims: []int64{2}},
		{Name: "O", DataType: inference.Bytes, Dims: []int64{1}, Optional: true},
		{Name: "S", DataType: inference.Int32, Dims: []int64{1}, Implicit: true, Default: []byte{1, 0, 0, 0}},
		{Name: "Z", DataType: inference.Int32, Dims: []int64{2}, Implicit: true},
	}
	cfg := config(t, `name: "m" max_batch_size: 4 model_warmup [
		{ name: "r" batch_size: 3 count: 2 inputs { key: "X" value { data_type: TYPE_FP32 dims: [ 2 ] random_data: true } } },
		{ name: "f" batch_size: 1 inputs [
			{ key: "X" value { data_type: TYPE_FP32 dims: [ 2 ] input_data_file: "x.bin" } },
			{ key: "S" value { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true } } ] } ]`)
	samples, err := Samples(cfg, dir, ins)
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) != 2 {
		t.Fatalf("%+v", samples)
	}
	r, f := samples[0], samples[1]
	if r.Name != "r" || r.BatchSize != 3 || r.Count != 2 || len(r.Inputs) != 3 || f.Count != 1 {
		t.Fatalf("%+v", samples)
	}
	// The optional input is left out; the implicit ones take their
	// default (one batch row) where the sample does not give them.
	x, s, z := r.Inputs[0], r.Inputs[1], r.Inputs[2]
	if x.Name != "X" || !slices.Equal(x.Shape, []int64{1, 2}) || len(x.Data) != 8 || slices.Equal(x.Data, make([]byte, 8)) {
		t.Errorf("random X: %+v", x)
	}
	if s.Name != "S" || !slices.Equal(s.Shape, []int64{1, 1}) || !slices.Equal(s.Data, []byte{1, 0, 0, 0}) {
		t.Errorf("default S: %+v", s)
	}
	if z.Name != "Z" || !slices.Equal(z.Data, make([]byte, 8)) {
		t.Errorf("zero Z: %+v", z)
	}
	if !slices.Equal(f.Inputs[0].Data, []byte{1, 2, 3, 4, 5, 6, 7, 8}) || !slices.Equal(f.Inputs[1].Data, make([]byte, 4)) {
		t.Errorf("sample f: %+v", f.Inputs)
	}

	for text, want := range map[string]string{
		`model_warmup [ { name: "big" batch_size: 5 inputs { key: "X" value { data_type: TYPE_FP32 dims: [ 2 ] zero_data: true } } } ]`:  "warm-up sample 'big': batch_size 5 exceeds max_batch_size 4",
		`model_warmup [ { name: "zero" batch_size: 0 inputs { key: "X" value { data_type: TYPE_FP32 dims: [ 2 ] zero_data: true } } } ]`: "warm-up sample 'zero': batch_size must be at least 1",
		`model_warmup [ { name: "none" batch_size: 1 } ]`: "warm-up sample 'none': no data for input 'X'",
		`model_warmup [ { name: "t" batch_size: 1 inputs { key: "X" value { data_type: TYPE_INT8 dims: [ 2 ] zero_data: true } } } ]`:                                                                                  "has data_type TYPE_INT8",
		`model_warmup [ { name: "p" batch_size: 1 inputs { key: "X" value { data_type: TYPE_FP32 dims: [ 2 ] input_data_file: "../x" } } } ]`:                                                                          "inside the model's warmup directory",
		`model_warmup [ { name: "gone" batch_size: 1 inputs { key: "X" value { data_type: TYPE_FP32 dims: [ 2 ] input_data_file: "nope" } } } ]`:                                                                       "warm-up sample 'gone': input 'X'",
		`model_warmup [ { name: "short" batch_size: 1 inputs { key: "X" value { data_type: TYPE_FP32 dims: [ 4 ] input_data_file: "x.bin" } } } ]`:                                                                     "warm-up sample 'short': input 'X'",
		`model_warmup [ { name: "var" batch_size: 1 inputs { key: "X" value { data_type: TYPE_FP32 dims: [ -1 ] zero_data: true } } } ]`:                                                                               "invalid dims [-1]",
		`model_warmup [ { name: "src" batch_size: 1 inputs { key: "X" value { data_type: TYPE_FP32 dims: [ 2 ] } } } ]`:                                                                                                "must set one of zero_data, random_data or input_data_file",
		`model_warmup [ { name: "extra" batch_size: 1 inputs [ { key: "X" value { data_type: TYPE_FP32 dims: [ 2 ] zero_data: true } }, { key: "Q" value { data_type: TYPE_FP32 dims: [ 2 ] zero_data: true } } ] } ]`: "input 'Q' is not an input of the model",
		`model_warmup [ { batch_size: 1 inputs { key: "X" value { data_type: TYPE_FP32 dims: [ 2 ] zero_data: true } } } ]`:                                                                                            "every model_warmup sample needs a name",
	} {
		_, err := Samples(config(t, `name: "m" max_batch_size: 4 `+text), dir, ins)
		if err == nil || !strings.Contains(err.Error(), want) || inference.CodeOf(err) != inference.CodeInvalidArg {
			t.Errorf("%v: want %q", err, want)
		}
	}
	// A model that does not batch: batch_size 1, no batch dimension.
	_, err = Samples(config(t, `name: "m" model_warmup [ { name: "b2" batch_size: 2 inputs { key: "X" value { data_type: TYPE_FP32 dims: [ 2 ] zero_data: true } } } ]`), dir, ins[:1])
	if err == nil || !strings.Contains(err.Error(), "batch_size must be 1 for a model that does not batch") {
		t.Errorf("%v", err)
	}
	nb, err := Samples(config(t, `name: "m" model_warmup [ { name: "b1" batch_size: 1 inputs { key: "X" value { data_type: TYPE_FP32 dims: [ 2 ] zero_data: true } } } ]`), dir, ins[:1])
	if err != nil || !slices.Equal(nb[0].Inputs[0].Shape, []int64{2}) {
		t.Fatalf("%+v %v", nb, err)
	}
}

// unary answers each request with one response holding its inputs.
type unary struct{ batches [][]*inference.Request }

func (u *unary) ExecuteWithPhases(_ context.Context, batch []*inference.Request) ([]*inference.Response, backends.Phases, error) {
	u.batches = append(u.batches, batch)
	out := make([]*inference.Response, len(batch))
	for i, r := range batch {
		out[i] = &inference.Response{Outputs: r.Inputs}
	}
	return out, backends.Phases{}, nil
}

// streaming answers each request with n responses from a goroutine of its
// own after Execute returned, then the final flag alone, or fails it.
type streaming struct {
	n       int
	fail    error
	streams backends.Streams
}

func (s *streaming) Execute(_ context.Context, batch []*inference.Request) error {
	for _, r := range batch {
		s.streams.Go(func() {
			time.Sleep(time.Millisecond)
			for range s.n {
				if err := r.Send(&inference.Response{}, false); err != nil {
					r.Fail(err)
					return
				}
			}
			if s.fail != nil {
				r.Fail(s.fail)
				return
			}
			_ = r.Send(nil, true)
		})
	}
	return nil
}

func TestRun(t *testing.T) {
	samples := []Sample{
		{Name: "a", BatchSize: 3, Count: 2, Inputs: []inference.Tensor{{Name: "X", DataType: inference.Int32, Shape: []int64{1, 1}, Data: make([]byte, 4)}}},
		{Name: "b", BatchSize: 1, Count: 1, Parameters: inference.Parameters{"sequence_start": true}},
	}
	u := &unary{}
	res, err := Run(context.Background(), "m", "m_0", samples, backends.Unary(u))
	if err != nil || res != (Result{Executions: 3, Responses: 7}) {
		t.Fatalf("%+v %v", res, err)
	}
	if len(u.batches) != 3 || len(u.batches[0]) != 3 || len(u.batches[2]) != 1 {
		t.Fatalf("batches %d", len(u.batches))
	}
	r := u.batches[0][0]
	if r.ModelName != "m" || r.BatchSize != 1 || r.Input("X") == nil || u.batches[0][1] == r || u.batches[1][0] == r {
		t.Errorf("request %+v: each execution has requests of its own", r)
	}
	if v, _ := u.batches[2][0].Parameters.Bool("sequence_start"); !v {
		t.Errorf("parameters %v", u.batches[2][0].Parameters)
	}

	// A decoupled instance: Run waits for every final flag and counts
	// every response.
	s := &streaming{n: 4}
	defer s.streams.Close()
	res, err = Run(context.Background(), "m", "m_0", samples, s)
	if err != nil || res != (Result{Executions: 3, Responses: 4 * 7}) {
		t.Fatalf("decoupled: %+v %v", res, err)
	}

	// A request failed through its response path fails the warm-up, named
	// and of the failure's class.
	s2 := &streaming{n: 1, fail: inference.InvalidArg("bad row")}
	defer s2.streams.Close()
	_, err = Run(context.Background(), "m", "m_1", samples, s2)
	if err == nil || err.Error() != "model 'm', instance m_1: warm-up sample 'a' failed: bad row" || inference.CodeOf(err) != inference.CodeInvalidArg {
		t.Fatalf("%v", err)
	}

	// Execute's own error.
	_, err = Run(context.Background(), "m", "m_0", samples[1:], executeFunc(func(context.Context, []*inference.Request) error {
		return inference.Internal("boom")
	}))
	var ie *inference.Error
	if err == nil || !strings.Contains(err.Error(), "warm-up sample 'b' failed: boom") || !errors.As(err, &ie) || ie.Code != inference.CodeInternal {
		t.Fatalf("%v", err)
	}
}

type executeFunc func(context.Context, []*inference.Request) error

func (f executeFunc) Execute(ctx context.Context, b []*inference.Request) error { return f(ctx, b) }

// TestRunCancelled: an instance that never sends its final flag holds the
// warm-up only until the load is cancelled.
func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var held []*inference.Request
	var mu sync.Mutex
	inst := executeFunc(func(_ context.Context, b []*inference.Request) error {
		mu.Lock()
		held = append(held, b...)
		mu.Unlock()
		return nil
	})
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err := Run(ctx, "m", "m_0", []Sample{{Name: "w", BatchSize: 1, Count: 1}}, inst)
	if err == nil || !strings.Contains(err.Error(), "warm-up sample 'w' failed") || !errors.Is(err, context.Canceled) {
		t.Fatalf("%v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(held) != 1 || !held[0].Cancelled() || held[0].Send(nil, true) == nil {
		t.Fatalf("held %d: the request reads as cancelled", len(held))
	}
}
