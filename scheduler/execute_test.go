package scheduler

import (
	"context"
	"testing"
	"time"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
)

// phased answers each request on its own after sleeping its phases, and
// reports them as a PhasedInstance.
type phased struct{ in, infer, out time.Duration }

func (p phased) Execute(ctx context.Context, batch []*inference.Request) error {
	_, err := p.ExecutePhased(ctx, batch)
	return err
}

func (p phased) ExecutePhased(_ context.Context, batch []*inference.Request) (backends.Phases, error) {
	time.Sleep(p.in + p.infer + p.out)
	for _, r := range batch {
		_ = r.Send(&inference.Response{}, true)
	}
	return backends.Phases{Input: p.in, Output: p.out}, nil
}

// plain is the same instance without its phases.
type plain struct{ p phased }

func (p plain) Execute(ctx context.Context, batch []*inference.Request) error {
	return p.p.Execute(ctx, batch)
}

// A PhasedInstance's phases make the execution's split and the requests'
// Timing; an instance that reports none counts wholly as inference.
func TestExecuteBatchPhased(t *testing.T) {
	p := phased{in: 3 * time.Millisecond, infer: 5 * time.Millisecond, out: 2 * time.Millisecond}
	for _, c := range []struct {
		name    string
		inst    backends.Instance
		in, out time.Duration
	}{{"phased", p, p.in, p.out}, {"plain", plain{p}, 0, 0}} {
		t.Run(c.name, func(t *testing.T) {
			batch := []*inference.Request{{}, {}}
			for _, r := range batch {
				r.SetSender(discard{})
			}
			e, err := ExecuteBatch(context.Background(), c.inst, batch)
			if err != nil {
				t.Fatal(err)
			}
			total := e.End.Sub(e.Start)
			if e.ComputeInput != c.in || e.ComputeOut != c.out || e.ComputeInfer != total-c.in-c.out {
				t.Fatalf("split %v / %v / %v of %v, want input %v and output %v", e.ComputeInput, e.ComputeInfer, e.ComputeOut, total, c.in, c.out)
			}
			for i, r := range batch {
				tm := r.Timing
				if !tm.ComputeStart.Equal(e.Start) || tm.ComputeInputEnd.Sub(tm.ComputeStart) != c.in ||
					tm.ComputeEnd.Sub(tm.ComputeOutputStart) != c.out || !tm.ComputeEnd.Equal(e.End) {
					t.Fatalf("request %d: timing %+v", i, tm)
				}
			}
		})
	}
}
