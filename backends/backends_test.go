package backends_test

import (
	"context"
	"errors"
	"testing"

	"go.uber.org/goleak"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/backends/backendtest"
	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/proto/inferencepb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo is a UnaryInstance answering each request with its inputs.
type echo struct{ fail error }

func (e echo) ExecuteWithPhases(_ context.Context, batch []*inference.Request) ([]*inference.Response, backends.Phases, error) {
	if e.fail != nil {
		return nil, backends.Phases{}, e.fail
	}
	out := make([]*inference.Response, len(batch))
	for i, r := range batch {
		out[i] = &inference.Response{Outputs: r.Inputs}
	}
	return out, backends.Phases{}, nil
}

func TestUnarySendsFinalResponsesWithPhases(t *testing.T) {
	batch := []*inference.Request{{ID: "a"}, {ID: "b"}}
	got, err := backendtest.Collect(context.Background(), backends.Unary(echo{}), batch)
	if err != nil || len(got) != 2 || len(got[0]) != 1 || len(got[1]) != 1 {
		t.Fatalf("responses %v, err %v", got, err)
	}
	for _, r := range batch {
		if r.Timing.ComputeStart.IsZero() || r.Timing.ComputeEnd.Before(r.Timing.ComputeStart) {
			t.Errorf("request %s timing %+v", r.ID, r.Timing)
		}
	}
	boom := errors.New("boom")
	if _, err := backendtest.Collect(context.Background(), backends.Unary(echo{fail: boom}), []*inference.Request{{}}); !errors.Is(err, boom) {
		t.Errorf("a failed execution: %v", err)
	}
	if u, ok := backends.UnwrapUnary(backends.Unary(echo{})); !ok || u == nil {
		t.Error("backends.UnwrapUnary")
	}
}

func TestStreams(t *testing.T) {
	var s backends.Streams
	started := make(chan struct{})
	if !s.Go(func() { close(started); <-s.Done() }) {
		t.Fatal("Go refused before Close")
	}
	<-started
	s.Close() // returns once the stream saw Done and returned
	if s.Go(func() { t.Error("ran after Close") }) {
		t.Error("Go accepted after Close")
	}
	s.Close()
}

type inferFunc func(context.Context, *inference.Request, inference.ResponseFunc) error

func (f inferFunc) InferStream(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error {
	return f(ctx, req, out)
}

func TestLateInferer(t *testing.T) {
	var l backends.LateInferer
	err := l.InferStream(context.Background(), &inference.Request{ModelName: "m"}, nil)
	if inference.CodeOf(err) != inference.CodeUnavailable {
		t.Fatalf("unbound: %v", err)
	}
	l.Bind(inferFunc(func(_ context.Context, _ *inference.Request, out inference.ResponseFunc) error {
		return out(nil, true)
	}))
	finals := 0
	if err := l.InferStream(context.Background(), &inference.Request{}, func(_ *inference.Response, final bool) error {
		if final {
			finals++
		}
		return nil
	}); err != nil || finals != 1 {
		t.Fatalf("bound: %v, %d finals", err, finals)
	}
}

type configServer struct{ inferFunc }

func (configServer) ModelConfig(_ context.Context, name, _ string) (*inferencepb.ModelConfig, error) {
	return &inferencepb.ModelConfig{Name: name}, nil
}

func TestLateInfererModelConfig(t *testing.T) {
	var l backends.LateInferer
	if _, err := l.ModelConfig(context.Background(), "m", ""); inference.CodeOf(err) != inference.CodeUnavailable {
		t.Fatalf("unbound: %v", err)
	}
	l.Bind(inferFunc(nil))
	if _, err := l.ModelConfig(context.Background(), "m", ""); inference.CodeOf(err) != inference.CodeUnavailable {
		t.Fatalf("bound to an Inferer without configurations: %v", err)
	}
	l.Bind(configServer{})
	if cfg, err := l.ModelConfig(context.Background(), "m", ""); err != nil || cfg.GetName() != "m" {
		t.Fatalf("bound: %v %v", cfg, err)
	}
}
