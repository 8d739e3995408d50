package server

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/inference"
)

// InferStream runs one request and passes each of its responses to out, in
// order, from whichever goroutine produced it: every response but the last
// with final false, then final true with the last response, or with a nil
// response when the model sent its final flag alone (a decoupled model; the
// front end decides whether to send an empty final response). It returns
// once the final flag has been delivered, or with the error that ended the
// request, which out has not seen; responses delivered before an error
// stand. Errors are *inference.Error values whose Code the front ends map
// to their status codes. Each response's outputs are those requested, in
// the requested order, or every output when none were.
//
// out is called one response at a time, never concurrently, and may block
// to hold a slow consumer back; it must return promptly once ctx is done.
// An error from out cancels the request. Like Infer, InferStream does not
// keep req or its tensors once it has returned; a response's Data is only
// valid until out returns unless the consumer holds it on purpose (its
// Release hook, when set, is the consumer's to call).
func (s *Server) InferStream(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error {
	_, err := s.serve(ctx, req, out)
	return err
}

// Infer runs one request of a model that is not decoupled and returns its
// response: InferStream with a one-response collector. A decoupled model is
// refused (UNSUPPORTED, wrapping inference.ErrDecoupled).
func (s *Server) Infer(ctx context.Context, req *inference.Request) (*inference.Response, error) {
	return s.serve(ctx, req, nil)
}

// serve is InferStream, or Infer when out is nil: a request for a
// traffic route goes to the variant the router picks.
func (s *Server) serve(ctx context.Context, req *inference.Request, out inference.ResponseFunc) (*inference.Response, error) {
	if s.opts.Traffic != nil {
		if d := s.opts.Traffic.Route(req); d != nil {
			return s.serveRouted(ctx, req, out, d)
		}
	}
	return s.serveModel(ctx, req, out)
}

// serveModel runs a request on the model version it names.
func (s *Server) serveModel(ctx context.Context, req *inference.Request, out inference.ResponseFunc) (*inference.Response, error) {
	if req.Arrival.IsZero() {
		req.Arrival = time.Now()
	}
	h, lm, err := s.acquireForInfer(ctx, req.ModelName, req.ModelVersion)
	if err != nil {
		return nil, err
	}
	held := true
	defer func() {
		if held {
			h.Release()
		}
	}()
	if out == nil && lm.decoupled {
		return nil, inference.Errorf(inference.CodeUnsupported, "model '%s' has a decoupled transaction policy and is only served by streaming: %w", lm.name, inference.ErrDecoupled)
	}
	shm, err := s.bindSharedMemory(req)
	if err != nil {
		return nil, err
	}
	if err := lm.check(req); err != nil {
		shm.release()
		return nil, err
	}
	if req.TensorTrace != nil {
		// Checked, with shared-memory inputs read from their regions.
		req.TensorTrace.TraceTensors(inference.TensorQueueInput, req.Inputs)
	}
	sink := lm.newSink(ctx, req, shm, out, s.opts.Logger)
	req.SetSender(sink)
	req.Timing.QueueStart = time.Now()
	if err := lm.infer(ctx, req); err != nil {
		sink.Fail(err)
	}
	if !sink.isFinal() {
		// The execution has ended but the model is still answering (a
		// decoupled model streams on its own goroutines). The version may
		// unload meanwhile: it then fails the requests still open (the
		// model never sent their final flag), so that a stuck stream does
		// not hold the unload forever.
		if !lm.track(sink) {
			sink.Fail(inference.Unavailable("model '%s' version %d was unloaded before it finished answering the request", lm.name, lm.version))
		}
		defer lm.untrack(sink)
		held = false
		h.Release()
	}
	err = sink.wait()
	lm.stats.finished(req, time.Now(), err, sink.unaryStats)
	shm.release()
	req.SetSender(nil)
	resp := sink.resp
	lm.recycle(sink)
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// sink is the response path the core gives each request it runs: it turns
// the backend's responses into what the client asked for (output selection,
// classification, shared-memory outputs), records their statistics by
// response index, and hands them to the consumer (out), or keeps the one
// response of a unary call. It implements inference.ResponseSender.
type sink struct {
	lm  *loadedModel
	ctx context.Context //nolint:containedctx // the request's, reported by Cancelled
	req *inference.Request
	shm *shmBinding
	out inference.ResponseFunc // nil: keep the response (Infer)
	log zerolog.Logger
	id  string // the request's ID, for logs once the request may be reused

	mu        sync.Mutex // guards the fields below; held while out runs, which keeps the order
	index     int        // responses delivered so far
	prev      time.Time  // when the previous response was produced
	final     bool       // the final flag was sent, or the request failed
	err       error      // why the request failed
	cancelled bool       // the consumer gave up: later responses are dropped
	resp      *inference.Response
	finalized chan struct{} // made by wait when it has to wait; closed with final
	// unaryStats: the response of a unary backend, whose response_stats
	// entry modelStats.finished records from the phases.
	unaryStats bool
}

var sinkPool = sync.Pool{New: func() any { return new(sink) }}

// newSink returns a sink for req: from a pool when the model's instances
// are all unary, which send every request's only response before Execute
// returns and never touch the request again.
func (lm *loadedModel) newSink(ctx context.Context, req *inference.Request, shm *shmBinding, out inference.ResponseFunc, log zerolog.Logger) *sink {
	var k *sink
	if lm.unaryOnly {
		k = sinkPool.Get().(*sink)
	} else {
		k = new(sink)
	}
	k.lm, k.ctx, k.req, k.shm, k.out, k.log, k.id = lm, ctx, req, shm, out, log, req.ID
	return k
}

// recycle returns a finished sink to the pool when newSink took it from
// there.
func (lm *loadedModel) recycle(k *sink) {
	if !lm.unaryOnly || !k.final {
		return
	}
	*k = sink{}
	sinkPool.Put(k)
}

var errAfterFinal = inference.Internal("response sent after the request's final response")

// Send delivers one response; see inference.ResponseSender.
func (k *sink) Send(resp *inference.Response, final bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.final {
		k.log.Error().Str("model", k.lm.name).Str("request_id", k.id).Bool("final", final).
			Msg("backend sent a response after the request's final response; dropped")
		return errAfterFinal
	}
	if k.cancelled || k.ctx.Err() != nil {
		k.cancelLocked()
		if final {
			k.finishLocked(nil)
		}
		return inference.Errorf(inference.CodeCancelled, "request for model '%s' was cancelled", k.lm.name)
	}
	if resp == nil {
		if !final {
			return inference.Internal("a response without data must carry the final flag")
		}
		if k.out == nil {
			k.finishLocked(inference.Internal("model '%s' sent no response", k.lm.name))
			return nil
		}
		k.lm.stats.emptyResponse(k.index, time.Since(k.prevLocked()))
		if err := k.out(nil, true); err != nil {
			k.cancelLocked()
		}
		k.finishLocked(nil)
		return nil
	}
	idx := k.index
	k.index++
	if k.req.TensorTrace != nil {
		k.req.TensorTrace.TraceTensors(inference.TensorBackendOutput, resp.Outputs)
	}
	// A response of a unary backend is sent inside Execute, after the
	// adapter stamped the phases: it was produced at the start of the
	// output phase, as Triton times it. Other backends may send while the
	// scheduler still stamps the execution's end, so only ComputeStart,
	// set before Execute, is read for them.
	t := &k.req.Timing
	executed := t.Executed() // false for a response cache hit
	unaryTimes := k.lm.unaryOnly && idx == 0 && executed
	var now time.Time
	var infer time.Duration
	if unaryTimes {
		infer = t.ComputeOutputStart.Sub(t.ComputeStart)
	} else {
		// Clock readings are a measurable share of a small request:
		// taken only where the phases do not already say.
		now = time.Now()
		infer = now.Sub(k.prevLocked())
		k.prev = now
	}
	r, err := k.lm.finish(k.req, resp)
	if err == nil {
		r, err = k.shm.finish(r)
	}
	if err != nil {
		resp.Done()
		if executed {
			k.lm.stats.responseFailed(idx, infer)
		}
		k.finishLocked(err)
		return err
	}
	if k.out == nil {
		if idx > 0 {
			resp.Done()
			k.finishLocked(inference.Internal("model '%s' is not decoupled but sent more than one response", k.lm.name))
			return errAfterFinal
		}
		k.resp = r
	} else if err := k.out(r, final); err != nil {
		k.cancelLocked()
		if final {
			k.finishLocked(nil)
		}
		return inference.Errorf(inference.CodeCancelled, "request for model '%s' was cancelled: %v", k.lm.name, err)
	}
	if idx == 0 && k.lm.decoupled && !now.IsZero() {
		k.lm.stats.firstResponse(now.Sub(k.req.Arrival))
	}
	switch {
	case unaryTimes:
		k.unaryStats = true // recorded with the request (modelStats.finished)
	case executed:
		k.lm.stats.responseSent(idx, infer, time.Since(now))
	}
	if final {
		k.finishLocked(nil)
	}
	return nil
}

// isFinal reports whether the request has had its final flag.
func (k *sink) isFinal() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.final
}

// prevLocked is when the previous response was produced, or the start of
// the execution for the first.
func (k *sink) prevLocked() time.Time {
	if !k.prev.IsZero() {
		return k.prev
	}
	if t := k.req.Timing.ComputeStart; !t.IsZero() {
		return t
	}
	return time.Now()
}

// Fail ends the request with err.
func (k *sink) Fail(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.final {
		return
	}
	if k.req.Timing.Executed() && !k.cancelled {
		k.lm.stats.responseFailed(k.index, time.Since(k.prevLocked()))
	}
	k.finishLocked(err)
}

// Cancelled reports whether the consumer gave up on the request.
func (k *sink) Cancelled() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cancelled || k.ctx.Err() != nil
}

// cancelLocked marks the request cancelled, once, and counts it under the
// response index it was cancelled at.
func (k *sink) cancelLocked() {
	if k.cancelled {
		return
	}
	k.cancelled = true
	k.lm.stats.responseCancelled(k.index, time.Since(k.prevLocked()))
}

func (k *sink) finishLocked(err error) {
	k.final = true
	if k.err == nil {
		k.err = err
	}
	if k.cancelled && k.err == nil {
		k.err = inference.Errorf(inference.CodeCancelled, "request for model '%s' was cancelled", k.lm.name)
	}
	if k.finalized != nil {
		close(k.finalized)
	}
}

// wait returns once the request had its final flag, or its context ended:
// then it is cancelled, and whatever the backend still sends is dropped.
func (k *sink) wait() error {
	k.mu.Lock()
	if k.final {
		err := k.err
		k.mu.Unlock()
		return err
	}
	k.finalized = make(chan struct{})
	done := k.finalized
	k.mu.Unlock()
	select {
	case <-done:
	case <-k.ctx.Done():
		k.mu.Lock()
		if !k.final {
			k.cancelLocked()
			k.err = inference.Errorf(inference.CodeCancelled, "request for model '%s' was cancelled", k.lm.name)
			// The backend may still answer: Send drops its responses
			// and reports the cancellation (it checks cancelled first,
			// so neither out nor the shared memory is touched again).
		}
		err := k.err
		k.mu.Unlock()
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.err
}
