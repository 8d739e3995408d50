package inference

// ResponseSender is the response path of one request. The server core sets
// one on every request it hands to a scheduler (Request.SetSender); a
// scheduler may put its own in front of it (to keep a sequence's state, or to
// release responses in arrival order) and forward to the one it replaced.
//
// Contract, for whoever produces responses (a backend instance, or a
// scheduler failing a request):
//
//   - Send may be called from any goroutine, but the calls for one request
//     are made one after the other, never concurrently: their order is the
//     order of the request's responses.
//   - A request gets any number of responses, then exactly one final flag:
//     Send(resp, true) with its last response, or Send(nil, true) alone when
//     the last response was already sent (or there is none). resp may be
//     nil only with final set.
//   - Send returns an error (class CodeCancelled) once the request is
//     cancelled or the client is gone: the producer should stop working on
//     it and send the final flag (whose error it may ignore). A Send after
//     the final flag returns an error of class CodeInternal and delivers
//     nothing.
//   - Fail ends the request with err instead of a final response; it counts
//     as the final flag. A request that already had its final flag ignores
//     it.
//   - After the final flag the producer must not touch the request, its
//     tensors, or the responses it sent: all of them may be reused.
//
// The sender may block in Send while the client reads slowly (bounded
// queues); it unblocks when the request is cancelled.
type ResponseSender interface {
	Send(resp *Response, final bool) error
	Fail(err error)
	// Cancelled reports whether the request was cancelled (the client went
	// away, a deadline passed, the stream ended); a backend may poll it
	// between responses.
	Cancelled() bool
}

// SetSender installs the request's response path. The server core and the
// schedulers call it; backends only call Send and Fail.
func (r *Request) SetSender(s ResponseSender) { r.sender = s }

// Sender returns the request's response path, nil before the core set one.
func (r *Request) Sender() ResponseSender { return r.sender }

// Send delivers one response of the request through its sender; see
// ResponseSender for the contract.
func (r *Request) Send(resp *Response, final bool) error {
	if r.sender == nil {
		return Internal("request for model '%s' has no response path", r.ModelName)
	}
	return r.sender.Send(resp, final)
}

// Cancelled reports whether the request was cancelled.
func (r *Request) Cancelled() bool { return r.sender != nil && r.sender.Cancelled() }

// Fail ends the request with err through its sender.
func (r *Request) Fail(err error) {
	if r.sender != nil {
		r.sender.Fail(err)
	}
}

// ResponseFunc receives the responses of one request on the consumer's side
// (a front end, an ensemble step, a model calling another): resp with final
// false for every response but the last, then final true, with the last
// response or with resp nil when the model sent the final flag alone. An
// error returned from it cancels the request.
type ResponseFunc func(resp *Response, final bool) error
