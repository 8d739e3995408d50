package httpfront

import (
	"context"

	"github.com/nereid-project/nereid/server/v2wire"
)

// inferCall is one inference request: the decoded request (v2wire.Call)
// and what this front end keeps with it. Calls are pooled: their buffers
// keep their capacity between requests, which is safe because the core
// does not keep a request after Infer returns (see Core).
type inferCall struct {
	v2wire.Call
	// watch cancels the request when its client goes away; it keeps its
	// timer from one request of the call object to the next.
	watch disconnectWatch
	// abandoned is set when the request was cancelled while the core had
	// it: the backend may still hold it, so the call is not pooled.
	abandoned bool
	// ctx is the request's context, kept with the call (see callContext);
	// cancel is its cancel method, made once.
	ctx    *callContext
	cancel context.CancelFunc
}

// context returns the call's request context, ready for a new request.
func (c *inferCall) context(parent context.Context) *callContext {
	if c.ctx == nil {
		c.ctx = newCallContext(parent)
		c.cancel = c.ctx.cancel
	} else {
		c.ctx.reset()
	}
	return c.ctx
}
