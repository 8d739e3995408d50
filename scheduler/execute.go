package scheduler

import (
	"context"
	"errors"
	"time"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
)

// ExecuteBatch runs one batch on inst and measures it: the returned
// Execution carries the batch, its start and end and the compute_input /
// compute_infer / compute_output split. Every request's Timing gets the
// execution's start before the instance runs (so that a decoupled model's
// responses are timed from it); a unary backend (backends.Unary) has its
// phases stamped before its responses go out, a PhasedInstance's once it
// returns, and other executions count wholly as inference. Schedulers call
// it instead of Instance.Execute and hand the Execution to their Recorder
// when the batch succeeded. For requests traced at the TENSORS level it also
// reports the backend's inputs, outside the measured time; the server core
// reports each response's outputs.
//
// Execute returning is the end of the execution, not of the requests: a
// decoupled model may still be sending their responses.
func ExecuteBatch(ctx context.Context, inst backends.Instance, batch []*inference.Request) (Execution, error) {
	e := Execution{Requests: batch}
	for _, r := range batch {
		e.BatchSize += max(r.BatchSize, 1)
		if r.TensorTrace != nil {
			r.TensorTrace.TraceTensors(inference.TensorBackendInput, r.Inputs)
		}
	}
	e.Start = time.Now()
	if u, ok := backends.UnwrapUnary(inst); ok {
		// What the Unary adapter does, with the execution's own clock
		// readings: the phases are stamped before the responses go out.
		resps, ph, err := u.ExecuteWithPhases(ctx, batch)
		e.End = time.Now()
		if err != nil {
			return e, err
		}
		backends.StampPhases(batch, e.Start, e.End, ph)
		if len(batch) > 0 {
			t := batch[0].Timing
			e.ComputeInput = t.ComputeInputEnd.Sub(t.ComputeStart)
			e.ComputeOut = t.ComputeEnd.Sub(t.ComputeOutputStart)
		}
		e.ComputeInfer = e.End.Sub(e.Start) - e.ComputeInput - e.ComputeOut
		return e, backends.SendUnary(batch, resps)
	}
	for _, r := range batch {
		r.Timing.ComputeStart = e.Start
	}
	var ph backends.Phases
	var err error
	if p, ok := inst.(PhasedInstance); ok {
		ph, err = p.ExecutePhased(ctx, batch)
	} else {
		err = inst.Execute(ctx, batch)
	}
	e.End = time.Now()
	total := e.End.Sub(e.Start)
	e.ComputeInput = min(max(ph.Input, 0), total)
	e.ComputeOut = min(max(ph.Output, 0), total-e.ComputeInput)
	e.ComputeInfer = total - e.ComputeInput - e.ComputeOut
	for _, r := range batch {
		// ComputeStart stays: a decoupled model's responses may read it now.
		r.Timing.ComputeInputEnd = e.Start.Add(e.ComputeInput)
		r.Timing.ComputeOutputStart = e.End.Add(-e.ComputeOut)
		r.Timing.ComputeEnd = e.End
	}
	return e, err
}

// PhasedInstance is an instance that is not Unary (a decoupled model's,
// or one that fails single requests of its batch with their own errors)
// but measures its phases: ExecutePhased is its Execute, and returns the
// batch's phases as UnaryInstance does. They are stamped on the requests
// once it has returned, before their statistics are recorded (the
// execution has ended by then), and count in batch_stats.
type PhasedInstance interface {
	ExecutePhased(ctx context.Context, batch []*inference.Request) (backends.Phases, error)
}

// acquireGate waits until the gate, if any, admits an execution on instance
// i. Its error is the request's cancellation; nothing is held then.
func acquireGate(ctx context.Context, g Gate, i int) error {
	if g == nil {
		return nil
	}
	if err := g.Acquire(ctx, i); err != nil {
		return cancelled(ctx)
	}
	return nil
}

// cancelled is the error of a request whose context ended before it ran.
func cancelled(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return inference.Errorf(inference.CodeCancelled, "request timed out while waiting for a model instance")
	}
	return inference.Errorf(inference.CodeCancelled, "request cancelled while waiting for a model instance")
}

// discard is the response path of the padding requests the sequence
// batcher adds to a batch: their responses go nowhere.
type discard struct{}

func (discard) Send(*inference.Response, bool) error { return nil }
func (discard) Fail(error)                           {}
func (discard) Cancelled() bool                      { return false }
