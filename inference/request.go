package inference

import "time"

// Parameters carries request, tensor or response parameters. Values are one
// of bool, int64, uint64, float64 or string.
type Parameters map[string]any

// Bool returns the named parameter if it is a bool.
func (p Parameters) Bool(key string) (v, ok bool) {
	v, ok = p[key].(bool)
	return v, ok
}

// String returns the named parameter if it is a string.
func (p Parameters) String(key string) (string, bool) {
	v, ok := p[key].(string)
	return v, ok
}

// Int returns the named parameter as an int64 if it is an integer that fits.
func (p Parameters) Int(key string) (int64, bool) {
	switch v := p[key].(type) {
	case int64:
		return v, true
	case uint64:
		if v <= 1<<63-1 {
			return int64(v), true
		}
	}
	return 0, false
}

// RequestedOutput names an output the client wants back.
type RequestedOutput struct {
	Name       string
	Parameters Parameters
}

// Request is one inference request as the server core sees it, whatever
// protocol it arrived on.
type Request struct {
	ID           string
	ModelName    string
	ModelVersion string // "" means the version the model's policy serves by default
	Inputs       []Tensor
	// Outputs lists the outputs to return; empty means all of them.
	Outputs    []RequestedOutput
	Parameters Parameters

	// Arrival is when the front end received the request; the server
	// fills it when zero.
	Arrival time.Time

	// BatchSize is the number of batch elements the request carries: the
	// first dimension of its inputs when the model batches, else 1. The
	// server fills it while checking the request against the model.
	BatchSize int

	// Timing holds when the request passed the phases that statistics,
	// metrics and traces report. The server and the scheduler fill it.
	Timing Timing

	// TensorTrace, when not nil, records the request's tensors at each
	// TensorActivity. The front end sets it for a request sampled at the
	// TENSORS trace level; for every other request it stays nil and costs
	// the core one comparison at each point.
	TensorTrace TensorTracer

	// Span, when not nil, is the request's trace (see Span): set by the
	// front end for a sampled request, so that models that send requests
	// on its behalf can trace them as its children.
	Span Span

	// sender is the response path (SetSender, Send).
	sender ResponseSender
}

// Timing is the life of one request as Triton's statistics and traces see
// it. Zero values are phases the request did not reach.
type Timing struct {
	QueueStart         time.Time // handed to the model's scheduler
	ComputeStart       time.Time // its batch started executing
	ComputeInputEnd    time.Time // the backend had gathered its inputs
	ComputeOutputStart time.Time // the backend started producing outputs
	ComputeEnd         time.Time // its batch finished executing

	// The response cache, for models that use it: CacheHit when the
	// response came from the cache, CacheMiss when it was computed and
	// then stored; CacheTime is the lookup time of a hit, or the lookup
	// plus insertion time of a miss.
	CacheHit, CacheMiss bool
	CacheTime           time.Duration
}

// Executed reports whether the request reached its model: its batch began
// executing (false for a refusal before the model ran, and for a response
// cache hit). An error of a request that executed is the model's.
func (t *Timing) Executed() bool { return !t.ComputeStart.IsZero() }

// Input returns the named input, or nil.
func (r *Request) Input(name string) *Tensor {
	for i := range r.Inputs {
		if r.Inputs[i].Name == name {
			return &r.Inputs[i]
		}
	}
	return nil
}

// Response is the result of one Request.
type Response struct {
	ID           string
	ModelName    string
	ModelVersion string
	Outputs      []Tensor
	Parameters   Parameters

	// Release, when not nil, is called exactly once when the front end is
	// done with the response's output Data (written to the wire, or
	// dropped): a backend whose outputs live in memory it must free (a
	// framework's buffers, a shared-memory arena) sets it. Data must stay
	// valid and unchanged until then.
	Release func()
}

// Done calls the response's Release hook, if any, once.
func (r *Response) Done() {
	if r != nil && r.Release != nil {
		f := r.Release
		r.Release = nil
		f()
	}
}

// Output returns the named output, or nil.
func (r *Response) Output(name string) *Tensor {
	for i := range r.Outputs {
		if r.Outputs[i].Name == name {
			return &r.Outputs[i]
		}
	}
	return nil
}
