package backends

import (
	"context"
	"sync"

	"github.com/nereid-project/nereid/inference"
)

// Collect runs batch on inst outside any server, the way warm-up and tests
// drive an instance: it gives every request a response path that keeps its
// responses, and returns them per request once every request has had its
// final flag (or ctx ended). The first error of a request, or Execute's, is
// returned with the responses gathered so far.
func Collect(ctx context.Context, inst Instance, batch []*inference.Request) ([][]*inference.Response, error) {
	sinks := make([]*collector, len(batch))
	var wg sync.WaitGroup
	for i, r := range batch {
		sinks[i] = &collector{ctx: ctx, done: wg.Done}
		wg.Add(1)
		r.SetSender(sinks[i])
	}
	if err := inst.Execute(ctx, batch); err != nil {
		for _, s := range sinks {
			s.Fail(err)
		}
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-ctx.Done():
		for _, s := range sinks {
			s.Fail(inference.Errorf(inference.CodeCancelled, "request cancelled: %v", ctx.Err()))
		}
		<-finished
	}
	out := make([][]*inference.Response, len(batch))
	var first error
	for i, s := range sinks {
		s.mu.Lock()
		out[i] = s.resps
		if s.err != nil && first == nil {
			first = s.err
		}
		s.mu.Unlock()
	}
	return out, first
}

// collector is Collect's response path for one request.
type collector struct {
	ctx  context.Context //nolint:containedctx // Collect's context, for Cancelled
	done func()

	mu    sync.Mutex // guards the fields below
	resps []*inference.Response
	err   error
	final bool
}

func (c *collector) Send(resp *inference.Response, final bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.final {
		return inference.Internal("response sent after the final response")
	}
	if resp != nil {
		c.resps = append(c.resps, resp)
	}
	if final {
		c.final = true
		c.done()
	}
	if c.ctx.Err() != nil {
		return inference.Errorf(inference.CodeCancelled, "request cancelled")
	}
	return nil
}

func (c *collector) Fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.final {
		return
	}
	c.final, c.err = true, err
	c.done()
}

func (c *collector) Cancelled() bool { return c.ctx.Err() != nil }

// AfterFunc is context.AfterFunc for a backend's cancellation callback (f
// runs on its own goroutine once ctx is done; stop unregisters it). A
// context that implements an AfterFunc method itself (the HTTP front end's
// per-call context does) is asked directly, which spares the intermediate
// context that context.AfterFunc builds on every call.
func AfterFunc(ctx context.Context, f func()) (stop func() bool) {
	if a, ok := ctx.(interface{ AfterFunc(func()) func() bool }); ok {
		return a.AfterFunc(f)
	}
	return context.AfterFunc(ctx, f)
}
