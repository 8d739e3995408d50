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
// phases stamped before its responses go out, other executions count
// wholly as inference. Schedulers call
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
	err := inst.Execute(ctx, batch)
	e.End = time.Now()
	for _, r := range batch {
		r.Timing.ComputeInputEnd = e.Start
		r.Timing.ComputeOutputStart = e.End
		r.Timing.ComputeEnd = e.End
	}
	e.ComputeInfer = e.End.Sub(e.Start)
	return e, err
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
