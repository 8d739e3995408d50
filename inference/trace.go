package inference

import "time"

// TensorActivity names a point of a request's life at which Triton's
// TENSORS trace level records the request's tensors.
type TensorActivity uint8

// The tensor activities, with Triton's names.
const (
	// TensorQueueInput: the inputs as the request arrived, handed to the
	// model's scheduler (shared-memory inputs already read from their
	// regions).
	TensorQueueInput TensorActivity = iota + 1
	// TensorBackendInput: the inputs as the backend gets them, with the
	// control and state inputs a sequence batcher adds.
	TensorBackendInput
	// TensorBackendOutput: the outputs the backend produced, before the
	// server selects the requested ones, classifies or writes them to
	// shared memory.
	TensorBackendOutput
)

// String returns Triton's activity name ("TENSOR_QUEUE_INPUT", …).
func (a TensorActivity) String() string {
	switch a {
	case TensorQueueInput:
		return "TENSOR_QUEUE_INPUT"
	case TensorBackendInput:
		return "TENSOR_BACKEND_INPUT"
	case TensorBackendOutput:
		return "TENSOR_BACKEND_OUTPUT"
	}
	return "INVALID"
}

// TensorTracer records the tensors of a request traced at the TENSORS
// level. TraceTensors copies what it keeps before it returns: the tensors'
// data may alias buffers that are reused or unmapped (shared memory) once
// the request is done. It is safe for concurrent use and returns promptly.
type TensorTracer interface {
	TraceTensors(activity TensorActivity, tensors []Tensor)
}

// Span is the trace of a sampled request, as the models that serve it see
// it. A model that sends requests of its own on the request's behalf (an
// ensemble's steps) records each in a child trace, which reports the
// parent's id as Triton's parent_id. Its methods are safe for concurrent
// use.
type Span interface {
	// Child opens the trace of a request sent to model on this request's
	// behalf. The child is written when it is finished, with the parent's
	// settings, whatever the sampling rate.
	Child(model string) Span
	// Attach makes req report into this trace: req.Span, and the tensors
	// when the level includes them. Called before req enters the core.
	Attach(req *Request)
	// Served records the core's part of req, which ran from start to end
	// and was answered by version ("" when it failed before one was
	// chosen).
	Served(req *Request, version string, start, end time.Time)
	// Finish writes the trace; nothing is recorded after it.
	Finish()
}
