package scheduler

import (
	"context"
	"time"

	"github.com/nereid-project/nereid/backends"
	"github.com/nereid-project/nereid/inference"
)

// ExecuteBatch runs one batch on inst and measures it: the returned
// Execution carries the batch, its start and end and the compute_input /
// compute_infer / compute_output split, taken from the instance when it
// implements backends.PhaseReporter and otherwise all counted as inference.
// Schedulers call it instead of Instance.Execute and hand the Execution to
// their Recorder when the batch succeeded. For requests traced at the
// TENSORS level it also reports the backend's inputs and outputs, outside
// the measured time.
func ExecuteBatch(ctx context.Context, inst backends.Instance, batch []*inference.Request) ([]*inference.Response, Execution, error) {
	e := Execution{Requests: batch}
	traced := false
	for _, r := range batch {
		e.BatchSize += max(r.BatchSize, 1)
		if r.TensorTrace != nil {
			traced = true
			r.TensorTrace.TraceTensors(inference.TensorBackendInput, r.Inputs)
		}
	}
	e.Start = time.Now()
	var (
		resps  []*inference.Response
		phases backends.Phases
		err    error
	)
	if pr, ok := inst.(backends.PhaseReporter); ok {
		resps, phases, err = pr.ExecuteWithPhases(ctx, batch)
	} else {
		resps, err = inst.Execute(ctx, batch)
	}
	e.End = time.Now()
	if traced && err == nil {
		traceOutputs(batch, resps)
	}
	total := e.End.Sub(e.Start)
	phases.Input = min(max(phases.Input, 0), total)
	phases.Output = min(max(phases.Output, 0), total-phases.Input)
	e.ComputeInput = phases.Input
	e.ComputeOut = phases.Output
	e.ComputeInfer = total - phases.Input - phases.Output
	return resps, e, err
}

// traceOutputs records the outputs of each traced request of a batch as
// the backend returned them (TENSOR_BACKEND_OUTPUT), outside the measured
// execution.
func traceOutputs(batch []*inference.Request, resps []*inference.Response) {
	for i, r := range batch {
		if r.TensorTrace != nil && i < len(resps) && resps[i] != nil {
			r.TensorTrace.TraceTensors(inference.TensorBackendOutput, resps[i].Outputs)
		}
	}
}
